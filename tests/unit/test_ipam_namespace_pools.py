"""IPPool ``namespaceSelector``: pool selection by the workload's namespace labels.

Calico's rules (libcalico-go ``determinePools``): with no requested pools a pool is used
only when its nodeSelector matches the node and its namespaceSelector matches the
namespace (no namespaceSelector matches every namespace; no namespace evaluates as no
labels); requested pools (CNI ``ipv4_pools``, the ``cni.projectcalico.org/ipv4pools``
annotation) are used as given, whatever their selectors.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pycalico.datastore.memory import MemoryDatastore
from pycalico.ipam import IPAM, NoAddressesAvailable
from pycalico.ipam.pools import select_pools
from pycalico.model.network import IPPool
from pycalico.selector import parse
from tests.kit.builders import ip_pool, namespace, node
from tests.kit.fakes import seed
from tests.unit.test_cni_plugin import World

TENANT_A = ipaddress.ip_network("10.1.0.0/24")
SHARED = ipaddress.ip_network("10.9.0.0/24")


@pytest.fixture
def ds() -> MemoryDatastore:
    ds = MemoryDatastore()
    seed(
        ds,
        [
            ip_pool("tenant-a", str(TENANT_A), namespaceSelector="tenant == 'a'", blockSize=28),
            ip_pool("shared", str(SHARED), namespaceSelector="!has(tenant)", blockSize=28),
            node("n1", labels={"rack": "r1"}),
        ],
    )
    return ds


def _net(ip: Any) -> ipaddress.IPv4Network:
    for n in (TENANT_A, SHARED):
        if ip.ip in n:
            return n  # type: ignore[return-value]
    raise AssertionError(f"{ip} is in neither pool")


def test_pods_of_a_selected_namespace_get_addresses_only_from_its_pool(
    ds: MemoryDatastore,
) -> None:
    ipam = IPAM(ds)
    # 40 addresses: more than two /28 blocks, so claims and affine-block reuse both happen,
    # and the host's affine blocks of the other pool are there to be (wrongly) used.
    for i in range(20):
        (a,), _ = ipam.auto_assign(1, 0, f"a{i}", None, "n1", namespace_labels={"tenant": "a"})
        (s,), _ = ipam.auto_assign(1, 0, f"s{i}", None, "n1", namespace_labels={"team": "x"})
        assert (_net(a), _net(s)) == (TENANT_A, SHARED)
    # a workload outside any namespace evaluates the selectors on no labels
    (o,), _ = ipam.auto_assign(1, 0, "o", None, "n1")
    assert _net(o) == SHARED
    with pytest.raises(NoAddressesAvailable, match="no usable IPv4 pools"):
        ipam.auto_assign(1, 0, "b", None, "n1", namespace_labels={"tenant": "b"})


def test_a_pool_without_namespace_selector_serves_every_namespace(ds: MemoryDatastore) -> None:
    ds.delete("IPPool", "shared")
    seed(ds, [ip_pool("open", "10.7.0.0/24", blockSize=28)])
    ipam = IPAM(ds)
    pools = ipam.store.pools()
    names = [p.name for p in select_pools(pools, 4, None, {}, "Workload", {"tenant": "a"})]
    # both pools match tenant a (Calico: no selector selects every namespace)
    assert sorted(names) == ["open", "tenant-a"]
    assert [p.name for p in select_pools(pools, 4, None, {}, "Workload", None)] == ["open"]
    (b,), _ = ipam.auto_assign(1, 0, "b", None, "n1", namespace_labels={"tenant": "b"})
    assert b.ip in ipaddress.ip_network("10.7.0.0/24")


def test_node_and_namespace_selectors_must_both_match(ds: MemoryDatastore) -> None:
    seed(
        ds,
        [
            ip_pool("r2-a", "10.2.0.0/24", nodeSelector="rack == 'r2'", namespaceSelector="all()"),
            node("n2", labels={"rack": "r2"}),
        ],
    )
    ds.delete("IPPool", "tenant-a")
    ds.delete("IPPool", "shared")
    ipam = IPAM(ds)
    (ip,), _ = ipam.auto_assign(1, 0, "x", None, "n2", namespace_labels={"tenant": "a"})
    assert ip.ip in ipaddress.ip_network("10.2.0.0/24")
    with pytest.raises(NoAddressesAvailable):
        ipam.auto_assign(1, 0, "y", None, "n1", namespace_labels={"tenant": "a"})


def test_requested_pools_ignore_node_and_namespace_selectors(ds: MemoryDatastore) -> None:
    seed(ds, [ip_pool("r2", "10.2.0.0/24", nodeSelector="rack == 'r2'")])
    ipam = IPAM(ds)
    (ip,), _ = ipam.auto_assign(
        1, 0, "x", None, "n1", ipv4_pools=["tenant-a"], namespace_labels={"tenant": "b"}
    )
    assert ip.ip in TENANT_A
    (ip,), _ = ipam.auto_assign(1, 0, "y", None, "n1", ipv4_pools=["10.2.0.0/24"])
    assert ip.ip in ipaddress.ip_network("10.2.0.0/24")


def test_tunnel_addresses_still_come_only_from_pools_selecting_the_node() -> None:
    # Requested pools skip the selectors, so the tunnel path must filter by node itself
    # (Calico's allocateip does) and a namespace-selected pool never serves tunnels.
    ds = MemoryDatastore()
    seed(
        ds,
        [
            ip_pool("r2", "10.2.0.0/24", nodeSelector="rack == 'r2'", vxlanMode="Always"),
            ip_pool("ns", "10.3.0.0/24", namespaceSelector="all()", vxlanMode="Always"),
            ip_pool("any", "10.4.0.0/24", vxlanMode="Always"),
            node("n1", labels={"rack": "r1"}),
            node("n2", labels={"rack": "r2"}),
        ],
    )
    ipam = IPAM(ds)
    for _ in range(3):
        assert ipam.assign_tunnel_address("n1", "vxlan").ip in ipaddress.ip_network("10.4.0.0/24")
        ipam.release_tunnel_address("n1", "vxlan")
    ds.delete("IPPool", "any")
    with pytest.raises(NoAddressesAvailable):
        ipam.assign_tunnel_address("n1", "vxlan")
    assert ipam.assign_tunnel_address("n2", "vxlan").ip in ipaddress.ip_network("10.2.0.0/24")


def test_pool_namespace_selection_matches_the_parser() -> None:
    for labels in ({}, {"tenant": "a"}, {"tenant": "b", "x": "y"}):
        for sel in ("all()", "tenant == 'a'", "!has(tenant)", "has(x) || tenant == 'a'"):
            pool = IPPool.from_resource(
                {
                    "metadata": {"name": "p"},
                    "spec": {"cidr": "10.0.0.0/16", "namespaceSelector": sel},
                }
            )
            assert pool.selects_namespace(labels) is parse(sel).evaluate(labels)
            assert pool.selects_namespace(None) is parse(sel).evaluate({})
    plain = IPPool.from_resource({"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16"}})
    assert plain.selects_namespace({"tenant": "a"}) and plain.selects_namespace(None)


# ------------------------------------------------------------------ the CNI plugin


@pytest.fixture
def w() -> World:
    w = World()
    w.ds.delete("IPPool", "pool1")
    seed(
        w.ds,
        [
            ip_pool("tenant-a", str(TENANT_A), namespaceSelector="tenant == 'a'", blockSize=28),
            ip_pool("shared", str(SHARED), namespaceSelector="!has(tenant)", blockSize=28),
            namespace("ns-a", labels={"tenant": "a"}),
            namespace("ns-x"),
        ],
    )
    return w


def _add(w: World, ns: str, cid: str, **conf: Any) -> tuple[int, Any]:
    conf.setdefault("policy", {"type": "k8s"})
    return w.call("ADD", cid=cid, args=f"K8S_POD_NAMESPACE={ns};K8S_POD_NAME={cid}", **conf)


def test_cni_add_picks_the_pool_by_the_namespace_labels(w: World) -> None:
    for i in range(3):
        rc, res = _add(w, "ns-a", f"a{i}")
        assert rc == 0, res
        assert ipaddress.ip_interface(res["ips"][0]["address"]).ip in TENANT_A
        rc, res = _add(w, "ns-x", f"x{i}")
        assert rc == 0, res
        assert ipaddress.ip_interface(res["ips"][0]["address"]).ip in SHARED


def test_cni_add_without_k8s_policy_does_not_read_the_namespace(w: World) -> None:
    # as Calico: no Kubernetes context, so the namespace has no labels
    rc, res = _add(w, "ns-a", "a", policy={})
    assert rc == 0, res
    assert ipaddress.ip_interface(res["ips"][0]["address"]).ip in SHARED


def test_cni_add_in_a_missing_namespace_fails_naming_it(w: World) -> None:
    rc, res = _add(w, "ghost", "g")
    assert rc != 0
    assert "ghost" in res["msg"] and "Namespace" in res["details"]
    assert w.handles() == [] and w.weps() == []


def test_cni_namespace_pool_annotation_overrides_config_and_selectors(w: World) -> None:
    ns = namespace("ns-y", labels={"tenant": "a"})
    ns["metadata"]["annotations"] = {"cni.projectcalico.org/ipv4pools": '["shared"]'}
    seed(w.ds, [ns])
    rc, res = _add(w, "ns-y", "y", ipam={"type": "calico-ipam", "ipv4_pools": ["tenant-a"]})
    assert rc == 0, res
    assert ipaddress.ip_interface(res["ips"][0]["address"]).ip in SHARED
    # the configuration's pools are used as given when there is no annotation
    rc, res = _add(w, "ns-x", "z", ipam={"type": "calico-ipam", "ipv4_pools": ["tenant-a"]})
    assert rc == 0, res
    assert ipaddress.ip_interface(res["ips"][0]["address"]).ip in TENANT_A


def test_cni_malformed_pool_annotation_is_an_error_naming_it(w: World) -> None:
    ns = namespace("ns-bad")
    ns["metadata"]["annotations"] = {"cni.projectcalico.org/ipv4pools": "shared"}
    seed(w.ds, [ns])
    rc, res = _add(w, "ns-bad", "b")
    assert rc != 0 and "cni.projectcalico.org/ipv4pools" in res["msg"]
    assert w.handles() == [] and w.weps() == []
