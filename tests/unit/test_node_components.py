"""BGP component (datastore → BIRD config, coalesced) and the Felix adapter's metrics."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycalico.bgp.control import ProtocolRow
from pycalico.datastore.memory import MemoryDatastore
from pycalico.node.bgpdriver import BgpComponent
from pycalico.node.components import FelixComponent

API = "projectcalico.org/v3"


class FakeControl:
    def __init__(self) -> None:
        self.commands: list[str] = []

    def command(self, cmd: str) -> None:
        self.commands.append(cmd)


class FakeBird:
    """Stands in for BirdManager: records every config text written."""

    def __init__(self, tmp: Path) -> None:
        self.control = FakeControl()
        self.config_path = str(tmp / "bird.cfg")
        self.pid_path = str(tmp / "bird.pid")
        self.texts: list[str] = []
        self.running = False
        self.reloads = 0
        self.starts = 0

    def write_config(self, text: str) -> bool:
        if self.texts and self.texts[-1] == text:
            return False
        self.texts.append(text)
        return True

    def start(self) -> None:
        self.starts += 1
        self.running = True

    def stop(self) -> None:
        self.running = False

    def reload(self) -> None:
        self.reloads += 1

    def protocols(self) -> list[ProtocolRow]:
        return []


def node(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"bgp": {"ipv4Address": ip}},
    }


def affinity(node: str, cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "BlockAffinity",
        "metadata": {"name": f"{node}-{cidr.replace('.', '-').replace('/', '-')}"},
        "spec": {"node": node, "cidr": cidr, "state": "confirmed", "deleted": "false"},
    }


def wait(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_bgp_component_renders_starts_and_follows_changes(tmp_path: Path) -> None:
    ds = MemoryDatastore()
    ds.create(node("n1", "198.18.0.1/24"))
    ds.create(node("n2", "198.18.0.2/24"))
    fake = FakeBird(tmp_path)
    comp = BgpComponent(ds, "n1", str(tmp_path), "sock", coalesce=0.05, manager=fake)  # type: ignore[arg-type]
    comp.start()
    try:
        assert wait(comp.in_sync)
        assert fake.starts == 1 and comp.bird_running()
        assert "Mesh_198_18_0_2" in fake.texts[-1]
        # a third node joins: new config, soft reload, no second BIRD
        ds.create(node("n3", "198.18.0.3/24"))
        assert wait(lambda: "Mesh_198_18_0_3" in fake.texts[-1])
        assert fake.starts == 1 and fake.reloads >= 1
        # a burst of changes is coalesced into far fewer renders
        before = len(fake.texts)
        for i in range(4, 24):
            ds.create(node(f"n{i}", f"198.18.0.{i}/24"))
        assert wait(lambda: "Mesh_198_18_0_23" in fake.texts[-1])
        assert len(fake.texts) - before < 10
        # IPAM churn of other nodes does not recompute; our own affinity does
        computes = comp.computes
        for i in range(5):
            ds.create(affinity("n2", f"10.0.{i}.0/26"))
        time.sleep(0.3)
        assert comp.computes == computes
        ds.create(affinity("n1", "10.0.9.0/26"))
        assert wait(lambda: "10.0.9.0/26" in fake.texts[-1])
        # invalid input (our node loses its address) is reported, not raised
        n1 = ds.get("Node", "n1")
        n1["spec"] = {}
        ds.update(n1)
        assert wait(lambda: "no ipv4Address" in comp.last_error)
        assert comp.alive()
    finally:
        comp.stop()
    assert not fake.running
    assert fake.control.commands == ["graceful restart"]


def test_bgp_component_tells_the_bfd_guard_its_bfd_tracked_peers(tmp_path: Path) -> None:
    ds = MemoryDatastore()
    ds.create(node("n1", "198.18.0.1/24"))
    ds.create(node("n2", "198.18.0.2/24"))
    ds.create(node("n3", "203.0.113.3/24"))  # not on our subnet: no BFD
    fake = FakeBird(tmp_path)
    comp = BgpComponent(ds, "n1", str(tmp_path), "sock", coalesce=0.05, manager=fake)  # type: ignore[arg-type]
    comp.start()
    try:
        assert wait(comp.in_sync)
        assert comp.bfd_guard.peers == {}
        ds.create(
            {
                "apiVersion": API,
                "kind": "BGPConfiguration",
                "metadata": {"name": "default"},
                "spec": {"nodeMeshFailureDetectionMode": "BFDIfDirectlyConnected"},
            }
        )
        assert wait(lambda: comp.bfd_guard.peers == {"198.18.0.2": ("Mesh_198_18_0_2",)})
        assert "bfd graceful;" in fake.texts[-1]
    finally:
        comp.stop()


class FakeFelix:
    def __init__(self) -> None:
        self.started = False
        self.counters = {"applies": 0, "apply_seconds_total": 0.0, "resyncs": 0}

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def wait_in_sync(self, timeout: float | None = None) -> bool:
        return self.started

    def alive(self) -> bool:
        return self.started

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "active_local_endpoints": 2,
            "active_local_policies": 3,
            "routes": {"routes": 5, "vteps": 1, "in_sync": True},
        }


def test_felix_component_metrics_from_stats() -> None:
    fake = FakeFelix()
    comp = FelixComponent(MemoryDatastore(), "n1", {}, factory=lambda: fake)
    comp.start()
    assert comp.alive() and comp.in_sync()
    fake.counters.update(applies=4, apply_seconds_total=0.4, resyncs=1)
    gauges, resyncs, applies = comp.metrics()
    assert gauges["felix_active_local_endpoints"] == 2.0
    assert gauges["felix_active_local_policies"] == 3.0
    assert resyncs == 1.0
    assert len(applies) == 4 and abs(sum(applies) - 0.4) < 1e-9
    # only new applies are reported the next time
    assert comp.metrics()[2] == []
    assert comp.num_routes() == 5
    comp.stop()
    assert not comp.in_sync()


class FakeBgp:
    name = "bgp"

    def __init__(self, rows: list[ProtocolRow]) -> None:
        self.rows = rows
        self.last_error = ""
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def alive(self) -> bool:
        return self.started

    def in_sync(self) -> bool:
        return True

    def bird_running(self) -> bool:
        return self.started

    def protocols(self) -> list[ProtocolRow]:
        return self.rows

    def num_nodes(self) -> int:
        return 2


def test_node_agent_tick_writes_status_and_metrics(tmp_path: Path) -> None:
    from pycalico.node.agent import NodeAgent
    from pycalico.node.status import read_status

    row = ProtocolRow("Mesh_198_18_0_2", "BGP", "---", "start", "2026-01-01T00:00:00", "Connect")
    felix = FakeFelix()
    bgp = FakeBgp([row])
    agent = NodeAgent(
        "n1",
        str(tmp_path),
        [FelixComponent(MemoryDatastore(), "n1", {}, factory=lambda: felix), bgp],  # type: ignore[list-item]
    )
    st = agent.tick()
    # One Felix programs policy and routes: routes_in_sync mirrors it (status.json readers).
    assert st.felix_in_sync and st.bird_running and st.routes_in_sync is True
    assert not st.ready  # the session is not Established yet
    data = read_status(str(tmp_path))
    assert data is not None and data["ready"] is False
    assert data["bgp"] == [
        {"peer": "198.18.0.2", "type": "node-to-node mesh", "state": "start",
         "since": "2026-01-01", "info": "Connect"}
    ]  # fmt: skip
    assert agent.readiness()[0] is False and agent.liveness()[0] is True
    bgp.rows = [dataclasses.replace(row, state="up", info="Established")]
    assert agent.tick().ready
    assert read_status(str(tmp_path))["ready"] is True  # type: ignore[index]
    text = agent.metrics.exposition().decode()
    assert "calico_node_bgp_sessions_established 1.0" in text
    assert "felix_cluster_num_hosts 2.0" in text
    assert "felix_route_table_num_routes 5.0" in text  # from Felix's route stats
    agent.shutdown()
    assert read_status(str(tmp_path))["ready"] is False  # type: ignore[index]


def test_startup_waits_for_the_datastore(tmp_path: Path) -> None:
    import threading

    from pycalico.node.agent import _startup

    db = tmp_path / "later" / "calico.db"
    env = {
        "NODENAME": "n1",
        "IP": "198.18.0.1/24",
        "DATASTORE_TYPE": "sqlite",
        "CALICO_DATASTORE_PATH": str(db),
    }
    db.parent.write_text("not a directory")  # the store cannot be opened until it goes away
    threading.Timer(0.3, db.parent.unlink).start()
    t0 = time.monotonic()
    ds, result = _startup(env, threading.Event())
    try:
        assert time.monotonic() - t0 >= 0.3  # it retried instead of exiting
        assert result.ipv4 == "198.18.0.1/24"
        assert ds.get("Node", "n1")["spec"]["bgp"]["ipv4Address"] == "198.18.0.1/24"
    finally:
        ds.close()


def test_reload_resyncs_felix(tmp_path: Path) -> None:
    """SIGHUP (systemd ExecReload) asks every component that can for a full resync; others
    (here the BGP fake) are left alone."""
    from pycalico.node.agent import NodeAgent

    felix = FakeFelix()
    resyncs: list[str] = []
    felix.resync = lambda: resyncs.append("felix")  # type: ignore[attr-defined]
    comp = FelixComponent(MemoryDatastore(), "n1", {}, factory=lambda: felix)
    agent = NodeAgent("n1", str(tmp_path), [comp, FakeBgp([])])  # type: ignore[list-item]
    agent.reload()  # before start: nothing to resync yet
    assert resyncs == []
    comp.start()
    agent.reload()
    assert resyncs == ["felix"]
