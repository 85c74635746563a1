"""NftTable: owns one nft table's desired vs actual state and reconciles it.

Managers call :meth:`NftTable.set_desired` (marks dirty) and :meth:`request_resync`; the one
owner loop calls :meth:`apply`. The first apply (and any apply after a failure or after the
table vanished) atomically replaces the whole table in one transaction (``add table; delete
table; table {...}``), so a restarted agent swaps its predecessor's table with no window in
between; later applies send only the delta computed by :func:`~.ops.plan` (chains rewritten
when their rule hashes differ, set/map elements added/removed), again in one transaction.
:func:`apply_tables` applies several tables (Felix: ``calico`` and ``calico-guard`` of every
family) in ONE transaction, so one logical update never lands half. A resync reads the table
back (``nft -j list table``) so drift made by others — a flushed
table, a deleted chain or element — is repaired by the next delta.

Invariants: only the table named at construction is ever touched; nothing is written
before a desired state was given (the agent gives one only once in sync); after a failed
transaction the believed state is discarded (next apply = full replace). Apply durations
(:class:`TableStats`) are measured on the injected :class:`~pycalico.system.clock.Clock`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pycalico.felix.dataplane.ops import Op, ReplaceTable, TableState, apply_to_state, plan
from pycalico.felix.dataplane.runner import NftError, NftRunner
from pycalico.felix.rules.model import TableSpec
from pycalico.system.clock import Clock, RealClock

log = logging.getLogger(__name__)


@dataclass
class TableStats:
    applies: int = 0
    full_replaces: int = 0
    deltas: int = 0
    ops_sent: int = 0
    failures: int = 0
    resyncs: int = 0
    drift_repairs: int = 0
    last_apply_seconds: float = 0.0
    total_apply_seconds: float = 0.0
    #: Clock time (monotonic) at which the last transaction that wrote this table returned.
    last_apply_end: float = 0.0


class NftTable:
    """See the module docstring."""

    def __init__(
        self, runner: NftRunner, family: str, name: str = "calico", *, clock: Clock | None = None
    ) -> None:
        self.runner = runner
        self.clock: Clock = clock if clock is not None else RealClock()
        self.family = family
        self.name = name
        self.stats = TableStats()
        self._desired: TableSpec | None = None
        self._actual: TableState | None = None  # None = unknown: next apply replaces all
        self._dirty = False
        self._resync = False

    def set_desired(self, spec: TableSpec) -> None:
        if spec.family != self.family or spec.name != self.name:
            raise ValueError(f"table spec {spec.family} {spec.name} given to {self}")
        self._desired = spec
        self._dirty = True

    def request_resync(self) -> None:
        """Read the kernel's table back at the next apply (coalescing flag)."""
        self._resync = True

    @property
    def dirty(self) -> bool:
        return self._desired is not None and (self._dirty or self._resync)

    def apply(self) -> list[Op]:
        """Bring the kernel to the desired state; returns the ops sent (empty: in sync).

        Raises :class:`NftError` when even a full replace fails (the caller retries later).
        """
        return apply_tables(self.runner, [self]).get(self, [])

    # --- the steps of apply_tables (one transaction for several tables) ----------------
    def _prepare(self) -> list[Op] | None:
        """Read back if asked; the ops to send (empty: in sync), None: nothing desired."""
        if self._desired is None:
            return None
        if self._resync:
            self._resync = False
            self.stats.resyncs += 1
            if self._actual is not None:
                seen = self.runner.read_table(self.family, self.name)
                if seen != self._actual:
                    self.stats.drift_repairs += 1
                    self._dirty = True
                self._actual = seen
        if not self._dirty:
            return None
        return self._ops()

    def _committed(self, ops: list[Op], seconds: float) -> None:
        if ops:
            if isinstance(ops[0], ReplaceTable):
                self.stats.full_replaces += 1
            else:
                self.stats.deltas += 1
            self.stats.ops_sent += len(ops)
        base = self._actual if self._actual is not None else TableState()
        self._actual = apply_to_state(base, ops)
        self._dirty = False
        self.stats.applies += 1
        self.stats.last_apply_seconds = seconds
        self.stats.total_apply_seconds += seconds
        if ops:
            self.stats.last_apply_end = self.clock.monotonic()

    def _ops(self) -> list[Op]:
        assert self._desired is not None
        if self._actual is None:
            return [ReplaceTable(self._desired)]
        ops = plan(self._actual, self._desired)
        if ops is None:
            return [ReplaceTable(self._desired)]
        return ops

    def __repr__(self) -> str:
        return f"NftTable({self.family} {self.name})"


def apply_tables(runner: NftRunner, tables: Sequence[NftTable]) -> dict[NftTable, list[Op]]:
    """Bring several tables to their desired state in ONE nft transaction (their parts in
    the order given); returns the ops sent per table that was applied.

    A failed delta is retried once as a full replace of every table that had ops, again in
    one transaction; if that fails too the believed states are discarded (the next apply
    replaces those tables) and :class:`NftError` is raised. So a crash (or a failure) at any
    moment leaves every table of the write old or new together, never some of each.
    """
    if not tables:
        return {}
    clock = tables[0].clock
    t0 = clock.monotonic()
    prepared = {t: ops for t in tables if (ops := t._prepare()) is not None}
    sending = [(t, ops) for t, ops in prepared.items() if ops]
    if sending:
        try:
            runner.transact_many([(t.family, t.name, ops) for t, ops in sending])
        except NftError as e:
            for t, _ops in sending:
                t.stats.failures += 1
                t._actual = None
            if all(isinstance(ops[0], ReplaceTable) for _t, ops in sending):
                raise
            log.warning("nft delta for %s failed (%s); replacing the tables",
                        ", ".join(repr(t) for t, _o in sending), e)  # fmt: skip
            sending = [(t, t._ops()) for t, _ops in sending]
            prepared.update(sending)
            try:
                runner.transact_many([(t.family, t.name, ops) for t, ops in sending])
            except NftError:
                for t, _ops in sending:
                    t.stats.failures += 1
                raise
    dt = clock.monotonic() - t0
    for t, ops in prepared.items():
        t._committed(ops, dt)
    return prepared
