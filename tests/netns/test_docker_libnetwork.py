"""Real Docker on a pycalico network: dockerd 20.10 in a node namespace, calico-node serving the
``calico``/``calico-ipam`` remote drivers (:mod:`pycalico.libnetwork`) from its own plugin dir.

One node namespace, one calico-node, one dockerd and one busybox image import for the module;
tests run in file order (networks and containers made early are used later; the last tests
restart dockerd and calico-node, then clean up and check nothing is left).
See :mod:`tests.fixtures.docker` for how dockerd is isolated.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.docker import IMAGE, Dockerd, available, import_busybox, libnetwork_node_env
from tests.fixtures.netns import Netns, NetnsFactory
from tests.kit import wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(not available(), reason="needs docker.io and busybox-static"),
]

BIN = Path(sys.executable).parent
POOLS = {"net-a": "10.78.1.0/24", "net-b": "10.78.2.0/24", "tiny": "10.78.3.7/32"}
SERVER = "exec nc -ll -p 8080 -e hostname"  # persistent: one forked `hostname` per client


@dataclass
class Node:
    ns: Netns
    dir: Path
    env: dict[str, str]
    docker: Dockerd
    proc: subprocess.Popen[str] | None = None

    def start_node(self) -> None:
        log = open(self.dir / "calico-node.log", "a")  # noqa: SIM115 - closed below
        try:
            self.proc = self.ns.popen(
                str(BIN / "calico-node"),
                "run",
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        sock = self.dir / "plugins" / "calico.sock"
        wait_for(lambda: self.ready() and sock.exists(), 60, 0.2, what=self.node_log)

    def stop_node(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)

    def ready(self) -> bool:
        try:
            return bool(json.loads((self.dir / "status.json").read_text()).get("ready"))
        except (OSError, ValueError):
            return False

    def node_log(self) -> str:
        try:
            return (self.dir / "calico-node.log").read_text()[-3000:]
        except OSError:
            return ""

    def ctl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        p = subprocess.run(
            [str(BIN / "calicoctl"), *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"calicoctl {args}: {p.stdout}{p.stderr}")
        return p.stdout

    def ds(self) -> Any:
        from pycalico.config import load_config
        from pycalico.datastore import open_datastore

        return open_datastore(load_config(env=self.env))

    def weps(self) -> list[dict[str, Any]]:
        ds = self.ds()
        try:
            return list(ds.list("WorkloadEndpoint").items)
        finally:
            ds.close()


def _pool_yaml() -> str:
    docs = []
    for name, cidr in POOLS.items():
        bs = 32 if cidr.endswith("/32") else 26
        docs.append(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\n"
            f"metadata: {{name: {name}}}\n"
            f"spec: {{cidr: {cidr}, blockSize: {bs}, ipipMode: Never, vxlanMode: Never}}\n"
        )
    return "---\n".join(docs)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("docker")
    factory = NetnsFactory("dk")
    n: Node | None = None
    try:
        ns = factory.underlay(1).nodes[0]
        env = libnetwork_node_env(
            "dnode1", tmp, "10.79.0.0/16",
            CALICO_LIBNETWORK_LABEL_ENDPOINTS="true",
            DOCKER_HOST=f"unix://{tmp / 'd' / 'docker.sock'}",
        )  # fmt: skip
        n = Node(ns, tmp, env, Dockerd(ns, tmp / "d", tmp / "plugins"))
        n.ctl("apply", "-f", "-", input=_pool_yaml())
        n.start_node()
        n.docker.start()
        import_busybox(n.docker)
        yield n
    finally:
        if n is not None:
            n.docker.stop()
            n.stop_node()
        factory.cleanup()


def _ip(node: Node, name: str) -> str:
    return node.docker.out(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name
    )


def _connect(node: Node, client: str, server_ip: str, timeout: int = 2) -> str:
    p = node.docker(
        "exec",
        client,
        "sh",
        "-c",
        f"nc -w {timeout} {server_ip} 8080 </dev/null",
        check=False,
        timeout=30,
    )
    return p.stdout.strip()


def _connect_direct(pid: int, server_ip: str) -> str:
    """Connect from the container with init ``pid`` without dockerd (it may be down)."""
    p = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "-m", "nc", "-w", "2", server_ip, "8080"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    return p.stdout.strip()


def _answers(node: Node, client: str, ip: str) -> bool:
    """Three tries (a loaded machine can lose one 2 s connect): the path is up."""
    return any(_connect(node, client, ip) == "a1" for _ in range(3))


def _run(node: Node, name: str, net: str, *extra: str, cmd: str = "sleep 3600") -> str:
    return node.docker.out(
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        name,
        "--net",
        net,
        *extra,
        IMAGE,
        "sh",
        "-c",
        cmd,
    )


def test_networks_and_containers_get_calico_endpoints(node: Node) -> None:
    d = node.docker
    for net in ("net-a", "net-b"):
        d(
            "network",
            "create",
            "--driver",
            "calico",
            "--ipam-driver",
            "calico-ipam",
            "--subnet",
            POOLS[net],
            net,
        )
    _run(node, "a1", "net-a", cmd=SERVER)
    _run(node, "a2", "net-a")
    _run(node, "b1", "net-b", "--label", "org.projectcalico.label.role=client")
    ip = _ip(node, "a1")
    assert ip.startswith("10.78.1.")
    weps = {w["spec"]["endpoint"]: w for w in node.weps()}
    assert len(weps) == 3
    eid = d.out("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.EndpointID}}{{end}}", "a1")
    w = weps[eid]
    assert w["metadata"]["namespace"] == "libnetwork"
    assert w["spec"]["orchestrator"] == "libnetwork"
    assert w["spec"]["ipNetworks"] == [f"{ip}/32"]
    assert w["spec"]["profiles"] == ["net-a"]
    assert w["spec"]["interfaceName"] == f"cali{eid[:11]}"
    # the container side: cali0 with the /32, default route via 169.254.1.1
    routes = d.out("exec", "a1", "ip", "route")
    assert "default via 169.254.1.1" in routes
    assert f"{ip}/32" in d.out("exec", "a1", "ip", "-o", "addr", "show", "dev", "cali0")
    # the host side: the /32 route on cali<id>, proxy ARP
    host_routes = node.ns.ip("route", "show", "dev", f"cali{eid[:11]}")
    assert ip in host_routes
    assert node.ns.read_sysctl(f"net.ipv4.conf.cali{eid[:11]}.proxy_arp") == "1"


def test_container_labels_and_name_reach_the_endpoint(node: Node) -> None:
    eid = node.docker.out(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.EndpointID}}{{end}}", "b1"
    )

    def labelled() -> dict[str, Any] | None:
        w = next(w for w in node.weps() if w["spec"]["endpoint"] == eid)
        return w if w["metadata"].get("labels", {}).get("role") == "client" else None

    w = wait_for(labelled, 10, 0.2, what="b1's WEP labels")
    assert w["spec"]["workload"] == "b1"


def test_same_network_connects_other_network_denied_until_policy(node: Node) -> None:
    ip = _ip(node, "a1")
    wait_for(lambda: _connect(node, "a2", ip) == "a1", 20, 0.2, what="a2 -> a1")
    assert _connect(node, "b1", ip) == ""  # net-b is isolated from net-a
    node.ctl(
        "apply",
        "-f",
        "-",
        input=(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
            "metadata: {name: clients-to-a}\n"
            "spec:\n  selector: has(net-a)\n  types: [Ingress]\n"
            # Pass: everything else is left to the network's profile (a2 -> a1 still allowed)
            "  ingress: [{action: Allow, source: {selector: role == 'client'}}, {action: Pass}]\n"
        ),
    )
    wait_for(lambda: _connect(node, "b1", ip) == "a1", 20, 0.2, what="b1 -> a1 allowed")
    assert _connect(node, "a2", ip) == "a1"


def test_specific_ip_and_driver_errors_are_clear(node: Node) -> None:
    d = node.docker
    _run(node, "a3", "net-a", "--ip", "10.78.1.77")
    assert _ip(node, "a3") == "10.78.1.77"
    p = d(
        "run",
        "-d",
        "--name",
        "a4",
        "--net",
        "net-a",
        "--ip",
        "10.78.1.77",
        IMAGE,
        "sleep",
        "1",
        check=False,
    )
    assert p.returncode != 0 and "already allocated" in p.stderr
    d("rm", "-f", "a4", check=False)
    p = d(
        "network",
        "create",
        "--driver",
        "calico",
        "--ipam-driver",
        "calico-ipam",
        "--subnet",
        "10.99.0.0/24",
        "bad1",
        check=False,
    )
    assert p.returncode != 0 and "must match the CIDR of a configured Calico IP Pool" in p.stderr
    p = d(
        "network",
        "create",
        "--driver",
        "calico",
        "--ipam-driver",
        "calico-ipam",
        "--subnet",
        POOLS["net-b"],
        "-o",
        "foo=bar",
        "bad2",
        check=False,
    )
    assert p.returncode != 0 and "does not support the option foo" in p.stderr
    p = d(
        "network", "create", "--driver", "calico", "--subnet", "10.78.5.0/24", "bad3", check=False
    )
    assert p.returncode != 0 and "--ipam-driver calico-ipam" in p.stderr
    # exhausted: the tiny pool has one address
    d(
        "network",
        "create",
        "--driver",
        "calico",
        "--ipam-driver",
        "calico-ipam",
        "--subnet",
        POOLS["tiny"],
        "tiny",
    )
    _run(node, "t1", "tiny")
    p = d(
        "run", "-d", "--name", "t2", "--net", "tiny", IMAGE, "sleep", "1", check=False, timeout=60
    )
    assert p.returncode != 0 and "no addresses available in pool tiny" in p.stderr
    d("rm", "-f", "t1", "t2", check=False)
    d("network", "rm", "tiny")


def test_restarting_dockerd_and_calico_node_keeps_traffic(node: Node) -> None:
    ip = _ip(node, "a1")
    a2 = node.docker.pid_of("a2")
    node.docker.stop(kill_containers=False)  # --live-restore: containers keep running
    assert _connect_direct(a2, ip) == "a1"
    node.docker.start()
    assert _answers(node, "a2", ip)
    node.stop_node()
    assert _answers(node, "a2", ip)  # the dataplane stays while it is down
    node.start_node()
    assert _answers(node, "a2", ip)
    assert _answers(node, "b1", ip)
    assert _connect(node, "b1", _ip(node, "a3")) == ""  # policy still enforced (a3 no server)


def test_removing_containers_and_networks_leaves_nothing(node: Node) -> None:
    d = node.docker
    d("rm", "-f", *d.out("ps", "-aq").split())
    for net in ("net-a", "net-b"):
        d("network", "rm", net)
    assert node.weps() == []
    links = [n for n in node.ns.links() if n.startswith(("cali", "temp"))]
    assert links == []
    assert not [r for r in node.ns.routes() if str(r.get("dst", "")).startswith("10.78.")]
    out = node.ctl("ipam", "check")
    assert "0 IPs leaked" in out or "leaked" not in out.lower(), out
    ds = node.ds()
    try:
        pools = {p["metadata"]["name"]: p for p in ds.list("IPPool").items}
    finally:
        ds.close()
    assert not (pools["net-a"]["metadata"].get("annotations") or {})
