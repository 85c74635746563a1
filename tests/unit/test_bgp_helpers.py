"""Builders of v3 resource dicts for the BGP tests (no tests here; shared by test_bgp*).

Thin adapters over :mod:`tests.kit.builders` keeping the signatures the BGP tests call."""

from __future__ import annotations

from typing import Any

from tests import kit


def node(
    name: str,
    ip: str | None,
    ip6: str | None = None,
    *,
    labels: dict[str, str] | None = None,
    **bgp: Any,
) -> dict[str, Any]:
    return kit.node(name, ip, ip6, labels=labels or {}, bgp=bgp)


def res(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return kit.resource(kind, name, spec)


def bgpconfig(name: str = "default", **spec: Any) -> dict[str, Any]:
    return kit.bgp_configuration(name, **spec)


def peer(name: str, **spec: Any) -> dict[str, Any]:
    return kit.bgp_peer(name, **spec)


def pool(name: str, cidr: str, **spec: Any) -> dict[str, Any]:
    return kit.ip_pool(name, cidr, **spec)


def affinity(node_name: str, cidr: str, state: str = "confirmed") -> dict[str, Any]:
    return kit.block_affinity(node_name, cidr, state=state)


def bgpfilter(name: str, **spec: Any) -> dict[str, Any]:
    return kit.bgp_filter(name, **spec)
