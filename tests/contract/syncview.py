"""A test's view of what a syncer delivered: statuses in order and the current key → object map."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

from pycalico.datastore import EventType, Resource
from pycalico.datastore.syncer import QueueCallbacks, SyncStatus


class SyncView:
    """Feeds from :class:`QueueCallbacks`; ``drain(until)`` applies messages until ``until()``.

    ``forbid_empty``: fail as soon as an update leaves the view empty (the syncer must never
    emit an empty snapshot while resyncing).
    """

    def __init__(self, forbid_empty: bool = False) -> None:
        self.cb = QueueCallbacks()
        self.view: dict[str, Resource] = {}
        self.statuses: list[SyncStatus] = []
        self.forbid_empty = forbid_empty

    def drain(self, until: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            try:
                msg = self.cb.queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"timeout: statuses={self.statuses} view={list(self.view)}"
                ) from None
            if isinstance(msg, SyncStatus):
                self.statuses.append(msg)
                continue
            for u in msg:
                if u.type is EventType.DELETED:
                    self.view.pop(u.key)
                else:
                    self.view[u.key] = u.obj
                if self.forbid_empty:
                    assert self.view, "syncer emitted an empty state"
