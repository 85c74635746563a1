"""Felix's kernel watchers: what wakes the owner loop when someone touches what Felix owns.

:class:`KernelWatch` is a mixin of :class:`~pycalico.felix.agent.Felix` (split out to keep the
agent small). ``nft monitor`` (through the nft runner's process seam), ``tc monitor`` (with
the tc guard: a deleted guard filter or clsact qdisc) and, with the system's route drivers,
``ip monitor`` feed :meth:`KernelWatch.kernel_event` from their threads; that
only notes a debounced topic and wakes the loop. The owner loop calls
:meth:`KernelWatch._take_kernel_events`, which asks the touched table for a read-back or the
route loop for a full apply, and repairs a family's tiny guard table at once when an event
names it.

Invariants: watcher threads never touch tables or drivers (they only enqueue); every repair
runs on the owner thread; a guard is repaired only once the main tables were programmed.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from pycalico.felix.dataplane import NftError, NftRunner, NftTable
from pycalico.felix.dataplane.watch import (
    QOS_TOPIC,
    ROUTE_ARGV,
    ROUTE_TABLE_TOPIC,
    ROUTES_TOPIC,
    VTEP_TOPIC,
    Debouncer,
    LineWatcher,
    nft_topic,
    route_topic,
    tc_topic,
)

if TYPE_CHECKING:
    from pycalico.felix.qosloop import QosLoop
    from pycalico.felix.routeloop import RouteLoop
    from pycalico.model.felixconfig import FelixConfig
    from pycalico.system.clock import Clock

log = logging.getLogger(__name__)

#: Debouncer topic ``guard:<family>``: check that family's guard table now (see kernel_event).
GUARD_TOPIC = "guard:"
#: Watcher topics repaired by re-reading one part of the route drivers' state.
_PARTS = {ROUTE_TABLE_TOPIC: "routes", VTEP_TOPIC: "vxlan"}


class KernelWatch:
    """The watcher half of Felix; the attributes below are set by ``Felix.__init__``."""

    node_name: str
    clock: Clock
    config: FelixConfig
    runner: NftRunner
    tables: dict[str, NftTable]
    guards: dict[str, NftTable]
    routes: RouteLoop | None
    qos: QosLoop | None
    counters: dict[str, float]
    _lock: threading.Lock
    _debounce: Debouncer
    _nft_in_sync: threading.Event
    _wake: queue.Queue[Any]

    def _make_watchers(self, nft: bool, routes: bool) -> list[LineWatcher]:
        """``nft monitor`` (through the nft runner's process seam, in its namespace) and,
        with the system's route drivers, ``ip monitor`` of this namespace."""
        out: list[LineWatcher] = []
        # Topic -> what to resync: our nft tables; calico-nat belongs to the route drivers.
        self._topic_tables: dict[str, NftTable] = {
            f"nft:{t.family}:{t.name}": t for t in (*self.tables.values(), *self.guards.values())
        }
        if not nft:
            return out
        watched = [(t.family, t.name) for t in self._topic_tables.values()]
        watched += [(f, "calico-nat") for f in self.tables] if self.routes is not None else []
        launcher: Any = getattr(self.runner, "process", None)
        monitor = getattr(self.runner, "monitor_argv", None)
        if callable(monitor) and hasattr(launcher, "spawn"):
            out.append(LineWatcher("nft", monitor(), lambda ln: nft_topic(ln, watched),
                                   self.kernel_event, launcher))  # fmt: skip
        from pycalico.system.process import SubprocessRunner

        tc_monitor = getattr(self.qos.dataplane.tc, "monitor_argv", None) if self.qos else None
        if self.qos is not None and self.qos.guard is not None and callable(tc_monitor):
            # A qdisc or filter deleted (or replaced) by hand: the tc guard and QoS re-read.
            out.append(LineWatcher("tc", tc_monitor(), tc_topic, self.kernel_event,
                                   SubprocessRunner(die_with_parent=True)))  # fmt: skip
        if routes:

            def classify(line: str) -> str | None:
                return route_topic(line, self.config.interface_prefix)

            out.append(LineWatcher("routes", ROUTE_ARGV, classify, self.kernel_event,
                                   SubprocessRunner(die_with_parent=True)))  # fmt: skip
        return out

    def kernel_event(self, topic: str) -> None:
        """A watcher saw a change to something we own (any thread): resync it shortly
        (debounced; the owner loop does the read-back and repair)."""
        now = self.clock.monotonic()
        table = self._topic_tables.get(topic)
        if table is not None and table in self.guards.values():
            # A guard touched (deleted by hand, or by a ``flush ruleset``, which nft monitor
            # reports table by table): that tiny table is repaired at once (no delay).
            # Events on the main table never cost a guard read-back.
            self._debounce.note(f"{GUARD_TOPIC}{table.family}", now, 0.0, 0.05)
        if topic in _PARTS:  # one or two reads: cheap, so barely delayed
            self._debounce.note(topic, now, 0.02, 0.25)
        else:
            self._debounce.note(topic, now)
        self._wake.put([])

    def _take_kernel_events(self) -> None:
        families: set[str] = set()
        for topic in self._debounce.take_due(self.clock.monotonic()):
            if topic.startswith(GUARD_TOPIC):
                families.add(topic.removeprefix(GUARD_TOPIC))
                continue
            table = self._topic_tables.get(topic)
            if table is not None:
                table.request_resync()
            elif self.routes is not None and (topic == ROUTES_TOPIC or "calico-nat" in topic):
                self.routes.request_full()
            elif self.routes is not None and topic in _PARTS:
                self.routes.request_part(_PARTS[topic])
            if self.qos is not None and topic in (ROUTES_TOPIC, QOS_TOPIC):
                self.qos.request_full()  # a workload link or an IFB: re-read its tc state
            with self._lock:
                self.counters["watch_resyncs"] += 1
        if families and self._nft_in_sync.is_set():
            self._repair_guards(families)

    def _repair_guards(self, families: set[str]) -> None:
        """Tampering with nft in ``families``: read those tiny guards back and repair them
        at once, before the main tables (after a ``flush ruleset`` both are gone and nothing
        fails closed until the guard is back). A failure is left to the normal apply pass,
        which retries."""
        for fam, g in self.guards.items():
            if fam not in families:
                continue
            g.request_resync()
            try:
                g.apply()
            except NftError as e:
                log.warning("felix %s: repairing %s: %s", self.node_name, g.name, e)
