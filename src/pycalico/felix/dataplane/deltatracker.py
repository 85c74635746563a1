"""DeltaTracker[K, V]: desired vs (believed) dataplane state of one keyed set, and the
minimal delta between them (Go Felix's ``lib/deltatracker``).

Owns two maps: *desired* (what the calc wants) and *dataplane* (what the kernel is believed
to hold: recorded after each successful write, or replaced wholesale by a re-read). Pending
updates are the desired entries absent from, or different in, the dataplane map; pending
deletes are the dataplane keys that are not desired.

Invariants (checked by tests/unit/test_deltatracker.py):
- ``pending_updates`` == {k: v in desired | dataplane.get(k) != v} and ``pending_deletes``
  == dataplane.keys() - desired.keys(), after any sequence of operations (both are kept
  incrementally: O(1) per change, no rescans).
- Only a successful write is recorded: an iteration callback returns True to confirm that
  the dataplane now holds the entry (or no longer holds the key). After confirming every
  pending op, ``dataplane == desired`` and :meth:`in_sync` is True.
- Not thread-safe: one owner thread (the dataplane loop) uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class DeltaTracker(Generic[K, V]):
    def __init__(self, values_equal: Callable[[V, V], bool] | None = None) -> None:
        self._eq: Callable[[V, V], bool] = values_equal or (lambda a, b: a == b)
        self._desired: dict[K, V] = {}
        self._dataplane: dict[K, V] = {}
        self._updates: dict[K, V] = {}
        self._deletes: set[K] = set()

    # -- views -------------------------------------------------------------------------
    @property
    def desired(self) -> Mapping[K, V]:
        return self._desired

    @property
    def dataplane(self) -> Mapping[K, V]:
        return self._dataplane

    @property
    def pending_updates(self) -> Mapping[K, V]:
        return self._updates

    @property
    def pending_deletes(self) -> frozenset[K]:
        return frozenset(self._deletes)

    def in_sync(self) -> bool:
        return not self._updates and not self._deletes

    def _recalc(self, k: K) -> None:
        if k in self._desired:
            self._deletes.discard(k)
            want = self._desired[k]
            if k in self._dataplane and self._eq(self._dataplane[k], want):
                self._updates.pop(k, None)
            else:
                self._updates[k] = want
        else:
            self._updates.pop(k, None)
            if k in self._dataplane:
                self._deletes.add(k)
            else:
                self._deletes.discard(k)

    # -- desired side ------------------------------------------------------------------
    def set_desired(self, k: K, v: V) -> None:
        self._desired[k] = v
        self._recalc(k)

    def delete_desired(self, k: K) -> None:
        self._desired.pop(k, None)
        self._recalc(k)

    def replace_all_desired(self, items: Mapping[K, V]) -> None:
        for k in [k for k in self._desired if k not in items]:
            self.delete_desired(k)
        for k, v in items.items():
            if k not in self._desired or not self._eq(self._desired[k], v):
                self.set_desired(k, v)

    # -- dataplane side ----------------------------------------------------------------
    def set_dataplane(self, k: K, v: V) -> None:
        """Record that the dataplane holds ``k: v`` (a confirmed write or an observation)."""
        self._dataplane[k] = v
        self._recalc(k)

    def delete_dataplane(self, k: K) -> None:
        """Record that the dataplane no longer holds ``k``."""
        self._dataplane.pop(k, None)
        self._recalc(k)

    def replace_all_dataplane(self, items: Mapping[K, V]) -> None:
        """Replace the dataplane view by a fresh read of the kernel (resync)."""
        old = self._dataplane
        self._dataplane = dict(items)
        for k in set(old) | set(items):
            self._recalc(k)

    # -- iteration ---------------------------------------------------------------------
    def iter_pending_updates(
        self, fn: Callable[[K, V], bool], order: Callable[[Iterable[K]], Iterable[K]] = list
    ) -> None:
        """Call ``fn(k, v)`` for each pending update (in ``order``); a True return confirms
        it (the dataplane now holds ``v``). Safe against changes made by ``fn``."""
        for k in order(list(self._updates)):
            if k in self._updates:
                v = self._updates[k]
                if fn(k, v):
                    self.set_dataplane(k, v)

    def iter_pending_deletes(
        self, fn: Callable[[K], bool], order: Callable[[Iterable[K]], Iterable[K]] = list
    ) -> None:
        """Call ``fn(k)`` for each pending delete; True confirms the key is gone."""
        for k in order(list(self._deletes)):
            if k in self._deletes and fn(k):
                self.delete_dataplane(k)
