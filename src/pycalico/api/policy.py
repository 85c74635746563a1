"""Calico policy rules (``policy_common.go``): Rule, EntityRule, ICMP, HTTP and service matches.

Shared by NetworkPolicy, GlobalNetworkPolicy, their staged variants and Profile.
Invariants enforced by ``check`` (each problem names the offending field path):
- ports need protocol TCP/UDP/SCTP, except that named ports are allowed without a protocol;
- ``icmp`` needs protocol ICMP/ICMPv6, ``code`` needs ``type``; ``notICMP`` needs no
  protocol (as upstream's CEL rules: it then matches only the family's ICMP); ICMP (as
  ``protocol`` or ``notProtocol``) pairs with ipVersion 4 and ICMPv6 with 6;
- nets of one rule are all IPv4 or all IPv6 and agree with ``ipVersion``; a catch-all CIDR in
  ``notNets`` is a contradiction;
- ``selector``/``notSelector`` parse and never use ``global()``; ``namespaceSelector`` may be
  exactly ``global()``;
- ``services`` needs a name and excludes selectors and nets;
- ``http`` only on Allow rules, and only with protocol TCP when a protocol is given;
- a destination ``services`` match takes its ports from the service: no ports/notPorts.
Direction-dependent checks (services placement) live in :func:`check_rules`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictInt

from pycalico.api.base import Model, Problems, annotations_problems
from pycalico.api.common import (
    CIDR,
    IPVersion,
    Port,
    Protocol,
    check_selector,
    parse_cidr,
    parse_port,
    protocol_number,
    protocol_supports_ports,
    selector_problem,
)

Action = Literal["Allow", "Deny", "Log", "Pass"]
PolicyType = Literal["Ingress", "Egress"]

PROTOCOL_PORTS_MSG = "rules that specify ports must set protocol to TCP or UDP or SCTP"
NUMERIC_PORTS_MSG = "rules with numeric port or port range must set protocol to TCP or UDP or SCTP"
GLOBAL_ONLY_MSG = "global() can only be used in an EntityRule namespaceSelector"


class ICMPFields(Model):
    type: StrictInt | None = Field(default=None, ge=0, le=254)
    code: StrictInt | None = Field(default=None, ge=0, le=255)

    def check(self, path: str, problems: Problems) -> None:
        if self.code is not None and self.type is None:
            problems.add(f"{path}.code", "ICMP code specified without an ICMP type")


class HTTPPath(Model):
    exact: str | None = None
    prefix: str | None = None

    def check(self, path: str, problems: Problems) -> None:
        if self.exact and self.prefix:
            problems.add(path, "invalid path match: both 'exact' and 'prefix' are set")
            return
        value = self.exact or self.prefix
        if not value:
            problems.add(path, "invalid path match: either 'exact' or 'prefix' must be set")
            return
        if not value.startswith("/") or any(c in value for c in "? #"):
            problems.add(path, f"invalid path {value!r}: must start with '/' and not contain ?, #")


class HTTPMatch(Model):
    methods: list[str] | None = Field(default=None, max_length=20)
    paths: list[HTTPPath] | None = Field(default=None, max_length=20)

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if self.methods and len(set(self.methods)) != len(self.methods):
            problems.add(f"{path}.methods", f"invalid methods (duplicates): {self.methods}")


class ServiceAccountMatch(Model):
    names: list[str] | None = None
    selector: str | None = None

    def check(self, path: str, problems: Problems) -> None:
        check_selector(self.selector, f"{path}.selector", problems)


class ServiceMatch(Model):
    name: str = ""
    namespace: str = ""


class RuleMetadata(Model):
    annotations: dict[str, str] | None = None

    def check(self, path: str, problems: Problems) -> None:
        annotations_problems(self.annotations, f"{path}.annotations", problems)


class EntityRule(Model):
    """Source or destination match of a rule."""

    nets: list[CIDR] | None = Field(default=None, max_length=256)
    notNets: list[CIDR] | None = Field(default=None, max_length=256)
    selector: str | None = None
    notSelector: str | None = None
    namespaceSelector: str | None = None
    ports: list[Port] | None = Field(default=None, max_length=50)
    notPorts: list[Port] | None = Field(default=None, max_length=50)
    serviceAccounts: ServiceAccountMatch | None = None
    services: ServiceMatch | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        check_selector(self.selector, f"{path}.selector", problems)
        check_selector(self.notSelector, f"{path}.notSelector", problems)
        if self.namespaceSelector is not None:
            ns = self.namespaceSelector
            why = selector_problem(ns, allow_global=True)
            if why is None and "global(" in ns and ns.strip() != "global()":
                why = "global() cannot be combined with other selectors"
            if why:
                problems.add(f"{path}.namespaceSelector", why)
        if self.services is not None:
            sp = f"{path}.services"
            if not self.services.name:
                problems.add(f"{sp}.name", "must specify a service name")
            if self.selector or self.notSelector:
                problems.add(
                    sp, "cannot specify Selector/NotSelector and Services on the same rule"
                )
            if self.namespaceSelector:
                problems.add(sp, "cannot specify NamespaceSelector and Services on the same rule")
            if self.nets or self.notNets:
                problems.add(sp, "cannot specify Nets/NotNets and Services on the same rule")
            if self.serviceAccounts is not None:
                problems.add(sp, "cannot specify ServiceAccounts and Services on the same rule")


_ICMP_NUMBERS = {1: 4, 58: 6}


class Rule(Model):
    """One policy rule (``api.Rule``)."""

    action: Action
    ipVersion: IPVersion | None = None
    protocol: Protocol | None = None
    icmp: ICMPFields | None = None
    notProtocol: Protocol | None = None
    notICMP: ICMPFields | None = None
    source: EntityRule | None = None
    destination: EntityRule | None = None
    http: HTTPMatch | None = None
    metadata: RuleMetadata | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        self._check_ports(path, problems)
        self._check_icmp(path, problems)
        self._check_nets(path, problems)
        if self.http is not None:
            if self.action != "Allow":
                problems.add(f"{path}.http", "HTTP match is only valid on Allow rules")
            if self.protocol is not None and protocol_number(self.protocol) != 6:
                problems.add(
                    f"{path}.http", "rules with HTTP match must have protocol TCP or unset"
                )
        dst = self.destination
        if dst is not None and dst.services is not None and (dst.ports or dst.notPorts):
            field = "ports" if dst.ports else "notPorts"
            problems.add(
                f"{path}.destination.{field}",
                "ports and notPorts cannot be specified with services",
            )

    def _entities(self) -> list[tuple[str, EntityRule]]:
        out = []
        if self.source is not None:
            out.append(("source", self.source))
        if self.destination is not None:
            out.append(("destination", self.destination))
        return out

    def _check_ports(self, path: str, problems: Problems) -> None:
        for side, ent in self._entities():
            for field in ("ports", "notPorts"):
                ports: list[int | str] = getattr(ent, field) or []
                if not ports:
                    continue
                fpath = f"{path}.{side}.{field}"
                if self.protocol is None:
                    if not all(parse_port(p).is_named for p in ports):
                        problems.add(fpath, NUMERIC_PORTS_MSG)
                elif not protocol_supports_ports(self.protocol):
                    problems.add(fpath, PROTOCOL_PORTS_MSG)

    def _check_icmp(self, path: str, problems: Problems) -> None:
        if self.icmp is not None and (
            self.protocol is None or protocol_number(self.protocol) not in _ICMP_NUMBERS
        ):
            problems.add(f"{path}.icmp", "ICMP fields require protocol to be ICMP or ICMPv6")
        # validateRule: protocol OR notProtocol ICMP needs ipVersion 4 (when set), ICMPv6 6.
        for field, proto in (("protocol", self.protocol), ("notProtocol", self.notProtocol)):
            if proto is None or self.ipVersion is None:
                continue
            want = _ICMP_NUMBERS.get(protocol_number(proto))
            if want is not None and want != self.ipVersion:
                name = "ICMP" if want == 4 else "ICMPv6"
                problems.add(
                    f"{path}.ipVersion",
                    f"{field} {name} requires ipVersion {want}, not {self.ipVersion}",
                )

    def _check_nets(self, path: str, problems: Problems) -> None:
        seen: set[int] = set()
        for side, ent in self._entities():
            for field in ("nets", "notNets"):
                nets: list[str] = getattr(ent, field) or []
                if not nets:
                    continue
                fpath = f"{path}.{side}.{field}"
                versions: set[int] = set()
                for text in nets:
                    try:
                        net = parse_cidr(text)
                    except ValueError:
                        continue  # already reported by field validation
                    versions.add(net.version)
                    if field == "notNets" and net.prefixlen == 0 and "/" in text:
                        problems.add(
                            fpath,
                            "catch-all CIDR in negation creates logical contradiction "
                            "(matches no traffic)",
                        )
                if self.ipVersion is not None and versions - {self.ipVersion}:
                    problems.add(fpath, "rule IP version doesn't match CIDR version")
                if len(versions) > 1 or (versions and seen and versions != seen):
                    problems.add(fpath, "rule contains both IPv4 and IPv6 CIDRs")
                seen |= versions


def check_rules(
    ingress: list[Rule] | None,
    egress: list[Rule] | None,
    path: str,
    problems: Problems,
    *,
    global_scope: bool = False,
) -> None:
    """Direction-dependent rule checks (``validateNetworkPolicySpec`` and its GNP twin)."""
    for i, r in enumerate(egress or []):
        rp = f"{path}.egress[{i}]"
        if r.source is not None and r.source.services is not None:
            problems.add(f"{rp}.source.services", "not allowed in egress rule source")
        if r.http is not None:
            problems.add(f"{rp}.http", "not allowed in egress rule")
        dst = r.destination
        if dst is not None and dst.services is not None:
            if global_scope and not dst.services.namespace:
                problems.add(f"{rp}.destination.services.namespace", "must specify a namespace")
    for i, r in enumerate(ingress or []):
        rp = f"{path}.ingress[{i}]"
        if r.destination is not None and r.destination.services is not None:
            problems.add(f"{rp}.destination.services", "not allowed in ingress rule destination")
        src = r.source
        if global_scope and src is not None and src.services is not None:
            if not src.services.namespace:
                problems.add(f"{rp}.source.services.namespace", "must specify a namespace")


def default_types(
    types: list[PolicyType] | None, ingress: list[Rule] | None, egress: list[Rule] | None
) -> list[PolicyType]:
    """Calico's ``types`` defaulting: explicit types win; else derived from the rules."""
    if types:
        return list(types)
    if egress and not ingress:
        return ["Egress"]
    if egress and ingress:
        return ["Ingress", "Egress"]
    return ["Ingress"]
