"""Builders of stored resources as tests and benchmarks write them: plain v3 dicts.

Owns one builder per stored kind that tests build over and over. Each returns a fresh
``{"apiVersion", "kind", "metadata", "spec"}`` dict (no pydantic, no validation: a test may
build an invalid resource on purpose) with sensible defaults, and takes keyword overrides.

Conventions (the same for every builder):
- Positional arguments are the identity (name, and what a resource cannot be without).
- Snake-case keywords are the common fields; ``None`` means "leave the field out" (so the
  model's or Calico's default applies). Any further ``**spec`` keywords are merged into
  ``spec`` last, spelled as stored (camelCase), and win over everything else.
- ``labels`` is written to ``metadata.labels`` only when given.
- :func:`key_of` gives the datastore key a resource is stored under (as the syncer reports it).

Invariant: builders are pure; two calls with the same arguments return equal, independent
dicts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pycalico.datastore.base import key_for, storage_kind

V3 = "projectcalico.org/v3"
K8S_CORE = "v1"
K8S_NETWORKING = "networking.k8s.io/v1"

Resource = dict[str, Any]


def resource(
    kind: str,
    name: str,
    spec: Mapping[str, Any] | None = None,
    *,
    namespace: str = "",
    labels: Mapping[str, str] | None = None,
    api_version: str = V3,
    **meta: Any,
) -> Resource:
    """Any kind: ``spec=None`` leaves ``spec`` out; ``meta`` adds metadata fields."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if labels is not None:
        metadata["labels"] = dict(labels)
    metadata.update(meta)
    out: Resource = {"apiVersion": api_version, "kind": kind, "metadata": metadata}
    if spec is not None:
        out["spec"] = dict(spec)
    return out


def key_of(res: Mapping[str, Any]) -> str:
    """The datastore key of ``res`` (``/calico/resources/v3/projectcalico.org/<plural>/..``)."""
    meta = res.get("metadata") or {}
    kind = storage_kind(res.get("apiVersion"), str(res["kind"]))
    return key_for(kind, str(meta["name"]), str(meta.get("namespace") or ""))


def keyed(resources: Iterable[Mapping[str, Any]]) -> dict[str, Resource]:
    """``{key_of(r): r}`` for a list of resources (a whole datastore state)."""
    return {key_of(r): dict(r) for r in resources}


def _spec(fields: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in fields.items() if v is not None}
    out.update(extra)
    return out


def _cidr(ip: str) -> str:
    if "/" in ip:
        return ip
    return f"{ip}/{128 if ipaddress.ip_address(ip).version == 6 else 32}"


def _ips(ip: str | Sequence[str] | None) -> list[str] | None:
    if ip is None:
        return None
    return [_cidr(ip)] if isinstance(ip, str) else [_cidr(i) for i in ip]


def wep_name(node: str, orchestrator: str, workload: str, endpoint: str) -> str:
    """Calico's WorkloadEndpoint name: the four parts joined by ``-``, each ``-`` doubled."""
    return "-".join(p.replace("-", "--") for p in (node, orchestrator, workload, endpoint))


# --- endpoints ----------------------------------------------------------------------------
def workload_endpoint(
    pod: str,
    *,
    namespace: str = "default",
    node: str = "node1",
    ip: str | Sequence[str] | None = "10.0.0.1",
    labels: Mapping[str, str] | None = None,
    profiles: Sequence[str] | None = None,
    service_account: str = "",
    ports: Sequence[Mapping[str, Any]] | None = (),
    interface_name: str | None = "",
    orchestrator: str = "k8s",
    endpoint: str = "eth0",
    name: str = "",
    mac: str | None = None,
    **spec: Any,
) -> Resource:
    """A pod's endpoint as the CNI plugin writes it.

    ``ip``: one address or several, ``/32``/``/128`` added when no prefix is given.
    ``profiles`` default: ``kns.<namespace>`` (+ ``ksa.<namespace>.<sa>``), as Calico's k8s
    conversion sets them. ``interface_name`` default ``cali<pod>`` (cut to 15 characters).
    ``name`` default: Calico's ``<node>-<orchestrator>-<pod>-<endpoint>``.
    """
    if profiles is None:
        profiles = [f"kns.{namespace}"] + (
            [f"ksa.{namespace}.{service_account}"] if service_account else []
        )
    if interface_name == "":
        interface_name = f"cali{pod}"[:15]
    body = _spec(
        {
            "orchestrator": orchestrator,
            "node": node,
            "pod": pod,
            "endpoint": endpoint,
            "interfaceName": interface_name,
            "mac": mac,
            "ipNetworks": _ips(ip),
            "profiles": list(profiles),
            "ports": None if ports is None else [dict(p) for p in ports],
            "serviceAccountName": service_account or None,
        },
        spec,
    )
    return resource(
        "WorkloadEndpoint",
        name or wep_name(node, orchestrator, pod, endpoint),
        body,
        namespace=namespace,
        labels=labels,
    )


def host_endpoint(
    name: str,
    *,
    node: str = "node1",
    interface_name: str | None = None,
    expected_ips: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    profiles: Sequence[str] | None = None,
    ports: Sequence[Mapping[str, Any]] | None = None,
    **spec: Any,
) -> Resource:
    """A HostEndpoint; ``interface_name="*"`` is the all-interfaces endpoint."""
    body = _spec(
        {
            "node": node,
            "interfaceName": interface_name,
            "expectedIPs": None if expected_ips is None else list(expected_ips),
            "profiles": None if profiles is None else list(profiles),
            "ports": None if ports is None else [dict(p) for p in ports],
        },
        spec,
    )
    return resource("HostEndpoint", name, body, labels=labels)


# --- policy kinds -------------------------------------------------------------------------
def _policy_spec(
    selector: str | None,
    ingress: Sequence[Mapping[str, Any]] | None,
    egress: Sequence[Mapping[str, Any]] | None,
    types: Sequence[str] | None,
    order: float | None,
    tier: str | None,
    spec: Mapping[str, Any],
) -> dict[str, Any]:
    return _spec(
        {
            "tier": tier,
            "order": order,
            "selector": selector,
            "types": None if types is None else list(types),
            "ingress": None if ingress is None else [dict(r) for r in ingress],
            "egress": None if egress is None else [dict(r) for r in egress],
        },
        spec,
    )


def network_policy(
    name: str,
    *,
    namespace: str = "default",
    selector: str | None = None,
    ingress: Sequence[Mapping[str, Any]] | None = None,
    egress: Sequence[Mapping[str, Any]] | None = None,
    types: Sequence[str] | None = None,
    order: float | None = None,
    tier: str | None = None,
    labels: Mapping[str, str] | None = None,
    kind: str = "NetworkPolicy",
    **spec: Any,
) -> Resource:
    """A projectcalico.org/v3 NetworkPolicy (``kind="StagedNetworkPolicy"`` for staged)."""
    body = _policy_spec(selector, ingress, egress, types, order, tier, spec)
    return resource(kind, name, body, namespace=namespace, labels=labels)


def global_network_policy(
    name: str,
    *,
    selector: str | None = None,
    ingress: Sequence[Mapping[str, Any]] | None = None,
    egress: Sequence[Mapping[str, Any]] | None = None,
    types: Sequence[str] | None = None,
    order: float | None = None,
    tier: str | None = None,
    labels: Mapping[str, str] | None = None,
    kind: str = "GlobalNetworkPolicy",
    **spec: Any,
) -> Resource:
    """A GlobalNetworkPolicy (``preDNAT=True``, ``doNotTrack=True``, ... via ``**spec``)."""
    body = _policy_spec(selector, ingress, egress, types, order, tier, spec)
    return resource(kind, name, body, labels=labels)


def k8s_network_policy(
    name: str,
    *,
    namespace: str = "default",
    pod_selector: Mapping[str, Any] | None = None,
    ingress: Sequence[Mapping[str, Any]] | None = None,
    egress: Sequence[Mapping[str, Any]] | None = None,
    policy_types: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> Resource:
    """A networking.k8s.io/v1 NetworkPolicy; ``pod_selector`` default ``{}`` (all pods)."""
    body = _spec(
        {
            "podSelector": dict(pod_selector or {}),
            "ingress": None if ingress is None else [dict(r) for r in ingress],
            "egress": None if egress is None else [dict(r) for r in egress],
            "policyTypes": None if policy_types is None else list(policy_types),
        },
        spec,
    )
    return resource(
        "NetworkPolicy",
        name,
        body,
        namespace=namespace,
        labels=labels,
        api_version=K8S_NETWORKING,
    )


def tier(
    name: str, *, order: float | None = None, default_action: str | None = None, **spec: Any
) -> Resource:
    """A Tier (Calico's defaults: no order sorts last, defaultAction Deny)."""
    return resource("Tier", name, _spec({"order": order, "defaultAction": default_action}, spec))


def profile(
    name: str,
    *,
    ingress: Sequence[Mapping[str, Any]] | None = None,
    egress: Sequence[Mapping[str, Any]] | None = None,
    labels_to_apply: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> Resource:
    body = _spec(
        {
            "ingress": None if ingress is None else [dict(r) for r in ingress],
            "egress": None if egress is None else [dict(r) for r in egress],
            "labelsToApply": None if labels_to_apply is None else dict(labels_to_apply),
        },
        spec,
    )
    return resource("Profile", name, body, labels=labels)


def network_set(
    name: str,
    nets: Sequence[str] = (),
    *,
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> Resource:
    return resource(
        "NetworkSet", name, _spec({"nets": list(nets)}, spec), namespace=namespace, labels=labels
    )


def global_network_set(
    name: str,
    nets: Sequence[str] = (),
    *,
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> Resource:
    return resource("GlobalNetworkSet", name, _spec({"nets": list(nets)}, spec), labels=labels)


def namespace(name: str, *, labels: Mapping[str, str] | None = None) -> Resource:
    """A Kubernetes (v1) Namespace: the source of the ``kns.<name>`` profile."""
    return resource("Namespace", name, labels=labels, api_version=K8S_CORE)


def service_account(
    name: str, namespace: str = "default", *, labels: Mapping[str, str] | None = None
) -> Resource:
    """A Kubernetes (v1) ServiceAccount: the source of the ``ksa.<ns>.<name>`` profile."""
    return resource(
        "ServiceAccount", name, namespace=namespace, labels=labels, api_version=K8S_CORE
    )


# --- networking ---------------------------------------------------------------------------
def ip_pool(
    name: str = "default-ipv4-ippool",
    cidr: str = "10.244.0.0/16",
    *,
    ipip_mode: str | None = None,
    vxlan_mode: str | None = None,
    nat_outgoing: bool | None = None,
    block_size: int | None = None,
    node_selector: str | None = None,
    disabled: bool | None = None,
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> Resource:
    """An IPPool; every unset field is left to Calico's defaults."""
    body = _spec(
        {
            "cidr": cidr,
            "ipipMode": ipip_mode,
            "vxlanMode": vxlan_mode,
            "natOutgoing": nat_outgoing,
            "blockSize": block_size,
            "nodeSelector": node_selector,
            "disabled": disabled,
        },
        spec,
    )
    return resource("IPPool", name, body, labels=labels)


def node(
    name: str,
    ip: str | None = None,
    ip6: str | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    as_number: int | str | None = None,
    ipip_tunnel_addr: str | None = None,
    vxlan_tunnel_addr: str | None = None,
    vxlan_mac: str | None = None,
    vxlan_tunnel_addr6: str | None = None,
    vxlan_mac6: str | None = None,
    rr_cluster_id: str | None = None,
    bgp: Mapping[str, Any] | None = None,
    **spec: Any,
) -> Resource:
    """A Calico Node; ``ip``/``ip6`` become ``spec.bgp.ipv4Address``/``ipv6Address`` (``/24``
    and ``/64`` added when no prefix is given). ``bgp`` adds further ``spec.bgp`` fields;
    with no BGP field at all ``spec.bgp`` is left out (``node("n1")`` has ``spec == {}``)."""
    spec_bgp = _spec(
        {
            "ipv4Address": None if not ip else (ip if "/" in ip else f"{ip}/24"),
            "ipv6Address": None if not ip6 else (ip6 if "/" in ip6 else f"{ip6}/64"),
            "asNumber": as_number,
            "ipv4IPIPTunnelAddr": ipip_tunnel_addr,
            "routeReflectorClusterID": rr_cluster_id,
        },
        bgp or {},
    )
    body = _spec(
        {
            "bgp": spec_bgp or None,
            "ipv4VXLANTunnelAddr": vxlan_tunnel_addr,
            "vxlanTunnelMACAddr": vxlan_mac,
            "ipv6VXLANTunnelAddr": vxlan_tunnel_addr6,
            "vxlanTunnelMACAddrV6": vxlan_mac6,
        },
        spec,
    )
    return resource("Node", name, body, labels=labels)


def cidr_name(cidr: str) -> str:
    """Resource name of a CIDR as Calico's CRDs spell it (``10.0.0.0/26`` -> ``10-0-0-0-26``)."""
    return cidr.replace(".", "-").replace(":", "-").replace("/", "-")


def ipam_block(
    cidr: str,
    node: str | None = "node1",
    *,
    held: Mapping[str, str] | None = None,
    handle: str = "h-{ip}",
    **spec: Any,
) -> Resource:
    """An IPAMBlock affine to ``node`` (``None``: no affinity). ``held`` maps addresses to
    the node recorded in their attribute (``secondary.node``), each under handle
    ``handle.format(ip=...)``."""
    net = ipaddress.ip_network(cidr)
    allocs: list[int | None] = [None] * net.num_addresses
    attrs: list[dict[str, Any]] = []
    for ip, holder in (held or {}).items():
        allocs[int(ipaddress.ip_address(ip)) - int(net.network_address)] = len(attrs)
        attrs.append({"handle_id": handle.format(ip=ip), "secondary": {"node": holder}})
    body = {
        "cidr": cidr,
        "affinity": f"host:{node}" if node else None,
        "allocations": allocs,
        "unallocated": [i for i, a in enumerate(allocs) if a is None],
        "attributes": attrs,
        "deleted": False,
        **spec,
    }
    return resource("IPAMBlock", cidr_name(cidr), body)


def block_affinity(
    node: str, cidr: str, *, state: str = "confirmed", name: str = "", **spec: Any
) -> Resource:
    """A BlockAffinity named ``<node>-<cidr name>`` (as Calico's IPAM names it)."""
    body = {"node": node, "cidr": cidr, "state": state, **spec}
    return resource("BlockAffinity", name or f"{node}-{cidr_name(cidr)}", body)


def felix_configuration(name: str = "default", **spec: Any) -> Resource:
    """A FelixConfiguration (``default`` or ``node.<name>``); fields as stored, camelCase."""
    return resource("FelixConfiguration", name, spec)


def bgp_configuration(name: str = "default", **spec: Any) -> Resource:
    return resource("BGPConfiguration", name, spec)


def bgp_peer(
    name: str,
    peer_ip: str | None = None,
    as_number: int | str | None = None,
    *,
    node: str | None = None,
    node_selector: str | None = None,
    peer_selector: str | None = None,
    **spec: Any,
) -> Resource:
    body = _spec(
        {
            "peerIP": peer_ip,
            "asNumber": as_number,
            "node": node,
            "nodeSelector": node_selector,
            "peerSelector": peer_selector,
        },
        spec,
    )
    return resource("BGPPeer", name, body)


def bgp_filter(name: str, **spec: Any) -> Resource:
    return resource("BGPFilter", name, spec)
