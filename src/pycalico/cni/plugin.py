"""``calico``: the CNI interface plugin (ADD / DEL / CHECK / GC / STATUS).

ADD: allocate (in-process when ``ipam.type`` is ``calico-ipam``; otherwise exec the IPAM
plugin from ``CNI_PATH`` like a runtime), wire the veth (:mod:`pycalico.cni.dataplane`),
write the WorkloadEndpoint (+ the network's Profile for plain-CNI workloads), print the
result. Any failure after allocation releases the addresses and removes the veth: nothing
half-written survives a failed ADD.

DEL is best effort and idempotent: the WEP is deleted only if it belongs to this container
(a newer sandbox of the same pod keeps its WEP and veth), the container interface (or, with
the netns gone, the host veth) is removed, and the handle is released.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pycalico.cni.context import Invocation
from pycalico.cni.dataplane import HOST_MAC, InterfaceExists, WiringError, WorkloadIface
from pycalico.cni.errors import (
    DATASTORE_FAILED,
    INVALID_NETCONF,
    TRY_AGAIN_LATER,
    WIRING_FAILED,
    CniError,
)
from pycalico.cni.ipam_plugin import (
    datastore_status,
    host_prefix,
    ipam_add,
    ipam_errors,
    ipam_gc,
    ipam_held,
    ipam_release,
    valid_container_ids,
)
from pycalico.cni.types import cni_annotations, cni_labels, normalize_result
from pycalico.cni.workload import (
    ORCH_CNI,
    Workload,
    build_wep,
    build_workload,
    interface_prefix,
    network_profile,
    ports_from_mappings,
    veth_name,
    wep_name_of,
)
from pycalico.model.qos import controls_from_annotations
from pycalico.model.types import ModelError

CALICO_IPAM = "calico-ipam"


def _workload(inv: Invocation, node: str, qos: bool = False) -> Workload:
    """The workload of this invocation; ``qos``: with the ``spec.qosControls`` of its QoS
    annotations (ADD only: a bad annotation must never block a DEL)."""
    cni = inv.conf.args.get("cni")
    sa = cni.get("serviceAccountName", "") if isinstance(cni, dict) else ""
    pm = inv.conf.runtime_config.get("portMappings") or []
    w = build_workload(
        cni_args=inv.env.args,
        container_id=inv.env.container_id,
        ifname=inv.env.ifname,
        node=node,
        network=inv.conf.name,
        extra_labels=cni_labels(inv.conf),
        service_account=sa if isinstance(sa, str) else "",
        ports=ports_from_mappings(pm if isinstance(pm, list) else []),
    )
    if not qos:
        return w
    try:
        controls = controls_from_annotations(cni_annotations(inv.conf))
    except ModelError as e:
        raise CniError(INVALID_NETCONF, "invalid QoS annotation", str(e)) from None
    return replace(w, qos_controls=controls)


def _in_process(inv: Invocation) -> bool:
    return inv.conf.ipam is not None and inv.conf.ipam.type == CALICO_IPAM


def _allocate(inv: Invocation, node: str) -> list[str]:
    if _in_process(inv):
        return ipam_add(inv, node)
    assert inv.conf.ipam is not None
    try:
        res = inv.deps.delegate(inv.conf.ipam.type, "ADD", inv.stdin, inv.deps.environ) or {}
    except BaseException:
        # spec: after a delegated IPAM failure, run the delegate's DEL before failing
        try:
            inv.deps.delegate(inv.conf.ipam.type, "DEL", inv.stdin, inv.deps.environ)
        except Exception:
            pass
        raise
    addrs = [host_prefix(ip["address"]) for ip in normalize_result(res)["ips"]]
    if not addrs:
        _release(inv)
        raise CniError(INVALID_NETCONF, f"IPAM plugin {inv.conf.ipam.type} returned no IPs")
    return addrs


def _release(inv: Invocation) -> None:
    if _in_process(inv):
        ipam_release(inv)
    elif inv.conf.ipam is not None:
        inv.deps.delegate(inv.conf.ipam.type, "DEL", inv.stdin, inv.deps.environ)


def _write_wep(inv: Invocation, wep: dict[str, Any], profile: dict[str, Any] | None) -> None:
    from pycalico.datastore.base import AlreadyExists, NotFound

    ds = inv.datastore
    if profile is not None:
        try:
            ds.create(profile)
        except AlreadyExists:
            pass
    md = wep["metadata"]
    for _ in range(5):
        try:
            ds.create(wep)
            return
        except AlreadyExists:
            pass
        try:  # a WEP of an older sandbox of the same workload: take it over
            cur = ds.get("WorkloadEndpoint", md["name"], md["namespace"])
        except NotFound:
            continue
        new = dict(wep)
        new["metadata"] = dict(md, resourceVersion=cur["metadata"]["resourceVersion"])
        try:
            ds.update(new)
            return
        except Exception as e:
            if type(e).__name__ not in ("Conflict", "NotFound"):
                raise
    raise CniError(TRY_AGAIN_LATER, "writing WorkloadEndpoint: too many conflicts")


def _require_ready(inv: Invocation) -> None:
    """Like Calico: refuse ADD/DEL while ClusterInformation says the datastore is not ready
    (``calicoctl datastore migrate lock``). A missing ClusterInformation is tolerated (a
    store calico-node has not initialised yet still serves plain CNI)."""
    from pycalico.datastore.base import NotFound

    try:
        info = inv.datastore.get("ClusterInformation", "default")
    except NotFound:
        return
    except Exception as e:
        raise ipam_errors(e, "reading ClusterInformation") from None
    if (info.get("spec") or {}).get("datastoreReady") is False:
        raise CniError(
            TRY_AGAIN_LATER,
            "datastore is not ready",
            "ClusterInformation default has datastoreReady=false (migration in progress?)",
        )


def cmd_add(inv: Invocation) -> dict[str, Any]:
    _require_ready(inv)
    node = inv.nodename()
    w = _workload(inv, node, qos=True)
    host_if = veth_name(w, interface_prefix(inv.deps.environ))
    mtu = inv.mtu()
    from pycalico.cni.dataplane import random_mac

    addrs = _allocate(inv, node)
    iface = WorkloadIface(
        host_ifname=host_if,
        container_ifname=inv.env.ifname,
        netns=inv.env.netns,
        addresses=tuple(addrs),
        mtu=mtu,
        container_mac=random_mac(),
    )
    dp = inv.deps.dataplane()
    wired = False
    try:
        dp.setup(iface)
        wired = True
        wep = build_wep(w, host_ifname=host_if, mac=iface.container_mac, ip_networks=addrs)
        try:
            _write_wep(
                inv, wep, network_profile(inv.conf.name) if w.orchestrator == ORCH_CNI else None
            )
        except CniError:
            raise
        except Exception as e:
            raise ipam_errors(e, "writing WorkloadEndpoint") from None
    except BaseException as e:
        _undo(inv, dp, iface, wired)
        if isinstance(e, InterfaceExists):
            raise CniError(
                WIRING_FAILED, f"interface {inv.env.ifname} already exists", str(e)
            ) from None
        if isinstance(e, WiringError):
            raise CniError(
                WIRING_FAILED, "failed to set up the workload interface", str(e)
            ) from None
        raise
    return _result(inv, iface, w.namespace)


def _undo(inv: Invocation, dp: Any, iface: WorkloadIface, wired: bool) -> None:
    """Best-effort rollback after a failed ADD (never masks the original error)."""
    if wired:
        try:
            dp.teardown(iface.host_ifname, iface.netns, iface.container_ifname)
        except Exception:
            pass
    try:
        _release(inv)
    except Exception:
        pass


def _result(inv: Invocation, iface: WorkloadIface, namespace: str) -> dict[str, Any]:
    prev = normalize_result(inv.conf.prev_result or {})
    base = len(prev["interfaces"])
    ifaces = [
        *prev["interfaces"],
        {"name": iface.host_ifname, "mac": HOST_MAC, "mtu": iface.mtu},
        {
            "name": iface.container_ifname,
            "mac": iface.container_mac,
            "mtu": iface.mtu,
            "sandbox": iface.netns,
        },
    ]
    ips = [*prev["ips"], *({"address": a, "interface": base + 1} for a in iface.addresses)]
    routes = list(prev["routes"])
    if iface.v4:
        routes.append({"dst": "0.0.0.0/0", "gw": "169.254.1.1"})
    if iface.v6:
        routes.append({"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"})
    dns = prev["dns"] or dict(inv.conf.raw.get("dns") or {})
    if not dns:
        # The node's workload DNS (calico-node serves it at 169.254.25.10).
        from pycalico.dnsconf import cni_dns

        dns = cni_dns(namespace)
    return {"interfaces": ifaces, "ips": ips, "routes": routes, "dns": dns}


def cmd_del(inv: Invocation) -> None:
    from pycalico.datastore.base import NotFound

    _require_ready(inv)
    node = inv.nodename()
    w = _workload(inv, node)
    host_if = veth_name(w, interface_prefix(inv.deps.environ))
    ds = inv.datastore
    name = wep_name_of(w)
    owned = True
    try:
        wep = ds.get("WorkloadEndpoint", name, w.namespace)
    except NotFound:
        wep = None
    except Exception as e:
        raise ipam_errors(e, "reading WorkloadEndpoint") from None
    if wep is not None:
        owned = (wep.get("spec") or {}).get("containerID") == inv.env.container_id
        if owned:
            for _ in range(5):
                try:
                    ds.delete(
                        "WorkloadEndpoint", name, w.namespace, wep["metadata"]["resourceVersion"]
                    )
                    break
                except NotFound:
                    break
                except Exception as e:
                    if type(e).__name__ != "Conflict":
                        raise ipam_errors(e, "deleting WorkloadEndpoint") from None
                    try:
                        wep = ds.get("WorkloadEndpoint", name, w.namespace)
                    except NotFound:
                        break
    if owned:
        try:
            inv.deps.dataplane().teardown(host_if, inv.env.netns, inv.env.ifname)
        except WiringError as e:
            raise CniError(
                WIRING_FAILED, "failed to remove the workload interface", str(e)
            ) from None
    _release(inv)


def cmd_check(inv: Invocation) -> None:
    prev = inv.conf.prev_result
    if not prev:
        raise CniError(INVALID_NETCONF, "CHECK requires prevResult")
    res = normalize_result(prev)
    node = inv.nodename()
    w = _workload(inv, node)
    host_if = veth_name(w, interface_prefix(inv.deps.environ))
    cont = [i for i in res["interfaces"] if i.get("name") == inv.env.ifname and i.get("sandbox")]
    if not cont:
        raise CniError(INVALID_NETCONF, f"prevResult has no interface {inv.env.ifname}")
    idx = res["interfaces"].index(cont[0])
    addrs = tuple(ip["address"] for ip in res["ips"] if ip.get("interface") == idx)
    iface = WorkloadIface(
        host_ifname=host_if,
        container_ifname=inv.env.ifname,
        netns=inv.env.netns,
        addresses=addrs,
        mtu=int(cont[0].get("mtu") or 0),
        container_mac=str(cont[0].get("mac", "")),
    )
    problems = inv.deps.dataplane().check(iface)
    from pycalico.datastore.base import NotFound

    try:
        wep = inv.datastore.get("WorkloadEndpoint", wep_name_of(w), w.namespace)
        if sorted((wep.get("spec") or {}).get("ipNetworks") or []) != sorted(addrs):
            problems.append("WorkloadEndpoint ipNetworks differ from prevResult")
    except NotFound:
        problems.append(f"WorkloadEndpoint {wep_name_of(w)} missing")
    if _in_process(inv):
        held = set(ipam_held(inv))
        for a in addrs:
            if a not in held:
                problems.append(f"IPAM handle does not hold {a}")
    elif inv.conf.ipam is not None:
        inv.deps.delegate(inv.conf.ipam.type, "CHECK", inv.stdin, inv.deps.environ)
    if problems:
        raise CniError(WIRING_FAILED, "CHECK failed", "; ".join(problems))


def cmd_gc(inv: Invocation) -> None:
    """Release stale handles and delete this node's stale WEPs (netns assumed gone)."""
    errors: list[str] = []
    stale_ids: set[str] = set()
    if _in_process(inv):
        released = ipam_gc(inv)
        stale_ids = {h[len(inv.conf.name) + 1 :] for h in released}
    elif inv.conf.ipam is not None:
        try:
            inv.deps.delegate(inv.conf.ipam.type, "GC", inv.stdin, inv.deps.environ)
        except CniError as e:
            errors.append(str(e))
    valid = valid_container_ids(inv)
    node = inv.nodename()
    try:
        weps = inv.datastore.list("WorkloadEndpoint").items
    except Exception as e:
        raise ipam_errors(e, "GC: listing WorkloadEndpoints") from None
    dp = None
    for wep in weps:
        spec = wep.get("spec") or {}
        cid = spec.get("containerID", "")
        if spec.get("node") != node or not cid or cid in valid:
            continue
        if cid not in stale_ids and inv.conf.name not in (spec.get("profiles") or []):
            continue  # not provably ours (another network's attachment)
        md = wep["metadata"]
        try:
            inv.datastore.delete("WorkloadEndpoint", md["name"], md.get("namespace", ""))
        except Exception as e:
            if type(e).__name__ != "NotFound":
                errors.append(f"WEP {md['name']}: {e}")
        host_if = spec.get("interfaceName")
        if host_if:
            dp = dp or inv.deps.dataplane()
            try:
                dp.teardown(host_if, "", spec.get("endpoint", ""))
            except Exception as e:
                errors.append(f"{host_if}: {e}")
    if errors:
        raise CniError(DATASTORE_FAILED, "GC: some cleanups failed", "; ".join(errors))


def cmd_status(inv: Invocation) -> None:
    datastore_status(inv)
    if not _in_process(inv) and inv.conf.ipam is not None:
        inv.deps.delegate(inv.conf.ipam.type, "STATUS", inv.stdin, inv.deps.environ)


def dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))
