"""Felix: ONE syncer -> ONE calc graph -> ONE owner loop programming nftables AND routes.

One syncer (or a :class:`~pycalico.datastore.hub.SyncerHub` subscription) watches
:data:`FELIX_KINDS` (policy kinds, FelixConfiguration, and IPPool/Node/IPAMBlock for routes).
One owner thread (:class:`Felix`) drains its queue (coalescing bursts: everything queued is
applied to the graph before one flush), hands the policy messages to the rules renderer and
its ``calico`` table per family, and the route messages to :class:`RouteLoop` which drives
the route drivers (one per IP version: routes, VXLAN/IPIP devices, NAT-outgoing, sysctls, the
MTU file). Periodic resyncs: nft every ``nftablesRefreshInterval``, routes every
``routeRefreshInterval``.

Repair in seconds, never fail open (issue 19): kernel watchers
(:mod:`pycalico.felix.dataplane.watch`: ``nft monitor`` through the nft runner's process
seam, and ``ip monitor route link address neigh`` with the system's route drivers) only
wake the owner loop; an event on our tables (``calico``, ``calico-guard``, ``calico-nat``),
a proto-80 route, our devices, their VTEP neighbours/FDB entries or a workload interface
makes the loop read the table back / run a full route apply about 0.1 s later (at most one
resync per topic per 0.5 s), which writes only what differs; an event on
``calico-guard`` has that family's tiny guard read back and repaired at once. Next to each
``calico`` table Felix programs the ``calico-guard`` table (:mod:`pycalico.felix.rules.guard`)
in the same transaction: it drops new workload traffic the main table did not evaluate, so a
deleted table or flushed base chain fails closed until repaired; after a ``flush ruleset``
(both gone) the guard, repaired at once on its own, is back before the main table, and
meanwhile the tc guard (:mod:`pycalico.felix.dataplane.tcguard`, outside nftables,
installed by the QoS loop once the main table is programmed) drops forwarded workload
traffic that no table marked.

Invariants (DESIGN.md §4, principles 2, 3, 7):
- Only the owner thread touches the graph, the renderer, the tables and the route drivers;
  the syncer thread only enqueues.
- Nothing is programmed before the graph has seen the datastore's full state (its
  ``InSync`` message); until then a previous agent's table and routes stay in place.
- A failed apply is retried with back-off; nft and route failures are retried separately and
  never block each other; each nft apply is ONE transaction covering every table that
  changes (``calico`` and ``calico-guard``, all families: :func:`apply_tables`), so a
  SIGKILL never leaves some tables of an update old and others new.
- Felix never writes to the datastore (tunnel addresses are calico-node's,
  :mod:`pycalico.node.tunnels`).
- :meth:`Felix.wait_in_sync` is true once nft AND (with route drivers) routes were programmed
  from a complete view.
- Every time read (nft refresh and retry deadlines, the route schedule, apply durations) goes
  through the one injected :class:`~pycalico.system.clock.Clock` (default ``RealClock``), shared
  with the :class:`RouteLoop` and the tables. The loop still blocks on its queue in real time
  (at most 1 s); with a ``FakeClock`` a test advances the clock and calls
  :meth:`Felix.barrier` to have the loop act on the new time.

CLI: ``python -m pycalico.felix.cli`` (:mod:`pycalico.felix.cli`).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

from pycalico.datastore import Datastore, EventType, prefix_for
from pycalico.datastore.syncer import QueueCallbacks, Syncer, SyncStatus, SyncUpdate
from pycalico.felix.calc import CalcGraph, InSync, Message, RouteSettingsUpdate, RoutesUpdate
from pycalico.felix.calc.routes import RouteCalculator
from pycalico.felix.calc.routetypes import HostFacts
from pycalico.felix.config import families, render_config
from pycalico.felix.dataplane import NftError, NftRunner, NftTable, apply_tables
from pycalico.felix.dataplane.watch import Debouncer
from pycalico.felix.flowviews import FlowViews
from pycalico.felix.kernelwatch import KernelWatch
from pycalico.felix.qosloop import QosLoop, system_tc
from pycalico.felix.routeloop import RouteDriver, RouteLoop, make_route_drivers
from pycalico.felix.rules import TABLE, RuleRenderer
from pycalico.felix.rules.guard import guard_table
from pycalico.model.felixconfig import resolve
from pycalico.system.clock import Clock, RealClock
from pycalico.system.tc import TrafficControl

log = logging.getLogger(__name__)

#: Storage kinds of the policy model (+ Felix's own configuration).
POLICY_KINDS = (
    "WorkloadEndpoint",
    "HostEndpoint",
    "Profile",
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "KubernetesNetworkPolicy",
    "ClusterNetworkPolicy",
    # Staged kinds never reach the enforced graph's output; flow logs' pending view reads them.
    "StagedNetworkPolicy",
    "StagedGlobalNetworkPolicy",
    "StagedKubernetesNetworkPolicy",
    "Tier",
    "NetworkSet",
    "GlobalNetworkSet",
    "Namespace",
    "ServiceAccount",
    "FelixConfiguration",
)
#: Storage kinds Felix watches: the union of the policy and the routes calc nodes' kinds.
FELIX_KINDS = POLICY_KINDS + tuple(k for k in RouteCalculator.KINDS if k not in POLICY_KINDS)
_FELIX_CONFIG_PREFIX = prefix_for("FelixConfiguration")


class Felix(KernelWatch):
    """See the module docstring. ``overrides`` use FelixConfiguration field names (e.g.
    ``{"nftablesRefreshInterval": 2}``) and win over the datastore and ``env``.

    Routes: ``routes``/``routes6`` inject the route drivers of IPv4/IPv6 (either may be
    None); ``system_routes=True`` builds the system's (:func:`make_route_drivers`, with
    ``mtu_file`` and ``nat_outgoing``) for those not injected. Without any route driver
    Felix programs nftables only (the route calc still follows the datastore).
    ``route_refresh_interval`` overrides ``routeRefreshInterval`` (seconds). ``hub``: a
    :class:`~pycalico.datastore.hub.SyncerHub` to subscribe to instead of an own syncer.
    ``clock``: the time seam of the owner loop (default :class:`RealClock`).
    ``tc``: the traffic-control seam for pod bandwidth QoS (:mod:`pycalico.felix.qosloop`);
    ``system_routes=True`` uses the system's when none is given.
    """

    def __init__(
        self,
        node_name: str,
        datastore: Datastore,
        nft_runner: NftRunner,
        *,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        table: str = TABLE,
        retry_interval: float = 1.0,
        syncer_poll_interval: float = 0.5,
        routes: RouteDriver | None = None,
        routes6: RouteDriver | None = None,
        system_routes: bool = False,
        mtu_file: str | None = None,
        nat_outgoing: bool = True,
        route_refresh_interval: float | None = None,
        hub: Any = None,
        clock: Clock | None = None,
        guard: bool = True,
        watch: bool = True,
        tc: TrafficControl | None = None,
    ) -> None:
        self.node_name = node_name
        self.clock: Clock = clock if clock is not None else RealClock()
        self.datastore = datastore
        self.runner = nft_runner
        self.table_name = table
        self._overrides = dict(overrides or {})
        self._env = dict(env or {})
        self._felix_configs: dict[str, Mapping[str, Any]] = {}
        self.config = resolve(node_name, {}, self._env, self._overrides)
        self.graph = CalcGraph(node_name)
        self.graph.set_felix_config(self.config)
        # The enforced/pending views flow logs read (felix/flowviews.py): only while on.
        self.flow_views: FlowViews | None = None
        self._graph_synced = False
        self.renderer = RuleRenderer(render_config(self.config), families(self.config), table)
        self.tables = {
            f: NftTable(nft_runner, f, table, clock=self.clock) for f in families(self.config)
        }
        # The fail-closed guard table per family (rules/guard.py), applied after the main one.
        self.guards = (
            {f: NftTable(nft_runner, f, f"{table}-guard", clock=self.clock) for f in self.tables}
            if guard
            else {}
        )
        drivers: dict[int, RouteDriver] = {}
        watch_routes = system_routes
        if system_routes and (routes is None or routes6 is None):
            system = make_route_drivers(mtu_file, nat_outgoing)
            routes = routes if routes is not None else system[4]
            routes6 = routes6 if routes6 is not None else system[6]
        for v, drv in ((4, routes), (6, routes6)):
            if drv is not None:
                drivers[v] = drv
        self.routes: RouteLoop | None = (
            RouteLoop(node_name, drivers, refresh_interval=route_refresh_interval, clock=self.clock)
            if drivers
            else None
        )
        tc = tc if tc is not None or not system_routes else system_tc()
        prefix = self.config.interface_prefix if guard else None
        v6 = "ip6" in self.tables  # no ip6 calico table: the guard checks IPv4 only
        self.qos = (
            QosLoop(tc, clock=self.clock, guard_prefix=prefix, guard_ipv6=v6)
            if tc is not None
            else None
        )
        self._callbacks = QueueCallbacks()
        self._wake = self._callbacks.queue
        self._syncer: Any
        if hub is not None:
            self._syncer = hub.syncer_for(FELIX_KINDS, self._callbacks, f"felix-{node_name}")
        else:
            self._syncer = Syncer.for_kinds(
                datastore,
                FELIX_KINDS,
                self._callbacks,
                poll_interval=syncer_poll_interval,
                name=f"felix-syncer-{node_name}",
            )
        self._graph_in_sync = False
        self._nft_in_sync = threading.Event()
        self._retry_interval = retry_interval
        self._stop = threading.Event()
        self._in_sync = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"felix-{node_name}", daemon=True)
        self._next_refresh = 0.0
        self._retry_at: float | None = None
        self._lock = threading.Lock()
        # Owner-loop iterations begun / completed, for barrier() (guarded by _iterations).
        self._iterations = threading.Condition()
        self._begun = 0
        self._done = 0
        self._exited = False
        self.counters: dict[str, float] = {
            "updates": 0,
            "batches": 0,
            "applies": 0,
            "apply_seconds_total": 0.0,
            "last_apply_seconds": 0.0,
            "resyncs": 0,
            "apply_failures": 0,
            "iterations": 0,
            "settled_updates": 0,
            "active_local_endpoints": 0,
            "active_local_policies": 0,
            "active_profiles": 0,
            "ipsets": 0,
        }
        self.counters["watch_resyncs"] = 0
        self.error: BaseException | None = None
        self._debounce = Debouncer()
        self.watchers = self._make_watchers(watch, watch_routes and self.routes is not None)
        self._toggle_flow_views(self.config.flow_logs_file_enabled)  # on from env/overrides

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> Felix:
        self._syncer.start()
        self._thread.start()
        for w in self.watchers:
            w.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop syncing and the owner loop; the programmed tables and routes stay in place
        (the userspace IPIP tunnel's I/O stops with its driver)."""
        self._stop.set()
        for w in self.watchers:
            w.stop(timeout)
        self._syncer.stop(timeout)
        self._callbacks.queue.put([])  # wake the owner loop
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if not self._thread.is_alive():
            if self.routes is not None:
                self.routes.close()
            if self.qos is not None:
                self.qos.close()

    def alive(self) -> bool:
        """The owner thread is running."""
        return self._thread.is_alive()

    def wait_in_sync(self, timeout: float | None = None) -> bool:
        """True once the dataplane (nft and, with route drivers, routes) was programmed
        from a complete datastore view."""
        return self._in_sync.wait(timeout)

    def resync(self) -> None:
        """Request a full route apply and an nft read-back at the next loop iteration."""
        if self.routes is not None:
            self.routes.request_full()
        self._next_refresh = 0.0
        self._callbacks.queue.put([])

    def barrier(self, timeout: float = 5.0) -> bool:
        """Wake the owner loop and wait (at most ``timeout`` real seconds) until it has
        completed a whole iteration that began after this call, so every clock reading of that
        iteration is later than the call (a test advances a ``FakeClock``, then calls this).
        False on timeout or when the loop has stopped."""
        with self._iterations:
            target = self._begun + 1
        self._callbacks.queue.put([])
        with self._iterations:
            self._iterations.wait_for(lambda: self._done >= target or self._exited, timeout)
            return self._done >= target

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (for metrics) plus per-table driver stats.

        Keys: ``updates``, ``batches``, ``applies``, ``apply_seconds_total``,
        ``last_apply_seconds``, ``resyncs``, ``apply_failures``, ``iterations``,
        ``settled_updates`` (updates whose effect is programmed), ``active_local_endpoints``,
        ``active_local_policies``, ``active_profiles``, ``ipsets``, ``in_sync``,
        ``table_<family>`` (the NftTable's :class:`TableStats` as a dict) and, with route
        drivers, ``routes`` (:meth:`RouteLoop.stats`: ``routes``, ``vteps``, ``applies``,
        ``full_applies``, ``kernel_writes``, ``last_errors``, ``ipip``, ``in_sync``).
        """
        with self._lock:
            out: dict[str, Any] = dict(self.counters)
        out["in_sync"] = self._in_sync.is_set()
        for fam, t in self.tables.items():
            out[f"table_{fam}"] = vars(t.stats).copy()
        if self.routes is not None:
            out["routes"] = self.routes.stats()
        if self.qos is not None:
            out["qos"] = self.qos.stats()
        out["watchers"] = {
            w.name: {"alive": w.alive(), "events": w.events, "starts": w.starts}
            for w in self.watchers
        }
        return out

    # --- owner loop ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        finally:
            with self._iterations:
                self._exited = True
                self._iterations.notify_all()

    def _loop(self) -> None:
        q = self._callbacks.queue
        while not self._stop.is_set():
            timeout = self._wait_time()
            try:
                first = q.get(timeout=timeout)
                batch = [first]
                while True:
                    try:
                        batch.append(q.get_nowait())
                    except queue.Empty:
                        break
            except queue.Empty:
                batch = []
            with self._iterations:
                self._begun += 1
            if self._stop.is_set():
                return
            try:
                self._process(batch)
                self._take_kernel_events()
                self._maybe_apply()
            except Exception as e:  # keep the loop alive; retry later (fail safe: no flush)
                log.exception("felix %s: error in owner loop", self.node_name)
                self.error = e
                self._retry_at = self.clock.monotonic() + self._retry_interval
            try:
                self._maybe_apply_routes()
            except Exception as e:  # never let the owner thread die; the next step is full
                log.exception("felix %s: error applying routes", self.node_name)
                self.error = e
                if self.routes is not None:
                    self.routes.request_full()
            self._step_qos()
            self._check_in_sync()
            with self._lock:
                self.counters["iterations"] += 1
                # Updates whose effect is fully programmed (or that changed nothing).
                self.counters["settled_updates"] = self.counters["updates"]
            with self._iterations:
                self._done += 1
                self._iterations.notify_all()

    def _wait_time(self) -> float:
        now = self.clock.monotonic()
        deadlines = [self._next_refresh] if self._nft_in_sync.is_set() else []
        if self._retry_at is not None:
            deadlines.append(self._retry_at)
        if self.routes is not None and self._graph_in_sync:
            deadlines.append(self.routes.deadline())
        if self.qos is not None and (qos_due := self.qos.deadline()) is not None:
            deadlines.append(qos_due)
        if (watch_due := self._debounce.deadline()) is not None:
            deadlines.append(watch_due)
        if not deadlines:
            return 1.0
        return max(0.0, min(min(deadlines) - now, 1.0))

    def _process(self, batch: list[SyncStatus | list[SyncUpdate]]) -> None:
        n = 0
        config_changed = False
        for item in batch:
            if isinstance(item, SyncStatus):
                if item is SyncStatus.IN_SYNC:
                    self.graph.on_in_sync()
                    self._graph_synced = True
                    if self.flow_views is not None:
                        self.flow_views.on_in_sync()
                continue
            for u in item:
                n += 1
                obj = None if u.type is EventType.DELETED else u.obj
                if u.key.startswith(_FELIX_CONFIG_PREFIX):
                    name = str(u.obj.get("metadata", {}).get("name", ""))
                    if obj is None:
                        self._felix_configs.pop(name, None)
                    else:
                        self._felix_configs[name] = dict(obj.get("spec") or {})
                    config_changed = True
                    continue
                self.graph.on_update(u.key, obj)
                if self.flow_views is not None:
                    self.flow_views.on_update(u.key, obj)
        if config_changed:
            self._reconfigure()
        if n or batch:
            self._dispatch(self.graph.flush())
            if self.flow_views is not None:
                self.flow_views.publish()
        with self._lock:
            self.counters["updates"] += n
            self.counters["batches"] += 1 if n else 0
            self.counters.update(self.renderer.counts())

    def _dispatch(self, msgs: list[Message]) -> None:
        """Policy messages to the renderer (and its tables), route messages to the routes."""
        if not msgs:
            return
        route_msgs = [m for m in msgs if isinstance(m, RoutesUpdate | RouteSettingsUpdate)]
        policy_msgs = [m for m in msgs if not isinstance(m, RoutesUpdate | RouteSettingsUpdate)]
        if any(isinstance(m, InSync) for m in msgs):
            self._graph_in_sync = True
        if self.qos is not None:
            self.qos.on_messages(policy_msgs)
        if route_msgs and self.routes is not None:
            self.routes.on_messages(route_msgs)
        if policy_msgs:
            self.renderer.apply(policy_msgs)
            if self.renderer.in_sync:
                self._set_desired()

    def _feed_facts(self, version: int, facts: HostFacts) -> list[Message]:
        self.graph.set_host_facts(version, facts)
        msgs = self.graph.flush()
        self._dispatch([m for m in msgs if not isinstance(m, RoutesUpdate | RouteSettingsUpdate)])
        return msgs

    def _maybe_apply_routes(self) -> None:
        if self.routes is None or not self._graph_in_sync:
            return
        self.routes.step(self._feed_facts)

    def _step_qos(self) -> None:
        """Program pod bandwidth QoS; a failure is retried by the QoS loop, never fatal."""
        if self.qos is None:
            return
        try:
            self.qos.step()
        except Exception as e:
            log.exception("felix %s: error applying QoS", self.node_name)
            self.error = e
            self.qos.request_full()

    def _check_in_sync(self) -> None:
        if self._in_sync.is_set() or not self._nft_in_sync.is_set():
            return
        if self.routes is None or self.routes.in_sync.is_set():
            self._in_sync.set()

    def _reconfigure(self) -> None:
        config = resolve(self.node_name, self._felix_configs, self._env, self._overrides)
        if config.warnings != self.config.warnings:
            for w in config.warnings:
                log.warning("felix %s: %s", self.node_name, w)
        if families(config) != families(self.config):
            log.warning("felix %s: ipv6Support changes need a restart; ignored", self.node_name)
            config = dataclasses.replace(config, ipv6_support=self.config.ipv6_support)
        old, self.config = self.config, config
        self.graph.set_felix_config(config)
        self._toggle_flow_views(config.flow_logs_file_enabled)
        if render_config(config) == render_config(old):
            return
        self.renderer.set_config(render_config(config))
        if self.renderer.in_sync:
            self._set_desired()

    def _toggle_flow_views(self, enabled: bool) -> None:
        """Build the flow-log policy views from the syncer's current view when flow logs
        turn on (updates still queued are applied again: harmless); drop them when off."""
        if enabled and self.flow_views is None:
            snapshot = {k: dict(v) for k, v in self._syncer.snapshot().items()}
            self.flow_views = FlowViews(
                self.node_name, snapshot, self._graph_synced, _FELIX_CONFIG_PREFIX
            )
        elif not enabled:
            self.flow_views = None

    def _set_desired(self) -> None:
        specs = self.renderer.tables()
        for fam, t in self.tables.items():
            t.set_desired(specs[fam])
        for fam, g in self.guards.items():
            g.set_desired(guard_table(fam, self.renderer.cfg, g.name))

    def _maybe_apply(self) -> None:
        if not self.renderer.in_sync:
            return
        now = self.clock.monotonic()
        # One logical update = ONE nft transaction over every table (the guards listed first).
        tables = [*self.guards.values(), *self.tables.values()]
        if self._nft_in_sync.is_set() and now >= self._next_refresh:
            for t in tables:
                t.request_resync()
            with self._lock:
                self.counters["resyncs"] += 1
        if not any(t.dirty for t in tables):
            return
        if self._retry_at is not None and now < self._retry_at:
            return
        t0 = self.clock.monotonic()
        try:
            apply_tables(self.runner, tables)
        except NftError as e:
            log.error("felix %s: programming nftables failed: %s", self.node_name, e)
            self.error = e
            self._retry_at = self.clock.monotonic() + self._retry_interval
            with self._lock:
                self.counters["apply_failures"] += 1
            return
        self._retry_at = None
        dt = self.clock.monotonic() - t0
        if not self._nft_in_sync.is_set() or now >= self._next_refresh:
            self._next_refresh = self.clock.monotonic() + self.config.nftables_refresh_interval
        with self._lock:
            self.counters["applies"] += 1
            self.counters["apply_seconds_total"] += dt
            self.counters["last_apply_seconds"] = dt
        if not self._nft_in_sync.is_set():
            log.info("felix %s: in sync; nftables programmed in %.3fs", self.node_name, dt)
            self._nft_in_sync.set()
            if self.qos is not None:
                self.qos.set_guard_ready()
            self._check_in_sync()
