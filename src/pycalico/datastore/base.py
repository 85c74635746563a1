"""The Datastore interface: the one source of truth every pycalico component reads and writes.

Resources are stored as plain v3 API objects (``dict``: apiVersion, kind, metadata, spec, ...).
The store is kind-agnostic: it never validates specs (that happens at the edges, in
``pycalico.api``), but it owns ``metadata.resourceVersion``, ``metadata.uid`` and
``metadata.creationTimestamp``.

Invariants every backend keeps:
- Every write is compare-and-swap on the resource's revision: ``update`` fails with
  :class:`Conflict` unless ``metadata.resourceVersion`` equals the stored one (an update
  without a resourceVersion raises :class:`InvalidObject`; of a missing key,
  :class:`NotFound`); ``delete`` with ``revision`` does the same. ``create`` ignores any
  resourceVersion/uid/creationTimestamp the caller set and stamps fresh ones; ``update``
  keeps the stored uid and creationTimestamp.
- Returned objects are copies; mutating them never changes stored state. A DELETED watch
  event carries the last stored value (with its last resourceVersion).
- Revisions are store-wide, strictly increasing integers (as strings in resourceVersion).
  A ``list`` returns the revision it is consistent at; ``watch(prefix, from_revision)``
  yields every change with revision > from_revision, in revision order, and raises
  :class:`Compacted` when that history is gone.
- Keys: ``key_for(kind, name, namespace)`` gives the etcd-style path
  ``/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>``; prefixes of
  those paths select what ``list_prefix``/``watch`` see.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pycalico.errors import CalicoError

Resource = dict[str, Any]

ROOT = "/calico/resources/v3/projectcalico.org/"


class DatastoreError(CalicoError):
    """Base of datastore errors."""


class NotFound(DatastoreError):
    """The resource does not exist."""


class AlreadyExists(DatastoreError):
    """create() of a resource that exists."""


class Conflict(DatastoreError):
    """CAS failed: the stored revision differs from the one given."""


class Compacted(DatastoreError):
    """watch() from a revision whose history has been compacted away; relist."""


class Unavailable(DatastoreError):
    """The datastore cannot be reached or used (down, corrupt, unwritable)."""


class InvalidObject(DatastoreError, ValueError):
    """The object handed to the store is malformed: no kind / metadata.name, or an
    ``update`` without ``metadata.resourceVersion``. Deliberately *not* a :class:`Conflict`:
    a CAS retry loop must not turn a missing revision into a blind overwrite."""


def plural(kind: str) -> str:
    """The lower-case plural used in keys (``IPPool`` -> ``ippools``)."""
    k = kind.lower()
    if k.endswith("y"):
        return k[:-1] + "ies"
    if k.endswith("s"):
        return k + "es"
    return k + "s"


# Kinds from other API groups whose bare kind name clashes with a projectcalico.org/v3 kind
# are stored under a distinct storage kind (their objects keep apiVersion/kind as written).
_STORAGE_KINDS: dict[tuple[str, str], str] = {
    ("networking.k8s.io/v1", "NetworkPolicy"): "KubernetesNetworkPolicy",
}


def storage_kind(api_version: str | None, kind: str) -> str:
    """The kind used in keys for an object of ``api_version``/``kind``."""
    return _STORAGE_KINDS.get((api_version or "", kind), kind)


def key_for(kind: str, name: str, namespace: str = "") -> str:
    """The storage key of one resource."""
    if namespace:
        return f"{ROOT}{plural(kind)}/{namespace}/{name}"
    return f"{ROOT}{plural(kind)}/{name}"


def prefix_for(kind: str, namespace: str = "") -> str:
    """The key prefix of all resources of ``kind`` (in ``namespace`` when given)."""
    if namespace:
        return f"{ROOT}{plural(kind)}/{namespace}/"
    return f"{ROOT}{plural(kind)}/"


class EventType(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True)
class WatchEvent:
    """One change. ``obj`` is the new value (for DELETED: the last value before deletion).

    ``more``: the datastore already has the next event of the same read (one write
    transaction is never cut between two events with ``more`` False), so a consumer that
    delivers events up to one with ``more`` False never delivers half a multi-object write.
    """

    type: EventType
    key: str
    revision: int
    obj: Resource
    more: bool = False


@dataclass(frozen=True)
class ListResult:
    items: list[Resource] = field(default_factory=list)
    revision: int = 0


class Datastore(Protocol):
    """What every backend (memory, sqlite, etcdv3) provides."""

    def get(self, kind: str, name: str, namespace: str = "") -> Resource: ...

    def list(self, kind: str, namespace: str | None = None) -> ListResult:
        """All resources of ``kind`` (in one namespace, or all when ``namespace`` is None)."""
        ...

    def list_prefix(self, prefix: str) -> ListResult: ...

    def create(self, obj: Resource, keep_identity: bool = False) -> Resource:
        """Store a new resource; returns it with metadata filled in.

        ``keep_identity``: keep the uid/creationTimestamp ``obj`` carries (migration import).
        """
        ...

    def update(self, obj: Resource) -> Resource:
        """CAS on ``obj['metadata']['resourceVersion']`` (required, else InvalidObject)."""
        ...

    def delete(
        self, kind: str, name: str, namespace: str = "", revision: str | None = None
    ) -> Resource: ...

    def watch(
        self, prefix: str, from_revision: int, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        """Events with revision > from_revision under ``prefix``, in order.

        Blocks waiting for new events; returns when ``timeout`` seconds pass with no event
        (None = forever) or when the store is closed.
        """
        ...

    def close(self) -> None: ...
