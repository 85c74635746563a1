"""DNS records derived from datastore objects (pure): WorkloadEndpoint, Node, IPPool.

Owns the naming scheme (documented for users):

- workload ``<workload>.<namespace>.<zone>`` (zone default ``pod.cluster.local``): A/AAAA for
  every address in ``spec.ipNetworks`` of every WorkloadEndpoint of that workload (``spec.pod``
  for Kubernetes pods, else ``spec.workload``; a multi-interface pod aggregates its WEPs);
- SRV ``_<port-name>._<proto>.<workload>.<namespace>.<zone>`` for each named port
  (priority 0, weight 100, target the workload name);
- PTR ``<reversed ip>.in-addr.arpa`` / ``ip6.arpa`` for every workload IP -> its name;
- node ``<node>.<node-zone>`` (node zone default: the workload zone with its first label
  replaced by ``node``, i.e. ``node.cluster.local``): A/AAAA from ``spec.bgp.ipv4Address`` /
  ``ipv6Address``, plus PTR for those addresses;
- each IPPool makes the server authoritative for the reverse zone covering its CIDR, rounded
  down to an octet (v4) / nibble (v6) boundary.

Invariants: every name produced is lower case, has no trailing dot, labels of 1..63 bytes and a
total length <= 253; objects whose names would break that produce no records (never an error):
the datastore may hold anything and the server must keep serving.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

# Record types (numeric values match the DNS wire format and dnslib.QTYPE).
A: Final = 1
NS: Final = 2
SOA: Final = 6
PTR: Final = 12
AAAA: Final = 28
SRV: Final = 33

REVERSE_ROOTS: Final = ("in-addr.arpa", "ip6.arpa")

#: rdata values: A/AAAA -> str address; PTR -> str target; SRV -> (prio, weight, port, target)
RData = str | tuple[int, int, int, str]


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record (class IN); ``name`` lower case without trailing dot."""

    name: str
    rtype: int
    rdata: RData


def valid_name(name: str) -> bool:
    """True when ``name`` is a usable DNS name (see module invariants)."""
    if not name or len(name) > 253:
        return False
    for label in name.split("."):
        if not 0 < len(label) <= 63:
            return False
        if not label.isascii() or not label.isprintable() or " " in label or "\\" in label:
            return False
    return True


def reverse_name(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The PTR owner name of ``ip`` (no trailing dot)."""
    return ip.reverse_pointer


def reverse_zone(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
    """The reverse zone covering ``net``, rounded down to an octet/nibble boundary; None when
    that would be the whole reverse tree (prefix shorter than 8 / 4 bits)."""
    if net.version == 4:
        n = net.prefixlen // 8
        if n == 0:
            return None
        octets = str(net.network_address).split(".")[:n]
        return ".".join(reversed(octets)) + ".in-addr.arpa"
    n = net.prefixlen // 4
    if n == 0:
        return None
    nibbles = net.network_address.exploded.replace(":", "")[:n]
    return ".".join(reversed(nibbles)) + ".ip6.arpa"


def default_node_zone(zone: str) -> str:
    """``pod.cluster.local`` -> ``node.cluster.local``; a zone with one label gets ``node.``
    prepended."""
    _head, sep, rest = zone.partition(".")
    return f"node.{rest}" if sep else f"node.{zone}"


def _ip(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return ipaddress.ip_interface(text.strip()).ip
    except ValueError:
        return None


def _addr_records(
    name: str, ips: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]
) -> list[Record]:
    out: list[Record] = []
    for ip in ips:
        out.append(Record(name, A if ip.version == 4 else AAAA, str(ip)))
        out.append(Record(reverse_name(ip), PTR, name))
    return out


def workload_name(obj: Mapping[str, Any], zone: str) -> str | None:
    """The DNS name of a WorkloadEndpoint's workload, or None when it has none/invalid."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        return None
    wl = spec.get("pod") or spec.get("workload")
    ns = meta.get("namespace")
    if not isinstance(wl, str) or not isinstance(ns, str) or not wl or not ns:
        return None
    name = f"{wl}.{ns}.{zone}".lower()
    return name if valid_name(name) else None


def workload_records(obj: Mapping[str, Any], zone: str) -> list[Record]:
    """Records contributed by one WorkloadEndpoint (see module doc)."""
    name = workload_name(obj, zone)
    if name is None:
        return []
    spec = obj["spec"]
    ips = [ip for ip in map(_ip, spec.get("ipNetworks") or []) if ip is not None]
    out = _addr_records(name, ips)
    ports = spec.get("ports") or []
    if isinstance(ports, list):
        for p in ports:
            if not isinstance(p, Mapping):
                continue
            pname, proto, port = p.get("name"), p.get("protocol"), p.get("port")
            if not (isinstance(pname, str) and pname and isinstance(proto, str)):
                continue
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                continue
            owner = f"_{pname}._{proto}.{name}".lower()
            if valid_name(owner):
                out.append(Record(owner, SRV, (0, 100, port, name)))
    return out


def node_records(obj: Mapping[str, Any], node_zone: str) -> list[Record]:
    """Records contributed by one Node: ``<node>.<node_zone>`` A/AAAA + PTR."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        return []
    node = meta.get("name")
    if not isinstance(node, str) or not node:
        return []
    name = f"{node}.{node_zone}".lower()
    if not valid_name(name):
        return []
    bgp = spec.get("bgp") or {}
    if not isinstance(bgp, Mapping):
        return []
    ips = [ip for ip in (_ip(bgp.get("ipv4Address")), _ip(bgp.get("ipv6Address"))) if ip]
    return _addr_records(name, ips)


def pool_zone(obj: Mapping[str, Any]) -> str | None:
    """The reverse zone an IPPool makes authoritative (None: unusable CIDR)."""
    spec = obj.get("spec") or {}
    cidr = spec.get("cidr") if isinstance(spec, Mapping) else None
    if not isinstance(cidr, str):
        return None
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return None
    return reverse_zone(net)
