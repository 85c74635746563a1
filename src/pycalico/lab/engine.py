"""The lab's container engine per node (``calico-lab up --runtime docker``): one dockerd per
lab node, each seeing only its own node's Calico drivers.

Per node, under ``<lab>/<node>/``: a *mount holder* (an idle process in a private mount
namespace, entered into the node's network namespace with ``nsenter --net``, not ``ip netns
exec``, which would remount /sys and hide the cgroup mounts dockerd needs) with
``<node>/plugins`` bind-mounted over ``/run/docker/plugins``; dockerd runs inside that mount
and network namespace (``nsenter -t <holder> -m -n``) with ``--storage-driver vfs
--iptables=false --ip-masq=false --bridge=none --live-restore`` and its own data-root,
exec-root, socket and pidfile under ``<node>/docker``. calico-node of that node serves
``calico.sock``/``calico-ipam.sock`` in ``<node>/plugins`` (see :mod:`pycalico.node.libnetwork`),
so the node's dockerd finds exactly its own node's drivers. A restarted dockerd enters the same
holder, so its running containers' namespace mounts survive (``--live-restore``).

Nothing touches the root namespaces: no docker0, no iptables; the only trace in the root mount
namespace is the empty directory ``/run/docker/plugins`` (created if missing). The Debian
client ``/usr/bin/docker`` is always used with ``-H`` on the node's socket. Images: ``bb``
(busybox-static with applet links) is built once per lab and ``docker import``-ed once per
node; nothing is pulled. The network ``calico`` (``--subnet`` = the lab pool) is created on
every node. :func:`stop` removes the containers, then kills dockerd, its containerd and shims
(found by the node's exec-root in their command line) and the holder, by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from pycalico.lab.netns import LabError, kill_pids, pid_alive, run, spawn_daemon
from pycalico.lab.state import LabState, NodeState
from pycalico.system.process import Completed

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
IMAGE = "bb:latest"
NETWORK = "calico"
RUNTIMES = ("netns", "docker", "podman")
LABEL_PREFIX = "org.projectcalico.label."
ORCH_NAMESPACE = "libnetwork"  # the WEP namespace: DNS names <container>.libnetwork.<zone>
APPLETS = ("sh", "nc", "ip", "sleep", "cat", "echo", "ping", "wget", "nslookup", "hostname",
           "ls", "ps", "kill", "env", "true")  # fmt: skip


def node_paths(state: LabState, node: NodeState) -> tuple[Path, Path]:
    """(docker dir, plugin dir) of ``node``."""
    base = state.path / node.name
    return base / "docker", base / "plugins"


def node_env(state: LabState, node: NodeState) -> dict[str, str]:
    """What calico-node on ``node`` needs to serve the drivers to this node's dockerd."""
    if state.runtime != "docker":
        return {}
    ddir, pdir = node_paths(state, node)
    return {
        "CALICO_LIBNETWORK_ENABLED": "true",
        "CALICO_LIBNETWORK_PLUGIN_DIR": str(pdir),
        "CALICO_LIBNETWORK_LABEL_ENDPOINTS": "true",
        "DOCKER_HOST": f"unix://{ddir / 'docker.sock'}",
    }


def check_installed(runtime: str = "docker") -> None:
    if runtime == "podman":
        need = [shutil.which("podman") or "podman", shutil.which("runc") or "runc"]
    else:
        need = [DOCKER, DOCKERD]
    missing = [p for p in (*need, "/bin/busybox") if not os.path.exists(p)]
    if missing or not shutil.which("unshare") or not shutil.which("nsenter"):
        raise LabError(
            f"--runtime {runtime} needs {'podman, runc' if runtime == 'podman' else 'docker.io'},"
            f" busybox-static and util-linux (missing: {', '.join(missing) or 'unshare/nsenter'};"
            " run scripts/setup.sh)"
        )


def _docker(state: LabState, node: NodeState, args: tuple[str, ...], timeout: float) -> Completed:
    ddir, _ = node_paths(state, node)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(ddir)}
    sock = f"unix://{ddir / 'docker.sock'}"
    return run([DOCKER, "-H", sock, *args], check=False, timeout=timeout, env=env)


def docker(
    state: LabState, node: NodeState, *args: str, check: bool = True, timeout: float = 120
) -> str:
    """Run the Debian docker client against ``node``'s dockerd; its stdout."""
    p = _docker(state, node, args, timeout)
    if check and p.returncode != 0:
        raise LabError(f"docker {' '.join(args)} on {node.name}: {(p.stderr or p.stdout).strip()}")
    return p.stdout.strip()


def docker_ok(state: LabState, node: NodeState, *args: str, timeout: float = 60) -> bool:
    return _docker(state, node, args, timeout).returncode == 0


def _mounted(pid: int, target: str) -> bool:
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return any(line.split()[4] == target for line in f)
    except OSError:
        return False


def start(state: LabState, node: NodeState, timeout: float = 60) -> None:
    """Start (or restart) ``node``'s dockerd; records the PIDs in ``node``."""
    ddir, pdir = node_paths(state, node)
    for d in (ddir / "root", ddir / "exec", pdir):
        d.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/docker/plugins", exist_ok=True)
    if not pid_alive(node.mount_holder_pid):
        holder = spawn_daemon(
            ["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--mount",
             "--propagation", "private", "sh", "-c",
             # a waiter whose command line names pdir, so stop() finds it even unrecorded
             f"mount --bind {pdir} /run/docker/plugins && exec {sys.executable} -c "
             f"'import signal; signal.pause()' {pdir}"],
            ddir / "holder.log",
        )  # fmt: skip
        node.mount_holder_pid = holder.pid
        deadline = time.monotonic() + 10
        while not _mounted(holder.pid, "/run/docker/plugins"):
            if time.monotonic() > deadline or not pid_alive(holder.pid):
                raise LabError(f"{node.name}: could not bind-mount {pdir} over /run/docker/plugins")
            time.sleep(0.05)
    proc = spawn_daemon(
        ["nsenter", "-t", str(node.mount_holder_pid), "-m", "-n", DOCKERD,
         "--storage-driver=vfs", "--iptables=false", "--ip-masq=false", "--bridge=none",
         "--live-restore", f"--data-root={ddir / 'root'}", f"--exec-root={ddir / 'exec'}",
         f"-H=unix://{ddir / 'docker.sock'}", f"--pidfile={ddir / 'pid'}"],
        ddir / "dockerd.log",
    )  # fmt: skip
    node.engine_pid = proc.pid
    deadline = time.monotonic() + timeout
    while True:
        if not pid_alive(proc.pid):
            raise LabError(f"dockerd on {node.name} exited; see {ddir / 'dockerd.log'}")
        if (ddir / "docker.sock").exists() and docker_ok(state, node, "version", timeout=10):
            return
        if time.monotonic() > deadline:
            raise LabError(f"dockerd on {node.name} not ready after {timeout:.0f}s")
        time.sleep(0.2)


def rootfs(state: LabState) -> Path:
    root = state.path / "bb-rootfs"
    if (root / "bin" / "busybox").exists():
        return root
    for sub in ("bin", "etc", "tmp", "proc", "sys", "dev"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for tool in APPLETS:
        (root / "bin" / tool).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


def import_image(state: LabState, node: NodeState) -> None:
    if docker_ok(state, node, "image", "inspect", IMAGE):
        return
    ddir, _ = node_paths(state, node)
    run(["sh", "-c", f"tar -C {rootfs(state)} -c . | {DOCKER} -H unix://{ddir / 'docker.sock'} "
         f"import -c 'CMD [\"sh\"]' - {IMAGE}"], timeout=300)  # fmt: skip


def create_network(state: LabState, node: NodeState, name: str, subnet: str) -> None:
    if docker_ok(state, node, "network", "inspect", name):
        return
    docker(state, node, "network", "create", "--driver", "calico", "--ipam-driver",
           "calico-ipam", "--subnet", subnet, name)  # fmt: skip


def _ours(path: Path) -> list[int]:
    """Processes whose command line names ``path`` (a directory unique to this lab's node:
    its dockerd, containerd and shims, or its mount holder)."""
    needle = str(path).encode()
    out: list[int] = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if needle in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def stop(state: LabState, node: NodeState, keep_containers: bool = False) -> None:
    """Stop ``node``'s engine. ``keep_containers``: only dockerd (``--live-restore`` keeps
    the containers running; :func:`start` reattaches). Otherwise remove every container
    first (calico-node must be up for its drivers to release the endpoints), then kill
    dockerd, containerd, shims and the mount holder."""
    ddir, pdir = node_paths(state, node)
    if keep_containers:
        kill_pids([node.engine_pid], timeout=20)
        node.engine_pid = 0
        return
    if pid_alive(node.engine_pid):
        ids = docker(state, node, "ps", "-aq", check=False, timeout=30).split()
        if ids:
            docker(state, node, "rm", "-f", *ids, check=False, timeout=120)
    # by recorded PID, and by our unique paths in the command line (also what an interrupted
    # start did not record yet): dockerd, containerd, shims; then the mount holder
    kill_pids([node.engine_pid, *_ours(ddir)], timeout=20)
    kill_pids([node.mount_holder_pid, *_ours(pdir)])
    node.engine_pid = node.mount_holder_pid = 0


def container_ip(state: LabState, node: NodeState, name: str) -> str:
    out = docker(state, node, "inspect", name)
    nets = json.loads(out)[0]["NetworkSettings"]["Networks"]
    return next((str(n.get("IPAddress")) for n in nets.values() if n.get("IPAddress")), "")
