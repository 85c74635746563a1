"""IPPool / IPReservation: defaults filled on decode, every validation rule, aliases."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pycalico.api import ValidationFailed, decode, encode, resolve_kind
from pycalico.api.kinds_ippool import IPPool, IPReservation


def pool(name: str = "p1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": spec,
    }


def problems_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as exc:
        decode(doc)
    return [f"{p.path}: {p.reason}" for p in exc.value.problems]


def test_v4_defaults_are_filled_and_printed() -> None:
    res = decode(pool(cidr="10.1.0.0/16"))
    assert isinstance(res, IPPool)
    spec = encode(res)["spec"]
    assert spec == {
        "cidr": "10.1.0.0/16",
        "vxlanMode": "Never",
        "ipipMode": "Never",
        "natOutgoing": False,
        "disabled": False,
        "disableBGPExport": False,
        "blockSize": 26,
        "nodeSelector": "all()",
        "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic",
    }
    assert res.spec.network == ipaddress.ip_network("10.1.0.0/16")


def test_v6_default_block_size_is_122() -> None:
    res = decode(pool(cidr="fd00:1::/112"))
    assert isinstance(res, IPPool)
    assert res.spec.blockSize == 122


def test_explicit_values_are_kept() -> None:
    res = decode(
        pool(
            cidr="192.168.0.0/16",
            blockSize=28,
            ipipMode="CrossSubnet",
            natOutgoing=True,
            nodeSelector='rack == "0"',
            assignmentMode="Manual",
        )
    )
    assert isinstance(res, IPPool)
    assert (res.spec.blockSize, res.spec.ipipMode, res.spec.assignmentMode) == (
        28,
        "CrossSubnet",
        "Manual",
    )
    assert res.spec.natOutgoing is True


def test_decode_of_encode_round_trips() -> None:
    first = decode(pool(cidr="10.2.0.0/16", namespaceSelector="team == 'a'"))
    again = decode(encode(first))
    assert encode(again) == encode(first)
    assert isinstance(first, IPPool)
    assert first.spec.allowedUses == ["Workload"]


def test_aliases_resolve() -> None:
    for word in ("ippool", "ippools", "ipp", "ipps", "pool", "pools", "IPPool"):
        assert resolve_kind(word) == "IPPool"
    for word in ("ipreservation", "ipreservations"):
        assert resolve_kind(word) == "IPReservation"


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({}, "spec.cidr", "required"),
        ({"cidr": "1.2.3.4/33"}, "spec.cidr", "valid subnet"),
        ({"cidr": "garbage"}, "spec.cidr", "valid subnet"),
        ({"cidr": "10.0.0.1/24"}, "spec.cidr", "strictly masked"),
        ({"cidr": "fd00::1/112"}, "spec.cidr", "strictly masked"),
        ({"cidr": "169.254.5.0/24"}, "spec.cidr", "Link Local"),
        ({"cidr": "169.254.0.0/15"}, "spec.cidr", "Link Local"),
        ({"cidr": "fe80::/120"}, "spec.cidr", "Link Local"),
        ({"cidr": "10.0.0.0/28"}, "spec.cidr", "too small"),
        ({"cidr": "10.0.0.0/16", "blockSize": 19}, "spec.blockSize", "between 20 and 32"),
        ({"cidr": "10.0.0.0/16", "blockSize": 33}, "spec.blockSize", "between 20 and 32"),
        ({"cidr": "fd00::/100", "blockSize": 115}, "spec.blockSize", "between 116 and 128"),
        ({"cidr": "10.0.0.0/24", "ipipMode": "never"}, "spec.ipipMode", "Never"),
        ({"cidr": "10.0.0.0/24", "vxlanMode": "badVal"}, "spec.vxlanMode", "Never"),
        (
            {"cidr": "10.0.0.0/24", "ipipMode": "Always", "vxlanMode": "CrossSubnet"},
            "spec.ipipMode",
            "cannot both",
        ),
        ({"cidr": "fd00::/112", "ipipMode": "Always"}, "spec.ipipMode", "IPv6"),
        ({"cidr": "10.0.0.0/24", "nodeSelector": "global()"}, "spec.nodeSelector", "global()"),
        ({"cidr": "10.0.0.0/24", "nodeSelector": "this is not valid"}, "spec.nodeSelector", ""),
        ({"cidr": "10.0.0.0/24", "allowedUses": ["Garbage"]}, "spec.allowedUses", ""),
        (
            {"cidr": "10.0.0.0/24", "allowedUses": ["LoadBalancer", "Tunnel"]},
            "spec.allowedUses",
            "LoadBalancer",
        ),
        (
            {"cidr": "10.0.0.0/24", "allowedUses": ["LoadBalancer"], "vxlanMode": "Always"},
            "spec.ipipMode",
            "LoadBalancer",
        ),
        (
            {"cidr": "10.0.0.0/24", "allowedUses": ["LoadBalancer"], "disableBGPExport": True},
            "spec.disableBGPExport",
            "LoadBalancer",
        ),
        (
            {"cidr": "10.0.0.0/24", "allowedUses": ["LoadBalancer"], "nodeSelector": "!all()"},
            "spec.nodeSelector",
            "all()",
        ),
        (
            {"cidr": "10.0.0.0/24", "allowedUses": ["Tunnel"], "namespaceSelector": "has(a)"},
            "spec.namespaceSelector",
            "Tunnel",
        ),
        ({"cidr": "10.0.0.0/24", "assignmentMode": "Sometimes"}, "spec.assignmentMode", ""),
        ({"cidr": "10.0.0.0/24", "nat-outgoing": True}, "spec.nat-outgoing", ""),
        ({"cidr": "10.0.0.0/24", "ipip": {"enabled": True}}, "spec.ipip", ""),
        ({"cidr": "10.0.0.0/24", "bogus": 1}, "spec.bogus", ""),
    ],
)
def test_invalid_pools(spec: dict[str, Any], field: str, reason: str) -> None:
    found = problems_of(pool(**spec))
    assert any(p.startswith(field) and reason in p for p in found), found


@pytest.mark.parametrize(
    "spec",
    [
        {"cidr": "10.0.0.0/27", "disabled": True},  # disabled pools may be smaller than a block
        {"cidr": "aabb:aabb::ffff/128", "disabled": True},
        {"cidr": "aa00::/10"},
        {"cidr": "10.0.4.0/24", "allowedUses": ["LoadBalancer"]},
        {"cidr": "10.0.0.0/24", "namespaceSelector": "team == 'x' || team == 'y'"},
        {"cidr": "10.0.0.0/24", "nat-outgoing": False},
        {"cidr": "10.0.0.0/16", "blockSize": 20},
        {"cidr": "fd00::/116", "blockSize": 116},
    ],
)
def test_valid_pools(spec: dict[str, Any]) -> None:
    assert isinstance(decode(pool(**spec)), IPPool)


def test_name_rules() -> None:
    assert isinstance(decode(pool(name="x" * 253, cidr="10.0.0.0/24")), IPPool)
    assert problems_of(pool(name="x" * 254, cidr="10.0.0.0/24"))[0].startswith("metadata.name")
    assert problems_of(pool(name="Bad_Name", cidr="10.0.0.0/24"))[0].startswith("metadata.name")


def test_ip_reservation() -> None:
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPReservation",
        "metadata": {"name": "r1"},
        "spec": {"reservedCIDRs": ["192.168.2.3", "10.0.2.3/32", "cafe:f00d::/123"]},
    }
    res = decode(doc)
    assert isinstance(res, IPReservation)
    assert res.spec.reservedCIDRs == ["192.168.2.3", "10.0.2.3/32", "cafe:f00d::/123"]
    doc["spec"] = {"reservedCIDRs": ["10.0.1.0/33"]}
    assert problems_of(doc)[0].startswith("spec.reservedCIDRs[0]")
    doc["spec"] = {"reservedCIDRs": ["garbage"]}
    assert problems_of(doc)[0].startswith("spec.reservedCIDRs[0]")


def test_cidr_is_normalised() -> None:
    res = decode(pool(cidr="fd00:0:0::/64"))
    assert isinstance(res, IPPool)
    assert res.spec.cidr == "fd00::/64"


def test_update_and_overlap_rules() -> None:
    a = decode(pool("a", cidr="10.0.0.0/16"))
    b = decode(pool("b", cidr="10.0.128.0/17"))
    c = decode(pool("c", cidr="10.1.0.0/16", blockSize=28))
    v6 = decode(pool("d", cidr="fd00::/64"))
    assert isinstance(a, IPPool) and isinstance(b, IPPool)
    assert isinstance(c, IPPool) and isinstance(v6, IPPool)
    assert a.overlap_problem([a, c, v6]) is None
    why = b.overlap_problem([a, c])
    assert why is not None and "IPPool(b)" in why and "IPPool(a)" in why
    renamed = decode(pool("a", cidr="10.1.0.0/16"))
    assert isinstance(renamed, IPPool)
    assert [p for p, _ in renamed.update_problems(a)] == ["spec.cidr"]
    resized = decode(pool("c", cidr="10.1.0.0/16", blockSize=26))
    assert isinstance(resized, IPPool)
    assert [p for p, _ in resized.update_problems(c)] == ["spec.blockSize"]
    assert a.update_problems(a) == []
