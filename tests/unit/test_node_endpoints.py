"""Health HTTP endpoint, Prometheus metrics and the BGP driver's pure helpers."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from pycalico.node.bgpdriver import borrowed_ips
from pycalico.node.health import HealthServer
from pycalico.node.metrics import NodeMetrics


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_health_endpoints_200_and_503() -> None:
    state: dict[str, Any] = {"live": True, "ready": False}
    srv = HealthServer(
        "127.0.0.1",
        0,
        lambda: (state["live"], {"live": state["live"]}),
        lambda: (state["ready"], {"ready": state["ready"]}),
    ).start()
    try:
        base = f"http://127.0.0.1:{srv.port}"
        assert _get(base + "/liveness")[0] == 200
        code, body = _get(base + "/readiness")
        assert code == 503 and '"ready": false' in body
        state["ready"] = True
        assert _get(base + "/readiness")[0] == 200
        assert _get(base + "/other")[0] == 404
    finally:
        srv.stop()


def test_metrics_names_and_counter_monotonic() -> None:
    m = NodeMetrics()
    m.update(
        {"felix_active_local_endpoints": 3, "unknown_metric": 9},
        resyncs=2,
        apply_times=[0.002, 0.3],
        restarts={"felix": 1},
    )
    m.update({}, resyncs=5)
    m.update({}, resyncs=1)  # source restarted: counts as 1 new resync
    text = m.exposition().decode()
    assert "felix_active_local_endpoints 3.0" in text
    assert "felix_resyncs_started_total 6.0" in text
    assert "felix_int_dataplane_apply_time_seconds_count 2.0" in text
    assert 'calico_node_component_restarts{component="felix"} 1.0' in text
    assert "unknown_metric" not in text


def test_borrowed_ips_only_ours_in_foreign_blocks() -> None:
    blocks = [
        {
            "spec": {
                "cidr": "10.0.0.0/30",
                "affinity": "host:n2",
                "allocations": [0, None, 1, None],
                "attributes": [
                    {"handle_id": "h1", "secondary": {"node": "n1"}},
                    {"handle_id": "h2", "secondary": {"node": "n2"}},
                ],
            }
        },
        {
            "spec": {
                "cidr": "10.0.0.4/30",
                "affinity": "host:n1",
                "allocations": [0],
                "attributes": [{"handle_id": "h3", "secondary": {"node": "n1"}}],
            }
        },
    ]
    assert borrowed_ips(blocks, "n1") == ["10.0.0.0"]
    assert borrowed_ips(blocks, "n2") == []  # its own block: not borrowed
