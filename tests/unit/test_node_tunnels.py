"""Tunnel addresses (calico-node's allocateip): the one ensure_tunnel_addresses (VXLAN v4/v6,
IPIP, MACs kept, release, CAS) and the component that re-runs it when pools or the Node
change."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest

from pycalico.datastore import Conflict
from pycalico.datastore.memory import MemoryDatastore
from pycalico.ipam import IPAM
from pycalico.node.tunnels import (
    TunnelAddressComponent,
    _mode_pools,
    ensure_tunnel_addresses,
    vxlan_mac,
)
from tests.kit import ip_pool, node, wait_for

N = ipaddress.IPv4Network


@pytest.fixture
def ds() -> MemoryDatastore:
    d = MemoryDatastore()
    d.create(ip_pool("p", "10.244.0.0/16", vxlan_mode="Always"))
    for i in (1, 2):
        d.create(node(f"n{i}", f"198.18.0.{i}/24"))
    return d


def test_ensure_tunnel_addresses_is_idempotent(ds: MemoryDatastore) -> None:
    out = ensure_tunnel_addresses(ds, "n1")
    assert out.changed and out.problems == []
    spec = ds.get("Node", "n1")["spec"]
    assert out.node["spec"] == spec
    assert ipaddress.ip_address(spec["ipv4VXLANTunnelAddr"]) in N("10.244.0.0/16")
    mac = spec["vxlanTunnelMACAddr"]
    assert int(mac[:2], 16) & 0x03 == 0x02  # locally administered unicast
    assert mac == vxlan_mac("n1")
    assert IPAM(ds).get_ips_by_handle("vxlan-tunnel-addr-n1") == [
        ipaddress.ip_address(spec["ipv4VXLANTunnelAddr"])
    ]
    again = ensure_tunnel_addresses(ds, "n1")
    assert (again.changed, again.problems) == (False, [])
    pool = ds.get("IPPool", "p")
    pool["spec"]["vxlanMode"] = "Never"
    pool["spec"]["ipipMode"] = "Always"
    ds.update(pool)
    out = ensure_tunnel_addresses(ds, "n1")
    spec = ds.get("Node", "n1")["spec"]
    assert out.changed and "ipv4VXLANTunnelAddr" not in spec and spec["vxlanTunnelMACAddr"] == mac
    assert spec["bgp"]["ipv4IPIPTunnelAddr"] == out.addrs["ipip"]
    assert IPAM(ds).get_ips_by_handle("vxlan-tunnel-addr-n1") == []
    # The IPIP pool is replaced by another: the address moves into the new pool.
    ds.delete("IPPool", "p")
    ds.create(ip_pool("q", "10.250.0.0/16", ipip_mode="Always"))
    ensure_tunnel_addresses(ds, "n1")
    new = ds.get("Node", "n1")["spec"]["bgp"]["ipv4IPIPTunnelAddr"]
    assert ipaddress.ip_address(new) in N("10.250.0.0/16")


def test_ipv6_vtep_needs_the_nodes_ipv6_address(ds: MemoryDatastore) -> None:
    ds.create(ip_pool("p6", "fd00:244::/48", vxlan_mode="Always"))
    ensure_tunnel_addresses(ds, "n1")
    assert "ipv6VXLANTunnelAddr" not in ds.get("Node", "n1")["spec"]
    node = ds.get("Node", "n1")
    node["spec"]["bgp"]["ipv6Address"] = "fd00:18::1/64"
    ds.update(node)
    out = ensure_tunnel_addresses(ds, "n1")
    spec = ds.get("Node", "n1")["spec"]
    assert ipaddress.ip_address(spec["ipv6VXLANTunnelAddr"]) in ipaddress.ip_network(
        "fd00:244::/48"
    )
    assert spec["vxlanTunnelMACAddrV6"] == vxlan_mac("n1", 6) != spec["vxlanTunnelMACAddr"]
    assert out.addrs["vxlan-v6"] == spec["ipv6VXLANTunnelAddr"]


def test_node_write_is_cas_retried(ds: MemoryDatastore) -> None:
    real_update = ds.update
    conflicts = [2]

    def flaky(obj: dict[str, Any]) -> dict[str, Any]:
        if conflicts[0] > 0:
            conflicts[0] -= 1
            raise Conflict("injected")
        return real_update(obj)

    ds.update = flaky  # type: ignore[method-assign]
    out = ensure_tunnel_addresses(ds, "n1")
    assert out.changed and out.problems == [] and conflicts == [0]
    assert ds.get("Node", "n1")["spec"]["ipv4VXLANTunnelAddr"] == out.addrs["vxlan"]


def test_component_follows_pools_and_its_node(ds: MemoryDatastore) -> None:
    comp = TunnelAddressComponent(ds, "n1", poll_interval=0.05)
    comp.start()
    try:
        wait_for(comp.in_sync, 5.0, 0.01)
        assert comp.alive()
        spec = ds.get("Node", "n1")["spec"]
        assert (
            spec["ipv4VXLANTunnelAddr"]
            and "ipv4VXLANTunnelAddr" not in ds.get("Node", "n2")["spec"]
        )  # only its own node
        runs = comp.runs
        time.sleep(0.3)  # our own Node write coming back through the watch changes nothing
        assert comp.runs == runs
        # A pool change is followed.
        pool = ds.get("IPPool", "p")
        pool["spec"]["vxlanMode"], pool["spec"]["ipipMode"] = "Never", "Always"
        ds.update(pool)
        wait_for(
            lambda: "ipv4IPIPTunnelAddr" in ds.get("Node", "n1")["spec"].get("bgp", {}), 5.0, 0.01
        )
        assert "ipv4VXLANTunnelAddr" not in ds.get("Node", "n1")["spec"]
        # Someone removes our address from the Node: it is put back.
        node = ds.get("Node", "n1")
        del node["spec"]["bgp"]["ipv4IPIPTunnelAddr"]
        ds.update(node)
        wait_for(
            lambda: "ipv4IPIPTunnelAddr" in ds.get("Node", "n1")["spec"].get("bgp", {}), 5.0, 0.01
        )
    finally:
        comp.stop()
    assert not comp.alive()


def test_tunnel_types_follow_the_model_pools() -> None:
    """Which tunnels the pools need is the model IPPool's encap/disabled: disabled and
    malformed pools need none, IPIP on an IPv6 pool is no IPIP."""
    pools = [
        ip_pool("off", "10.1.0.0/16", vxlan_mode="Always", disabled=True),
        ip_pool("bad", "10.2.0.0/16", ipip_mode="Sometimes"),
        ip_pool("v6", "fd00::/48", ipip_mode="Always"),
        ip_pool("x", "10.3.0.0/16", ipip_mode="CrossSubnet"),
    ]
    assert _mode_pools(pools) == {"vxlan": [], "vxlan-v6": [], "ipip": [N("10.3.0.0/16")]}
