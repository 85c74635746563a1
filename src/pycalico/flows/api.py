"""The node's local flow-log API: HTTP+JSON on ``flowLogsAPIPort`` (default 9098).

Owns :class:`FlowAPI` (a threaded ``http.server`` in the node's network namespace) and the
client side used by calicoctl and calico-lab (:func:`fetch_flows`).

Endpoints (GET only):

- ``/flows?from=&to=&action=&policy=&since=&limit=`` -> ``{"node": ..., "flows": [record,
  ...]}`` (records of the store and of the open bucket, oldest first; record format in
  :mod:`pycalico.flows.record`); a bad filter -> 400 ``{"error": "..."}``.
- ``/health`` -> the collector's health (enabled, alive, restarts, what it lost, store
  size).

Every request must carry the node's token (``Authorization: Bearer``) or, over TLS, a
client certificate signed by ``flowLogsAPICAFile`` (:mod:`pycalico.flows.auth`); anything
else gets 401 ``{"error": ...}`` with ``WWW-Authenticate: Bearer``.

Invariants: read-only; nothing is answered before the request is authorised; a slow or
failing client never blocks the collector or other clients (each connection has its own
thread, where its TLS handshake happens, with a timeout; a request only takes the
collector's lock for the open-bucket snapshot).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pycalico.errors import CalicoError
from pycalico.flows.auth import ClientCredentials, ServerAuth
from pycalico.flows.record import FlowRecord
from pycalico.flows.store import FilterError, FlowFilter

DEFAULT_PORT = 9098
_CONN_TIMEOUT = 10.0


class FlowAPIError(CalicoError):
    """A node's flow API could not be queried (names the address and reason)."""


class _Server(ThreadingHTTPServer):
    """Threaded HTTP(S): the TLS handshake happens in the connection's own thread."""

    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(_CONN_TIMEOUT)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # no valid client certificate / not TLS: nothing was said
        try:
            super().finish_request(conn, client_address)
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


class FlowAPI:
    def __init__(self, collector: Any, auth: ServerAuth) -> None:
        self.collector = collector
        self.auth = auth
        self._server: _Server | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.auth.tls is not None else "http"

    def serve(self, host: str, port: int) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            timeout = _CONN_TIMEOUT

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                peer = (
                    self.connection.getpeercert()
                    if isinstance(self.connection, ssl.SSLSocket)
                    else None
                )
                if api.auth.allows(self.headers.get("Authorization"), peer):
                    return True
                self._send(
                    401,
                    {"error": f"authentication required (accepted: {api.auth.describe()})"},
                    {"WWW-Authenticate": 'Bearer realm="calico-flows"'},
                )
                return False

            def do_GET(self) -> None:
                if not self._authorised():
                    return
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

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_cls = type("_FlowServer", (_Server,), {"address_family": family})
        server = server_cls((host or "127.0.0.1", port), Handler)
        server.tls = self.auth.tls
        self._server = server
        threading.Thread(target=server.serve_forever, name="flow-api", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def get_json(url: str, creds: ClientCredentials | None = None, timeout: float = 5.0) -> Any:
    """GET ``url`` with ``creds``; FlowAPIError naming the URL and the reason."""
    creds = creds or ClientCredentials()
    req = urllib.request.Request(url, headers=creds.headers())
    ctx = creds.ssl_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        try:
            reason = json.load(e).get("error", str(e))
        except ValueError:
            reason = str(e)
        if e.code == 401:
            reason = f"401 {reason}: give --token-file or a client certificate"
        raise FlowAPIError(f"{url.split('?')[0]}: {reason}") from None
    except (OSError, ValueError) as e:
        raise FlowAPIError(f"{url.split('?')[0]}: {e}") from None


def fetch_flows(
    base_url: str,
    flt: FlowFilter,
    limit: int = 10000,
    timeout: float = 5.0,
    creds: ClientCredentials | None = None,
) -> tuple[str, list[FlowRecord]]:
    """(node name, records) from one node's API; FlowAPIError when it cannot be read."""
    q = dict(flt.to_query(), limit=str(limit))
    url = base_url.rstrip("/") + "/flows?" + urllib.parse.urlencode(q)
    body = get_json(url, creds, timeout)
    try:
        return str(body.get("node", "")), [FlowRecord.from_json(d) for d in body.get("flows", [])]
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise FlowAPIError(f"{base_url}: malformed answer: {e}") from None
