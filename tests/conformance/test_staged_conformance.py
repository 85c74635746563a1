"""Staged policies evaluate as if enforced: every conformance case, with its policies staged.

For every case of ``calico_policy_cases.json`` and ``k8s_netpol_cases.json`` (the data the
policy conformance tier replays), each policy is turned into its staged kind
(NetworkPolicy -> StagedNetworkPolicy, GlobalNetworkPolicy -> StagedGlobalNetworkPolicy,
Kubernetes NetworkPolicy -> StagedKubernetesNetworkPolicy). Then, over the case's probes and
the full workload matrix of the probes' ports:

- the enforced decisions equal those of the case with no policy at all;
- the pending decisions equal the original enforced ones — verdict, reason, tier, rule and
  profile, with the deciding policy named by its staged identity (``snp/``, ``sgnp/``,
  ``sknp/``) — and so the case's expectations.

Staged policies a case already lists (they must not affect enforcement) are left out of the
staged variant: promoting them would change the original enforced matrix by design.

Replacement and deletion over the same cases (:func:`test_staged_replaces_and_deletes`): each
policy enforced in a stale version with the original staged under its name gives pending ==
the original case; a staged Delete of every policy gives pending == no policy.
"""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.felix.calc import Decision, PolicyInsight
from pycalico.felix.calc.insight import Peer
from pycalico.model import protocol_number
from tests.conformance.test_policy_conformance import (
    CALICO,
    K8S,
    _ips,
    calico_resources,
    k8s_resources,
)

_STAGED_OF = {
    ("projectcalico.org/v3", "NetworkPolicy"): "StagedNetworkPolicy",
    ("projectcalico.org/v3", "GlobalNetworkPolicy"): "StagedGlobalNetworkPolicy",
    ("networking.k8s.io/v1", "NetworkPolicy"): "StagedKubernetesNetworkPolicy",
}
_STAGED_PREFIX = {"snp/": "np/", "sgnp/": "gnp/", "sknp/": "knp/"}


def _is_policy(r: dict[str, Any]) -> bool:
    return (r["apiVersion"], r["kind"]) in _STAGED_OF or str(r["kind"]).startswith("Staged")


def staged_variant(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in resources:
        kind = _STAGED_OF.get((r["apiVersion"], r["kind"]))
        if kind is not None:
            out.append(r | {"apiVersion": "projectcalico.org/v3", "kind": kind})
        elif not str(r["kind"]).startswith("Staged"):
            out.append(r)
    return out


def _enforced_name(policy: str | None) -> str | None:
    for staged, enforced in _STAGED_PREFIX.items():
        if policy and policy.startswith(staged):
            return enforced + policy[len(staged) :]
    return policy


def _key(d: Decision, unstage: bool = False) -> tuple[Any, ...]:
    policy = _enforced_name(d.policy) if unstage else d.policy
    return (d.verdict, d.reason, d.tier, policy, d.rule, d.action, d.profile)


Flow = tuple[Peer, Peer, int | None, int, dict[str, Any]]


def _flows(insight: PolicyInsight, peers: dict[str, Peer], case: dict[str, Any]) -> list[Flow]:
    probes = [p for p in case["probes"] if not p.get("loopback")]
    flows: list[Flow] = [
        (
            peers[p["from"]],
            peers[p["to"]],
            p.get("port"),
            protocol_number(p["protocol"]),
            {
                "src_port": p.get("src_port"),
                "icmp_type": p.get("icmp_type"),
                "icmp_code": p.get("icmp_code"),
            },
        )
        for p in probes
    ]
    ports = sorted({(p["port"], protocol_number(p["protocol"])) for p in probes if p.get("port")})
    workloads = [Peer(e.nets[0].network_address, e) for e in insight.workloads if e.nets]
    flows += [
        (s, d, port, proto, {})
        for s in workloads
        for d in workloads
        if s.endpoint is not d.endpoint
        for port, proto in ports
    ]
    return flows


def _peer_refs(case: dict[str, Any]) -> dict[str, str]:
    if "pods" in case:
        return {f"{p['ns']}/{p['name']}": f"{p['ns']}/{p['name']}" for p in case["pods"]}
    refs = {}
    for ep in case["endpoints"]:
        if ep.get("external") or not ep.get("namespace"):
            refs[ep["name"]] = _ips(ep)[0]
        else:
            refs[ep["name"]] = refs[f"{ep['namespace']}/{ep['name']}"] = (
                f"{ep['namespace']}/{ep['name']}"
            )
    return refs


def _agree(
    case: dict[str, Any],
    resources: list[dict[str, Any]],
    enforced_like: list[dict[str, Any]],
    pending_like: list[dict[str, Any]],
) -> None:
    """``resources``' enforced decisions equal ``enforced_like``'s, and its pending ones
    ``pending_like``'s enforced ones (staged names mapped to their enforced kind)."""
    tested = PolicyInsight(resources)
    as_enforced = PolicyInsight(enforced_like)
    as_pending = PolicyInsight(pending_like)
    refs = _peer_refs(case)
    flows = {
        name: _flows(ins, {k: ins.resolve(v) for k, v in refs.items()}, case)
        for name, ins in (("t", tested), ("e", as_enforced), ("p", as_pending))
    }
    assert len({len(f) for f in flows.values()}) == 1 and flows["t"]
    wrong = []
    for t, e, p in zip(flows["t"], flows["e"], flows["p"], strict=True):
        got = tested.explain_peers(*t[:4], **t[4])
        enf = as_enforced.explain_peers(*e[:4], **e[4])
        pen = as_pending.explain_peers(*p[:4], **p[4])
        what = f"{got.src.label()} -> {got.dst.label()} {got.protocol}/{got.port}"
        if (_key(got.egress), _key(got.ingress)) != (_key(enf.egress), _key(enf.ingress)):
            wrong.append(f"{what}: enforced {got.to_json()} != {enf.to_json()}")
        _, p_egress, p_ingress = got.pending
        if (_key(p_egress, True), _key(p_ingress, True)) != (_key(pen.egress), _key(pen.ingress)):
            wrong.append(f"{what}: pending {got.to_json()['pending']} != {pen.to_json()}")
    assert not wrong, f"{len(wrong)}/{len(flows['t'])} flows wrong:\n" + "\n".join(wrong[:5])


def _check_case(case: dict[str, Any], resources: list[dict[str, Any]]) -> None:
    no_policy = [r for r in resources if not _is_policy(r)]
    original = [r for r in resources if not str(r["kind"]).startswith("Staged")]
    _agree(case, staged_variant(resources), no_policy, original)


def _stale(policy: dict[str, Any]) -> dict[str, Any]:
    """Another version of ``policy`` (same identity and tier): deny everything it selects."""
    if policy["apiVersion"] == "networking.k8s.io/v1":
        spec: dict[str, Any] = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    else:
        spec = {
            "tier": policy["spec"].get("tier"),
            "selector": "all()",
            "types": ["Ingress", "Egress"],
            "ingress": [{"action": "Deny"}],
            "egress": [{"action": "Deny"}],
        }
    return policy | {"spec": spec}


def _staged_delete(policy: dict[str, Any]) -> dict[str, Any]:
    kind = _STAGED_OF[(policy["apiVersion"], policy["kind"])]
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": dict(policy["metadata"]),
        "spec": {"stagedAction": "Delete"},
    }


@pytest.mark.parametrize("case", CALICO["cases"], ids=[c["name"][:80] for c in CALICO["cases"]])
def test_calico_case_staged(case: dict[str, Any]) -> None:
    _check_case(case, calico_resources(case))


@pytest.mark.parametrize("case", K8S["cases"], ids=[c["name"][:80] for c in K8S["cases"]])
def test_k8s_case_staged(case: dict[str, Any]) -> None:
    _check_case(case, k8s_resources(case))


def test_staged_variants_are_not_vacuous() -> None:
    """Most cases' policies select endpoints: their staged variants must differ."""
    cases = [calico_resources(c) for c in CALICO["cases"]] + [
        k8s_resources(c) for c in K8S["cases"]
    ]
    differing = sum(PolicyInsight(staged_variant(r)).has_staged for r in cases)
    assert differing >= 0.9 * len(cases), (differing, len(cases))


MIXED = [c for c in CALICO["cases"] + K8S["cases"][::6] if c["policies"]]


@pytest.mark.parametrize("case", MIXED, ids=[c["name"][:80] for c in MIXED])
def test_staged_replaces_and_deletes(case: dict[str, Any]) -> None:
    """Every policy enforced in a stale version (deny all it selects) with the original
    staged under the same name: pending == the original case, enforced == the stale world.
    And every policy enforced with a staged Delete: pending == no policy, enforced == case."""
    resources = calico_resources(case) if "endpoints" in case else k8s_resources(case)
    original = [r for r in resources if not str(r["kind"]).startswith("Staged")]
    policies = [r for r in original if _is_policy(r)]
    others = [r for r in original if not _is_policy(r)]
    stale = others + [_stale(p) for p in policies]
    _agree(case, stale + staged_variant(policies), stale, original)
    _agree(case, original + [_staged_delete(p) for p in policies], original, others)
