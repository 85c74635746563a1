"""Records derived from datastore objects and the incremental record index."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.dns import cni_dns, resolv_conf
from pycalico.dns import records as R
from pycalico.dns.index import RecordIndex, Status
from pycalico.model import Endpoint, ItemID, NamedPort
from pycalico.model.network import IPPool, Node

ZONE = "pod.cluster.local"
NZONE = "node.cluster.local"


def wep(
    pod: str, ns: str, *ips: str, ports: list[dict[str, Any]] | None = None, iface: str = "eth0"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"pod": pod, "node": "n1", "ipNetworks": list(ips)}
    if ports is not None:
        spec["ports"] = ports
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {"name": f"n1-k8s-{pod}-{iface}", "namespace": ns},
        "spec": spec,
    }


def test_workload_records_a_aaaa_ptr_srv() -> None:
    obj = wep(
        "Web",
        "shop",
        "10.244.1.2/32",
        "fd00::2/128",
        ports=[
            {"name": "http", "protocol": "TCP", "port": 80},
            {"name": "", "protocol": "TCP", "port": 81},  # unnamed: no SRV
            {"name": "dns", "protocol": "UDP", "port": 53},
        ],
    )
    recs = set(R.workload_records(obj, ZONE))
    name = "web.shop.pod.cluster.local"
    assert recs == {
        R.Record(name, R.A, "10.244.1.2"),
        R.Record(name, R.AAAA, "fd00::2"),
        R.Record("2.1.244.10.in-addr.arpa", R.PTR, name),
        R.Record(ipaddress.ip_address("fd00::2").reverse_pointer, R.PTR, name),
        R.Record(f"_http._tcp.{name}", R.SRV, (0, 100, 80, name)),
        R.Record(f"_dns._udp.{name}", R.SRV, (0, 100, 53, name)),
    }


def test_plain_cni_workload_uses_workload_field() -> None:
    obj = wep("", "default", "10.0.0.1/32")
    obj["spec"]["workload"] = "abc123"
    assert R.Record("abc123.default.pod.cluster.local", R.A, "10.0.0.1") in R.workload_records(
        obj, ZONE
    )


def test_unusable_objects_give_no_records() -> None:
    assert R.workload_records(wep("", "shop", "10.0.0.1/32"), ZONE) == []
    assert R.workload_records(wep("x" * 64, "shop", "10.0.0.1/32"), ZONE) == []
    assert R.workload_records(wep("a..b", "shop", "10.0.0.1/32"), ZONE) == []
    assert R.workload_records({"kind": "WorkloadEndpoint", "spec": "junk"}, ZONE) == []
    bad_ip = wep("web", "shop", "not-an-ip", "10.0.0.1/32")
    assert [r.rdata for r in R.workload_records(bad_ip, ZONE) if r.rtype == R.A] == ["10.0.0.1"]
    assert R.node_records({"metadata": {"name": "n1"}, "spec": {}}, NZONE) == []


def test_node_records_and_zones() -> None:
    node = {"metadata": {"name": "n1"}, "spec": {"bgp": {"ipv4Address": "198.18.0.1/15"}}}
    assert set(R.node_records(node, NZONE)) == {
        R.Record("n1.node.cluster.local", R.A, "198.18.0.1"),
        R.Record("1.0.18.198.in-addr.arpa", R.PTR, "n1.node.cluster.local"),
    }
    assert R.default_node_zone("pod.cluster.local") == "node.cluster.local"
    assert R.default_node_zone("lab") == "node.lab"
    assert R.pool_zone({"spec": {"cidr": "10.244.0.0/16"}}) == "244.10.in-addr.arpa"
    assert R.pool_zone({"spec": {"cidr": "10.244.64.0/18"}}) == "244.10.in-addr.arpa"
    assert R.pool_zone({"spec": {"cidr": "fd00:1::/48"}}) == "0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa"
    assert R.pool_zone({"spec": {"cidr": "0.0.0.0/4"}}) is None
    assert R.pool_zone({"spec": {"cidr": "bogus"}}) is None


def test_pod_resolver_settings() -> None:
    assert cni_dns("shop") == {
        "nameservers": ["169.254.25.10"],
        "search": ["shop.pod.cluster.local", "pod.cluster.local"],
        "options": ["ndots:5", "timeout:1", "attempts:2"],
    }
    text = resolv_conf("shop")
    assert "nameserver 169.254.25.10\n" in text
    assert "search shop.pod.cluster.local pod.cluster.local\n" in text


def _index(*objs: dict[str, Any]) -> RecordIndex:
    idx = RecordIndex([ZONE, NZONE])
    for i, o in enumerate(objs):
        idx.set_source(f"k{i}", R.workload_records(o, ZONE))
    return idx


def test_lookup_classifies_names() -> None:
    idx = _index(
        wep("web", "shop", "10.244.1.2/32", ports=[{"name": "http", "protocol": "TCP", "port": 80}])
    )
    assert idx.lookup("web.shop.pod.cluster.local").status is Status.FOUND
    assert idx.lookup("web.shop.pod.cluster.local").rrsets == {R.A: ["10.244.1.2"]}
    # empty non-terminals exist (NODATA), siblings do not (NXDOMAIN)
    assert idx.lookup("shop.pod.cluster.local").status is Status.NODATA
    assert idx.lookup("_tcp.web.shop.pod.cluster.local").status is Status.NODATA
    assert idx.lookup("pod.cluster.local").status is Status.NODATA  # the apex
    assert idx.lookup("other.pod.cluster.local").status is Status.NXDOMAIN
    assert idx.lookup("a.web.shop.pod.cluster.local").status is Status.NXDOMAIN
    assert idx.lookup("x.node.cluster.local").status is Status.NXDOMAIN
    assert idx.lookup("example.com").status is Status.OUTSIDE
    assert idx.lookup("cluster.local").status is Status.OUTSIDE
    # a workload PTR outside any pool zone is still answered, other reverse names are not ours
    assert idx.lookup("2.1.244.10.in-addr.arpa").status is Status.FOUND
    assert idx.lookup("3.1.244.10.in-addr.arpa").status is Status.OUTSIDE
    idx.set_pool("pool", "244.10.in-addr.arpa")
    assert idx.lookup("3.1.244.10.in-addr.arpa").status is Status.NXDOMAIN
    assert idx.lookup("1.244.10.in-addr.arpa").status is Status.NODATA
    assert idx.lookup("10.in-addr.arpa").status is Status.OUTSIDE
    idx.remove_pool("pool")
    assert idx.lookup("3.1.244.10.in-addr.arpa").status is Status.OUTSIDE


def test_multi_interface_pod_aggregates_and_refcounts() -> None:
    a = wep("web", "shop", "10.244.1.2/32", iface="eth0")
    b = wep("web", "shop", "10.244.1.3/32", "10.244.1.2/32", iface="eth1")
    idx = _index(a, b)
    assert sorted(idx.lookup("web.shop.pod.cluster.local").rrsets[R.A]) == [
        "10.244.1.2",
        "10.244.1.3",
    ]
    idx.remove_source("k1")
    assert idx.lookup("web.shop.pod.cluster.local").rrsets[R.A] == ["10.244.1.2"]
    assert idx.lookup("3.1.244.10.in-addr.arpa").status is Status.OUTSIDE
    idx.remove_source("k0")
    assert len(idx) == 0
    assert idx.empty_non_terminals() == []
    assert idx.lookup("shop.pod.cluster.local").status is Status.NXDOMAIN


def test_generation_moves_only_on_change() -> None:
    idx = _index()
    g = idx.generation
    recs = R.workload_records(wep("web", "shop", "10.0.0.1/32"), ZONE)
    idx.set_source("k", recs)
    assert idx.generation == g + 1
    idx.set_source("k", list(reversed(recs)))  # same set, other order
    assert idx.generation == g + 1
    idx.remove_source("absent")
    assert idx.generation == g + 1


_pods = st.sampled_from(["a", "b", "web", "db"])
_nss = st.sampled_from(["shop", "prod"])
_ips = st.lists(st.sampled_from(["10.0.0.1/32", "10.0.0.2/32", "fd00::1/128"]), max_size=2)
_ports = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["http", "grpc"]), "protocol": st.just("TCP"), "port": st.just(80)}
    ),
    max_size=2,
)
_op = st.tuples(st.integers(0, 4), st.one_of(st.none(), st.tuples(_pods, _nss, _ips, _ports)))


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=30))
def test_incremental_equals_from_scratch(ops: list[tuple[int, Any]]) -> None:
    """Any sequence of updates/deletes leaves the same index as building the end state."""
    live = RecordIndex([ZONE, NZONE])
    state: dict[str, list[R.Record]] = {}
    for k, v in ops:
        key = f"k{k}"
        if v is None:
            live.remove_source(key)
            state.pop(key, None)
        else:
            pod, ns, ips, ports = v
            recs = R.workload_records(wep(pod, ns, *ips, ports=ports), ZONE)
            live.set_source(key, recs)
            state[key] = recs
    fresh = RecordIndex([ZONE, NZONE])
    for key, recs in state.items():
        fresh.set_source(key, recs)
    assert live.names() == fresh.names()
    assert live.empty_non_terminals() == fresh.empty_non_terminals()
    for name in live.names():
        got = {t: sorted(map(str, v)) for t, v in live.lookup(name).rrsets.items()}
        want = {t: sorted(map(str, v)) for t, v in fresh.lookup(name).rrsets.items()}
        assert got == want


def test_malformed_resources_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """What the model rejects contributes nothing (logged); what it drops is logged too."""
    caplog.set_level("WARNING", logger="pycalico.dns.records")
    assert R.workload_records({"kind": "WorkloadEndpoint", "spec": "junk"}, ZONE) == []
    assert R.node_records({"kind": "Node", "metadata": {"name": "n1"}, "spec": []}, NZONE) == []
    bad_node = {"kind": "Node", "metadata": {"name": "n1"}, "spec": {"bgp": {"ipv4Address": "x"}}}
    assert R.node_records(bad_node, NZONE) == []
    assert R.pool_zone({"kind": "IPPool", "metadata": {"name": "p"}, "spec": {"cidr": "x"}}) is None
    port0 = [{"name": "h", "protocol": "TCP", "port": 0}]
    bad_port = wep("web", "shop", "10.0.0.1/32", ports=port0)
    assert {r.rtype for r in R.workload_records(bad_port, ZONE)} == {R.A, R.PTR}
    text = caplog.text
    assert "WorkloadEndpoint" in text and "Node 'n1'" in text and "spec.cidr" in text
    assert "spec.ports[0].port" in text


def test_records_from_model_values() -> None:
    ep = Endpoint(
        ItemID("wep", "shop", "n1-k8s-web-eth0"),
        "n1",
        (),
        (),
        (ipaddress.ip_network("10.0.0.1/32"),),
        (NamedPort("grpc", 17, 9000),),
        workload="w",
        namespace="shop",
        pod="Web",
    )
    name = "web.shop.pod.cluster.local"
    assert set(R.endpoint_records(ep, ZONE)) == {
        R.Record(name, R.A, "10.0.0.1"),
        R.Record("1.0.0.10.in-addr.arpa", R.PTR, name),
        R.Record(f"_grpc._udp.{name}", R.SRV, (0, 100, 9000, name)),
    }
    node = Node("n2", ip6=ipaddress.IPv6Interface("fd00::5/64"))
    assert R.node_address_records(node, NZONE) == [
        R.Record("n2.node.cluster.local", R.AAAA, "fd00::5"),
        R.Record(ipaddress.ip_address("fd00::5").reverse_pointer, R.PTR, "n2.node.cluster.local"),
    ]
    assert R.ippool_zone(IPPool("p", ipaddress.ip_network("10.9.0.0/16"))) == "9.10.in-addr.arpa"
