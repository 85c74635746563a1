"""calico-lab e2e with real Docker containers (issue 14 acceptance): ``up --runtime docker``
on 3 nodes, one dockerd per node (each seeing only its own node's drivers), containers on two
Calico networks across the three nodes.

One lab for the module; tests run in file order (the last one removes everything and checks
nothing is left). Same-network TCP works across nodes; cross-network is denied until a policy
(on a Docker label) allows it; container names resolve on the same node (Docker's DNS) and
from another node (pycalico's DNS, ``<name>.libnetwork.<zone>``); restarting dockerd
(``--live-restore``) or calico-node keeps running containers' traffic.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import Lab, wait_for
from tests.fixtures.docker import available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(not available(), reason="needs docker.io and busybox-static"),
]

POOL = "10.244.0.0/16"  # the lab pool: network "calico" on every node (profile = pool name)
BLUE = "10.250.0.0/24"
SERVER = ("sh", "-c", "exec nc -ll -p 8080 -e hostname")
NODES = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[], Lab]) -> Lab:
    lab = lab_factory()
    lab.up("--nodes", "3", "--runtime", "docker", timeout=120)
    lab.run(
        "apply",
        "-f",
        "-",
        input=(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: blue}\n"
            f"spec: {{cidr: {BLUE}, blockSize: 26, ipipMode: Never, vxlanMode: Never}}\n"
        ),
    )
    for node in NODES:
        lab.docker(node, "network", "create", "--driver", "calico", "--ipam-driver",
                   "calico-ipam", "--subnet", BLUE, "blue")  # fmt: skip
    return lab


def _connect(lab: Lab, node: str, client: str, ip: str) -> str:
    p = lab.docker(node, "exec", client, "sh", "-c", f"nc -w 2 {ip} 8080 </dev/null",
                   check=False, timeout=30)  # fmt: skip
    return p.stdout.strip()


def _answers(lab: Lab, node: str, client: str, ip: str) -> bool:
    """Three tries (a loaded machine can lose one 2 s connect): the path is up."""
    return any(_connect(lab, node, client, ip) == "web1" for _ in range(3))


IPS: dict[str, str] = {}


def test_containers_on_two_networks_across_three_nodes(lab: Lab) -> None:
    IPS["web1"] = lab.container("node1", "default/web1", *SERVER)
    IPS["c1"] = lab.container("node1", "default/c1", "sleep", "3600")
    IPS["c2"] = lab.container("node2", "default/c2", "sleep", "3600")
    IPS["c3"] = lab.container("node3", "default/c3", "sleep", "3600")
    out = lab.run("run", "--name", lab.name, "--net", "blue", "--labels", "role=client",
                  "node3", "default/b3", "--", "sleep", "3600").stdout  # fmt: skip
    IPS["b3"] = out.strip().rsplit(" ", 1)[-1]
    assert IPS["b3"].startswith("10.250.0.")
    for n in ("web1", "c1", "c2", "c3"):
        assert IPS[n].startswith("10.244."), IPS
    weps = json.loads(lab.calicoctl("get", "workloadendpoints", "-A", "-o", "json").stdout)
    items = weps.get("items", weps) if isinstance(weps, dict) else weps
    by_node: dict[str, int] = {}
    for w in items:
        assert w["spec"]["orchestrator"] == "libnetwork"
        by_node[w["spec"]["node"]] = by_node.get(w["spec"]["node"], 0) + 1
    assert by_node == {"node1": 2, "node2": 1, "node3": 2}


def test_same_network_across_nodes_and_other_network_denied_until_policy(lab: Lab) -> None:
    ip = IPS["web1"]
    for node, client in (("node1", "c1"), ("node2", "c2"), ("node3", "c3")):
        assert wait_for(lambda n=node, c=client: _connect(lab, n, c, ip) == "web1", 30, 0.3), (
            f"{client} on {node} cannot reach web1"
        )
    assert _connect(lab, "node3", "b3", ip) == ""
    lab.run(
        "apply",
        "-f",
        "-",
        input=(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
            "metadata: {name: blue-clients}\n"
            "spec:\n  selector: has(default-ipv4-ippool)\n  types: [Ingress]\n"
            "  ingress: [{action: Allow, source: {selector: role == 'client'}}, {action: Pass}]\n"
        ),
    )
    assert wait_for(lambda: _connect(lab, "node3", "b3", ip) == "web1", 20, 0.3)
    assert _answers(lab, "node2", "c2", ip)


def test_container_names_resolve_on_the_same_and_another_node(lab: Lab) -> None:
    def resolves(node: str, client: str) -> bool:
        p = lab.docker(node, "exec", client, "nslookup", "web1", check=False, timeout=30)
        return IPS["web1"] in p.stdout

    assert wait_for(lambda: resolves("node1", "c1"), 15, 0.5), "same node (Docker's DNS)"
    assert wait_for(lambda: resolves("node2", "c2"), 15, 0.5), "other node (pycalico DNS)"


def test_restarting_dockerd_and_calico_node_keeps_traffic(lab: Lab) -> None:
    ip = IPS["web1"]
    lab.run("engine", "restart", "node1")
    assert _answers(lab, "node2", "c2", ip)
    assert _answers(lab, "node1", "c1", ip)
    lab.run("node", "restart", "node1")
    assert _answers(lab, "node2", "c2", ip)
    assert _answers(lab, "node3", "b3", ip)


def test_pods_are_real_containers_wired_by_cni(lab: Lab) -> None:
    lab.pod("node1", "shop/p1")
    lab.pod("node2", "shop/p2")
    ids = lab.docker("node2", "ps", "-q", "--filter", "label=io.kubernetes.pod.name=p2").stdout
    assert ids.strip(), "pod p2 is not a Docker container on node2"
    assert lab.run("probe", "shop/p1", "shop/p2", "80/TCP", check=False).returncode == 0
    lab.run("pod", "del", "shop/p2")
    assert not lab.docker(
        "node2", "ps", "-aq", "--filter", "label=io.kubernetes.pod.name=p2"
    ).stdout.strip()
    lab.run("pod", "del", "shop/p1")


def test_removing_containers_and_networks_leaves_nothing(lab: Lab) -> None:
    def clean(node: str) -> None:
        ids = lab.docker(node, "ps", "-aq").stdout.split()
        if ids:
            lab.docker(node, "rm", "-f", *ids, timeout=120)
        lab.docker(node, "network", "rm", "calico", "blue")

    with ThreadPoolExecutor(len(NODES)) as pool:  # the nodes' dockerds work in parallel
        list(pool.map(clean, NODES))
    weps = lab.calicoctl("get", "workloadendpoints", "-A").stdout
    assert "libnetwork" not in weps, weps
    check = lab.calicoctl("ipam", "check").stdout
    assert "found 0 problems" in check and "with 0 allocations" in check, check
    for node in NODES:
        links = lab.exec(node, "ip", "-o", "link").stdout
        assert "cali" not in links and "temp" not in links, links
        routes = lab.exec(node, "ip", "route", "show", "proto", "80").stdout
        assert "dev cali" not in routes, routes
