"""The installed C shim + ``calico-node cni-server`` fast path, driven like a runtime.

The server runs in the node namespace; a shim invoked there is served by it (the plugin log
line carries the server's pid). A shim invoked from another namespace is refused (status
255) and transparently execs the Python plugin; so does a shim with no server at all.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.sqlite import SqliteDatastore
from pycalico.node.install_cni import build_conflist, install
from tests.fixtures.netns import CniCall, Netns, NetnsFactory, invoke_cni
from tests.kit import wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler for the shim"),
]

BIN = Path(sys.executable).parent


def _conf(tmp: Path, db: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "nodename": "node1",
        "datastore_type": "sqlite",
        "datastore_path": db,
        "ipam_lock_file": str(tmp / "ipam.lock"),
        "log_file_path": str(tmp / "cni.log"),
        "ipam": {"type": "calico-ipam"},
    }


def _log_pids(tmp: Path) -> list[int]:
    lines = (tmp / "cni.log").read_text().splitlines()
    return [int(ln.split("[", 1)[1].split("]", 1)[0]) for ln in lines]


def _call(
    plugin: Path, cmd: str, conf: dict[str, Any], cid: str, pod: Netns, host: Netns
) -> CniCall:
    c = invoke_cni(
        str(plugin),
        cmd,
        conf,
        container_id=cid,
        netns=pod.path,
        host=host,
        cni_path=str(plugin.parent),
    )
    assert c.rc == 0, (c.stdout, c.stderr)
    return c


def test_shim_uses_server_in_same_netns_and_falls_back_elsewhere(
    netns_factory: NetnsFactory, tmp_path: Path
) -> None:
    ul = netns_factory.underlay(2)
    node, other = ul.nodes
    db = str(tmp_path / "calico.db")
    ds = SqliteDatastore(db)
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "p"},
            "spec": {"cidr": "10.246.0.0/16", "blockSize": 26},
        }
    )
    sock = str(tmp_path / "cni.sock")
    install(str(tmp_path / "bin"), str(tmp_path / "net.d"), build_conflist(), socket_path=sock)
    shim = tmp_path / "bin" / "calico"
    conf = _conf(tmp_path, db)
    # no server yet: the shim execs the Python plugin
    pod0 = netns_factory.netns("p0")
    _call(shim, "ADD", conf, "nosrv", pod0, node)
    server = node.popen(str(BIN / "calico-node"), "cni-server", "--socket", sock)
    wait_for(lambda: os.path.exists(sock) or server.poll() is not None, 30, what="cni socket")
    assert os.path.exists(sock), "cni-server did not start"
    pod1 = netns_factory.netns("p1")
    res = _call(shim, "ADD", conf, "srv1", pod1, node).out
    addr = res["ips"][0]["address"].split("/")[0]
    # wiring done by the server (reachability itself is covered by test_cni_plugin; a ping
    # here would only add exposure to the machine-wide ARP table limit)
    assert res["ips"][0]["address"] in pod1.addresses("eth0")
    assert [r["dev"] for r in node.routes(addr)] == ["calisrv1"]
    assert _log_pids(tmp_path)[-1] == server.pid
    # a runtime in another namespace: refused by the server, served by the fallback
    pod2 = netns_factory.netns("p2")
    _call(shim, "ADD", conf, "other1", pod2, other)
    assert _log_pids(tmp_path)[-1] != server.pid
    assert "cali" + "other1"[:11] in other.links()
    for cid, pod, host in (("nosrv", pod0, node), ("srv1", pod1, node), ("other1", pod2, other)):
        _call(shim, "DEL", conf, cid, pod, host)
    assert ds.list("IPAMHandle").items == []
    assert ds.list("WorkloadEndpoint").items == []
    ds.close()
    # errors come back through the server with the spec's codes
    bad = invoke_cni(str(shim), "ADD", "{not json", container_id="x", netns=pod1.path, host=node)
    assert bad.rc == 1 and bad.out["code"] == 6
    server.terminate()
    server.wait(timeout=10)
    assert not os.path.exists(sock)
