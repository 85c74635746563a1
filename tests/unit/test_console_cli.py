"""``calicoctl ui``: the console program started as a user starts it (a child process)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from pycalico.config import load_config
from pycalico.datastore import open_datastore
from pycalico.ui.cli import ui
from tests.kit import node
from tests.kit.waiting import poll

CALICOCTL = str(Path(sys.executable).parent / "calicoctl")


def env_for(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, DATASTORE_TYPE="sqlite", CALICO_DATASTORE_PATH=str(tmp_path / "c.db"))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    env.pop("CALICO_CONSOLE_TOKEN", None)
    return env


def test_refuses_a_non_loopback_address_without_token(tmp_path: Path) -> None:
    r = CliRunner().invoke(ui, ["--listen", "0.0.0.0:9443"], env=env_for(tmp_path))
    assert r.exit_code == 1
    assert "not a loopback address; a token is required" in r.output


def test_serves_the_configured_datastore_on_loopback(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    ds = open_datastore(load_config(env=env), create=True)
    ds.create(node("node1", "198.18.0.1"))
    ds.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [CALICOCTL, "ui", "--listen", f"127.0.0.1:{port}", "--status-dir", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def get() -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/cluster", timeout=5) as r:
                data: dict[str, object] = json.loads(r.read())
                return data
        except OSError:
            return None

    try:
        data = poll(get, 30, 0.1)
        assert data is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert [(n["name"], n["state"]) for n in data["nodes"]] == [("node1", "unknown")]  # type: ignore[attr-defined,index]
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.stdout is not None
    assert "pycalico console on http://127.0.0.1:" in proc.stdout.read()
