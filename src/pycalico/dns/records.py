"""DNS records derived from datastore objects (pure but for logging): WorkloadEndpoint, Node,
IPPool.

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

Every stored object is parsed by :mod:`pycalico.model` (WorkloadEndpoint via
``convert_wep_tolerant``: a bad address or port is dropped, the rest still served; Node and
IPPool as everywhere else); this module only derives records from the model values. A
resource the model rejects is logged and contributes no records.

Invariants: every name produced is lower case, has no trailing dot, labels of 1..63 bytes and a
total length <= 253; objects whose names would break that produce no records (never an error):
the datastore may hold anything and the server must keep serving.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pycalico.model import Endpoint, ModelError, convert_wep_tolerant, protocol_name
from pycalico.model.network import Addr, IPPool, Node

log = logging.getLogger(__name__)

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


def _addr_records(name: str, ips: Iterable[Addr]) -> list[Record]:
    out: list[Record] = []
    for ip in ips:
        out.append(Record(name, A if ip.version == 4 else AAAA, str(ip)))
        out.append(Record(reverse_name(ip), PTR, name))
    return out


# -- from the model (typed) ----------------------------------------------------------------
def endpoint_name(ep: Endpoint, zone: str) -> str | None:
    """The DNS name of a WorkloadEndpoint's workload (pod name, else workload name), or None
    when it has none or the name would be invalid."""
    wl = ep.pod or ep.workload
    if not wl or not ep.namespace:
        return None
    name = f"{wl}.{ep.namespace}.{zone}".lower()
    return name if valid_name(name) else None


def endpoint_records(ep: Endpoint, zone: str) -> list[Record]:
    """Records contributed by one WorkloadEndpoint (see module doc)."""
    name = endpoint_name(ep, zone)
    if name is None:
        return []
    out = _addr_records(name, (net.network_address for net in ep.nets))
    for p in ep.ports:
        owner = f"_{p.name}._{protocol_name(p.protocol)}.{name}".lower()
        if valid_name(owner):
            out.append(Record(owner, SRV, (0, 100, p.port, name)))
    return out


def node_address_records(node: Node, node_zone: str) -> list[Record]:
    """Records contributed by one Node: ``<node>.<node_zone>`` A/AAAA + PTR."""
    if not node.name:
        return []
    name = f"{node.name}.{node_zone}".lower()
    if not valid_name(name):
        return []
    return _addr_records(name, (i.ip for i in (node.ip, node.ip6) if i is not None))


def ippool_zone(pool: IPPool) -> str | None:
    """The reverse zone an IPPool makes authoritative (None: the whole reverse tree)."""
    return reverse_zone(pool.cidr)


# -- from stored resource dicts (the server's feed) ------------------------------------------
def _skip(obj: Mapping[str, Any], exc: ModelError) -> None:
    md = obj.get("metadata") if isinstance(obj, Mapping) else None
    name = md.get("name", "?") if isinstance(md, Mapping) else "?"
    log.warning("dns: ignoring invalid %s %r: %s", obj.get("kind") or "resource", name, exc)


def workload_records(obj: Mapping[str, Any], zone: str) -> list[Record]:
    """Records of a stored WorkloadEndpoint, parsed by the model (tolerantly: bad addresses and
    ports are dropped); a malformed resource is logged and contributes nothing."""
    try:
        conv = convert_wep_tolerant(obj)
    except ModelError as exc:
        _skip(obj, exc)
        return []
    for warning in conv.warnings:
        log.warning("dns: WorkloadEndpoint %s: %s; ignored", conv.obj, warning)
    assert isinstance(conv.obj, Endpoint)
    return endpoint_records(conv.obj, zone)


def node_records(obj: Mapping[str, Any], node_zone: str) -> list[Record]:
    """Records of a stored Node (model-parsed); a malformed Node is logged and contributes
    nothing."""
    try:
        node = Node.from_resource(obj)
    except ModelError as exc:
        _skip(obj, exc)
        return []
    return node_address_records(node, node_zone)


def pool_zone(obj: Mapping[str, Any]) -> str | None:
    """The reverse zone of a stored IPPool (model-parsed); a malformed pool is logged and makes
    no zone authoritative."""
    try:
        pool = IPPool.from_resource(obj)
    except ModelError as exc:
        _skip(obj, exc)
        return None
    return ippool_zone(pool)
