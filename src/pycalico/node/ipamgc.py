"""IPAM leak repair run by calico-node on one elected node (Calico's kube-controllers IPAM
garbage collector, here hosted by the node agents).

Owns: :class:`IpamGcComponent`, a supervised calico-node component that competes for the
``Lease`` ``ipam-gc`` (:mod:`pycalico.node.leader`) and, while it holds it, runs
:meth:`pycalico.ipam.gc.LeakCollector.run_once` every ``CALICO_IPAM_GC_INTERVAL`` seconds,
logging everything it released; and the settings it reads.

Settings: the grace period is ``KubeControllersConfiguration default``
``spec.controllers.node.leakGracePeriod`` when set, else ``CALICO_IPAM_GC_GRACE_PERIOD``
(Go duration or seconds), else 15m; 0 disables leak repair. It is re-read before every run.
The interval is ``CALICO_IPAM_GC_INTERVAL`` when set, else half the grace period.
``CALICO_IPAM_GC_LEASE_DURATION`` (default 60s) is the lease duration; the lease is renewed
every third of it. ``CALICO_IPAM_GC_ENABLED=false`` leaves the component out.

Invariants: only the lease holder ever calls ``run_once``; each newly won leadership starts
a fresh :class:`LeakCollector`, so a leak is released only after the *current* leader has
itself seen it leaked for the whole grace period; datastore and IPAM errors are logged and
retried on the next pass (the component stays alive); ``in_sync`` is true once started, so
the component never holds back node readiness; ``stop`` releases the lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pycalico.datastore.base import Datastore, NotFound
from pycalico.errors import CalicoError
from pycalico.ipam.gc import DEFAULT_GRACE_PERIOD, GCResult, LeakCollector
from pycalico.model.booleans import BooleanError, env_flag
from pycalico.node.leader import DEFAULT_LEASE_DURATION, LeaderLease
from pycalico.node.supervisor import Component

log = logging.getLogger(__name__)

LEASE_NAME = "ipam-gc"
KCC_KIND = "KubeControllersConfiguration"
KCC_NAME = "default"


class IpamGcConfigError(CalicoError, ValueError):
    """A malformed IPAM GC setting (names the setting)."""


def parse_seconds(value: Any, what: str) -> float:
    """A Go duration (``15m``, ``1h30m``, ``90s``) or a plain number of seconds, >= 0."""
    from pycalico.api.kinds_bgp import duration_seconds

    if isinstance(value, int | float) and not isinstance(value, bool):
        secs = float(value)
    else:
        text = str(value).strip()
        try:
            secs = float(text)
        except ValueError:
            try:
                secs = duration_seconds(text)
            except ValueError as e:
                raise IpamGcConfigError(f"{what}: {e}") from None
    if secs < 0 or secs != secs:
        raise IpamGcConfigError(f"{what}: must not be negative, got {value!r}")
    return secs


def enabled(env: Mapping[str, str]) -> bool:
    try:
        return env_flag(env, "CALICO_IPAM_GC_ENABLED", True)
    except BooleanError as e:
        raise IpamGcConfigError(str(e)) from None


def grace_period(ds: Datastore, env: Mapping[str, str]) -> float:
    """The leak grace period in seconds (see module doc); 0 means disabled."""
    try:
        kcc = ds.get(KCC_KIND, KCC_NAME)
    except NotFound:
        kcc = {}
    node_cfg = ((kcc.get("spec") or {}).get("controllers") or {}).get("node") or {}
    value = node_cfg.get("leakGracePeriod") if isinstance(node_cfg, dict) else None
    if value not in (None, ""):
        return parse_seconds(value, f"{KCC_KIND} {KCC_NAME}: spec.controllers.node.leakGracePeriod")
    env_value = env.get("CALICO_IPAM_GC_GRACE_PERIOD")
    if env_value:
        return parse_seconds(env_value, "CALICO_IPAM_GC_GRACE_PERIOD")
    return DEFAULT_GRACE_PERIOD


def describe(res: GCResult) -> list[str]:
    """Log lines for what a run changed (empty when it changed nothing)."""
    out = []
    if res.released:
        out.append(f"released {len(res.released)} leaked address(es): {', '.join(res.released)}")
    if res.affinities_released:
        out.append(f"released block affinities of deleted nodes: {res.affinities_released}")
    if res.empty_blocks_released:
        out.append(f"released empty blocks: {res.empty_blocks_released}")
    if res.orphan_affinities_deleted:
        out.append(f"deleted orphan affinities: {res.orphan_affinities_deleted}")
    if res.cold_blocks_collected:
        out.append(f"freed cooled-down addresses in blocks: {res.cold_blocks_collected}")
    return out


class IpamGcComponent:
    """Supervised component: lease election + periodic leak repair (see module doc).

    ``step()`` is one synchronous pass (used by the thread and by tests with a fake clock);
    ``clock`` is wall-clock time (lease times are epoch seconds, and the run schedule), while
    leaks' ages are measured on ``monotonic`` (a wall-clock jump never ages a leak).
    """

    name = "ipam-gc"

    def __init__(
        self,
        ds: Datastore,
        node_name: str,
        env: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        collector_factory: Callable[[Datastore, float], LeakCollector] | None = None,
    ) -> None:
        self.ds = ds
        self.node_name = node_name
        self.env = dict(env)
        self.clock = clock
        self.monotonic = monotonic
        self._factory = collector_factory
        interval = self.env.get("CALICO_IPAM_GC_INTERVAL")
        self.fixed_interval = (
            parse_seconds(interval, "CALICO_IPAM_GC_INTERVAL") if interval else None
        )
        if self.fixed_interval == 0:
            raise IpamGcConfigError("CALICO_IPAM_GC_INTERVAL: must be positive")
        dur = self.env.get("CALICO_IPAM_GC_LEASE_DURATION")
        duration = (
            parse_seconds(dur, "CALICO_IPAM_GC_LEASE_DURATION") if dur else DEFAULT_LEASE_DURATION
        )
        if duration <= 0:
            raise IpamGcConfigError("CALICO_IPAM_GC_LEASE_DURATION: must be positive")
        self.lease = LeaderLease(ds, LEASE_NAME, node_name, duration, clock=clock)
        self.collector: LeakCollector | None = None
        self.grace: float | None = None
        self.next_run = 0.0
        self.next_renew = 0.0
        self.runs = 0
        self.released_total = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the pass ----------------------------------------------------------------------

    def interval(self) -> float:
        if self.fixed_interval is not None:
            return self.fixed_interval
        return max((self.grace or DEFAULT_GRACE_PERIOD) / 2, 1.0)

    def _new_collector(self, grace: float) -> LeakCollector:
        if self._factory is not None:
            return self._factory(self.ds, grace)
        return LeakCollector(self.ds, grace_period=grace, clock=self.monotonic)

    def step(self) -> float:
        """Renew/acquire the lease when due, then run the collector when due and leader.

        Returns the time (on ``clock``) of the next thing to do.
        """
        now = self.clock()
        if now >= self.next_renew:
            try:
                leader = self.lease.try_acquire()
            except CalicoError as e:
                self._error(f"lease: {e}")
                leader = False
            self.next_renew = now + self.lease.duration / 3
            if not leader:
                self.collector = None
        if self.lease.is_leader():
            self._maybe_run(now)
        else:
            self.collector = None
        return min(self.next_renew, self.next_run) if self.collector else self.next_renew

    def _maybe_run(self, now: float) -> None:
        if self.collector is not None and now < self.next_run:
            return
        try:
            grace = grace_period(self.ds, self.env)
        except CalicoError as e:
            self._error(f"grace period: {e}")
            self.next_run = now + self.interval()
            return
        if grace == 0:
            if self.grace != 0:
                log.info("IPAM leak repair disabled (leakGracePeriod 0)")
            self.grace, self.collector = 0.0, None
            self.next_run = now + self.interval()
            return
        if self.collector is None:
            log.info("IPAM leak repair on %s: grace period %.0fs", self.node_name, grace)
            self.collector = self._new_collector(grace)
        self.collector.grace = grace
        self.grace = grace
        self.next_run = now + self.interval()
        if not self.lease.is_leader():  # the lease ran out while reading the configuration
            return
        try:
            res = self.collector.run_once()
        except CalicoError as e:
            self._error(f"leak repair: {e}")
            return
        self.runs += 1
        self.released_total += len(res.released)
        for line in describe(res):
            log.info("IPAM GC: %s", line)
        if res.pending:
            log.debug("IPAM GC: %d leak(s) within the grace period", len(res.pending))

    def _error(self, msg: str) -> None:
        self.last_error = msg
        log.warning("IPAM GC: %s", msg)

    # --- Component protocol ------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            due = self.step()
            self._stop.wait(max(0.05, min(due - self.clock(), self.lease.duration / 3)))

    def start(self) -> None:
        self._stop.clear()
        self.collector = None
        self.next_run = self.next_renew = 0.0
        self._thread = threading.Thread(target=self._loop, name="ipam-gc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(10.0)
        self.collector = None
        self.lease.release()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def in_sync(self) -> bool:
        return self._thread is not None


def components_from_env(ds: Datastore, node_name: str, env: Mapping[str, str]) -> list[Component]:
    """``[IpamGcComponent]`` unless ``CALICO_IPAM_GC_ENABLED`` is false or its settings are
    malformed (logged); for :func:`pycalico.node.agent.build_agent`."""
    if not enabled(env):
        return []
    try:
        return [IpamGcComponent(ds, node_name, env)]
    except CalicoError as e:
        log.error("IPAM leak repair disabled: %s", e)
        return []
