"""Syncer: list + watch a set of key prefixes and stream the resulting state to callbacks.

A :class:`Syncer` runs in its own thread. It reports :class:`SyncStatus`
``WAIT_FOR_DATASTORE`` (cannot reach the store) → ``RESYNC`` (listing) → ``IN_SYNC`` (the
consumer has the full state as of some revision; from then on every change is streamed).

Invariants:
- The consumer's view is a dict key -> object. The syncer keeps the same dict and only ever
  emits *differences* against it: on :class:`Compacted`, disconnection or a datastore restart
  it relists and emits updates for changed/new keys and deletes for vanished ones. It never
  emits an empty snapshot or a "clear everything" signal, so a consumer never drops state.
- Updates for one key are delivered in revision order; the status may move back to
  ``WAIT_FOR_DATASTORE``/``RESYNC`` after a failure, but everything emitted stays valid.
- Each prefix is listed separately (at revision r_i) and one watch on the common prefix starts
  at min(r_i); events already reflected by a prefix's list (revision <= r_i) are skipped.
- Callbacks run on the syncer thread; an exception raised by a callback is logged and the
  syncer resyncs after a back-off (it does not die); updates whose delivery raised are
  re-emitted by that resync.
- ``stop()`` takes effect within ``poll_interval`` (the watch's idle timeout; on etcd an idle
  watch stream is re-established that often).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pycalico.datastore._common import obj_key
from pycalico.datastore.base import (
    Compacted,
    Datastore,
    DatastoreError,
    EventType,
    Resource,
    prefix_for,
)

log = logging.getLogger(__name__)


class SyncStatus(StrEnum):
    WAIT_FOR_DATASTORE = "wait-for-datastore"
    RESYNC = "resync"
    IN_SYNC = "in-sync"


@dataclass(frozen=True)
class SyncUpdate:
    """One change to the consumer's view. ``obj`` for DELETED is the last known value."""

    type: EventType
    key: str
    obj: Resource
    revision: int


class SyncerCallbacks(Protocol):
    def on_status(self, status: SyncStatus) -> None: ...

    def on_updates(self, updates: list[SyncUpdate]) -> None: ...


class QueueCallbacks:
    """Callbacks that put each status (a :class:`SyncStatus`) or batch (``list[SyncUpdate]``)
    on :attr:`queue`, for consumers that prefer to pull."""

    def __init__(self) -> None:
        self.queue: queue.Queue[SyncStatus | list[SyncUpdate]] = queue.Queue()

    def on_status(self, status: SyncStatus) -> None:
        self.queue.put(status)

    def on_updates(self, updates: list[SyncUpdate]) -> None:
        self.queue.put(updates)


def _common_prefix(prefixes: Sequence[str]) -> str:
    """The longest string every prefix starts with (character-wise)."""
    first, last = min(prefixes), max(prefixes)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


class Syncer:
    """List+watch ``prefixes`` of ``datastore`` and feed ``callbacks`` (see module doc)."""

    def __init__(
        self,
        datastore: Datastore,
        prefixes: Iterable[str],
        callbacks: SyncerCallbacks,
        *,
        retry_interval: float = 0.2,
        max_retry_interval: float = 2.0,
        poll_interval: float = 1.0,
        name: str = "syncer",
    ) -> None:
        self.datastore = datastore
        self.prefixes = sorted(set(prefixes))
        if not self.prefixes:
            raise ValueError("Syncer: at least one prefix is required")
        self.callbacks = callbacks
        self._watch_prefix = _common_prefix(self.prefixes)
        self._retry = retry_interval
        self._max_retry = max_retry_interval
        self._poll = poll_interval
        self._cache: dict[str, Resource] = {}
        self._status: SyncStatus | None = None
        self._stop = threading.Event()
        self._in_sync = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.resyncs = 0  # number of (re)lists done; for observability and tests

    @classmethod
    def for_kinds(
        cls, datastore: Datastore, kinds: Iterable[str], callbacks: SyncerCallbacks, **kw: Any
    ) -> Syncer:
        """A syncer over every resource of ``kinds`` (e.g. ``["IPPool", "Node"]``)."""
        return cls(datastore, [prefix_for(k) for k in kinds], callbacks, **kw)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Syncer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def alive(self) -> bool:
        """The syncer thread is running."""
        return self._thread.is_alive()

    @property
    def status(self) -> SyncStatus | None:
        return self._status

    def wait_in_sync(self, timeout: float | None = None) -> bool:
        return self._in_sync.wait(timeout)

    def snapshot(self) -> dict[str, Resource]:
        """A shallow copy of the current view (key -> object); call from any thread."""
        return dict(self._cache)

    # -- the loop ----------------------------------------------------------------------
    def _set_status(self, status: SyncStatus) -> None:
        if status is self._status:
            return
        self._status = status
        if status is SyncStatus.IN_SYNC:
            self._in_sync.set()
        self.callbacks.on_status(status)

    def _run(self) -> None:
        self._set_status(SyncStatus.WAIT_FOR_DATASTORE)
        backoff = self._retry
        while not self._stop.is_set():
            try:
                revs = self._resync()
                backoff = self._retry
                self._watch(revs)
            except Compacted as e:
                log.info("%s: %s; relisting", self._thread.name, e)
                self._set_status(SyncStatus.RESYNC)
            except DatastoreError as e:
                log.warning("%s: datastore error: %s; retrying in %.1fs", self._thread.name, e,
                            backoff)  # fmt: skip
                self._set_status(SyncStatus.WAIT_FOR_DATASTORE)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_retry)
            except Exception:
                log.exception("%s: unexpected error; resyncing", self._thread.name)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_retry)

    def _resync(self) -> list[int]:
        """List every prefix and emit the difference against the current view."""
        listed: dict[str, Resource] = {}
        revs: list[int] = []
        for p in self.prefixes:
            res = self.datastore.list_prefix(p)
            if self._status is SyncStatus.WAIT_FOR_DATASTORE:
                self._set_status(SyncStatus.RESYNC)
            revs.append(res.revision)
            for obj in res.items:
                listed[obj_key(obj)] = obj
        self.resyncs += 1
        updates: list[SyncUpdate] = []
        for key, obj in listed.items():
            old = self._cache.get(key)
            if old != obj:
                typ = EventType.CREATED if old is None else EventType.UPDATED
                updates.append(SyncUpdate(typ, key, obj, resource_revision(obj)))
        for key in sorted(set(self._cache) - set(listed)):
            old = self._cache[key]
            updates.append(SyncUpdate(EventType.DELETED, key, old, max(revs)))
        if updates:
            self._emit(updates)
        self._set_status(SyncStatus.IN_SYNC)
        return revs

    def _watch(self, revs: list[int]) -> None:
        floor = dict(zip(self.prefixes, revs, strict=True))
        last = min(revs)
        while not self._stop.is_set():
            # Events of one read (``WatchEvent.more``) are delivered as ONE list, so a
            # multi-object write reaches the callbacks whole, never split in two batches.
            pending: list[SyncUpdate] = []
            latest: dict[str, Resource | None] = {}  # the pending batch's view of its keys
            for ev in self.datastore.watch(self._watch_prefix, last, timeout=self._poll):
                last = ev.revision
                p = self._prefix_of(ev.key)
                if p is not None and ev.revision > floor[p]:
                    old = latest[ev.key] if ev.key in latest else self._cache.get(ev.key)
                    if ev.type is EventType.DELETED:
                        if old is not None:
                            pending.append(SyncUpdate(EventType.DELETED, ev.key, ev.obj,
                                                      ev.revision))  # fmt: skip
                            latest[ev.key] = None
                    else:
                        typ = EventType.CREATED if old is None else EventType.UPDATED
                        pending.append(SyncUpdate(typ, ev.key, ev.obj, ev.revision))
                        latest[ev.key] = ev.obj
                if ev.more:
                    continue
                if pending:
                    self._emit(pending)
                    pending, latest = [], {}
                if self._stop.is_set():
                    return
            if pending:  # the stream ended inside a read: what was read is still whole
                self._emit(pending)

    def _prefix_of(self, key: str) -> str | None:
        for p in self.prefixes:
            if key.startswith(p):
                return p
        return None

    def _emit(self, updates: list[SyncUpdate]) -> None:
        """Deliver, then record: if the callback raises, the next resync re-emits them."""
        self.callbacks.on_updates(updates)
        for u in updates:
            if u.type is EventType.DELETED:
                self._cache.pop(u.key, None)
            else:
                self._cache[u.key] = u.obj


def resource_revision(obj: Resource) -> int:
    """``metadata.resourceVersion`` as an int (0 when missing or malformed)."""
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0
