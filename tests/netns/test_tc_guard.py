"""The tc guard on a real kernel (felix/dataplane/tcguard.py, system/tcbpf.py): with no nft
ruleset at all (``nft flush ruleset``), forwarded workload traffic drops - between two pods,
pod -> outside over the uplink, outside -> pod - while the host's own traffic (to a pod,
to the outside) passes; with a table that marks what it evaluates, everything passes; QoS's
IFB redirect shares the clsact ingress hook (guard first, then the redirect) and traffic
through the IFB is still marked; a deleted guard filter is put back by the next apply.

Topology: tests/netns/test_felix_dataplane.py's :class:`Cluster` (node namespace with an
uplink ``eth0`` to ``ext``, pods wired Calico-style)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycalico.felix.dataplane.qos import QosDataplane, ifb_name
from pycalico.felix.dataplane.tcguard import GuardDataplane
from pycalico.model.types import QoSControls
from pycalico.system.process import SubprocessRunner
from pycalico.system.tc import HOST_GUARD, HOST_GUARD_V4, WORKLOAD_GUARD, TcKernel
from pycalico.system.tcbpf import MARK_SEEN
from tests.fixtures.netns import NetnsFactory
from tests.netns.test_felix_dataplane import PY, Cluster

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

SEEN_TABLE = f"""
table ip seen {{
  chain f_seen {{ type filter hook forward priority 0; meta mark set meta mark | {MARK_SEEN:#x}; }}
  chain i_seen {{ type filter hook input priority 0; meta mark set meta mark | {MARK_SEEN:#x}; }}
}}
"""


@pytest.fixture
def cluster(netns_factory: NetnsFactory, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(netns_factory, tmp_path / "calico.db")
    c.add_pod("a", "10.65.0.1")
    c.add_pod("b", "10.65.0.2")
    c.add_external("x", "192.0.2.9")
    c.finish_routes()
    c.node.ip("addr", "add", "10.65.255.1/32", "dev", "lo")
    c.serve("b", {"tcp/80"})
    yield c
    for p in c.servers:
        p.kill()
    c.ds.close()


CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], 80), timeout=1).close()"


def reach(c: Cluster) -> dict[str, bool]:
    """Who reaches whom (one ping each, 1 s; the guard drops silently). The host reaches b
    over TCP: b's answers to the host's own connection belong to a local socket, which the
    local-delivery guard lets through (ICMP answers it does not: no socket of the host is
    established for them)."""
    a, b = c.pods["a"], c.pods["b"]

    def ping(ns: object, addr: str) -> bool:
        return bool(ns.ping(addr, timeout_s=1, attempts=1))  # type: ignore[attr-defined]

    return {
        "a->b": ping(a[0], b[1]),
        "a->ext": ping(a[0], "192.0.2.9"),
        "ext->b": ping(c.ext, b[1]),
        "host->b": c.node.exec(PY, "-c", CONNECT, b[1], check=False).returncode == 0,
        "host->ext": ping(c.node, "198.18.0.2"),
        "a->host": ping(a[0], "10.65.255.1"),  # local delivery: the netfilter BPF guard
    }


def test_guard_drops_unseen_workload_traffic_never_host_traffic(cluster: Cluster) -> None:
    tc = TcKernel(SubprocessRunner(), netns=cluster.node.name)
    guard = GuardDataplane(tc, "cali")
    assert all(reach(cluster).values())  # before: all open (no nft, no guard)
    assert guard.apply() == [] and guard.writes == 1
    a_if, b_if = (n for n in tc.list_links() if n.startswith("cali"))
    got = tc.get_guards([a_if, b_if, "eth0", "lo"])
    assert got == {a_if: WORKLOAD_GUARD, b_if: WORKLOAD_GUARD, "eth0": HOST_GUARD, "lo": set()}
    assert guard.apply() == [] and guard.writes == 1  # read back equal: no write
    # No nft at all: forwarded workload traffic drops, the host's own passes.
    assert reach(cluster) == {
        "a->b": False, "a->ext": False, "ext->b": False, "host->b": True, "host->ext": True,
        "a->host": False,
    }  # fmt: skip
    # A table that marks what it evaluates (as calico's filter base chains do): all pass.
    cluster.node.exec("nft", "-f", "-", input=SEEN_TABLE)
    assert all(reach(cluster).values())
    # QoS on a (both directions): its redirect to the IFB shares the clsact ingress hook.
    qos = QosDataplane(tc)
    qos.set(a_if, QoSControls(ingressBandwidth=10**8, ingressBurst=10**7,
                              egressBandwidth=10**8, egressBurst=10**7))  # fmt: skip
    assert qos.apply() == []
    assert tc.get_redirect(a_if) == ifb_name(a_if)
    assert tc.get_guards([a_if])[a_if] == WORKLOAD_GUARD
    assert all(reach(cluster).values())
    cluster.node.exec("nft", "flush", "ruleset")
    r = reach(cluster)  # a's packets went through the IFB: still marked as a workload's
    assert not r["a->b"] and not r["a->ext"] and r["host->b"] and r["host->ext"], r
    assert not r["a->host"], r
    # The local-delivery guard is this process's: detached, a reaches the host unchecked;
    # the next apply attaches it again (nothing in the kernel to read back).
    guard.close()
    assert reach(cluster)["a->host"]
    assert guard.apply() == [] and guard.local_writes == 2
    assert not reach(cluster)["a->host"]
    # A guard filter deleted by hand comes back with the next apply; QoS is untouched.
    cluster.node.exec("tc", "filter", "del", "dev", b_if, "egress", "pref", "1")
    assert tc.get_guards([b_if])[b_if] == frozenset({"ingress:wl-in"})
    assert guard.apply() == [] and tc.get_guards([b_if])[b_if] == WORKLOAD_GUARD
    assert qos.apply(full=True) == [] and tc.get_redirect(a_if) == ifb_name(a_if)
    # Removing the QoS redirect leaves the guard; removing the guard leaves nothing.
    qos.set(a_if, None)
    assert qos.apply() == [] and tc.get_redirect(a_if) is None
    assert tc.get_guards([a_if])[a_if] == WORKLOAD_GUARD
    tc.del_guard(a_if, qdisc=True)
    tc.del_guard("eth0")
    assert tc.get_guards([a_if, "eth0"]) == {a_if: frozenset(), "eth0": frozenset()}


def test_a_legacy_ingress_qdisc_gives_way_to_clsact(cluster: Cluster) -> None:
    """Older versions put QoS's redirect on an ``ingress`` qdisc, which excludes clsact: the
    guard replaces it and the QoS apply restores the redirect on clsact."""
    tc = TcKernel(SubprocessRunner(), netns=cluster.node.name)
    a_if = next(n for n in tc.list_links() if n.startswith("cali"))
    ifb = ifb_name(a_if)
    tc.add_ifb(ifb, 1500)
    cluster.node.exec("tc", "qdisc", "add", "dev", a_if, "ingress")
    cluster.node.exec("tc", "filter", "add", "dev", a_if, "parent", "ffff:", "protocol", "all",
                      "u32", "match", "u32", "0", "0", "action", "mirred", "egress",
                      "redirect", "dev", ifb)  # fmt: skip
    assert tc.get_redirect(a_if) == ifb
    assert GuardDataplane(tc, "cali").apply() == []
    assert tc.get_guards([a_if])[a_if] == WORKLOAD_GUARD and tc.get_redirect(a_if) is None
    qos = QosDataplane(tc)
    qos.set(a_if, QoSControls(egressBandwidth=10**8, egressBurst=10**7))
    assert qos.apply(full=True) == []
    assert tc.get_redirect(a_if) == ifb and tc.get_guards([a_if])[a_if] == WORKLOAD_GUARD


def test_without_ipv6_support_only_ipv4_is_checked(cluster: Cluster) -> None:
    """Felix without ipv6Support programs no ``ip6 calico`` table (nothing marks IPv6
    packets): its guard checks IPv4 packets only; with IPv6 support both."""
    cluster.node.sysctl("net.ipv6.conf.all.forwarding", 1)
    cluster.add_pod6("a6", "fd00:65::1")
    cluster.add_pod6("b6", "fd00:65::2")
    tc = TcKernel(SubprocessRunner(), netns=cluster.node.name)
    a, b = cluster.pods["a"], cluster.pods["b"]
    a6, b6 = cluster.pods["a6"], cluster.pods["b6"]
    assert a6[0].ping(b6[1], timeout_s=1) and a[0].ping(b[1], timeout_s=1)
    assert GuardDataplane(tc, "cali", ipv6=False).apply() == []
    assert tc.get_guards(["eth0"])["eth0"] == HOST_GUARD_V4
    assert a6[0].ping(b6[1], timeout_s=1)  # IPv6: not checked
    assert not a[0].ping(b[1], timeout_s=1, attempts=1)  # IPv4: no table, dropped
    assert GuardDataplane(tc, "cali", ipv6=True).apply() == []  # replaces the programs
    assert tc.get_guards(["eth0"])["eth0"] == HOST_GUARD
    assert not a6[0].ping(b6[1], timeout_s=1, attempts=1)


def test_someone_elses_filter_at_our_preference_is_never_replaced(cluster: Cluster) -> None:
    """On the node's own devices a filter of preference 1 that is not ours stays: on a hook
    the guard does not use it is left alone and the guard goes in; on the hook it needs,
    that device is left unguarded (warned once), the others are guarded."""
    tc = TcKernel(SubprocessRunner(), netns=cluster.node.name)
    u32 = ("protocol", "all", "pref", "1", "u32", "match", "u32", "0", "0")
    cluster.node.exec("tc", "qdisc", "add", "dev", "eth0", "clsact")
    cluster.node.exec("tc", "filter", "add", "dev", "eth0", "ingress", *u32)
    guard = GuardDataplane(tc, "cali")
    assert guard.apply() == [] and guard.writes == 1
    assert tc.get_guards(["eth0"])["eth0"] == HOST_GUARD | {"ingress:?"}
    assert guard.apply() == [] and guard.writes == 1  # settled: nothing written
    tc.del_guard("eth0")  # (as uninstall does) only ours
    assert tc.get_guards(["eth0"])["eth0"] == {"ingress:?"}
    cluster.node.exec("tc", "filter", "add", "dev", "eth0", "egress", *u32)
    assert guard.apply() == []  # reported once in the log, not an error retried each second
    assert tc.get_guards(["eth0"])["eth0"] == {"ingress:?", "egress:?"}
    a_if = next(n for n in tc.list_links() if n.startswith("cali"))
    assert tc.get_guards([a_if])[a_if] == WORKLOAD_GUARD
