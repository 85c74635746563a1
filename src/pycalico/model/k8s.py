"""Kubernetes ``networking.k8s.io/v1`` NetworkPolicy -> Calico v3 NetworkPolicy spec.

Owns the conversion Calico's Kubernetes layer applies: a default-tier NetworkPolicy at order
1000 with Allow rules (one rule per protocol x peer; ipBlock -> nets/notNets); pod selectors
gain ``projectcalico.org/orchestrator == 'k8s'``; policyTypes default as the API server does.

Invariant: pure; bad input raises ``ModelError`` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pycalico.model.types import LABEL_ORCHESTRATOR, ModelError


def quote_literal(value: str) -> str:
    """A selector string literal for ``value`` (no escapes exist: pick the other quote)."""
    return f'"{value}"' if "'" in value else f"'{value}'"


def k8s_selector(sel: Any, pod: bool, field: str) -> str:
    """A k8s LabelSelector -> Calico selector text (pod selectors gain orchestrator k8s)."""
    terms: list[str] = [f"{LABEL_ORCHESTRATOR} == 'k8s'"] if pod else []
    if sel is None:
        return " && ".join(terms)
    if not isinstance(sel, Mapping):
        raise ModelError(f"{field}: must be a mapping")
    match_labels = sel.get("matchLabels") or {}
    exprs = sel.get("matchExpressions") or []
    if not pod and not match_labels and not exprs:
        return "all()"
    for k in sorted(match_labels):
        terms.append(f"{k} == {quote_literal(str(match_labels[k]))}")
    for i, e in enumerate(exprs):
        key, op = e.get("key"), e.get("operator")
        values = ", ".join(quote_literal(str(v)) for v in e.get("values") or [])
        if op == "In":
            terms.append(f"{key} in {{{values}}}")
        elif op == "NotIn":
            terms.append(f"{key} not in {{{values}}}")
        elif op == "Exists":
            terms.append(f"has({key})")
        elif op == "DoesNotExist":
            terms.append(f"!has({key})")
        else:
            raise ModelError(f"{field}.matchExpressions[{i}].operator: unknown {op!r}")
    return " && ".join(terms)


def _k8s_rules(
    rule: Mapping[str, Any], peers_key: str, ingress: bool, field: str
) -> list[dict[str, Any]]:
    peers = list(rule.get(peers_key) or []) or [None]
    ports = list(rule.get("ports") or []) or [None]
    by_proto: dict[str, list[Any] | None] = {}
    for i, p in enumerate(ports):
        if p is None:
            by_proto = {"": None}
            break
        proto = str(p.get("protocol") or "TCP")
        if p.get("port") is None:
            by_proto[proto] = None
            continue
        port: Any = p["port"]
        if p.get("endPort") is not None:
            if not isinstance(port, int):
                raise ModelError(f"{field}.ports[{i}].endPort: requires a numeric port")
            port = f"{port}:{int(p['endPort'])}"
        if proto not in by_proto or by_proto[proto] is not None:
            existing = by_proto.get(proto) or []
            by_proto[proto] = [*existing, port]
    out: list[dict[str, Any]] = []
    for proto in sorted(by_proto):
        port_list = by_proto[proto]
        for j, peer in enumerate(peers):
            entity: dict[str, Any] = {}
            if peer is not None:
                pf = f"{field}.{peers_key}[{j}]"
                if peer.get("ipBlock"):
                    block = peer["ipBlock"]
                    entity["nets"] = [block.get("cidr")]
                    if block.get("except"):
                        entity["notNets"] = list(block["except"])
                else:
                    entity["selector"] = k8s_selector(
                        peer.get("podSelector"), True, f"{pf}.podSelector"
                    )
                    if "namespaceSelector" in peer and peer["namespaceSelector"] is not None:
                        entity["namespaceSelector"] = k8s_selector(
                            peer["namespaceSelector"], False, f"{pf}.namespaceSelector"
                        )
            r: dict[str, Any] = {"action": "Allow"}
            if proto:
                r["protocol"] = proto
            if ingress:
                r["source"] = entity
                if port_list:
                    r["destination"] = {"ports": port_list}
            else:
                if port_list:
                    entity["ports"] = port_list
                r["destination"] = entity
            out.append(r)
    return out


def k8s_to_v3_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The Calico NetworkPolicy spec Calico derives from a k8s NetworkPolicy spec."""
    ingress: list[dict[str, Any]] = []
    for i, r in enumerate(spec.get("ingress") or []):
        ingress += _k8s_rules(r or {}, "from", True, f"spec.ingress[{i}]")
    egress: list[dict[str, Any]] = []
    for i, r in enumerate(spec.get("egress") or []):
        egress += _k8s_rules(r or {}, "to", False, f"spec.egress[{i}]")
    ptypes = {str(t) for t in spec.get("policyTypes") or []}
    if not ptypes:
        # The Kubernetes API server defaults policyTypes: Ingress, plus Egress when egress
        # rules are present; Calico then sees the defaulted object.
        ptypes = {"Ingress"} | ({"Egress"} if spec.get("egress") else set())
    types = [t for t in ("Ingress", "Egress") if t in ptypes] or ["Ingress"]
    return {
        "tier": "default",
        "order": 1000.0,
        "selector": k8s_selector(spec.get("podSelector") or {}, True, "spec.podSelector"),
        "types": types,
        "ingress": ingress,
        "egress": egress,
    }
