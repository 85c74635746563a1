"""Unit tests of calico-lab's pure parts: ToR configuration, seeding, recorded settings,
diagnostics of a node that is not ready and the logs kept after a failed ``up``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pycalico.lab import cluster, nodes, tor
from pycalico.lab.state import LabState, NodeState


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabState:
    monkeypatch.setenv("CALICO_LAB_DIR", str(tmp_path))
    st = LabState(name="t", prefix="clt-", directory=str(tmp_path / "t"))
    st.nodes = [
        NodeState(name="node1", netns="clt-node1", ip="198.18.0.1/24", subnet=0),
        NodeState(name="node2", netns="clt-node2", ip="198.18.1.2/24", subnet=1),
    ]
    st.save()
    return st


def test_bgpd_conf_peers_with_every_node_and_originates_the_prefix(state: LabState) -> None:
    conf = tor.bgpd_conf(state, Path("/run/x"))
    lines = [line.strip() for line in conf.splitlines()]
    assert "router bgp 64513" in lines
    assert "bgp router-id 198.18.0.253" in lines
    assert "no bgp ebgp-requires-policy" in lines
    for ip in ("198.18.0.1", "198.18.1.2"):
        assert f"neighbor {ip} remote-as 64512" in lines
        assert f"neighbor {ip} activate" in lines
        assert f"neighbor {ip} ebgp-multihop 4" in lines
    assert "network 203.0.113.0/24" in lines
    assert lines.index("address-family ipv4 unicast") < lines.index("network 203.0.113.0/24")
    assert "log file /run/x/bgpd.log" in lines


def test_seed_adds_the_tor_peer_only_with_tor(state: LabState) -> None:
    def peers() -> list[dict[str, object]]:
        return [d for d in nodes.seed_resources(state, 0) if d["kind"] == "BGPPeer"]

    assert peers() == []
    state.tor = True
    (peer,) = peers()
    assert peer["metadata"] == {"name": "tor"}
    assert peer["spec"] == {"peerIP": "198.18.0.253", "asNumber": 64513}


def test_route_refresh_from_env_is_seeded_as_felix_configuration(state: LabState) -> None:
    # Flow logs are on in the lab: FelixConfiguration default always carries the switch and
    # the flow API's credentials (HTTPS on every address, the lab's CA, token in the lab dir).
    api = {
        "flowLogsAPIHost": "0.0.0.0",
        "flowLogsAPITokenFile": str(state.path / "flows-api" / "token"),
        "flowLogsAPICertFile": str(state.path / "flows-api" / "server.pem"),
        "flowLogsAPIKeyFile": str(state.path / "flows-api" / "server.key"),
        "flowLogsAPICAFile": str(state.path / "flows-api" / "ca.pem"),
    }
    (fc,) = [d for d in nodes.seed_resources(state, 0) if d["kind"] == "FelixConfiguration"]
    assert fc["spec"] == {"flowLogsFileEnabled": True, **api}
    for given, want in (("2", "2s"), ("1500ms", "1500ms")):
        state.node_env = {"FELIX_ROUTEREFRESHINTERVAL": given}
        (fc,) = [d for d in nodes.seed_resources(state, 0) if d["kind"] == "FelixConfiguration"]
        assert fc["metadata"] == {"name": "default"}
        assert fc["spec"] == {"flowLogsFileEnabled": True, **api, "routeRefreshInterval": want}


def test_recorded_env_keeps_felix_settings_only() -> None:
    env = {"FELIX_NFTABLESREFRESHINTERVAL": "2", "PATH": "/bin", "HOME": "/root"}
    assert nodes.recorded_env(env) == {"FELIX_NFTABLESREFRESHINTERVAL": "2"}


def test_state_without_new_fields_still_loads(state: LabState) -> None:
    path = state.path / "state.json"
    data = json.loads(path.read_text())
    del data["node_env"]
    path.write_text(json.dumps(data))
    loaded = LabState.load("t")
    assert loaded.node_env == {} and loaded.nodes[1].ip == "198.18.1.2/24"


def test_diagnose_shows_errors_sessions_and_log_tail(state: LabState) -> None:
    node = state.nodes[0]
    d = state.path / "node1"
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({
        "ready": False, "errors": ["bgp: bird exited"], "felix_in_sync": True,
        "bgp": [{"peer": "198.18.1.2", "type": "node-to-node mesh", "state": "start",
                 "info": "Connect"}],
    }))  # fmt: skip
    (d / "calico-node.log").write_text("".join(f"line {i}\n" for i in range(1000)))
    text = nodes.diagnose(state, node, tail=100)
    assert "node1 (198.18.0.1/24, pid 0, not running)" in text
    assert "error: bgp: bird exited" in text
    assert "bgp 198.18.1.2 node-to-node mesh start Connect" in text
    assert "felix_in_sync: True" in text
    assert "line 999" in text and "line 900" not in text


def test_wait_ready_failure_names_the_node_and_why(state: LabState) -> None:
    with pytest.raises(nodes.LabError, match=r"(?s)calico-node on node1 exited.*no log"):
        nodes.wait_ready(state, state.nodes[:1], 1)


def test_preserve_logs_copies_small_files_not_etcd_data(state: LabState) -> None:
    (state.path / "node1").mkdir()
    (state.path / "node1" / "calico-node.log").write_text("boom\n")
    (state.path / "etcd" / "member").mkdir(parents=True)
    (state.path / "etcd" / "member" / "wal").write_text("x")
    (state.path / "huge.bin").write_bytes(b"\0" * (cluster.MAX_KEPT_FILE + 1))
    kept = cluster.preserve_logs("t")
    assert kept == state.path.with_name("t.failed")
    assert (kept / "node1" / "calico-node.log").read_text() == "boom\n"
    assert (kept / "state.json").is_file()
    assert not (kept / "etcd").exists() and not (kept / "huge.bin").exists()
    assert cluster.preserve_logs("absent") is None
