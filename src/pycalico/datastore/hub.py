"""SyncerHub: ONE :class:`Syncer` per process (calico-node) fanned out to its subscribers.

Owns: a single list+watch over the union of the kinds every subscriber needs (built up front
by the node), the hub's current view (key -> object) and status, and the per-subscription
bookkeeping: which kinds (and keys) it gets, what it has acknowledged, its back-off.

A subscription (:meth:`SyncerHub.syncer_for`) has the surface of a :class:`Syncer` —
``start() -> self``, ``stop(timeout)``, ``alive()``, ``snapshot()`` — and feeds the same
:class:`~pycalico.datastore.syncer.SyncerCallbacks`, so a component is written once and runs
either on its own Syncer (standalone, tests) or on the node's hub.

Invariants:
- Exactly one Syncer thread and one datastore watch per hub, whatever the number of
  subscribers; the hub's Syncer keeps all of its own invariants (list+watch, differences
  only, never a clear-all, updates per key in revision order).
- Every subscription sees what its own Syncer over its kinds would have shown: a
  subscription started at any time (before the hub syncs, after it is ``IN_SYNC``, after a
  supervisor restart of its component) first receives the hub's current view of its kinds as
  one batch of updates, then the hub's current status, then live updates. Replay and live
  delivery run under the hub's lock, which also guards the view, so no update is missed or
  delivered twice between them.
- Updates are filtered per subscription by kind (key prefix) and an optional key predicate;
  a subscription never gets a key it did not ask for, nor an empty batch.
- A subscription's callbacks are never called concurrently (they run under the hub lock: on
  the hub's Syncer thread for live updates, on the thread calling ``start()`` for the
  replay, on a short-lived retry thread for a re-delivery). They must be quick (hand work to
  the component's own thread, as every consumer does today) and must not wait for a thread
  that is calling ``stop()`` on a subscription.
- A callback exception is contained to its subscription: it is logged, the subscription stops
  receiving live updates and, after a back-off (doubling to ``max_retry_interval``), gets the
  difference between the hub's view and what it acknowledged — which re-emits every update
  whose delivery raised — then the current status, exactly like a Syncer's relist. Other
  subscriptions are not delayed beyond the failing call itself.
- A subscription's :meth:`~Subscription.snapshot` is what it acknowledged (as
  :meth:`Syncer.snapshot`), readable from any thread without the lock.
- After ``stop()`` returns, a subscription gets no more callbacks (unless ``stop()`` is called
  from inside its own callback, where the current call finishes first).
- Asking for kinds the hub does not sync raises :class:`HubKindsError` (the node builds the
  hub with the union of its components' kinds before any of them starts).
- :attr:`SyncerHub.sync_state` (the Syncer's status, since when, and since when the hub has
  not been ``IN_SYNC``; monotonic times) is readable from any thread without waiting for a
  delivery: it has its own small lock, never held while calling out. calico-node's readiness
  is built on it (:mod:`pycalico.node.status`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from pycalico.datastore.base import Datastore, EventType, Resource, prefix_for
from pycalico.datastore.syncer import (
    Syncer,
    SyncerCallbacks,
    SyncStatus,
    SyncUpdate,
    resource_revision,
)
from pycalico.errors import CalicoError

log = logging.getLogger(__name__)

KeyFilter = Callable[[str], bool]


class HubError(CalicoError):
    """The hub or a subscription was used out of order (started twice, after stop, ...)."""


class HubKindsError(HubError):
    """A subscription asked for kinds the hub does not sync."""


@dataclass(frozen=True)
class SyncState:
    """The hub's sync status and its times (on the hub's ``monotonic`` clock).

    ``status`` is None until the Syncer first reports; ``since`` is when the hub entered
    ``status`` (its construction while None); ``unsynced_since`` is when the hub last left
    ``IN_SYNC`` — or its construction if it never was — and None while ``IN_SYNC``;
    ``synced_once`` says whether it ever reached ``IN_SYNC``.
    """

    status: SyncStatus | None
    since: float
    unsynced_since: float | None
    synced_once: bool

    @property
    def in_sync(self) -> bool:
        return self.status is SyncStatus.IN_SYNC


class SyncSource(Protocol):
    """What a component needs of its feed once started: a :class:`Syncer` or a
    :class:`Subscription`."""

    def stop(self, timeout: float = 5.0) -> None: ...

    def alive(self) -> bool: ...

    def snapshot(self) -> dict[str, Resource]: ...


class SyncerHub:
    """One Syncer over ``kinds`` shared by subscriptions (see the module doc)."""

    def __init__(
        self,
        datastore: Datastore,
        kinds: Iterable[str],
        *,
        poll_interval: float = 1.0,
        retry_interval: float = 0.2,
        max_retry_interval: float = 2.0,
        name: str = "hub-syncer",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kinds = tuple(sorted(set(kinds)))
        if not self.kinds:
            raise HubKindsError("SyncerHub: at least one kind is required")
        self.name = name
        self.retry_interval = retry_interval
        self.max_retry_interval = max_retry_interval
        self._lock = threading.RLock()
        self._view: dict[str, Resource] = {}
        self._status: SyncStatus | None = None
        self._revision = 0  # highest revision seen; the revision of re-delivered deletes
        self._subs: list[Subscription] = []
        self._started = self._stopped = False
        self._monotonic = monotonic
        self._state_lock = threading.Lock()  # guards _sync_state only; never held calling out
        now = monotonic()
        self._sync_state = SyncState(None, now, now, False)
        self._syncer = Syncer.for_kinds(
            datastore,
            self.kinds,
            _HubFeed(self),
            poll_interval=poll_interval,
            retry_interval=retry_interval,
            max_retry_interval=max_retry_interval,
            name=name,
        )

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> SyncerHub:
        with self._lock:
            if self._started:
                raise HubError(f"{self.name}: already started")
            self._started = True
        self._syncer.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the Syncer; subscriptions still registered get nothing more."""
        with self._lock:
            self._stopped = True
            subs, self._subs = self._subs, []
        for s in subs:
            s._cancel_retry()
        self._syncer.stop(timeout)

    def alive(self) -> bool:
        return self._started and not self._stopped and self._syncer.alive()

    @property
    def status(self) -> SyncStatus | None:
        return self._status

    @property
    def sync_state(self) -> SyncState:
        """The hub's status and since when (see :class:`SyncState`); any thread."""
        with self._state_lock:
            return self._sync_state

    def wait_in_sync(self, timeout: float | None = None) -> bool:
        return self._syncer.wait_in_sync(timeout)

    def snapshot(self) -> dict[str, Resource]:
        """The hub's whole view (every kind); call from any thread."""
        return dict(self._view)

    @property
    def resyncs(self) -> int:
        return self._syncer.resyncs

    @property
    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return list(self._subs)

    # -- subscriptions -----------------------------------------------------------------
    def syncer_for(
        self,
        kinds: Iterable[str],
        callbacks: SyncerCallbacks,
        name: str = "subscriber",
        *,
        key_filter: KeyFilter | None = None,
    ) -> Subscription:
        """A (not yet started) subscription to ``kinds``; ``key_filter(key)`` narrows it."""
        wanted = tuple(sorted(set(kinds)))
        if not wanted:
            raise HubKindsError(f"{self.name}: subscription {name!r} names no kind")
        missing = [k for k in wanted if k not in self.kinds]
        if missing:
            raise HubKindsError(
                f"{self.name}: subscription {name!r} wants kinds the hub does not sync: "
                f"{', '.join(missing)} (hub kinds: {', '.join(self.kinds)})"
            )
        return Subscription(self, wanted, callbacks, name, key_filter)

    # -- the hub's own Syncer callbacks (on the Syncer thread) -------------------------
    def _on_status(self, status: SyncStatus) -> None:
        self._record_state(status)
        with self._lock:
            self._status = status
            for s in list(self._subs):
                s._deliver_status(status)

    def _on_updates(self, updates: list[SyncUpdate]) -> None:
        with self._lock:
            for u in updates:
                self._revision = max(self._revision, u.revision)
                if u.type is EventType.DELETED:
                    self._view.pop(u.key, None)
                else:
                    self._view[u.key] = u.obj
            for s in list(self._subs):
                s._deliver_live(updates)

    def _record_state(self, status: SyncStatus) -> None:
        now = self._monotonic()
        with self._state_lock:
            old = self._sync_state
            if status is old.status:
                return
            if status is SyncStatus.IN_SYNC:
                self._sync_state = SyncState(status, now, None, True)
            else:
                unsynced = old.unsynced_since if old.unsynced_since is not None else now
                self._sync_state = SyncState(status, now, unsynced, old.synced_once)

    # -- used by subscriptions (under the lock) ----------------------------------------
    def _attach(self, sub: Subscription) -> None:
        if self._stopped:
            raise HubError(f"{self.name}: stopped; cannot start subscription {sub.name!r}")
        self._subs.append(sub)

    def _detach(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)


class _HubFeed:
    def __init__(self, hub: SyncerHub) -> None:
        self.hub = hub

    def on_status(self, status: SyncStatus) -> None:
        self.hub._on_status(status)

    def on_updates(self, updates: list[SyncUpdate]) -> None:
        self.hub._on_updates(updates)


class Subscription:
    """One subscriber's Syncer-like feed from a :class:`SyncerHub` (see the module doc)."""

    def __init__(
        self,
        hub: SyncerHub,
        kinds: tuple[str, ...],
        callbacks: SyncerCallbacks,
        name: str,
        key_filter: KeyFilter | None,
    ) -> None:
        self.hub = hub
        self.kinds = kinds
        self.callbacks = callbacks
        self.name = name
        self.key_filter = key_filter
        self._prefixes = tuple(prefix_for(k) for k in kinds)
        self._acked: dict[str, Resource] = {}  # what the subscriber acknowledged
        self._status: SyncStatus | None = None  # the last status delivered
        self._started = self._stopped = False
        self._failed = False  # a callback raised: no live updates until the retry
        self._backoff = hub.retry_interval
        self._timer: threading.Timer | None = None
        self.redeliveries = 0  # for observability and tests

    def wants(self, key: str) -> bool:
        return key.startswith(self._prefixes) and (self.key_filter is None or self.key_filter(key))

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Subscription:
        """Register with the hub and replay its current view of our kinds, then its status
        (on this thread, under the hub lock); live updates follow on the hub's thread."""
        with self.hub._lock:
            if self._started:
                raise HubError(f"subscription {self.name!r}: already started")
            self.hub._attach(self)
            self._started = True
            self._catch_up()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """No callback after this returns (waits up to ``timeout`` for one in progress)."""
        self._stopped = True  # checked before every delivery, even without the lock
        self._cancel_retry()
        if self.hub._lock.acquire(timeout=timeout):
            try:
                self.hub._detach(self)
            finally:
                self.hub._lock.release()
        else:
            log.warning("%s/%s: stop: a delivery is still running", self.hub.name, self.name)

    def alive(self) -> bool:
        return self._started and not self._stopped and self.hub.alive()

    @property
    def status(self) -> SyncStatus | None:
        return self._status

    def snapshot(self) -> dict[str, Resource]:
        """A shallow copy of what this subscriber acknowledged; call from any thread."""
        return dict(self._acked)

    # -- delivery (always under the hub lock) ------------------------------------------
    def _catch_up(self) -> None:
        """Deliver the difference between the hub's view and what we acknowledged, then the
        hub's status (the replay of a new subscription, the re-delivery after a failure)."""
        self._failed = False
        view = {k: o for k, o in self.hub._view.items() if self.wants(k)}
        updates: list[SyncUpdate] = []
        for key in sorted(view):
            obj, old = view[key], self._acked.get(key)
            if old != obj:
                typ = EventType.CREATED if old is None else EventType.UPDATED
                updates.append(SyncUpdate(typ, key, obj, resource_revision(obj)))
        for key in sorted(set(self._acked) - set(view)):
            updates.append(SyncUpdate(EventType.DELETED, key, self._acked[key], self.hub._revision))
        if updates and not self._emit(updates):
            return
        if self.hub._status is not None:
            self._deliver_status(self.hub._status)

    def _deliver_live(self, updates: list[SyncUpdate]) -> None:
        if self._failed:
            return
        mine = [u for u in updates if self.wants(u.key)]
        if mine:
            self._emit(mine)

    def _deliver_status(self, status: SyncStatus) -> None:
        if self._failed or self._stopped or status is self._status:
            return
        self._status = status  # like Syncer: recorded first, a raise does not repeat it
        try:
            self.callbacks.on_status(status)
        except Exception:
            self._fail("on_status")

    def _emit(self, updates: list[SyncUpdate]) -> bool:
        """Deliver, then record (as :meth:`Syncer._emit`); False if the callback raised."""
        if self._stopped:
            return False
        try:
            self.callbacks.on_updates(updates)
        except Exception:
            self._fail("on_updates")
            return False
        for u in updates:
            if u.type is EventType.DELETED:
                self._acked.pop(u.key, None)
            else:
                self._acked[u.key] = u.obj
        self._backoff = self.hub.retry_interval
        return True

    def _fail(self, what: str) -> None:
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self.hub.max_retry_interval)
        log.exception(
            "%s/%s: %s raised; re-delivering in %.1fs", self.hub.name, self.name, what, delay
        )
        self._failed = True
        self._cancel_retry()
        t = threading.Timer(delay, self._retry)
        t.name = f"hub-retry-{self.name}"  # transient; not counted as a syncer
        t.daemon = True
        self._timer = t
        t.start()

    def _retry(self) -> None:
        with self.hub._lock:
            if self._stopped or not self._failed or self not in self.hub._subs:
                return
            self.redeliveries += 1
            self._catch_up()

    def _cancel_retry(self) -> None:
        t, self._timer = self._timer, None
        if t is not None:
            t.cancel()


def kinds_union(*groups: Iterable[str]) -> tuple[str, ...]:
    """The sorted union of several components' kinds (what a node builds its hub with)."""
    out: set[str] = set()
    for g in groups:
        out.update(g)
    return tuple(sorted(out))
