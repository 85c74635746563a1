"""The route half of Felix's owner loop: route messages in, route drivers applied.

Owns, for the one owner thread of :class:`pycalico.felix.agent.Felix`: the last
:class:`~pycalico.felix.calc.messages.RouteSettingsUpdate` and desired state per IP version,
when host facts must be re-read from the drivers (first time, on every full apply, when this
node's address or ``mtuIfacePattern`` changed), and the apply schedule of the route drivers
(one per IP version; IPv4 also owns tunl0 and the MTU file).

Invariants (those of the former RouteAgent):
- Nothing is applied before the calc graph is in sync (the caller only calls
  :meth:`RouteLoop.step` after the graph's ``InSync``), so nothing we own is swept on a
  partial view of the cluster.
- "dirty" and "full apply requested" are flags: any number of updates between two steps
  cause exactly one apply.
- A full apply (re-read the kernel, repair drift) runs first, every ``routeRefreshInterval``
  (90 s by default, or the ``refresh_interval`` override), on :meth:`request_full` and after
  any failed apply, with back-off doubling from 0.1 s up to :data:`MAX_BACKOFF_S`. A failure
  only delays the next route apply; it never blocks the caller (nft keeps being programmed).
- Every time read goes through the injected :class:`~pycalico.system.clock.Clock` (default
  :class:`~pycalico.system.clock.RealClock`); with a ``FakeClock`` the schedule above is
  exact virtual-time arithmetic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pycalico.errors import CalicoError
from pycalico.felix.calc.messages import Message, RouteSettingsUpdate, RoutesUpdate
from pycalico.felix.calc.routes import DEFAULT_SETTINGS
from pycalico.felix.calc.routetypes import Addr, DesiredState, HostFacts
from pycalico.system.clock import Clock, RealClock

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
MIN_BACKOFF_S = 0.1
#: What :meth:`RouteLoop.request_part` can ask to be re-read: the routes, or the VXLAN
#: device with its VTEP neighbour and FDB entries.
PARTS = ("routes", "vxlan")


class RouteDriver(Protocol):
    """The route dataplane contract (:class:`pycalico.felix.dataplane.routing.RouteDataplane`;
    fakes in tests)."""

    def facts(self, node_ip: Addr | None, mtu_pattern: str) -> HostFacts: ...

    def apply(self, want: DesiredState, *, full: bool) -> list[str]: ...

    def request_resync(self, part: str) -> None:
        """Re-read one part of the kernel's state (:data:`PARTS`) at the next apply."""
        ...

    def close(self) -> None: ...


class RouteLoop:
    """See the module docstring. Only the owner thread calls it, except
    :meth:`request_full` (a flag) and :meth:`stats` (a snapshot)."""

    def __init__(
        self,
        node_name: str,
        drivers: Mapping[int, RouteDriver],
        *,
        refresh_interval: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.node_name = node_name
        self.drivers = dict(sorted(drivers.items()))
        self.refresh_interval = refresh_interval
        self.clock: Clock = clock if clock is not None else RealClock()
        self.settings: RouteSettingsUpdate = DEFAULT_SETTINGS
        self.desired: dict[int, DesiredState] = {}
        self._facts_key: dict[int, tuple[Addr | None, str]] = {}
        self._full = True
        self._dirty = False
        self._parts: set[str] = set()  # re-read these parts only (request_part)
        self.next_full = 0.0
        self.retry_at: float | None = None
        self._backoff = MIN_BACKOFF_S
        self.in_sync = threading.Event()
        self.applies = 0
        self.full_applies = 0
        self.last_errors: list[str] = []
        self._problems: tuple[str, ...] = ()

    # --- input ----------------------------------------------------------------------------
    def on_messages(self, msgs: Sequence[Message]) -> None:
        """Take the route messages of one graph flush (others are ignored)."""
        for m in msgs:
            if isinstance(m, RouteSettingsUpdate):
                self.settings = m
            elif isinstance(m, RoutesUpdate) and m.version in self.drivers:
                self.desired[m.version] = m.desired
                self._dirty = True
        problems = tuple(p for d in self.desired.values() for p in d.problems)
        if problems and problems != self._problems:
            log.warning("routes: %s", "; ".join(problems))
        self._problems = problems

    def request_full(self) -> None:
        """Ask for a full apply (re-read the kernel and repair drift) at the next step."""
        self._full = True

    def request_part(self, part: str) -> None:
        """Ask for one part (:data:`PARTS`) of the kernel's state to be re-read and repaired
        at the next step: what a route or VTEP event needs, a fraction of a full apply's
        reads (which re-read host facts, devices, VTEP entries, routes, sysctls and NAT)."""
        self._parts.add(part)

    # --- schedule -------------------------------------------------------------------------
    def interval(self) -> float:
        if self.refresh_interval is not None:
            return self.refresh_interval
        return self.settings.refresh_interval

    def deadline(self) -> float:
        """When :meth:`step` next has work without new messages (monotonic seconds)."""
        if self.retry_at is not None:
            return self.retry_at
        if self._full or self._dirty or self._parts:
            return 0.0
        return self.next_full

    # --- the step -------------------------------------------------------------------------
    def step(self, feed_facts: Callable[[int, HostFacts], list[Message]]) -> None:
        """Re-read host facts if needed (``feed_facts`` hands them to the calc graph and
        returns the flushed messages), then apply if dirty or a full apply is due."""
        now = self.clock.monotonic()
        if self.retry_at is not None and now < self.retry_at:
            return
        full = self._full or now >= self.next_full
        if not (full or self._dirty or self._parts or self._facts_stale()):
            return
        self._full = False
        if self._parts and not full:
            for part in sorted(self._parts):
                for drv in self.drivers.values():
                    drv.request_resync(part)
            self._dirty = True
        self._parts.clear()
        try:
            self.on_messages(self._read_facts(feed_facts, force=full))
            errors = self._apply(full) if (full or self._dirty) else []
        except (CalicoError, OSError, ValueError) as e:
            log.exception("routes: host facts/apply failed")
            errors = [f"unexpected: {e}"]
        self.last_errors = errors
        if errors:
            log.warning("routes: apply incomplete (retry in %.1fs): %s", self._backoff, errors)
            self._full = True
            self.retry_at = self.clock.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            return
        self.retry_at = None
        self._backoff = MIN_BACKOFF_S
        if full:
            self.next_full = self.clock.monotonic() + self.interval()
        if set(self.desired) >= set(self.drivers) and not self.in_sync.is_set():
            log.info("routes %s: in sync", self.node_name)
            self.in_sync.set()

    def _key(self, v: int) -> tuple[Addr | None, str]:
        return self.settings.node_ip(v), self.settings.mtu_iface_pattern

    def _facts_stale(self) -> bool:
        return any(self._facts_key.get(v) != self._key(v) for v in self.drivers)

    def _read_facts(
        self, feed: Callable[[int, HostFacts], list[Message]], *, force: bool
    ) -> list[Message]:
        msgs: list[Message] = []
        for v, drv in self.drivers.items():
            key = self._key(v)
            if force or self._facts_key.get(v) != key:
                facts = drv.facts(*key)
                self._facts_key[v] = key
                msgs += feed(v, facts)
        return msgs

    def _apply(self, full: bool) -> list[str]:
        errors: list[str] = []
        self._dirty = False
        for v, drv in self.drivers.items():
            want = self.desired.get(v)
            if want is not None:
                errors += drv.apply(want, full=full)
        self.applies += 1
        self.full_applies += int(full)
        return errors

    def close(self) -> None:
        for drv in self.drivers.values():
            drv.close()

    # --- observability --------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Route counters for health/metrics: routes/VTEPs desired (both versions), applies,
        full applies, kernel write batches, last errors, userspace IPIP stats."""
        desired = list(self.desired.values())
        out: dict[str, Any] = {
            "in_sync": self.in_sync.is_set(),
            "routes": sum(len(d.routes) for d in desired),
            "routes4": len(self.desired[4].routes) if 4 in self.desired else 0,
            "vteps": sum(len(d.vteps) for d in desired),
            "applies": self.applies,
            "full_applies": self.full_applies,
            "kernel_writes": sum(int(getattr(d, "writes", 0)) for d in self.drivers.values()),
            "last_errors": list(self.last_errors),
        }
        tun = getattr(self.drivers.get(4), "ipip", None)
        if tun is not None:
            out["ipip"] = dict(vars(tun.stats))
        return out


def make_route_drivers(
    mtu_file: str | None = None, nat_outgoing: bool = True
) -> dict[int, RouteDriver]:
    """The system's route drivers, one per IP version (IPv4 also owns tunl0 and the MTU
    file), on the typed kernel seam of the current network namespace."""
    from pycalico.felix.dataplane.mtu import mtu_file_path
    from pycalico.felix.dataplane.routing import RouteDataplane
    from pycalico.system.kernel import IpRouteKernel
    from pycalico.system.process import SubprocessRunner
    from pycalico.system.sysctl import ProcSysctl

    runner = SubprocessRunner(die_with_parent=True)
    kernel = IpRouteKernel(runner)
    return {
        4: RouteDataplane(
            kernel, ProcSysctl(), mtu_file=mtu_file_path(mtu_file), nat=nat_outgoing,
            runner=runner,
        ),
        6: RouteDataplane(kernel, ProcSysctl(), nat=nat_outgoing, version=6, runner=runner),
    }  # fmt: skip
