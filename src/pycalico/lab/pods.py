"""Lab pods: a network namespace wired by the real CNI plugin, plus an echo server.

``add`` creates the ``v1`` Namespace (and ServiceAccount) resources if missing, creates the
pod's namespace, runs the ``calico`` plugin binary exactly as a container runtime does (CNI_*
environment, network configuration on stdin, run in the node's namespace), records the
container's named ports (``serve-<port>-<proto>``) on its WorkloadEndpoint and starts the
echo server. ``delete`` runs CNI DEL and removes the namespace. Both are safe to run in
parallel (see :mod:`pycalico.lab.state`): a pod is recorded ``busy`` under the lab lock
before its resources exist and until they are gone. With ``--runtime docker`` the pod is a
real container (``--network none``, then wired by CNI as kubelet did with Docker).
Invariant: a failed ``add`` leaves nothing behind (CNI DEL + namespace removal) and its
record is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pycalico.lab import engine
from pycalico.lab.netns import (
    LabError,
    delete_netns,
    enter_netns,
    in_ns,
    ip_batch,
    kill_pid,
    pid_alive,
    run,
    spawn_daemon,
)
from pycalico.lab.state import LabState, PodState

NETWORK_NAME = "k8s-pod-network"
ETC_NETNS = "/etc/netns"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def netconf(
    state: LabState, node: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "type": "calico",
        "nodename": node,
        "log_level": "info",
        "log_file_path": str(state.path / "cni.log"),
        "ipam": {
            "type": "calico-ipam",
            "assign_ipv4": "true",
            "assign_ipv6": "true" if state.pool6 else "false",
        },
        "policy": {"type": "k8s"},
    }
    if state.datastore == "etcd":
        conf.update(datastore_type="etcdv3", etcd_endpoints=state.etcd_url)
    else:
        conf.update(datastore_type="sqlite", datastore_path=state.db_path)
    cni: dict[str, Any] = {}
    for what, pairs in (("labels", labels), ("annotations", annotations or {})):
        if pairs:
            cni[what] = [{"key": k, "value": v} for k, v in pairs.items()]
    if cni:
        conf["args"] = {"cni": cni}
    return conf


def _cni(state: LabState, pod: PodState, command: str, labels: dict[str, str]) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": pod.container_id,
        "CNI_NETNS": f"/run/netns/{pod.netns}",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name};"
            f"K8S_POD_INFRA_CONTAINER_ID={pod.container_id}"
            + (f";K8S_POD_SERVICE_ACCOUNT={pod.service_account}" if pod.service_account else "")
        ),
        "CNI_PATH": str(Path(sys.executable).parent),
        # The node's calico-node serves CNI calls in-process (the plugin falls back to doing
        # the work itself when the server is not there).
        "CALICO_CNI_SOCKET": str(state.path / pod.node / "cni.sock"),
    }
    node = state.node(pod.node)
    p = run(
        in_ns(node.netns, [_bin("calico")]),
        input=json.dumps(netconf(state, pod.node, labels, pod.annotations)),
        env=env,
        timeout=60,
        check=False,
    )
    if p.returncode != 0:
        try:
            err = json.loads(p.stdout)
            msg = f"{err.get('msg', '')}: {err.get('details', '')}"
        except ValueError:
            msg = (p.stderr or p.stdout).strip()
        raise LabError(f"CNI {command} for {pod.key} failed: {msg}")
    out: dict[str, Any] = json.loads(p.stdout) if p.stdout.strip() else {}
    return out


def _ensure_namespace_resources(state: LabState, namespace: str, sa: str) -> None:
    with enter_netns(state.datastore_netns):
        _create_namespace_docs(state, namespace, sa)


def _create_namespace_docs(state: LabState, namespace: str, sa: str) -> None:
    """Create the pod's Namespace (and ServiceAccount) unless they exist. The existence
    check reads the datastore directly: the API models (pydantic, about 2 s of CPU to import
    on a loaded host) are imported only when something must be created, not by every add."""
    from pycalico.config import load_config
    from pycalico.datastore import AlreadyExists, NotFound, open_datastore

    ds = open_datastore(load_config(env=state.datastore_env()))
    try:
        docs: list[dict[str, Any]] = []
        wanted = [("Namespace", namespace, "")]
        wanted += [("ServiceAccount", sa, namespace)] if sa else []
        for kind, name, ns in wanted:
            try:
                ds.get(kind, name, ns)
            except NotFound:
                meta = {"name": name, "namespace": ns} if ns else {"name": name}
                docs.append({"apiVersion": "v1", "kind": kind, "metadata": meta})
        if not docs:
            return
        from pycalico.api import decode
        from pycalico.client import ResourceClient

        client = ResourceClient(ds)
        for doc in docs:
            try:
                client.create(decode(doc))
            except AlreadyExists:
                pass
    finally:
        ds.close()


def _record_named_ports(state: LabState, pod: PodState) -> None:
    """Container ports as the WorkloadEndpoint's named ports (what k8s pod specs give Calico)."""
    ports = []
    for spec in pod.ports:
        port, _, proto = spec.partition("/")
        ports.append(
            {"name": f"serve-{port}-{proto.lower()}", "protocol": proto.upper(), "port": int(port)}
        )
    if not ports:
        return
    with enter_netns(state.datastore_netns):
        _patch_wep(state, pod, lambda spec: spec.__setitem__("ports", ports))


def parse_annotations(items: tuple[str, ...]) -> dict[str, str | None]:
    """``k=v`` sets, ``k-`` removes (kubectl annotate's syntax)."""
    out: dict[str, str | None] = {}
    for item in items:
        if "=" in item:
            k, _, v = item.partition("=")
            out[k] = v
        elif item.endswith("-"):
            out[item[:-1]] = None
        else:
            raise LabError(f"annotation {item!r}: expected KEY=VALUE or KEY-")
    return out


def annotate_pod(state: LabState, key: str, changes: dict[str, str | None]) -> dict[str, str]:
    """Set (value) or remove (None) annotations of pod ``key`` and rewrite its
    WorkloadEndpoint's ``spec.qosControls`` from them, as Calico's conversion does when a
    Kubernetes pod's annotations change. A bad QoS annotation raises ModelError (naming it)
    before anything is written. Returns the pod's new annotations."""
    from pycalico.model.qos import controls_from_annotations

    pod = state.pod(key)
    annotations = {k: v for k, v in {**pod.annotations, **changes}.items() if v is not None}
    qos = controls_from_annotations(annotations)

    def mutate(spec: dict[str, Any]) -> None:
        if qos:
            spec["qosControls"] = qos
        else:
            spec.pop("qosControls", None)

    with enter_netns(state.datastore_netns):
        _patch_wep(state, pod, mutate)

    def change(s: LabState) -> None:
        for p in s.pods:
            if p.key == key and p.container_id == pod.container_id:
                p.annotations = annotations

    state.update(change)
    return annotations


def _patch_wep(state: LabState, pod: PodState, mutate: Callable[[dict[str, Any]], None]) -> None:
    from pycalico.config import load_config
    from pycalico.datastore import Conflict, open_datastore

    ds = open_datastore(load_config(env=state.datastore_env()))
    try:
        weps = ds.list("WorkloadEndpoint", pod.namespace).items
        for _ in range(10):
            for wep in weps:
                if wep.get("spec", {}).get("containerID") == pod.container_id:
                    mutate(wep["spec"])
                    try:
                        ds.update(wep)
                        return
                    except Conflict:
                        break
            weps = ds.list("WorkloadEndpoint", pod.namespace).items
        raise LabError(f"no WorkloadEndpoint found for {pod.key}")
    finally:
        ds.close()


def _claim_new(pod: PodState) -> Callable[[LabState], None]:
    def change(s: LabState) -> None:
        if any(p.key == pod.key for p in s.pods):
            raise LabError(f"pod {pod.key} already exists")
        s.node(pod.node)  # KeyError -> unknown node
        s.pods.append(pod)

    return change


def _settle(pod: PodState) -> Callable[[LabState], None]:
    """Replace the busy record of ``pod`` (same container) by its final form."""

    def change(s: LabState) -> None:
        for i, p in enumerate(s.pods):
            if p.key == pod.key and p.container_id == pod.container_id:
                s.pods[i] = pod
                return
        raise LabError(f"pod {pod.key} was removed while it was being added")

    return change


def _forget(key: str, container_id: str) -> Callable[[LabState], None]:
    def change(s: LabState) -> None:
        s.pods = [p for p in s.pods if not (p.key == key and p.container_id == container_id)]

    return change


def add_pod(
    state: LabState,
    node: str,
    key: str,
    labels: dict[str, str],
    service_account: str,
    ports: list[str],
    annotations: dict[str, str] | None = None,
) -> PodState:
    """Add pod ``key`` on ``node``. The pod is recorded (busy) under the lab lock before
    anything is created, so parallel adds of the same key, ``pod del`` and ``down`` see it;
    the slow work (CNI ADD, the echo server) runs outside the lock; the final record
    replaces the busy one under the lock again."""
    namespace, _, name = key.partition("/")
    if not name:
        raise LabError(f"pod must be NAMESPACE/NAME, got {key!r}")
    cid = uuid.uuid4().hex
    pod = PodState(
        namespace=namespace,
        name=name,
        node=node,
        netns=f"{state.prefix}p{cid[:10]}",
        container_id=cid,
        ports=ports,
        labels=labels,
        service_account=service_account,
        annotations=dict(annotations or {}),
        busy=os.getpid(),
    )
    state.update(_claim_new(pod))
    server_pid = 0
    try:
        _ensure_namespace_resources(state, namespace, service_account)
        if state.runtime == "docker":
            _docker_sandbox(state, pod)
        else:
            run(["ip", "netns", "add", pod.netns])
        ip_batch(["link set lo up"], netns=pod.netns)
        result = _cni(state, pod, "ADD", labels)
        ips = [ip["address"] for ip in result.get("ips", [])]
        write_resolv_conf(pod.netns, namespace)
        final = replace(pod, ips=ips, busy=0)
        _record_named_ports(state, final)
        if ports:
            proc = spawn_daemon(
                in_ns(pod.netns, [sys.executable, "-m", "pycalico.lab.echo", *ports]),
                state.path / f"pod-{namespace}-{name}.log",
                env=dict(os.environ, POD_NAME=key),
            )
            final.server_pid = server_pid = proc.pid
        state.update(_settle(final))
    except BaseException:
        _undo(state, pod, server_pid)
        raise
    return final


def sandbox_name(pod: PodState) -> str:
    """The pod's Docker container (dockershim's naming: ``k8s_POD_<name>_<namespace>``)."""
    return f"k8s_POD_{pod.name}_{pod.namespace}_{pod.container_id[:8]}"


def _docker_sandbox(state: LabState, pod: PodState) -> None:
    """``--runtime docker``: the pod is a real container started with ``--network none``
    whose network namespace is then wired by the CNI plugin, as kubelet did with Docker
    (dockershim); ``ip netns attach`` names that namespace ``pod.netns`` for the lab."""
    node = state.node(pod.node)
    cid = engine.docker(state, node, "run", "-d", "--name", sandbox_name(pod), "--hostname",
                        pod.name, "--network", "none", "--label",
                        f"io.kubernetes.pod.namespace={pod.namespace}", "--label",
                        f"io.kubernetes.pod.name={pod.name}", engine.IMAGE, "sleep",
                        "2147483647")  # fmt: skip
    pid = engine.docker(state, node, "inspect", "-f", "{{.State.Pid}}", cid)
    run(["ip", "netns", "attach", pod.netns, pid])


def _undo(state: LabState, pod: PodState, server_pid: int) -> None:
    """Remove everything a failed add of ``pod`` may have created, then its record."""
    try:
        kill_pid(server_pid)
        _teardown(state, pod, strict=False)
    finally:
        try:
            state.update(_forget(pod.key, pod.container_id))
        except (OSError, ValueError):
            pass  # the lab itself is gone (``down`` ran meanwhile)


def write_resolv_conf(netns: str, namespace: str) -> None:
    """``/etc/netns/<netns>/resolv.conf``: what ``ip netns exec`` mounts as /etc/resolv.conf,
    pointing the pod at its node's workload DNS."""
    from pycalico.dnsconf import resolv_conf

    d = Path(ETC_NETNS) / netns
    d.mkdir(parents=True, exist_ok=True)
    (d / "resolv.conf").write_text(resolv_conf(namespace))


def remove_etc_netns(netns: str) -> None:
    shutil.rmtree(Path(ETC_NETNS) / netns, ignore_errors=True)


def delete_pod(state: LabState, key: str) -> None:
    """Delete pod ``key``: claim it (busy) under the lab lock, tear it down outside the lock
    (server, CNI DEL, namespace), then drop its record under the lock. A pod busy in a live
    process is refused; one left busy by a dead process (an interrupted add or del) is
    cleaned up."""
    claimed: list[PodState] = []

    def claim(s: LabState) -> None:
        p = s.pod(key)  # KeyError -> unknown
        if p.busy and p.busy != os.getpid() and pid_alive(p.busy):
            raise LabError(f"pod {key} is being added or deleted by pid {p.busy}")
        p.busy = os.getpid()
        claimed[:] = [replace(p)]

    state.update(claim)
    pod = claimed[0]
    kill_pid(pod.server_pid)
    # a pod left busy by a dead process may never have got its namespace or its CNI ADD
    _teardown(state, pod, strict=Path(f"/run/netns/{pod.netns}").exists())
    state.update(_forget(key, pod.container_id))


def _teardown(state: LabState, pod: PodState, strict: bool) -> None:
    """CNI DEL (releases the pod's addresses by its handle even without the namespace; its
    failure raises only when ``strict``), then the namespace and its /etc/netns files."""
    try:
        _cni(state, pod, "DEL", {})  # annotations are read on ADD only
    except LabError:
        if strict:
            raise
    if state.runtime == "docker":
        engine.docker(state, state.node(pod.node), "rm", "-f", sandbox_name(pod), check=False)
    delete_netns(pod.netns)
    remove_etc_netns(pod.netns)
