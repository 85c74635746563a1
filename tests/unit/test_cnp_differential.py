"""Randomized differential test: ClusterNetworkPolicy through Calico's conversion and the
policy model (tiers, Pass, profiles, IP sets) against a direct reading of the API's
evaluation rules (``docs/cluster-network-policy.md``), written here independently.

The oracle knows nothing of Calico: per direction it walks the Admin ClusterNetworkPolicies
selecting the pod (priority, then name; rules in order; first match decides, Pass leaves the
tier), then the Kubernetes NetworkPolicies (a selected pod is isolated), then Baseline, then
allows. Rules match when any peer matches and (no protocols or any protocol entry matches).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.felix.calc import PolicyInsight
from tests.kit import namespace, resource, workload_endpoint

API = "policy.networking.k8s.io/v1alpha2"
NSKEY = "kubernetes.io/metadata.name"
NAMESPACES = {"a": "red", "b": "red", "c": "blue"}
PODS = [(ns, pod, app) for ns in "abc" for pod, app in (("p", "web"), ("q", "db"))]
IPS = {(ns, pod): f"10.0.{i}.{j + 1}" for i, ns in enumerate("abc") for j, pod in enumerate("pq")}
PORTS = [
    {"name": "web", "protocol": "TCP", "port": 80},
    {"name": "dns", "protocol": "UDP", "port": 53},
]
PROBES = [(80, "TCP"), (53, "UDP"), (53, "TCP"), (8080, "TCP")]

# --- generators ---------------------------------------------------------------------------

label_sel = st.sampled_from(
    [
        {},
        {"matchLabels": {"team": "red"}},
        {"matchLabels": {"team": "blue"}},
        {"matchLabels": {NSKEY: "a"}},
        {"matchExpressions": [{"key": "team", "operator": "In", "values": ["blue"]}]},
    ]
)
pod_sel = st.sampled_from(
    [
        {},
        {"matchLabels": {"app": "web"}},
        {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
    ]
)
ns_peer = st.builds(lambda s: {"namespaces": s}, label_sel)
pods_peer = st.builds(
    lambda n, p: {"pods": {"namespaceSelector": n, "podSelector": p}}, label_sel, pod_sel
)
net_peer = st.builds(
    lambda nets: {"networks": nets},
    st.lists(
        st.sampled_from(["10.0.0.0/16", "10.0.1.0/24", "10.0.2.2/32", "0.0.0.0/0"]),
        min_size=1,
        max_size=2,
    ),
)
port = st.one_of(
    st.builds(lambda n: {"number": n}, st.sampled_from([53, 80, 8080])),
    st.builds(
        lambda s, e: {"range": {"start": s, "end": e}},
        st.sampled_from([50, 79]),
        st.sampled_from([80, 9000]),
    ),
)
protocol = st.one_of(
    st.builds(lambda k, p: {k: {"destinationPort": p}}, st.sampled_from(["tcp", "udp"]), port),
    st.builds(lambda n: {"destinationNamedPort": n}, st.sampled_from(["web", "dns"])),
)
action = st.sampled_from(["Accept", "Deny", "Pass"])


def _rule(egress: bool) -> st.SearchStrategy[dict[str, Any]]:
    peers = st.one_of(ns_peer, pods_peer, net_peer) if egress else st.one_of(ns_peer, pods_peer)
    return st.builds(
        lambda a, ps, protos: {
            "action": a,
            ("to" if egress else "from"): ps,
            **({"protocols": protos} if protos else {}),
        },
        action,
        st.lists(peers, min_size=1, max_size=2),
        st.one_of(st.none(), st.lists(protocol, min_size=1, max_size=2)),
    ).filter(
        # the API rejects named ports together with networks peers
        lambda r: (
            not (
                any("networks" in p for p in r.get("to", []))
                and any("destinationNamedPort" in p for p in r.get("protocols", []))
            )
        )
    )


cnp = st.builds(
    lambda tier, prio, subj, ing, eg: {
        "tier": tier,
        "priority": prio,
        "subject": subj,
        "ingress": ing,
        "egress": eg,
    },
    st.sampled_from(["Admin", "Baseline"]),
    st.integers(0, 3),
    st.one_of(
        st.builds(lambda s: {"namespaces": s}, label_sel),
        st.builds(
            lambda n, p: {"pods": {"namespaceSelector": n, "podSelector": p}}, label_sel, pod_sel
        ),
    ),
    st.lists(_rule(False), max_size=3),
    st.lists(_rule(True), max_size=3),
)
knp = st.builds(
    lambda ns, sel, frm: {"ns": ns, "podSelector": sel, "from": frm},
    st.sampled_from("abc"),
    pod_sel,
    st.one_of(st.none(), label_sel),  # None: no ingress rule (isolate only)
)

# --- the oracle -----------------------------------------------------------------------------


def matches(sel: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for e in sel.get("matchExpressions") or []:
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
        if e["operator"] == "Exists" and e["key"] not in labels:
            return False
    return True


def ns_labels(ns: str) -> dict[str, str]:
    return {NSKEY: ns, "team": NAMESPACES[ns]}


def pod_labels(ns: str, pod: str) -> dict[str, str]:
    return {"app": dict(((n, p), a) for n, p, a in PODS)[(ns, pod)]}


def selects(subject: dict[str, Any], ns: str, pod: str) -> bool:
    if "namespaces" in subject:
        return matches(subject["namespaces"], ns_labels(ns))
    pods = subject["pods"]
    return matches(pods["namespaceSelector"], ns_labels(ns)) and matches(
        pods["podSelector"], pod_labels(ns, pod)
    )


def peer_matches(peer: dict[str, Any], ns: str, pod: str) -> bool:
    if "networks" in peer:
        ip = ipaddress.ip_address(IPS[(ns, pod)])
        return any(ip in ipaddress.ip_network(n) for n in peer["networks"])
    return selects(peer, ns, pod)


def proto_matches(entry: dict[str, Any], dst: tuple[str, str], port: int, proto: str) -> bool:
    if "destinationNamedPort" in entry:
        return any(
            p["name"] == entry["destinationNamedPort"]
            and p["port"] == port
            and p["protocol"] == proto
            for p in PORTS
        )
    ((key, body),) = entry.items()
    if key.upper() != proto:
        return False
    dp = body["destinationPort"]
    if "number" in dp:
        return bool(dp["number"] == port)
    return bool(dp["range"]["start"] <= port <= dp["range"]["end"])


def direction(
    policies: list[tuple[str, dict[str, Any]]],
    npols: list[dict[str, Any]],
    me: tuple[str, str],
    other: tuple[str, str],
    dst: tuple[str, str],
    port: int,
    proto: str,
    egress: bool,
) -> bool:
    key = "egress" if egress else "ingress"
    for tier in ("Admin", "NP", "Baseline"):
        if tier == "NP":
            mine = [
                n
                for n in npols
                if not egress and n["ns"] == me[0] and matches(n["podSelector"], pod_labels(*me))
            ]
            if mine:
                return any(
                    n["from"] is not None and matches(n["from"], ns_labels(other[0])) for n in mine
                )
            continue
        ordered = sorted(
            (s["priority"], name, s)
            for name, s in policies
            if s["tier"] == tier and selects(s["subject"], *me)
        )
        for _, _, spec in ordered:
            decided = None
            for r in spec[key]:
                if not any(peer_matches(p, *other) for p in r["to" if egress else "from"]):
                    continue
                if "protocols" in r and not any(
                    proto_matches(e, dst, port, proto) for e in r["protocols"]
                ):
                    continue
                decided = r["action"]
                break
            if decided == "Accept":
                return True
            if decided == "Deny":
                return False
            if decided == "Pass":
                break
    return True


def oracle(
    policies: list[tuple[str, dict[str, Any]]],
    npols: list[dict[str, Any]],
    src: tuple[str, str],
    dst: tuple[str, str],
    port: int,
    proto: str,
) -> bool:
    return direction(policies, npols, src, dst, dst, port, proto, True) and direction(
        policies, npols, dst, src, dst, port, proto, False
    )


# --- the comparison -------------------------------------------------------------------------


def resources(
    policies: list[tuple[str, dict[str, Any]]], npols: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out = [namespace(ns, labels=ns_labels(ns)) for ns in NAMESPACES]
    out += [
        workload_endpoint(pod, namespace=ns, ip=IPS[(ns, pod)], labels={"app": app}, ports=PORTS)
        for ns, pod, app in PODS
    ]
    out += [
        resource("ClusterNetworkPolicy", name, spec, api_version=API) for name, spec in policies
    ]
    for i, n in enumerate(npols):
        spec: dict[str, Any] = {"podSelector": n["podSelector"], "policyTypes": ["Ingress"]}
        if n["from"] is not None:
            spec["ingress"] = [{"from": [{"namespaceSelector": n["from"]}]}]
        out.append(
            resource(
                "NetworkPolicy",
                f"np{i}",
                spec,
                namespace=n["ns"],
                api_version="networking.k8s.io/v1",
            )
        )
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cnp, min_size=1, max_size=4), st.lists(knp, max_size=2))
def test_model_agrees_with_the_api_semantics(
    specs: list[dict[str, Any]], npols: list[dict[str, Any]]
) -> None:
    policies = [(f"cnp{i}", s) for i, s in enumerate(specs)]
    insight = PolicyInsight(resources(policies, npols))
    wrong = []
    for src_ns, src_pod, _ in PODS:
        for dst_ns, dst_pod, _ in PODS:
            if (src_ns, src_pod) == (dst_ns, dst_pod):
                continue
            for port, proto in PROBES:
                want = oracle(policies, npols, (src_ns, src_pod), (dst_ns, dst_pod), port, proto)
                got = insight.explain(f"{src_ns}/{src_pod}", f"{dst_ns}/{dst_pod}", port, proto)
                if (got.verdict == "allow") != want:
                    wrong.append((src_ns, src_pod, dst_ns, dst_pod, port, proto, got.verdict))
    assert not wrong, wrong[:5]
