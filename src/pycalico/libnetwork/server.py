"""Docker's plugin protocol on unix sockets: ``POST /<Method>`` with a JSON body, a JSON answer.

One :class:`PluginServer` per socket (``calico.sock`` for the network driver,
``calico-ipam.sock`` for IPAM) in Docker's plugin directory. Each request is served on its own
thread; a body that is not JSON (or is over 1 MiB, or nested too deeply) gets ``{"Err": ...}``
(HTTP 200, which is how Docker's remote drivers read driver errors), never a hang. The socket
file is created atomically (bound under a temporary name, then renamed), so Docker never finds
a dead path, and removed on close.
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
DEFAULT_PLUGIN_DIR = "/run/docker/plugins"
NETWORK_SOCKET = "calico.sock"
IPAM_SOCKET = "calico-ipam.sock"

Handle = Callable[[str, Any], dict[str, Any]]
#: Docker's plugin requests are a few hundred bytes; anything over this is refused unread.
MAX_REQUEST_BYTES = 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: PluginServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        method = self.path.lstrip("/")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        resp: dict[str, Any]
        if n < 0 or n > MAX_REQUEST_BYTES:
            msg = f"calico: request body must be 0-{MAX_REQUEST_BYTES} bytes (Content-Length)"
            resp = {"Err": msg, "Error": msg}
            self.close_connection = True  # the unread body must not be parsed as a request
        else:
            raw = self.rfile.read(n) if n > 0 else b""
            try:
                req = json.loads(raw) if raw.strip() else {}
            except (ValueError, RecursionError) as e:
                why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
                msg = f"calico: request body is not JSON: {why}"
                resp = {"Err": msg, "Error": msg}
            else:
                resp = self.server.handle(method, req)
        body = json.dumps(resp).encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "docker"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("plugin %s: " + format, self.server.path, *args)


class PluginServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, handle: Handle) -> None:
        self.path = path
        self.handle = handle
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        if os.path.exists(tmp):
            os.unlink(tmp)
        super().__init__(tmp, _Handler)
        os.chmod(tmp, 0o660)
        os.replace(tmp, path)
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name=name, daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
        self.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
