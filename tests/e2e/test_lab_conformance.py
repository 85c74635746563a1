"""calico-lab e2e: a sample of the policy conformance truth tables, live (issues 8 and 16).

Cases from ``tests/conformance/data`` (Kubernetes NetworkPolicy, Calico v3 policy and
ClusterNetworkPolicy truth tables) are replayed on a real 3-node lab: the case's namespaces
(with their labels), pods (labels, service accounts; spread over the nodes, each serving the
probed ports) are created with ``calico-lab``, the case's tiers and policies applied with
``calico-lab apply``; then ``calico-lab matrix -o json`` (packets through the kernel) must
equal ``calico-lab calicoctl policy matrix -o json`` (the model) probe by probe, and both
must give the case's expected verdict for every probe between pods the lab created.

Translation: the lab assigns pod IPs, so cases with ipBlock/nets are not sampled; SCTP
probes are skipped (no sctp module on this kernel), as are ``loopback`` probes (pod to
itself: undefined upstream) and probes to a pod the lab did not create (the Kubernetes
cases are spec-derived over 9 pods; their verdicts between any subset are unchanged) or to
external hosts. Kubernetes pods serve ``80,81 x TCP,UDP`` with named ports
``serve-<port>-<proto>``, exactly the cases' model; Calico cases' pods serve 8080/TCP,
5432/TCP and 53/UDP (the cases' probes; their named ports are not sampled).
ClusterNetworkPolicy cases run on six of the upstream suite's pods (gryffindor, slytherin and
hufflepuff; ravenclaw's pods are not needed by the sampled cases) serving 80/TCP, 8080/TCP,
53/UDP and 5353/UDP; the lab names a container port ``serve-<port>-<proto>``, so a
``destinationNamedPort`` of the case (``web``, ``dns``) is renamed to the lab's name of the
same container port; the matrix is restricted to the ports the case probes.

One lab per (datastore, family); every case runs on sqlite, two of them again on etcd.
Policies and tiers are deleted after each case, so cases are independent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Lab, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]

DATA = Path(__file__).parent.parent / "conformance" / "data"
K8S = {c["name"]: c for c in json.loads((DATA / "k8s_netpol_cases.json").read_text())["cases"]}
CALICO = {
    c["name"]: c for c in json.loads((DATA / "calico_policy_cases.json").read_text())["cases"]
}
NODES = ("node1", "node2", "node3")
Probes = dict[tuple[str, str, int, str], str]

# family -> the pods every case of the family runs on, and the ports they serve
K8S_PODS = ["x/a", "x/b", "y/a", "y/b", "z/a", "z/b"]
K8S_PORTS = ["80/TCP", "80/UDP", "81/TCP", "81/UDP"]
CALICO_PORTS = ["8080/TCP", "5432/TCP", "53/UDP"]
CNP = {c["name"]: c for c in json.loads((DATA / "cnp_cases.json").read_text())["cases"]}
CNP_PORTS = ["80/TCP", "8080/TCP", "53/UDP", "5353/UDP"]
CNP_HOUSES = ("gryffindor", "slytherin", "hufflepuff")

K8S_CASES = [
    # ingress: podSelector AND namespaceSelector (matchExpressions NotIn) in one peer
    "should enforce policy based on PodSelector and NamespaceSelector",
    # ingress from a namespace, on one named port only
    "should allow ingress access from namespace on one named port",
    # egress only: to one pod of another namespace
    "should enforce egress policy allowing traffic to a server in a different namespace "
    "based on PodSelector and NamespaceSelector",
    # ingress + egress, UDP ports, a named UDP port, matchExpressions on pod and namespace
    "cyclonus portprotocolcases: ingress: two ports [{'protocol': 'UDP', 'port': 80}, "
    "{'protocol': 'UDP', 'port': 'serve-81-udp'}]",
]
CALICO_CASES = [
    # tiers: Deny in a lower-order tier, Pass to the default tier, namespaceSelector
    "lower-order tier wins: deny in tier 'security' (order 100) beats allow in default tier",
    # serviceAccounts.names match
    "serviceAccounts.names in a GlobalNetworkPolicy",
    # a Calico NetworkPolicy (order 100) beats a Kubernetes NetworkPolicy (order 1000)
    "Calico policy at order 100 overrides a Kubernetes NetworkPolicy (order 1000, default tier)",
]
CNP_CASES = [
    # Admin tier: Accept before Deny on a destinationNamedPort (TCP "web")
    "CNPAdminTierEgressNamedPort/Should-support-an-allow-egress-policy-for-named-port#1",
    # Admin tier: ingress and egress rules, Deny by TCP and UDP port
    "CNPAdminTierGress/Should-support-a-deny-gress-policy-across-different-protocols-at-the-"
    "specified-ports#4",
    # Admin Pass -> Kubernetes NetworkPolicy (default tier) decides
    "CNPAdminTierIntegration/Should-support-a-pass-ingress-policy-for-admin-CNP-and-respect-"
    "the-match-for-network-policy#3",
    # priority: a Pass at a better priority beats a Deny; Baseline Accept decides
    "CNPAdminTierPriorityField/Should-respect-admin-CNP-priority-field-thus-passing-both-"
    "ingress-and-egress-traffic-over-to-baseline-CNP#3",
    # Baseline tier: egress on a destinationNamedPort (UDP "dns")
    "CNPBaselineTierEgressNamedPort/Should-support-an-allow-egress-policy-for-named-port#1",
]
ETCD_CASES = {K8S_CASES[3], CALICO_CASES[0]}

RUNS = [
    pytest.param(ds, family, name, id=f"{ds}-{family}-{i}")
    for ds in ("sqlite", "etcd")
    for family, names in (("k8s", K8S_CASES), ("calico", CALICO_CASES), ("cnp", CNP_CASES))
    for i, name in enumerate(names)
    if ds == "sqlite" or name in ETCD_CASES
]


class Labs:
    """The current lab of the module; replaced when the (datastore, family) changes."""

    def __init__(self, factory: Callable[[], Lab]) -> None:
        self.factory = factory
        self.key: tuple[str, str] | None = None
        self.lab: Lab | None = None

    def get(self, datastore: str, family: str) -> Lab:
        if self.key == (datastore, family) and self.lab is not None:
            return self.lab
        self.close()
        self.lab = lab = self.factory()
        self.key = (datastore, family)
        lab.up("--nodes", "3", "--datastore", datastore)
        if family == "k8s":
            for i, key in enumerate(K8S_PODS):
                labels = f"pod={key.split('/')[1]}"
                lab.run("pod", "add", NODES[i % 3], key, "--labels", labels,
                        "--ports", ",".join(K8S_PORTS))  # fmt: skip
        elif family == "cnp":
            pods = next(iter(CNP.values()))["pods"]  # every case has the same pods
            pods = [p for p in pods if p["ns"].rsplit("-", 1)[-1] in CNP_HOUSES]
            for i, p in enumerate(pods):
                labels = ",".join(f"{k}={v}" for k, v in p["labels"].items())
                lab.run("pod", "add", NODES[i % 3], f"{p['ns']}/{p['name']}",
                        "--labels", labels, "--ports", ",".join(CNP_PORTS))  # fmt: skip
        else:
            # every sampled Calico case has the same endpoints (web, db, client)
            eps = [e for e in CALICO[CALICO_CASES[0]]["endpoints"] if not e.get("external")]
            for i, ep in enumerate(eps):
                labels = ",".join(f"{k}={v}" for k, v in ep["labels"].items())
                lab.run("pod", "add", NODES[i % 3], f"{ep['namespace']}/{ep['name']}",
                        "--labels", labels, "--serviceaccount", ep.get("serviceAccount", ""),
                        "--ports", ",".join(CALICO_PORTS))  # fmt: skip
        return lab

    def close(self) -> None:
        if self.lab is not None:
            self.lab.down()
        self.lab = self.key = None


@pytest.fixture(scope="module")
def labs(lab_factory: Callable[[], Lab]) -> Iterator[Labs]:
    labs = Labs(lab_factory)
    try:
        yield labs
    finally:
        labs.close()


def namespace_docs(case: dict[str, Any]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
        for ns, labels in case["namespaces"].items()
    ]
    for key, labels in (case.get("service_accounts") or {}).items():
        ns, _, name = key.partition("/")
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
            }
        )
    return docs


def expectedprobes_of(family: str, case: dict[str, Any], lab_pods: set[str]) -> Probes:
    """The case's verdicts for the probes the lab can make (see the module docstring)."""
    served = set({"k8s": K8S_PORTS, "calico": CALICO_PORTS, "cnp": CNP_PORTS}[family])
    ns_of = {e["name"]: e.get("namespace") for e in case.get("endpoints", [])}
    out: Probes = {}
    for p in case["probes"]:
        src, dst = p["from"], p["to"]
        if family == "calico":
            src, dst = f"{ns_of.get(src)}/{src}", f"{ns_of.get(dst)}/{dst}"
        proto = str(p["protocol"]).upper()
        if p.get("loopback") or src == dst or f"{p['port']}/{proto}" not in served:
            continue
        if src not in lab_pods or dst not in lab_pods:
            continue
        out[(src, dst, int(p["port"]), proto)] = "allow" if p["expect"] else "deny"
    return out


def probes_of(text: str) -> Probes:
    """``{(from, to, port, PROTOCOL): verdict}`` of a ``matrix -o json`` document."""
    return {
        (p["from"], p["to"], int(p["port"]), str(p["protocol"]).upper()): p["verdict"]
        for p in json.loads(text)["probes"]
    }


def lab_named_ports(case: dict[str, Any], docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``docs`` with each destinationNamedPort renamed to the lab's name of that container
    port (``serve-<port>-<proto>``), looked up in the case's pod ports."""
    names = {
        p["name"]: f"serve-{p['containerPort']}-{p['protocol'].lower()}"
        for pod in case["pods"]
        for p in pod["ports"]
        if p.get("name")
    }
    text = json.dumps(docs)
    for old, new in names.items():
        text = text.replace(f'"destinationNamedPort": "{old}"', f'"destinationNamedPort": "{new}"')
    out: list[dict[str, Any]] = json.loads(text)
    return out


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


@pytest.mark.parametrize(("datastore", "family", "name"), RUNS)
def test_case_live_matches_model_and_truth_table(
    labs: Labs, datastore: str, family: str, name: str
) -> None:
    case = {"k8s": K8S, "calico": CALICO, "cnp": CNP}[family][name]
    lab = labs.get(datastore, family)
    lab_pods = {f"{p['namespace']}/{p['name']}" for p in lab.state()["pods"]}
    expected = expectedprobes_of(family, case, lab_pods)
    if family == "cnp":  # few probes per upstream subtest; the live matrix covers the rest
        assert len(expected) == len([p for p in case["probes"] if p["protocol"] != "SCTP"])
    else:
        assert len(expected) >= 12, f"too few comparable probes in {name!r}"
        assert set(expected.values()) == {"allow", "deny"}, "a sample must both allow and deny"
    ports = ",".join(sorted({f"{port}/{proto}" for _, _, port, proto in expected}))
    policy_docs = list(case.get("tiers") or []) + list(case["policies"])
    if family == "cnp":
        policy_docs = lab_named_ports(case, policy_docs)

    lab.run("apply", "-f", "-", input=dump(namespace_docs(case)))
    lab.run("apply", "-f", "-", input=dump(policy_docs))
    try:
        model = probes_of(lab.calicoctl("policy", "matrix", "--ports", ports, "-o", "json").stdout)
        live: Probes = {}
        attempts = 0
        t0 = time.monotonic()

        def converged() -> bool:
            nonlocal live, attempts
            attempts += 1
            out = lab.run("matrix", "--ports", ports, "-o", "json", "--timeout", "1").stdout
            live = probes_of(out)
            return live == model

        # Felix programs the policy a moment after the apply returns
        wait_for(converged, 30, 0.5)
        assert live == model, sorted(
            (k, f"live={live.get(k)}", f"model={v}") for k, v in model.items() if live.get(k) != v
        )
        wrong = sorted(
            (k, f"case={v}", f"lab={model.get(k)}")
            for k, v in expected.items()
            if model.get(k) != v
        )
        assert wrong == [], f"{name}: {len(wrong)}/{len(expected)} probes differ: {wrong}"
        print(
            f"\n{datastore} {name[:60]!r}: {len(live)} live probes == model; "
            f"{len(expected)} agree with the truth table "
            f"({sum(v == 'allow' for v in expected.values())} allow); live matrix converged "
            f"after {attempts} matrices, {time.monotonic() - t0:.1f}s"
        )
    finally:
        # reverse order: policies before the tiers that hold them
        for doc in reversed(policy_docs):
            lab.run("calicoctl", "--name", lab.name, "delete", "-s", "-f", "-", input=dump([doc]))
