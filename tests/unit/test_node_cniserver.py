"""calico-node's CNI server component serves forwarded plugin calls and stops cleanly."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from pycalico.node.cniserver import CniServerComponent, from_env


def call(path: str, payload: bytes) -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data[0], data[1:]


@pytest.mark.skipif(os.geteuid() != 0, reason="the server only serves root peers")
def test_serves_a_version_call_and_stops(tmp_path: Path) -> None:
    sock = str(tmp_path / "cni.sock")
    comp = CniServerComponent(sock)
    comp.start()
    try:
        assert comp.alive() and comp.in_sync()
        rc, out = call(sock, b"calico\0CNI_COMMAND=VERSION\0\0" + b'{"cniVersion": "1.0.0"}')
        assert rc == 0
        assert "1.0.0" in json.loads(out)["supportedVersions"]
        rc, _ = call(sock, b"not-a-plugin\0CNI_COMMAND=VERSION\0\0{}")
        assert rc == 255  # refused: the shim falls back to the in-process plugin
    finally:
        comp.stop()
    assert not Path(sock).exists()


def test_from_env() -> None:
    assert from_env({"CALICO_CNI_SERVER_ENABLED": "false"}) is None
    comp = from_env({"CALICO_CNI_SOCKET": "/tmp/x.sock"})
    assert comp is not None and comp.socket_path == "/tmp/x.sock"
    comp = from_env({}, "/run/lab/node1")
    assert comp is not None and comp.socket_path == "/run/lab/node1/cni.sock"
