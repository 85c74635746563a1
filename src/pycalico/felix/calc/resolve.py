"""Rule resolution: backend rules -> :class:`ResolvedRule` with selectors replaced by IP sets.

Owns the IP set identities (Felix's RuleScanner): a selector set is named by the selector's
Calico unique id (``s:`` + base64url SHA-224 of the canonical form); a named-port set by
``n:`` + base64url SHA-224 of ``"<selector uid>,<protocol|any>,<port name>"`` (pycalico's own
scheme, playing the role of Calico's ``n:`` ids). Named ports with no selector on their side
of the rule are resolved over ``all()``; ``notPorts`` named ports use the same selector.

Invariant: pure; equal rules resolve to equal values, and every set a resolved rule names is
reported in the ``specs`` set the caller passes in.
"""

from __future__ import annotations

from base64 import urlsafe_b64encode
from dataclasses import dataclass
from hashlib import sha224

from pycalico.felix.calc.messages import ResolvedRule
from pycalico.model import Rule
from pycalico.selector import parse


@dataclass(frozen=True)
class SetSpec:
    """What an IP set is computed from: a selector, plus port name/protocol for named ports.

    ``protocol`` None (a named port in a rule without a protocol) matches the named port
    whatever its protocol. Not ordered itself (None and int do not compare): sort with
    :meth:`sort_key`."""

    selector: str
    named_port: str = ""
    protocol: int | None = None

    def sort_key(self) -> tuple[str, str, int]:
        """A total order: "any protocol" (None) sorts before every protocol number."""
        return (self.selector, self.named_port, -1 if self.protocol is None else self.protocol)


def named_port_id(sel_uid: str, protocol: int | None, port: str) -> str:
    digest = sha224(f"{sel_uid},{protocol if protocol is not None else 'any'},{port}".encode())
    return "n:" + urlsafe_b64encode(digest.digest()).decode().rstrip("=")


#: Bound of the selector -> unique id memo: the ids are a pure function of the selector
#: text, so the memo is dropped when full (selectors come and go with policies; a memo
#: keeping every selector ever seen would grow for the agent's lifetime).
UID_MEMO_MAX = 4096


class RuleResolver:
    """Resolves rules, caching selector unique ids (at most ``UID_MEMO_MAX``)."""

    def __init__(self) -> None:
        self._uids: dict[str, str] = {}

    def uid(self, sel: str) -> str:
        uid = self._uids.get(sel)
        if uid is None:
            if len(self._uids) >= UID_MEMO_MAX:
                self._uids.clear()
            uid = self._uids[sel] = parse(sel).unique_id()
        return uid

    def set_id(self, spec: SetSpec) -> str:
        uid = self.uid(spec.selector)
        if not spec.named_port:
            return uid
        return named_port_id(uid, spec.protocol, spec.named_port)

    def rule(self, rule: Rule, specs: set[SetSpec]) -> ResolvedRule:
        def sel_ids(sel: str | None) -> tuple[str, ...]:
            if not sel:
                return ()
            spec = SetSpec(sel)
            specs.add(spec)
            return (self.set_id(spec),)

        def np_ids(sel: str | None, names: tuple[str, ...]) -> tuple[str, ...]:
            out = []
            for name in names:
                spec = SetSpec(sel or "all()", name, rule.protocol)
                specs.add(spec)
                out.append(self.set_id(spec))
            return tuple(out)

        s, d = rule.src, rule.dst
        return ResolvedRule(
            action=rule.action,
            ip_version=rule.ip_version,
            protocol=rule.protocol,
            not_protocol=rule.not_protocol,
            icmp_type=rule.icmp_type,
            icmp_code=rule.icmp_code,
            not_icmp_type=rule.not_icmp_type,
            not_icmp_code=rule.not_icmp_code,
            src_nets=s.nets,
            not_src_nets=s.not_nets,
            src_ip_set_ids=sel_ids(s.selector),
            not_src_ip_set_ids=sel_ids(s.not_selector),
            src_ports=s.ports,
            src_named_port_ip_set_ids=np_ids(s.selector, s.named_ports),
            not_src_ports=s.not_ports,
            not_src_named_port_ip_set_ids=np_ids(s.selector, s.not_named_ports),
            dst_nets=d.nets,
            not_dst_nets=d.not_nets,
            dst_ip_set_ids=sel_ids(d.selector),
            not_dst_ip_set_ids=sel_ids(d.not_selector),
            dst_ports=d.ports,
            dst_named_port_ip_set_ids=np_ids(d.selector, d.named_ports),
            not_dst_ports=d.not_ports,
            not_dst_named_port_ip_set_ids=np_ids(d.selector, d.not_named_ports),
            unmatchable=s.has_services or d.has_services,
        )

    def rules(self, rules: tuple[Rule, ...], specs: set[SetSpec]) -> tuple[ResolvedRule, ...]:
        return tuple(self.rule(r, specs) for r in rules)
