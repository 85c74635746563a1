"""Issue 19 "Health tells the truth": with the real etcd stopped, calico-node's readiness
(status.json ``ready``, ``/readiness`` on the health port, ``calico-node run --felix-ready``)
drops within the grace period plus a few seconds, liveness stays up, and readiness returns
once etcd is back and the node's SyncerHub has resynced.

The agent is assembled as ``build_agent`` does it (one SyncerHub over etcd, built with the
node's kinds and poll interval, set on the NodeAgent before its run loop starts), with a
hub-fed component that needs no root (the workload DNS server on 127.0.0.1) and the health
server on a free loopback port. Run with ``-s`` to see the measured times.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from pycalico.datastore import open_datastore
from pycalico.datastore.hub import SyncerHub
from pycalico.dns import DnsServer
from pycalico.dns.server import KINDS as DNS_KINDS
from pycalico.node.agent import NodeAgent, run
from pycalico.node.status import read_status
from tests.fixtures.etcd import EtcdServer, free_port
from tests.kit.builders import ip_pool
from tests.kit.waiting import wait_for

GRACE = 5.0  # CALICO_NODE_DATASTORE_GRACE_PERIOD for this test (default 10s)
SLACK = 4.0  # status tick (1 s) + outage detection (watch poll 0.5 s) + margin on a busy host


def probe(port: int, path: str) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code
    except requests.RequestException:
        return 0


def felix_ready_cli(state_dir: Path) -> tuple[int, str]:
    r = CliRunner().invoke(run, ["--state-dir", str(state_dir), "--felix-ready"])
    return r.exit_code, r.output


@pytest.fixture
def agent_on_etcd(
    etcd_server_fn: EtcdServer, tmp_path: Path
) -> Iterator[tuple[NodeAgent, int, Path]]:
    ds = open_datastore(etcd_server_fn.config())
    ds.create(ip_pool("default-ipv4-ippool", "10.244.0.0/16"))
    hub = SyncerHub(ds, DNS_KINDS, poll_interval=0.5, name="hub-syncer-n1")
    dns = DnsServer(ds, "n1", [("127.0.0.1", 0)], hub=hub)
    port = free_port()
    cfg: dict[str, Any] = {
        "healthEnabled": True,
        "healthHost": "127.0.0.1",
        "healthPort": port,
        "prometheusMetricsEnabled": False,
    }
    state = tmp_path / "state"
    state.mkdir()
    agent = NodeAgent("n1", str(state), [dns], felix_cfg=cfg)
    # as build_agent: the hub is set on the agent and started before the components
    agent.hub = hub.start()
    agent.datastore_grace = GRACE
    t = threading.Thread(target=agent.run, name="test-node-agent", daemon=True)
    t.start()
    try:
        yield agent, port, state
    finally:
        agent.stop_event.set()
        t.join(15)
        if hub.alive():  # older agents do not stop the hub they were given
            hub.stop()


@pytest.mark.etcd
def test_readiness_follows_an_etcd_outage(
    etcd_server_fn: EtcdServer, agent_on_etcd: tuple[NodeAgent, int, Path]
) -> None:
    agent, port, state = agent_on_etcd
    wait_for(lambda: probe(port, "/readiness") == 200, 20, what="initial readiness")
    code, out = felix_ready_cli(state)
    assert code == 0, (out, read_status(str(state)))

    t_stop = time.monotonic()  # before: the agent may see the connection close mid-stop
    etcd_server_fn.stop()
    # inside the grace period it stays ready (a blip must not flap readiness)
    time.sleep(GRACE - 2.0)
    assert probe(port, "/readiness") == 200, read_status(str(state))
    wait_for(lambda: probe(port, "/readiness") == 503, GRACE + SLACK, what="readiness 503")
    down_after = time.monotonic() - t_stop
    data = read_status(str(state))
    assert data is not None and data["ready"] is False and data["datastore_ready"] is False
    assert any(e.startswith("datastore unreachable for ") for e in data["errors"]), data
    code, out = felix_ready_cli(state)
    assert code == 1 and "datastore unreachable for " in out, out
    assert probe(port, "/liveness") == 200 and agent.liveness()[0]  # alive: it will resync
    assert GRACE <= down_after <= GRACE + SLACK, down_after

    outage = 3.0  # keep etcd down a little longer, readiness must stay down
    time.sleep(outage)
    assert probe(port, "/readiness") == 503

    etcd_server_fn.start()
    t_start = time.monotonic()
    wait_for(lambda: probe(port, "/readiness") == 200, 15, what="readiness back")
    up_after = time.monotonic() - t_start
    data = read_status(str(state))
    assert data is not None and data["ready"] is True and data["errors"] == [], data
    assert felix_ready_cli(state)[0] == 0
    assert probe(port, "/liveness") == 200
    print(
        f"\nreadiness: 503 after {down_after:.1f}s of etcd outage (grace {GRACE:.0f}s), "
        f"200 again {up_after:.1f}s after etcd restart"
    )
