"""Conversion of stored v3 resource dicts into the calc-internal model (``types.py``).

This is pycalico's equivalent of libcalico-go's v3 -> backend update processors and of the
Kubernetes conversion layer:
- (Global)NetworkPolicy: tier defaults to ``default``; ``types`` default from the rules
  present; the top-level selector is ANDed with ``projectcalico.org/namespace == '<ns>'``
  (namespaced) or the ``pcns.``-prefixed namespaceSelector (global), and with the
  ``pcsa.``-prefixed serviceAccountSelector; a global policy's ``all()`` there means "has
  a namespace" / "has a service account" (see :func:`_policy_selector`).
- Rule selectors (reference §2, last paragraph): as soon as a selector, notSelector or
  namespaceSelector is used, the endpoint selector is limited to the policy's namespace (or
  to the namespaces the ``pcns.``-prefixed namespaceSelector picks; ``all()`` there means
  "any namespaced thing", ``global()`` "non-namespaced things"); serviceAccounts become
  ``projectcalico.org/serviceaccount in {..}`` and/or a ``pcsa.``-prefixed selector.
  ``notSelector`` is used unchanged, as Calico does.
- networking.k8s.io/v1 NetworkPolicy -> default-tier NetworkPolicy ``knp.default.<name>``
  at order 1000 with Allow rules (one rule per protocol x peer; ipBlock -> nets/notNets).
- policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy -> a ``kcnp`` policy in tier
  ``kube-admin``/``kube-baseline`` (``model/cnp.py``).
- Staged* kinds convert to the Policy their enforced counterpart would be, under the staged
  kind (``snp``/``sgnp``/``sknp``, names as the counterpart's: ``knp.default.<name>`` for
  StagedKubernetesNetworkPolicy) with ``staged_action`` (default ``Set``; a ``Delete`` keeps
  only its identity and tier). They never enforce: only the pending view evaluates them.
- WorkloadEndpoint: its own ``pcns.``/``pcsa.`` labels are dropped (no posing as another
  namespace or service account), ``projectcalico.org/serviceaccount`` is
  ``spec.serviceAccountName`` (any length); ``workload`` is ``spec.workload`` falling back to
  ``spec.pod``, ``pod`` is ``spec.pod``; unnamed ports are filtered out, named ports default
  to TCP and must be in 1..65535. :func:`convert_wep_tolerant` is the same conversion for
  consumers that serve what they can (DNS): bad ipNetworks entries / named ports are dropped
  with a warning.

Invariant: ``convert`` is a pure function of its input; bad input raises ``ModelError``
naming the field.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from ipaddress import ip_network
from typing import Any

from pycalico.model.cnp import CNP_API, CNP_KIND, CNP_POLICY_KIND, cnp_to_v3_spec
from pycalico.model.k8s import k8s_to_v3_spec
from pycalico.model.k8s import quote_literal as _q
from pycalico.model.qos import controls_from_spec
from pycalico.model.types import (
    EMPTY_MATCH,
    K8S_POLICY_PREFIX,
    LABEL_K8S_NAMESPACE_NAME,
    LABEL_NAMESPACE,
    LABEL_ORCHESTRATOR,
    LABEL_SERVICEACCOUNT,
    NAMESPACE_LABEL_PREFIX,
    NAMESPACE_PROFILE_PREFIX,
    SA_LABEL_PREFIX,
    STAGED_KINDS,
    Action,
    Converted,
    Endpoint,
    EntityMatch,
    IPNet,
    ItemID,
    ModelError,
    NamedPort,
    Namespace,
    NetworkSet,
    Policy,
    PolicyID,
    PortRange,
    Profile,
    Rule,
    ServiceAccount,
    StagedAction,
    Tier,
    protocol_number,
)
from pycalico.selector import SelectorError, parse

CALICO_API = "projectcalico.org/v3"
K8S_NETPOL_API = "networking.k8s.io/v1"
_NAMED_PORT_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_ACTIONS: dict[str, Action] = {"allow": "Allow", "deny": "Deny", "pass": "Pass", "log": "Log"}
_STAGED = {
    "StagedNetworkPolicy": "snp",
    "StagedGlobalNetworkPolicy": "sgnp",
    "StagedKubernetesNetworkPolicy": "sknp",
}
_STAGED_ACTIONS: tuple[StagedAction, ...] = ("Set", "Delete", "Learn", "Ignore")
_IGNORED = object()
_RESERVED_PREFIXES = (NAMESPACE_LABEL_PREFIX, SA_LABEL_PREFIX)


def canonical(text: str, field: str) -> str:
    """The canonical form of a selector; ModelError naming ``field`` if it doesn't parse."""
    try:
        return str(parse(text))
    except SelectorError as exc:
        raise ModelError(f"{field}: invalid selector {text!r}: {exc}") from exc


def _prefixed(text: str, prefix: str, field: str) -> str:
    try:
        return str(parse(text).with_label_prefix(prefix))
    except SelectorError as exc:
        raise ModelError(f"{field}: invalid selector {text!r}: {exc}") from exc


def _and(parts: Sequence[str], field: str) -> str:
    parts = [p for p in parts if p]
    if not parts:
        return ""
    if len(parts) == 1:
        return canonical(parts[0], field)
    return canonical(" && ".join(f"({p})" for p in parts), field)


def _labels(meta: Mapping[str, Any], field: str = "metadata.labels") -> dict[str, str]:
    labels = meta.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise ModelError(f"{field}: must be a mapping")
    return {str(k): str(v) for k, v in labels.items()}


def _nets(values: Any, field: str) -> tuple[IPNet, ...]:
    if not values:
        return ()
    if not isinstance(values, list):
        raise ModelError(f"{field}: must be a list of CIDRs")
    out = []
    for i, v in enumerate(values):
        try:
            out.append(ip_network(str(v), strict=False))
        except ValueError as exc:
            raise ModelError(f"{field}[{i}]: invalid CIDR {v!r}") from exc
    return tuple(out)


def _ports(values: Any, field: str) -> tuple[tuple[PortRange, ...], tuple[str, ...]]:
    if not values:
        return (), ()
    if not isinstance(values, list):
        raise ModelError(f"{field}: must be a list")
    numeric: list[PortRange] = []
    named: list[str] = []
    for i, v in enumerate(values):
        f = f"{field}[{i}]"
        if isinstance(v, bool):
            raise ModelError(f"{f}: invalid port {v!r}")
        if isinstance(v, int):
            numeric.append(_range(v, v, f))
            continue
        text = str(v).strip()
        if ":" in text:
            lo, _, hi = text.partition(":")
            if not (lo.isdigit() and hi.isdigit()):
                raise ModelError(f"{f}: invalid port range {v!r}")
            numeric.append(_range(int(lo), int(hi), f))
        elif text.isdigit():
            numeric.append(_range(int(text), int(text), f))
        elif _NAMED_PORT_RE.match(text):
            named.append(text)
        else:
            raise ModelError(f"{f}: invalid port {v!r}")
    return tuple(numeric), tuple(named)


def _range(lo: int, hi: int, field: str) -> PortRange:
    if not (0 <= lo <= hi <= 65535):
        raise ModelError(f"{field}: port range {lo}:{hi} out of bounds")
    return PortRange(lo, hi)


def _opt_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{field}: must be an integer")
    return value


def entity_selector(er: Mapping[str, Any], ns: str, field: str) -> str | None:
    """The single selector an EntityRule matches endpoints with (see module docstring)."""
    ns_sel_text = str(er.get("namespaceSelector") or "")
    sel_text = str(er.get("selector") or "")
    not_sel_text = str(er.get("notSelector") or "")
    ns_sel = ""
    if ns_sel_text:
        ns_sel = _prefixed(ns_sel_text, NAMESPACE_LABEL_PREFIX, f"{field}.namespaceSelector")
        ns_sel = ns_sel.replace("all()", f"has({LABEL_NAMESPACE})")
        ns_sel = ns_sel.replace("global()", f"!has({LABEL_NAMESPACE})")
    elif ns:
        ns_sel = f"{LABEL_NAMESPACE} == {_q(ns)}"
    parts: list[str] = []
    sam = er.get("serviceAccounts")
    if sam:
        sa_parts: list[str] = []
        if sam.get("selector"):
            sa_parts.append(
                _prefixed(
                    str(sam["selector"]), SA_LABEL_PREFIX, f"{field}.serviceAccounts.selector"
                )
            )
        names = sam.get("names") or []
        if names:
            quoted = ", ".join(_q(str(n)) for n in names)
            sa_parts.append(f"{LABEL_SERVICEACCOUNT} in {{{quoted}}}")
        if sa_parts:
            parts.append(_and(sa_parts, f"{field}.serviceAccounts"))
    if sel_text:
        parts.append(canonical(sel_text, f"{field}.selector"))
    selector = _and(parts, f"{field}.selector")
    if ns_sel and (selector or not_sel_text or ns_sel_text):
        selector = _and([ns_sel, selector], field)
    return selector or None


def _entity(er: Any, ns: str, field: str) -> EntityMatch:
    if not er:
        return EMPTY_MATCH
    if not isinstance(er, Mapping):
        raise ModelError(f"{field}: must be a mapping")
    ports, named = _ports(er.get("ports"), f"{field}.ports")
    not_ports, not_named = _ports(er.get("notPorts"), f"{field}.notPorts")
    not_sel = er.get("notSelector")
    return EntityMatch(
        nets=_nets(er.get("nets"), f"{field}.nets"),
        not_nets=_nets(er.get("notNets"), f"{field}.notNets"),
        selector=entity_selector(er, ns, field),
        not_selector=canonical(str(not_sel), f"{field}.notSelector") if not_sel else None,
        ports=ports,
        named_ports=named,
        not_ports=not_ports,
        not_named_ports=not_named,
        has_services=bool(er.get("services")),
    )


def convert_rule(r: Mapping[str, Any], ns: str, field: str) -> Rule:
    """One v3 Rule -> backend Rule (``ns`` = the policy's namespace, "" if global)."""
    if not isinstance(r, Mapping):
        raise ModelError(f"{field}: must be a mapping")
    action = _ACTIONS.get(str(r.get("action", "")).lower())
    if action is None:
        raise ModelError(
            f"{field}.action: must be Allow, Deny, Pass or Log, not {r.get('action')!r}"
        )
    proto = r.get("protocol")
    not_proto = r.get("notProtocol")
    icmp = r.get("icmp") or {}
    not_icmp = r.get("notICMP") or {}
    ip_version = _opt_int(r.get("ipVersion"), f"{field}.ipVersion")
    if ip_version not in (None, 4, 6):
        raise ModelError(f"{field}.ipVersion: must be 4 or 6")
    try:
        return Rule(
            action=action,
            ip_version=ip_version,
            protocol=protocol_number(proto) if proto is not None else None,
            not_protocol=protocol_number(not_proto) if not_proto is not None else None,
            icmp_type=_opt_int(icmp.get("type"), f"{field}.icmp.type"),
            icmp_code=_opt_int(icmp.get("code"), f"{field}.icmp.code"),
            not_icmp_type=_opt_int(not_icmp.get("type"), f"{field}.notICMP.type"),
            not_icmp_code=_opt_int(not_icmp.get("code"), f"{field}.notICMP.code"),
            src=_entity(r.get("source"), ns, f"{field}.source"),
            dst=_entity(r.get("destination"), ns, f"{field}.destination"),
        )
    except ModelError as exc:
        if str(exc).startswith(field):
            raise
        raise ModelError(f"{field}.protocol: {exc}") from exc


def convert_rules(rules: Any, ns: str, field: str) -> tuple[Rule, ...]:
    if not rules:
        return ()
    if not isinstance(rules, list):
        raise ModelError(f"{field}: must be a list")
    return tuple(convert_rule(r, ns, f"{field}[{i}]") for i, r in enumerate(rules))


def _order(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelError(f"{field}: must be a number")
    return float(value)


def _types(spec: Mapping[str, Any]) -> frozenset[str]:
    types = spec.get("types")
    if types:
        out = set()
        for t in types:
            norm = str(t).capitalize()
            if norm not in ("Ingress", "Egress"):
                raise ModelError(f"spec.types: unknown policy type {t!r}")
            out.add(norm)
        return frozenset(out)
    # Calico's defaulting: egress rules only => Egress; both => both; else Ingress.
    has_in, has_out = bool(spec.get("ingress")), bool(spec.get("egress"))
    if has_out and not has_in:
        return frozenset({"Egress"})
    if has_out and has_in:
        return frozenset({"Ingress", "Egress"})
    return frozenset({"Ingress"})


def _policy_selector(kind: str, ns: str, spec: Mapping[str, Any]) -> str:
    """The endpoint selector of a policy, built as Calico's update processors build it
    (``(Global)NetworkPolicyV3ToV1Value``): the selector as written, then the namespace
    term, then the ``pcns.``/``pcsa.``-prefixed namespace/service-account selectors, each
    appended as ``(<so far>) && <term>``. For a GlobalNetworkPolicy, every ``all()`` of the
    text so far becomes ``has(projectcalico.org/namespace)`` once a namespaceSelector is
    appended and ``has(projectcalico.org/serviceaccount)`` once a serviceAccountSelector
    is: so ``serviceAccountSelector: all()`` selects only endpoints with a service account.
    A namespaced policy's serviceAccountSelector is appended without that rewrite."""
    sel = str(spec.get("selector") or "")
    if sel:
        canonical(sel, "spec.selector")

    def append(term: str) -> str:
        return f"({sel}) && {term}" if sel else term

    if ns:
        sel = append(f"{LABEL_NAMESPACE} == {_q(ns)}")
    elif spec.get("namespaceSelector"):
        field = "spec.namespaceSelector"
        sel = append(_prefixed(str(spec["namespaceSelector"]), NAMESPACE_LABEL_PREFIX, field))
        if kind == "gnp":
            sel = sel.replace("all()", f"has({LABEL_NAMESPACE})")
    if spec.get("serviceAccountSelector"):
        field = "spec.serviceAccountSelector"
        sel = append(_prefixed(str(spec["serviceAccountSelector"]), SA_LABEL_PREFIX, field))
        if kind == "gnp":
            sel = sel.replace("all()", f"has({LABEL_SERVICEACCOUNT})")
    return canonical(sel, "spec.selector") if sel else "all()"


def convert_policy(kind: str, meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Policy:
    """A projectcalico.org/v3 (Global)NetworkPolicy; ``kind`` short name gnp/np/knp."""
    name = str(meta.get("name") or "")
    if not name:
        raise ModelError("metadata.name: required")
    ns = "" if kind == "gnp" else str(meta.get("namespace") or "")
    if kind != "gnp" and not ns:
        raise ModelError("metadata.namespace: required for a namespaced policy")
    return Policy(
        id=PolicyID(kind, ns, name),
        tier=str(spec.get("tier") or "default"),
        order=_order(spec.get("order"), "spec.order"),
        selector=_policy_selector(kind, ns, spec),
        types=_types(spec),
        ingress=convert_rules(spec.get("ingress"), ns, "spec.ingress"),
        egress=convert_rules(spec.get("egress"), ns, "spec.egress"),
        do_not_track=bool(spec.get("doNotTrack")),
        pre_dnat=bool(spec.get("preDNAT")),
        apply_on_forward=bool(spec.get("applyOnForward")),
    )


def convert_staged(kind: str, meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Policy:
    """A Staged* policy (``kind`` its full kind): see the module docstring."""
    raw = spec.get("stagedAction") or "Set"
    action = next((a for a in _STAGED_ACTIONS if a == raw), None)
    if action is None:
        raise ModelError(f"spec.stagedAction: must be Set, Delete, Learn or Ignore, not {raw!r}")
    staged_kind = _STAGED[kind]
    if kind == "StagedKubernetesNetworkPolicy":
        name = K8S_POLICY_PREFIX + str(meta.get("name") or "")
        meta = {"name": name, "namespace": meta.get("namespace")}
        spec = {} if action == "Delete" else k8s_to_v3_spec(spec)
    if action == "Delete":
        spec = {"tier": spec.get("tier")}
    pol = convert_policy(STAGED_KINDS[staged_kind], meta, spec)
    staged_id = PolicyID(staged_kind, pol.id.namespace, pol.id.name)
    return dataclasses.replace(pol, id=staged_id, staged_action=action)


# --- endpoints, sets, profiles ------------------------------------------------------------


def _named_port(p: Mapping[str, Any], field: str) -> NamedPort:
    """One named port: protocol defaults to TCP (as for Kubernetes container ports); the port
    must be an integer in 1..65535 (Calico: ``uint16``, ``gt=0``)."""
    port = p.get("port", p.get("containerPort"))
    if isinstance(port, bool) or not isinstance(port, int):
        raise ModelError(f"{field}.port: must be an integer")
    if not 0 < port < 65536:
        raise ModelError(f"{field}.port: {port} out of range 1..65535")
    try:
        proto = protocol_number(p.get("protocol") or "TCP")
    except ModelError as exc:
        raise ModelError(f"{field}.protocol: {exc}") from None
    return NamedPort(str(p["name"]), proto, port)


def _named_ports(values: Any, field: str, dropped: list[str] | None) -> tuple[NamedPort, ...]:
    """Named ports (unnamed ones are filtered out, as Calico does). With ``dropped`` given, an
    invalid port is left out and its error appended there instead of raised."""
    out = []
    for i, p in enumerate(values or []):
        if not isinstance(p, Mapping) or not p.get("name"):
            continue
        try:
            out.append(_named_port(p, f"{field}[{i}]"))
        except ModelError as exc:
            if dropped is None:
                raise
            dropped.append(str(exc))
    return tuple(out)


def _ips(values: Any, field: str, dropped: list[str] | None) -> tuple[IPNet, ...]:
    """The non-empty CIDRs of ``values``; with ``dropped`` given, an unparsable entry is left
    out and its error appended there instead of raised."""
    if dropped is None or not isinstance(values, list):
        return _nets([v for v in values or [] if v], field)
    out: list[IPNet] = []
    for i, v in enumerate(values):
        if not v:
            continue
        try:
            out.append(ip_network(str(v), strict=False))
        except ValueError:
            dropped.append(f"{field}[{i}]: invalid CIDR {v!r}")
    return tuple(out)


def convert_wep(
    meta: Mapping[str, Any], spec: Mapping[str, Any], dropped: list[str] | None = None
) -> Endpoint:
    """A WorkloadEndpoint. Strict by default (a bad ipNetworks entry or named port fails the
    whole resource, as Calico's update processor does); with ``dropped`` given, such entries
    are left out and their errors appended to it (see :func:`convert_wep_tolerant`)."""
    name, ns = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    if not name:
        raise ModelError("metadata.name: required")
    # Calico's WEP update processor: a workload's own pcns.*/pcsa.* labels are dropped (they
    # would let it pose as another namespace / service account), and the service account
    # label comes from spec.serviceAccountName whatever its length (a stored label cannot
    # hold more than 63 characters, so the CNI plugin leaves long names out of metadata).
    labels = {k: v for k, v in _labels(meta).items() if not k.startswith(_RESERVED_PREFIXES)}
    if ns:
        labels[LABEL_NAMESPACE] = ns
    if spec.get("orchestrator"):
        labels[LABEL_ORCHESTRATOR] = str(spec["orchestrator"])
    sa = str(spec.get("serviceAccountName") or "")
    if sa:
        labels[LABEL_SERVICEACCOUNT] = sa
    return Endpoint(
        id=ItemID("wep", ns, name),
        node=str(spec.get("node") or ""),
        labels=tuple(sorted(labels.items())),
        profiles=tuple(str(p) for p in spec.get("profiles") or []),
        nets=_ips(spec.get("ipNetworks"), "spec.ipNetworks", dropped),
        ports=_named_ports(spec.get("ports"), "spec.ports", dropped),
        interface_name=str(spec.get("interfaceName") or ""),
        workload=str(spec.get("workload") or spec.get("pod") or ""),
        namespace=ns,
        pod=str(spec.get("pod") or ""),
        qos=controls_from_spec(spec.get("qosControls")),
    )


def convert_wep_tolerant(obj: Mapping[str, Any]) -> Converted:
    """A WorkloadEndpoint for consumers that serve whatever they can (DNS): an unparsable
    ipNetworks entry or named port is left out and named in ``warnings`` instead of failing
    the resource. A resource that is malformed as a whole (metadata/spec not mappings, no
    name) still raises ModelError."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        raise ModelError("metadata/spec: must be mappings")
    dropped: list[str] = []
    ep = convert_wep(meta, spec, dropped)
    return Converted(ep, str(obj.get("kind") or "WorkloadEndpoint"), tuple(dropped))


def convert_hep(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Endpoint:
    name = str(meta.get("name") or "")
    if not name:
        raise ModelError("metadata.name: required")
    return Endpoint(
        id=ItemID("hep", "", name),
        node=str(spec.get("node") or ""),
        labels=tuple(sorted(_labels(meta).items())),
        profiles=tuple(str(p) for p in spec.get("profiles") or []),
        nets=_ips(spec.get("expectedIPs"), "spec.expectedIPs", None),
        ports=_named_ports(spec.get("ports"), "spec.ports", None),
        interface_name=str(spec.get("interfaceName") or ""),
    )


def convert(obj: Mapping[str, Any]) -> Converted:
    """Convert one stored resource dict. Unknown kinds give ``None``."""
    if not isinstance(obj, Mapping):
        raise ModelError("resource: must be a mapping")
    kind = str(obj.get("kind") or "")
    api = str(obj.get("apiVersion") or "")
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        raise ModelError("metadata/spec: must be mappings")
    name = str(meta.get("name") or "")
    if kind in _STAGED:
        return Converted(convert_staged(kind, meta, spec), kind)
    if kind == "NetworkPolicy" and api == K8S_NETPOL_API:
        v3 = k8s_to_v3_spec(spec)
        kmeta = {"name": K8S_POLICY_PREFIX + name, "namespace": meta.get("namespace")}
        return Converted(convert_policy("knp", kmeta, v3), kind)
    if kind == CNP_KIND and api == CNP_API:  # see model/cnp.py
        v3, warnings = cnp_to_v3_spec(spec)
        pol = convert_policy("gnp", {"name": name}, v3)
        pol = replace(pol, id=PolicyID(CNP_POLICY_KIND, "", name), types=frozenset(v3["types"]))
        return Converted(pol, kind, tuple(warnings))
    if kind == "NetworkPolicy":
        return Converted(convert_policy("np", meta, spec), kind)
    if kind == "GlobalNetworkPolicy":
        return Converted(convert_policy("gnp", meta, spec), kind)
    if kind == "Tier":
        action = str(spec.get("defaultAction") or "Deny")
        if action not in ("Deny", "Pass"):
            raise ModelError(f"spec.defaultAction: must be Deny or Pass, not {action!r}")
        return Converted(
            Tier(
                name,
                _order(spec.get("order"), "spec.order"),
                "Pass" if action == "Pass" else "Deny",
            ),
            kind,
        )
    if kind == "Profile":
        lta = spec.get("labelsToApply") or {}
        return Converted(
            Profile(
                name,
                convert_rules(spec.get("ingress"), "", "spec.ingress"),
                convert_rules(spec.get("egress"), "", "spec.egress"),
                tuple(sorted((str(k), str(v)) for k, v in lta.items())),
            ),
            kind,
        )
    if kind == "WorkloadEndpoint":
        return Converted(convert_wep(meta, spec), kind)
    if kind == "HostEndpoint":
        return Converted(convert_hep(meta, spec), kind)
    if kind == "NetworkSet":
        ns = str(meta.get("namespace") or "")
        labels = _labels(meta)
        labels[LABEL_NAMESPACE] = ns
        return Converted(
            NetworkSet(
                ItemID("netset", ns, name),
                tuple(sorted(labels.items())),
                _nets(spec.get("nets"), "spec.nets"),
                (NAMESPACE_PROFILE_PREFIX + ns,),
            ),
            kind,
        )
    if kind == "GlobalNetworkSet":
        return Converted(
            NetworkSet(
                ItemID("gnetset", "", name),
                tuple(sorted(_labels(meta).items())),
                _nets(spec.get("nets"), "spec.nets"),
            ),
            kind,
        )
    if kind == "Namespace" and api == "v1":
        # The Kubernetes API server sets this label on every namespace (overriding any
        # value given); the stored Namespace stands in for it.
        ns_labels = _labels(meta) | {LABEL_K8S_NAMESPACE_NAME: name}
        return Converted(Namespace(name, tuple(sorted(ns_labels.items()))), kind)
    if kind == "ServiceAccount" and api == "v1":
        ns = str(meta.get("namespace") or "default")
        return Converted(ServiceAccount(ns, name, tuple(sorted(_labels(meta).items()))), kind)
    return Converted(None, kind)
