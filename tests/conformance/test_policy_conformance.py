"""Policy conformance: every case of k8s_netpol_cases.json and calico_policy_cases.json.

Each case (a cluster state) is turned into the v3/v1 resource dicts a datastore would hold —
Namespaces, ServiceAccounts, Profiles, Tiers, policies (Kubernetes and Calico, staged ones
included), WorkloadEndpoints as the CNI plugin writes them (profiles ``kns.<ns>`` and
``ksa.<ns>.<sa>`` unless the case names explicit profiles) — and run through
:class:`pycalico.felix.calc.PolicyInsight`; every probe's expectation is compared with the
evaluator's verdict (probes with ``loopback: true`` are skipped, as upstream does). A second
test goes through the ``calicoctl policy matrix -o json`` path with a sqlite datastore.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from pycalico.felix.calc import PolicyInsight
from pycalico.felix.calc.insight import Peer
from pycalico.model import protocol_number

DATA = Path(__file__).parent / "data"
K8S = json.loads((DATA / "k8s_netpol_cases.json").read_text())
CALICO = json.loads((DATA / "calico_policy_cases.json").read_text())
NODE = "node1"


def _escape(part: str) -> str:
    return part.replace("-", "--")


def wep(
    ns: str,
    name: str,
    labels: dict[str, str],
    ips: list[str],
    ports: list[dict[str, Any]],
    profiles: list[str] | None = None,
    sa: str = "",
    node: str = NODE,
) -> dict[str, Any]:
    """A WorkloadEndpoint as the CNI plugin writes it for pod ``ns/name``."""
    if profiles is None:
        profiles = [f"kns.{ns}"] + ([f"ksa.{ns}.{sa}"] if sa else [])
    spec: dict[str, Any] = {
        "orchestrator": "k8s",
        "node": node,
        "pod": name,
        "endpoint": "eth0",
        # As the CNI plugin names it: cali + sha1("<namespace>.<pod>")[:11].
        "interfaceName": "cali" + hashlib.sha1(f"{ns}.{name}".encode()).hexdigest()[:11],
        "ipNetworks": [ip + ("/128" if ":" in ip else "/32") for ip in ips],
        "profiles": profiles,
        "ports": [
            {
                "name": p["name"],
                "protocol": p.get("protocol", "TCP"),
                "port": p.get("port", p.get("containerPort")),
            }
            for p in ports
        ],
    }
    if sa:
        spec["serviceAccountName"] = sa
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {
            "name": f"{_escape(node)}-k8s-{_escape(name)}-eth0",
            "namespace": ns,
            "labels": dict(labels),
        },
        "spec": spec,
    }


def hep(ep: dict[str, Any]) -> dict[str, Any]:
    """A HostEndpoint for a case endpoint that has no namespace (a host)."""
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "HostEndpoint",
        "metadata": {"name": ep["name"], "labels": dict(ep.get("labels") or {})},
        "spec": {
            "node": ep.get("node", NODE),
            "interfaceName": ep.get("interfaceName", "eth0"),
            "expectedIPs": _ips(ep),
            "profiles": list(ep.get("profiles") or []),
            "ports": [
                {
                    "name": p["name"],
                    "protocol": p.get("protocol", "TCP"),
                    "port": p.get("port", p.get("containerPort")),
                }
                for p in ep.get("ports") or []
            ],
        },
    }


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _ips(obj: dict[str, Any]) -> list[str]:
    if obj.get("ips"):
        return list(obj["ips"])
    return [obj["ip"]] if obj.get("ip") else []


def k8s_resources(case: dict[str, Any]) -> list[dict[str, Any]]:
    out = [namespace(n, dict(labels or {})) for n, labels in case["namespaces"].items()]
    for pod in case["pods"]:
        out.append(
            wep(pod["ns"], pod["name"], pod.get("labels") or {}, _ips(pod), pod.get("ports") or [])
        )
    return out + _listed_resources(case)


def calico_resources(case: dict[str, Any]) -> list[dict[str, Any]]:
    out = [namespace(n, dict(labels or {})) for n, labels in case["namespaces"].items()]
    for key, labels in (case.get("service_accounts") or {}).items():
        ns, _, name = key.partition("/")
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {})},
            }
        )
    for name, spec in (case.get("profiles") or {}).items():
        out.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "Profile",
                "metadata": {"name": name},
                "spec": spec,
            }
        )
    for ep in case["endpoints"]:
        if ep.get("external"):
            continue
        if not ep.get("namespace"):  # a host: HostEndpoint with its expected IPs
            out.append(hep(ep))
            continue
        out.append(
            wep(
                ep["namespace"],
                ep["name"],
                ep.get("labels") or {},
                _ips(ep),
                ep.get("ports") or [],
                profiles=ep.get("profiles"),
                sa=ep.get("serviceAccount", ""),
                node=ep.get("node", NODE),
            )
        )
    return out + _listed_resources(case)


def _listed_resources(case: dict[str, Any]) -> list[dict[str, Any]]:
    """Every resource dict the case lists directly (policies, tiers, staged policies, sets)."""
    out: list[dict[str, Any]] = []
    for key, value in case.items():
        if "symbolic" in key:  # templates of "policies" with {{ip:..}} placeholders
            continue
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, dict) and "apiVersion" in v and "kind" in v for v in value)
        ):
            out += value
    return out


def _check(insight: PolicyInsight, peers: dict[str, Peer], probes: list[dict[str, Any]]) -> None:
    wrong = []
    checked = 0
    for p in probes:
        if p.get("loopback"):
            continue
        ex = insight.explain_peers(
            peers[p["from"]],
            peers[p["to"]],
            p.get("port"),
            protocol_number(p["protocol"]),
            src_port=p.get("src_port"),
            icmp_type=p.get("icmp_type"),
            icmp_code=p.get("icmp_code"),
        )
        checked += 1
        if (ex.verdict == "allow") != p["expect"]:
            wrong.append(
                f"{p['from']} -> {p['to']} {p['protocol']}/{p.get('port')}: expected "
                f"{'allow' if p['expect'] else 'deny'}, got {ex.verdict} "
                f"(egress {ex.egress.reason} {ex.egress.policy}, "
                f"ingress {ex.ingress.reason} {ex.ingress.policy})"
            )
    assert checked > 0
    assert not wrong, f"{len(wrong)}/{checked} probes wrong:\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("case", K8S["cases"], ids=[c["name"][:80] for c in K8S["cases"]])
def test_k8s_netpol_case(case: dict[str, Any]) -> None:
    insight = PolicyInsight(k8s_resources(case))
    peers = {
        f"{p['ns']}/{p['name']}": insight.resolve(f"{p['ns']}/{p['name']}") for p in case["pods"]
    }
    _check(insight, peers, case["probes"])


@pytest.mark.parametrize("case", CALICO["cases"], ids=[c["name"][:80] for c in CALICO["cases"]])
def test_calico_policy_case(case: dict[str, Any]) -> None:
    insight = PolicyInsight(calico_resources(case))
    peers = {}
    for ep in case["endpoints"]:
        if ep.get("external"):
            peers[ep["name"]] = insight.resolve(_ips(ep)[0])
            assert peers[ep["name"]].endpoint is None
        elif not ep.get("namespace"):
            peers[ep["name"]] = insight.resolve(_ips(ep)[0])
            assert peers[ep["name"]].endpoint is not None
        else:
            ref = f"{ep['namespace']}/{ep['name']}"
            peers[ref] = peers[ep["name"]] = insight.resolve(ref)
    _check(insight, peers, case["probes"])


def _single_pod(side: dict[str, Any], name: str, port: int) -> dict[str, Any]:
    pod = side["pod"]
    ports = [
        {"name": pname, "protocol": spec.get("protocol", "TCP"), "port": spec.get("port", port)}
        for pname, spec in (pod.get("named_ports") or {}).items()
    ]
    return wep(pod["namespace"], name, pod.get("labels") or {}, [side["ip"]], ports)


SINGLE = K8S.get("single_traffic_cases", [])


@pytest.mark.parametrize("case", SINGLE, ids=[c["name"][:80] for c in SINGLE])
def test_k8s_single_traffic_case(case: dict[str, Any]) -> None:
    named_port_number = 8080
    for t in case["traffic"]:
        resources: list[dict[str, Any]] = list(case["policies"])
        ns_labels: dict[str, dict[str, str]] = {}
        refs = {}
        for role in ("source", "destination"):
            side = t[role]
            if "pod" in side:
                pod = side["pod"]
                ns_labels.setdefault(pod["namespace"], dict(pod.get("namespace_labels") or {}))
                resources.append(_single_pod(side, role, named_port_number))
                refs[role] = f"{pod['namespace']}/{role}"
            else:
                refs[role] = side["external_ip"]
        for p in case["policies"]:
            ns_labels.setdefault(p["metadata"]["namespace"], {})
        resources += [namespace(n, labels) for n, labels in ns_labels.items()]
        insight = PolicyInsight(resources)
        port = t.get("port", named_port_number if t.get("port_name") else None)
        ex = insight.explain(refs["source"], refs["destination"], port, t["protocol"])
        assert (ex.verdict == "allow") == t["expect"], ex.to_json()


def _cli_matrix(tmp_path: Path, resources: list[dict[str, Any]], ports: str) -> dict[str, str]:
    """Store ``resources`` in a sqlite datastore and run ``calicoctl policy matrix -o json``."""
    from click.testing import CliRunner

    from pycalico.config import load_config
    from pycalico.ctl.main import cli
    from pycalico.datastore import open_datastore

    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(tmp_path / "calico.db")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        ds = open_datastore(load_config(None))
        try:
            for r in resources:
                ds.create(r)
        finally:
            ds.close()
    result = CliRunner().invoke(cli, ["policy", "matrix", "--ports", ports, "-o", "json"], env=env)
    assert result.exit_code == 0, result.output
    probes = json.loads(result.output)["probes"]
    return {f"{p['from']} {p['to']} {p['port']}/{p['protocol']}": p["verdict"] for p in probes}


CLI_CASES = [K8S["cases"][i] for i in (0, len(K8S["cases"]) // 2)]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c["name"][:60] for c in CLI_CASES])
def test_cli_matrix_matches_k8s_case(case: dict[str, Any], tmp_path: Path) -> None:
    probes = [p for p in case["probes"] if not p.get("loopback")]
    ports = sorted({(p["port"], p["protocol"]) for p in probes})
    got = _cli_matrix(tmp_path, k8s_resources(case), ",".join(f"{n}/{pr}" for n, pr in ports))
    for p in probes:
        verdict = got[f"{p['from']} {p['to']} {p['port']}/{p['protocol']}"]
        assert (verdict == "allow") == p["expect"], p


def test_cli_matrix_matches_calico_case(tmp_path: Path) -> None:
    case = next(c for c in CALICO["cases"] if c.get("tiers"))
    probes = case["probes"]
    ports = sorted({(p["port"], p["protocol"]) for p in probes})
    got = _cli_matrix(tmp_path, calico_resources(case), ",".join(f"{n}/{pr}" for n, pr in ports))
    names = {e["name"]: f"{e['namespace']}/{e['name']}" for e in case["endpoints"]}
    for p in probes:
        verdict = got[f"{names[p['from']]} {names[p['to']]} {p['port']}/{p['protocol']}"]
        assert (verdict == "allow") == p["expect"], p
