"""Status file, readiness rule and the --felix-ready/--bird-ready checks."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pycalico.bgp.control import ProtocolRow
from pycalico.node.agent import run
from pycalico.node.status import NodeStatus, bgp_rows, check, read_status, write_status

ROWS = [
    ProtocolRow("device1", "Device", "---", "up", "2026-01-01T10:00:00", ""),
    ProtocolRow("Mesh_198_18_0_2", "BGP", "---", "up", "2026-01-01T10:00:01", "Established"),
    ProtocolRow("Node_10_0_0_9", "BGP", "---", "start", "2026-01-01T10:00:02", "Active  Socket: x"),
    ProtocolRow("Global_fd00__1", "BGP", "---", "up", "2026-01-01T10:00:03", "Established"),
]


def status(**kw: object) -> NodeStatus:
    base: dict[str, object] = dict(
        node="n1", pid=1, felix_in_sync=True, routes_in_sync=True, bird_running=True, time=100.0
    )
    base.update(kw)
    return NodeStatus(**base)  # type: ignore[arg-type]


def test_bgp_rows_like_calicoctl_node_status() -> None:
    rows = bgp_rows(ROWS)
    assert [(r["peer"], r["type"], r["state"], r["info"]) for r in rows] == [
        ("198.18.0.2", "node-to-node mesh", "up", "Established"),
        ("10.0.0.9", "node specific", "start", "Active Socket: x"),
        ("fd00::1", "global", "up", "Established"),
    ]
    assert bgp_rows(None) == []


def test_ready_rule() -> None:
    est = [{"peer": "a", "info": "Established"}]
    assert status(bgp=est).ready
    assert status(bgp=[]).ready  # no configured sessions
    assert not status(bgp=[*est, {"peer": "b", "info": "Connect"}]).ready
    assert not status(felix_in_sync=False, bgp=est).ready
    assert not status(routes_in_sync=False, bgp=est).ready
    assert not status(bird_running=False, bgp=est).ready
    # components absent from this build do not block readiness
    assert status(bird_running=None, felix_in_sync=None).ready


def test_write_is_atomic_and_round_trips(tmp_path: Path) -> None:
    st = status(bgp=bgp_rows(ROWS))
    write_status(str(tmp_path), st)
    data = read_status(str(tmp_path))
    assert data is not None
    assert data["ready"] is False and data["node"] == "n1" and len(data["bgp"]) == 3
    assert not list(tmp_path.glob("*.tmp*"))
    assert set(data) >= {"ready", "felix_in_sync", "routes_in_sync", "bird_running", "bgp", "pid"}


def test_checks_messages() -> None:
    bad = status(bgp=bgp_rows(ROWS)).to_json()
    assert check(bad, bird_ready=True, now=101) == [
        "calico/node is not ready: BIRD is not ready: BGP not established with 10.0.0.9"
    ]
    assert check(bad, felix_ready=True, now=101) == []
    # one BIRD for both families: --bird6-ready judges only the IPv6 sessions
    assert check(bad, bird6_ready=True, now=101) == []
    v6down = status(bgp=[{"peer": "fd00::2", "info": "Connect"}]).to_json()
    assert check(v6down, bird_ready=True, now=101) == []
    assert check(v6down, bird6_ready=True, now=101) == [
        "calico/node is not ready: BIRD6 is not ready: BGP not established with fd00::2"
    ]
    good = status(bgp=[]).to_json()
    assert check(good, felix_ready=True, bird_ready=True, now=101) == []
    nofelix = status(felix_in_sync=False).to_json()
    assert check(nofelix, felix_ready=True, now=101) == [
        "calico/node is not ready: felix is not ready: readiness probe reporting 503"
    ]
    # a stale file (agent gone) fails every check
    assert len(check(good, felix_ready=True, bird_ready=True, now=1000)) == 2
    assert check(None, felix_live=True)[0].startswith("calico/node is not live")


def test_cli_check_flags_exit_codes(tmp_path: Path) -> None:
    st = status(bgp=bgp_rows(ROWS))
    st.time = __import__("time").time()
    write_status(str(tmp_path), st)
    r = CliRunner().invoke(run, ["--state-dir", str(tmp_path), "-bird-ready", "-felix-ready"])
    assert r.exit_code == 1
    assert "BGP not established with 10.0.0.9" in r.output
    st.bgp = [row for row in st.bgp if row["info"] == "Established"]
    write_status(str(tmp_path), st)
    r = CliRunner().invoke(run, ["--state-dir", str(tmp_path), "--bird-ready", "--felix-ready"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "status.json").read_text())["ready"] is True
