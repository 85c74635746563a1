"""Builders of v3 resource dicts for the BGP tests (no tests here; shared by test_bgp*)."""

from __future__ import annotations

from typing import Any


def node(
    name: str,
    ip: str | None,
    ip6: str | None = None,
    *,
    labels: dict[str, str] | None = None,
    **bgp: Any,
) -> dict[str, Any]:
    spec_bgp: dict[str, Any] = dict(bgp)
    if ip:
        spec_bgp["ipv4Address"] = ip if "/" in ip else f"{ip}/24"
    if ip6:
        spec_bgp["ipv6Address"] = ip6 if "/" in ip6 else f"{ip6}/64"
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"bgp": spec_bgp},
    }


def res(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def bgpconfig(name: str = "default", **spec: Any) -> dict[str, Any]:
    return res("BGPConfiguration", name, **spec)


def peer(name: str, **spec: Any) -> dict[str, Any]:
    return res("BGPPeer", name, **spec)


def pool(name: str, cidr: str, **spec: Any) -> dict[str, Any]:
    return res("IPPool", name, cidr=cidr, **spec)


def affinity(node_name: str, cidr: str, state: str = "confirmed") -> dict[str, Any]:
    return res(
        "BlockAffinity",
        f"{node_name}-{cidr.replace('/', '-')}",
        node=node_name,
        cidr=cidr,
        state=state,
    )


def bgpfilter(name: str, **spec: Any) -> dict[str, Any]:
    return res("BGPFilter", name, **spec)
