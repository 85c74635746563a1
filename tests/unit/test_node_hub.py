"""calico-node's components on one SyncerHub: BGP and DNS fed by the hub (including after a
supervisor-style restart), and the count of syncer threads and datastore watch streams with
and without the hub (run with ``-s`` to see the numbers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dnslib import DNSRecord

from pycalico.datastore import WatchEvent
from pycalico.datastore.hub import SyncerHub
from pycalico.datastore.memory import MemoryDatastore
from pycalico.dns import DnsServer
from pycalico.dns.server import KINDS as DNS_KINDS
from pycalico.node.agent import _hub_kinds
from pycalico.node.bgpdriver import BGP_KINDS, BgpComponent

from .test_dns_index import wep
from .test_dns_server import names_a, udp
from .test_node_components import FakeBird, node, wait


class WatchCounter:
    """Wraps a MemoryDatastore; counts watch() calls and the watch streams open right now."""

    def __init__(self, inner: MemoryDatastore) -> None:
        self.inner = inner
        self.calls = 0
        self.open = 0
        self.max_open = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def watch(
        self, prefix: str, from_revision: int, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        with self._lock:
            self.calls += 1
            self.open += 1
            self.max_open = max(self.max_open, self.open)
        try:
            yield from self.inner.watch(prefix, from_revision, timeout)
        finally:
            with self._lock:
                self.open -= 1


def syncer_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if "syncer" in t.name)


def run_bgp_and_dns(tmp_path: Path, use_hub: bool) -> dict[str, Any]:
    mem = MemoryDatastore()
    mem.create(node("n1", "198.18.0.1/24"))
    mem.create(wep("web", "shop", "10.244.1.2/32"))
    ds = WatchCounter(mem)
    hub = None
    if use_hub:
        hub = SyncerHub(ds, [*BGP_KINDS, *DNS_KINDS], poll_interval=0.1, name="hub-syncer-n1")  # type: ignore[arg-type]
        hub.start()
    before = set(syncer_threads())
    fake = FakeBird(tmp_path)
    bgp = BgpComponent(ds, "n1", str(tmp_path), "sock", coalesce=0.01, manager=fake, hub=hub)  # type: ignore[arg-type]
    dns = DnsServer(ds, "n1", [("127.0.0.1", 0)], hub=hub)  # type: ignore[arg-type]
    bgp.start()
    dns.start()
    try:
        assert wait(bgp.in_sync) and dns.wait_in_sync(5)
        time.sleep(0.6)  # several watch re-establishments (poll intervals)
        out = {
            "syncer_threads": syncer_threads(),
            "new_syncer_threads": len(set(syncer_threads()) - before) + (1 if hub else 0),
            "open_watches": ds.open,
            "max_open_watches": ds.max_open,
        }
        # both follow live changes
        mem.create(node("n2", "198.18.0.2/24"))
        mem.create(wep("db", "prod", "10.244.2.9/32"))
        assert wait(lambda: "Mesh_198_18_0_2" in fake.texts[-1])
        q = DNSRecord.question("db.prod.pod.cluster.local")
        assert wait(lambda: names_a(udp(dns.bound[0], q)) == ["10.244.2.9"])
        assert bgp.num_nodes() == 2
        return out
    finally:
        dns.stop()
        bgp.stop()
        if hub is not None:
            hub.stop()
        mem.close()


def test_threads_and_watches_with_and_without_the_hub(tmp_path: Path) -> None:
    own = run_bgp_and_dns(tmp_path / "own", use_hub=False)
    shared = run_bgp_and_dns(tmp_path / "hub", use_hub=True)
    print(f"\nBGP+DNS, own syncers: {own}\nBGP+DNS, one hub:     {shared}")
    assert own["new_syncer_threads"] == 2 and own["max_open_watches"] == 2
    assert shared["new_syncer_threads"] == 1 and shared["max_open_watches"] == 1
    assert shared["syncer_threads"] == ["hub-syncer-n1"]


def test_components_restarted_on_the_hub_get_the_current_state(tmp_path: Path) -> None:
    mem = MemoryDatastore()
    mem.create(node("n1", "198.18.0.1/24"))
    mem.create(node("n2", "198.18.0.2/24"))
    mem.create(wep("web", "shop", "10.244.1.2/32"))
    hub = SyncerHub(mem, [*BGP_KINDS, *DNS_KINDS], poll_interval=0.1).start()
    fake = FakeBird(tmp_path)
    bgp = BgpComponent(mem, "n1", str(tmp_path), "sock", coalesce=0.01, manager=fake, hub=hub)  # type: ignore[arg-type]
    dns = DnsServer(mem, "n1", [("127.0.0.1", 0)], hub=hub)
    try:
        assert hub.wait_in_sync(5)
        for i in range(2):  # a late start (hub in sync), then a supervisor-style restart
            bgp.start()
            dns.start()
            assert wait(bgp.in_sync) and dns.wait_in_sync(5)
            assert "Mesh_198_18_0_2" in fake.texts[-1]
            # created while stopped (BgpComponent.in_sync() stays true across a restart)
            assert i == 0 or wait(lambda: "Mesh_198_18_0_3" in fake.texts[-1])
            assert names_a(udp(dns.bound[0], DNSRecord.question("web.shop.pod.cluster.local")))
            assert len(hub.subscriptions) == 2
            dns.stop()
            bgp.stop()
            assert hub.subscriptions == []
            if i == 0:
                mem.create(node("n3", "198.18.0.3/24"))
    finally:
        dns.stop()
        bgp.stop()
        hub.stop()


def test_node_hub_kinds_cover_every_component() -> None:
    from pycalico.felix.agent import FELIX_KINDS
    from pycalico.node.nodestatus import NodeStatusReporter
    from pycalico.node.tunnels import TunnelAddressComponent

    with_bgp = set(_hub_kinds(True))
    reporter = NodeStatusReporter.KINDS
    assert {*FELIX_KINDS, *TunnelAddressComponent.KINDS, *DNS_KINDS, *BGP_KINDS, *reporter} == (
        with_bgp
    )
    assert set(BGP_KINDS) - set(_hub_kinds(False)) == {
        "BGPConfiguration",
        "BGPPeer",
        "BGPFilter",
        "BlockAffinity",  # only BIRD reads affinities (Felix routes from the blocks)
        "Secret",
        "BFDConfiguration",
    }
