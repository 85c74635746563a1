"""Host endpoints on a real kernel: all-interfaces HEP with failsafe, applyOnForward,
preDNAT (before a real DNAT) and doNotTrack (no conntrack entries), plus ``nft -c`` of every
rendered host endpoint case.

Topology: the ``Cluster`` of ``test_felix_dataplane`` — a node namespace whose ``eth0``
(198.18.0.1) faces an ``ext`` namespace (198.18.0.2, plus extra /32 sources on its ``lo``),
pods wired the Calico way behind ``cali…`` veths. Felix programs the node's tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pycalico.felix.calc import CalcGraph
from pycalico.felix.dataplane import NftTable, SubprocessNftRunner, TableState
from pycalico.felix.rules import RenderConfig, RuleRenderer
from tests.fixtures.netns import NetnsFactory
from tests.kit import namespace, poll, workload_endpoint
from tests.netns.test_felix_dataplane import NODE, Cluster, iface_for
from tests.unit.test_rules_hep import CASES, FAILSAFE_NET, gnp, hep

pytestmark = [pytest.mark.netns]

POD_IP = "10.96.0.9"
EXT2 = "198.18.0.3"


@pytest.fixture
def cl(netns_factory: NetnsFactory, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(netns_factory, tmp_path / "calico.db")
    yield c
    c.ds.close()


def _pod(c: Cluster) -> None:
    """Pod ``w`` (allow-all namespace profile, no policy) serving TCP 80 and UDP 80."""
    c.add_pod("w", POD_IP)
    c.finish_routes()
    c.ds.create(namespace("ns"))
    c.ds.create(
        workload_endpoint(
            "w",
            namespace="ns",
            node=NODE,
            ip=f"{POD_IP}/32",
            labels={"app": "w"},
            interface_name=iface_for("w"),
            profiles=["kns.ns"],
            ports=None,
            name=f"{NODE}-k8s-w-eth0",
        )
    )
    c.serve("w", {"tcp/80"})


def _probe(c: Cluster, src: str, dst: str, port: int, proto: str = "tcp") -> bool:
    return c.probe_many({src: [(dst, port, proto)]}, timeout=0.5)[src][0]


def _steady(c: Cluster, src: str, dst: str, port: int, want: bool, proto: str = "tcp") -> bool:
    """The verdict reaches ``want`` within 5 s (an allowed probe gets a slow retry)."""
    ok = poll(lambda: _probe(c, src, dst, port, proto) == want, 5, 0.1)
    if not ok and want:
        ok = c.probe_many({src: [(dst, port, proto)]}, timeout=3.0)[src][0]
    return ok


def test_rendered_hep_tables_are_accepted_by_the_kernel(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.netns("check")
    failures = []
    for name, resources in CASES.items():
        for cfg in ({}, FAILSAFE_NET):
            g = CalcGraph(NODE)
            g.load(resources)
            r = RuleRenderer(RenderConfig(**cfg))  # type: ignore[arg-type]
            r.apply(g.flush())
            script = "".join(t.text() for t in r.tables().values())
            p = ns.exec("nft", "-c", "-f", "-", input=script, check=False)
            if p.returncode != 0:
                failures.append(f"{name} {cfg}: {p.stderr[:400]}")
    assert not failures, "\n".join(failures)


def test_hep_changes_apply_as_kernel_deltas_and_read_back_equal(
    netns_factory: NetnsFactory,
) -> None:
    """Adding untracked/pre-DNAT policy and renaming interfaces: small transactions (no
    failure, no full replace) after which the kernel's table reads back as desired."""
    ns = netns_factory.netns("delta")
    runner = SubprocessNftRunner(netns=ns.name)
    g = CalcGraph(NODE)
    r = RuleRenderer(RenderConfig(**FAILSAFE_NET))  # type: ignore[arg-type]
    tables = {f: NftTable(runner, f) for f in ("ip", "ip6")}
    steps = [
        CASES["wildcard-no-policy"],
        CASES["untracked"],
        [*CASES["untracked"], *CASES["pre-dnat"]],
        CASES["pre-dnat"] + [hep("all", "eth7", [], {"role": "host"})],
        CASES["expected-ips-only"],
    ]
    for resources in steps:
        g.load(resources)
        r.apply(g.flush())
        for fam, spec in r.tables().items():
            tables[fam].set_desired(spec)
            tables[fam].apply()
            assert runner.read_table(fam, "calico") == TableState.from_spec(spec)
    for t in tables.values():
        assert t.stats.failures == 0 and t.stats.full_replaces == 1  # only the first apply
        assert t.stats.deltas == len(steps) - 1


def test_all_interfaces_hep_failsafe_then_opened_by_policy(cl: Cluster) -> None:
    cl.pods["host"] = (cl.node, "198.18.0.1")
    cl.pods["lo"] = (cl.node, "127.0.0.1")
    cl.externals["ext"] = "198.18.0.2"
    cl.serve("host", {"tcp/22", "tcp/8080"})
    cl.serve("lo", {"tcp/8081"})
    felix = cl.felix()
    try:
        assert felix.wait_in_sync(20), felix.error
        assert _probe(cl, "ext", "host", 8080)  # no host endpoint: not policed
        cl.ds.create(hep("node1-all", "*", ["198.18.0.1"], {"role": "host"}))
        # Default-deny-ish host policy: selects the host, no rule allows anything.
        cl.ds.create(gnp("host-deny", selector="role == 'host'", types=["Ingress"], ingress=[]))
        assert _steady(cl, "ext", "host", 8080, False)
        assert _steady(cl, "ext", "host", 22, True)  # failsafe
        assert _probe(cl, "lo", "lo", 8081)  # loopback is no host interface
        cl.ds.create(
            gnp(
                "host-web",
                order=10,
                selector="role == 'host'",
                types=["Ingress"],
                ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [8080]}}],
            )
        )
        assert _steady(cl, "ext", "host", 8080, True)
    finally:
        felix.stop()


def test_apply_on_forward_denies_forwarded_traffic_to_workload(cl: Cluster) -> None:
    _pod(cl)
    cl.externals["ext"] = "198.18.0.2"
    cl.ds.create(hep("node1-eth0", "eth0", ["198.18.0.1"], {"role": "host"}))
    felix = cl.felix()
    try:
        assert felix.wait_in_sync(20), felix.error
        # HEP without forward policy: forwarded traffic allowed by default.
        assert _steady(cl, "ext", "w", 80, True)
        deny = [{"action": "Deny", "source": {"nets": ["198.18.0.2/32"]}}]
        cl.ds.create(gnp("no-ext", selector="role == 'host'", types=["Ingress"], ingress=deny))
        assert _steady(cl, "ext", "w", 80, True)  # not applyOnForward: host traffic only
        pol = cl.ds.get("GlobalNetworkPolicy", "no-ext")
        pol["spec"]["applyOnForward"] = True
        cl.ds.update(pol)
        assert _steady(cl, "ext", "w", 80, False)
    finally:
        felix.stop()


def test_pre_dnat_denies_by_source_before_dnat(cl: Cluster) -> None:
    _pod(cl)
    cl.externals["ext"] = "198.18.0.2"
    cl.add_external("ext2", EXT2)
    cl.pods["nodeport"] = (cl.node, "198.18.0.1")
    # A NodePort-like DNAT 198.18.0.1:30080 -> pod:80 at the usual dstnat priority (-100).
    nat = (
        "table ip hepnat {\n chain pre {\n  type nat hook prerouting priority dstnat;\n"
        f"  ip daddr 198.18.0.1 tcp dport 30080 dnat to {POD_IP}:80\n }}\n}}\n"
    )
    cl.node.exec("nft", "-f", "-", input=nat)
    cl.ds.create(hep("node1-eth0", "eth0", ["198.18.0.1"], {"role": "host"}))
    felix = cl.felix()
    try:
        assert felix.wait_in_sync(20), felix.error
        assert _steady(cl, "ext2", "nodeport", 30080, True)
        cl.ds.create(
            gnp(
                "pre",
                selector="role == 'host'",
                preDNAT=True,
                applyOnForward=True,
                types=["Ingress"],
                # The original (pre-DNAT) port: after DNAT the packet is for port 80.
                ingress=[{"action": "Deny", "protocol": "TCP",
                          "source": {"nets": [f"{EXT2}/32"]}, "destination": {"ports": [30080]}}],
            )
        )  # fmt: skip
        assert _steady(cl, "ext2", "nodeport", 30080, False)
        assert _steady(cl, "ext", "nodeport", 30080, True)  # unmatched: normal policy goes on
        # Forward ingress policy denying everything blocks ext too ...
        cl.ds.create(
            gnp("fwd-deny", selector="role == 'host'", applyOnForward=True, types=["Ingress"])
        )
        assert _steady(cl, "ext", "nodeport", 30080, False)
        # ... unless pre-DNAT policy allowed the packet: then forward ingress is skipped.
        cl.ds.create(
            gnp(
                "pre-allow",
                order=10,
                selector="role == 'host'",
                preDNAT=True,
                applyOnForward=True,
                types=["Ingress"],
                ingress=[{"action": "Allow", "source": {"nets": ["198.18.0.2/32"]}}],
            )
        )
        assert _steady(cl, "ext", "nodeport", 30080, True)
        assert _probe(cl, "ext2", "nodeport", 30080) is False
    finally:
        felix.stop()


def _conntrack(c: Cluster, port: int) -> str:
    p = c.node.exec("conntrack", "-L", "-p", "udp", "--dport", str(port), check=False)
    return p.stdout


def test_do_not_track_allow_leaves_no_conntrack_entries(cl: Cluster) -> None:
    cl.pods["host"] = (cl.node, "198.18.0.1")
    cl.externals["ext"] = "198.18.0.2"
    cl.serve("host", {"udp/5000", "udp/68"})
    cl.ds.create(hep("node1-eth0", "eth0", ["198.18.0.1"], {"role": "host"}))
    cl.ds.create(
        gnp(
            "nt",
            selector="role == 'host'",
            doNotTrack=True,
            applyOnForward=True,
            types=["Ingress", "Egress"],
            ingress=[{"action": "Allow", "protocol": "UDP", "destination": {"ports": [5000]}}],
            egress=[{"action": "Allow", "protocol": "UDP", "source": {"ports": [5000]}}],
        )
    )
    felix = cl.felix()
    try:
        assert felix.wait_in_sync(20), felix.error
        assert _steady(cl, "ext", "host", 5000, True, "udp")
        assert _steady(cl, "ext", "host", 68, True, "udp")  # failsafe: tracked as usual
        assert "dport=68" in _conntrack(cl, 68)
        assert "dport=5000" not in _conntrack(cl, 5000)
    finally:
        felix.stop()
