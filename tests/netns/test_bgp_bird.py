"""Real BIRD 2 in network namespaces: mesh, route reflector, FRR eBGP peer, passwords,
live reloads. 198.18.0.0/24 underlay; every BIRD/FRR is started and stopped by PID."""

from __future__ import annotations

import datetime
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pycalico.bgp import (
    KERNEL_METRIC,
    BirdManager,
    ProtocolRow,
    compute_bird_config,
    render_bird_config,
)
from pycalico.bgp.peers import peer_rows
from pycalico.ctl.node import calico_process_running
from pycalico.ctl.node import node as node_cmd
from tests.fixtures.netns import Netns, NetnsFactory
from tests.kit import poll, wait_time
from tests.unit.test_bgp_helpers import affinity, bgpconfig, bgpfilter, node, peer, pool

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 not installed"),
]

POOL = pool("default-ipv4-ippool", "10.244.0.0/16")
FRR_IP = "198.18.0.200"
FRR_AS = 64513
FRR_PREFIX = "203.0.113.0/24"


def wait_for(what: str, pred: Callable[[], bool], timeout: float = 20.0) -> float:
    """Seconds until ``pred()`` held: the kit's ``wait_time`` in this file's argument order."""
    return wait_time(pred, timeout, 0.05, what=what)


class Cluster:
    """N node namespaces with BIRD driven by BirdManager from a shared resource set."""

    def __init__(self, factory: NetnsFactory, tmp: Path, n: int) -> None:
        self.factory = factory
        self.ul = factory.underlay(n, subnet="198.18.0.0/24", gateway=False)
        self.ns = {f"n{i + 1}": ns for i, ns in enumerate(self.ul.nodes)}
        self.nodes = [node(name, ip) for name, ip in zip(self.ns, self.ul.node_ips, strict=True)]
        self.res: dict[str, list[dict[str, Any]]] = {
            "bgp_configurations": [],
            "peers": [],
            "filters": [],
            "pools": [POOL],
            "block_affinities": [affinity(f"n{i + 1}", f"10.244.{i + 1}.0/26") for i in range(n)],
        }
        self.secrets: dict[tuple[str, str], str] = {}
        self.managers: dict[str, BirdManager] = {}
        for name, ns in self.ns.items():
            d = tmp / name
            d.mkdir()
            self.managers[name] = BirdManager(
                str(d / "bird.cfg"),
                str(d / "bird.ctl"),
                command_prefix=["ip", "netns", "exec", ns.name],
                log_path=str(d / "bird.log"),
            )

    def block(self, i: int) -> str:
        return f"10.244.{i}.0/26"

    def config_text(self, name: str) -> str:
        cfg = compute_bird_config(
            name,
            nodes=self.nodes,
            secrets=lambda s, k: self.secrets.get((s, k)),
            **self.res,  # type: ignore[arg-type]
        )
        assert not cfg.warnings
        return render_bird_config(cfg)

    def apply(self) -> None:
        for name, m in self.managers.items():
            m.apply(self.config_text(name))

    def start(self) -> None:
        for name, m in self.managers.items():
            m.write_config(self.config_text(name))
            m.start()

    def stop(self) -> None:
        for m in self.managers.values():
            m.stop()

    def bgp(self, name: str) -> dict[str, ProtocolRow]:
        return {r.name: r for r in self.managers[name].protocols() if r.proto == "BGP"}

    def established(self, name: str) -> set[str]:
        return {n for n, r in self.bgp(name).items() if r.info.startswith("Established")}

    def bird_routes(self, name: str) -> dict[str, dict[str, Any]]:
        return {r["dst"]: r for r in self.ns[name].routes("proto", "bird")}

    def has_all_blocks(self, name: str) -> bool:
        routes = self.bird_routes(name)
        me = int(name[1:])
        for i in range(1, len(self.ns) + 1):
            r = routes.get(self.block(i))
            if r is None:
                return False
            if i == me and r.get("type") != "blackhole":
                return False
            if i != me and r.get("gateway") != self.ul.node_ips[i - 1]:
                return False
        return True


@pytest.fixture
def frr(netns_factory: NetnsFactory, cluster3: Cluster, tmp_path: Path) -> Iterator[Frr]:
    f = Frr(netns_factory, cluster3.ul.bridge, tmp_path)
    try:
        yield f
    finally:
        # FRR processes are killed by PID by the netns factory; only files remain here.
        for p in list(netns_factory.processes):
            if p.poll() is None and "frr" in " ".join(map(str, p.args)):
                p.terminate()
                p.wait(5)
        f.cleanup()


@pytest.fixture
def cluster3(netns_factory: NetnsFactory, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(netns_factory, tmp_path, 3)
    try:
        yield c
    finally:
        c.stop()


class Frr:
    """FRR bgpd + zebra in its own namespace on the underlay (foreground, tracked PIDs)."""

    def __init__(self, factory: NetnsFactory, ul_bridge: Netns, tmp: Path) -> None:
        self.ns = factory.netns("frr")
        factory.veth(self.ns, "eth0", ul_bridge, "ulfrr", a_addr=f"{FRR_IP}/24")
        ul_bridge.ip("link", "set", "ulfrr", "master", "br0")
        # zebra runs as user frr: its directory must be reachable (pytest's tmp is 0700).
        self.dir = Path(tempfile.mkdtemp(prefix="pcbgp-frr-"))
        self.dir.chmod(0o755)
        frr = pwd.getpwnam("frr")
        os.chown(self.dir, frr.pw_uid, frr.pw_gid)
        self.vty = str(self.dir)

    def start(self, neighbors: dict[str, str | None]) -> None:
        """``neighbors``: node ip → MD5 password (or None)."""
        zebra_conf = self.dir / "zebra.conf"
        zebra_conf.write_text(f"hostname tor\nlog file {self.dir}/zebra.log\n")
        lines = [
            "hostname tor",
            f"log file {self.dir}/bgpd.log",
            f"router bgp {FRR_AS}",
            f" bgp router-id {FRR_IP}",
            " no bgp ebgp-requires-policy",
            " no bgp network import-check",
        ]
        for ip, pw in neighbors.items():
            lines += [f" neighbor {ip} remote-as 64512", f" neighbor {ip} timers connect 1"]
            if pw:
                lines.append(f" neighbor {ip} password {pw}")
        lines += [" address-family ipv4 unicast", f"  network {FRR_PREFIX}"]
        lines += [f"  neighbor {ip} activate" for ip in neighbors]
        lines += [" exit-address-family", ""]
        (self.dir / "bgpd.conf").write_text("\n".join(lines))
        for p in self.dir.iterdir():
            os.chown(p, pwd.getpwnam("frr").pw_uid, pwd.getpwnam("frr").pw_gid)
        common = ["-z", f"{self.dir}/zserv.api", "--vty_socket", self.vty, "-P", "0"]
        self.ns.popen(
            "/usr/lib/frr/zebra", "-u", "frr", "-g", "frr", "-f", str(zebra_conf),
            "-i", f"{self.dir}/zebra.pid", *common,
        )  # fmt: skip
        wait_for("zebra socket", lambda: (self.dir / "zserv.api").exists(), 10)
        self.ns.popen(
            "/usr/lib/frr/bgpd", "-S", "-f", str(self.dir / "bgpd.conf"),
            "-i", f"{self.dir}/bgpd.pid", *common,
        )  # fmt: skip

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def kernel_routes(self) -> set[str]:
        return {r["dst"] for r in self.ns.routes("proto", "bgp")}


def test_full_mesh_programs_one_route_per_remote_block(cluster3: Cluster) -> None:
    cluster3.start()
    for name in cluster3.ns:
        wait_for(f"{name} routes", lambda name=name: cluster3.has_all_blocks(name))
    for name in cluster3.ns:
        routes = cluster3.bird_routes(name)
        # Only our blocks: no device route, nothing else leaked into the kernel.
        assert set(routes) == {cluster3.block(i) for i in (1, 2, 3)}
        assert {r.get("metric") for r in routes.values()} == {KERNEL_METRIC}
        wait_for(f"{name} sessions", lambda name=name: len(cluster3.established(name)) == 2)
        assert sorted(cluster3.bgp(name)) == sorted(
            f"Mesh_{ip.replace('.', '_')}"
            for ip in cluster3.ul.node_ips
            if ip != cluster3.ul.node_ips[int(name[1:]) - 1]
        )
        rows = peer_rows(cluster3.managers[name].protocols(), 4)
        assert {(r[1], r[2], r[4]) for r in rows} == {("node-to-node mesh", "up", "Established")}
    # calicoctl node status against n1's real BIRD (with a stand-in agent process).
    agent = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "calico-node", "run"]
    )
    try:
        poll(calico_process_running, 2.0, 0.02)  # until the stand-in is visible in /proc
        sock = cluster3.managers["n1"].socket_path
        out = CliRunner().invoke(node_cmd, ["status", "--bird-socket", sock])
    finally:
        agent.kill()
        agent.wait()
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[:3] == ["Calico process is running.", "", "IPv4 BGP status"]
    assert lines[4] == "| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |"
    assert lines[6].startswith("| 198.18.0.2   | node-to-node mesh | up    | ")
    assert lines[6].endswith(" | Established |")
    assert lines[-3:] == ["IPv6 BGP status", "No IPv6 peers found.", ""]
    # A new block claimed on n3 reaches n1's kernel after a reload.
    cluster3.res["block_affinities"].append(affinity("n3", "10.244.3.64/26"))
    cluster3.apply()
    wait_for("new block on n1", lambda: "10.244.3.64/26" in cluster3.bird_routes("n1"), 10)
    assert cluster3.bird_routes("n1")["10.244.3.64/26"]["gateway"] == "198.18.0.3"


def test_route_reflector_gives_same_routes_with_fewer_sessions(cluster3: Cluster) -> None:
    cluster3.nodes[0] = node(
        "n1", "198.18.0.1", labels={"route-reflector": "true"}, routeReflectorClusterID="1.0.0.1"
    )
    cluster3.res["bgp_configurations"] = [bgpconfig(nodeToNodeMeshEnabled=False)]
    cluster3.res["peers"] = [
        peer("peer-with-rr", nodeSelector="all()", peerSelector="has(route-reflector)")
    ]
    cluster3.start()
    for name in cluster3.ns:
        wait_for(f"{name} routes", lambda name=name: cluster3.has_all_blocks(name))
    wait_for("rr sessions", lambda: len(cluster3.established("n1")) == 2)
    sessions = sum(len(cluster3.established(n)) for n in cluster3.ns) // 2
    assert sessions == 2  # instead of 3 for the full mesh
    assert set(cluster3.bgp("n2")) == {"Node_198_18_0_1"}
    # n2's route to n3's block was reflected by n1 but keeps n3 as next hop.
    assert cluster3.bird_routes("n2")[cluster3.block(3)]["gateway"] == "198.18.0.3"


def test_frr_ebgp_peer_learns_blocks_and_exports_its_prefix(cluster3: Cluster, frr: Frr) -> None:
    frr.start({ip: "s3cret" for ip in cluster3.ul.node_ips})
    cluster3.secrets[("tor-secret", "password")] = "s3cret"
    cluster3.res["peers"] = [
        peer(
            "tor",
            peerIP=FRR_IP,
            asNumber=FRR_AS,
            password={"secretKeyRef": {"name": "tor-secret", "key": "password"}},
        )
    ]
    cluster3.start()
    blocks = {cluster3.block(i) for i in (1, 2, 3)}
    wait_for("FRR learns every block", lambda: blocks <= frr.kernel_routes(), 30)
    for name in cluster3.ns:
        wait_for(
            f"{FRR_PREFIX} in {name}",
            lambda name=name: FRR_PREFIX in cluster3.bird_routes(name),
            30,
        )
        assert cluster3.bird_routes(name)[FRR_PREFIX]["gateway"] == FRR_IP
        assert "Global_198_18_0_200" in cluster3.established(name)
    # A BGPFilter on the peer: stop exporting n2's block, stop importing FRR's prefix.
    cluster3.res["filters"] = [
        bgpfilter(
            "tor-filter",
            exportV4=[{"action": "Reject", "cidr": cluster3.block(2), "matchOperator": "Equal"}],
            importV4=[{"action": "Reject", "cidr": "203.0.113.0/16", "matchOperator": "In"}],
        )
    ]
    cluster3.res["peers"][0]["spec"]["filters"] = ["tor-filter"]
    since = {n: cluster3.bgp(n)["Global_198_18_0_200"].since for n in cluster3.ns}
    cluster3.apply()
    wait_for("FRR withdraws n2's block", lambda: cluster3.block(2) not in frr.kernel_routes(), 30)
    assert {cluster3.block(1), cluster3.block(3)} <= frr.kernel_routes()
    for name in cluster3.ns:
        wait_for(
            f"{FRR_PREFIX} gone from {name}",
            lambda name=name: FRR_PREFIX not in cluster3.bird_routes(name),
            30,
        )
        # A filter change is a soft reconfiguration: the session was not reset.
        assert cluster3.bgp(name)["Global_198_18_0_200"].since == since[name]


def test_wrong_password_keeps_session_down_until_fixed(cluster3: Cluster, frr: Frr) -> None:
    frr.start({"198.18.0.1": "right", "198.18.0.2": "right"})
    cluster3.res["peers"] = [
        peer("tor-n1", node="n1", peerIP=FRR_IP, asNumber=FRR_AS, password="wrong"),
        peer("tor-n2", node="n2", peerIP=FRR_IP, asNumber=FRR_AS, password="right"),
    ]
    cluster3.start()
    wait_for("n2 session with FRR", lambda: "Node_198_18_0_200" in cluster3.established("n2"), 30)
    time.sleep(3)  # well past FRR's 1 s connect timer and BIRD's 2 s connect delay
    assert "Node_198_18_0_200" not in cluster3.established("n1")
    assert cluster3.bgp("n1")["Node_198_18_0_200"].state != "up"
    cluster3.res["peers"][0] = peer(
        "tor-n1", node="n1", peerIP=FRR_IP, asNumber=FRR_AS, password="right"
    )
    cluster3.apply()
    wait_for("n1 session after fix", lambda: "Node_198_18_0_200" in cluster3.established("n1"), 40)


def _since(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def test_reload_adds_peer_and_changes_filter_without_dropping_sessions(
    cluster3: Cluster,
) -> None:
    cluster3.start()
    for name in cluster3.ns:
        wait_for(f"{name} sessions", lambda name=name: len(cluster3.established(name)) == 2)
    before = {n: {k: r.since for k, r in cluster3.bgp(n).items()} for n in cluster3.ns}
    pid_before = {n: m.pid for n, m in cluster3.managers.items()}
    # 1. A new global peer (nobody answers there) and a new pool block.
    cluster3.res["peers"] = [peer("tor", peerIP="198.18.0.250", asNumber=64999, filters=["f"])]
    cluster3.res["filters"] = [
        bgpfilter("f", exportV4=[{"action": "Reject", "cidr": "10.0.0.0/8", "matchOperator": "In"}])
    ]
    cluster3.apply()
    assert "Global_198_18_0_250" in cluster3.bgp("n1")
    # 2. Change the filter's rules.
    cluster3.res["filters"] = [
        bgpfilter(
            "f", exportV4=[{"action": "Accept", "cidr": "10.244.0.0/16", "matchOperator": "In"}]
        )
    ]
    cluster3.apply()
    text = Path(cluster3.managers["n1"].config_path).read_text()
    assert "if (net ~ 10.244.0.0/16) then { accept; }" in text
    time.sleep(1)
    for n in cluster3.ns:
        now = cluster3.bgp(n)
        for name, since in before[n].items():
            # BIRD prints its monotonic timestamps as wall time at each `show`, so the same
            # instant may read 1 ms apart; a restarted session would be seconds later (and
            # re-established after BIRD's connect delay).
            moved = abs(_since(now[name].since) - _since(since))
            assert moved < 0.1, f"{n}:{name} restarted ({since} -> {now[name].since})"
            assert now[name].info.startswith("Established")
    assert {n: m.pid for n, m in cluster3.managers.items()} == pid_before


def test_supervisor_restarts_bird(cluster3: Cluster) -> None:
    m = cluster3.managers["n1"]
    m.restart_delay = 0.2
    cluster3.start()
    old = m.pid
    assert old is not None
    os.kill(old, 9)
    wait_for("restart", lambda: m.pid not in (None, old), 10)
    m.wait_ready(10)
    assert m.restarts == 1
    wait_for("routes after restart", lambda: cluster3.has_all_blocks("n1"))


def test_ipv6_mesh_same_classes(netns_factory: NetnsFactory, tmp_path: Path) -> None:
    ul = netns_factory.underlay(2, subnet="198.18.0.0/24", gateway=False)
    v6 = [f"fd00:198:18::{i + 1}" for i in range(2)]
    for ns, ip in zip(ul.nodes, v6, strict=True):
        ns.ip("addr", "add", f"{ip}/64", "dev", "eth0", "nodad")
    nodes = [node(f"n{i + 1}", ul.node_ips[i], v6[i]) for i in range(2)]
    blocks6 = [f"fd10:0:0:{i + 1}::/122" for i in range(2)]
    kw: dict[str, Any] = {
        "nodes": nodes,
        "pools": [POOL, pool("v6", "fd10::/48")],
        "block_affinities": [affinity(f"n{i + 1}", blocks6[i]) for i in range(2)]
        + [affinity(f"n{i + 1}", f"10.244.{i + 1}.0/26") for i in range(2)],
    }
    managers = []
    try:
        for i, ns in enumerate(ul.nodes):
            d = tmp_path / f"n{i + 1}"
            d.mkdir()
            m = BirdManager(
                str(d / "bird.cfg"),
                str(d / "bird.ctl"),
                command_prefix=["ip", "netns", "exec", ns.name],
                log_path=str(d / "bird.log"),
            )
            managers.append(m)
            m.write_config(render_bird_config(compute_bird_config(f"n{i + 1}", **kw)))
            m.start()

        def routes6(i: int) -> dict[str, Any]:
            return {r["dst"]: r for r in ul.nodes[i].routes("proto", "bird", family="-6")}

        wait_for("v6 route on n1", lambda: blocks6[1] in routes6(0))
        wait_for("v6 route on n2", lambda: blocks6[0] in routes6(1))
        assert routes6(0)[blocks6[1]]["gateway"] == v6[1]
        assert routes6(0)[blocks6[0]]["type"] == "blackhole"
        rows = managers[0].protocols()
        assert {r[0] for r in peer_rows(rows, 6)} == {v6[1]}
        assert {r[0] for r in peer_rows(rows, 4)} == {ul.node_ips[1]}
    finally:
        for m in managers:
            m.stop()
