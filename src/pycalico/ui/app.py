"""The console's ASGI application (Starlette): pages, fragments, JSON and the flow stream.

Owns routing, the token check and the per-request snapshot of the datastore; every decision
is in :mod:`pycalico.ui.views` / :mod:`pycalico.ui.flows`. Pages are server-rendered jinja2
templates; htmx fetches fragments (policy explain, what-if, live matrix); cytoscape.js draws
the BGP graph, Chart.js the flow sparkline (both vendored under ``static/vendor`` with their
licences, so the console works offline and needs no build step).

Invariants: read-only — no handler writes the datastore (the what-if applies to a memory
copy; the live matrix only probes); with a token configured every request must carry it
(``Authorization: Bearer``, the ``calico_console_token`` cookie, or ``?token=`` which sets
the cookie), compared in constant time; library errors become a 400/502 with their message.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from anyio import to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pycalico.api.loader import MAX_MANIFEST_BYTES
from pycalico.datastore import Datastore
from pycalico.datastore.base import ROOT
from pycalico.errors import CalicoError
from pycalico.felix.calc.insight import PolicyInsight, ProbeResult, parse_port_list
from pycalico.model import protocol_name
from pycalico.ui import flows as flowmod
from pycalico.ui import views
from pycalico.ui.sources import FlowSource, LiveMatrix, StatusSource

HERE = Path(__file__).parent
COOKIE = "calico_console_token"
Obj = dict[str, Any]


@dataclass
class Console:
    """What the console reads: the datastore (opened per snapshot), node status, and the
    optional live matrix (lab) and flow source (flow logs)."""

    open_store: Callable[[], Datastore]
    status: StatusSource
    live: LiveMatrix | None = None
    flow_source: FlowSource | None = None
    token: str | None = None
    title: str = "pycalico console"
    snapshot_ttl: float = 1.0
    _snap: tuple[float, int, list[Obj]] | None = field(default=None, repr=False)
    _insight: tuple[int, PolicyInsight] | None = field(default=None, repr=False)
    _matrix: dict[tuple[int, tuple[tuple[int, int], ...]], list[ProbeResult]] = field(
        default_factory=dict, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> tuple[int, list[Obj]]:
        """(revision, every stored resource), re-read at most every ``snapshot_ttl`` s."""
        now = time.monotonic()
        snap = self._snap
        if snap is not None and now - snap[0] < self.snapshot_ttl:
            return snap[1], snap[2]
        ds = self.open_store()
        try:
            listed = ds.list_prefix(ROOT)
        finally:
            ds.close()
        items = [dict(r) for r in listed.items]
        self._snap = (now, listed.revision, items)
        return listed.revision, items

    def resources(self) -> list[Obj]:
        return self.snapshot()[1]

    def insight(self) -> PolicyInsight:
        """The policy model of the current snapshot (rebuilt only when the revision moved)."""
        revision, items = self.snapshot()
        with self._lock:
            cached = self._insight
            if cached is not None and cached[0] == revision:
                return cached[1]
        insight = PolicyInsight(items)
        with self._lock:
            self._insight = (revision, insight)
        return insight

    def matrix(self, ports_text: str | None) -> tuple[list[tuple[int, int]], list[ProbeResult]]:
        """``calicoctl policy matrix`` of the current snapshot, cached per revision."""
        revision = self.snapshot()[0]
        insight = self.insight()
        ports = _ports(insight, ports_text)
        key = (revision, tuple(ports))
        with self._lock:
            hit = self._matrix.get(key)
        if hit is None:
            hit = insight.matrix(ports)
            with self._lock:
                self._matrix = {k: v for k, v in self._matrix.items() if k[0] == revision}
                self._matrix[key] = hit
        return ports, hit


def _ports(insight: PolicyInsight, text: str | None) -> list[tuple[int, int]]:
    ports = parse_port_list(text) if text else []
    return ports or insight.default_ports()


def _port_text(ports: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"{p}/{protocol_name(proto)}" for p, proto in ports)


class TokenMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        auth = request.headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else None
        if self._ok(bearer) or self._ok(request.cookies.get(COOKIE)):
            return await call_next(request)
        if self._ok(request.query_params.get("token")):
            resp = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
            resp.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return resp
        return Response("console token required\n", status_code=401, media_type="text/plain")


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it (or its Content-Length) exceeds ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(console: Console) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["title"] = console.title

    def page(request: Request, name: str, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("lab", console.live is not None)
        return templates.TemplateResponse(request, name, ctx)

    def fail(request: Request, e: Exception, code: int = 400) -> HTMLResponse:
        # htmx swaps only 2xx answers: a fragment it asked for shows its error in place.
        if request.headers.get("hx-request"):
            code = 200
        return templates.TemplateResponse(
            request, "_error.html", {"message": str(e)}, status_code=code
        )

    async def index(request: Request) -> Response:
        return RedirectResponse("/cluster", status_code=303)

    def cluster_data() -> dict[str, Any]:
        try:
            statuses: dict[str, Any] = console.status.node_statuses()
            status_error = None
        except CalicoError as e:
            statuses, status_error = {}, str(e)
        view = views.cluster_view(console.resources(), statuses)
        view["status_error"] = status_error
        return view

    async def cluster(request: Request) -> Response:
        view = await to_thread.run_sync(cluster_data)
        return page(request, "cluster.html", view=view, graph_json=json.dumps(view["graph"]))

    async def api_cluster(request: Request) -> Response:
        return JSONResponse(await to_thread.run_sync(cluster_data))

    async def reachability(request: Request) -> Response:
        try:
            ports, results = await to_thread.run_sync(
                console.matrix, request.query_params.get("ports")
            )
        except CalicoError as e:
            return fail(request, e)
        return page(
            request,
            "reachability.html",
            grids=views.matrix_grids(results),
            ports=_port_text(ports),
            live=False,
        )

    async def api_matrix(request: Request) -> Response:
        try:
            _, results = await to_thread.run_sync(console.matrix, request.query_params.get("ports"))
        except CalicoError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return JSONResponse({"probes": [r.to_json() for r in results]})

    async def live(request: Request) -> Response:
        if console.live is None:
            return fail(request, CalicoError("the live matrix needs a lab (calico-lab ui)"))
        source = console.live
        try:
            ports, results = await to_thread.run_sync(
                console.matrix, request.query_params.get("ports")
            )
            probes = await to_thread.run_sync(
                source.probe_matrix, [(p, protocol_name(pr)) for p, pr in ports]
            )
        except CalicoError as e:
            return fail(request, e, 502)
        seen = views.cells(probes)
        grids = views.matrix_grids(results, seen)
        return templates.TemplateResponse(
            request,
            "_grids.html",
            {
                "grids": grids,
                "live": True,
                "disagree": sum(g["disagree"] for g in grids),
                "probed": len(seen),
            },
        )

    async def explain(request: Request) -> Response:
        q = request.query_params
        try:
            port = int(q["port"]) if q.get("port") else None
            ex = await to_thread.run_sync(
                lambda: console.insight().explain(
                    q.get("from", ""), q.get("to", ""), port, q.get("protocol", "TCP")
                )
            )
        except (CalicoError, ValueError) as e:
            return fail(request, e)
        return templates.TemplateResponse(request, "_explain.html", {"ex": ex.to_json()})

    async def policy(request: Request) -> Response:
        insight = await to_thread.run_sync(console.insight)
        return page(
            request,
            "policy.html",
            tiers=views.policy_view(insight),
            ports=_port_text(insight.default_ports()),
        )

    async def whatif(request: Request) -> Response:
        # A urlencoded form (what htmx posts), parsed without python-multipart; at most
        # the manifest cap (urlencoding may triple it), read without buffering more.
        raw = await _read_capped(request, 3 * MAX_MANIFEST_BYTES)
        if raw is None:
            msg = f"request body larger than {3 * MAX_MANIFEST_BYTES} bytes"
            return JSONResponse({"errors": [msg]}, status_code=413)
        body = raw.decode("utf-8", errors="replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        text = form.get("yaml", "")
        ports_text = form.get("ports", "")

        def run() -> dict[str, Any]:
            ports, current = console.matrix(ports_text.strip() or None)
            source = console.flow_source
            recorded = source.flows(time.time() - 3600) if source is not None else None
            return views.whatif(
                console.resources(), text, ports, console.insight(), current, flows=recorded
            )

        wants_json = request.headers.get("accept", "").startswith("application/json")
        try:
            delta = await to_thread.run_sync(run)
        except CalicoError as e:
            lines = e.lines if isinstance(e, views.WhatIfError) else [str(e)]
            if wants_json:
                return JSONResponse({"errors": lines}, status_code=422)
            # 200: htmx swaps only 2xx answers, and the errors are the answer.
            return templates.TemplateResponse(request, "_whatif.html", {"errors": lines})
        if wants_json:
            return JSONResponse(delta)
        return templates.TemplateResponse(request, "_whatif.html", {"delta": delta})

    async def flows(request: Request) -> Response:
        return page(request, "flows.html", available=console.flow_source is not None)

    def flow_rows(params: dict[str, str], since: float) -> list[dict[str, Any]]:
        assert console.flow_source is not None
        filt = flowmod.FlowFilter.of(params)
        return [flowmod.row(r) for r in console.flow_source.flows(since) if filt.matches(r)]

    async def api_flows(request: Request) -> Response:
        if console.flow_source is None:
            return JSONResponse({"error": "flow logs not available"}, status_code=404)
        params = dict(request.query_params)
        since = float(params.get("since") or 0)
        rows = await to_thread.run_sync(flow_rows, params, since)
        return JSONResponse({"flows": rows})

    async def api_rate(request: Request) -> Response:
        if console.flow_source is None:
            return JSONResponse({"error": "flow logs not available"}, status_code=404)
        source = console.flow_source
        now = time.time()
        recs = await to_thread.run_sync(source.flows, now - 1800)
        filt = flowmod.FlowFilter.of(dict(request.query_params))
        return JSONResponse(flowmod.per_minute([r for r in recs if filt.matches(r)], now))

    async def stream(request: Request) -> Response:
        if console.flow_source is None:
            return JSONResponse({"error": "flow logs not available"}, status_code=404)
        params = dict(request.query_params)

        async def events() -> Any:
            since = time.time() - 300
            while not await request.is_disconnected():
                now = time.time()
                rows = await to_thread.run_sync(flow_rows, params, since)
                since = max([since, *(float(r["end"] or 0) for r in rows)])
                if rows:
                    yield f"event: flows\ndata: {json.dumps(rows)}\n\n"
                else:
                    yield f": idle {now:.0f}\n\n"
                await asyncio.sleep(1.0)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/cluster", cluster),
        Route("/api/cluster", api_cluster),
        Route("/reachability", reachability),
        Route("/reachability/explain", explain),
        Route("/reachability/live", live, methods=["POST"]),
        Route("/api/matrix", api_matrix),
        Route("/policy", policy),
        Route("/policy/whatif", whatif, methods=["POST"]),
        Route("/flows", flows),
        Route("/flows/stream", stream),
        Route("/api/flows", api_flows),
        Route("/api/flows/rate", api_rate),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(TokenMiddleware, token=console.token)] if console.token else []
    return Starlette(routes=routes, middleware=middleware)
