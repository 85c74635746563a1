"""Edge cases of Calico rule validation: ports, protocols, ICMP, nets, selectors, services."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.api import ValidationFailed, decode
from pycalico.api.common import PortRange, parse_port, protocol_supports_ports


def np(*ingress: dict[str, Any], egress: list[dict[str, Any]] | None = None, **spec: Any) -> Any:
    body: dict[str, Any] = {"ingress": list(ingress), **spec}
    if egress is not None:
        body["egress"] = egress
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "ns1"},
        "spec": body,
    }


def gnp(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "g"},
        "spec": spec,
    }


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as info:
        decode(doc)
    return [(p.path, p.reason) for p in info.value.problems]


def paths(doc: dict[str, Any]) -> set[str]:
    return {p for p, _ in problems(doc)}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (80, PortRange(80, 80)),
        ("80", PortRange(80, 80)),
        ("1:65535", PortRange(1, 65535)),
        ("8080:8080", PortRange(8080, 8080)),
        ("http-alt", PortRange(name="http-alt")),
        ("a.b_c", PortRange(name="a.b_c")),
    ],
)
def test_port_parsing(value: int | str, expected: PortRange) -> None:
    assert parse_port(value) == expected


@pytest.mark.parametrize("value", [0, 65536, "0:10", "10:5", "1:70000", "bad port", "a:b", ""])
def test_bad_ports(value: int | str) -> None:
    with pytest.raises(ValueError):
        parse_port(value)


def test_port_normalisation_in_encoded_rule() -> None:
    from pycalico.api import encode

    res = decode(
        np({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["80", "1:2"]}})
    )
    assert encode(res)["spec"]["ingress"][0]["destination"]["ports"] == [80, "1:2"]


def test_protocol_supports_ports() -> None:
    assert [protocol_supports_ports(p) for p in ("TCP", "UDP", "SCTP", 6, 17, 132)] == [True] * 6
    assert not any(protocol_supports_ports(p) for p in ("ICMP", "ICMPv6", "UDPLite", 1, 58, 7))


@pytest.mark.parametrize(
    "proto", ["TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite", 1, 255, "255"]
)
def test_valid_protocols(proto: int | str) -> None:
    decode(np({"action": "Allow", "protocol": proto}))
    decode(np({"action": "Allow", "notProtocol": proto}))


@pytest.mark.parametrize("proto", [0, 256, "256", "tcp", "footcp", True])
def test_invalid_protocols(proto: Any) -> None:
    assert "spec.ingress[0].protocol" in paths(np({"action": "Allow", "protocol": proto}))


def test_actions() -> None:
    for action in ("Allow", "Deny", "Log", "Pass"):
        decode(np({"action": action}))
    assert "spec.ingress[0].action" in paths(np({"action": "allow"}))
    assert "spec.ingress[0].action" in paths(np({}))


def test_ports_need_port_protocol_unless_named() -> None:
    decode(np({"action": "Allow", "destination": {"ports": ["http", "metrics"]}}))
    assert paths(np({"action": "Allow", "destination": {"ports": ["http", 80]}})) == {
        "spec.ingress[0].destination.ports"
    }
    assert paths(np({"action": "Allow", "protocol": "ICMP", "source": {"notPorts": ["http"]}})) == {
        "spec.ingress[0].source.notPorts"
    }
    decode(np({"action": "Allow", "protocol": 132, "source": {"ports": ["1:2"]}}))


def test_bad_port_is_reported_with_index() -> None:
    doc = np({"action": "Allow", "protocol": "TCP", "destination": {"ports": [80, "90:10"]}})
    assert paths(doc) == {"spec.ingress[0].destination.ports[1]"}


def test_icmp_rules() -> None:
    decode(np({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 254, "code": 255}}))
    decode(np({"action": "Allow", "protocol": "ICMPv6", "ipVersion": 6, "notICMP": {"type": 1}}))
    base = {"action": "Allow", "protocol": "ICMP"}
    assert "spec.ingress[0].icmp.type" in paths(np({**base, "icmp": {"type": 255}}))
    assert "spec.ingress[0].icmp.code" in paths(np({**base, "icmp": {"type": 1, "code": 256}}))
    assert paths(np({**base, "icmp": {"code": 1}})) == {"spec.ingress[0].icmp.code"}
    assert paths(np({"action": "Allow", "protocol": "TCP", "icmp": {"type": 1}})) == {
        "spec.ingress[0].icmp"
    }
    assert paths(np({**base, "ipVersion": 6})) == {"spec.ingress[0].ipVersion"}
    assert paths(np({"action": "Allow", "protocol": 58, "ipVersion": 4})) == {
        "spec.ingress[0].ipVersion"
    }


def test_nets() -> None:
    decode(np({"action": "Allow", "source": {"nets": ["10.0.0.1", "10.1.0.0/16"]}}))
    decode(np({"action": "Allow", "ipVersion": 6, "destination": {"notNets": ["fd00::/8"]}}))
    assert paths(np({"action": "Allow", "source": {"nets": ["10.0.0.0/8", "fd00::/8"]}})) == {
        "spec.ingress[0].source.nets"
    }
    assert paths(np({"action": "Allow", "ipVersion": 6, "source": {"nets": ["10.0.0.0/8"]}})) == {
        "spec.ingress[0].source.nets"
    }
    assert "spec.ingress[0].source.nets[0]" in paths(
        np({"action": "Allow", "source": {"nets": ["10.0.0.300/8"]}})
    )
    assert paths(np({"action": "Allow", "source": {"notNets": ["0.0.0.0/0"]}})) == {
        "spec.ingress[0].source.notNets"
    }
    assert paths(np({"action": "Allow", "destination": {"notNets": ["::/0"]}})) == {
        "spec.ingress[0].destination.notNets"
    }


def test_selectors() -> None:
    decode(np({"action": "Allow", "source": {"selector": "has(a) && b == 'c'"}}))
    decode(np({"action": "Allow", "source": {"namespaceSelector": "global()"}}))
    ent = "spec.ingress[0].source"
    assert paths(np({"action": "Allow", "source": {"selector": "a ="}})) == {f"{ent}.selector"}
    assert paths(np({"action": "Allow", "source": {"notSelector": "global()"}})) == {
        f"{ent}.notSelector"
    }
    assert paths(np({"action": "Allow", "source": {"namespaceSelector": "global() && a == 'b'"}}))
    assert paths(np(selector="global()")) == {"spec.selector"}
    assert paths(np(serviceAccountSelector="has(")) == {"spec.serviceAccountSelector"}


def test_service_matches() -> None:
    decode(np({"action": "Allow", "source": {"services": {"name": "svc"}}}))
    decode(np(egress=[{"action": "Allow", "destination": {"services": {"name": "s"}}}]))
    ing = np({"action": "Allow", "destination": {"services": {"name": "s"}}})
    assert paths(ing) == {"spec.ingress[0].destination.services"}
    egr = np(egress=[{"action": "Allow", "source": {"services": {"name": "s"}}}])
    assert paths(egr) == {"spec.egress[0].source.services"}
    both = np({"action": "Allow", "source": {"services": {"name": "s"}, "nets": ["1.2.3.4"]}})
    assert paths(both) == {"spec.ingress[0].source.services"}
    svc_ports = {"services": {"name": "s"}, "notPorts": [80]}
    assert "spec.egress[0].destination.notPorts" in paths(
        np(egress=[{"action": "Allow", "protocol": "TCP", "destination": svc_ports}])
    )
    decode(np({"action": "Allow", "protocol": "TCP", "source": svc_ports}))
    g = gnp(ingress=[{"action": "Allow", "source": {"services": {"name": "s"}}}])
    assert paths(g) == {"spec.ingress[0].source.services.namespace"}


def test_http_match() -> None:
    decode(np({"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET", "PUT"]}}))
    assert paths(np({"action": "Deny", "http": {"methods": ["GET"]}})) == {"spec.ingress[0].http"}
    assert paths(np({"action": "Allow", "protocol": "UDP", "http": {}})) == {"spec.ingress[0].http"}
    assert paths(np({"action": "Allow", "http": {"methods": ["GET", "GET"]}})) == {
        "spec.ingress[0].http.methods"
    }
    assert paths(np({"action": "Allow", "http": {"paths": [{"exact": "/a", "prefix": "/b"}]}}))
    assert paths(np(egress=[{"action": "Allow", "http": {"methods": ["GET"]}}])) == {
        "spec.egress[0].http"
    }


def test_policy_types_defaulting() -> None:
    def types(**spec: Any) -> Any:
        return decode(gnp(**spec)).spec.types

    allow = [{"action": "Allow"}]
    assert types() == ["Ingress"]
    assert types(ingress=allow) == ["Ingress"]
    assert types(egress=allow) == ["Egress"]
    assert types(ingress=allow, egress=allow) == ["Ingress", "Egress"]
    assert types(types=["Egress"]) == ["Egress"]
    assert types(preDNAT=True, applyOnForward=True) == ["Ingress"]
    assert decode(np()).spec.tier == "default"


def test_types_are_a_set_but_need_not_cover_rules() -> None:
    decode(np({"action": "Allow"}, types=["Egress"]))
    assert paths(np(types=["Ingress", "Ingress"])) == {"spec.types"}
    assert paths(np(types=["Sideways"])) == {"spec.types[0]"}


def test_gnp_flags() -> None:
    decode(gnp(doNotTrack=True, applyOnForward=True))
    decode(gnp(preDNAT=True, applyOnForward=True, ingress=[{"action": "Allow"}]))
    assert paths(gnp(preDNAT=True)) == {"spec.preDNAT"}
    assert paths(gnp(doNotTrack=True, preDNAT=True, applyOnForward=True)) == {"spec.preDNAT"}
    egress = [{"action": "Allow"}]
    assert paths(gnp(preDNAT=True, applyOnForward=True, egress=egress)) == {"spec.egress"}
    assert paths(gnp(namespaceSelector="global()")) == {"spec.namespaceSelector"}


def test_numbers_and_booleans_are_not_coerced_from_strings() -> None:
    assert problems(gnp(order="100")) == [
        ("spec.order", "Input should be a valid number (got '100')")
    ]
    assert paths(gnp(doNotTrack="yes", applyOnForward=True)) == {"spec.doNotTrack"}
    assert paths(gnp(order=float("inf"))) == {"spec.order"}
    assert decode(gnp(order=100)).spec.order == 100
