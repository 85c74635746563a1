"""calico-node start-up logic over the memory datastore."""

from __future__ import annotations

import ipaddress

import pytest

from pycalico.client import ResourceClient
from pycalico.datastore.memory import MemoryDatastore
from pycalico.node.autodetect import Interface
from pycalico.node.startup import (
    NodeSettings,
    StartupError,
    ensure_cluster_information,
    ensure_default_ipv6_pool,
    resolve_ipv4,
    run_startup,
    ula_prefix,
    vxlan_mac,
)

IFS = [
    Interface(1, "lo", (ipaddress.ip_interface("127.0.0.1/8"),)),
    Interface(2, "eth0", (ipaddress.ip_interface("198.18.0.7/24"),)),
]


def settings(**env: str) -> NodeSettings:
    return NodeSettings.from_env({"NODENAME": "node1", **env})


def pool(ds: MemoryDatastore, name: str, cidr: str, **spec: object) -> None:
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": name},
            "spec": {"cidr": cidr, "blockSize": 26, **spec},
        }
    )


def test_node_name_from_env_else_hostname() -> None:
    assert NodeSettings.from_env({"NODENAME": "a"}).node_name == "a"
    assert NodeSettings.from_env({}, hostname=lambda: "Host-1").node_name == "host-1"


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"CALICO_IPV4POOL_IPIP": "sometimes"}, "CALICO_IPV4POOL_IPIP"),
        ({"CALICO_IPV4POOL_CIDR": "nope"}, "CALICO_IPV4POOL_CIDR"),
        ({"CALICO_IPV4POOL_CIDR": "fd00::/64"}, "not an IPv4"),
        ({"CALICO_IPV4POOL_BLOCK_SIZE": "40"}, "BLOCK_SIZE"),
        ({"CALICO_IPV4POOL_IPIP": "Always", "CALICO_IPV4POOL_VXLAN": "Always"}, "both"),
        ({"CALICO_IPV4POOL_NODE_SELECTOR": "bad =="}, "CALICO_IPV4POOL_NODE_SELECTOR"),
        ({"CALICO_IPV6POOL_CIDR": "nope"}, "CALICO_IPV6POOL_CIDR: 'nope' is not a CIDR"),
        ({"CALICO_IPV6POOL_CIDR": "10.0.0.0/8"}, "not an IPv6"),
        (
            {"CALICO_IPV6POOL_BLOCK_SIZE": "112"},
            r"CALICO_IPV6POOL_BLOCK_SIZE: 112 is not in 116\.\.128",
        ),
        ({"CALICO_IPV6POOL_BLOCK_SIZE": "x"}, "CALICO_IPV6POOL_BLOCK_SIZE: 'x' is not a number"),
        ({"CALICO_IPV6POOL_CIDR": "fd00::/124"}, "smaller than the block size /122"),
        ({"CALICO_IPV6POOL_VXLAN": "sometimes"}, "CALICO_IPV6POOL_VXLAN"),
        ({"CALICO_IPV6POOL_NODE_SELECTOR": "a ==="}, "CALICO_IPV6POOL_NODE_SELECTOR"),
    ],
)
def test_bad_env_names_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(StartupError, match=match):
        settings(**env)


def test_resolve_ip_forms() -> None:
    assert resolve_ipv4(settings(IP="10.1.2.3/16"), IFS) == "10.1.2.3/16"
    # bare address: subnet learnt from the interface holding it, else /32
    assert resolve_ipv4(settings(IP="198.18.0.7"), IFS) == "198.18.0.7/24"
    assert resolve_ipv4(settings(IP="10.9.9.9"), IFS) == "10.9.9.9/32"
    assert resolve_ipv4(settings(), IFS) == "198.18.0.7/24"
    assert resolve_ipv4(settings(IP="autodetect"), IFS) == "198.18.0.7/24"
    assert resolve_ipv4(settings(IP="none"), IFS) is None
    with pytest.raises(StartupError, match=r"IP: 'x\.y'"):
        resolve_ipv4(settings(IP="x.y"), IFS)


def test_first_start_creates_node_pool_clusterinfo() -> None:
    ds = MemoryDatastore()
    r = run_startup(ds, settings(), IFS)
    assert r.created_pool
    node = ds.get("Node", "node1")
    assert node["spec"]["bgp"]["ipv4Address"] == "198.18.0.7/24"
    p = ds.get("IPPool", "default-ipv4-ippool")["spec"]
    assert (p["cidr"], p["ipipMode"], p["vxlanMode"], p["natOutgoing"], p["blockSize"]) == (
        "192.168.0.0/16", "Never", "Never", True, 26,
    )  # fmt: skip
    ci = ds.get("ClusterInformation", "default")["spec"]
    assert ci["datastoreReady"] is True and len(ci["clusterGUID"]) == 32
    # no tunnel pools: no tunnel addresses
    assert "ipv4VXLANTunnelAddr" not in node["spec"]
    assert "ipv4IPIPTunnelAddr" not in node["spec"]["bgp"]


def test_pool_env_is_used_and_no_default_pools_disables() -> None:
    ds = MemoryDatastore()
    run_startup(
        ds,
        settings(
            CALICO_IPV4POOL_CIDR="10.50.0.0/16",
            CALICO_IPV4POOL_IPIP="crosssubnet",
            CALICO_IPV4POOL_NAT_OUTGOING="false",
            CALICO_IPV4POOL_BLOCK_SIZE="28",
        ),
        IFS,
    )
    p = ds.get("IPPool", "default-ipv4-ippool")["spec"]
    assert (p["cidr"], p["ipipMode"], p["natOutgoing"], p["blockSize"]) == (
        "10.50.0.0/16", "CrossSubnet", False, 28,
    )  # fmt: skip
    ds2 = MemoryDatastore()
    r = run_startup(ds2, settings(NO_DEFAULT_POOLS="true"), IFS)
    assert not r.created_pool and ds2.list("IPPool").items == []


def test_existing_pool_means_no_default_pool() -> None:
    ds = MemoryDatastore()
    pool(ds, "mine", "10.244.0.0/16")
    assert not run_startup(ds, settings(), IFS).created_pool
    assert [p["metadata"]["name"] for p in ds.list("IPPool").items] == ["mine"]


def test_existing_node_keeps_labels_and_fields_and_rerun_is_idempotent() -> None:
    ds = MemoryDatastore()
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "Node",
            "metadata": {"name": "node1", "labels": {"route-reflector": "true"}},
            "spec": {"bgp": {"ipv4Address": "1.1.1.1/24", "routeReflectorClusterID": "244.0.0.1"}},
        }
    )
    run_startup(ds, settings(IP="198.18.0.7/24", AS="64999"), IFS)
    n = ds.get("Node", "node1")
    assert n["metadata"]["labels"] == {"route-reflector": "true"}
    assert n["spec"]["bgp"] == {
        "ipv4Address": "198.18.0.7/24",
        "routeReflectorClusterID": "244.0.0.1",
        "asNumber": 64999,
    }
    rev = ds.list("Node").revision
    run_startup(ds, settings(IP="198.18.0.7/24", AS="64999"), IFS)
    assert (
        ds.get("Node", "node1")["metadata"]["resourceVersion"] == n["metadata"]["resourceVersion"]
    )
    assert ds.list("Node").revision == rev


def test_conflicting_ip_refuses_to_start() -> None:
    ds = MemoryDatastore()
    run_startup(ds, NodeSettings.from_env({"NODENAME": "other", "IP": "198.18.0.7/24"}), IFS)
    with pytest.raises(StartupError, match="already in use by node other"):
        run_startup(ds, settings(), IFS)


def test_tunnel_addresses_follow_pools() -> None:
    ds = MemoryDatastore()
    pool(ds, "vx", "10.244.0.0/16", vxlanMode="Always")
    r = run_startup(ds, settings(), IFS)
    spec = ds.get("Node", "node1")["spec"]
    assert r.vxlan_tunnel and ipaddress.ip_address(r.vxlan_tunnel) in ipaddress.ip_network(
        "10.244.0.0/16"
    )
    assert spec["ipv4VXLANTunnelAddr"] == r.vxlan_tunnel
    assert spec["vxlanTunnelMACAddr"] == vxlan_mac("node1")
    # the same address on a restart
    assert run_startup(ds, settings(), IFS).vxlan_tunnel == r.vxlan_tunnel
    # switch the pool to IPIP: VXLAN address released, IPIP address recorded
    p = ds.get("IPPool", "vx")
    p["spec"]["vxlanMode"], p["spec"]["ipipMode"] = "Never", "Always"
    ds.update(p)
    r2 = run_startup(ds, settings(), IFS)
    spec = ds.get("Node", "node1")["spec"]
    assert "ipv4VXLANTunnelAddr" not in spec
    assert spec["vxlanTunnelMACAddr"] == vxlan_mac("node1")  # a VTEP MAC is kept once chosen
    assert spec["bgp"]["ipv4IPIPTunnelAddr"] == r2.ipip_tunnel


def test_vxlan_mac_is_stable_unicast_locally_administered() -> None:
    mac = vxlan_mac("node1")
    first = int(mac.split(":")[0], 16)
    assert mac == vxlan_mac("node1") != vxlan_mac("node2")
    assert first & 0x02 and not first & 0x01


def test_cluster_information_kept_when_present() -> None:
    ds = MemoryDatastore()
    c = ResourceClient(ds)
    a = ensure_cluster_information(c, "k8s,bgp")
    b = ensure_cluster_information(c, "other")
    assert a["spec"]["clusterGUID"] == b["spec"]["clusterGUID"]
    assert b["spec"]["clusterType"] == "k8s,bgp"


def test_pod_mtu() -> None:
    """Start-up's MTU file uses Felix's calc rule (one rule for both)."""
    from pycalico.felix.calc.routes import node_pod_mtu
    from pycalico.model.felixconfig import FelixConfig
    from pycalico.model.network import IPPool

    net = ipaddress.ip_network
    ipip = IPPool("i", net("10.0.0.0/16"), ipip_mode="Always")
    vx = IPPool("v", net("10.1.0.0/16"), vxlan_mode="CrossSubnet")
    vx6 = IPPool("v6", net("fd00::/48"), vxlan_mode="Always")
    cfg = FelixConfig()
    assert node_pod_mtu([], cfg, 1500) == 1500
    assert node_pod_mtu([ipip], cfg, 1500) == 1480
    assert node_pod_mtu([vx], cfg, 1500) == 1450
    assert node_pod_mtu([ipip, vx], cfg, 1500) == 1450
    assert node_pod_mtu([vx], FelixConfig(vxlan_mtu=8000), 9000) == 8000
    assert node_pod_mtu([ipip, vx6], cfg, 1500) == 1430  # the smaller over both families


def test_ipv6_address_when_ip6_set() -> None:
    ifs = [*IFS, Interface(3, "eth1", (ipaddress.ip_interface("fd00:1::7/64"),))]
    ds = MemoryDatastore()
    r = run_startup(ds, settings(IP6="autodetect"), ifs)
    assert r.ipv6 == "fd00:1::7/64"
    spec = ds.get("Node", "node1")["spec"]
    assert spec["bgp"]["ipv6Address"] == "fd00:1::7/64"
    assert [a["address"] for a in spec["addresses"]] == ["198.18.0.7", "fd00:1::7"]
    # IP6 unset: IPv6 off (Calico's default); IP6=none removes the address again
    run_startup(ds, settings(), ifs)
    assert "ipv6Address" not in ds.get("Node", "node1")["spec"]["bgp"]
    with pytest.raises(StartupError, match=r"IP6: '10\.0\.0\.1' is not an IPv6"):
        run_startup(ds, settings(IP6="10.0.0.1"), ifs)
    with pytest.raises(StartupError, match="at least one address family"):
        run_startup(ds, settings(IP="none"), ifs)
    # v6 conflicts are caught too
    run_startup(ds, settings(IP6="fd00:1::7/64"), ifs)
    other = NodeSettings.from_env({"NODENAME": "n2", "IP": "198.18.0.8/24", "IP6": "fd00:1::7"})
    with pytest.raises(StartupError, match=r"IP6: fd00:1::7 is already in use by node node1"):
        run_startup(ds, other, ifs)


IFS6 = [*IFS, Interface(3, "eth1", (ipaddress.ip_interface("fd00:1::7/64"),))]


def _pool_spec(ds: MemoryDatastore, name: str) -> dict[str, object]:
    spec: dict[str, object] = ds.get("IPPool", name)["spec"]
    return spec


def test_ula_prefix_is_a_stable_ula_48_per_guid() -> None:
    a, b = ula_prefix("0123abcd"), ula_prefix("ffff0000")
    for p in (a, b):
        net = ipaddress.ip_network(p)
        assert net.prefixlen == 48 and net.subnet_of(ipaddress.ip_network("fd00::/8"))
    assert a == ula_prefix("0123abcd") != b


def test_ipv6_pool_from_env_cidr_even_without_node_ipv6() -> None:
    ds = MemoryDatastore()
    r = run_startup(
        ds,
        settings(
            CALICO_IPV6POOL_CIDR="fd10:20::/56",
            CALICO_IPV6POOL_VXLAN="Always",
            CALICO_IPV6POOL_NAT_OUTGOING="true",
            CALICO_IPV6POOL_BLOCK_SIZE="120",
            CALICO_IPV6POOL_NODE_SELECTOR="has(v6)",
            CALICO_IPV4POOL_NODE_SELECTOR="!has(v6)",
        ),
        IFS,
    )
    assert r.ipv6 is None and r.created_pool and r.created_pool6
    p6 = _pool_spec(ds, "default-ipv6-ippool")
    assert (
        p6["cidr"], p6["vxlanMode"], p6["ipipMode"], p6["natOutgoing"], p6["blockSize"],
        p6["nodeSelector"],
    ) == ("fd10:20::/56", "Always", "Never", True, 120, "has(v6)")  # fmt: skip
    assert _pool_spec(ds, "default-ipv4-ippool")["nodeSelector"] == "!has(v6)"
    # idempotent: a restart creates nothing more
    r2 = run_startup(ds, settings(CALICO_IPV6POOL_CIDR="fd10:20::/56"), IFS)
    assert not r2.created_pool and not r2.created_pool6
    assert len(ds.list("IPPool").items) == 2


def test_ipv6_pool_defaults_to_ula_from_cluster_guid_when_node_has_ipv6() -> None:
    ds = MemoryDatastore()
    r = run_startup(ds, settings(IP6="autodetect"), IFS6)
    assert r.ipv6 == "fd00:1::7/64" and r.created_pool6
    guid = ds.get("ClusterInformation", "default")["spec"]["clusterGUID"]
    p6 = _pool_spec(ds, "default-ipv6-ippool")
    assert (p6["cidr"], p6["vxlanMode"], p6["natOutgoing"], p6["blockSize"]) == (
        ula_prefix(guid), "Never", False, 122,
    )  # fmt: skip
    assert p6["nodeSelector"] == "all()"
    # a second node derives the same CIDR from the same GUID and creates nothing
    other = NodeSettings.from_env({"NODENAME": "n2", "IP": "198.18.0.8/24", "IP6": "fd00:1::8"})
    assert not run_startup(ds, other, IFS6).created_pool6


def test_ipv6_pool_not_created_without_ipv6_or_when_disabled_or_present() -> None:
    ds = MemoryDatastore()
    assert not run_startup(ds, settings(), IFS6).created_pool6  # IPv6 off (IP6 unset)
    assert [p["metadata"]["name"] for p in ds.list("IPPool").items] == ["default-ipv4-ippool"]
    ds2 = MemoryDatastore()
    r = run_startup(ds2, settings(IP6="autodetect", NO_DEFAULT_POOLS="true"), IFS6)
    assert not r.created_pool6 and ds2.list("IPPool").items == []
    r = run_startup(ds2, settings(CALICO_IPV6POOL_CIDR="fd10::/48", NO_DEFAULT_POOLS="true"), IFS6)
    assert not r.created_pool6 and ds2.list("IPPool").items == []
    ds3 = MemoryDatastore()
    pool(ds3, "v6", "fd99::/48", blockSize=122)
    r = run_startup(ds3, settings(IP6="autodetect", CALICO_IPV6POOL_CIDR="fd10::/48"), IFS6)
    assert not r.created_pool6 and not r.created_pool  # v4 rule: any pool blocks the v4 default
    assert [p["metadata"]["name"] for p in ds3.list("IPPool").items] == ["v6"]


def test_ipv6_pool_after_ipv4_only_start() -> None:
    # IPv4-only first start, then IPv6 enabled: the v4 pool does not block the v6 default.
    ds = MemoryDatastore()
    run_startup(ds, settings(), IFS6)
    assert run_startup(ds, settings(IP6="autodetect"), IFS6).created_pool6
    assert {p["metadata"]["name"] for p in ds.list("IPPool").items} == {
        "default-ipv4-ippool",
        "default-ipv6-ippool",
    }


def test_ipv6_pool_fills_missing_cluster_guid() -> None:
    ds = MemoryDatastore()
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "ClusterInformation",
            "metadata": {"name": "default"},
            "spec": {"datastoreReady": False},
        }
    )
    c = ResourceClient(ds)
    assert ensure_default_ipv6_pool(c, settings(IP6="autodetect"), "fd00:1::7/64")
    ci = ds.get("ClusterInformation", "default")["spec"]
    assert len(ci["clusterGUID"]) == 32 and ci["datastoreReady"] is False
    assert _pool_spec(ds, "default-ipv6-ippool")["cidr"] == ula_prefix(ci["clusterGUID"])
