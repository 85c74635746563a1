"""Workload identity: orchestrator detection, Calico's names, the WorkloadEndpoint dict.

Pure functions (hashlib only). Names as Calico builds them:
- k8s workloads (``K8S_POD_NAMESPACE`` and ``K8S_POD_NAME`` in CNI_ARGS): host veth ``cali`` +
  sha1("<namespace>.<pod>")[:11]; WEP name ``<node>-k8s-<pod>-<iface>``; profiles
  ``kns.<ns>`` (+ ``ksa.<ns>.<sa>``); labels ``projectcalico.org/{namespace,orchestrator,
  serviceaccount}``.
- plain CNI workloads: host veth ``cali`` + containerID[:11]; WEP ``<node>-cni-<cid>-<iface>``
  in namespace ``default`` (orchestrator ``cni``, workload = container ID), profile = the
  network name.
Every ``-`` inside a WEP name segment is doubled. ``FELIX_INTERFACEPREFIX`` (first entry)
replaces ``cali`` as Calico does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ORCH_K8S = "k8s"
ORCH_CNI = "cni"
LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
LABEL_SERVICEACCOUNT = "projectcalico.org/serviceaccount"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class Workload:
    orchestrator: str
    namespace: str
    workload: str  # pod name (k8s) or container ID (cni)
    container_id: str
    node: str
    endpoint: str  # CNI_IFNAME
    network: str
    service_account: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[dict[str, Any], ...] = ()
    qos_controls: dict[str, Any] | None = None  # from the pod's QoS annotations

    @property
    def is_k8s(self) -> bool:
        return self.orchestrator == ORCH_K8S


def interface_prefix(env: Mapping[str, str]) -> str:
    raw = env.get("FELIX_INTERFACEPREFIX", "")
    first = raw.split(",")[0].strip()
    return first or "cali"


def veth_name(w: Workload, prefix: str = "cali") -> str:
    if w.is_k8s:
        digest = hashlib.sha1(f"{w.namespace}.{w.workload}".encode()).hexdigest()
        return f"{prefix}{digest[:11]}"
    return f"{prefix}{w.container_id[:11]}"


def _esc(part: str) -> str:
    return part.replace("-", "--")


def wep_name(node: str, orchestrator: str, workload: str, endpoint: str) -> str:
    return "-".join(_esc(p) for p in (node, orchestrator, workload, endpoint))


def wep_name_of(w: Workload) -> str:
    return wep_name(w.node, w.orchestrator, w.workload, w.endpoint)


def handle_id(network: str, container_id: str) -> str:
    """Calico's IPAM handle for a CNI attachment (``k8s-pod-network.<containerID>``)."""
    return f"{network}.{container_id}"


def ports_from_mappings(mappings: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """runtimeConfig ``portMappings`` -> WorkloadEndpoint ``ports`` (host ports)."""
    out: list[dict[str, Any]] = []
    for m in mappings:
        if not isinstance(m, dict):
            continue
        cport, hport = m.get("containerPort"), m.get("hostPort")
        if not isinstance(cport, int) or isinstance(cport, bool):
            continue
        p: dict[str, Any] = {
            "name": "",
            "protocol": str(m.get("protocol") or "tcp").upper(),
            "port": cport,
        }
        if isinstance(hport, int) and hport:
            p["hostPort"] = hport
        if isinstance(m.get("hostIP"), str) and m["hostIP"]:
            p["hostIP"] = m["hostIP"]
        out.append(p)
    return tuple(out)


def build_workload(
    *,
    cni_args: Mapping[str, str],
    container_id: str,
    ifname: str,
    node: str,
    network: str,
    extra_labels: Mapping[str, str],
    service_account: str = "",
    ports: tuple[dict[str, Any], ...] = (),
) -> Workload:
    ns = cni_args.get("K8S_POD_NAMESPACE", "")
    pod = cni_args.get("K8S_POD_NAME", "")
    sa = service_account or cni_args.get("K8S_POD_SERVICE_ACCOUNT", "")
    if ns and pod:
        labels = dict(extra_labels)
        labels[LABEL_NAMESPACE] = ns
        labels[LABEL_ORCHESTRATOR] = ORCH_K8S
        if sa and len(sa) < 63:
            labels[LABEL_SERVICEACCOUNT] = sa
        return Workload(ORCH_K8S, ns, pod, container_id, node, ifname, network, sa, labels, ports)
    labels = dict(extra_labels)
    labels[LABEL_NAMESPACE] = DEFAULT_NAMESPACE
    labels[LABEL_ORCHESTRATOR] = ORCH_CNI
    return Workload(
        ORCH_CNI,
        DEFAULT_NAMESPACE,
        container_id,
        container_id,
        node,
        ifname,
        network,
        sa,
        labels,
        ports,
    )


def profiles_for(w: Workload) -> list[str]:
    if w.is_k8s:
        out = [f"kns.{w.namespace}"]
        if w.service_account:
            out.append(f"ksa.{w.namespace}.{w.service_account}")
        return out
    return [w.network]


def build_wep(
    w: Workload, *, host_ifname: str, mac: str, ip_networks: Sequence[str]
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "orchestrator": w.orchestrator,
        "workload": w.workload if not w.is_k8s else "",
        "node": w.node,
        "containerID": w.container_id,
        "pod": w.workload if w.is_k8s else "",
        "endpoint": w.endpoint,
        "interfaceName": host_ifname,
        "mac": mac,
        "ipNetworks": list(ip_networks),
        "profiles": profiles_for(w),
    }
    if w.service_account:
        spec["serviceAccountName"] = w.service_account
    if w.ports:
        spec["ports"] = [dict(p) for p in w.ports]
    if w.qos_controls:
        spec["qosControls"] = dict(w.qos_controls)
    spec = {k: v for k, v in spec.items() if v not in ("", None)}
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {"name": wep_name_of(w), "namespace": w.namespace, "labels": dict(w.labels)},
        "spec": spec,
    }


def network_profile(network: str) -> dict[str, Any]:
    """The Profile a plain-CNI network gets (created if missing), as Calico does it."""
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": network},
        "spec": {
            "labelsToApply": {network: ""},
            "ingress": [{"action": "Allow", "source": {"selector": f"has({network})"}}],
            "egress": [{"action": "Allow"}],
        },
    }
