"""A node's tunnel addresses: allocate from IPAM and record them on its Node resource.

:func:`ensure_tunnel_addresses` is what calico-node's ``allocateip`` does at start-up and
whenever pools change: for a VXLAN pool the node gets ``spec.ipv4VXLANTunnelAddr`` (IPAM handle
``vxlan-tunnel-addr-<node>``) and a ``spec.vxlanTunnelMACAddr`` (random, locally administered,
kept once chosen); for an IPIP pool ``spec.bgp.ipv4IPIPTunnelAddr`` (handle
``ipip-tunnel-addr-<node>``). When no pool needs a tunnel type any more its address is
released and removed from the Node. Reusable by the calico-node daemon and the route agent.

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


def random_mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{x:02x}" for x in b)


def _mode_pools(pools: list[dict[str, Any]]) -> dict[str, list[ipaddress.IPv4Network]]:
    """Enabled IPv4 pools per tunnel type (``vxlan``/``ipip``)."""
    out: dict[str, list[ipaddress.IPv4Network]] = {"vxlan": [], "ipip": []}
    for p in pools:
        spec = p.get("spec") or {}
        try:
            net = ipaddress.ip_network(str(spec.get("cidr")), strict=False)
        except ValueError:
            continue
        if not isinstance(net, ipaddress.IPv4Network) or spec.get("disabled"):
            continue
        if (spec.get("vxlanMode") or "Never") != "Never":
            out["vxlan"].append(net)
        if (spec.get("ipipMode") or "Never") != "Never":
            out["ipip"].append(net)
    return out


def _set_addrs(spec: dict[str, Any], addrs: dict[str, str | None]) -> None:
    bgp = dict(spec.get("bgp") or {})
    if "vxlan" in addrs:
        if addrs["vxlan"]:
            spec["ipv4VXLANTunnelAddr"] = addrs["vxlan"]
            spec.setdefault("vxlanTunnelMACAddr", random_mac())
        else:
            spec.pop("ipv4VXLANTunnelAddr", None)
    if "ipip" in addrs:
        if addrs["ipip"]:
            bgp["ipv4IPIPTunnelAddr"] = addrs["ipip"]
        else:
            bgp.pop("ipv4IPIPTunnelAddr", None)
        if bgp or "bgp" in spec:
            spec["bgp"] = bgp


def ensure_tunnel_addresses(ds: Datastore, node_name: str) -> tuple[bool, list[str]]:
    """Make ``node_name``'s Node carry the tunnel addresses its pools need.

    Returns (Node changed, problems). Raises NotFound if the Node does not exist.
    """
    from pycalico.ipam import IPAM, TUNNEL_TYPES

    ipam = IPAM(ds)
    problems: list[str] = []
    mode_pools = _mode_pools(list(ds.list("IPPool").items))
    addrs: dict[str, str | None] = {}
    for tunnel, nets in mode_pools.items():
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
    for tunnel in ("vxlan", "ipip"):
        if tunnel in addrs and addrs[tunnel] is None:
            try:
                ipam.release_tunnel_address(node_name, tunnel)
            except (CalicoError, NotFound) as e:
                problems.append(f"release {tunnel} tunnel address: {e}")
    return changed, problems
