"""Workload DNS on a real kernel: two node namespaces on an underlay, pods wired Calico-style
(veth ``cali*``, /32 routes, proxy-ARP gateway 169.254.1.1), ``python -m pycalico.dns`` in each
node namespace bound on 169.254.25.10:53 (on the node's ``lo``), a shared sqlite datastore.

Pods resolve with glibc (``getent hosts`` through ``/etc/netns/<pod>/resolv.conf``, what
``ip netns exec`` bind-mounts) and with a dnslib client over UDP and TCP.
"""

from __future__ import annotations

import ipaddress
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.sqlite import SqliteDatastore
from pycalico.dns import DNS_ADDRESS, resolv_conf
from tests.fixtures.netns import Netns, NetnsFactory
from tests.kit import resource, wait_for, wait_time

pytestmark = [pytest.mark.netns, pytest.mark.slow]

CLIENT = """
import sys
from dnslib import DNSRecord
name, qtype, tcp = sys.argv[1], sys.argv[2], sys.argv[3] == "tcp"
r = DNSRecord.parse(DNSRecord.question(name, qtype).send("169.254.25.10", 53, tcp=tcp, timeout=2))
print(r.header.rcode, r.header.tc, len(r.rr))
"""


def wep(pod: str, ns: str, node: str, ip: str, ports: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"pod": pod, "node": node, "ipNetworks": [f"{ip}/32"]}
    if ports:
        spec["ports"] = ports
    return resource("WorkloadEndpoint", f"{node}-k8s-{pod}-eth0", spec, namespace=ns)


@dataclass
class Pod:
    netns: Netns
    namespace: str
    ip: str

    def getent(self, name: str) -> str | None:
        p = self.netns.exec("getent", "hosts", name, check=False, timeout=10)
        return p.stdout.split()[0] if p.returncode == 0 and p.stdout else None


def wire_pod(
    f: NetnsFactory, node: Netns, tag: str, ip: str, namespace: str, etc_dirs: list[Path]
) -> Pod:
    """A pod namespace wired to ``node``; its resolv.conf dir is recorded in ``etc_dirs``
    (the caller removes them)."""
    pod = f.netns(tag)
    cali = f"cali{tag}{os.getpid() % 10000}"[:15]
    f.veth(pod, "eth0", node, cali)
    node.ip("link", "set", cali, "address", "ee:ee:ee:ee:ee:ee")
    for key, val in (("proxy_arp", 1), ("forwarding", 1)):
        node.sysctl(f"net.ipv4.conf.{cali}.{key}", val)
    node.sysctl(f"net.ipv4.neigh.{cali}.proxy_delay", 0)
    node.ip("route", "add", f"{ip}/32", "dev", cali, "scope", "link")
    # Permanent neighbour entries on both ends (as Felix programs for workloads): the ARP
    # table is shared by every namespace on the machine and may be full (ENOBUFS) when other
    # clusters run; permanent entries are exempt from its limit. Without them, the path is
    # proxy-ARP for 169.254.1.1 via the node's default route (verified manually).
    pod_mac = pod.ip_json("link", "show", "eth0")[0]["address"]
    node.ip("neigh", "replace", ip, "lladdr", pod_mac, "dev", cali, "nud", "permanent")
    pod.batch(
        [
            "neigh replace 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent",
            f"addr add {ip}/32 dev eth0",
            "route add 169.254.1.1 dev eth0 scope link",
            "route add default via 169.254.1.1 dev eth0",
        ]
    )
    etc = Path("/etc/netns") / pod.name
    etc_dirs.append(etc)
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text(resolv_conf(namespace))
    return Pod(pod, namespace, ip)


def start_dns(node: Netns, db: str) -> subprocess.Popen[str]:
    node.ip("addr", "add", f"{DNS_ADDRESS}/32", "dev", "lo")
    env = dict(os.environ, DATASTORE_TYPE="sqlite", CALICO_DATASTORE_PATH=db)
    p = node.popen(
        sys.executable,
        "-m",
        "pycalico.dns",
        "--node-name",
        node.name,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], 20)
    assert ready, "DNS server did not report in-sync"
    assert p.stdout.readline().startswith("in-sync")
    return p


@dataclass
class Cluster:
    ds: SqliteDatastore
    client: Pod  # shop/client on n1
    web: Pod  # shop/web on n1
    db: Pod  # prod/db on n2
    nodes: list[Netns]


@pytest.fixture(scope="module")
def cluster(
    netns_factory_module: NetnsFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    f = netns_factory_module
    db_path = str(tmp_path_factory.mktemp("dns") / "ds.sqlite")
    ds = SqliteDatastore(db_path)
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "pool"},
            "spec": {"cidr": "10.244.0.0/16"},
        }
    )
    ul = f.underlay(2)
    n1, n2 = ul.nodes
    n1.ip("route", "add", "10.244.2.0/24", "via", ul.node_ips[1])
    n2.ip("route", "add", "10.244.1.0/24", "via", ul.node_ips[0])
    etc_dirs: list[Path] = []
    try:
        client = wire_pod(f, n1, "cl", "10.244.1.2", "shop", etc_dirs)
        web = wire_pod(f, n1, "web", "10.244.1.3", "shop", etc_dirs)
        dbp = wire_pod(f, n2, "db", "10.244.2.2", "prod", etc_dirs)
        ds.create(wep("client", "shop", "n1", client.ip))
        ds.create(
            wep("web", "shop", "n1", web.ip, [{"name": "http", "protocol": "TCP", "port": 80}])
        )
        ds.create(wep("db", "prod", "n2", dbp.ip))
        for i, node in enumerate(ul.nodes):
            ds.create(
                {
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "Node",
                    "metadata": {"name": f"n{i + 1}"},
                    "spec": {"bgp": {"ipv4Address": f"{ul.node_ips[i]}/15"}},
                }
            )
            start_dns(node, db_path)
        yield Cluster(ds, client, web, dbp, ul.nodes)
    finally:
        for d in etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
        ds.close()


def dnslib_query(pod: Pod, name: str, qtype: str = "A", tcp: bool = False) -> tuple[int, int, int]:
    out = pod.netns.exec(sys.executable, "-c", CLIENT, name, qtype, "tcp" if tcp else "udp")
    rcode, tc, n = out.stdout.split()
    return int(rcode), int(tc), int(n)


def test_short_names_and_other_namespaces_on_both_nodes(cluster: Cluster) -> None:
    assert cluster.client.getent("web") == cluster.web.ip  # same namespace, same node
    assert cluster.client.getent("db.prod") == cluster.db.ip  # other namespace, other node
    assert cluster.db.getent("client.shop") == cluster.client.ip  # from the other node
    assert cluster.db.getent("web.shop.pod.cluster.local") == cluster.web.ip
    assert cluster.client.getent("n2.node.cluster.local") == "198.18.0.2"
    assert cluster.client.getent("nosuchpod") is None
    ptr = cluster.client.netns.exec("getent", "hosts", cluster.db.ip, check=False)
    assert "db.prod.pod.cluster.local" in ptr.stdout


def test_udp_tcp_srv_and_refusal_from_a_pod(cluster: Cluster) -> None:
    assert dnslib_query(cluster.client, "web.shop.pod.cluster.local") == (0, 0, 1)
    assert dnslib_query(cluster.client, "web.shop.pod.cluster.local", tcp=True) == (0, 0, 1)
    assert dnslib_query(cluster.db, "_http._tcp.web.shop.pod.cluster.local", "SRV") == (0, 0, 1)
    assert dnslib_query(cluster.client, "example.com") == (5, 0, 0)  # no upstreams: REFUSED


def test_new_pod_resolves_and_deleted_pod_stops(cluster: Cluster) -> None:
    ip = str(ipaddress.ip_address("10.244.2.50"))
    cluster.ds.create(wep("fresh", "prod", "n2", ip))
    # acceptance: within 1 s on the lab; allow slack here for a loaded CI machine
    took = wait_time(lambda: cluster.client.getent("fresh.prod") == ip, 3.0, 0.02,
                     what="the new pod to resolve")  # fmt: skip
    print(f"new pod resolvable after {took * 1000:.0f} ms")
    cluster.ds.delete("WorkloadEndpoint", "n2-k8s-fresh-eth0", "prod")
    took = wait_time(lambda: cluster.client.getent("fresh.prod") is None, 3.0, 0.02,
                     what="the deleted pod to stop resolving")  # fmt: skip
    print(f"deleted pod gone after {took * 1000:.0f} ms")


def test_large_answer_truncated_then_glibc_retries_over_tcp(cluster: Cluster) -> None:
    ips = [f"10.244.3.{i}" for i in range(1, 61)]  # 60 A records: > 512 bytes
    big = wep("big", "shop", "n1", ips[0])
    big["spec"]["ipNetworks"] = [f"{ip}/32" for ip in ips]
    cluster.ds.create(big)
    try:
        wait_for(
            lambda: dnslib_query(cluster.client, "big.shop.pod.cluster.local")[1] == 1, 3.0, 0.02
        )
        assert dnslib_query(cluster.client, "big.shop.pod.cluster.local", tcp=True) == (0, 0, 60)
        out = cluster.client.netns.exec("getent", "ahostsv4", "big").stdout
        assert {line.split()[0] for line in out.splitlines()} == set(ips)
    finally:
        cluster.ds.delete("WorkloadEndpoint", "n1-k8s-big-eth0", "shop")
