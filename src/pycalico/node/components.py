"""The adapter that makes Felix (policy, routes, tunnels, NAT-outgoing, MTU file: one syncer,
one owner loop) a supervisable component.

Owns: constructing a fresh Felix on every (re)start (its threads cannot be restarted), the
liveness/in-sync verdicts the supervisor and status file use, and a metrics snapshot in
Calico's ``felix_*`` terms.

Invariants: ``stop()`` leaves the dataplane in place (Felix keeps what it programmed on
stop; the next incarnation reconciles it after its own resync); Felix is constructed with the
datastore (and optional SyncerHub) shared by the whole process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from pycalico.datastore import Datastore

log = logging.getLogger(__name__)


class FelixComponent:
    """:class:`pycalico.felix.agent.Felix` with the system's nft runner and route drivers
    (``mtu_file``: the CNI plugin's MTU file; ``hub``: an optional SyncerHub)."""

    name = "felix"

    def __init__(
        self,
        ds: Datastore,
        node_name: str,
        env: Mapping[str, str],
        factory: Callable[[], Any] | None = None,
        *,
        mtu_file: str | None = None,
        hub: Any = None,
    ) -> None:
        self.ds = ds
        self.node_name = node_name
        self.env = dict(env)
        self.mtu_file = mtu_file
        self.hub = hub
        self._factory = factory
        self.agent: Any = None
        self._seen_applies = 0.0
        self._seen_seconds = 0.0

    def _make(self) -> Any:
        if self._factory is not None:
            return self._factory()
        from pycalico.felix.agent import Felix
        from pycalico.felix.dataplane import SubprocessNftRunner

        return Felix(
            self.node_name, self.ds, SubprocessNftRunner(), env=self.env, system_routes=True,
            mtu_file=self.mtu_file, hub=self.hub,
        )  # fmt: skip

    def start(self) -> None:
        self.agent = self._make()
        self._seen_applies = self._seen_seconds = 0.0
        self.agent.start()

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()

    def alive(self) -> bool:
        return self.agent is not None and bool(self.agent.alive())

    def resync(self) -> None:
        """A full read-back and repair of nftables and routes (calico-node's SIGHUP)."""
        if self.agent is not None:
            self.agent.resync()

    def in_sync(self) -> bool:
        return self.agent is not None and bool(self.agent.wait_in_sync(0))

    def metrics(self) -> tuple[dict[str, float], float | None, list[float]]:
        """(gauges, resyncs counter, new apply durations) for :class:`NodeMetrics`."""
        a = self.agent
        if a is None:
            return {}, None, []
        try:
            stats = a.stats()
        except Exception:
            return {}, None, []
        gauges = {
            metric: float(stats[key])
            for key, metric in (
                ("active_local_endpoints", "felix_active_local_endpoints"),
                ("active_local_policies", "felix_active_local_policies"),
                ("ipsets", "felix_ipsets_calico"),
            )
            if isinstance(stats.get(key), int | float)
        }
        applies = float(stats.get("applies", 0))
        total = float(stats.get("apply_seconds_total", 0.0))
        new: list[float] = []
        if applies > self._seen_applies:
            n = int(applies - self._seen_applies)
            avg = (total - self._seen_seconds) / n
            new = [avg] * min(n, 1000)
        self._seen_applies, self._seen_seconds = applies, total
        return gauges, float(stats.get("resyncs", 0)), new

    def num_routes(self) -> int | None:
        """Desired routes over both IP versions (None: no route drivers or no agent)."""
        try:
            routes = self.agent.stats().get("routes") if self.agent is not None else None
        except Exception:
            return None
        return int(routes["routes"]) if isinstance(routes, dict) else None


def flows_component(felix: FelixComponent, ds: Datastore, fallback: Any) -> Any:
    """The flow-log collector (:mod:`pycalico.flows`), reading Felix's live configuration
    (``flowLogsFileEnabled`` etc.; ``fallback``: the FelixConfig before Felix started) and
    the attribution map of what Felix rendered."""
    from pycalico.flows.collector import FlowCollector, PeerResolver
    from pycalico.flows.pending import ViewsPending

    def settings() -> Any:
        a = felix.agent
        return a.config if a is not None else fallback

    def attribution() -> Any:
        a = felix.agent
        return a.renderer.attribution if a is not None else {}

    def snapshot() -> Any:
        a = felix.agent
        views = a.flow_views if a is not None else None
        return views.box.latest() if views is not None else None

    return FlowCollector(felix.node_name, settings, attribution, PeerResolver(ds),
                         pending=ViewsPending(snapshot))  # fmt: skip
