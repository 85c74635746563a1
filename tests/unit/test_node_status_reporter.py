"""CalicoNodeStatus reports: BIRD's replies parsed into Calico's status fields, and the
reporter's contract (only its node, only status, CAS, the period, 0 = once)."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.bgp.control import Reply, parse_reply_lines
from pycalico.datastore import EventType
from pycalico.datastore.syncer import SyncStatus, SyncUpdate
from pycalico.node.nodestatus import (
    BirdView,
    NodeStatusReporter,
    build_status,
    parse_peers,
    parse_routes,
    parse_show_status,
)
from tests.kit.fakes import memory_datastore

# Captured from BIRD 2.0.12 on a calico-lab node (two nodes, BGP mesh).
SHOW_STATUS = """1000-BIRD 2.0.12
1011-Router ID is 198.18.0.1
 Hostname is vm
 Current server time is 2026-12-02 17:31:29.564
 Last reboot on 2026-12-02 17:30:43.413
 Last reconfiguration on 2026-12-02 17:31:25.730
0013 Daemon is up and running"""
SHOW_ROUTE = """1007-Table master4:
 0.0.0.0/0            unicast [kernel4 17:30:44.424] * (10)
 \tvia 198.18.0.254 on eth0
 10.244.75.192/26     unicast [Mesh_198_18_0_2 17:31:22.769] * (100) [i]
 \tvia 198.18.0.2 on eth0
                      unicast [Node_198_18_0_9 17:31:23.001] (100) [i]
 \tvia 198.18.0.9 on eth0
 169.254.25.10/32     unicast [direct4 17:30:43.428] * (240)
 \tdev lo
 10.244.63.64/26      blackhole [static4 17:31:25.730] * (200)
 fd00:1::/122         unicast [Global_fd00__9 17:31:25.730] * (100) [AS64513i]
 \tvia fd00::9 on eth0
0000 """
SHOW_PROTOCOLS = """2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     2026-12-02T17:30:43.413
 kernel4    Kernel     master4    up     2026-12-02T17:30:43.413
 Mesh_198_18_0_2 BGP        ---        up     2026-12-02T17:30:45.785  Established
 Node_198_18_0_9 BGP        ---        start  2026-12-02T17:30:45.785  Active  Socket: refused
 Global_fd00__9 BGP        ---        up     2026-12-02T17:30:46.000  Established
0000 """


def _reply(text: str) -> Reply:
    return parse_reply_lines(text.split("\n"))


def test_show_status() -> None:
    assert parse_show_status(_reply(SHOW_STATUS)) == {
        "version": "2.0.12",
        "routerID": "198.18.0.1",
        "lastBootTime": "2026-12-02 17:30:43.413",
        "lastReconfigurationTime": "2026-12-02 17:31:25.730",
    }


def test_peers_carry_type_fsm_state_and_family() -> None:
    peers = parse_peers(_reply(SHOW_PROTOCOLS))
    assert peers == [
        {"peerIP": "198.18.0.2", "type": "NodeMesh", "state": "Established",
         "since": "2026-12-02T17:30:45.785"},
        {"peerIP": "198.18.0.9", "type": "NodePeer", "state": "Active",
         "since": "2026-12-02T17:30:45.785"},
        {"peerIP": "fd00::9", "type": "GlobalPeer", "state": "Established",
         "since": "2026-12-02T17:30:46.000"},
    ]  # fmt: skip


def test_routes_fib_rib_and_sources() -> None:
    routes = parse_routes(_reply(SHOW_ROUTE))
    assert routes[0] == {"type": "FIB", "destination": "0.0.0.0/0", "gateway": "198.18.0.254",
                         "interface": "eth0", "learnedFrom": {"sourceType": "Kernel"}}  # fmt: skip
    mesh, other = routes[1], routes[2]
    assert mesh["type"] == "FIB" and mesh["learnedFrom"] == {
        "sourceType": "NodeMesh", "peerIP": "198.18.0.2"}  # fmt: skip
    assert other["destination"] == "10.244.75.192/26" and other["type"] == "RIB"
    assert other["learnedFrom"] == {"sourceType": "BGPPeer", "peerIP": "198.18.0.9"}
    assert routes[3]["learnedFrom"] == {"sourceType": "Direct"} and routes[3]["interface"] == "lo"
    assert routes[4]["learnedFrom"] == {"sourceType": "Static"} and "gateway" not in routes[4]
    assert routes[5]["learnedFrom"] == {"sourceType": "BGPPeer", "peerIP": "fd00::9"}


def test_build_status_fills_only_requested_classes() -> None:
    view = BirdView(_reply(SHOW_STATUS), _reply(SHOW_PROTOCOLS), _reply(SHOW_ROUTE))
    st = build_status(["BGP"], view, 1_800_000_000.0)
    assert st["lastUpdated"] == "2027-01-15T08:00:00Z"
    assert st["agent"] == {} and st["routes"] == {}
    assert st["bgp"]["numberEstablishedV4"] == 1 and st["bgp"]["numberNotEstablishedV4"] == 1
    assert st["bgp"]["numberEstablishedV6"] == 1 and st["bgp"]["numberNotEstablishedV6"] == 0
    full = build_status(["Agent", "BGP", "Routes"], view, 0.0)
    assert full["agent"]["birdV4"]["state"] == "Ready"
    assert full["agent"]["birdV4"]["routerID"] == "198.18.0.1"
    assert len(full["routes"]["routesV4"]) == 5 and len(full["routes"]["routesV6"]) == 1
    none = build_status(["Agent", "BGP", "Routes"], BirdView(), 0.0)
    assert none["agent"]["birdV4"] == {"state": "NotReady"}
    assert none["bgp"]["numberEstablishedV4"] == 0 and "peersV4" not in none["bgp"]


def _cns(name: str, node: str, period: int | None = 10, classes: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"node": node, "classes": classes or ["Agent", "BGP", "Routes"]}
    if period is not None:
        spec["updatePeriodSeconds"] = period
    return {"apiVersion": "projectcalico.org/v3", "kind": "CalicoNodeStatus",
            "metadata": {"name": name}, "spec": spec}  # fmt: skip


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _reporter(ds: Any, clock: _Clock, bird: bool = True) -> NodeStatusReporter:
    replies = {"show status": SHOW_STATUS, "show protocols": SHOW_PROTOCOLS,
               "show route": SHOW_ROUTE}  # fmt: skip

    def run(cmd: str) -> Reply:
        return _reply(replies[cmd])

    r = NodeStatusReporter(ds, "node1", lambda: run if bird else None, clock=clock)
    r.on_status(SyncStatus.IN_SYNC)
    r.on_updates([SyncUpdate(EventType.CREATED, f"k/{o['metadata']['name']}", o, 1)
                  for o in ds.list("CalicoNodeStatus").items])  # fmt: skip
    return r


def test_reporter_writes_only_its_nodes_status_every_period() -> None:
    ds = memory_datastore(_cns("mine", "node1", 10), _cns("theirs", "node2", 10))
    clock = _Clock()
    r = _reporter(ds, clock)
    assert r.step() == 1
    mine = ds.get("CalicoNodeStatus", "mine")
    assert mine["spec"]["node"] == "node1"
    assert mine["status"]["bgp"]["numberEstablishedV4"] == 1
    assert "status" not in ds.get("CalicoNodeStatus", "theirs")
    assert r.step() == 0  # not due before the period
    clock.t += 10
    assert r.step() == 1
    assert (
        ds.get("CalicoNodeStatus", "mine")["status"]["lastUpdated"] != mine["status"]["lastUpdated"]
    )


@pytest.mark.parametrize("period", [0, None])
def test_period_zero_reports_once(period: int | None) -> None:
    ds = memory_datastore(_cns("once", "node1", period))
    clock = _Clock()
    r = _reporter(ds, clock)
    assert r.step() == 1
    clock.t += 100_000
    assert r.step() == 0


def test_a_changed_spec_is_never_overwritten() -> None:
    ds = memory_datastore(_cns("mine", "node1", 10, ["Agent"]))
    r = _reporter(ds, _Clock())
    cur = ds.get("CalicoNodeStatus", "mine")
    cur["spec"]["classes"] = ["Routes"]
    ds.update(cur)  # the user changed it; the reporter has not seen the update yet
    assert r.step() == 0
    stored = ds.get("CalicoNodeStatus", "mine")
    assert stored["spec"]["classes"] == ["Routes"] and "status" not in stored
    r.on_updates([SyncUpdate(EventType.UPDATED, "k/mine", stored, 2)])
    assert r.step() == 1
    st = ds.get("CalicoNodeStatus", "mine")["status"]
    assert st["routes"]["routesV4"] and st["agent"] == {}


def test_without_bird_the_daemon_is_not_ready() -> None:
    ds = memory_datastore(_cns("mine", "node1", 10))
    r = _reporter(ds, _Clock(), bird=False)
    assert r.step() == 1
    st = ds.get("CalicoNodeStatus", "mine")["status"]
    assert st["agent"]["birdV4"] == {"state": "NotReady"} and st["routes"] == {}


def test_deleted_request_stops_reports() -> None:
    ds = memory_datastore(_cns("mine", "node1", 1))
    clock = _Clock()
    r = _reporter(ds, clock)
    assert r.step() == 1
    gone = ds.delete("CalicoNodeStatus", "mine")
    r.on_updates([SyncUpdate(EventType.DELETED, "k/mine", gone, 3)])
    clock.t += 5
    assert r.step() == 0


def test_console_reads_reports_as_status_documents() -> None:
    """The console's ReportedStatus: a fresh report gives ready/bgp rows; a stale one or one
    without a report is unknown; this host's own status file wins."""
    from pycalico.ui.sources import ReportedStatus, status_from_report

    view = BirdView(_reply(SHOW_STATUS), _reply(SHOW_PROTOCOLS), _reply(SHOW_ROUTE))
    good = _cns("n1", "node1", 10)
    good["status"] = build_status(["Agent", "BGP"], view, 1000.0)
    doc = status_from_report(good, 1005.0)
    assert doc is not None and doc["ready"] is False  # one session is Active
    assert doc["errors"] == ["BGP not established with 198.18.0.9"]
    assert [r["info"] for r in doc["bgp"]] == ["Established", "Active", "Established"]
    assert doc["bgp"][0]["type"] == "node-to-node mesh" and doc["bgp"][0]["state"] == "up"
    assert status_from_report(good, 1000.0 + 61) is None  # 3 periods + 30 s: stale
    assert status_from_report(_cns("x", "node2"), 1000.0) is None  # nothing reported yet
    up = _cns("n3", "node3", 10)
    up["status"] = build_status(["Agent", "BGP"], BirdView(_reply(SHOW_STATUS)), 1000.0)
    ds = memory_datastore(good, up, _cns("n2", "node2"))

    class Local:
        def node_statuses(self) -> dict[str, Any]:
            return {"node1": {"node": "node1", "ready": True, "bgp": [], "errors": []}}

    got = ReportedStatus(lambda: ds, Local(), clock=lambda: 1001.0).node_statuses()
    assert set(got) == {"node1", "node3"}
    assert got["node1"] == {"node": "node1", "ready": True, "bgp": [], "errors": []}
    node3 = got["node3"]
    assert node3 is not None and node3["ready"] is True and node3["bgp"] == []


def test_calicoctl_names_and_columns() -> None:
    """``calicoctl get nodestatus`` (upstream's aliases) prints NAME NODE, wide adds CLASSES."""
    from pycalico.api.base import resolve_kind
    from pycalico.ctl.columns import COLUMNS

    for alias in ("caliconodestatus", "caliconodestatuses", "nodestatus", "nodestatuses"):
        assert resolve_kind(alias) == "CalicoNodeStatus"
    ps, wide = COLUMNS["CalicoNodeStatus"]
    res = _cns("s1", "node1", 10, ["Agent", "BGP"])
    assert [(h, f(res)) for h, f in ps] == [("NAME", "s1"), ("NODE", "node1")]
    assert [(h, f(res)) for h, f in wide][-1] == ("CLASSES", "Agent,BGP")
