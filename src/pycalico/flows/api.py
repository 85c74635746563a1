"""The node's local flow-log API: HTTP+JSON on ``flowLogsAPIPort`` (default 9098).

Owns :class:`FlowAPI` (a threaded ``http.server`` in the node's network namespace) and the
client side used by calicoctl and calico-lab (:func:`fetch_flows`).

Endpoints (GET only):

- ``/flows?from=&to=&action=&policy=&since=&limit=`` -> ``{"node": ..., "flows": [record,
  ...]}`` (records of the store and of the open bucket, oldest first; record format in
  :mod:`pycalico.flows.record`); a bad filter -> 400 ``{"error": "..."}``.
- ``/health`` -> the collector's health (enabled, alive, restarts, what it lost, store
  size).

Invariants: read-only; a slow or failing client never blocks the collector (each request
has its own thread and only takes the collector's lock for the open-bucket snapshot).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pycalico.errors import CalicoError
from pycalico.flows.record import FlowRecord
from pycalico.flows.store import FilterError, FlowFilter

DEFAULT_PORT = 9098


class FlowAPIError(CalicoError):
    """A node's flow API could not be queried (names the address and reason)."""


class FlowAPI:
    def __init__(self, collector: Any) -> None:
        self.collector = collector
        self._server: ThreadingHTTPServer | None = None

    def serve(self, host: str, port: int) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                c = api.collector
                if url.path == "/health":
                    self._send(200, c.health())
                    return
                if url.path != "/flows":
                    self._send(404, {"error": f"no such path {url.path}"})
                    return
                try:
                    flt = FlowFilter.from_query(q)
                    limit = int(q.get("limit") or 10000)
                except (FilterError, ValueError) as e:
                    self._send(400, {"error": str(e)})
                    return
                flows = [r.to_json() for r in c.query(flt, limit)]
                self._send(200, {"node": c.node_name, "enabled": c.enabled, "flows": flows})

        self._server = ThreadingHTTPServer((host or "0.0.0.0", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="flow-api", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def fetch_flows(
    base_url: str, flt: FlowFilter, limit: int = 10000, timeout: float = 5.0
) -> tuple[str, list[FlowRecord]]:
    """(node name, records) from one node's API; FlowAPIError when it cannot be read."""
    q = dict(flt.to_query(), limit=str(limit))
    url = base_url.rstrip("/") + "/flows?" + urllib.parse.urlencode(q)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as e:
        try:
            reason = json.load(e).get("error", str(e))
        except ValueError:
            reason = str(e)
        raise FlowAPIError(f"{base_url}: {reason}") from None
    except (OSError, ValueError) as e:
        raise FlowAPIError(f"{base_url}: {e}") from None
    return str(body.get("node", "")), [FlowRecord.from_json(d) for d in body.get("flows", [])]
