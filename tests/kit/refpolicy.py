"""An independent reference evaluator of Calico policy over stored v3 resource dicts.

Written from Calico's documented semantics and its v3.32 source (not from pycalico's model):
it reads the resources as stored and decides one packet between two workload endpoints
without the model conversion, the calc graph or IP sets. It covers what the differential
test generates (workloads with labels, namespaces, service accounts and named ports;
NetworkPolicy / GlobalNetworkPolicy / Kubernetes NetworkPolicy in tiers; profiles), and
nothing else (no host endpoints, network sets, nets, ICMP, source ports, services).

Semantics, each with where upstream decides it:
- endpoint labels (``workloadendpointprocessor.go``): own labels minus ``pcns.*``/``pcsa.*``,
  plus ``projectcalico.org/namespace``/``orchestrator``/``serviceaccount`` (any length),
  then each profile's labels in order (own labels win): ``kns.<ns>`` gives the namespace's
  labels (the API server's ``kubernetes.io/metadata.name`` included) as ``pcns.*``,
  ``ksa.<ns>.<sa>`` the service account's as ``pcsa.*``;
- tiers (``policy_sorter.go`` ``TierLess``): tiers with a Tier resource (or implied:
  ``default``) first, by order (none last), then name; policies (``PolKVLess``) by order
  (none last), then the string ``name/namespace/Kind``;
- a tier with no policy for the direction is skipped; first matching rule decides: Allow,
  Deny, Pass (next tier), Log (go on); end of tier: its defaultAction (Deny, or Pass);
- after the tiers (none decided), profiles in order: a missing one denies, first matching
  Allow/Deny decides, Pass skips to the next profile; none: deny.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pycalico.selector import parse

PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132, "ICMP": 1, "ICMPv6": 58}
IMPLIED_TIER_ORDERS = {"default": 1_000_000.0, "kube-admin": 1_000.0, "kube-baseline": 1e7}
KIND_OF = {
    "gnp": "GlobalNetworkPolicy",
    "np": "NetworkPolicy",
    "knp": "KubernetesNetworkPolicy",
}


def _proto(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, int):
        return v
    return PROTO.get(str(v)) or PROTO.get(str(v).upper()) or int(v)


@dataclass(frozen=True)
class Ep:
    name: str
    ns: str
    ip: str
    own: dict[str, str]
    sa: str
    profiles: tuple[str, ...]
    ports: tuple[tuple[str, int, int], ...]  # (name, protocol, port)


@dataclass(frozen=True)
class Pol:
    kind: str  # gnp / np / knp
    ns: str
    name: str
    tier: str
    order: float
    spec: Mapping[str, Any]

    def tiebreak(self) -> str:
        return f"{self.name}/{self.ns}/{KIND_OF[self.kind]}"


class Reference:
    """Decides packets over one whole state (a list of stored resource dicts)."""

    def __init__(self, resources: Iterable[Mapping[str, Any]]) -> None:
        self.ns_labels: dict[str, dict[str, str]] = {}
        self.sa_labels: dict[tuple[str, str], dict[str, str]] = {}
        self.tiers: dict[str, tuple[float, str]] = {}
        self.profiles: dict[str, Mapping[str, Any]] = {}
        self.eps: dict[str, Ep] = {}
        self.pols: list[Pol] = []
        for r in resources:
            kind, meta, spec = r["kind"], r["metadata"], r.get("spec") or {}
            name, ns = meta["name"], meta.get("namespace", "")
            labels = dict(meta.get("labels") or {})
            if kind == "Namespace":
                self.ns_labels[name] = labels | {"kubernetes.io/metadata.name": name}
            elif kind == "ServiceAccount":
                self.sa_labels[(ns, name)] = labels
            elif kind == "Tier":
                order = spec.get("order")
                self.tiers[name] = (
                    math.inf if order is None else float(order),
                    spec.get("defaultAction") or "Deny",
                )
            elif kind == "Profile":
                self.profiles[name] = spec
            elif kind == "WorkloadEndpoint":
                ports = tuple(
                    (p["name"], PROTO[p.get("protocol") or "TCP"], p["port"])
                    for p in spec.get("ports") or []
                    if p.get("name")
                )
                ip = spec["ipNetworks"][0].split("/")[0]
                self.eps[ip] = Ep(
                    name,
                    ns,
                    ip,
                    labels,
                    spec.get("serviceAccountName") or "",
                    tuple(spec.get("profiles") or ()),
                    ports,
                )
            elif kind == "GlobalNetworkPolicy":
                self.pols.append(self._pol("gnp", "", name, spec))
            elif kind == "NetworkPolicy" and r["apiVersion"].startswith("projectcalico"):
                self.pols.append(self._pol("np", ns, name, spec))
            elif kind == "NetworkPolicy":
                self.pols.append(self._pol("knp", ns, name, _k8s_spec(spec)))

    @staticmethod
    def _pol(kind: str, ns: str, name: str, spec: Mapping[str, Any]) -> Pol:
        order = spec.get("order")
        return Pol(
            kind,
            ns,
            name,
            spec.get("tier") or "default",
            math.inf if order is None else float(order),
            spec,
        )

    # --- labels -------------------------------------------------------------------------
    def profile_labels(self, prof: str) -> dict[str, str] | None:
        """labelsToApply of a profile; None when the profile does not exist."""
        if prof in self.profiles:
            return dict(self.profiles[prof].get("labelsToApply") or {})
        if prof.startswith("kns."):
            ns = prof[4:]
            if ns not in self.ns_labels:
                return None
            out = {f"pcns.{k}": v for k, v in self.ns_labels[ns].items()}
            return out | {"pcns.projectcalico.org/name": ns}
        if prof.startswith("ksa."):
            ns, _, sa = prof[4:].partition(".")
            if (ns, sa) not in self.sa_labels:
                return None
            out = {f"pcsa.{k}": v for k, v in self.sa_labels[(ns, sa)].items()}
            return out | {"pcsa.projectcalico.org/name": sa}
        return None

    def labels(self, ep: Ep) -> dict[str, str]:
        out = {k: v for k, v in ep.own.items() if not k.startswith(("pcns.", "pcsa."))}
        out["projectcalico.org/namespace"] = ep.ns
        out["projectcalico.org/orchestrator"] = "k8s"
        if ep.sa:
            out["projectcalico.org/serviceaccount"] = ep.sa
        for prof in ep.profiles:
            for k, v in (self.profile_labels(prof) or {}).items():
                out.setdefault(k, v)
        return out

    # --- selection ----------------------------------------------------------------------
    @staticmethod
    def _sel(text: str | None, labels: Mapping[str, str]) -> bool:
        return parse(text or "all()").evaluate(labels)

    def _prefixed(self, text: str, prefix: str, labels: Mapping[str, str], has: str) -> bool:
        """A namespace / service-account selector over the endpoint's ``prefix`` labels;
        a bare ``all()`` means "has label ``has``"."""
        if text.strip() == "all()":
            return has in labels
        sub = {k[len(prefix) :]: v for k, v in labels.items() if k.startswith(prefix)}
        return self._sel(text, sub)

    def applies(self, pol: Pol, ep: Ep) -> bool:
        labels = self.labels(ep)
        spec = pol.spec
        if pol.ns and ep.ns != pol.ns:
            return False
        sel = spec.get("selector") or ""
        if pol.kind == "gnp":
            # Upstream rewrites the TEXT built so far: an all() in the selector as written
            # becomes has(namespace) once a namespaceSelector is appended, else has(service
            # account) once a serviceAccountSelector is (globalnetworkpolicyprocessor.go).
            if spec.get("namespaceSelector"):
                sel = sel.replace("all()", "has(projectcalico.org/namespace)")
            elif spec.get("serviceAccountSelector"):
                sel = sel.replace("all()", "has(projectcalico.org/serviceaccount)")
        if not self._sel(sel, labels):
            return False
        if pol.kind == "gnp" and spec.get("namespaceSelector"):
            nss = spec["namespaceSelector"]
            if not self._prefixed(nss, "pcns.", labels, "projectcalico.org/namespace"):
                return False
        sas = spec.get("serviceAccountSelector")
        if sas:
            # A global policy's all() here means "has a service account"; a namespaced
            # policy's is left as all() (upstream rewrites only the former).
            if pol.kind == "gnp" and sas.strip() == "all()":
                return "projectcalico.org/serviceaccount" in labels
            sub = {k[5:]: v for k, v in labels.items() if k.startswith("pcsa.")}
            return self._sel(sas, sub)
        return True

    def entity_matches(self, er: Mapping[str, Any], pol_ns: str, peer: Ep | None) -> bool:
        """The selector part of one side of a rule, for the peer on that side."""
        uses = any(er.get(f) for f in ("selector", "notSelector", "namespaceSelector"))
        sam = er.get("serviceAccounts") or {}
        uses = uses or bool(sam.get("names") or sam.get("selector"))
        if not uses:
            return True
        if peer is None:
            return False
        labels = self.labels(peer)
        nss = er.get("namespaceSelector")
        if nss:
            if nss.strip() == "global()":
                if "projectcalico.org/namespace" in labels:
                    return False
            elif not self._prefixed(nss, "pcns.", labels, "projectcalico.org/namespace"):
                return False
        elif pol_ns and peer.ns != pol_ns:
            return False
        if sam.get("names") and labels.get("projectcalico.org/serviceaccount") not in sam["names"]:
            return False
        if sam.get("selector"):
            sub = {k[5:]: v for k, v in labels.items() if k.startswith("pcsa.")}
            if not self._sel(sam["selector"], sub):
                return False
        if er.get("selector") and not self._sel(er["selector"], labels):
            return False
        return not (er.get("notSelector") and self._sel(er["notSelector"], labels))

    def rule_matches(
        self,
        rule: Mapping[str, Any],
        pol_ns: str,
        src: Ep | None,
        dst: Ep | None,
        proto: int,
        port: int,
    ) -> bool:
        rp = _proto(rule.get("protocol"))
        if rp is not None and rp != proto:
            return False
        if _proto(rule.get("notProtocol")) == proto:
            return False
        if rule.get("ipVersion") not in (None, 4):
            return False
        s, d = rule.get("source") or {}, rule.get("destination") or {}
        if not self.entity_matches(s, pol_ns, src) or not self.entity_matches(d, pol_ns, dst):
            return False
        if s.get("ports"):
            return False  # source port unknown
        ports = d.get("ports") or []
        if ports and not any(self._port(p, dst, rp, proto, port) for p in ports):
            return False
        not_ports = d.get("notPorts") or []
        return not any(self._port(p, dst, rp, proto, port) for p in not_ports)

    @staticmethod
    def _port(p: Any, ep: Ep | None, rule_proto: int | None, proto: int, port: int) -> bool:
        if isinstance(p, int):
            return p == port
        if isinstance(p, str) and ":" in p:
            lo, hi = p.split(":")
            return int(lo) <= port <= int(hi)
        if ep is None:
            return False
        return any(
            n == p and pr == proto and pt == port and rule_proto in (None, pr)
            for n, pr, pt in ep.ports
        )

    # --- evaluation ---------------------------------------------------------------------
    def _tier_key(self, name: str) -> tuple[int, float, str]:
        if name in self.tiers:
            return (0, self.tiers[name][0], name)
        if name in IMPLIED_TIER_ORDERS:
            return (0, IMPLIED_TIER_ORDERS[name], name)
        return (1, math.inf, name)

    def _default_action(self, tier: str) -> str:
        if tier in self.tiers:
            return self.tiers[tier][1]
        return "Pass" if tier in ("kube-admin", "kube-baseline") else "Deny"

    def decide(
        self, ep: Ep, direction: str, src: Ep | None, dst: Ep | None, proto: int, port: int
    ) -> tuple[str, str]:
        """("allow"|"deny", what decided) at ``ep`` for ``direction``."""
        typ = "Ingress" if direction == "ingress" else "Egress"
        by_tier: dict[str, list[Pol]] = {}
        for pol in self.pols:
            if typ in _types(pol.spec) and self.applies(pol, ep):
                by_tier.setdefault(pol.tier, []).append(pol)
        for tier in sorted(by_tier, key=self._tier_key):
            passed = False
            for pol in sorted(by_tier[tier], key=lambda p: (p.order, p.tiebreak())):
                for rule in pol.spec.get(direction) or []:
                    if not self.rule_matches(rule, pol.ns, src, dst, proto, port):
                        continue
                    action = rule["action"]
                    if action == "Log":
                        continue
                    if action == "Pass":
                        passed = True
                        break
                    return action.lower(), f"{pol.kind}/{pol.name}"
                if passed:
                    break
            if passed or self._default_action(tier) == "Pass":
                continue
            return "deny", f"end of tier {tier}"
        for prof in ep.profiles:
            if prof.startswith("kns.") and prof not in self.profiles:
                if prof[4:] not in self.ns_labels:
                    return "deny", f"missing profile {prof}"
                return "allow", f"profile {prof}"
            if prof.startswith("ksa.") and prof not in self.profiles:
                if self.profile_labels(prof) is None:
                    return "deny", f"missing profile {prof}"
                continue
            if prof not in self.profiles:
                return "deny", f"missing profile {prof}"
            for rule in self.profiles[prof].get(direction) or []:
                if not self.rule_matches(rule, "", src, dst, proto, port):
                    continue
                if rule["action"] == "Log":
                    continue
                if rule["action"] == "Pass":
                    break
                return rule["action"].lower(), f"profile {prof}"
        return "deny", "no profile"

    def verdict(self, src_ip: str, dst_ip: str, proto: int, port: int) -> str:
        src, dst = self.eps.get(src_ip), self.eps.get(dst_ip)
        if src is not None and self.decide(src, "egress", src, dst, proto, port)[0] == "deny":
            return "deny"
        if dst is not None and self.decide(dst, "ingress", src, dst, proto, port)[0] == "deny":
            return "deny"
        return "allow"


def _types(spec: Mapping[str, Any]) -> set[str]:
    if spec.get("types"):
        return set(spec["types"])
    if spec.get("egress") and not spec.get("ingress"):
        return {"Egress"}
    if spec.get("egress"):
        return {"Ingress", "Egress"}
    return {"Ingress"}


def _k8s_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Only what the differential test generates: podSelector matchLabels, ingress rules
    with namespaceSelector matchLabels peers (or none: all sources), no ports."""

    def match(ml: Mapping[str, str]) -> str:
        return " && ".join(f"{k} == '{v}'" for k, v in sorted(ml.items())) or "all()"

    pod = (spec.get("podSelector") or {}).get("matchLabels") or {}
    sel = "projectcalico.org/orchestrator == 'k8s'" + (f" && {match(pod)}" if pod else "")
    ingress = []
    for r in spec.get("ingress") or []:
        peers = r.get("from") or [None]
        for peer in peers:
            src: dict[str, Any] = {}
            if peer is not None:
                nsl = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
                src = {
                    "selector": "projectcalico.org/orchestrator == 'k8s'",
                    "namespaceSelector": match(nsl),
                }
            ingress.append({"action": "Allow", "source": src})
    return {"order": 1000.0, "selector": sel, "types": ["Ingress"], "ingress": ingress}
