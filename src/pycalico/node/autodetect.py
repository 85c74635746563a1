"""Node IP autodetection, as calico-node's ``IP_AUTODETECTION_METHOD``.

Owns: the pure choice of this node's address from a list of :class:`Interface` values
(:func:`autodetect`) for the methods ``first-found``, ``interface=REGEX[,REGEX]``,
``skip-interface=REGEX[,REGEX]``, ``can-reach=DEST`` and ``cidr=CIDR[,CIDR]``; plus the thin
readers of the kernel state it needs (:func:`read_interfaces`, :func:`route_source`), which
run ``ip -j`` through the process seam in the current network namespace and send no traffic
(not pyroute2: importing it would keep ~24 MB in every calico-node for one start-up read).

Invariants: the result is ``address/prefixlen`` as configured on the interface (the prefix
length drives CrossSubnet); loopback, link-local and Calico's/containers' own devices are
never chosen (Calico's default exclusion list); interfaces are considered in kernel index
order, addresses in the order the kernel lists them; a bad method raises
:class:`AutodetectError` naming the method.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycalico.errors import CalicoError
from pycalico.system.iproute import IpError, IpRoute
from pycalico.system.process import ProcessRunner, SubprocessRunner

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Calico's DEFAULT_INTERFACES_TO_EXCLUDE (startup/autodetection).
DEFAULT_EXCLUDES: tuple[str, ...] = (
    r"^docker.*",
    r"^cbr.*",
    r"^dummy.*",
    r"^virbr.*",
    r"^lxcbr.*",
    r"^veth.*",
    r"^lo$",
    r"^cali.*",
    r"^tunl.*",
    r"^flannel.*",
    r"^kube-ipvs.*",
    r"^cni.*",
    r"^vxlan\.calico.*",
    r"^vxlan-v6\.calico.*",
    r"^wireguard\.cali.*",
    r"^wg-v6\.cali.*",
    r"^nodelocaldns.*",
)

RouteLookup = Callable[[IPAddress], IPAddress | None]


class AutodetectError(CalicoError, ValueError):
    """The autodetection method is invalid or found no usable address."""


@dataclass(frozen=True)
class Interface:
    """One network interface: kernel index, name, whether it is up, its addresses."""

    index: int
    name: str
    addresses: tuple[IPInterface, ...] = ()
    up: bool = True
    mtu: int = 1500
    kind: str = field(default="", compare=False)


def _usable(addr: IPInterface, version: int) -> bool:
    ip = addr.ip
    return ip.version == version and not (ip.is_loopback or ip.is_link_local or ip.is_multicast)


def _regexes(text: str, what: str) -> list[re.Pattern[str]]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(re.compile(part))
        except re.error as e:
            raise AutodetectError(f"{what}: invalid regular expression {part!r}: {e}") from None
    if not out:
        raise AutodetectError(f"{what}: at least one regular expression is required")
    return out


def _first(
    interfaces: Sequence[Interface],
    version: int,
    include: Sequence[re.Pattern[str]] | None = None,
    exclude: Sequence[re.Pattern[str]] = (),
) -> IPInterface | None:
    for itf in sorted(interfaces, key=lambda i: i.index):
        if include is not None and not any(r.match(itf.name) for r in include):
            continue
        if any(r.match(itf.name) for r in exclude):
            continue
        for a in itf.addresses:
            if _usable(a, version):
                return a
    return None


def autodetect(
    method: str,
    interfaces: Sequence[Interface],
    version: int = 4,
    route_lookup: RouteLookup | None = None,
) -> IPInterface:
    """Choose this node's address of ``version`` by ``method`` (``""`` = first-found)."""
    method = method.strip() or "first-found"
    default_excl = [re.compile(r) for r in DEFAULT_EXCLUDES]
    found: IPInterface | None
    if method == "first-found":
        found = _first(interfaces, version, exclude=default_excl)
    elif method.startswith("interface="):
        found = _first(interfaces, version, include=_regexes(method[10:], "interface"))
    elif method.startswith("skip-interface="):
        skip = _regexes(method[15:], "skip-interface")
        found = _first(interfaces, version, exclude=[*default_excl, *skip])
    elif method.startswith("cidr="):
        nets = []
        for part in method[5:].split(","):
            if not part.strip():
                continue
            try:
                nets.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise AutodetectError(f"cidr: invalid CIDR {part.strip()!r}") from None
        if not nets:
            raise AutodetectError("cidr: at least one CIDR is required")
        found = None
        for itf in sorted(interfaces, key=lambda i: i.index):
            for a in itf.addresses:
                if _usable(a, version) and any(a.ip in n for n in nets):
                    found = a
                    break
            if found is not None:
                break
    elif method.startswith("can-reach="):
        dest_text = method[10:].strip()
        try:
            dest = ipaddress.ip_address(dest_text)
        except ValueError:
            raise AutodetectError(
                f"can-reach: {dest_text!r} is not an IP address (names are not resolved)"
            ) from None
        if dest.version != version:
            raise AutodetectError(f"can-reach: {dest} is not an IPv{version} address")
        if route_lookup is None:
            raise AutodetectError("can-reach: no route lookup available")
        src = route_lookup(dest)
        found = None
        if src is not None:
            for itf in interfaces:
                for a in itf.addresses:
                    if a.ip == src:
                        found = a
            if found is None:
                found = ipaddress.ip_interface(f"{src}/{src.max_prefixlen}")
    else:
        raise AutodetectError(
            f"IP_AUTODETECTION_METHOD {method!r}: expected first-found, interface=REGEX, "
            "skip-interface=REGEX, can-reach=DEST or cidr=CIDR"
        )
    if found is None:
        raise AutodetectError(f"IP_AUTODETECTION_METHOD {method}: no valid IPv{version} address")
    return found


# --- kernel readers (current network namespace) ----------------------------------------------


def parse_ip_addr(docs: Sequence[Mapping[str, Any]]) -> list[Interface]:
    """``ip -j -d addr show`` output → :class:`Interface` values (pure)."""
    out = []
    for link in docs:
        addrs: list[IPInterface] = []
        for a in link.get("addr_info") or []:
            ip = a.get("local")
            if not ip or a.get("family") not in ("inet", "inet6"):
                continue
            addrs.append(ipaddress.ip_interface(f"{ip}/{a.get('prefixlen', 128)}"))
        info = link.get("linkinfo") or {}
        out.append(
            Interface(
                index=int(link.get("ifindex") or 0),
                name=str(link.get("ifname") or ""),
                addresses=tuple(addrs),
                up="UP" in (link.get("flags") or []),
                mtu=int(link.get("mtu") or 0),
                kind=str(info.get("info_kind") or ""),
            )
        )
    return sorted(out, key=lambda i: i.index)


def read_interfaces(runner: ProcessRunner | None = None) -> list[Interface]:
    """Every link with its addresses (``ip -j -d addr show`` of the current namespace)."""
    ip = IpRoute(runner or SubprocessRunner())
    docs = json.loads(ip.run("-j", "-d", "addr", "show") or "[]")
    return parse_ip_addr(docs)


def route_source(dest: IPAddress, runner: ProcessRunner | None = None) -> IPAddress | None:
    """The source address the kernel would use towards ``dest`` (``ip route get``: a route
    lookup only, no traffic); None when there is no route."""
    ip = IpRoute(runner or SubprocessRunner())
    try:
        routes = json.loads(ip.run("-j", "route", "get", str(dest)) or "[]")
    except (IpError, ValueError):
        return None
    for r in routes:
        src = r.get("prefsrc")
        if src:
            return ipaddress.ip_address(src)
    return None
