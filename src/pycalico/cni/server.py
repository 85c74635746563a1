"""The node's CNI server: runs plugin invocations forwarded by the C shim (``shim.c``).

Why: a Python plugin pays ~10 ms interpreter start-up plus ~50 ms of imports per container;
the server keeps everything imported and runs :func:`pycalico.cni.runner.run` directly, so an
ADD costs only its real work. Behaviour is identical to the exec'd plugin (same ``run``).

Invariants:
- Only a peer in the *same network namespace* as the server is served (host-side wiring is
  done in the server's namespace); any other peer gets status 255 and the shim falls back to
  the Python plugin. Peers must be root (SO_PEERCRED uid 0); the socket is created 0600.
- The workload namespace is reached through the fd the client sends with the request
  (SCM_RIGHTS, an open ``CNI_NETNS``), never through a path lookup alone: the runtime may
  have mounted ``CNI_NETNS`` in a mount namespace the server cannot see. If the path the
  server sees is that same namespace it is used as is (``ip -n <name>``, the fast case);
  otherwise the request runs against ``/proc/<server pid>/fd/<n>``, while results and
  records still name ``CNI_NETNS``. A ``calico`` ADD/CHECK without an fd, or any request
  whose fd is unusable (not a network namespace, or the server's own) gets status 255: the
  client runs the plugin itself, in its own mount namespace, with the spec's errors. The fd
  is closed when the request ends.
- The MTU file is the server's (``CALICO_MTU_FILE`` of calico-node) unless the plugin's
  environment names one (:func:`request_env`).
- Datastore handles are opened once per distinct configuration and shared by the request
  threads (backends are thread-safe); IPAM serialises allocations with its host lock + CAS,
  exactly as separate plugin processes would.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from pycalico.cni.context import Deps, _dataplane, _open_datastore, default_deps
from pycalico.cni.main import DEFAULT_SOCKET
from pycalico.cni.runner import PLUGIN_CALICO, PLUGIN_IPAM, run
from pycalico.cni.types import NetConf

if TYPE_CHECKING:
    from pycalico.datastore.base import Datastore

NOT_MINE = 255
NS_GET_NSTYPE = 0xB703  # linux/nsfs.h: _IO(0xb7, 0x3)
CLONE_NEWNET = 0x40000000
_MAX_FDS = 4


def parse_request(data: bytes) -> tuple[str, dict[str, str], bytes]:
    """``plugin\\0 K=V\\0 ... \\0 stdin`` -> (plugin, env, stdin)."""
    plugin, _, rest = data.partition(b"\0")
    env: dict[str, str] = {}
    while rest:
        item, _, rest = rest.partition(b"\0")
        if not item:
            break
        k, sep, v = item.decode("utf-8", "surrogateescape").partition("=")
        if sep:
            env[k] = v
    return plugin.decode(), env, rest


def _peer(sock: socket.socket) -> tuple[int, int]:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


def _same_netns(pid: int) -> bool:
    try:
        a = os.stat(f"/proc/{pid}/ns/net")
        b = os.stat("/proc/self/ns/net")
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _ns_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _is_netns(fd: int) -> bool:
    try:
        # an nsfs inode (same superblock as our own ns files) before any ioctl on it
        if os.fstat(fd).st_dev != os.stat("/proc/self/ns/net").st_dev:
            return False
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


def netns_via(path: str, fd: int | None) -> str | None:
    """The path through which this process reaches the namespace the client sent as ``fd``
    for ``CNI_NETNS=path``: ``path`` itself when it names the same namespace here, else the
    fd under /proc; None when the request must be declined (no usable fd, or the fd is the
    server's own network namespace, which the in-process plugin reports as error 8)."""
    if fd is None or not _is_netns(fd):
        return None
    have = _ns_id(os.fstat(fd))
    if have == _ns_id(os.stat("/proc/self/ns/net")):
        return None
    try:
        if _ns_id(os.stat(path)) == have:
            return path
    except OSError:
        pass
    # /proc/<pid>, not /proc/self: `ip`/`nsenter` children open it as *their* /proc/self
    return f"/proc/{os.getpid()}/fd/{fd}"


def recv_request(sock: socket.socket) -> tuple[bytes, list[int]]:
    """The whole request and any fds that came with it (close-on-exec, caller closes)."""
    chunks: list[bytes] = []
    fds: list[int] = []
    space = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
    while True:
        b, anc, _flags, _addr = sock.recvmsg(65536, space, socket.MSG_CMSG_CLOEXEC)
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(data[: len(data) - len(data) % a.itemsize])
                fds.extend(a)
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks), fds


class _DatastoreCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[tuple[str, ...], Datastore] = {}

    def open(self, conf: NetConf, environ: Mapping[str, str]) -> Datastore:
        key = (
            conf.datastore_type or environ.get("DATASTORE_TYPE", ""),
            conf.datastore_path or environ.get("CALICO_DATASTORE_PATH", ""),
            conf.etcd_endpoints or environ.get("ETCD_ENDPOINTS", ""),
            conf.etcd_ca_cert_file or environ.get("ETCD_CA_CERT_FILE", ""),
            conf.etcd_cert_file or environ.get("ETCD_CERT_FILE", ""),
            conf.etcd_key_file or environ.get("ETCD_KEY_FILE", ""),
        )
        with self._lock:
            ds = self._stores.get(key)
            if ds is None:
                ds = self._stores[key] = _open_datastore(conf, environ)
            return ds

    def close(self) -> None:
        with self._lock:
            for ds in self._stores.values():
                ds.close()
            self._stores.clear()


_STORES = _DatastoreCache()


def request_env(env: Mapping[str, str], server_env: Mapping[str, str]) -> dict[str, str]:
    """The plugin's environment, plus the server's ``CALICO_MTU_FILE`` when the plugin names
    none: the MTU file is the one this node's calico-node writes (where *its* environment
    says), which a container runtime's environment does not carry. Without this a node with
    a private MTU file (every calico-lab node) read the machine's /var/lib/calico/mtu."""
    out = dict(env)
    if not out.get("CALICO_MTU_FILE") and server_env.get("CALICO_MTU_FILE"):
        out["CALICO_MTU_FILE"] = server_env["CALICO_MTU_FILE"]
    return out


def _deps(env: Mapping[str, str], via: Mapping[str, str]) -> Callable[[], Deps]:
    def make() -> Deps:
        d = default_deps(request_env(env, os.environ))
        d.open_datastore = _STORES.open
        if via:
            d.dataplane = lambda: _dataplane(via)
        return d

    return make


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        pid, uid = _peer(sock)
        data, fds = recv_request(sock)
        try:
            plugin, env, stdin = parse_request(data)
            if uid != 0 or not _same_netns(pid) or plugin not in (PLUGIN_CALICO, PLUGIN_IPAM):
                sock.sendall(bytes([NOT_MINE]))
                return
            via: dict[str, str] = {}
            netns = env.get("CNI_NETNS", "")
            wires = plugin == PLUGIN_CALICO and env.get("CNI_COMMAND") in ("ADD", "CHECK")
            if netns and (fds or wires):
                path = netns_via(netns, fds[0] if fds else None)
                if path is None:
                    sock.sendall(bytes([NOT_MINE]))
                    return
                if path != netns:
                    via[netns] = path
            rc, out = run(plugin, env, stdin, _deps(env, via))
            sock.sendall(bytes([rc & 0xFF]) + out.encode())
        finally:
            for fd in fds:
                os.close(fd)


class CniServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
        self.path = path

    def server_close(self) -> None:
        super().server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def serve(path: str = DEFAULT_SOCKET, ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or :meth:`CniServer.shutdown` from another thread)."""
    import signal

    srv = CniServer(path)
    stop = threading.Event()

    def _stop(*_: object) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=srv.shutdown, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    # warm the imports the first request would otherwise pay for
    import importlib

    for mod in ("pycalico.cni.plugin", "pycalico.datastore.sqlite", "pycalico.ipam"):
        importlib.import_module(mod)

    if ready is not None:
        ready()
    try:
        srv.serve_forever(poll_interval=0.5)
    finally:
        srv.server_close()
        _STORES.close()
