"""Leader election over the datastore: one named lease, held by at most one node at a time.

Owns: the ``Lease`` resource (``{"apiVersion": "pycalico.org/v1", "kind": "Lease", "metadata":
{"name": ...}, "spec": {"holder", "renewTime", "leaseDurationSeconds", "acquireTime",
"leaseTransitions"}}``, cluster-scoped, times in epoch seconds), the pure decision
:func:`decide` (what a node should do given the stored lease and the time) and
:class:`LeaderLease`, which carries the decision out with compare-and-swap writes only (so it
works unchanged on every backend: memory, sqlite, etcd).

Invariants:
- Every write is a ``create`` (fails with AlreadyExists if someone else created it first) or
  a CAS ``update`` on the resourceVersion just read; losing either race means *not leader*.
  Hence two nodes can never both succeed in writing the same lease revision.
- A lease is free when missing, malformed, released (empty holder) or expired
  (``now > renewTime + leaseDurationSeconds``, judged with the lease's own duration); only
  its holder renews it before then.
- The holder counts itself leader only until ``duration`` seconds after it *started* its last
  successful write (measured on its own clock), so it steps down no later than any other
  node may take over, given clocks that agree to well within the lease duration (NTP).
  Leadership is an efficiency measure: what the leader does (IPAM leak repair) is itself
  guarded by sequence-number CAS, so a brief overlap after gross clock skew is harmless.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pycalico.datastore.base import (
    AlreadyExists,
    Conflict,
    Datastore,
    DatastoreError,
    NotFound,
    Resource,
)

log = logging.getLogger(__name__)

LEASE_KIND = "Lease"
LEASE_API_VERSION = "pycalico.org/v1"
DEFAULT_LEASE_DURATION = 60.0


class Action(StrEnum):
    CREATE = "create"  # no lease stored: create one naming me
    RENEW = "renew"  # I hold a live lease: CAS-update its renewTime
    TAKEOVER = "takeover"  # the stored lease is free (expired/released/bad): CAS it to me
    WAIT = "wait"  # someone else holds a live lease


@dataclass(frozen=True)
class LeaseView:
    """The parts of a stored lease the decision needs (None fields: malformed)."""

    holder: str
    renew_time: float | None
    duration: float | None
    transitions: int

    def expires_at(self) -> float | None:
        if self.renew_time is None or self.duration is None:
            return None
        return self.renew_time + self.duration


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        f = float(value)
    except ValueError:
        return None
    return f if math.isfinite(f) and f >= 0 else None


def parse_lease(lease: Mapping[str, Any]) -> LeaseView:
    spec = lease.get("spec")
    if not isinstance(spec, Mapping):
        spec = {}
    holder = spec.get("holder")
    trans = _number(spec.get("leaseTransitions"))
    return LeaseView(
        holder=holder if isinstance(holder, str) else "",
        renew_time=_number(spec.get("renewTime")),
        duration=_number(spec.get("leaseDurationSeconds")),
        transitions=int(trans) if trans is not None else 0,
    )


def decide(lease: Mapping[str, Any] | None, now: float, me: str) -> Action:
    """What node ``me`` should do at wall-clock time ``now`` given the stored lease."""
    if lease is None:
        return Action.CREATE
    view = parse_lease(lease)
    expires = view.expires_at()
    if not view.holder or expires is None or now > expires:
        return Action.TAKEOVER
    if view.holder == me:
        return Action.RENEW
    return Action.WAIT


def lease_object(
    name: str,
    holder: str,
    now: float,
    duration: float,
    acquire_time: float,
    transitions: int,
) -> Resource:
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": LEASE_KIND,
        "metadata": {"name": name},
        "spec": {
            "holder": holder,
            "renewTime": now,
            "leaseDurationSeconds": duration,
            "acquireTime": acquire_time,
            "leaseTransitions": transitions,
        },
    }


class LeaderLease:
    """One node's handle on the lease ``name``; call :meth:`try_acquire` every
    ``duration / 3`` seconds or so and act as leader only while it returns True."""

    def __init__(
        self,
        ds: Datastore,
        name: str,
        holder: str,
        duration: float = DEFAULT_LEASE_DURATION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not holder:
            raise ValueError("lease holder: must not be empty")
        if duration <= 0:
            raise ValueError(f"lease duration: must be positive, got {duration}")
        self.ds = ds
        self.name = name
        self.holder = holder
        self.duration = float(duration)
        self.clock = clock
        self._valid_until = 0.0  # my own clock: leader until then
        self._revision: str | None = None  # resourceVersion of my last successful write

    @property
    def valid_until(self) -> float:
        """On ``clock``: the end of my leadership as of my last successful write (0: none)."""
        return self._valid_until

    def is_leader(self) -> bool:
        return self.clock() < self._valid_until

    def _lost(self, why: str) -> bool:
        if self._valid_until:
            log.info("lease %s: %s lost leadership (%s)", self.name, self.holder, why)
        self._valid_until = 0.0
        self._revision = None
        return False

    def try_acquire(self) -> bool:
        """One attempt to acquire or renew; True iff this node holds the lease now.

        Datastore errors other than lost races propagate (leadership is then dropped).
        """
        start = self.clock()
        try:
            return self._attempt(start)
        except DatastoreError:
            self._lost("datastore error")
            raise

    def _attempt(self, start: float) -> bool:
        try:
            cur: Resource | None = self.ds.get(LEASE_KIND, self.name)
        except NotFound:
            cur = None
        action = decide(cur, start, self.holder)
        if action is Action.WAIT:
            assert cur is not None
            if self._valid_until:
                self._lost(f"held by {parse_lease(cur).holder}")
            return False
        if action is Action.CREATE:
            obj = lease_object(self.name, self.holder, start, self.duration, start, 0)
            try:
                stored = self.ds.create(obj)
            except AlreadyExists:
                return self._lost("another node created the lease first")
        else:
            assert cur is not None
            view = parse_lease(cur)
            if action is Action.RENEW:
                spec = dict(cur.get("spec") or {})
                spec.update(
                    renewTime=start,
                    leaseDurationSeconds=self.duration,
                    acquireTime=_number(spec.get("acquireTime")) or start,
                    leaseTransitions=view.transitions,
                )
                obj = dict(cur, spec=spec)
            else:
                trans = view.transitions + (1 if view.holder != self.holder else 0)
                obj = lease_object(self.name, self.holder, start, self.duration, start, trans)
                obj["metadata"] = dict(cur["metadata"])
            try:
                stored = self.ds.update(obj)
            except (Conflict, NotFound):
                return self._lost("lost the compare-and-swap race")
        if not self._valid_until:
            how = "took over" if action is Action.TAKEOVER else "acquired"
            log.info("lease %s: %s %s leadership", self.name, self.holder, how)
        self._revision = str(stored["metadata"]["resourceVersion"])
        self._valid_until = start + self.duration
        return True

    def release(self) -> None:
        """Give the lease up (CAS on my last write) so another node can take over at once.

        Best effort: a lease changed meanwhile, or an unreachable datastore, is left alone
        (it then expires by itself).
        """
        rev, self._revision = self._revision, None
        self._valid_until = 0.0
        if rev is None:
            return
        try:
            cur = self.ds.get(LEASE_KIND, self.name)
            if str(cur["metadata"].get("resourceVersion")) != rev:
                return
            spec = dict(cur.get("spec") or {})
            spec.update(holder="", renewTime=0.0)
            self.ds.update(dict(cur, spec=spec))
            log.info("lease %s: %s released leadership", self.name, self.holder)
        except DatastoreError as e:
            log.info("lease %s: release skipped (%s)", self.name, e)
