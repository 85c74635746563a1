"""Kubernetes ``policy.networking.k8s.io/v1alpha2`` ClusterNetworkPolicy -> Calico policy.

Owns the conversion Calico 3.32's Kubernetes layer applies to a ClusterNetworkPolicy (CNP):
one global policy (identity kind ``kcnp``, the CNP's name) in a static tier:

- ``spec.tier`` ``Admin`` -> tier ``kube-admin`` (order 1000), ``Baseline`` ->
  ``kube-baseline`` (order 10,000,000); both tiers end in ``Pass`` (``types.IMPLIED_TIERS``),
  so traffic no CNP rule decides goes on to the next tier (NetworkPolicies in ``default``,
  then the baseline tier, then the namespace profile's allow).
- ``spec.priority`` is the policy ``order`` (lower first; ties by name).
- Subject ``namespaces`` -> namespaceSelector + ``projectcalico.org/orchestrator == 'k8s'``;
  ``pods`` -> namespaceSelector (empty: all namespaces) + podSelector.
- Actions: ``Accept`` -> ``Allow`` (ends evaluation), ``Deny`` -> ``Deny``, ``Pass`` ->
  ``Pass`` (skip to the next tier).
- Each CNP rule becomes one Calico rule per protocol x peer (protocols sorted; a
  ``destinationNamedPort`` has no protocol and matches the named port of any protocol).
  Peers: ``namespaces`` -> namespaceSelector; ``pods`` -> namespaceSelector + podSelector;
  egress ``networks`` -> ``nets`` (CIDRs, host bits cleared; they match pod IPs too).
- Egress ``nodes`` and ``domainNames`` peers are not supported by Calico: the rule fails to
  convert and fails closed like any rule that does not convert - an ``Accept`` rule is
  dropped, a ``Deny`` or ``Pass`` rule becomes "deny everything".
- Policy ``types`` are exactly the directions that have rules (a CNP without ingress rules
  has no effect on ingress).

Invariant: pure; an unknown tier or a missing subject raises ``ModelError`` (Calico skips
such a policy), bad rules fail closed as above.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_network
from typing import Any

from pycalico.model.k8s import k8s_selector
from pycalico.model.types import ModelError

CNP_API = "policy.networking.k8s.io/v1alpha2"
CNP_KIND = "ClusterNetworkPolicy"
CNP_POLICY_KIND = "kcnp"
CNP_TIERS = {"Admin": "kube-admin", "Baseline": "kube-baseline"}
_ACTIONS = {"Accept": "Allow", "Deny": "Deny", "Pass": "Pass"}
_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}


class _RuleError(ValueError):
    """A CNP rule Calico cannot convert (it fails closed)."""


def _port(port: Any, field: str) -> int | str | None:
    """A CNP ``Port`` -> a Calico port (number or ``"start:end"``); None = all ports."""
    if not port:
        return None
    if not isinstance(port, Mapping):
        raise _RuleError(f"{field}: must be a mapping")
    if port.get("number"):
        number = port["number"]
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 65536:
            raise _RuleError(f"{field}.number: invalid port {number!r}")
        return number
    rng = port.get("range")
    if rng:
        start, end = rng.get("start"), rng.get("end")
        if not all(isinstance(v, int) and 0 < v < 65536 for v in (start, end)) or start > end:
            raise _RuleError(f"{field}.range: invalid port range {start!r}-{end!r}")
        return f"{start}:{end}"
    return None


def _protocol_ports(protocols: Any, field: str) -> dict[str, list[int | str] | None]:
    """Ports grouped by protocol ("" = no protocol: named ports, or everything)."""
    by_proto: dict[str, list[int | str] | None] = {}
    for i, entry in enumerate(protocols or [None]):
        proto, port = "", None
        if entry:
            if not isinstance(entry, Mapping):
                raise _RuleError(f"{field}[{i}]: must be a mapping")
            for key, name in _PROTOCOLS.items():
                if entry.get(key) is not None:
                    proto = name
                    port = _port((entry[key] or {}).get("destinationPort"), f"{field}[{i}].{key}")
                    break
            else:
                if entry.get("destinationNamedPort"):
                    port = str(entry["destinationNamedPort"])
        if not proto and port is None:
            return {"": None}  # an empty entry (or none at all): every protocol and port
        if port is None:
            by_proto[proto] = None
        elif proto not in by_proto or by_proto[proto] is not None:
            by_proto[proto] = [*(by_proto.get(proto) or []), port]
    return by_proto


def _peer(peer: Any, egress: bool, field: str) -> dict[str, Any]:
    """One CNP peer -> the Calico EntityRule fields selecting it."""
    if not isinstance(peer, Mapping):
        raise _RuleError(f"{field}: must be a mapping")
    if peer.get("pods") is not None:
        pods = peer["pods"]
        return {
            "selector": k8s_selector(pods.get("podSelector") or {}, True, f"{field}.pods"),
            "namespaceSelector": k8s_selector(
                pods.get("namespaceSelector") or {}, False, f"{field}.pods.namespaceSelector"
            ),
        }
    if peer.get("namespaces") is not None:
        return {"namespaceSelector": k8s_selector(peer["namespaces"], False, f"{field}.namespaces")}
    if egress and peer.get("networks"):
        nets = []
        for i, n in enumerate(peer["networks"]):
            try:
                nets.append(str(ip_network(str(n), strict=False)))
            except ValueError:
                raise _RuleError(f"{field}.networks[{i}]: invalid CIDR {n!r}") from None
        return {"nets": nets}
    raise _RuleError(f"{field}: no supported peer (namespaces, pods, networks)")


def _rules(rule: Any, egress: bool, field: str) -> list[dict[str, Any]]:
    """One CNP rule -> Calico v3 rules; raises _RuleError when it cannot be converted."""
    if not isinstance(rule, Mapping):
        raise _RuleError(f"{field}: must be a mapping")
    action = _ACTIONS.get(str(rule.get("action")))
    if action is None:
        raise _RuleError(f"{field}.action: unsupported action {rule.get('action')!r}")
    peers_key = "to" if egress else "from"
    peers = [
        _peer(p, egress, f"{field}.{peers_key}[{j}]")
        for j, p in enumerate(rule.get(peers_key) or [])
    ]
    if not peers:
        raise _RuleError(f"{field}.{peers_key}: at least one peer is required")
    by_proto = _protocol_ports(rule.get("protocols"), f"{field}.protocols")
    out: list[dict[str, Any]] = []
    for proto in sorted(by_proto):
        ports = by_proto[proto]
        for entity in peers:
            r: dict[str, Any] = {"action": action}
            if proto:
                r["protocol"] = proto
            dst = dict(entity) if egress else {}
            if ports:
                dst["ports"] = list(ports)
            if egress:
                r["destination"] = dst
            else:
                r["source"] = dict(entity)
                if dst:
                    r["destination"] = dst
            out.append(r)
    return out


def _direction(rules: Any, egress: bool, field: str, warnings: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if rules is not None and not isinstance(rules, list):
        raise ModelError(f"{field}: must be a list")
    for i, rule in enumerate(rules or []):
        try:
            out += _rules(rule, egress, f"{field}[{i}]")
        except _RuleError as exc:
            action = rule.get("action") if isinstance(rule, Mapping) else None
            if action in ("Deny", "Pass"):
                warnings.append(f"{exc}; the {action} rule fails closed (denies everything)")
                out.append({"action": "Deny"})
            else:
                warnings.append(f"{exc}; the rule is dropped")
    return out


def cnp_to_v3_spec(spec: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The Calico GlobalNetworkPolicy spec Calico derives from a CNP spec, plus warnings
    about rules that failed closed. ``types`` is explicit (possibly empty)."""
    tier = CNP_TIERS.get(str(spec.get("tier")))
    if tier is None:
        raise ModelError(f"spec.tier: must be Admin or Baseline, not {spec.get('tier')!r}")
    priority = spec.get("priority")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ModelError("spec.priority: must be an integer")
    subject = spec.get("subject")
    if not isinstance(subject, Mapping):
        raise ModelError("spec.subject: required")
    if subject.get("namespaces") is not None:
        ns_sel = k8s_selector(subject["namespaces"], False, "spec.subject.namespaces")
        pod_sel = k8s_selector(None, True, "spec.subject")
    elif subject.get("pods") is not None:
        pods = subject["pods"]
        if not isinstance(pods, Mapping):
            raise ModelError("spec.subject.pods: must be a mapping")
        ns_sel = k8s_selector(
            pods.get("namespaceSelector") or {}, False, "spec.subject.pods.namespaceSelector"
        )
        pod_sel = k8s_selector(pods.get("podSelector") or {}, True, "spec.subject.pods")
    else:
        raise ModelError("spec.subject: one of namespaces or pods is required")
    warnings: list[str] = []
    ingress = _direction(spec.get("ingress"), False, "spec.ingress", warnings)
    egress = _direction(spec.get("egress"), True, "spec.egress", warnings)
    types = (["Ingress"] if ingress else []) + (["Egress"] if egress else [])
    v3 = {
        "tier": tier,
        "order": float(priority),
        "namespaceSelector": ns_sel,
        "selector": pod_sel,
        "types": types,
        "ingress": ingress,
        "egress": egress,
    }
    return v3, warnings
