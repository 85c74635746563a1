"""The exec'd plugin's fast path: :mod:`pycalico.cni.client` talking to an in-process
:class:`pycalico.cni.server.CniServer` on a temp unix socket (IPAM-only calls: no links)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycalico.cni.client import encode_request, forward
from pycalico.cni.server import CniServer, parse_request
from pycalico.datastore.sqlite import SqliteDatastore


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "cni.sock")
    srv = CniServer(path)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield path
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def test_request_roundtrip_encoding() -> None:
    env = {"CNI_COMMAND": "ADD", "X": "a=b"}
    assert parse_request(encode_request("calico", env, b"{}")) == ("calico", env, b"{}")


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_PEERCRED uid must be root")
def test_forward_served_and_fallback(server: str, tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    ds = SqliteDatastore(db)
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "p"},
            "spec": {"cidr": "10.248.0.0/24"},
        }
    )
    conf = {
        "cniVersion": "1.0.0",
        "name": "net",
        "type": "calico-ipam",
        "nodename": "n",
        "datastore_type": "sqlite",
        "datastore_path": db,
        "ipam_lock_file": str(tmp_path / "l"),
    }
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "f1",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
    }
    got = forward("calico-ipam", server, json.dumps(conf).encode(), env)
    assert got is not None and got[0] == 0
    assert json.loads(got[1])["ips"][0]["address"].startswith("10.248.0.")
    assert [h["metadata"]["name"] for h in ds.list("IPAMHandle").items] == ["net.f1"]
    bad = forward("calico-ipam", server, b"{", env)
    assert bad is not None and bad[0] == 1 and json.loads(bad[1])["code"] == 6
    assert forward("calico-ipam", str(tmp_path / "absent.sock"), b"{}", env) is None
    assert forward("not-a-plugin", server, b"{}", env) is None  # refused: 255
    # the exec'd entry point takes the same path (and works without the server)
    exe = [sys.executable, "-c", "from pycalico.cni.main import ipam_main; ipam_main()"]
    for sock in (server, str(tmp_path / "absent.sock")):
        p = subprocess.run(
            exe,
            input=json.dumps(conf).encode(),
            capture_output=True,
            env=dict(env, CNI_COMMAND="DEL", CALICO_CNI_SOCKET=sock),
            timeout=60,
        )
        assert p.returncode == 0, p.stdout
    assert ds.list("IPAMHandle").items == []
    ds.close()
