"""``calico-ipam``: IPAM-only CNI plugin over :mod:`pycalico.ipam` (also used in-process by
``calico`` when ``ipam.type`` is ``calico-ipam``).

Handle per attachment: ``<network name>.<CNI_CONTAINERID>`` (Calico's
``k8s-pod-network.<id>``); attributes ``node``, ``timestamp`` (+ ``namespace``, ``pod`` for
k8s workloads). ADD is idempotent per handle: if the handle already holds addresses they are
returned instead of allocating more (a runtime retrying ADD never leaks). Results carry
``/32`` and ``/128`` addresses without ``interface`` (an abbreviated IPAM result).
"""

from __future__ import annotations

import json
import time
from typing import Any

from pycalico.cni.context import Invocation
from pycalico.cni.errors import (
    DATASTORE_FAILED,
    IPAM_FAILED,
    NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    CniError,
)
from pycalico.cni.types import IpamConf
from pycalico.cni.workload import handle_id

POOLS_ANNOTATION = {4: "cni.projectcalico.org/ipv4pools", 6: "cni.projectcalico.org/ipv6pools"}


def ipam_errors(e: Exception, what: str) -> CniError:
    """Map IPAM/datastore exceptions to CNI errors (transient ones to code 11)."""
    if isinstance(e, CniError):
        return e
    name = type(e).__name__
    if name in ("Conflict", "TooManyRetries", "Unavailable", "BlockClaimConflict"):
        return CniError(TRY_AGAIN_LATER, f"{what}: try again later", f"{name}: {e}")
    if name in ("NoAddressesAvailable", "NotInPool", "IPAMError", "InvalidIPAMConfig"):
        return CniError(IPAM_FAILED, f"{what} failed", f"{name}: {e}")
    return CniError(DATASTORE_FAILED, f"{what} failed", f"{name}: {e}")


def _attrs(inv: Invocation, node: str) -> dict[str, str]:
    a = {"node": node, "timestamp": time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime())}
    ns = inv.env.args.get("K8S_POD_NAMESPACE", "")
    pod = inv.env.args.get("K8S_POD_NAME", "")
    if ns and pod:
        a["namespace"] = ns
        a["pod"] = pod
    return a


def host_prefix(addr: Any) -> str:
    """An address (ip, interface or string) as a single-host CIDR: /32 or /128."""
    s = str(addr).split("/")[0]
    return f"{s}/128" if ":" in s else f"{s}/32"


def pod_namespace(inv: Invocation) -> dict[str, Any] | None:
    """The pod's v1 Namespace resource, read when ``policy.type`` is ``k8s`` and CNI_ARGS
    has ``K8S_POD_NAMESPACE`` (when Calico's plugin reads it); else None. A namespace that
    does not exist is an error, as in Calico (its labels decide the IP pools)."""
    ns = inv.env.args.get("K8S_POD_NAMESPACE", "")
    if not ns or inv.conf.policy_type != "k8s":
        return None
    from pycalico.datastore.base import NotFound

    try:
        return inv.datastore.get("Namespace", ns)
    except NotFound:
        raise CniError(
            IPAM_FAILED,
            f"failed to get namespace {ns}",
            f"K8S_POD_NAMESPACE={ns}: no such Namespace (its labels select the IP pools)",
        ) from None
    except Exception as e:
        raise ipam_errors(e, f"reading namespace {ns}") from None


def annotated_pools(namespace: dict[str, Any] | None, family: int) -> list[str]:
    """The namespace's ``cni.projectcalico.org/ipv{4,6}pools`` annotation (a JSON list of
    pool names or CIDRs), else ``[]``; a malformed value is an error naming the annotation."""
    key = POOLS_ANNOTATION[family]
    raw = ((namespace or {}).get("metadata") or {}).get("annotations", {}) or {}
    value = raw.get(key)
    if not value:
        return []
    try:
        pools = json.loads(value)
    except ValueError as e:
        raise CniError(IPAM_FAILED, f"invalid annotation {key}", f"not JSON: {e}") from None
    if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
        raise CniError(IPAM_FAILED, f"invalid annotation {key}", "must be a JSON list of strings")
    return pools


def ipam_add(inv: Invocation, node: str) -> list[str]:
    """Allocate (or return the existing) addresses of this attachment's handle.

    Pools: the namespace's ``cni.projectcalico.org/ipv{4,6}pools`` annotation, else the
    network configuration's ``ipv4_pools``/``ipv6_pools`` (both used as given); else every
    pool whose nodeSelector and namespaceSelector match (the namespace's labels).
    """
    # invoked directly with no "ipam" section: Calico's defaults (one IPv4 address)
    ipam_conf = inv.conf.ipam or IpamConf(type="calico-ipam")
    handle = handle_id(inv.conf.name, inv.env.container_id)
    try:
        ipam = inv.deps.ipam(inv.datastore, inv.conf)
        existing = ipam.get_ips_by_handle(handle)
        if existing:
            return sorted((host_prefix(a) for a in existing), key=lambda s: ":" in s)
        ns = pod_namespace(inv)
        v4_pools = annotated_pools(ns, 4) or list(ipam_conf.ipv4_pools)
        v6_pools = annotated_pools(ns, 6) or list(ipam_conf.ipv6_pools)
        v4, v6 = ipam.auto_assign(
            1 if ipam_conf.assign_ipv4 else 0,
            1 if ipam_conf.assign_ipv6 else 0,
            handle,
            _attrs(inv, node),
            node,
            v4_pools or None,
            v6_pools or None,
            namespace_labels=(
                dict((ns.get("metadata") or {}).get("labels") or {}) if ns is not None else None
            ),
        )
    except Exception as e:
        raise ipam_errors(e, "IP address assignment") from None
    return [host_prefix(a) for a in [*v4, *v6]]


def ipam_release(inv: Invocation) -> list[str]:
    handle = handle_id(inv.conf.name, inv.env.container_id)
    try:
        ipam = inv.deps.ipam(inv.datastore, inv.conf)
        return [host_prefix(a) for a in ipam.release_by_handle(handle)]
    except Exception as e:
        raise ipam_errors(e, "IP address release") from None


def ipam_held(inv: Invocation) -> list[str]:
    handle = handle_id(inv.conf.name, inv.env.container_id)
    try:
        ipam = inv.deps.ipam(inv.datastore, inv.conf)
        return [host_prefix(a) for a in ipam.get_ips_by_handle(handle)]
    except Exception as e:
        raise ipam_errors(e, "IPAM query") from None


def valid_container_ids(inv: Invocation) -> set[str]:
    """Container IDs of ``cni.dev/valid-attachments`` (and the legacy ``cni.dev/attachments``)."""
    out: set[str] = set()
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        items = inv.conf.raw.get(key)
        if isinstance(items, list):
            for it in items:
                if isinstance(it, dict) and isinstance(it.get("containerID"), str):
                    out.add(it["containerID"])
    return out


def ipam_gc(inv: Invocation) -> list[str]:
    """Release every ``<network>.<id>`` handle whose id is not a valid attachment.

    Continues past errors and reports them all at the end. Returns released handle ids.
    """
    valid = valid_container_ids(inv)
    prefix = f"{inv.conf.name}."
    released: list[str] = []
    errors: list[str] = []
    try:
        ipam = inv.deps.ipam(inv.datastore, inv.conf)
        handles = inv.deps.list_handles(ipam)
    except Exception as e:
        raise ipam_errors(e, "GC: listing IPAM handles") from None
    for h in handles:
        if not h.startswith(prefix) or h[len(prefix) :] in valid:
            continue
        try:
            ipam.release_by_handle(h)
            released.append(h)
        except Exception as e:
            errors.append(f"{h}: {type(e).__name__}: {e}")
    if errors:
        raise CniError(TRY_AGAIN_LATER, "GC: some releases failed", "; ".join(errors))
    return released


def datastore_status(inv: Invocation) -> None:
    """STATUS: the datastore answers and at least one IP pool exists (else code 50)."""
    try:
        pools = inv.datastore.list("IPPool").items
    except CniError as e:
        raise CniError(NOT_AVAILABLE, "plugin not available", e.msg + ": " + e.details) from None
    except Exception as e:
        raise CniError(NOT_AVAILABLE, "plugin not available", f"datastore: {e}") from None
    if not [p for p in pools if not (p.get("spec") or {}).get("disabled")]:
        raise CniError(NOT_AVAILABLE, "plugin not available", "no enabled IP pools")


def ipam_result(addrs: list[str]) -> dict[str, Any]:
    return {"ips": [{"address": a} for a in addrs], "dns": {}}
