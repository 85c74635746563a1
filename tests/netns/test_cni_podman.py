"""Real runtime: podman 4 (CNI network backend) runs busybox containers on a pycalico network.

Isolation: podman runs under ``nsenter --net=<node netns>`` with private containers.conf,
storage.conf, graphroot, runroot, tmp dir and CNI config dir under a temp dir. The container
namespaces podman creates are fresh netns (bind-mounted under /run/netns/netns-*); the host
ends of the veths, the routes and sysctls our plugin writes all land in the *node* netns
(the plugin runs as podman's child there). Nothing is added to the root namespace's links,
addresses, routes or sysctls. Only filesystem side effect outside the temp dir: libcni's
result cache in /var/lib/cni/results (entries removed by ``podman rm``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.sqlite import SqliteDatastore
from pycalico.node.install_cni import build_conflist, install
from tests.fixtures.netns import Netns, NetnsFactory
from tests.kit import wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("podman") and shutil.which("runc") and os.path.exists("/bin/busybox")),
        reason="needs podman, runc and busybox-static",
    ),
]

IMAGE = "localhost/pct-busybox:latest"


@dataclass
class Podman:
    node: Netns
    root: Path
    env: dict[str, str]
    db: str
    server_pid: int = 0

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        p = subprocess.run(
            ["nsenter", f"--net={self.node.path}", "podman", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: rc={p.returncode}\n{p.stderr}")
        return p.stdout.strip()


def _write_confs(root: Path) -> dict[str, str]:
    (root / "containers.conf").write_text(
        f"""[containers]
netns = "bridge"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"
runtime = "runc"
tmp_dir = "{root}/tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{root}/cni/bin", "/usr/lib/cni"]
network_config_dir = "{root}/cni/net.d"
default_network = "k8s-pod-network"
"""
    )
    (root / "storage.conf").write_text(
        f"""[storage]
driver = "vfs"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""
    )
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": str(root),
        "CONTAINERS_CONF": str(root / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
    }


def _busybox_tar(root: Path) -> Path:
    rootfs = root / "rootfs"
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for tool in ("sh", "nc", "ip", "sleep", "cat", "echo", "ping", "ifconfig", "wget"):
        (rootfs / "bin" / tool).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    tar = root / "busybox.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    return tar


@pytest.fixture
def podman(netns_factory: NetnsFactory, tmp_path: Path) -> Iterator[Podman]:
    ul = netns_factory.underlay(1)
    node = ul.nodes[0]
    (tmp_path / "registries.conf").write_text("")
    env = _write_confs(tmp_path)
    db = str(tmp_path / "calico.db")
    ds = SqliteDatastore(db)
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "default-ipv4-ippool"},
            "spec": {"cidr": "10.245.0.0/16", "blockSize": 26},
        }
    )
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "blue"},
            "spec": {"cidr": "10.246.0.0/24", "blockSize": 26},
        }
    )
    ds.close()
    conflist = build_conflist(
        nodename="podnode",
        datastore={"datastore_type": "sqlite", "datastore_path": db},
        log_file_path=str(tmp_path / "cni.log"),
        ipam_lock_file=str(tmp_path / "ipam.lock"),
        portmap=False,
        ipv4_pools=["default-ipv4-ippool"],
    )
    sock = str(tmp_path / "cni.sock")
    install(
        str(tmp_path / "cni" / "bin"),
        str(tmp_path / "cni" / "net.d"),
        conflist,
        python=sys.executable,
        socket_path=sock,
    )
    # a second network the documented way (README "Docker and Podman on your own hosts"):
    # one conflist per pool, found by podman in its network config dir
    blue = build_conflist(
        network="blue",
        nodename="podnode",
        datastore={"datastore_type": "sqlite", "datastore_path": db},
        log_file_path=str(tmp_path / "cni.log"),
        ipam_lock_file=str(tmp_path / "ipam.lock"),
        portmap=False,
        ipv4_pools=["blue"],
    )
    install(
        str(tmp_path / "cni" / "bin"),
        str(tmp_path / "cni" / "net.d"),
        blue,
        conf_name="20-blue.conflist",
        python=sys.executable,
        socket_path=sock,
    )
    # the node's fast path, as calico-node runs it (the shim falls back without it)
    server = node.popen(
        str(Path(sys.executable).parent / "calico-node"), "cni-server", "--socket", sock
    )
    wait_for(lambda: os.path.exists(sock) or server.poll() is not None, 30, what="cni socket")
    assert os.path.exists(sock), "cni-server did not start"
    pm = Podman(node, tmp_path, env, db, server.pid)
    pm("import", "--change", 'CMD ["/bin/sh"]', str(_busybox_tar(tmp_path)), IMAGE)
    try:
        yield pm
    finally:
        ids = pm("ps", "-aq", check=False).split()
        if ids:
            pm("rm", "-f", "-t", "0", *ids, check=False)
        pm("rmi", "-af", check=False)
        subprocess.run(["umount", "-R", str(tmp_path / "storage")], capture_output=True)
        subprocess.run(["umount", "-R", str(tmp_path / "run")], capture_output=True)


def _weps(db: str) -> list[dict[str, Any]]:
    ds = SqliteDatastore(db)
    try:
        return ds.list("WorkloadEndpoint").items
    finally:
        ds.close()


def _handles(db: str) -> list[str]:
    ds = SqliteDatastore(db)
    try:
        return [h["metadata"]["name"] for h in ds.list("IPAMHandle").items]
    finally:
        ds.close()


def _root_state() -> tuple[str, str, str]:
    """Root namespace links/addresses/routes (must be untouched by the whole test)."""

    def ip(*a: str) -> str:
        return subprocess.run(["ip", *a], capture_output=True, text=True).stdout

    return ip("-br", "link"), ip("-br", "addr"), ip("route") + ip("-6", "route")


def test_two_busybox_containers_talk_over_tcp_and_rm_releases(podman: Podman) -> None:
    before = _root_state()
    srv = podman(
        "run",
        "-d",
        "--name",
        "pct-srv",
        "--network",
        "k8s-pod-network",
        IMAGE,
        "sh",
        "-c",
        "while true; do echo pong | nc -l -p 8080; done",
    )
    [wep] = _weps(podman.db)
    assert wep["spec"]["containerID"] == srv
    assert wep["spec"]["orchestrator"] == "cni"
    srv_ip = wep["spec"]["ipNetworks"][0].split("/")[0]
    assert srv_ip.startswith("10.245.")
    # the host side of the veth lives in the node namespace, not in the root namespace
    host_if = wep["spec"]["interfaceName"]
    assert host_if in podman.node.links()
    assert not os.path.exists(f"/sys/class/net/{host_if}") or host_if not in _root_links()
    out = podman(
        "run",
        "--rm",
        "--name",
        "pct-cli",
        "--network",
        "k8s-pod-network",
        IMAGE,
        "sh",
        "-c",
        "ip -4 addr show eth0; for i in 1 2 3 4 5; do "
        f"nc -w 2 {srv_ip} 8080 </dev/null && break; sleep 1; done",
    )
    assert "pong" in out
    assert "/32" in out
    cli_ip = next(ln.split()[1] for ln in out.splitlines() if ln.strip().startswith("inet "))
    assert cli_ip.split("/")[0] != srv_ip
    # the --rm client is gone: its DEL released its address
    assert len(_handles(podman.db)) == 1
    podman("rm", "-f", "-t", "0", "pct-srv")
    assert _handles(podman.db) == []
    assert _weps(podman.db) == []
    assert not [n for n in podman.node.links() if n.startswith("cali")]
    assert _root_state() == before
    assert not [n for n in _root_links() if n.startswith("cali")]
    # every ADD/DEL podman made went through the shim to the node's cni-server
    log = (podman.root / "cni.log").read_text().splitlines()
    assert len(log) == 4
    assert {int(ln.split("[", 1)[1].split("]", 1)[0]) for ln in log} == {podman.server_pid}


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def test_a_network_per_pool_from_its_own_conflist(podman: Podman) -> None:
    nets = podman("network", "ls", "--format", "{{.Name}} {{.Driver}}").splitlines()
    assert "blue calico" in nets and "k8s-pod-network calico" in nets
    cid = podman("run", "-d", "--name", "pct-blue", "--network", "blue", IMAGE, "sleep", "60")
    [wep] = _weps(podman.db)
    assert wep["spec"]["containerID"] == cid
    assert wep["spec"]["ipNetworks"][0].startswith("10.246.0.")
    assert wep["spec"]["profiles"] == ["blue"]
    podman("rm", "-f", "-t", "0", "pct-blue")
    assert _weps(podman.db) == [] and _handles(podman.db) == []
