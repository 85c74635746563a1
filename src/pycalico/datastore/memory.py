"""In-process reference Datastore: a dict plus an event log, guarded by one lock.

The reference semantics for unit tests (and the contract suite): store-wide revision,
CAS on every write, ordered watch with resume, and a compaction knob (``history`` keeps
only the last N events; :meth:`MemoryDatastore.compact` drops history explicitly) so that
:class:`Compacted` is testable. Thread-safe; not shared across processes.
"""

from __future__ import annotations

import bisect
import copy
import threading
import time
from collections.abc import Iterator

from pycalico.datastore._common import (
    ident,
    obj_key,
    required_revision,
    stamp_new,
    stamp_update,
    with_revision,
)
from pycalico.datastore.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    EventType,
    ListResult,
    NotFound,
    Resource,
    Unavailable,
    WatchEvent,
    key_for,
    prefix_for,
)


class MemoryDatastore:
    """Thread-safe in-memory store. ``history``: max events kept for watch (None = all)."""

    def __init__(self, history: int | None = None) -> None:
        self._lock = threading.Condition()
        self._data: dict[str, Resource] = {}
        self._events: list[WatchEvent] = []
        self._revs: list[int] = []  # parallel to _events, for bisect
        self._revision = 0
        self._compacted = 0  # events with revision <= this are gone
        self._history = history
        self._closed = False

    # -- reads -------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        with self._lock:
            return self._revision

    def get(self, kind: str, name: str, namespace: str = "") -> Resource:
        key = key_for(kind, name, namespace)
        with self._lock:
            self._check_open()
            obj = self._data.get(key)
            if obj is None:
                raise NotFound(f"{kind} {_display(name, namespace)} not found")
            return copy.deepcopy(obj)

    def list(self, kind: str, namespace: str | None = None) -> ListResult:
        if namespace is None:
            return self.list_prefix(prefix_for(kind))
        return self.list_prefix(prefix_for(kind, namespace))

    def list_prefix(self, prefix: str) -> ListResult:
        with self._lock:
            self._check_open()
            items = [
                copy.deepcopy(v) for k, v in sorted(self._data.items()) if k.startswith(prefix)
            ]
            return ListResult(items=items, revision=self._revision)

    # -- writes ------------------------------------------------------------------------
    def create(self, obj: Resource, keep_identity: bool = False) -> Resource:
        key = obj_key(obj)
        new = stamp_new(obj, keep_identity)
        with self._lock:
            self._check_open()
            if key in self._data:
                kind, name, ns = ident(obj)
                raise AlreadyExists(f"{kind} {_display(name, ns)} already exists")
            rev = self._bump()
            with_revision(new, rev)
            self._data[key] = new
            self._record(EventType.CREATED, key, rev, new)
            return copy.deepcopy(new)

    def update(self, obj: Resource) -> Resource:
        key = obj_key(obj)
        want = required_revision(obj)
        with self._lock:
            self._check_open()
            old = self._data.get(key)
            kind, name, ns = ident(obj)
            if old is None:
                raise NotFound(f"{kind} {_display(name, ns)} not found")
            have = int(old["metadata"]["resourceVersion"])
            if have != want:
                raise Conflict(
                    f"{kind} {_display(name, ns)}: resourceVersion {want} is stale (stored {have})"
                )
            new = stamp_update(obj, old)
            rev = self._bump()
            with_revision(new, rev)
            self._data[key] = new
            self._record(EventType.UPDATED, key, rev, new)
            return copy.deepcopy(new)

    def delete(
        self, kind: str, name: str, namespace: str = "", revision: str | None = None
    ) -> Resource:
        key = key_for(kind, name, namespace)
        with self._lock:
            self._check_open()
            old = self._data.get(key)
            if old is None:
                raise NotFound(f"{kind} {_display(name, namespace)} not found")
            if revision is not None and str(revision) != old["metadata"]["resourceVersion"]:
                raise Conflict(
                    f"{kind} {_display(name, namespace)}: resourceVersion {revision} is stale "
                    f"(stored {old['metadata']['resourceVersion']})"
                )
            del self._data[key]
            rev = self._bump()
            self._record(EventType.DELETED, key, rev, old)
            return copy.deepcopy(old)

    # -- watch -------------------------------------------------------------------------
    def watch(
        self, prefix: str, from_revision: int, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        last = from_revision
        while True:
            with self._lock:
                deadline = None if timeout is None else time.monotonic() + timeout
                batch: list[WatchEvent] = []
                while True:
                    if self._closed:
                        return
                    if last < self._compacted:
                        raise Compacted(
                            f"watch from revision {last}: history up to {self._compacted} "
                            "was compacted"
                        )
                    i = bisect.bisect_right(self._revs, last)
                    batch = [e for e in self._events[i:] if e.key.startswith(prefix)]
                    if batch:
                        break
                    if self._events:
                        last = max(last, self._revs[-1])
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    self._lock.wait(remaining)
            for ev in batch:
                last = ev.revision
                yield WatchEvent(ev.type, ev.key, ev.revision, copy.deepcopy(ev.obj))

    # -- admin -------------------------------------------------------------------------
    def compact(self, revision: int | None = None) -> None:
        """Drop watch history up to ``revision`` (default: everything so far)."""
        with self._lock:
            rev = self._revision if revision is None else min(revision, self._revision)
            if rev <= self._compacted:
                return
            i = bisect.bisect_right(self._revs, rev)
            del self._events[:i]
            del self._revs[:i]
            self._compacted = rev

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    # -- internals ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("memory datastore is closed")

    def _bump(self) -> int:
        self._revision += 1
        return self._revision

    def _record(self, typ: EventType, key: str, rev: int, obj: Resource) -> None:
        self._events.append(WatchEvent(typ, key, rev, copy.deepcopy(obj)))
        self._revs.append(rev)
        if self._history is not None and len(self._events) > self._history:
            drop = len(self._events) - self._history
            self._compacted = self._revs[drop - 1]
            del self._events[:drop]
            del self._revs[:drop]
        self._lock.notify_all()


def _display(name: str, namespace: str) -> str:
    return f"{namespace}/{name}" if namespace else name
