"""Prometheus metrics of calico-node, with Felix's ``felix_*`` names where Calico has one.

Owns: one :class:`CollectorRegistry` (not the global one, so tests and several agents in one
process never collide), the metric objects, :meth:`NodeMetrics.update` which copies the
agent's periodic snapshot into gauges/counters, and the HTTP exporter.

Names (Calico's): ``felix_active_local_endpoints``, ``felix_active_local_policies``,
``felix_active_local_selectors``, ``felix_ipsets_calico``, ``felix_cluster_num_hosts``,
``felix_resyncs_started`` (counter), ``felix_int_dataplane_apply_time_seconds``
(histogram), ``felix_route_table_num_routes``; plus pycalico's own
``calico_node_component_restarts`` and ``calico_node_bgp_sessions_established``.

Invariants: :meth:`update` is idempotent for gauges; counters only move forward (a source
counter that went backwards — component restart — is treated as a fresh count).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

GAUGES = {
    "felix_active_local_endpoints": "Number of active endpoints on this host.",
    "felix_active_local_policies": "Number of active policies on this host.",
    "felix_active_local_selectors": "Number of active selectors on this host.",
    "felix_ipsets_calico": "Number of active Calico IP sets.",
    "felix_cluster_num_hosts": "Total number of Calico hosts in the cluster.",
    "felix_route_table_num_routes": "Number of routes programmed by the route agent.",
    "calico_node_bgp_sessions_established": "BGP sessions in state Established.",
    "calico_node_bgp_sessions": "Configured BGP sessions.",
}
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.gauges = {n: Gauge(n, h, registry=self.registry) for n, h in GAUGES.items()}
        self.resyncs = Counter(
            "felix_resyncs_started",
            "Number of times Felix has started resyncing with the datastore.",
            registry=self.registry,
        )
        self.apply_time = Histogram(
            "felix_int_dataplane_apply_time_seconds",
            "Time in seconds that it took to apply a dataplane update.",
            buckets=APPLY_BUCKETS,
            registry=self.registry,
        )
        self.restarts = Gauge(
            "calico_node_component_restarts",
            "Restarts of a calico-node component by the supervisor.",
            ["component"],
            registry=self.registry,
        )
        self._last_resyncs = 0.0
        self._server: object | None = None

    def update(
        self,
        values: Mapping[str, float],
        *,
        resyncs: float | None = None,
        apply_times: Iterable[float] = (),
        restarts: Mapping[str, int] | None = None,
    ) -> None:
        for name, v in values.items():
            g = self.gauges.get(name)
            if g is not None:
                g.set(v)
        if resyncs is not None:
            delta = resyncs - self._last_resyncs if resyncs >= self._last_resyncs else resyncs
            if delta > 0:
                self.resyncs.inc(delta)
            self._last_resyncs = resyncs
        for t in apply_times:
            self.apply_time.observe(t)
        for comp, n in (restarts or {}).items():
            self.restarts.labels(component=comp).set(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> None:
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host or "0.0.0.0", registry=self.registry)
        self._server = server

    def stop(self) -> None:
        server = self._server
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            self._server = None
