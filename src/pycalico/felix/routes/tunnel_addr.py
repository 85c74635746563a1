"""A node's tunnel addresses: allocate from IPAM and record them on its Node resource.

:func:`ensure_tunnel_addresses` is what calico-node's ``allocateip`` does at start-up and
whenever pools change: for a VXLAN pool the node gets ``spec.ipv4VXLANTunnelAddr`` (IPAM handle
``vxlan-tunnel-addr-<node>``) and a ``spec.vxlanTunnelMACAddr`` (random, locally administered,
kept once chosen); for an IPIP pool ``spec.bgp.ipv4IPIPTunnelAddr`` (handle
``ipip-tunnel-addr-<node>``); for an IPv6 VXLAN pool (and a node with ``bgp.ipv6Address``)
``spec.ipv6VXLANTunnelAddr`` + ``spec.vxlanTunnelMACAddrV6``. When no pool needs a tunnel
type any more its address is released and removed from the Node. Reusable by the calico-node
daemon and the route agent.

Invariants: IPAM does the allocation (CAS inside); the Node write is a CAS retried on
Conflict; the function is idempotent (a second call writes nothing); errors from IPAM (no
address available) are returned as problems, never raised, so routing keeps working.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

from pycalico.datastore.base import Conflict, Datastore, NotFound
from pycalico.errors import CalicoError

log = logging.getLogger(__name__)
RETRIES = 10
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def random_mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{x:02x}" for x in b)


# Tunnel type -> (IP version, pool mode field, Node field path, Node MAC field or None).
TUNNELS: dict[str, tuple[int, str, tuple[str, ...], str | None]] = {
    "vxlan": (4, "vxlanMode", ("ipv4VXLANTunnelAddr",), "vxlanTunnelMACAddr"),
    "vxlan-v6": (6, "vxlanMode", ("ipv6VXLANTunnelAddr",), "vxlanTunnelMACAddrV6"),
    "ipip": (4, "ipipMode", ("bgp", "ipv4IPIPTunnelAddr"), None),
}


def _mode_pools(pools: list[dict[str, Any]]) -> dict[str, list[IPNet]]:
    """Enabled pools per tunnel type."""
    out: dict[str, list[IPNet]] = {t: [] for t in TUNNELS}
    for p in pools:
        spec = p.get("spec") or {}
        try:
            net = ipaddress.ip_network(str(spec.get("cidr")), strict=False)
        except ValueError:
            continue
        if spec.get("disabled"):
            continue
        for tunnel, (version, mode, _, _) in TUNNELS.items():
            if net.version == version and (spec.get(mode) or "Never") != "Never":
                out[tunnel].append(net)
    return out


def _set_addrs(spec: dict[str, Any], addrs: dict[str, str | None]) -> None:
    for tunnel, addr in addrs.items():
        _, _, path, mac_field = TUNNELS[tunnel]
        parent = spec
        if len(path) == 2:
            if addr is None and path[0] not in spec:
                continue
            parent = spec.setdefault(path[0], {})
        if addr:
            parent[path[-1]] = addr
            if mac_field:
                spec.setdefault(mac_field, random_mac())
        else:
            parent.pop(path[-1], None)


def ensure_tunnel_addresses(ds: Datastore, node_name: str) -> tuple[bool, list[str]]:
    """Make ``node_name``'s Node carry the tunnel addresses its pools need.

    Returns (Node changed, problems). Raises NotFound if the Node does not exist.
    """
    from pycalico.ipam import IPAM, TUNNEL_TYPES

    ipam = IPAM(ds)
    problems: list[str] = []
    mode_pools = _mode_pools(list(ds.list("IPPool").items))
    has_v6 = bool(
        ((ds.get("Node", node_name).get("spec") or {}).get("bgp") or {}).get("ipv6Address")
    )
    addrs: dict[str, str | None] = {}
    for tunnel, nets in mode_pools.items():
        if tunnel == "vxlan-v6" and not has_v6:
            nets = []  # an IPv6 VTEP needs the node's IPv6 address
        if not nets:
            addrs[tunnel] = None
            continue
        try:
            held = ipam.get_ips_by_handle(TUNNEL_TYPES[tunnel][0] + node_name)
            if held and not any(ip in n for ip in held for n in nets):
                # Its pool no longer has this tunnel type (or is gone): take a fresh one.
                ipam.release_tunnel_address(node_name, tunnel)
            addrs[tunnel] = str(ipam.assign_tunnel_address(node_name, tunnel).ip)
        except CalicoError as e:
            problems.append(f"{tunnel} tunnel address for {node_name}: {e}")
    changed = False
    for _ in range(RETRIES):
        node = ds.get("Node", node_name)
        spec = node.setdefault("spec", {})
        before = repr(spec)
        _set_addrs(spec, addrs)
        if repr(spec) == before:
            break
        try:
            ds.update(node)
        except Conflict:
            continue
        log.info("node %s: tunnel addresses %s", node_name, addrs)
        changed = True
        break
    else:
        problems.append(f"node {node_name}: too many conflicts writing tunnel addresses")
    # Release addresses of tunnel types no pool needs any more (after the Node stopped
    # naming them).
    for tunnel in TUNNELS:
        if tunnel in addrs and addrs[tunnel] is None:
            try:
                ipam.release_tunnel_address(node_name, tunnel)
            except (CalicoError, NotFound) as e:
                problems.append(f"release {tunnel} tunnel address: {e}")
    return changed, problems
