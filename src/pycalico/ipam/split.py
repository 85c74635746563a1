"""Splitting an IP pool into 2^k equal pools (``calicoctl ipam split``) and the datastore lock
that guards it (``calicoctl datastore migrate lock | unlock``).

Owns: :func:`split_cidr` (pure arithmetic), :func:`plan_split` (every precondition, no
writes), :func:`split_pool` (the writes) and :func:`set_datastore_ready` (the lock: Calico's
ClusterInformation ``datastoreReady``; while it is false the CNI plugin refuses ADD and DEL,
so no IPAM data changes during the split).

Invariants (Calico's rules, plus pycalico's "nothing half-written"):
- A split needs the datastore locked, a pool named by ``--name`` or ``--cidr``, a number of
  parts that is a power of two >= 2, and child pools no smaller than the pool's blockSize
  (so every existing IPAM block lies inside exactly one child and keeps its allocations).
- Children are named ``split-<name>-<i>`` (the name cut to 245 characters when the result
  would pass 253), copy the pool's spec, labels and annotations, and are enabled; the pool
  itself is disabled first and deleted last. Every child is validated before the first
  write; a failed write undoes the earlier ones.
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass
from typing import Any

from pycalico.api import ValidationFailed, decode
from pycalico.datastore.base import AlreadyExists, Conflict, Datastore, NotFound
from pycalico.ipam.errors import IPAMError

KIND_POOL = "IPPool"
KIND_CLUSTER_INFO = "ClusterInformation"
MAX_NAME = 253


class SplitError(IPAMError, ValueError):
    """A pool split that cannot be done (the message names the reason)."""


def split_cidr(cidr: str, parts: int) -> list[str]:
    """``cidr`` (masked first) as ``parts`` equal CIDRs, in address order."""
    if parts < 2 or parts & (parts - 1):
        raise SplitError(f"number to split CIDR into is not a valid power of 2: {parts}")
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise SplitError(f"error reading CIDR {cidr} before attempting to split it") from None
    extra = parts.bit_length() - 1
    if net.prefixlen + extra > net.max_prefixlen:
        raise SplitError(f"the CIDR {cidr} is not large enough to be split into {parts} parts")
    return [str(n) for n in net.subnets(prefixlen_diff=extra)]


def child_name(name: str, index: int) -> str:
    out = f"split-{name}-{index}"
    return out if len(out) <= MAX_NAME else f"split-{name[:245]}-{index}"


def is_locked(ds: Datastore) -> bool:
    try:
        info = ds.get(KIND_CLUSTER_INFO, "default")
    except NotFound:
        return False
    return (info.get("spec") or {}).get("datastoreReady") is False


def set_datastore_ready(ds: Datastore, ready: bool) -> None:
    """Unlock (``ready``) or lock the datastore: ClusterInformation ``default``'s
    ``datastoreReady`` (created if missing, as Calico's lock initialises it)."""
    for _ in range(10):
        try:
            info = ds.get(KIND_CLUSTER_INFO, "default")
        except NotFound:
            doc = {
                "apiVersion": "projectcalico.org/v3",
                "kind": KIND_CLUSTER_INFO,
                "metadata": {"name": "default"},
                "spec": {"datastoreReady": ready},
            }
            try:
                ds.create(doc)
                return
            except AlreadyExists:
                continue
        info.setdefault("spec", {})["datastoreReady"] = ready
        try:
            ds.update(info)
            return
        except Conflict:  # someone else wrote it meanwhile: read again
            continue
    raise SplitError("ClusterInformation default: too many concurrent updates")


@dataclass(frozen=True)
class SplitPlan:
    pool: dict[str, Any]
    children: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return str(self.pool["metadata"]["name"])


def _find_pool(ds: Datastore, cidr: str | None, name: str | None) -> dict[str, Any]:
    if name:
        try:
            return ds.get(KIND_POOL, name)
        except NotFound:
            raise SplitError(f"unable to find IP pool with name {name}") from None
    assert cidr
    try:
        want = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise SplitError(f"--cidr: {cidr!r} is not a CIDR") from None
    for p in ds.list(KIND_POOL).items:
        try:
            if ipaddress.ip_network(str(p["spec"]["cidr"]), strict=False) == want:
                return p
        except (KeyError, ValueError):
            continue
    raise SplitError(f"unable to find IP pool covering the specified CIDR {cidr}")


def plan_split(ds: Datastore, parts: int, cidr: str | None, name: str | None) -> SplitPlan:
    """Check every precondition and build the children; writes nothing."""
    if not cidr and not name:
        raise SplitError(
            "no name or CIDR provided. Provide a name or CIDR to denote the IP pool to split"
        )
    if not is_locked(ds):
        raise SplitError(
            "datastore is not locked. Run the `calicoctl datastore migrate lock` command "
            "in order to split the IP pools"
        )
    pool = _find_pool(ds, cidr, name)
    spec = pool.get("spec") or {}
    pname = str(pool["metadata"]["name"])
    cidrs = split_cidr(str(spec.get("cidr")), parts)
    net = ipaddress.ip_network(cidrs[0])
    block = int(spec.get("blockSize") or (26 if net.version == 4 else 122))
    if net.prefixlen > block:
        raise SplitError(
            f"IP pool {pname}: {parts} parts would be /{net.prefixlen} pools, smaller than "
            f"the pool's blockSize {block}"
        )
    children = []
    for i, c in enumerate(cidrs):
        meta: dict[str, Any] = {"name": child_name(pname, i)}
        for k in ("labels", "annotations"):
            if pool["metadata"].get(k):
                meta[k] = dict(pool["metadata"][k])
        child_spec = copy.deepcopy(spec)
        child_spec.update(cidr=c, disabled=False)
        doc = {
            "apiVersion": pool.get("apiVersion", "projectcalico.org/v3"),
            "kind": KIND_POOL,
            "metadata": meta,
            "spec": child_spec,
        }
        try:
            decode(doc)
        except ValidationFailed as e:
            raise SplitError(f"split pool {meta['name']} ({c}) would be invalid: {e}") from None
        children.append(doc)
    taken = {p["metadata"]["name"] for p in ds.list(KIND_POOL).items}
    clash = [c["metadata"]["name"] for c in children if c["metadata"]["name"] in taken]
    if clash:
        raise SplitError(f"IP pool {clash[0]} already exists")
    return SplitPlan(pool, children)


def split_pool(ds: Datastore, plan: SplitPlan) -> list[dict[str, Any]]:
    """Disable the pool, create the children, delete the pool; undo on failure."""
    old = copy.deepcopy(plan.pool)
    disabled = copy.deepcopy(plan.pool)
    disabled.setdefault("spec", {})["disabled"] = True
    ds.update(disabled)  # CAS on the revision planned: a pool changed meanwhile fails here
    created: list[dict[str, Any]] = []
    try:
        for child in plan.children:
            created.append(ds.create(copy.deepcopy(child)))
        ds.delete(KIND_POOL, plan.name)
    except Exception:
        for c in created:
            try:
                ds.delete(KIND_POOL, c["metadata"]["name"])
            except NotFound:
                pass
        cur = ds.get(KIND_POOL, plan.name)
        cur["spec"]["disabled"] = bool((old.get("spec") or {}).get("disabled", False))
        ds.update(cur)
        raise
    return created
