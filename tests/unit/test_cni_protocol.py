"""CNI protocol layer: environment rules, netconf validation, result rendering, names."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from pycalico.cni.errors import CniError
from pycalico.cni.types import (
    SUPPORTED_VERSIONS,
    cni_labels,
    parse_cni_args,
    parse_env,
    parse_netconf,
    render_result,
)
from pycalico.cni.workload import (
    build_wep,
    build_workload,
    handle_id,
    interface_prefix,
    ports_from_mappings,
    veth_name,
    wep_name,
)

GOOD = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}


def code_of(fn: Any, *a: Any, **kw: Any) -> int:
    with pytest.raises(CniError) as ei:
        fn(*a, **kw)
    return ei.value.code


@pytest.mark.parametrize(
    ("change", "code", "needle"),
    [
        ({"CNI_COMMAND": None}, 4, "CNI_COMMAND"),
        ({"CNI_COMMAND": "FOO"}, 4, "FOO"),
        ({"CNI_NETNS": None}, 4, "CNI_NETNS"),
        ({"CNI_CONTAINERID": ""}, 4, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "-bad"}, 4, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "a/b"}, 4, "CNI_CONTAINERID"),
        ({"CNI_IFNAME": "x" * 16}, 4, "CNI_IFNAME"),
        ({"CNI_IFNAME": "."}, 4, "CNI_IFNAME"),
        ({"CNI_IFNAME": "a:b"}, 4, "CNI_IFNAME"),
        ({"CNI_PATH": None}, 4, "CNI_PATH"),
        ({"CNI_ARGS": "novalue"}, 4, "CNI_ARGS"),
    ],
)
def test_env_errors(change: dict[str, str | None], code: int, needle: str) -> None:
    env = dict(GOOD)
    for k, v in change.items():
        if v is None:
            env.pop(k)
        else:
            env[k] = v
    with pytest.raises(CniError) as ei:
        parse_env(env)
    assert ei.value.code == code
    assert needle in str(ei.value)


def test_env_ok_and_optional_netns_on_del() -> None:
    e = parse_env(dict(GOOD, CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=p; K8S_POD_NAMESPACE=ns"))
    assert e.args == {"IgnoreUnknown": "1", "K8S_POD_NAME": "p", "K8S_POD_NAMESPACE": "ns"}
    assert e.path == ("/opt/cni/bin",)
    d = dict(GOOD, CNI_COMMAND="DEL")
    d.pop("CNI_NETNS")
    assert parse_env(d).netns == ""
    assert parse_env({"CNI_COMMAND": "VERSION"}).command == "VERSION"
    assert parse_cni_args("") == {}


def conf(**kw: Any) -> str:
    c: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "ipam": {"type": "calico-ipam"},
    }
    c.update(kw)
    return json.dumps({k: v for k, v in c.items() if v is not None})


@pytest.mark.parametrize(
    ("text", "code", "needle"),
    [
        ("{nope", 6, "decode"),
        ("[1]", 6, "object"),
        (conf(name=None), 7, "name"),
        (conf(cniVersion="9.9.9"), 1, "9.9.9"),
        (conf(cniVersion="0.1.0"), 1, "0.1.0"),
        (conf(cniVersion="one"), 6, "version"),
        (conf(mtu="1500"), 7, "mtu"),
        (conf(mtu=20), 7, "mtu"),
        (conf(ipam="calico-ipam"), 7, "ipam"),
        (conf(ipam={}), 7, "ipam.type"),
        (conf(ipam=None), 7, "ipam"),
        (conf(ipam={"type": "calico-ipam", "assign_ipv4": "yes"}), 7, "ipam.assign_ipv4"),
        (conf(ipam={"type": "calico-ipam", "assign_ipv4": "false"}), 7, "nothing to assign"),
        (conf(ipam={"type": "calico-ipam", "ipv4_pools": "10.0.0.0/8"}), 7, "ipv4_pools"),
        (conf(datastore_type="kubernetes"), 7, "datastore_type"),
        (conf(log_level="loud"), 7, "log_level"),
        (conf(nodename=5), 7, "nodename"),
        (conf(prevResult=[]), 7, "prevResult"),
    ],
)
def test_netconf_errors(text: str, code: int, needle: str) -> None:
    with pytest.raises(CniError) as ei:
        parse_netconf(text)
    assert ei.value.code == code
    assert needle in str(ei.value)


def test_netconf_fields_and_passthrough() -> None:
    c = parse_netconf(
        conf(
            mtu=1400,
            nodename="n1",
            datastore_type="SQLite",
            datastore_path="/x.db",
            etcd_endpoints=["http://a:2379", "http://b:2379"],
            ipam={
                "type": "calico-ipam",
                "assign_ipv4": "true",
                "assign_ipv6": True,
                "ipv4_pools": ["default-ipv4-ippool"],
            },
            custom={"kept": 1},
            args={"cni": {"labels": [{"key": "app", "value": "web"}]}},
        )
    )
    assert (c.mtu, c.nodename, c.datastore_type, c.datastore_path) == (
        1400,
        "n1",
        "sqlite",
        "/x.db",
    )
    assert c.etcd_endpoints == "http://a:2379,http://b:2379"
    assert (
        c.ipam is not None and c.ipam.assign_ipv6 and c.ipam.ipv4_pools == ("default-ipv4-ippool",)
    )
    assert c.raw["custom"] == {"kept": 1}
    assert cni_labels(c) == {"app": "web"}
    assert parse_netconf(conf(ipam=None), require_ipam=False).ipam is None


RESULT = {
    "interfaces": [
        {"name": "cali1", "mac": "ee:ee:ee:ee:ee:ee", "mtu": 1500},
        {"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1500, "sandbox": "/run/netns/x"},
    ],
    "ips": [{"address": "10.0.0.1/32", "interface": 1}, {"address": "fd00::1/128", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1", "scope": 0}],
    "dns": {},
}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_render_result_per_version(version: str) -> None:
    r = render_result(RESULT, version)
    assert r["cniVersion"] == version
    assert [ip["address"] for ip in r["ips"]] == ["10.0.0.1/32", "fd00::1/128"]
    old = version < "1.0.0"
    assert all(("version" in ip) == old for ip in r["ips"])
    if old:
        assert [ip["version"] for ip in r["ips"]] == ["4", "6"]
    has_mtu = version == "1.1.0"
    assert all(("mtu" in i) == has_mtu for i in r["interfaces"])
    assert ("scope" in r["routes"][0]) == has_mtu


def test_names_like_calico() -> None:
    k8s = build_workload(
        cni_args={"K8S_POD_NAMESPACE": "kube-system", "K8S_POD_NAME": "core-dns-1"},
        container_id="abcdef0123456789",
        ifname="eth0",
        node="node-1",
        network="k8s-pod-network",
        extra_labels={"app": "dns"},
        service_account="coredns",
        ports=ports_from_mappings([{"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]),
    )
    digest = hashlib.sha1(b"kube-system.core-dns-1").hexdigest()
    assert veth_name(k8s) == "cali" + digest[:11]
    assert len(veth_name(k8s)) == 15
    assert veth_name(k8s, interface_prefix({"FELIX_INTERFACEPREFIX": "tap,cali"})).startswith("tap")
    wep = build_wep(k8s, host_ifname="caliX", mac="02:00:00:00:00:01", ip_networks=["10.0.0.1/32"])
    assert wep["metadata"]["name"] == "node--1-k8s-core--dns--1-eth0"
    assert wep["metadata"]["namespace"] == "kube-system"
    assert wep["metadata"]["labels"] == {
        "app": "dns",
        "projectcalico.org/namespace": "kube-system",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "coredns",
    }
    spec = wep["spec"]
    assert spec["profiles"] == ["kns.kube-system", "ksa.kube-system.coredns"]
    assert spec["pod"] == "core-dns-1" and spec["orchestrator"] == "k8s" and "workload" not in spec
    assert spec["ports"] == [{"name": "", "protocol": "UDP", "port": 53, "hostPort": 8053}]
    assert spec["serviceAccountName"] == "coredns"
    cni = build_workload(
        cni_args={"K8S_POD_NAME": "only-name"},
        container_id="0123456789abcdef",
        ifname="eth1",
        node="n1",
        network="mynet",
        extra_labels={},
    )
    assert veth_name(cni) == "cali0123456789a"
    wep2 = build_wep(cni, host_ifname="cali0123456789a", mac="m", ip_networks=[])
    assert wep2["metadata"]["name"] == "n1-cni-0123456789abcdef-eth1"
    assert wep2["spec"]["profiles"] == ["mynet"]
    assert wep_name("a-b", "cni", "c-d", "eth0") == "a--b-cni-c--d-eth0"
    assert handle_id("k8s-pod-network", "abc") == "k8s-pod-network.abc"
