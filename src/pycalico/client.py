"""Typed resource operations over a :class:`~pycalico.datastore.Datastore`.

This is the layer calicoctl (and the lab) write through, like libcalico-go's clientv3: it
takes validated :class:`~pycalico.api.Resource` models, fills the namespace default, keeps
the store-owned metadata (uid, creationTimestamp) across updates and maps every kind to its
storage kind. Invariants: nothing reaches the store that did not pass
:func:`pycalico.api.decode`; a (Staged)(Global)NetworkPolicy is only written (create, apply,
replace, modify) when its tier exists (the ``default``, ``kube-admin`` and ``kube-baseline``
tiers always do), as libcalico-go's policy clients check; every update is compare-and-swap
on resourceVersion (apply and patch retry on a lost race; replace with a stale
resourceVersion fails with Conflict).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pycalico.api import KINDS, V3, KindInfo, Resource, decode, encode, lookup
from pycalico.datastore import AlreadyExists, Conflict, Datastore, NotFound, storage_kind
from pycalico.datastore.base import ROOT
from pycalico.errors import CalicoError

DEFAULT_NAMESPACE = "default"

#: Kinds the policy model reads (plus v1 Namespace/ServiceAccount, k8s NetworkPolicy and
#: ClusterNetworkPolicy):
#: what ``calicoctl policy explain|matrix`` and the console's insight load.
POLICY_KINDS = (
    "WorkloadEndpoint",
    "HostEndpoint",
    "Profile",
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "StagedNetworkPolicy",
    "StagedGlobalNetworkPolicy",
    "StagedKubernetesNetworkPolicy",
    "ClusterNetworkPolicy",
    "Tier",
    "NetworkSet",
    "GlobalNetworkSet",
    "Namespace",
    "ServiceAccount",
)
_RETRIES = 10

Obj = dict[str, Any]

# Fields that may not change once a resource exists (Calico's CEL `self == oldSelf` rules).
IMMUTABLE: dict[str, tuple[tuple[str, ...], ...]] = {
    "IPPool": (("spec", "cidr"), ("spec", "blockSize")),
}


class ImmutableField(CalicoError, ValueError):
    """An update tried to change a field that is immutable."""


class TierNotFound(CalicoError, LookupError):
    """A policy names a tier that does not exist (Calico: ``resource does not exist: Tier(x)``)."""

    def __init__(self, tier: str) -> None:
        self.tier = tier
        super().__init__(f"resource does not exist: Tier({tier})")


TIERED_KINDS = frozenset(
    {"NetworkPolicy", "GlobalNetworkPolicy", "StagedNetworkPolicy", "StagedGlobalNetworkPolicy"}
)
BUILTIN_TIERS = frozenset({"default", "kube-admin", "kube-baseline"})


def _dig(obj: Obj, path: tuple[str, ...]) -> Any:
    cur: Any = obj
    for p in path:
        cur = cur.get(p) if isinstance(cur, dict) else None
    return cur


def check_immutable(kind: str, old: Obj, new: Obj) -> None:
    for path in IMMUTABLE.get(kind, ()):
        if _dig(old, path) != _dig(new, path):
            raise ImmutableField(
                f"{kind} {new.get('metadata', {}).get('name', '')}: {'.'.join(path)}: "
                f"field is immutable (was {_dig(old, path)!r})"
            )


def kind_info_of(res: Resource) -> KindInfo:
    info = lookup(res.apiVersion, res.kind)
    if info is None:  # decode() only returns registered kinds
        raise ValueError(f"unregistered kind {res.apiVersion}/{res.kind}")
    return info


def store_kind(info: KindInfo) -> str:
    return storage_kind(info.api_version, info.kind)


def describe(info: KindInfo, name: str, namespace: str = "") -> str:
    """Calico's way of naming a resource in messages: ``IPPool(pool1)``, ``NetworkPolicy(ns/p)``."""
    return f"{info.kind}({namespace + '/' if namespace else ''}{name})"


def policy_resources(ds: Datastore) -> list[Obj]:
    """Every stored resource of a kind in :data:`POLICY_KINDS`, in key order."""
    items = ds.list_prefix(ROOT).items
    return [dict(r) for r in items if r.get("kind") in POLICY_KINDS]


class ResourceClient:
    """Create/apply/replace/delete/get/list/patch of v3 resources on one datastore."""

    def __init__(self, ds: Datastore) -> None:
        self.ds = ds

    # --- helpers ---------------------------------------------------------------------------

    def _to_obj(self, res: Resource, namespace: str | None = None) -> tuple[KindInfo, Obj]:
        info = kind_info_of(res)
        obj = encode(res)
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            meta["namespace"] = meta.get("namespace") or namespace or DEFAULT_NAMESPACE
        else:
            meta.pop("namespace", None)
        return info, obj

    @staticmethod
    def _ns(info: KindInfo, obj: Obj) -> str:
        return str(obj["metadata"].get("namespace") or "") if info.namespaced else ""

    @staticmethod
    def _carry_store_meta(obj: Obj, existing: Obj) -> None:
        meta, old = obj["metadata"], existing.get("metadata", {})
        for k in ("uid", "creationTimestamp"):
            if old.get(k):
                meta[k] = old[k]

    def _check_tier(self, info: KindInfo, obj: Obj) -> None:
        """Raise :class:`TierNotFound` when a tiered policy's tier is not stored."""
        if info.api_version != V3 or info.kind not in TIERED_KINDS:
            return
        spec = obj.get("spec")
        tier = (spec.get("tier") if isinstance(spec, dict) else None) or "default"
        if tier in BUILTIN_TIERS:
            return
        try:
            self.ds.get(store_kind(KINDS["Tier"]), str(tier), "")
        except NotFound:
            raise TierNotFound(str(tier)) from None

    # --- operations --------------------------------------------------------------------------

    def get(self, info: KindInfo, name: str, namespace: str = "") -> Obj:
        ns = (namespace or DEFAULT_NAMESPACE) if info.namespaced else ""
        return self.ds.get(store_kind(info), name, ns)

    def list(self, info: KindInfo, namespace: str | None = None) -> list[Obj]:
        ns = namespace if info.namespaced else None
        items = self.ds.list(store_kind(info), ns).items
        # Another group's kind of the same bare name is kept apart by storage_kind already;
        # still filter on apiVersion so a list never mixes groups.
        return [o for o in items if o.get("apiVersion", info.api_version) == info.api_version]

    def create(self, res: Resource, namespace: str | None = None) -> Obj:
        info, obj = self._to_obj(res, namespace)
        obj["metadata"].pop("resourceVersion", None)
        self._check_tier(info, obj)
        return self.ds.create(obj)

    def apply(self, res: Resource, namespace: str | None = None) -> Obj:
        """Create, or update the existing resource (CAS on the given or current revision)."""
        info, obj = self._to_obj(res, namespace)
        self._check_tier(info, obj)
        given_rv = obj["metadata"].get("resourceVersion")
        for _ in range(_RETRIES):
            try:
                existing = self.ds.get(
                    store_kind(info), obj["metadata"]["name"], self._ns(info, obj)
                )
            except NotFound:
                try:
                    fresh = dict(obj, metadata=dict(obj["metadata"]))
                    fresh["metadata"].pop("resourceVersion", None)
                    return self.ds.create(fresh)
                except AlreadyExists:
                    continue
            check_immutable(info.kind, existing, obj)
            self._carry_store_meta(obj, existing)
            obj["metadata"]["resourceVersion"] = given_rv or existing["metadata"]["resourceVersion"]
            try:
                return self.ds.update(obj)
            except (Conflict, NotFound):
                if given_rv:
                    raise
        raise Conflict(f"{describe(info, obj['metadata']['name'])}: too many concurrent updates")

    def replace(self, res: Resource, namespace: str | None = None) -> Obj:
        """Update an existing resource; a given resourceVersion must be current."""
        info, obj = self._to_obj(res, namespace)
        existing = self.ds.get(store_kind(info), obj["metadata"]["name"], self._ns(info, obj))
        self._check_tier(info, obj)
        check_immutable(info.kind, existing, obj)
        self._carry_store_meta(obj, existing)
        if not obj["metadata"].get("resourceVersion"):
            obj["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        return self.ds.update(obj)

    def delete(
        self, info: KindInfo, name: str, namespace: str = "", revision: str | None = None
    ) -> Obj:
        ns = (namespace or DEFAULT_NAMESPACE) if info.namespaced else ""
        return self.ds.delete(store_kind(info), name, ns, revision=revision)

    def modify(
        self, info: KindInfo, name: str, namespace: str, change: Callable[[Obj], Obj]
    ) -> Obj:
        """Read-modify-write: ``change`` maps the stored dict to the new one, which is validated
        (decode) and written with CAS on the revision read; retried on a lost race."""
        for _ in range(_RETRIES):
            current = self.get(info, name, namespace)
            rv = current["metadata"]["resourceVersion"]
            new = change(current)
            res = decode(new)
            _, obj = self._to_obj(res, namespace)
            check_immutable(info.kind, current, obj)
            self._check_tier(info, obj)
            self._carry_store_meta(obj, current)
            obj["metadata"]["resourceVersion"] = rv
            try:
                return self.ds.update(obj)
            except Conflict:
                continue
        raise Conflict(f"{describe(info, name, namespace)}: too many concurrent updates")
