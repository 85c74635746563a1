"""Lab nodes: seed the datastore for the chosen topology and run ``calico-node`` per node.

``seed`` writes what an operator would: the IP pool(s) for the encapsulation mode (a
dual-stack lab also ``default-ipv6-ippool``, with the node's IPv6 address as ``IP6``), the
BGPConfiguration (mesh off when route reflectors are used) and, for route reflectors, the
Node resources with ``routeReflectorClusterID`` and a label plus the BGPPeer that makes
every node peer with them. ``start`` runs ``calico-node run`` inside the node's namespace
(its own BIRD, its own nftables), logging to the lab directory, and records its PID.
Readiness: the agent writes ``<state dir>/status.json`` with ``{"ready": bool, ...}``; as on a
real node it also serves ``localhost:9099/liveness|readiness`` and metrics on ``:9091`` in
the node's namespace (``calico-lab exec node1 curl -s localhost:9099/readiness``).

Settings: ``FELIX_*`` variables in ``up``'s environment are recorded (``state.node_env``) and
given to every later start of the lab's agents; ``FELIX_ROUTEREFRESHINTERVAL`` (which the
route agent reads only from FelixConfiguration) is seeded as FelixConfiguration ``default``
``routeRefreshInterval``. Flow logs are on (FelixConfiguration ``default``
``flowLogsFileEnabled: true``; each node's store is ``<node dir>/flows.db``, its API
HTTPS on ``:9098`` with the lab's CA, server certificate and token (``<lab dir>/flows-api``,
:mod:`pycalico.lab.flowauth`): ``calico-lab flows``, or ``calicoctl flows`` on a node).
With ``--tor`` the global BGPPeer ``tor`` makes every node peer with the FRR router.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycalico.lab.netns import LabError, enter_netns, in_ns, kill_pid, pid_alive, spawn_daemon
from pycalico.lab.state import LabState, NodeState

TOR_PEER_IP = "198.18.0.253"
TOR_AS = 64513
ENV_PREFIXES = ("FELIX_",)
HEALTH_PORT = 9099
METRICS_PORT = 9091
# calico-node's health and metrics settings in the lab (what Calico's manifests set)
HEALTH_ENV = {
    "FELIX_HEALTHENABLED": "true",
    "FELIX_HEALTHPORT": str(HEALTH_PORT),
    "FELIX_PROMETHEUSMETRICSENABLED": "true",
    "FELIX_PROMETHEUSMETRICSPORT": str(METRICS_PORT),
}


def recorded_env(environ: dict[str, str]) -> dict[str, str]:
    """The part of ``up``'s environment every calico-node of the lab gets."""
    return {k: v for k, v in environ.items() if k.startswith(ENV_PREFIXES)}


RR_LABEL = "route-reflector"
RR_CLUSTER_ID = "244.0.0.1"

ENCAP_MODES = {
    "none": ("Never", "Never"),
    "vxlan": ("Never", "Always"),
    "vxlan-crosssubnet": ("Never", "CrossSubnet"),
    "ipip": ("Always", "Never"),
    "ipip-crosssubnet": ("CrossSubnet", "Never"),
}


def seed_resources(state: LabState, route_reflectors: int) -> list[dict[str, Any]]:
    ipip, vxlan = ENCAP_MODES[state.encap]
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "default-ipv4-ippool"},
            "spec": {
                "cidr": state.pool,
                "ipipMode": ipip,
                "vxlanMode": vxlan,
                "natOutgoing": True,
                "blockSize": 26,
            },
        },
    ]
    if state.pool6:
        # Calico has no IP-in-IP for IPv6 (VXLAN is its v6 encapsulation): an ipip lab's v6
        # pool uses VXLAN in the same mode, so v6 crosses the router of a 2-subnet lab too.
        docs.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": "default-ipv6-ippool"},
                "spec": {
                    "cidr": state.pool6,
                    "ipipMode": "Never",
                    "vxlanMode": vxlan if vxlan != "Never" else ipip,
                    "natOutgoing": True,
                    "blockSize": 122,
                },
            }
        )
    docs += [
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeToNodeMeshEnabled": route_reflectors == 0, "asNumber": 64512},
        },
    ]
    for node in state.nodes:
        spec: dict[str, Any] = {"bgp": {"ipv4Address": node.ip}}
        if node.ip6:
            spec["bgp"]["ipv6Address"] = node.ip6
        labels = {"kubernetes.io/hostname": node.name}
        if node.route_reflector:
            spec["bgp"]["routeReflectorClusterID"] = RR_CLUSTER_ID
            labels[RR_LABEL] = "true"
        docs.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "Node",
                "metadata": {"name": node.name, "labels": labels},
                "spec": spec,
            }
        )
    # Flow logs are on in the lab (FelixConfiguration ``default``, so ``node.<name>`` can
    # switch one node off: ``flowLogsFileEnabled: false``).
    from pycalico.lab.flowauth import felix_settings, files

    felix_spec: dict[str, Any] = {"flowLogsFileEnabled": True, **felix_settings(files(state.path))}
    refresh = state.node_env.get("FELIX_ROUTEREFRESHINTERVAL")
    if refresh:
        felix_spec["routeRefreshInterval"] = refresh if refresh[-1:].isalpha() else f"{refresh}s"
    docs.append(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": felix_spec,
        }
    )
    if state.tor:
        docs.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "BGPPeer",
                "metadata": {"name": "tor"},
                "spec": {"peerIP": TOR_PEER_IP, "asNumber": TOR_AS},
            }
        )
    if route_reflectors:
        docs.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "BGPPeer",
                "metadata": {"name": "peer-with-route-reflectors"},
                "spec": {"nodeSelector": "all()", "peerSelector": f"has({RR_LABEL})"},
            }
        )
    return docs


def seed(state: LabState, route_reflectors: int) -> None:
    from pycalico.api import decode
    from pycalico.client import ResourceClient
    from pycalico.config import load_config
    from pycalico.datastore import open_datastore
    from pycalico.lab.flowauth import ensure

    ensure(state.path, [n.ip for n in state.nodes])  # the flow API's certificates and token
    with enter_netns(state.datastore_netns):
        ds = open_datastore(load_config(env=state.datastore_env()))
        try:
            client = ResourceClient(ds)
            for doc in seed_resources(state, route_reflectors):
                client.apply(decode(doc))
        finally:
            ds.close()


def node_dir(state: LabState, node: NodeState) -> Path:
    d = state.path / node.name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _set_pid(name: str, pid: int) -> Callable[[LabState], None]:
    def change(s: LabState) -> None:
        s.node(name).pid = pid

    return change


def start(state: LabState, node: NodeState) -> None:
    """Start ``node``'s calico-node; the check that none runs, the start and the record of
    its PID happen under the lab lock, so two parallel starts cannot both start one."""
    with state.locked():
        current = LabState.read(state.path).node(node.name).pid
        if pid_alive(current):
            raise LabError(f"calico-node on {node.name} is already running (pid {current})")
        _start(state, node)


def _start(state: LabState, node: NodeState) -> None:
    d = node_dir(state, node)
    env = dict(os.environ)
    env.update(state.node_env)
    env.update(state.datastore_env())
    env.update(
        NODENAME=node.name,
        IP=node.ip,
        IP6=node.ip6 or "none",
        CALICO_NODE_STATE_DIR=str(d),
        CALICO_BIRD_SOCKET=str(d / "bird.ctl"),
        CALICO_MTU_FILE=str(d / "mtu"),
    )
    from pycalico.lab.engine import node_env

    env.update(node_env(state, node))
    # As on a real node: health on localhost:9099, metrics on :9091 (each node has its own
    # network namespace, so the ports never collide); an explicit setting in ``up``'s
    # environment (recorded in node_env) wins.
    for k, v in HEALTH_ENV.items():
        env.setdefault(k, v)
    env.setdefault("FELIX_FLOWLOGSFILEDIRECTORY", str(d))  # the node's flows.db
    (d / "status.json").unlink(missing_ok=True)
    proc = spawn_daemon(
        in_ns(node.netns, [str(Path(sys.executable).parent / "calico-node"), "run"]),
        d / "calico-node.log",
        env=env,
    )
    node.pid = proc.pid
    state.update(_set_pid(node.name, proc.pid))


def stop(state: LabState, node: NodeState, hard: bool = False) -> None:
    if hard and pid_alive(node.pid):
        os.kill(node.pid, 9)
    else:
        kill_pid(node.pid, timeout=10)
    node.pid = 0
    state.update(_set_pid(node.name, 0))


def kill(state: LabState, node: NodeState) -> None:
    """SIGKILL of calico-node (as an operator testing resilience would); BIRD and the
    dataplane stay. Waits until the process is gone."""
    if not pid_alive(node.pid):
        raise LabError(f"calico-node on {node.name} is not running")
    os.kill(node.pid, 9)
    deadline = time.monotonic() + 10
    while pid_alive(node.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    node.pid = 0
    state.update(_set_pid(node.name, 0))


def status(state: LabState, node: NodeState) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state.path / node.name / "status.json").read_text())
    except (OSError, ValueError):
        data = {"ready": False}
    if not pid_alive(node.pid):
        data["ready"] = False
    return data


def diagnose(state: LabState, node: NodeState, tail: int = 1500) -> str:
    """What an operator needs when ``node`` is not ready: its status errors and BGP sessions
    and the tail of its calico-node log."""
    st = status(state, node)
    lines = [f"--- {node.name} ({node.ip}, pid {node.pid}, "
             f"{'running' if pid_alive(node.pid) else 'not running'})"]  # fmt: skip
    for e in st.get("errors") or []:
        lines.append(f"  error: {e}")
    for b in st.get("bgp") or []:
        lines.append(
            f"  bgp {b.get('peer', '')} {b.get('type', '')} {b.get('state', '')} "
            f"{b.get('info', '')}"
        )
    for key in ("felix_in_sync", "routes_in_sync", "bird_running"):
        if key in st:
            lines.append(f"  {key}: {st[key]}")
    log = state.path / node.name / "calico-node.log"
    try:
        text = log.read_text(errors="replace")[-tail:]
    except OSError:
        text = "(no log)"
    lines.append(f"  tail of {log}:")
    lines += ["    " + line for line in text.splitlines()]
    return "\n".join(lines)


def wait_ready(state: LabState, nodes: list[NodeState], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(nodes)
    while pending and time.monotonic() < deadline:
        for n in list(pending):
            if not pid_alive(n.pid):
                raise LabError(f"calico-node on {n.name} exited:\n{diagnose(state, n)}")
            if status(state, n).get("ready"):
                pending.remove(n)
        time.sleep(0.2)
    if pending:
        detail = "\n".join(diagnose(state, n) for n in pending)
        raise LabError(
            f"nodes not ready after {timeout:.0f}s: {', '.join(n.name for n in pending)}\n" + detail
        )
