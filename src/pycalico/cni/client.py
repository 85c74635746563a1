"""Forward one invocation to the node's CNI server (the Python twin of ``shim.c``).

Import-light on purpose (``_socket`` instead of ``socket``: no enum/selectors): an exec'd
plugin tries this before importing anything heavy. Protocol and fallback rules are the
shim's: the request's first bytes carry an fd of ``CNI_NETNS`` (SCM_RIGHTS) when it can be
opened, so the server reaches a namespace mounted where it cannot see it; no server or
status 255 ("not mine", e.g. no usable namespace fd) => None, the caller runs in-process;
a connection lost after the request was sent => error 11 (never run a command twice).
"""

from __future__ import annotations

import _socket
import os
import sys

TYPE_CHECKING = False  # keep `typing`/`collections` out of the exec'd plugin's start-up
if TYPE_CHECKING:
    from collections.abc import Mapping

NOT_MINE = 255
_LOST = (
    b'{"cniVersion":"1.0.0","code":11,"msg":"pycalico CNI server connection lost; try again later"}'
)


def encode_request(plugin: str, environ: Mapping[str, str], stdin: bytes) -> bytes:
    parts = [plugin.encode(), b"\0"]
    for k, v in environ.items():
        parts += [k.encode(), b"=", v.encode("utf-8", "surrogateescape"), b"\0"]
    parts += [b"\0", stdin]
    return b"".join(parts)


def _open_netns(path: str) -> int:
    if not path:
        return -1
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def forward(
    plugin: str, path: str, stdin: bytes, environ: Mapping[str, str], timeout: float = 300.0
) -> tuple[int, bytes] | None:
    """(exit status, stdout) from the server, or None to run in-process."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        data = encode_request(plugin, environ, stdin)
        try:
            s.connect(path)
            nsfd = _open_netns(environ.get("CNI_NETNS", ""))
            if nsfd >= 0:
                try:
                    fd = nsfd.to_bytes(4, sys.byteorder)
                    sent = s.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd)])
                finally:
                    os.close(nsfd)
                data = data[sent:]
            s.sendall(data)
            s.shutdown(_socket.SHUT_WR)
        except OSError:
            return None  # nothing reached the server: safe to run in-process
        chunks: list[bytes] = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except OSError:
            return 1, _LOST
        data = b"".join(chunks)
        if not data:
            return 1, _LOST
        if data[0] == NOT_MINE:
            return None
        return data[0], data[1:]
    finally:
        s.close()
