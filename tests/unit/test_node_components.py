"""BGP component (datastore → BIRD config, coalesced) and the Felix adapter's metrics."""

from __future__ import annotations

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

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "active_local_endpoints": 2, "active_local_policies": 3}


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
    comp.stop()
    assert not comp.in_sync()
