"""RouteAgent: Felix's route/tunnel/NAT-outgoing component, next to the policy Felix.

Its own :class:`~pycalico.datastore.syncer.Syncer` watches ``IPPool``, ``Node``, ``IPAMBlock``,
``BlockAffinity``, ``FelixConfiguration`` and ``WorkloadEndpoint``; the syncer thread only
records the new resources and sets a coalescing "dirty" flag (updates that cannot change
this node's routes - other nodes' workloads, affinities, whose blocks carry the authoritative
``affinity`` - set nothing). One owner thread computes the desired state per IP version
(:func:`pycalico.felix.routes.calc.compute`, pure) and hands each to its
:class:`~pycalico.felix.routes.kernel.KernelRoutes` (effects; IPv4 also owns tunl0 and the
MTU file, which gets the smallest MTU over both families).

Invariants:
- Nothing is written to the kernel before the syncer is in sync (so nothing we own is swept
  on a partial view of the cluster).
- "dirty" and "full resync requested" are flags, not queues: any number of updates during an
  apply cause exactly one more apply.
- A full apply (re-read the kernel, repair drift) runs at start, every ``resync_interval``
  (default: FelixConfiguration ``routeRefreshInterval``, 90 s), on :meth:`resync` and after
  any failed apply (with back-off up to 5 s).
- A resource that fails to parse is logged and ignored; the rest of the cluster is routed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pycalico.datastore.base import Datastore, EventType, NotFound
from pycalico.datastore.syncer import Syncer, SyncStatus, SyncUpdate
from pycalico.felix.routes.calc import HostFacts, compute
from pycalico.felix.routes.kernel import KernelRoutes
from pycalico.felix.routes.model import (
    BlockInfo,
    DesiredState,
    LocalEndpoint,
    NodeInfo,
    PoolInfo,
    RouteConfig,
    RouteInputError,
)
from pycalico.felix.routes.mtu import mtu_file_path
from pycalico.felix.routes.tunnel_addr import ensure_tunnel_addresses

log = logging.getLogger(__name__)

KINDS = (
    "IPPool",
    "Node",
    "IPAMBlock",
    "BlockAffinity",
    "FelixConfiguration",
    "WorkloadEndpoint",
)
MAX_BACKOFF_S = 5.0


class RouteAgent:
    """See module doc. ``kernel``/``kernel6`` default to :class:`KernelRoutes` (IPv4/IPv6) on
    the real system."""

    def __init__(
        self,
        node_name: str,
        datastore: Datastore,
        *,
        kernel: KernelRoutes | None = None,
        kernel6: KernelRoutes | None = None,
        mtu_file: str | None = None,
        nat_outgoing: bool = True,
        manage_tunnel_addrs: bool = True,
        resync_interval: float | None = None,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_name = node_name
        self.datastore = datastore
        if kernel is None:
            from pycalico.system.process import SubprocessRunner
            from pycalico.system.sysctl import ProcSysctl

            kernel = KernelRoutes(
                SubprocessRunner(), ProcSysctl(), mtu_file=mtu_file_path(mtu_file),
                nat=nat_outgoing,
            )  # fmt: skip
            kernel6 = KernelRoutes(SubprocessRunner(), ProcSysctl(), nat=nat_outgoing, version=6)
        self.kernel = kernel  # IPv4 (and tunl0, and the MTU file)
        self.kernel6 = kernel6  # IPv6; None: IPv6 not managed (only with an injected kernel)
        self.manage_tunnel_addrs = manage_tunnel_addrs
        self.resync_interval = resync_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._pools: dict[str, PoolInfo] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._blocks: dict[str, BlockInfo] = {}
        self._felix_cfg: dict[str, dict[str, Any]] = {}
        self._endpoints: dict[str, LocalEndpoint] = {}  # this node's, by datastore key
        self._pool_fp: object = None  # pools' encap modes when tunnel addrs were last ensured
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._in_sync = threading.Event()
        self._full = True
        self._ds_in_sync = False
        self._facts: dict[int, HostFacts] = {}
        self._facts_key: dict[int, object] = {}
        self.desired: DesiredState | None = None
        self.desired6: DesiredState | None = None
        self.last_errors: list[str] = []
        self.applies = 0
        self.full_applies = 0
        self.syncer = Syncer.for_kinds(
            datastore, KINDS, self, poll_interval=poll_interval, name=f"routes-syncer-{node_name}"
        )
        self._thread = threading.Thread(target=self._loop, name=f"routes-{node_name}", daemon=True)

    # -- public ------------------------------------------------------------------------
    def start(self) -> RouteAgent:
        self._thread.start()
        self.syncer.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self.syncer.stop(timeout)
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.kernel.close()
        if self.kernel6 is not None:
            self.kernel6.close()

    def wait_in_sync(self, timeout: float | None = None) -> bool:
        """True once the datastore is in sync and a first apply succeeded."""
        return self._in_sync.wait(timeout)

    def alive(self) -> bool:
        """The owner and syncer threads are running."""
        return self._thread.is_alive() and self.syncer._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """Counters for health/metrics: routes/VTEPs desired, applies, tunnel packets."""
        d, d6 = self.desired, self.desired6
        out: dict[str, Any] = {
            "in_sync": self._in_sync.is_set(),
            "routes": (len(d.routes) if d else 0) + (len(d6.routes) if d6 else 0),
            "vteps": (len(d.vteps) if d else 0) + (len(d6.vteps) if d6 else 0),
            "applies": self.applies,
            "full_applies": self.full_applies,
            "kernel_writes": self.kernel.writes + (self.kernel6.writes if self.kernel6 else 0),
            "last_errors": list(self.last_errors),
        }
        tun = self.kernel.ipip
        if tun is not None:
            out["ipip"] = dict(vars(tun.stats))
        return out

    def resync(self) -> None:
        """Request a full apply (re-read the kernel and repair drift)."""
        self._full = True
        self._wake.set()

    # -- syncer callbacks (syncer thread) ------------------------------------------------
    def on_status(self, status: SyncStatus) -> None:
        if status is SyncStatus.IN_SYNC:
            self._ds_in_sync = True
            self._wake.set()

    def on_updates(self, updates: list[SyncUpdate]) -> None:
        relevant = False
        with self._lock:
            for u in updates:
                relevant = self._record(u) or relevant
        if relevant:
            self._wake.set()

    def _record(self, u: SyncUpdate) -> bool:
        """Store one update; False when it cannot change this node's routes."""
        kind = u.obj.get("kind")
        if kind == "WorkloadEndpoint":
            return self._record_endpoint(u)
        name = str((u.obj.get("metadata") or {}).get("name", ""))
        gone = u.type is EventType.DELETED
        try:
            if kind == "IPPool":
                pool = None if gone else PoolInfo.from_resource(u.obj)
                _put(self._pools, name, pool)
            elif kind == "Node":
                _put(self._nodes, name, None if gone else NodeInfo.from_resource(u.obj))
            elif kind == "IPAMBlock":
                _put(self._blocks, name, None if gone else BlockInfo.from_resource(u.obj))
            elif kind == "FelixConfiguration":
                _put(self._felix_cfg, name, None if gone else u.obj)
        except RouteInputError as e:
            log.warning("routes: ignoring %s", e)
            by_kind: dict[Any, dict[str, Any]] = {
                "IPPool": self._pools,
                "Node": self._nodes,
                "IPAMBlock": self._blocks,
            }
            by_kind.get(kind, {}).pop(name, None)
        return kind != "BlockAffinity"

    def _record_endpoint(self, u: SyncUpdate) -> bool:
        if u.type is EventType.DELETED:
            return self._endpoints.pop(u.key, None) is not None
        try:
            node, ep = LocalEndpoint.from_resource(u.obj)
        except RouteInputError as e:
            log.warning("routes: ignoring %s", e)
            return self._endpoints.pop(u.key, None) is not None
        if node != self.node_name:
            return self._endpoints.pop(u.key, None) is not None
        old = self._endpoints.get(u.key)
        self._endpoints[u.key] = ep
        return old != ep

    # -- owner loop --------------------------------------------------------------------
    def _loop(self) -> None:
        backoff = 0.1
        next_full = 0.0
        while not self._stop.is_set():
            now = self._clock()
            self._wake.wait(max(0.0, next_full - now) if self._ds_in_sync else None)
            self._wake.clear()
            if self._stop.is_set():
                break
            if not self._ds_in_sync:
                continue
            now = self._clock()
            full = self._full or now >= next_full
            self._full = False
            try:
                errors = self._apply_once(full)
            except Exception as e:  # never let the owner thread die
                log.exception("routes: apply failed")
                errors = [f"unexpected: {e}"]
            self.last_errors = errors
            if errors:
                log.warning("routes: apply incomplete (retry in %.1fs): %s", backoff, errors)
                self._full = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                self._wake.set()
                continue
            backoff = 0.1
            if full:
                next_full = self._clock() + self._interval()
            self._in_sync.set()

    def _interval(self) -> float:
        if self.resync_interval is not None:
            return self.resync_interval
        return self._config().route_refresh_s

    def _config(self) -> RouteConfig:
        with self._lock:
            cfgs = dict(self._felix_cfg)
        try:
            return RouteConfig.from_resources(self.node_name, cfgs)
        except RouteInputError as e:
            log.warning("routes: FelixConfiguration ignored: %s", e)
            return RouteConfig()

    def _apply_once(self, full: bool) -> list[str]:
        cfg = self._config()
        problems: list[str] = []
        if self.manage_tunnel_addrs:
            problems += self._ensure_tunnel_addrs()
        with self._lock:
            pools = list(self._pools.values())
            nodes = dict(self._nodes)
            blocks = list(self._blocks.values())
            endpoints = list(self._endpoints.values())
        me = nodes.get(self.node_name)
        kernels = [(4, self.kernel)] + ([(6, self.kernel6)] if self.kernel6 else [])
        desired: dict[int, DesiredState] = {}
        for v, kern in kernels:
            addr = me.address(v) if me else None
            node_ip = addr.ip if addr else None
            key = (node_ip, cfg.mtu_iface_pattern)
            if full or v not in self._facts or key != self._facts_key.get(v):
                self._facts[v] = kern.facts(node_ip, cfg.mtu_iface_pattern)
                self._facts_key[v] = key
            desired[v] = compute(
                self.node_name, pools, nodes, blocks, cfg, self._facts[v], endpoints, version=v
            )
        if 6 in desired:  # one MTU file: the smallest over both families' encapsulations
            d6 = desired[6]
            mtu = min(desired[4].pod_mtu, d6.pod_mtu)
            desired[4] = dataclasses.replace(desired[4], pod_mtu=mtu)
        problems_now = tuple(p for d in desired.values() for p in d.problems)
        old = tuple(p for d in (self.desired, self.desired6) if d for p in d.problems)
        if problems_now and problems_now != old:
            log.warning("routes: %s", "; ".join(problems_now))
        self.desired, self.desired6 = desired[4], desired.get(6)
        errors = []
        for v, kern in kernels:
            errors += kern.apply(desired[v], full=full)
        self.applies += 1
        self.full_applies += int(full)
        return errors + [p for p in problems if "too many conflicts" in p]

    def _ensure_tunnel_addrs(self) -> list[str]:
        with self._lock:
            pools_fp = sorted((str(p.cidr), p.encap, p.disabled) for p in self._pools.values())
            me = self._nodes.get(self.node_name)
        if me is None:
            return []
        fp = (tuple(pools_fp), me.vxlan_tunnel_addr, me.vxlan_mac, me.ipip_tunnel_addr,
              me.ip6, me.vxlan_tunnel_addr6, me.vxlan_mac6)  # fmt: skip
        if fp == self._pool_fp:
            return []
        try:
            changed, problems = ensure_tunnel_addresses(self.datastore, self.node_name)
            if changed:
                # Use our new addresses in this very apply rather than after the watch
                # brings the Node back (so "in sync" includes them).
                info = NodeInfo.from_resource(self.datastore.get("Node", self.node_name))
                with self._lock:
                    self._nodes[self.node_name] = info
                fp = (tuple(pools_fp), info.vxlan_tunnel_addr, info.vxlan_mac,
                      info.ipip_tunnel_addr, info.ip6, info.vxlan_tunnel_addr6,
                      info.vxlan_mac6)  # fmt: skip
        except (NotFound, RouteInputError):
            return []
        if problems:
            log.warning("routes: %s", "; ".join(problems))
        self._pool_fp = fp
        return problems


def _put(d: dict[str, Any], name: str, value: Any) -> None:
    if value is None:
        d.pop(name, None)
    else:
        d[name] = value
