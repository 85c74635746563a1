"""Kernel watchers of Felix (issue 19): line classifiers, the debouncer, a monitor child
through the process seam, and Felix's event -> resync wiring (fake nft kernel)."""

from __future__ import annotations

import sys
import threading

from pycalico.datastore.memory import MemoryDatastore
from pycalico.felix.agent import Felix
from pycalico.felix.dataplane import FakeNftRunner
from pycalico.felix.dataplane.watch import (
    ROUTE_TABLE_TOPIC,
    ROUTES_TOPIC,
    VTEP_TOPIC,
    Debouncer,
    LineWatcher,
    nft_topic,
    route_topic,
)
from pycalico.felix.rules import RenderConfig
from pycalico.felix.rules.guard import guard_table
from pycalico.system.process import FakeProcessRunner, SubprocessRunner
from tests.kit import wait_for

TABLES = [("ip", "calico"), ("ip6", "calico"), ("ip", "calico-guard")]


def test_nft_topic_names_our_tables_only() -> None:
    assert nft_topic("delete table ip calico", TABLES) == "nft:ip:calico"
    assert nft_topic("delete rule ip calico d handle 4", TABLES) == "nft:ip:calico"
    assert nft_topic("add chain ip6 calico c { type filter hook forward }", TABLES) == (
        "nft:ip6:calico"
    )
    assert nft_topic("add table ip calico-guard", TABLES) == "nft:ip:calico-guard"
    assert nft_topic("delete table ip6 calico-guard", TABLES) is None  # not watched
    assert nft_topic("add rule inet foreign c counter", TABLES) is None
    assert nft_topic("# new generation 3 by process 26315 (nft)", TABLES) is None
    assert nft_topic("", TABLES) is None


def test_route_topic_names_what_felix_owns() -> None:
    assert route_topic("Deleted 10.1.0.0/24 dev eth1 proto 80 scope link") == ROUTES_TOPIC
    assert route_topic("10.96.0.2 dev calib4f proto 80 scope link") == ROUTES_TOPIC
    assert route_topic("Deleted 3: calitest@x0: <BROADCAST> mtu 1500") == ROUTES_TOPIC
    assert route_topic("7: vxlan.calico    inet 10.96.200.0/32 scope global") == ROUTES_TOPIC
    assert route_topic("Deleted 5: tunl0@NONE: <NOARP> mtu 1480") == ROUTES_TOPIC
    assert route_topic("10.1.0.0/24 via 198.18.0.2 dev eth0 proto bird") is None
    assert route_topic("10.1.0.0/24 dev eth0 proto 8") is None
    assert route_topic("2: eth0: <BROADCAST,UP> mtu 1500", prefix="tap") is None
    assert route_topic("9: tap0: <BROADCAST,UP> mtu 1500", prefix="tap") == ROUTES_TOPIC
    # Labelled lines (ROUTE_ARGV): VTEP neighbours and FDB entries on our devices count,
    # ARP on workload interfaces does not.
    # A labelled route line: re-reading the routes alone repairs it.
    assert route_topic("[ROUTE]10.96.0.2 dev calib4f proto 80 scope link") == ROUTE_TABLE_TOPIC
    assert route_topic("[ROUTE]10.1.0.0/24 via 198.18.0.2 dev eth0 proto bird") is None
    assert route_topic("[LINK]Deleted 3: calitest@x0: <BROADCAST> mtu 1500") == ROUTES_TOPIC
    assert route_topic("[NEIGH]Deleted 10.96.201.0 dev vxlan.calico lladdr 66:cb:0d:0c:00:02 "
                       "PERMANENT") == VTEP_TOPIC  # fmt: skip
    assert route_topic("[NEIGH]198.18.0.3 dev vxlan.calico lladdr 66:cb:0d:0c:00:02 NOARP "
                       "PERMANENT") == VTEP_TOPIC  # fmt: skip
    assert route_topic("[NEIGH]10.96.0.2 dev calib4f lladdr ee:ee:ee:ee:ee:ee REACHABLE") is None
    # netconf: proxy ARP / forwarding of a workload interface, or forwarding of "all".
    assert route_topic("[NETCONF]inet calib4f proxy_neigh off ") == ROUTES_TOPIC
    assert route_topic("[NETCONF]inet6 calib4f forwarding off ") == ROUTES_TOPIC
    assert route_topic("[NETCONF]inet all forwarding off ") == ROUTES_TOPIC
    assert route_topic("[NETCONF]inet eth0 forwarding on ") is None
    assert route_topic("[NETCONF]inet default forwarding on ") is None
    assert route_topic("[NETCONF]inet bwcalib4f forwarding on ") is None


def test_debouncer_delays_and_rate_limits() -> None:
    d = Debouncer(delay=0.1, min_gap=0.5)
    assert d.deadline() is None
    d.note("a", 10.0)
    d.note("a", 10.05)  # coalesced
    assert d.deadline() == 10.1
    assert d.take_due(10.05) == []
    assert d.take_due(10.1) == ["a"]
    d.note("a", 10.2)  # our own write's echo: not before last + min_gap
    assert d.deadline() == 10.6
    assert d.take_due(10.5) == [] and d.take_due(10.6) == ["a"]
    # a cheap check with its own delay and gap (Felix's guard:<family> topic)
    d.note("guard:ip", 10.7, 0.0, 0.05)
    assert d.take_due(10.7) == ["guard:ip"]
    d.note("guard:ip", 10.71, 0.0, 0.05)
    assert d.deadline() == 10.75


def test_line_watcher_reads_a_child_and_restarts_it() -> None:
    got: list[str] = []
    seen = threading.Event()

    def notify(topic: str) -> None:
        got.append(topic)
        if len(got) >= 2:
            seen.set()

    script = "print('delete table ip calico', flush=True); print('noise', flush=True)"
    w = LineWatcher("t", [sys.executable, "-c", script],
                    lambda ln: nft_topic(ln, TABLES), notify, SubprocessRunner())  # fmt: skip
    w.MIN_BACKOFF_S = 0.05
    w.start()
    try:
        assert seen.wait(10)  # the child exited after one event and was restarted
        assert got[:2] == ["nft:ip:calico", "nft:ip:calico"] and w.starts >= 2
    finally:
        w.stop()
    assert not w.alive()


def test_line_watcher_gives_up_when_the_monitor_cannot_run() -> None:
    fake = FakeProcessRunner(spawn_fail_when={"nft": "No such file or directory"})
    w = LineWatcher("nft", ["nft", "monitor"], lambda ln: None, lambda t: None, fake)
    w.start()
    wait_for(lambda: not w.alive(), 5.0, 0.01)
    assert w.gave_up


def test_felix_programs_the_guard_and_resyncs_on_kernel_events() -> None:
    nft = FakeNftRunner()
    felix = Felix("n1", MemoryDatastore(), nft, syncer_poll_interval=0.05).start()
    try:
        assert felix.wait_in_sync(5), felix.error
        assert nft.read_table("ip", "calico-guard") is not None
        assert felix.watchers == []  # the fake runner has no monitor: periodic refresh only
        spec = guard_table("ip", RenderConfig())
        assert [r.body for r in spec.chains["guard-FORWARD"].rules] == [
            'iifname "cali*" ct state invalid,new,untracked meta mark & 0x40000 == 0 drop',
            'oifname "cali*" ct state invalid,new,untracked meta mark & 0x40000 == 0 drop',
        ]
        del nft.tables[("ip", "calico")]  # deleted by hand; a watcher reports it
        guard_reads = felix.guards["ip"].stats.resyncs
        felix.kernel_event("nft:ip:calico")
        wait_for(lambda: nft.read_table("ip", "calico") is not None, 5.0, 0.01)
        assert felix.stats()["watch_resyncs"] >= 1
        # An event on the main table costs no guard read-back ...
        assert felix.guards["ip"].stats.resyncs == guard_reads
        # ... and a deleted guard is repaired at once.
        del nft.tables[("ip", "calico-guard")]
        felix.kernel_event("nft:ip:calico-guard")
        wait_for(lambda: nft.read_table("ip", "calico-guard") is not None, 5.0, 0.01)
    finally:
        felix.stop()
