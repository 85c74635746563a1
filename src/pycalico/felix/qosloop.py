"""The tc half of Felix's owner loop: endpoint messages in, tc bandwidth controls and the tc
guard applied.

Owns, for the one owner thread of :class:`pycalico.felix.agent.Felix`: which local workload
interface wants which ``qosControls`` (from :class:`~pycalico.felix.calc.messages.EndpointUpdate`
/ :class:`~pycalico.felix.calc.messages.EndpointRemove`), and the apply schedule of the
:class:`~pycalico.felix.dataplane.qos.QosDataplane` and (``guard_prefix`` given) of the
:class:`~pycalico.felix.dataplane.tcguard.GuardDataplane`, which every full apply runs first
(it may replace a legacy ``ingress`` qdisc, whose QoS redirect the QoS apply then restores).

Invariants:
- Nothing is applied before the graph's ``InSync`` (a sweep on a partial view would remove
  the IFBs of endpoints not seen yet); the guard not before Felix sets ``guard_ready`` (the
  ``calico`` table, which sets the mark the guard requires, is programmed).
- A change is applied at the next owner-loop iteration (no timer); a full apply (re-read
  every interface, sweep unused IFBs) runs first, every :data:`REFRESH_S` and after a
  failure (retried after :data:`RETRY_S`); a failure never blocks nft or routes.
- Every time read goes through the injected :class:`~pycalico.system.clock.Clock`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pycalico.errors import CalicoError
from pycalico.felix.calc.messages import EndpointRemove, EndpointUpdate, InSync, Message
from pycalico.felix.dataplane.qos import QosDataplane
from pycalico.felix.dataplane.tcguard import GuardDataplane
from pycalico.system.clock import Clock, RealClock
from pycalico.system.tc import TrafficControl

log = logging.getLogger(__name__)

REFRESH_S = 30.0
RETRY_S = 1.0


class QosLoop:
    """See the module docstring. Only the owner thread calls it (``stats`` is a snapshot)."""

    def __init__(
        self,
        tc: TrafficControl,
        *,
        clock: Clock | None = None,
        guard_prefix: str | None = None,
        guard_ipv6: bool = True,
    ) -> None:
        self.dataplane = QosDataplane(tc)
        self.guard = (
            GuardDataplane(tc, guard_prefix, guard_ipv6) if guard_prefix is not None else None
        )
        self._guard_ready = False
        self.clock: Clock = clock if clock is not None else RealClock()
        self._in_sync = False
        self._full = True
        self._next_full = 0.0
        self._retry_at: float | None = None
        self.applies = 0
        self.last_errors: list[str] = []

    def on_messages(self, msgs: Iterable[Message]) -> None:
        for m in msgs:
            if isinstance(m, EndpointUpdate) and not m.endpoint.is_host:
                self.dataplane.set(m.endpoint.interface_name, m.endpoint.qos)
            elif isinstance(m, EndpointRemove) and not m.endpoint.is_host:
                self.dataplane.set(m.endpoint.interface_name, None)
            elif isinstance(m, InSync):
                self._in_sync = True

    def request_full(self) -> None:
        self._full = True

    def set_guard_ready(self) -> None:
        """The ``calico`` table is programmed: the guard may go in (at the next step)."""
        if not self._guard_ready:
            self._guard_ready = True
            self._full = True

    def deadline(self) -> float | None:
        """When :meth:`step` has work next (None: nothing scheduled)."""
        if not self._in_sync:
            return None
        if self._retry_at is not None:
            return self._retry_at
        if self._full or self.dataplane.dirty:
            return self.clock.monotonic()
        return self._next_full

    def step(self) -> None:
        if not self._in_sync:
            return
        now = self.clock.monotonic()
        if self._retry_at is not None and now < self._retry_at:
            return
        full = self._full or now >= self._next_full
        if not full and not self.dataplane.dirty:
            return
        try:
            errors = []
            if full and self.guard is not None and self._guard_ready:
                errors += self.guard.apply()
            errors += self.dataplane.apply(full=full)
        except (CalicoError, OSError) as e:  # e.g. tc not installed: retry, never spin
            log.warning("qos: apply failed: %s", e)
            errors = [str(e)]
        self.applies += 1
        self.last_errors = errors
        if errors:
            self._retry_at = now + RETRY_S
            self._full = True
            return
        self._retry_at = None
        if full:
            self._full = False
            self._next_full = now + REFRESH_S

    def close(self) -> None:
        """The owner loop has ended: detach what lives only as long as this process (the
        local-delivery guard); everything else stays for the next agent to adopt."""
        if self.guard is not None:
            self.guard.close()

    def stats(self) -> dict[str, Any]:
        return {
            "interfaces": len(self.dataplane.desired()),
            "applies": self.applies,
            "tc_writes": self.dataplane.writes,
            "guard_writes": self.guard.writes if self.guard is not None else 0,
            "local_guard_writes": self.guard.local_writes if self.guard is not None else 0,
            "last_errors": list(self.last_errors),
        }


def system_tc() -> TrafficControl:
    """The real tc seam of the current network namespace."""
    from pycalico.system.process import SubprocessRunner
    from pycalico.system.tc import TcKernel

    return TcKernel(SubprocessRunner(die_with_parent=True))
