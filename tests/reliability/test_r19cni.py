"""Issue 19, CNI slice: the fast path works when the pod's netns lives in the runtime's own
mount namespace, and the server declines (the plugin falls back) when it cannot reach it.

A runtime with private mounts (``unshare --mount``, ``ip netns exec``, a containerised
runtime) bind-mounts ``/run/netns/<pod>`` where calico-node's cni-server cannot see it: the
server finds only the empty placeholder file. The shim (and the Python plugin's client) send
the namespace itself as an fd (SCM_RIGHTS); the server wires the pod through that fd.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycalico.cni.client import encode_request
from pycalico.cni.server import NOT_MINE, CniServer
from pycalico.datastore.sqlite import SqliteDatastore
from pycalico.node.install_cni import build_conflist, install
from tests.fixtures.netns import NETNS_DIR, Netns, NetnsFactory
from tests.kit import wait_for
from tests.kit.builders import ip_pool

pytestmark = [pytest.mark.netns]

BIN = Path(sys.executable).parent


@dataclass
class PrivatePod:
    """A pod netns bind-mounted only inside a private mount namespace held by ``proc``."""

    name: str
    proc: subprocess.Popen[str]

    @property
    def path(self) -> str:
        return f"{NETNS_DIR}/{self.name}"

    def enter(self) -> list[str]:
        """argv prefix running a command in the holder's mount (and network) namespace."""
        return ["nsenter", "-t", str(self.proc.pid), "-m", "-n", "--"]

    def ip_json(self, *args: str) -> Any:
        p = subprocess.run(
            [*self.enter(), "ip", "-j", "-n", self.name, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout) if p.stdout.strip() else []


@contextlib.contextmanager
def private_pod(host: Netns, tag: str) -> Iterator[PrivatePod]:
    """``ip netns add`` run inside ``unshare --mount`` in ``host``'s netns; the holder process
    keeps that mount namespace (and so the pod netns) alive until the block ends."""
    name = f"{host.factory.prefix}{tag}"
    script = f"ip netns add {name} && ip -n {name} link set lo up && echo ready && exec sleep 300"
    unshare = ["unshare", "--mount", "--propagation", "private"]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", host.name, *unshare, "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "ready", proc.stderr.read() if proc.stderr else ""
        # the premise: the host (and the server) see only the placeholder, not the netns
        assert not os.path.ismount(f"{NETNS_DIR}/{name}")
        yield PrivatePod(name, proc)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        path = f"{NETNS_DIR}/{name}"
        if os.path.exists(path) and not os.path.ismount(path):
            os.unlink(path)


def _cni(pod: PrivatePod, plugin: Path, cmd: str, conf: dict[str, Any], cid: str) -> Any:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": cmd,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": pod.path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(plugin.parent),
    }
    p = subprocess.run(
        [*pod.enter(), str(plugin)],
        input=json.dumps(conf),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 0, (cmd, p.stdout, p.stderr)
    return json.loads(p.stdout) if p.stdout.strip() else None


def _log_pids(tmp: Path) -> list[int]:
    lines = (tmp / "cni.log").read_text().splitlines()
    return [int(ln.split("[", 1)[1].split("]", 1)[0]) for ln in lines]


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler for the shim")
def test_add_del_through_server_for_netns_in_private_mount_namespace(
    netns_factory: NetnsFactory, tmp_path: Path
) -> None:
    node = netns_factory.netns("node")
    db = str(tmp_path / "calico.db")
    ds = SqliteDatastore(db)
    ds.create(ip_pool("p", "10.247.0.0/16", block_size=26))
    sock = str(tmp_path / "cni.sock")
    install(str(tmp_path / "bin"), str(tmp_path / "net.d"), build_conflist(), socket_path=sock)
    py = tmp_path / "pybin"
    install(str(py), str(tmp_path / "net.d"), build_conflist(), socket_path=sock, shim=False)
    conf = {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "nodename": "node1",
        "datastore_type": "sqlite",
        "datastore_path": db,
        "ipam_lock_file": str(tmp_path / "ipam.lock"),
        "log_file_path": str(tmp_path / "cni.log"),
        "ipam": {"type": "calico-ipam"},
    }
    server = node.popen(str(BIN / "calico-node"), "cni-server", "--socket", sock)
    wait_for(lambda: os.path.exists(sock) or server.poll() is not None, 30, what="cni socket")
    assert os.path.exists(sock), "cni-server did not start"
    # the C shim, then the Python plugin's client: both must hand the server the namespace
    for tag, plugin in (("shim", tmp_path / "bin" / "calico"), ("py", py / "calico")):
        cid = f"priv{tag}"
        with private_pod(node, f"pod{tag}") as pod:
            res = _cni(pod, plugin, "ADD", conf, cid)
            assert _log_pids(tmp_path)[-1] == server.pid, f"{tag}: not served by the server"
            cidr = res["ips"][0]["address"]
            addr = cidr.split("/")[0]
            assert res["interfaces"][1]["sandbox"] == pod.path
            got = [
                f"{a['local']}/{a['prefixlen']}"
                for link in pod.ip_json("addr", "show", "dev", "eth0")
                for a in link["addr_info"]
            ]
            assert cidr in got
            routes = pod.ip_json("route", "show")
            assert {"dst": "default", "gateway": "169.254.1.1"}.items() <= routes[0].items()
            host_if = "cali" + cid[:11]
            assert [r["dev"] for r in node.routes(addr)] == [host_if]
            weps = ds.list("WorkloadEndpoint").items
            assert [w["spec"]["ipNetworks"] for w in weps] == [[cidr]]
            assert weps[0]["spec"]["interfaceName"] == host_if
            _cni(pod, plugin, "CHECK", {**conf, "prevResult": res}, cid)
            assert _log_pids(tmp_path)[-1] == server.pid
            _cni(pod, plugin, "DEL", conf, cid)
            assert _log_pids(tmp_path)[-1] == server.pid
            assert host_if not in node.links()
            assert "eth0" not in {x["ifname"] for x in pod.ip_json("link", "show")}
            assert ds.list("WorkloadEndpoint").items == []
            assert ds.list("IPAMHandle").items == []
    ds.close()
    server.terminate()
    server.wait(timeout=10)


def _raw(path: str, env: dict[str, str], fd: int | None) -> int:
    """Send one request (optionally with ``fd`` attached); the server's status byte."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(30)
        s.connect(path)
        data = encode_request("calico", env, b'{"cniVersion":"1.0.0","name":"n","type":"calico"}')
        if fd is None:
            s.sendall(data)
        else:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
            s.sendall(data[s.sendmsg([data], anc) :])
        s.shutdown(socket.SHUT_WR)
        return s.recv(1)[0]
    finally:
        s.close()


def test_server_declines_without_a_usable_namespace_fd(tmp_path: Path) -> None:
    path = str(tmp_path / "cni.sock")
    srv = CniServer(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "x",
        "CNI_NETNS": "/run/netns/pct-r19cni-nonexistent",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    try:
        assert _raw(path, env, None) == NOT_MINE  # no fd: the plugin runs in-process
        with open("/dev/null") as f:
            assert _raw(path, env, f.fileno()) == NOT_MINE  # not a namespace
        own = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            assert _raw(path, env, own) == NOT_MINE  # the server's own netns: error 8 locally
        finally:
            os.close(own)
        before = len(os.listdir("/proc/self/fd"))
        with open("/dev/null") as f:
            for _ in range(20):
                _raw(path, env, f.fileno())
        # received fds (and the connections) are closed once each request ends
        wait_for(lambda: len(os.listdir("/proc/self/fd")) <= before, 5, what="fds closed")
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)
