"""``calico-node run`` for real: two node namespaces on an underlay, sqlite datastore, real
BIRD, real nftables, real routes.

One pair of agents is shared by the module (start-up takes a few seconds); tests run in file
order and the last ones kill/restart/stop node1's agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.netns import Netns, NetnsFactory
from tests.kit import poll

pytestmark = [pytest.mark.netns, pytest.mark.slow]

CALICO_NODE = str(Path(sys.executable).parent / "calico-node")
POOL = "10.77.0.0/16"


@dataclass
class Agent:
    ns: Netns
    name: str
    ip: str
    dir: Path
    env: dict[str, str]
    cidr: str = ""
    proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        log = open(self.dir / "calico-node.log", "a")  # noqa: SIM115 - closed below
        try:
            self.proc = self.ns.popen(
                CALICO_NODE, "run", env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.dir / "status.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def wait(self, pred: Any, timeout: float = 40.0) -> dict[str, Any]:
        st: dict[str, Any] = {}

        def done() -> bool:  # the condition holds, or the agent died
            nonlocal st
            st = self.status()
            return bool(st and pred(st)) or (self.proc is not None and self.proc.poll() is not None)

        poll(done, timeout, 0.2)
        if st and pred(st):
            return st
        log = (self.dir / "calico-node.log").read_text()[-3000:]
        raise AssertionError(f"{self.name}: condition not met; status={st}\nlog:\n{log}")

    def bird_pid(self) -> int:
        try:
            return int((self.dir / "bird.pid").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` has exited (a zombie awaiting its reaper counts as gone)."""

    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state == "Z"

    return bool(poll(gone, timeout, 0.05))


def _kill_our_bird(agent: Agent) -> None:
    pid = agent.bird_pid()
    if not pid:
        return
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return
    if str(agent.dir / "bird.cfg") in cmd:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Agent]]:
    tmp = tmp_path_factory.mktemp("node")
    factory = NetnsFactory("node")
    agents: list[Agent] = []
    try:
        ul = factory.underlay(2)
        for i, (ns, ip) in enumerate(zip(ul.nodes, ul.node_ips, strict=True), 1):
            d = tmp / f"node{i}"
            d.mkdir()
            env = dict(os.environ)
            env.update(
                NODENAME=f"node{i}",
                # node1 autodetects by route lookup towards node2, node2 by first-found
                IP="" if i == 1 else "autodetect",
                IP_AUTODETECTION_METHOD=f"can-reach={ul.node_ips[1]}" if i == 1 else "",
                DATASTORE_TYPE="sqlite",
                CALICO_DATASTORE_PATH=str(tmp / "calico.db"),
                CALICO_NODE_STATE_DIR=str(d),
                CALICO_BIRD_SOCKET=str(d / "bird.ctl"),
                CALICO_MTU_FILE=str(d / "mtu"),
                CALICO_IPV4POOL_CIDR=POOL,
                FELIX_HEALTHENABLED="true",
                FELIX_PROMETHEUSMETRICSENABLED="true",
            )
            agents.append(Agent(ns, f"node{i}", ip, d, env, f"{ip}/{ul.prefixlen}"))
        for a in agents:
            a.start()
        yield agents
    finally:
        for a in agents:
            if a.proc is not None and a.proc.poll() is None:
                a.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    a.proc.wait(10)
        for a in agents:
            _kill_our_bird(a)
        factory.cleanup()


def _ds(agent: Agent) -> Any:
    from pycalico.config import load_config
    from pycalico.datastore import open_datastore

    return open_datastore(load_config(env=agent.env))


def _py_in_ns(ns: Netns, code: str) -> str:
    return ns.exec(sys.executable, "-c", code, check=False, timeout=30).stdout


def test_both_nodes_become_ready_with_established_mesh(cluster: list[Agent]) -> None:
    for a in cluster:
        st = a.wait(lambda s: s.get("ready"))
        assert st["felix_in_sync"] and st["routes_in_sync"] and st["bird_running"]
        other = next(b for b in cluster if b is not a)
        assert [(r["peer"], r["type"], r["info"]) for r in st["bgp"]] == [
            (other.ip, "node-to-node mesh", "Established")
        ]
        assert (a.dir / "mtu").read_text().strip() == "1500"


def test_startup_autodetected_ip_wrote_node_pool_and_cluster_information(
    cluster: list[Agent],
) -> None:
    ds = _ds(cluster[0])
    try:
        for a in cluster:
            node = ds.get("Node", a.name)
            assert node["spec"]["bgp"]["ipv4Address"] == a.cidr  # autodetected
        pool = ds.get("IPPool", "default-ipv4-ippool")
        assert pool["spec"]["cidr"] == POOL
        assert ds.get("ClusterInformation", "default")["spec"]["datastoreReady"] is True
    finally:
        ds.close()


def test_readiness_checks_health_and_metrics(cluster: list[Agent]) -> None:
    a = cluster[0]
    r = subprocess.run(
        [CALICO_NODE, "run", "-felix-ready", "-bird-ready"],
        env=a.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    code = (
        "import urllib.request as u;"
        "print(u.urlopen('http://localhost:9099/readiness').status);"
        "print(u.urlopen('http://localhost:9091/metrics').read().decode())"
    )
    out = _py_in_ns(a.ns, code)
    assert out.splitlines()[0] == "200"
    assert "felix_active_local_endpoints" in out
    assert "calico_node_bgp_sessions_established 1.0" in out


def test_block_affinity_is_routed_by_bird(cluster: list[Agent]) -> None:
    from pycalico.ipam import IPAM

    ds = _ds(cluster[0])
    try:
        v4, _ = IPAM(ds).auto_assign(1, 0, "test-handle", {"node": "node1"}, "node1")
    finally:
        ds.close()
    ip = str(v4[0].ip)
    node2 = cluster[1].ns
    routes: list[dict[str, Any]] = []

    def via_node1() -> bool:
        routes[:] = [r for r in node2.routes() if r.get("protocol") == "bird"]
        return any(r.get("gateway") == cluster[0].ip for r in routes)

    poll(via_node1, 20, 0.2)
    assert any(r.get("gateway") == cluster[0].ip for r in routes), routes
    block = next(r["dst"] for r in routes if r.get("gateway") == cluster[0].ip)
    assert ip.rsplit(".", 1)[0] in block
    # node1 holds the blackhole for its own block (BIRD static + Felix's route agent)
    assert any(r.get("type") == "blackhole" for r in cluster[0].ns.routes())


def test_kill9_keeps_bird_and_restart_adopts_it(cluster: list[Agent]) -> None:
    a, b = cluster
    bird = a.bird_pid()
    assert bird > 0
    assert a.proc is not None
    a.proc.kill()
    a.proc.wait(10)
    time.sleep(1.0)
    os.kill(bird, 0)  # BIRD survived its agent
    assert any(r.get("gateway") == a.ip for r in b.ns.routes())  # node2 still routes to node1
    a.start()
    st = a.wait(lambda s: s.get("ready") and s.get("pid") == a.proc.pid)  # type: ignore[union-attr]
    assert a.bird_pid() == bird  # adopted, not restarted
    assert st["bgp"][0]["info"] == "Established"


def test_sigterm_exits_cleanly_and_leaves_dataplane(cluster: list[Agent]) -> None:
    a, b = cluster
    assert a.proc is not None
    bird = a.bird_pid()
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(15) == 0
    assert a.status().get("ready") is False
    assert wait_gone(bird)  # BIRD left (graceful restart mode)
    # the peer keeps node1's routes as stale (BGP graceful restart), so traffic keeps flowing
    time.sleep(2)
    assert any(r.get("gateway") == a.ip for r in b.ns.routes() if r.get("protocol") == "bird")
    # Felix's nftables table and the blackhole route stay in place
    assert "table ip calico" in a.ns.exec("nft", "list", "tables").stdout
    assert any(r.get("type") == "blackhole" for r in a.ns.routes())
