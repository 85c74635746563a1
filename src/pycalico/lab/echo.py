"""A tiny TCP+UDP responder for lab pods: ``python -m pycalico.lab.echo 80/TCP 80/UDP``.

Each TCP connection gets one line ``<hostname-or-pod> <port>/TCP`` and is closed; each UDP
datagram is answered with the same text. One dual-stack socket per port (``::`` with
``IPV6_V6ONLY`` off: IPv4 and IPv6 clients alike; plain IPv4 where IPv6 is disabled). Runs
until killed. Uses only the standard library
(started once per pod, so it must be light).
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def _bind(kind: int, port: int) -> socket.socket:
    try:
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr: tuple[str, int] = ("::", port)
    except OSError:
        s, addr = socket.socket(socket.AF_INET, kind), ("0.0.0.0", port)
    if kind == socket.SOCK_STREAM:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    return s


def serve(specs: list[str], ident: str) -> None:
    sel = selectors.DefaultSelector()
    for spec in specs:
        port_s, _, proto = spec.partition("/")
        port = int(port_s)
        kind = socket.SOCK_DGRAM if proto.upper() == "UDP" else socket.SOCK_STREAM
        s = _bind(kind, port)
        if proto.upper() != "UDP":
            s.listen(128)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, (port, proto.upper()))
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            port, proto = key.data
            reply = f"{ident} {port}/{proto}\n".encode()
            try:
                if proto == "UDP":
                    _, addr = sock.recvfrom(2048)
                    sock.sendto(reply, addr)
                else:
                    conn, _ = sock.accept()
                    with conn:
                        conn.settimeout(1)
                        conn.sendall(reply)
            except OSError:
                continue


def main() -> None:
    serve(sys.argv[1:], os.environ.get("POD_NAME", socket.gethostname()))


if __name__ == "__main__":
    main()
