"""Health HTTP endpoint of calico-node (Felix's ``/liveness`` and ``/readiness``).

Owns: a small threaded HTTP server answering ``GET /liveness`` and ``GET /readiness`` with
200 and a JSON detail when healthy, 503 when not (Calico's status codes); anything else 404.

Invariants: the verdicts come from callables evaluated per request (no caching), so the
answer is never staler than the agent's own state; the server runs on a daemon thread and
:meth:`HealthServer.stop` closes the socket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Verdict = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    def __init__(self, host: str, port: int, liveness: Verdict, readiness: Verdict) -> None:
        checks = {"/liveness": liveness, "/readiness": readiness}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                check = checks.get(self.path.split("?")[0])
                if check is None:
                    self.send_error(404)
                    return
                try:
                    ok, detail = check()
                except Exception as e:  # a failing check is a failing probe
                    ok, detail = False, {"error": str(e)}
                body = json.dumps(detail, sort_keys=True).encode() + b"\n"
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="health-http", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
