"""calico-node start-up: what Calico's ``calico-node -startup`` and ``-allocate-tunnel-addrs``
do before the agents run.

Owns, in order (:func:`run_startup`):
1. :class:`NodeSettings` from the environment (``NODENAME``, ``IP``,
   ``IP_AUTODETECTION_METHOD``, ``IP6`` (default none), ``IP6_AUTODETECTION_METHOD``,
   ``AS``, ``CALICO_IPV4POOL_*``, ``CALICO_IPV6POOL_*``, ``NO_DEFAULT_POOLS``, ``CLUSTER_TYPE``,
   ``CALICO_K8S_NODE_REF``) — validated, every problem a :class:`StartupError` naming the
   variable.
2. The Node resource: created, or updated keeping every existing label and field, with
   ``spec.bgp.ipv4Address``/``ipv6Address`` (``addr/len``), ``spec.addresses``
   (CalicoNodeIP) and ``spec.orchRefs``. Another node already using the address is a
   StartupError (Calico refuses to start with a conflicting IP).
3. The default IPPool ``default-ipv4-ippool`` — only when no IPPool exists at all and
   ``NO_DEFAULT_POOLS`` is not true. Then ``default-ipv6-ippool`` — only when no IPv6 pool
   exists, ``NO_DEFAULT_POOLS`` is not true, and either ``CALICO_IPV6POOL_CIDR`` is set or the
   node has an IPv6 address (``IP6`` / IPv6 autodetection). Without ``CALICO_IPV6POOL_CIDR`` the
   CIDR is a ULA ``fdXX:XXXX:XXXX::/48`` (RFC 4193: ``fd`` + 40-bit global ID) whose global ID
   is the first 40 bits of SHA-256 of the ClusterInformation ``spec.clusterGUID``. Calico picks a
   random ULA /48 instead; deriving it from the cluster GUID keeps it random per cluster yet
   makes every node that races to create the pool propose the same CIDR. v6 pool defaults as
   Calico: ``blockSize`` 122 (116..128), ``natOutgoing`` false, ``vxlanMode`` Never, no IPIP.
4. Tunnel addresses (:func:`pycalico.node.tunnels.ensure_tunnel_addresses`: VXLAN v4/v6 and
   IPIP addresses and VTEP MACs for the enabled pools, recorded on the Node; released and
   cleared when no pool needs them; the MACs are derived from the node name and kept). The
   :class:`~pycalico.node.tunnels.TunnelAddressComponent` re-runs it while the node runs.
5. ClusterInformation ``default`` (created when missing; ``datastoreReady`` and
   ``clusterGUID`` set when unset; ensured earlier when step 3 needs the GUID).

Invariants: idempotent (running it twice changes nothing the second time); all writes go
through :class:`~pycalico.client.ResourceClient` (validated, CAS with retries).
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycalico.api import decode, lookup
from pycalico.client import ResourceClient
from pycalico.datastore import AlreadyExists, Datastore, NotFound
from pycalico.errors import CalicoError
from pycalico.model import ModelError
from pycalico.model.booleans import BooleanError, env_flag
from pycalico.model.network import IPPool, Node
from pycalico.node.autodetect import (
    AutodetectError,
    Interface,
    RouteLookup,
    autodetect,
)
from pycalico.node.tunnels import vxlan_mac as vxlan_mac  # re-exported (the VTEP MAC rule)

Obj = dict[str, Any]
DEFAULT_POOL_NAME = "default-ipv4-ippool"
DEFAULT_POOL_CIDR = "192.168.0.0/16"
DEFAULT_POOL6_NAME = "default-ipv6-ippool"
API = "projectcalico.org/v3"
_MODES = {"always": "Always", "crosssubnet": "CrossSubnet", "never": "Never", "off": "Never"}


class StartupError(CalicoError, ValueError):
    """Start-up cannot proceed (bad environment, conflicting node IP, ...)."""


def _flag(env: Mapping[str, str], key: str, default: bool = False) -> bool:
    try:
        return env_flag(env, key, default)
    except BooleanError as e:
        raise StartupError(str(e)) from None


def _mode(env: Mapping[str, str], var: str) -> str:
    raw = (env.get(var) or "Never").strip()
    mode = _MODES.get(raw.lower())
    if mode is None:
        raise StartupError(f"{var}: {raw!r} is not one of Always, CrossSubnet, Never")
    return mode


def _block_size(env: Mapping[str, str], var: str, default: int, lo: int, hi: int) -> int:
    text = (env.get(var) or str(default)).strip()
    try:
        size = int(text)
    except ValueError:
        raise StartupError(f"{var}: {text!r} is not a number") from None
    if not lo <= size <= hi:
        raise StartupError(f"{var}: {size} is not in {lo}..{hi}")
    return size


def _node_selector(env: Mapping[str, str], var: str) -> str:
    from pycalico.selector import SelectorError, parse

    text = (env.get(var) or "all()").strip()
    try:
        parse(text)
    except SelectorError as e:
        raise StartupError(f"{var}: {text!r} is not a valid selector: {e}") from None
    return text


def _pool6_settings(env: Mapping[str, str]) -> PoolSettings:
    """``CALICO_IPV6POOL_*``; ``cidr`` is "" when ``CALICO_IPV6POOL_CIDR`` is unset."""
    block_size = _block_size(env, "CALICO_IPV6POOL_BLOCK_SIZE", 122, 116, 128)
    cidr = (env.get("CALICO_IPV6POOL_CIDR") or "").strip()
    if cidr:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise StartupError(f"CALICO_IPV6POOL_CIDR: {cidr!r} is not a CIDR") from None
        if net.version != 6:
            raise StartupError(f"CALICO_IPV6POOL_CIDR: {cidr} is not an IPv6 CIDR")
        if net.prefixlen > block_size:
            raise StartupError(
                f"CALICO_IPV6POOL_CIDR: /{net.prefixlen} is smaller than the block size "
                f"/{block_size}"
            )
        cidr = str(net)
    return PoolSettings(
        cidr=cidr,
        ipip_mode="Never",
        vxlan_mode=_mode(env, "CALICO_IPV6POOL_VXLAN"),
        nat_outgoing=_flag(env, "CALICO_IPV6POOL_NAT_OUTGOING"),
        block_size=block_size,
        node_selector=_node_selector(env, "CALICO_IPV6POOL_NODE_SELECTOR"),
    )


def ula_prefix(cluster_guid: str) -> str:
    """The stable ULA /48 (``fd`` + 40-bit global ID from SHA-256 of the cluster GUID)."""
    global_id = hashlib.sha256(cluster_guid.encode()).digest()[:5]
    value = int.from_bytes(b"\xfd" + global_id + bytes(10), "big")
    return str(ipaddress.IPv6Network((value, 48)))


@dataclass(frozen=True)
class PoolSettings:
    cidr: str = DEFAULT_POOL_CIDR
    ipip_mode: str = "Never"
    vxlan_mode: str = "Never"
    nat_outgoing: bool = True
    block_size: int = 26
    node_selector: str = "all()"


@dataclass(frozen=True)
class NodeSettings:
    node_name: str
    ip: str  # "" / "autodetect" / "none" / "a.b.c.d[/len]"
    autodetect_method: str = "first-found"
    ip6: str = "none"  # IPv6 is off unless IP6 is set (as Calico)
    autodetect_method6: str = "first-found"
    as_number: str = ""
    pool: PoolSettings = field(default_factory=PoolSettings)
    pool6: PoolSettings = field(
        default_factory=lambda: PoolSettings(cidr="", nat_outgoing=False, block_size=122)
    )
    no_default_pools: bool = False
    cluster_type: str = "k8s,bgp"
    orch_ref: str = ""

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], hostname: Callable[[], str] = socket.gethostname
    ) -> NodeSettings:
        name = (env.get("NODENAME") or "").strip() or hostname().strip().lower()
        if not name:
            raise StartupError("NODENAME: not set and the hostname is empty")
        cidr = (env.get("CALICO_IPV4POOL_CIDR") or DEFAULT_POOL_CIDR).strip()
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise StartupError(f"CALICO_IPV4POOL_CIDR: {cidr!r} is not a CIDR") from None
        if net.version != 4:
            raise StartupError(f"CALICO_IPV4POOL_CIDR: {cidr} is not an IPv4 CIDR")
        block_size = _block_size(env, "CALICO_IPV4POOL_BLOCK_SIZE", 26, 20, 32)
        if net.prefixlen > block_size:
            raise StartupError(
                f"CALICO_IPV4POOL_CIDR: /{net.prefixlen} is smaller than the block size "
                f"/{block_size}"
            )
        ipip = _mode(env, "CALICO_IPV4POOL_IPIP")
        vxlan = _mode(env, "CALICO_IPV4POOL_VXLAN")
        if ipip != "Never" and vxlan != "Never":
            raise StartupError(
                "CALICO_IPV4POOL_IPIP and CALICO_IPV4POOL_VXLAN cannot both be enabled"
            )
        pool = PoolSettings(
            cidr=str(net),
            ipip_mode=ipip,
            vxlan_mode=vxlan,
            nat_outgoing=_flag(env, "CALICO_IPV4POOL_NAT_OUTGOING", True),
            block_size=block_size,
            node_selector=_node_selector(env, "CALICO_IPV4POOL_NODE_SELECTOR"),
        )
        return cls(
            node_name=name,
            ip=(env.get("IP") or "").strip(),
            autodetect_method=(env.get("IP_AUTODETECTION_METHOD") or "first-found").strip(),
            ip6=(env.get("IP6") or "none").strip(),
            autodetect_method6=(env.get("IP6_AUTODETECTION_METHOD") or "first-found").strip(),
            as_number=(env.get("AS") or "").strip(),
            pool=pool,
            pool6=_pool6_settings(env),
            no_default_pools=_flag(env, "NO_DEFAULT_POOLS"),
            cluster_type=(env.get("CLUSTER_TYPE") or "k8s,bgp").strip(),
            orch_ref=(env.get("CALICO_K8S_NODE_REF") or "").strip(),
        )


def resolve_ip(
    settings: NodeSettings,
    interfaces: Sequence[Interface],
    version: int = 4,
    route_lookup: RouteLookup | None = None,
) -> str | None:
    """``IP`` (``IP6``) → ``addr/len`` (None for ``none``); autodetects when unset (v4) or
    ``autodetect``; a bare address takes its prefix from the interface holding it."""
    var = "IP" if version == 4 else "IP6"
    ip = settings.ip if version == 4 else settings.ip6
    method = settings.autodetect_method if version == 4 else settings.autodetect_method6
    if ip.lower() == "none":
        return None
    if ip == "" or ip.lower() == "autodetect":
        try:
            return str(autodetect(method, interfaces, version, route_lookup))
        except AutodetectError as e:
            raise StartupError(f"{var}: {e}") from None
    try:
        itf = ipaddress.ip_interface(ip)
    except ValueError:
        raise StartupError(f"{var}: {ip!r} is not an IPv{version} address[/len]") from None
    if itf.version != version:
        raise StartupError(f"{var}: {ip!r} is not an IPv{version} address")
    if "/" not in ip:
        # Calico looks the address up on the host's interfaces to learn its subnet.
        for i in interfaces:
            for a in i.addresses:
                if a.ip == itf.ip:
                    return str(a)
        return f"{itf.ip}/{itf.max_prefixlen}"
    return str(itf)


def resolve_ipv4(
    settings: NodeSettings,
    interfaces: Sequence[Interface],
    route_lookup: RouteLookup | None = None,
) -> str | None:
    return resolve_ip(settings, interfaces, 4, route_lookup)


@dataclass
class StartupResult:
    node: Obj
    ipv4: str | None
    ipv6: str | None = None
    created_pool: bool = False
    created_pool6: bool = False
    ipip_tunnel: str | None = None
    vxlan_tunnel: str | None = None
    warnings: list[str] = field(default_factory=list)


def _info(kind: str) -> Any:
    info = lookup(API, kind)
    if info is None:
        raise StartupError(f"kind {kind} is not registered")
    return info


def _modify(client: ResourceClient, kind: str, name: str, change: Callable[[Obj], Obj]) -> Obj:
    """Read-modify-write that skips the write when ``change`` alters nothing."""
    info = _info(kind)
    current = client.get(info, name)
    if change(copy.deepcopy(current)) == current:
        return current
    return client.modify(info, name, "", change)


def _check_conflicts(client: ResourceClient, name: str, addr: str) -> None:
    """StartupError when another Node (as the model parses it) has ``addr``'s IP."""
    mine = ipaddress.ip_interface(addr).ip
    for n in client.list(_info("Node")):
        if n["metadata"]["name"] == name:
            continue
        try:
            other = Node.from_resource(n).address(mine.version)
        except ModelError:
            continue  # a Node the model rejects holds no address
        if other is not None and other.ip == mine:
            raise StartupError(
                f"{'IP' if mine.version == 4 else 'IP6'}: {mine} is already in use by node "
                f"{n['metadata']['name']}; calico-node will not start with a conflicting address"
            )


def ensure_node(
    client: ResourceClient, s: NodeSettings, ipv4: str | None, ipv6: str | None = None
) -> Obj:
    """Create or update the Node resource (keeps labels and every other field)."""
    for addr in (ipv4, ipv6):
        if addr:
            _check_conflicts(client, s.node_name, addr)
    info = _info("Node")

    def change(obj: Obj) -> Obj:
        spec = obj.setdefault("spec", {}) or {}
        obj["spec"] = spec
        bgp = dict(spec.get("bgp") or {})
        node_ips = []
        for addr, fld in ((ipv4, "ipv4Address"), (ipv6, "ipv6Address")):
            if addr:
                bgp[fld] = addr
                node_ips.append({"address": addr.split("/")[0], "type": "CalicoNodeIP"})
            else:
                bgp.pop(fld, None)
        others = [a for a in (spec.get("addresses") or []) if a.get("type") != "CalicoNodeIP"]
        if node_ips or others:
            spec["addresses"] = [*node_ips, *others]
        else:
            spec.pop("addresses", None)
        if s.as_number:
            bgp["asNumber"] = int(s.as_number) if s.as_number.isdigit() else s.as_number
        if bgp:
            spec["bgp"] = bgp
        else:
            spec.pop("bgp", None)
        if s.orch_ref:
            spec["orchRefs"] = [{"nodeName": s.orch_ref, "orchestrator": "k8s"}]
        return obj

    try:
        client.get(info, s.node_name)
    except NotFound:
        fresh = change({"apiVersion": API, "kind": "Node", "metadata": {"name": s.node_name}})
        try:
            return client.create(decode(fresh))
        except AlreadyExists:  # lost a creation race: fall through to modify
            pass
    return _modify(client, "Node", s.node_name, change)


def ensure_default_pool(client: ResourceClient, s: NodeSettings) -> bool:
    """Create ``default-ipv4-ippool`` when no pool exists; True if created."""
    if s.no_default_pools or client.list(_info("IPPool")):
        return False
    return _create_pool(client, DEFAULT_POOL_NAME, s.pool.cidr, s.pool.ipip_mode, s.pool)


def ensure_default_ipv6_pool(
    client: ResourceClient, s: NodeSettings, ipv6: str | None, cluster_type: str = "k8s,bgp"
) -> bool:
    """Create ``default-ipv6-ippool`` (module docstring, step 3); True if created."""
    if s.no_default_pools or (not s.pool6.cidr and ipv6 is None):
        return False
    for existing in client.list(_info("IPPool")):
        try:
            if IPPool.from_resource(existing).version == 6:
                return False
        except ModelError:
            continue
    cidr = s.pool6.cidr
    if not cidr:
        guid = (ensure_cluster_information(client, cluster_type).get("spec") or {})["clusterGUID"]
        cidr = ula_prefix(str(guid))
    return _create_pool(client, DEFAULT_POOL6_NAME, cidr, "Never", s.pool6)


def _create_pool(
    client: ResourceClient, name: str, cidr: str, ipip_mode: str, p: PoolSettings
) -> bool:
    """Create a default pool; False when another node created it first."""
    doc = {
        "apiVersion": API,
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {
            "cidr": cidr,
            "ipipMode": ipip_mode,
            "vxlanMode": p.vxlan_mode,
            "natOutgoing": p.nat_outgoing,
            "blockSize": p.block_size,
            "nodeSelector": p.node_selector,
        },
    }
    try:
        client.create(decode(doc))
    except AlreadyExists:
        return False
    return True


def ensure_tunnel_addresses(ds: Datastore, node_name: str, result: StartupResult) -> Obj:
    """Step 4: :func:`pycalico.node.tunnels.ensure_tunnel_addresses`; problems become
    warnings. Returns the Node as stored."""
    from pycalico.node.tunnels import ensure_tunnel_addresses as ensure

    out = ensure(ds, node_name)
    result.warnings += out.problems
    result.ipip_tunnel, result.vxlan_tunnel = out.addrs.get("ipip"), out.addrs.get("vxlan")
    return out.node


def ensure_cluster_information(client: ResourceClient, cluster_type: str) -> Obj:
    from pycalico import __version__

    info = _info("ClusterInformation")
    try:
        current = client.get(info, "default")
    except NotFound:
        doc = {
            "apiVersion": API,
            "kind": "ClusterInformation",
            "metadata": {"name": "default"},
            "spec": {
                "clusterGUID": uuid.uuid4().hex,
                "clusterType": cluster_type,
                "calicoVersion": f"pycalico-{__version__}",
                "datastoreReady": True,
            },
        }
        try:
            return client.create(decode(doc))
        except AlreadyExists:
            return client.get(info, "default")
    cur_spec = current.get("spec") or {}
    if cur_spec.get("datastoreReady") is None or not cur_spec.get("clusterGUID"):

        def change(obj: Obj) -> Obj:
            spec = obj.setdefault("spec", {})
            if spec.get("datastoreReady") is None:
                spec["datastoreReady"] = True
            spec["clusterGUID"] = spec.get("clusterGUID") or uuid.uuid4().hex
            return obj

        return client.modify(info, "default", "", change)
    return current


def write_atomic(path: str, text: str) -> None:
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run_startup(
    ds: Datastore,
    settings: NodeSettings,
    interfaces: Sequence[Interface],
    route_lookup: RouteLookup | None = None,
) -> StartupResult:
    """Steps 2-5 of the module docstring (the caller handles the MTU file)."""
    client = ResourceClient(ds)
    ipv4 = resolve_ip(settings, interfaces, 4, route_lookup)
    ipv6 = resolve_ip(settings, interfaces, 6, route_lookup)
    if ipv4 is None and ipv6 is None:
        raise StartupError("IP and IP6: at least one address family must be configured")
    node = ensure_node(client, settings, ipv4, ipv6)
    result = StartupResult(node=node, ipv4=ipv4, ipv6=ipv6)
    result.created_pool = ensure_default_pool(client, settings)
    result.created_pool6 = ensure_default_ipv6_pool(client, settings, ipv6, settings.cluster_type)
    result.node = ensure_tunnel_addresses(ds, settings.node_name, result)
    ensure_cluster_information(client, settings.cluster_type)
    return result
