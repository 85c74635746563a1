"""The lab's Podman runtime (``calico-lab up --runtime podman``): rootful podman per node
through the CNI plugins, no daemon.

Per node, under ``<lab>/<node>/podman/``: ``containers.conf`` (CNI backend, cgroupfs, runc,
file events, its own tmp dir, CNI config dir ``cni/net.d`` and plugin dir ``cni/bin``),
``storage.conf`` (vfs, own graphroot and runroot) and the ``k8s-pod-network`` conflist that
``calico-node install-cni`` writes (this node's name, the lab's datastore, the node's
cni-server socket). podman always runs as ``nsenter --net=<node netns> podman`` with that
environment, so container veths, routes and sysctls land in the node's namespace; the
image ``bb`` (busybox-static) is imported once per node. Containers get plain-CNI endpoints
(orchestrator ``cni``, profile ``k8s-pod-network``) and the workload DNS as resolver.
:func:`stop` removes every container and unmounts what podman mounted under the node dir.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pycalico.dnsconf import DNS_ADDRESS
from pycalico.lab.netns import LabError, run
from pycalico.lab.state import LabState, NodeState

IMAGE = "localhost/bb:latest"
NETWORK = "k8s-pod-network"


def root(state: LabState, node: NodeState) -> Path:
    return state.path / node.name / "podman"


def env(r: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": str(r),
        "CONTAINERS_CONF": str(r / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(r / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(r / "registries.conf"),
    }


def podman(
    state: LabState, node: NodeState, *args: str, check: bool = True, timeout: float = 120
) -> str:
    r = root(state, node)
    argv = ["nsenter", f"--net=/run/netns/{node.netns}", "podman", *args]
    p = run(argv, check=False, timeout=timeout, env=env(r))
    if check and p.returncode != 0:
        raise LabError(f"podman {' '.join(args)} on {node.name}: {(p.stderr or p.stdout).strip()}")
    return p.stdout.strip()


def setup(state: LabState, node: NodeState, rootfs: Path) -> None:
    """Write the node's podman and CNI configuration and import the image."""
    r = root(state, node)
    for d in ("tmp", "storage", "run", "cni/net.d", "cni/bin"):
        (r / d).mkdir(parents=True, exist_ok=True)
    (r / "registries.conf").write_text("")
    (r / "containers.conf").write_text(
        f"""[containers]
netns = "bridge"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
dns_servers = ["{DNS_ADDRESS}"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{r}/events.log"
runtime = "runc"
tmp_dir = "{r}/tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{r}/cni/bin", "/usr/lib/cni"]
network_config_dir = "{r}/cni/net.d"
default_network = "{NETWORK}"
"""
    )
    (r / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{r}/storage"\nrunroot = "{r}/run"\n'
    )
    # the plugins and conflist exactly as an operator installs them (calico-node install-cni)
    install_env = dict(os.environ)
    install_env.update(state.datastore_env())
    run(
        [str(Path(sys.executable).parent / "calico-node"), "install-cni",
         "--bin-dir", str(r / "cni" / "bin"), "--conf-dir", str(r / "cni" / "net.d"),
         "--network-name", NETWORK, "--nodename", node.name, "--no-portmap",
         "--log-file-path", str(state.path / "cni.log"),
         "--cni-socket", str(state.path / node.name / "cni.sock")],
        env=install_env,
    )  # fmt: skip
    tar = state.path / "bb.tar"
    if not tar.exists():
        run(["tar", "-C", str(rootfs), "-cf", str(tar), "."])
    podman(state, node, "import", "--change", 'CMD ["/bin/sh"]', str(tar), IMAGE, timeout=300)


def stop(state: LabState, node: NodeState) -> None:
    r = root(state, node)
    if not (r / "containers.conf").exists():
        return
    podman(state, node, "rm", "-f", "-a", "-t", "0", check=False, timeout=120)
    for sub in ("storage", "run"):
        run(["umount", "-R", str(r / sub)], check=False)
