"""BGPFilter matches on communities, AS-path prefixes and priorities, and the AddCommunity,
PrependASPath and SetPriority operations: rendered into BIRD filter functions (accepted by
``bird -p``), rejected with the field named by the renderer and by the v3 API (calicoctl)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pycalico.api import ValidationFailed, decode
from pycalico.bgp import BgpInputError, compute_bird_config, render_bird_config
from tests.unit.test_bgp_helpers import node, peer, pool, res
from tests.unit.test_bgp_render import _bird_parse, _protocol

NODES = [node("n1", "198.18.0.1", "fd00::1")]


def _render(spec: dict[str, Any]) -> str:
    return render_bird_config(
        compute_bird_config(
            "n1",
            nodes=NODES,
            pools=[pool("p", "10.244.0.0/16")],
            peers=[peer("tor", peerIP="198.18.0.254", asNumber=64513, filters=["f"])],
            filters=[res("BGPFilter", "f", **spec)],
        )
    )


def _function(text: str, name: str) -> list[str]:
    start = text.index(f"function {name}(bool internal_peer) {{")
    return [line.strip() for line in text[start : text.index("\n}", start)].splitlines()[1:]]


def test_community_and_as_path_matches_with_operations(tmp_path: Path) -> None:
    text = _render(
        {
            "exportV4": [
                {
                    "action": "Accept",
                    "cidr": "10.244.0.0/16",
                    "matchOperator": "In",
                    "operations": [
                        {"addCommunity": {"value": "64512:100"}},
                        {"addCommunity": {"value": "64512:1:2"}},
                        {"prependASPath": {"prefix": [65001, 65002]}},
                    ],
                },
            ],
            "importV4": [
                {"action": "Reject", "communities": {"values": ["65000:666"]}},
                {"action": "Reject", "communities": {"values": ["65000:1:666"]}},
                {"action": "Accept", "asPathPrefix": [64513, 65100], "priority": 512},
                {
                    "action": "Accept",
                    "cidr": "203.0.113.0/24",
                    "matchOperator": "Equal",
                    "operations": [{"setPriority": {"value": 100}}],
                },
            ],
        }
    )
    assert _function(text, "bgp_f_exportFilterV4") == [
        "if (net ~ 10.244.0.0/16) then { bgp_community.add((64512, 100)); "
        "bgp_large_community.add((64512, 1, 2)); bgp_path.prepend(65002); "
        "bgp_path.prepend(65001); accept; }"
    ]
    assert _function(text, "bgp_f_importFilterV4") == [
        "if ((65000, 666) ~ bgp_community) then { reject; }",
        "if ((65000, 1, 666) ~ bgp_large_community) then { reject; }",
        "if (bgp_path ~ [= 64513 65100 * =] && defined(bgp_local_pref) && "
        "bgp_local_pref = 2147483135) then { accept; }",
        "if (net = 203.0.113.0/24) then { bgp_local_pref = 2147483547; accept; }",
    ]
    _bird_parse(text, tmp_path)


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"action": "Accept", "communities": {"values": ["65536:1"]}}, "communities.values[0]"),
        ({"action": "Accept", "communities": {"values": []}}, "communities.values"),
        ({"action": "Accept", "asPathPrefix": ["x"]}, "asPathPrefix[0]"),
        (
            {"action": "Reject", "operations": [{"addCommunity": {"value": "1:1"}}]},
            "operations",
        ),
        (
            {"action": "Accept", "operations": [{"addCommunity": {"value": "1:1:x"}}]},
            "operations[0].addCommunity.value",
        ),
        (
            {"action": "Accept", "operations": [{"prependASPath": {"prefix": []}}]},
            "operations[0].prependASPath.prefix",
        ),
        ({"action": "Accept", "operations": [{}]}, "operations[0]"),
    ],
)
def test_bad_rules_name_the_field(rule: dict[str, Any], field: str) -> None:
    with pytest.raises(BgpInputError, match=re.escape(f"spec.exportV4[0].{field}")):
        _render({"exportV4": [rule]})
    with pytest.raises(ValidationFailed) as e:
        decode(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "BGPFilter",
                "metadata": {"name": "f"},
                "spec": {"exportV4": [rule]},
            }
        )
    assert "exportV4[0]" in str(e.value), str(e.value)


def test_peer_type_limits_a_rule_to_ebgp_or_ibgp_peers(tmp_path: Path) -> None:
    text = render_bird_config(
        compute_bird_config(
            "n1",
            nodes=NODES,
            peers=[
                peer("ext", peerIP="192.0.2.1", asNumber=64513, filters=["f"]),
                peer("int", peerIP="192.0.2.2", asNumber=64512, filters=["f"]),
            ],
            filters=[
                res(
                    "BGPFilter",
                    "f",
                    exportV4=[
                        {"action": "Reject", "peerType": "eBGP", "asPathPrefix": [65001]},
                        {"action": "Reject", "peerType": "iBGP"},
                    ],
                )
            ],
        )
    )
    assert _function(text, "bgp_f_exportFilterV4") == [
        "if (!internal_peer && bgp_path ~ [= 65001 * =]) then { reject; }",
        "if (internal_peer) then { reject; }",
    ]
    assert "bgp_f_exportFilterV4(false);" in _protocol(text, "Global_192_0_2_1")
    assert "bgp_f_exportFilterV4(true);" in _protocol(text, "Global_192_0_2_2")
    _bird_parse(text, tmp_path)
    with pytest.raises(BgpInputError, match=re.escape("spec.exportV4[0].peerType")):
        _render({"exportV4": [{"action": "Reject", "peerType": "both"}]})
