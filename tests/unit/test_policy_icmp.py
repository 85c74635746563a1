"""ICMP matches in the model: ``notICMP`` needs no protocol (as upstream's CEL rules) and then
matches only the family's ICMP of another type/code; the renderer agrees (see also the
kernel check in tests/netns/test_felix_dataplane.py)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from pycalico.felix.calc.evaluate import DataplaneView, Packet
from pycalico.felix.calc.messages import ResolvedRule
from pycalico.felix.rules.model import FAMILIES
from pycalico.felix.rules.policy import rule_bodies
from tests.unit.test_api_rules import decode, np, paths

V4 = (ip_address("10.0.0.1"), ip_address("10.0.0.2"))
V6 = (ip_address("fd00::1"), ip_address("fd00::2"))


def _pkt(
    v6: bool, proto: int, icmp: tuple[int, int] | None = None, port: int | None = None
) -> Packet:
    src, dst = V6 if v6 else V4
    t, c = icmp if icmp else (None, None)
    return Packet(src, dst, proto, port, None, t, c)


def test_not_icmp_without_protocol_is_valid() -> None:
    decode(np({"action": "Allow", "notICMP": {"type": 8}}))
    decode(np({"action": "Allow", "notICMP": {"type": 8, "code": 0}}))
    # icmp still needs protocol ICMP/ICMPv6; notICMP's code still needs a type.
    assert paths(np({"action": "Allow", "icmp": {"type": 8}})) == {"spec.ingress[0].icmp"}
    assert paths(np({"action": "Allow", "notICMP": {"code": 1}})) == {
        "spec.ingress[0].notICMP.code"
    }


@pytest.mark.parametrize(
    "rule,pkt,want",
    [
        (ResolvedRule("Allow", not_icmp_type=0), _pkt(False, 1, (8, 0)), True),
        (ResolvedRule("Allow", not_icmp_type=8), _pkt(False, 1, (8, 0)), False),
        (ResolvedRule("Allow", not_icmp_type=0), _pkt(False, 6, port=80), False),
        (ResolvedRule("Allow", not_icmp_type=0), _pkt(False, 58, (128, 0)), False),
        (ResolvedRule("Allow", not_icmp_type=1), _pkt(True, 58, (128, 0)), True),
        (ResolvedRule("Allow", not_icmp_type=1), _pkt(True, 17, port=53), False),
        (ResolvedRule("Allow", not_icmp_type=8, not_icmp_code=1), _pkt(False, 1, (8, 0)), True),
        (ResolvedRule("Allow", not_icmp_type=8, not_icmp_code=0), _pkt(False, 1, (8, 0)), False),
        (ResolvedRule("Allow", protocol=1, not_icmp_type=0), _pkt(False, 1, (8, 0)), True),
    ],
)
def test_not_icmp_matches_only_the_family_icmp(rule: ResolvedRule, pkt: Packet, want: bool) -> None:
    assert DataplaneView().rule_matches(rule, pkt) is want


def test_renderer_drops_rules_that_cannot_match() -> None:
    """With a non-ICMP protocol, or notProtocol of the family's ICMP, a notICMP rule can
    never match: it renders no nft rule (nft would refuse the conflicting dependency)."""
    v4, v6 = FAMILIES["ip"], FAMILIES["ip6"]
    names = lambda spec: "s"  # noqa: E731 - no sets in these rules
    assert rule_bodies(ResolvedRule("Allow", protocol=6, not_icmp_type=0), v4, names) == []
    assert rule_bodies(ResolvedRule("Allow", not_protocol=1, not_icmp_type=0), v4, names) == []
    assert rule_bodies(ResolvedRule("Allow", not_protocol=1, not_icmp_type=0), v6, names) != []
    (body,) = rule_bodies(ResolvedRule("Allow", not_icmp_type=0), v4, names)
    assert "icmp type != 0" in body
    (body6,) = rule_bodies(ResolvedRule("Allow", not_icmp_type=1), v6, names)
    assert "icmpv6 type != 1" in body6
