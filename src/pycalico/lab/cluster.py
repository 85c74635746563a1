"""Lab lifecycle: ``up`` builds underlay, datastore and nodes; ``down`` removes everything.

``--tor`` adds the FRR router of :mod:`pycalico.lab.tor`; ``--runtime docker`` one dockerd
per node (:mod:`pycalico.lab.engine`), ``--runtime podman`` podman per node
(:mod:`pycalico.lab.podman`). A failed ``up`` keeps the logs:
:func:`preserve_logs` copies the lab directory's small files to ``<lab dir>.failed/``.
Invariants: the state file records every namespace and PID before it is created/started, so a
failed or interrupted ``up`` is fully undone by ``down``; ``down`` only kills PIDs and deletes
namespaces this lab recorded (namespaces are additionally matched by the lab's prefix).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pycalico.lab import engine
from pycalico.lab import nodes as nodemod
from pycalico.lab import podman as podmanrt
from pycalico.lab import tor as tormod
from pycalico.lab.netns import (
    LabError,
    delete_netns,
    in_ns,
    kill_pid,
    kill_pids,
    list_netns,
    pid_alive,
    run,
    spawn_daemon,
)
from pycalico.lab.pods import remove_etc_netns
from pycalico.lab.state import LabState, NodeState, lab_dir, lab_lock, make_lab_dir, prefix_for
from pycalico.lab.topology import add_node, build_underlay, router_ip

ETCD_BIN = "/usr/bin/etcd"

Say = Callable[[str], None]


def _etcd_args(data: Path, url: str) -> list[str]:
    peer = "http://127.0.0.1:2380"
    return [
        ETCD_BIN, "--name", "lab", "--data-dir", str(data),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"lab={peer}",
    ]  # fmt: skip


def start_etcd(state: LabState) -> None:
    """(Re)start the lab's etcd on its data directory; returns once it is healthy."""
    if state.datastore != "etcd":
        raise LabError(f"lab {state.name!r} uses {state.datastore}, not etcd")
    if state.etcd_pid and pid_alive(state.etcd_pid):
        raise LabError(f"etcd of lab {state.name!r} is already running (pid {state.etcd_pid})")
    _start_etcd(state)


def stop_etcd(state: LabState) -> None:
    if state.datastore != "etcd":
        raise LabError(f"lab {state.name!r} uses {state.datastore}, not etcd")
    kill_pid(state.etcd_pid, timeout=10)
    state.update(_set_etcd(0, state.etcd_url))


def _set_etcd(pid: int, url: str) -> Callable[[LabState], None]:
    def change(s: LabState) -> None:
        s.etcd_pid, s.etcd_url = pid, url

    return change


def _start_etcd(state: LabState) -> None:
    ip = router_ip(0)
    data = state.path / "etcd"
    data.mkdir(parents=True, exist_ok=True)
    url = f"http://{ip}:2379"
    proc = spawn_daemon(in_ns(state.prefix + "rt", _etcd_args(data, url)), state.path / "etcd.log")
    state.update(_set_etcd(proc.pid, url))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        p = run(
            in_ns(state.prefix + "rt", ["etcdctl", "--endpoints", url, "endpoint", "health"]),
            timeout=None,
            check=False,
        )
        if p.returncode == 0:
            return
        time.sleep(0.2)
    raise LabError("etcd did not become healthy; see " + str(state.path / "etcd.log"))


def up(
    name: str,
    nodes: int,
    encap: str,
    subnets: int,
    route_reflectors: int,
    datastore: str,
    pool: str,
    tor: bool,
    timeout: float,
    say: Say,
    runtime: str = "netns",
    pool6: str = "",
) -> LabState:
    if LabState.exists(name):
        raise LabError(f"lab {name!r} already exists (calico-lab down --name {name})")
    if encap.endswith("crosssubnet") and subnets < 2:
        say(f"note: {encap} with one subnet never encapsulates (use --subnets 2)")
    if route_reflectors > nodes:
        raise LabError("--route-reflectors cannot exceed --nodes")
    if pool6:
        try:
            net6 = ipaddress.ip_network(pool6)
        except ValueError as exc:
            raise LabError(f"--pool6: {pool6!r} is not a CIDR ({exc})") from None
        if net6.version != 6 or net6.prefixlen > 122:
            raise LabError(f"--pool6: {pool6} must be an IPv6 CIDR of /122 or larger")
    if runtime not in engine.RUNTIMES:
        raise LabError(f"--runtime {runtime!r}: want one of {', '.join(engine.RUNTIMES)}")
    if runtime != "netns":
        engine.check_installed(runtime)
    d = make_lab_dir(name)
    state = LabState(
        name=name,
        prefix=prefix_for(name),
        directory=str(d),
        encap=encap,
        subnets=subnets,
        pool=pool,
        pool6=pool6,
        datastore=datastore,
        tor=tor,
        node_env=nodemod.recorded_env(dict(os.environ)),
        runtime=runtime,
    )
    with state.locked(create=True):
        if LabState.exists(name):
            raise LabError(f"lab {name!r} already exists (calico-lab down --name {name})")
        state.save()
    t0 = time.monotonic()
    say(f"underlay: {subnets} subnet(s) on 198.18.0.0/15"
        + (" and fd00:198:18::/48" if pool6 else "") + f", router {state.prefix}rt")  # fmt: skip
    build_underlay(state)
    if datastore == "etcd":
        say("datastore: etcd on the underlay")
        _start_etcd(state)
    else:
        say(f"datastore: sqlite {state.db_path}")
    for i in range(1, nodes + 1):
        node = add_node(state, f"node{i}", i, nodes, route_reflector=i <= route_reflectors)
        say(f"node {node.name}: {node.ip}" + (f" {node.ip6}" if node.ip6 else "")
            + (" (route reflector)" if node.route_reflector else ""))  # fmt: skip
    if tor:
        tormod.start(state)
        say(f"tor: FRR AS {tormod.TOR_AS} at {tormod.tor_ip()} announcing {tormod.TOR_PREFIX}")
    nodemod.seed(state, route_reflectors)
    pools = pool + (f" and {pool6}" if pool6 else "")
    say(f"pool {pools} encap={encap}; BGP " + ("route reflectors" if route_reflectors else "mesh"))
    for node in state.nodes:
        nodemod.start(state, node)
    say(f"started calico-node on {nodes} node(s); waiting until ready ...")
    nodemod.wait_ready(state, state.nodes, timeout)
    if runtime == "docker":
        start_engines(state, say)
    elif runtime == "podman":
        for node in state.nodes:
            podmanrt.setup(state, node, engine.rootfs(state))
        say(f"podman: CNI network {podmanrt.NETWORK} and image {podmanrt.IMAGE} on every node")
    say(f"lab {name!r} is up in {time.monotonic() - t0:.1f}s")
    return state


def _set_engine(node: str, engine_pid: int, holder: int) -> Callable[[LabState], None]:
    def change(s: LabState) -> None:
        n = s.node(node)
        n.engine_pid, n.mount_holder_pid = engine_pid, holder

    return change


def start_engine(state: LabState, node: NodeState) -> None:
    """(Re)start ``node``'s dockerd and record its PIDs."""
    try:
        engine.start(state, node)
    finally:
        state.update(_set_engine(node.name, node.engine_pid, node.mount_holder_pid))


def stop_engine(state: LabState, node: NodeState, keep_containers: bool = False) -> None:
    try:
        engine.stop(state, node, keep_containers)
    finally:
        state.update(_set_engine(node.name, node.engine_pid, node.mount_holder_pid))


def start_engines(state: LabState, say: Say) -> None:
    """One dockerd per node, the busybox image and the ``calico`` network on each."""
    for node in state.nodes:
        start_engine(state, node)
        engine.import_image(state, node)
        engine.create_network(state, node, engine.NETWORK, state.pool)
    say(f"docker: one dockerd per node, image {engine.IMAGE}, network {engine.NETWORK} "
        f"({state.pool})")  # fmt: skip


def down(name: str, say: Say) -> None:
    """Remove the lab, holding its lock so no command records anything meanwhile (one
    waiting for the lock then finds the lab gone)."""
    d = lab_dir(name)
    if not d.is_dir():
        _down(name, say)
        return
    with lab_lock(d):
        _down(name, say)


def _down(name: str, say: Say) -> None:
    d = lab_dir(name)
    prefix = prefix_for(name)
    if LabState.exists(name):
        state = LabState.load(name)
        if state.runtime == "podman":
            for node in state.nodes:
                podmanrt.stop(state, node)
        if state.runtime == "docker":  # containers first, while calico-node releases them
            with ThreadPoolExecutor(max(1, len(state.nodes))) as pool:
                list(pool.map(lambda n: engine.stop(state, n), state.nodes))
        kill_pids([pod.server_pid for pod in state.pods])
        kill_pids([node.pid for node in state.nodes], timeout=10)
        kill_pids([state.etcd_pid, *state.tor_pids])
        names = set(state.namespaces) | {p.netns for p in state.pods}
    else:
        names = set()
    names |= {n for n in list_netns() if n.startswith(prefix)}
    for ns in sorted(names):
        delete_netns(ns)
        remove_etc_netns(ns)
    tormod.remove_runtime(d)
    if d.exists():
        shutil.rmtree(d, ignore_errors=True)
    say(f"lab {name!r} removed ({len(names)} namespace(s))")


def node_status_rows(state: LabState) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for node in state.nodes:
        st = nodemod.status(state, node)
        rows.append(
            {
                "name": node.name,
                "ip": node.ip.split("/")[0],
                "pid": node.pid,
                "ready": bool(st.get("ready")),
                "bgp": st.get("bgp", []),
            }
        )
    return rows


def logs_dir(state: LabState) -> Path:
    return state.path


MAX_KEPT_FILE = 4 << 20


def preserve_logs(name: str) -> Path | None:
    """Copy the lab directory's regular files (logs, status, configs; not etcd's data or
    files over 4 MiB) and the ToR's FRR logs to ``<lab dir>.failed/``; returns it."""
    src = lab_dir(name)
    if not src.is_dir():
        return None
    dst = src.with_name(src.name + ".failed")
    shutil.rmtree(dst, ignore_errors=True)
    for root, dirs, files in os.walk(src, followlinks=True):
        dirs[:] = [x for x in dirs if x != "etcd"]
        rel = Path(root).relative_to(src)
        for f in files:
            p = Path(root) / f
            try:
                if not p.is_file() or p.stat().st_size > MAX_KEPT_FILE:
                    continue
                (dst / rel).mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, dst / rel / f)
            except OSError:
                continue
    return dst
