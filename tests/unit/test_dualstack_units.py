"""Dual-stack pieces that need no kernel: the lab's seed and addresses, the probe's family
choice, and policy insight over one IP family (``--ip-version``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pycalico.felix.calc import InsightError, PolicyInsight
from pycalico.lab import nodes
from pycalico.lab.netns import LabError
from pycalico.lab.probe import matrix_pods
from pycalico.lab.state import LabState, NodeState, PodState
from pycalico.lab.topology import router_ip6, underlay_ip6
from pycalico.system.process import Completed, FakeProcessRunner, SubprocessRunner
from tests.kit import namespace, network_policy, wait_for, workload_endpoint


def lab_state(tmp_path: Path, encap: str, pool6: str) -> LabState:
    st = LabState(name="t", prefix="clt-", directory=str(tmp_path), encap=encap, pool6=pool6)
    st.nodes = [
        NodeState(name="node1", netns="clt-node1", ip="198.18.0.1/24", subnet=0,
                  ip6="fd00:198:18::1/64"),
    ]  # fmt: skip
    return st


def pools(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "IPPool"}


@pytest.mark.parametrize(
    ("encap", "vxlan6"),
    [("none", "Never"), ("vxlan", "Always"), ("vxlan-crosssubnet", "CrossSubnet"),
     ("ipip", "Always"), ("ipip-crosssubnet", "CrossSubnet")],
)  # fmt: skip
def test_dual_stack_seed_has_a_v6_pool_in_the_lab_mode(
    tmp_path: Path, encap: str, vxlan6: str
) -> None:
    docs = nodes.seed_resources(lab_state(tmp_path, encap, "fd00:10:244::/48"), 0)
    v6 = pools(docs)["default-ipv6-ippool"]
    # Calico has no IP-in-IP for IPv6: an ipip lab's v6 pool uses VXLAN in the same mode
    assert v6 == {"cidr": "fd00:10:244::/48", "ipipMode": "Never", "vxlanMode": vxlan6,
                  "natOutgoing": True, "blockSize": 122}  # fmt: skip
    (node,) = [d for d in docs if d["kind"] == "Node"]
    assert node["spec"]["bgp"] == {
        "ipv4Address": "198.18.0.1/24",
        "ipv6Address": "fd00:198:18::1/64",
    }


def test_single_stack_seed_has_no_v6(tmp_path: Path) -> None:
    st = lab_state(tmp_path, "none", "")
    st.nodes[0].ip6 = ""
    docs = nodes.seed_resources(st, 0)
    assert list(pools(docs)) == ["default-ipv4-ippool"]
    (node,) = [d for d in docs if d["kind"] == "Node"]
    assert "ipv6Address" not in node["spec"]["bgp"]


def test_underlay_v6_addresses_are_canonical() -> None:
    assert underlay_ip6(0, 1) == "fd00:198:18::1"
    assert underlay_ip6(1, 3) == "fd00:198:18:1::3"
    assert router_ip6(0) == "fd00:198:18::254"


def test_pod_address_by_family_and_matrix_pods(tmp_path: Path) -> None:
    st = lab_state(tmp_path, "none", "fd00:10:244::/48")
    both = PodState(
        "default", "a", "node1", "n-a", "c1", ips=["10.244.0.1/32", "fd00:10:244::1/128"]
    )
    v4only = PodState("default", "b", "node1", "n-b", "c2", ips=["10.244.0.2/32"])
    busy = PodState("default", "c", "node1", "n-c", "c3", ips=["fd00:10:244::3/128"], busy=1)
    st.pods = [both, v4only, busy]
    assert both.address(4) == "10.244.0.1" and both.address(6) == "fd00:10:244::1"
    assert v4only.address(6) is None
    assert [p.name for p in matrix_pods(st, 4)] == ["a", "b"]
    assert [p.name for p in matrix_pods(st, 6)] == ["a"]  # b has no v6, c is busy


def test_lab_rejects_a_bad_pool6(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pycalico.lab.main import cli

    monkeypatch.setenv("CALICO_LAB_DIR", str(tmp_path))
    for bad, why in (("10.0.0.0/8", "IPv6"), ("nope", "not a CIDR"), ("fd00::/124", "/122")):
        r = CliRunner().invoke(cli, ["up", "--name", "x", "--dual-stack", "--pool6", bad])
        assert r.exit_code != 0 and "--pool6" in r.output and why in r.output, r.output
        assert not (tmp_path / "x").exists()


# --- policy insight over one family -------------------------------------------------------
def wep(name: str, ips: list[str], **labels: str) -> dict[str, Any]:
    return workload_endpoint(name, namespace="d", node="n1", ip=ips, labels=labels or {"app": name},
                             interface_name=None)  # fmt: skip


RESOURCES = [
    namespace("d"),
    wep("a", ["10.0.0.1", "fd00::1"]),
    wep("b", ["10.0.0.2", "fd00::2"]),
    wep("v4", ["10.0.0.3"]),
    wep("v6", ["fd00::4"]),
    network_policy(
        "dual",
        namespace="d",
        selector="app == 'b'",
        types=["Ingress"],
        ingress=[
            {"action": "Allow", "protocol": "UDP", "ipVersion": 6},
            {"action": "Allow", "protocol": "TCP", "source": {"nets": ["10.0.0.0/8"]}},
        ],
    ),
]


def grid(ip_version: int | None) -> dict[tuple[str, str, int], str]:
    res = PolicyInsight(RESOURCES).matrix([(80, 6), (80, 17)], ip_version)
    return {(r.src, r.dst, r.protocol): r.verdict for r in res}


def test_matrix_per_family_uses_that_familys_addresses_and_endpoints() -> None:
    v4, v6 = grid(4), grid(6)
    assert {s for s, _, _ in v4} == {"d/a", "d/b", "d/v4"}
    assert {s for s, _, _ in v6} == {"d/a", "d/b", "d/v6"}
    # TCP only from 10/8 (IPv4); UDP only over IPv6
    assert v4[("d/a", "d/b", 6)] == "allow" and v4[("d/a", "d/b", 17)] == "deny"
    assert v6[("d/a", "d/b", 6)] == "deny" and v6[("d/a", "d/b", 17)] == "allow"
    assert v6[("d/v6", "d/b", 17)] == "allow" and v4[("d/v4", "d/b", 17)] == "deny"
    # unrestricted destinations are allowed over both families
    assert v4[("d/b", "d/a", 17)] == v6[("d/b", "d/a", 17)] == "allow"
    # without a family: IPv4 where both ends have one (the earlier behaviour)
    both = grid(None)
    assert both[("d/a", "d/b", 6)] == "allow" and both[("d/v6", "d/b", 17)] == "allow"
    # a v4-only and a v6-only workload have no flow
    assert ("d/v4", "d/v6", 6) not in both and ("d/v6", "d/v4", 6) not in both


def test_explain_over_ipv6_and_a_family_the_peers_lack() -> None:
    ins = PolicyInsight(RESOURCES)
    ex = ins.explain("d/a", "d/b", 80, "UDP", ip_version=6)
    assert ex.verdict == "allow" and ex.ingress.rule == 0
    assert ins.explain("d/a", "d/b", 80, "UDP").verdict == "deny"
    with pytest.raises(InsightError, match="no IPv6 pair"):
        ins.explain("d/a", "d/v4", 80, "TCP", ip_version=6)


def test_calicoctl_policy_matrix_and_explain_ip_version(tmp_path: Path) -> None:
    """Through a real sqlite datastore, as an operator runs them."""
    from pycalico.config import load_config
    from pycalico.ctl.main import cli
    from pycalico.datastore import open_datastore

    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(tmp_path / "c.db")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        ds = open_datastore(load_config(None))
        try:
            for r in RESOURCES:
                ds.create(r)
        finally:
            ds.close()

    def run(*args: str) -> Any:
        r = CliRunner().invoke(cli, ["policy", *args, "-o", "json"], env=env)
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    for version, udp in ((4, "deny"), (6, "allow")):
        probes = run("matrix", "--ports", "80/UDP", "--ip-version", str(version))["probes"]
        cell = {(p["from"], p["to"]): p["verdict"] for p in probes}
        assert cell[("d/a", "d/b")] == udp and f"d/v{version}" in {p["from"] for p in probes}
    ex = run("explain", "--from", "d/a", "--to", "d/b", "--port", "80", "--protocol", "UDP",
             "--ip-version", "6")  # fmt: skip
    assert ex["verdict"] == "allow"
    bad = CliRunner().invoke(cli, ["policy", "matrix", "--ip-version", "5"], env=env)
    assert bad.exit_code != 0 and "--ip-version" in bad.output


class _HostRunner(SubprocessRunner):
    """Runs what the lab would run in a pod's namespace right here (loopback only)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def run(self, argv: Sequence[str], **kw: Any) -> Completed:
        assert list(argv[:3]) == ["ip", "netns", "exec"]
        self.calls.append(argv[3])
        return super().run(argv[4:], **kw)


def test_matrix_runs_one_client_per_source_pod_over_the_family(tmp_path: Path) -> None:
    """Real probes on loopback: an echo server on ::/0 (both families) on a free TCP port;
    UDP to a port nobody serves is refused, i.e. denied."""
    from pycalico.lab import netns as labnetns
    from pycalico.lab.probe import format_matrix, matrix

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "pycalico.lab.echo", f"{port}/TCP"])
    runner = _HostRunner()
    old = labnetns.set_runner(runner)
    try:
        st = lab_state(tmp_path, "none", "fd00:10:244::/48")
        st.pods = [
            PodState("d", n, "node1", f"n-{n}", n, ips=["127.0.0.1/32", "::1/128"]) for n in "abc"
        ]
        ports = [(port, "TCP"), (port, "UDP")]
        assert wait_for(lambda: matrix(st, ports[:1], 0.5)[0].verdict == "allow", 10)
        for version in (4, 6):
            runner.calls = []
            got = {
                (p.src, p.dst, p.protocol): p.verdict
                for p in matrix(st, ports, 0.5, version=version)
            }
            assert len(got) == 3 * 2 * 2 and sorted(runner.calls) == ["n-a", "n-b", "n-c"]
            assert {v for (_, _, proto), v in got.items() if proto == "TCP"} == {"allow"}
            assert {v for (_, _, proto), v in got.items() if proto == "UDP"} == {"deny"}
        grid = format_matrix(["d/a", "d/b", "d/c"], matrix(st, ports, 0.5, version=6))
        lines = grid.splitlines()
        assert lines[0].startswith(f"{port}/TCP") and lines[2] == "d/a   -  .  .   1"
        assert lines[-1] == "d/c   X  X  -   3"  # the UDP grid
        st.pods[0].netns = "missing"  # a client that cannot run is an error, not a verdict
        runner_fail = FakeProcessRunner(fail_when={"missing": (1, "no such netns")})
        labnetns.set_runner(runner_fail)
        with pytest.raises(LabError, match="probes from d/a failed"):
            matrix(st, ports, 0.5)
    finally:
        labnetns.set_runner(old)
        server.kill()
        server.wait(10)
