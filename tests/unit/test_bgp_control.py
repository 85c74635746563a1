"""BIRD control socket client, show-protocols parsing, BirdManager config writes,
and `calicoctl node status` formatting — against a fake BIRD socket server."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pycalico.bgp import (
    BirdConfigInvalid,
    BirdControl,
    BirdControlError,
    BirdManager,
    BirdNotRunning,
    ProtocolRow,
    peers,
)
from pycalico.ctl import node as node_cmd

SHOW_PROTOCOLS = [
    "2002-Name       Proto      Table      State  Since         Info",
    "1002-device1    Device     ---        up     2026-11-25T17:58:37.796  ",
    " kernel4    Kernel     master4    up     2026-11-25T17:58:37.796  ",
    " Mesh_198_18_0_2 BGP        ---        up     2026-11-25T17:58:39.101  Established   ",
    " Global_198_18_0_254_port_1179 BGP        ---        start  2026-11-24T10:00:00.000  "
    "Active        Socket: Connection refused",
    " Node_fd00__fe BGP        ---        start  2026-11-25T17:58:37.796  Connect       ",
    "0000 ",
]


class FakeBird:
    """A thread serving BIRD's CLI protocol on a unix socket with scripted replies."""

    def __init__(self, path: str, replies: dict[str, list[str]]) -> None:
        self.path, self.replies = path, replies
        self.commands: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                f = conn.makefile("rwb")
                f.write(b"0001 BIRD 2.0.12 ready.\n")
                f.flush()
                cmd = f.readline().decode().strip()
                self.commands.append(cmd)
                lines = self.replies.get(cmd, ["9001 syntax error"])
                f.write(("\n".join(lines) + "\n").encode())
                f.flush()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_bird(tmp_path: Path) -> Iterator[FakeBird]:
    fb = FakeBird(
        str(tmp_path / "bird.ctl"),
        {
            "show protocols": SHOW_PROTOCOLS,
            "configure": ["0002-Reading configuration from /x/bird.cfg", "0003 Reconfigured"],
            "show status": ["1000-BIRD 2.0.12", "1011-Router ID is 1.2.3.4", "0013 Daemon is up"],
        },
    )
    yield fb
    fb.close()


def test_show_protocols_rows(fake_bird: FakeBird) -> None:
    rows = BirdControl(fake_bird.path).show_protocols()
    assert [r.name for r in rows] == [
        "device1",
        "kernel4",
        "Mesh_198_18_0_2",
        "Global_198_18_0_254_port_1179",
        "Node_fd00__fe",
    ]
    assert rows[2] == ProtocolRow(
        "Mesh_198_18_0_2", "BGP", "---", "up", "2026-11-25T17:58:39.101", "Established"
    )
    assert rows[3].info.split() == ["Active", "Socket:", "Connection", "refused"]
    assert rows[1].info == ""


def test_configure_version_and_errors(fake_bird: FakeBird) -> None:
    ctl = BirdControl(fake_bird.path)
    assert ctl.configure().code == 3
    assert ctl.version() == "2.0.12"
    with pytest.raises(BirdControlError) as ei:
        ctl.command("bogus")
    assert ei.value.code == 9001
    assert fake_bird.commands == ["configure", "show status", "bogus"]


def test_not_running(tmp_path: Path) -> None:
    with pytest.raises(BirdNotRunning):
        BirdControl(str(tmp_path / "nope.ctl")).show_protocols()


def test_node_status_tables() -> None:
    rows = [
        ProtocolRow(
            "Mesh_198_18_0_2", "BGP", "---", "up", "2026-11-25T17:58:39.101", "Established"
        ),
        ProtocolRow(
            "Global_198_18_0_254_port_1179",
            "BGP",
            "---",
            "start",
            "2026-11-24T10:00:00",
            "Active  x",
        ),
        ProtocolRow("kernel4", "Kernel", "master4", "up", "2026-11-25T17:58:39", ""),
        ProtocolRow("RR_1", "BGP", "---", "up", "2026-11-25T17:58:39", "Established"),
    ]
    today = dt.date(2026, 11, 25)
    table = peers.peer_rows(rows, 4)
    table = [[*r[:3], peers.format_since(rows[i].since, today), r[4]] for i, r in enumerate(table)]
    assert node_cmd.render_table(node_cmd.HEADERS, table).splitlines() == [
        "+-------------------+-------------------+-------+------------+-------------+",
        "|   PEER ADDRESS    |     PEER TYPE     | STATE |   SINCE    |    INFO     |",
        "+-------------------+-------------------+-------+------------+-------------+",
        "| 198.18.0.2        | node-to-node mesh | up    | 17:58:39   | Established |",
        "| 198.18.0.254:1179 | global            | start | 2026-11-24 | Active x    |",
        "+-------------------+-------------------+-------+------------+-------------+",
    ]
    report = node_cmd.status_report(rows)
    assert "IPv4 BGP status" in report and "IPv6 BGP status\nNo IPv6 peers found." in report
    assert "BIRD) is not running" in node_cmd.status_report(None)


def test_node_status_v6_rows() -> None:
    rows = [ProtocolRow("Node_fd00__fe", "BGP", "---", "up", "x", "Established")]
    assert peers.peer_rows(rows, 6) == [["fd00::fe", "node specific", "up", "x", "Established"]]
    assert peers.peer_rows(rows, 4) == []


@pytest.mark.parametrize(
    ("argv", "agent"),
    [
        (["/usr/bin/calico-node", "run"], True),
        (["/venv/bin/python", "/venv/bin/calico-node", "-felix"], True),
        (["calico-felix"], True),
        (["calico-node", "install-cni"], False),
        (["vim", "felix.py"], False),
    ],
)
def test_agent_detection(argv: list[str], agent: bool) -> None:
    assert node_cmd.is_calico_agent(argv) is agent


def test_agent_detection_scans_proc(tmp_path: Path) -> None:
    (tmp_path / "123").mkdir()
    (tmp_path / "123" / "cmdline").write_bytes(b"python\0calico-node\0run\0")
    assert node_cmd.calico_process_running(str(tmp_path)) is True
    (tmp_path / "123" / "cmdline").write_bytes(b"sleep\010\0")
    assert node_cmd.calico_process_running(str(tmp_path)) is False


@pytest.mark.skipif(os.geteuid() != 0, reason="calicoctl node status requires root")
def test_node_status_cli(fake_bird: FakeBird, tmp_path: Path) -> None:
    # A stand-in agent: its command line carries "calico-node run" (killed by PID below).
    agent = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "calico-node", "run"]
    )
    try:
        for _ in range(100):  # until the stand-in is visible in /proc
            if node_cmd.calico_process_running():
                break
            time.sleep(0.02)
        res = CliRunner().invoke(node_cmd.node, ["status", "--bird-socket", fake_bird.path])
        assert res.exit_code == 0, res.output
        assert res.output.startswith("Calico process is running.\n\nIPv4 BGP status\n+")
        assert "| 198.18.0.2 " in res.output and "| fd00::fe " in res.output
        gone = CliRunner().invoke(
            node_cmd.node, ["status"], env={"CALICO_BIRD_SOCKET": str(tmp_path / "none.ctl")}
        )
        assert gone.exit_code == 0
        assert "The BGP backend process (BIRD) is not running." in gone.output
    finally:
        agent.kill()
        agent.wait()


def test_manager_write_config_is_atomic_and_checked(tmp_path: Path) -> None:
    if shutil.which("bird") is None:
        pytest.skip("bird not installed")
    m = BirdManager(str(tmp_path / "bird.cfg"), str(tmp_path / "bird.ctl"))
    good = "router id 1.2.3.4;\nprotocol device { scan time 2; }\n"
    assert m.write_config(good) is True
    assert m.write_config(good) is False  # unchanged: nothing written
    with pytest.raises(BirdConfigInvalid) as ei:
        m.write_config("router id 1.2.3.4;\nprotocol bogus {}\n")
    assert "syntax error" in ei.value.output or "bogus" in ei.value.output
    assert (tmp_path / "bird.cfg").read_text() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bird.cfg"]  # no temp leftovers


def test_sync_from_datastore_writes_checked_config(tmp_path: Path) -> None:
    if shutil.which("bird") is None:
        pytest.skip("bird not installed")
    from pycalico.bgp.source import sync
    from pycalico.datastore.memory import MemoryDatastore
    from tests.unit.test_bgp_helpers import affinity, node, peer, pool

    ds = MemoryDatastore()
    for obj in (
        node("n1", "198.18.0.1"),
        node("n2", "198.18.0.2"),
        pool("p", "10.244.0.0/16"),
        affinity("n1", "10.244.1.0/26"),
        affinity("n2", "10.244.2.0/26"),
        peer("tor", peerIP="198.18.0.254", asNumber=64513),
    ):
        ds.create(obj)
    m = BirdManager(str(tmp_path / "bird.cfg"), str(tmp_path / "bird.ctl"))
    cfg = sync(ds, "n1", m)
    text = (tmp_path / "bird.cfg").read_text()
    assert cfg.v4 is not None and cfg.v4.blocks == ("10.244.1.0/26",)
    assert "protocol bgp Mesh_198_18_0_2 " in text and "protocol bgp Global_198_18_0_254 " in text
    assert "10.244.2.0/26 blackhole" not in text
