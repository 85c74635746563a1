"""Helpers every backend shares: key derivation, metadata stamping, deep copies, JSON codec.

Invariants: objects handed to callers are always fresh copies (callers never share mutable
state with a store); the store alone sets ``resourceVersion``, ``uid`` and
``creationTimestamp``.
"""

from __future__ import annotations

import copy
import json
import os
from datetime import UTC, datetime
from typing import Any

from pycalico.datastore.base import InvalidObject, Resource, key_for, storage_kind


def ident(obj: Resource) -> tuple[str, str, str]:
    """``(kind, name, namespace)`` of ``obj``; :class:`InvalidObject` when missing."""
    if not isinstance(obj, dict):
        raise InvalidObject(f"resource must be a mapping, got {type(obj).__name__}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InvalidObject("field kind: required (non-empty string)")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise InvalidObject("field metadata: required (mapping)")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidObject("field metadata.name: required (non-empty string)")
    ns = meta.get("namespace") or ""
    if not isinstance(ns, str):
        raise InvalidObject("field metadata.namespace: must be a string")
    for part, label in ((name, "metadata.name"), (ns, "metadata.namespace")):
        if "/" in part:
            raise InvalidObject(f"field {label}: must not contain '/'")
    return storage_kind(obj.get("apiVersion"), kind), name, ns


def obj_key(obj: Resource) -> str:
    kind, name, ns = ident(obj)
    return key_for(kind, name, ns)


def required_revision(obj: Resource) -> int:
    """The CAS revision an update carries; :class:`InvalidObject` when absent/malformed."""
    rv = obj.get("metadata", {}).get("resourceVersion")
    if rv is None or rv == "":
        raise InvalidObject(
            "field metadata.resourceVersion: required for update (get the resource first)"
        )
    return parse_revision(rv)


def parse_revision(rv: Any) -> int:
    try:
        value = int(str(rv))
    except ValueError:
        raise InvalidObject(
            f"field metadata.resourceVersion: {rv!r} is not a revision number"
        ) from None
    if value < 0:
        raise InvalidObject(f"field metadata.resourceVersion: {rv!r} is negative")
    return value


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    """A random (version 4) UUID string, as ``str(uuid.uuid4())`` gives, without importing
    :mod:`uuid` (it pulls in :mod:`platform`: ~10 ms on every exec'd CNI plugin call)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def stamp_new(obj: Resource, keep_identity: bool = False) -> Resource:
    """A copy of ``obj`` with fresh uid and creationTimestamp (revision set by the caller).

    ``keep_identity`` keeps a uid/creationTimestamp the object already carries (used only when
    restoring a migrated datastore)."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    if not (keep_identity and meta.get("uid")):
        meta["uid"] = new_uid()
    if not (keep_identity and meta.get("creationTimestamp")):
        meta["creationTimestamp"] = now_rfc3339()
    meta.pop("resourceVersion", None)
    return out


def stamp_update(obj: Resource, old: Resource) -> Resource:
    """A copy of ``obj`` keeping the stored uid and creationTimestamp of ``old``."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    old_meta = old.get("metadata", {})
    for field in ("uid", "creationTimestamp"):
        if field in old_meta:
            meta[field] = old_meta[field]
        else:
            meta.pop(field, None)
    return out


def with_revision(obj: Resource, revision: int) -> Resource:
    """``obj`` (mutated in place and returned) with ``resourceVersion`` = ``revision``."""
    obj["metadata"]["resourceVersion"] = str(revision)
    return obj


def encode(obj: Resource) -> str:
    """JSON without resourceVersion (backends derive it from their own revision)."""
    meta = obj["metadata"]
    if "resourceVersion" in meta:
        obj = dict(obj)
        obj["metadata"] = {k: v for k, v in meta.items() if k != "resourceVersion"}
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def decode(text: str | bytes, revision: int) -> Resource:
    obj: Resource = json.loads(text)
    return with_revision(obj, revision)


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    if not prefix:
        return "\U0010ffff"
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
