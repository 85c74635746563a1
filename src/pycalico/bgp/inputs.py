"""Typed views of the v3 resource dicts the BGP renderer reads (no pydantic dependency).

Owns: the BGP edge of the backend model (Node, IPPool, BlockAffinity and AS numbers are
parsed by :mod:`pycalico.model.network`, durations by :mod:`pycalico.model.durations`; their
ModelError is re-worded here as BgpInputError), peer addresses (``IP``, ``IP:port``,
``[IPv6]:port``), :class:`GlobalBgp` (BGPConfiguration) and the pluggable secret lookup used
for BGP passwords.

Invariants: pure functions; every malformed field raises :class:`BgpInputError` naming
``<Kind>/<name>: <field path>`` and the reason.

Passwords: ``spec.password`` (BGPPeer) or ``spec.nodeMeshPassword`` (BGPConfiguration) is
either a plain string (pycalico extension), or ``{secretKeyRef: {name, key}}`` resolved by a
:data:`SecretLookup`. :func:`secrets_from_resources` builds a lookup from ``Secret``-like
resources (``data`` base64, or ``stringData`` plain); the annotation
``pycalico.org/bgp-password`` on a BGPPeer carries a literal password and wins over both.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.bgp.errors import BgpInputError
from pycalico.bgp.model import DEFAULT_AS, DEFAULT_PORT
from pycalico.model.durations import parse_duration
from pycalico.model.network import BlockAffinity, IPPool, Node
from pycalico.model.network import parse_as_number as model_as_number
from pycalico.model.routing import BGP_DEFAULT_PCR
from pycalico.model.types import ModelError

Resource = Mapping[str, Any]
SecretLookup = Callable[[str, str], str | None]
"""``lookup(secret_name, key) -> value`` or None when unknown."""

PASSWORD_ANNOTATION = "pycalico.org/bgp-password"


def where(res: Resource) -> str:
    return f"{res.get('kind', '?')}/{res.get('metadata', {}).get('name', '?')}"


def spec_of(res: Resource) -> Mapping[str, Any]:
    spec = res.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise BgpInputError(f"{where(res)}: spec", "must be a mapping")
    return spec


def parse_as_number(value: Any, fld: str) -> int:
    """ASNumber: a 32-bit int, or dotted ``a.b`` (= a*65536+b) (see the model's parser)."""
    try:
        return model_as_number(value, fld)
    except ModelError as e:
        raise BgpInputError(fld, e.reason) from None


def parse_duration_s(value: Any, fld: str) -> int:
    """Go/k8s duration (``90s``, ``1m30s``) or a number of seconds → whole seconds (>= 1)."""
    try:
        secs = parse_duration(value, fld, bare_numbers=False, negative=True)
    except ModelError:
        raise BgpInputError(fld, f"invalid duration {value!r} (want e.g. 120s or 1m30s)") from None
    if secs <= 0 or secs > 65535:
        raise BgpInputError(fld, f"duration {value!r} must be within 1s..65535s")
    return max(1, round(secs))


def parse_peer_ip(value: Any, fld: str) -> tuple[str, int | None]:
    """``IPv4``, ``IPv4:port``, ``IPv6``, ``[IPv6]:port`` → (canonical ip, port or None)."""
    if not isinstance(value, str) or not value:
        raise BgpInputError(fld, f"invalid peer IP {value!r}")
    text, port_s = value, None
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)", value)
    if m:
        text, port_s = m.group(1), m.group(2)
    elif value.count(":") == 1:
        text, port_s = value.split(":")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise BgpInputError(fld, f"invalid peer IP {value!r}") from None
    port = None
    if port_s is not None:
        port = int(port_s)
        if not 0 < port < 65536:
            raise BgpInputError(fld, f"port {port} out of range 1..65535")
    return str(ip), port


def parse_cidr(value: Any, fld: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise BgpInputError(fld, f"invalid CIDR {value!r}") from None


def _edge(e: ModelError) -> BgpInputError:
    """The model's error in this package's words: ``<Kind>/<name>: <field>``."""
    return BgpInputError(f"{e.kind}/{e.name}: {e.field}", e.reason)


def node_info(res: Resource) -> Node:
    """The model's :class:`Node` (BgpInputError on a bad field)."""
    try:
        return Node.from_resource(res)
    except ModelError as e:
        raise _edge(e) from None


def pool_info(res: Resource) -> IPPool:
    """The model's :class:`IPPool` (BgpInputError on a bad field)."""
    try:
        return IPPool.from_resource(res)
    except ModelError as e:
        raise _edge(e) from None


def affinity_info(res: Resource) -> BlockAffinity:
    """The model's :class:`BlockAffinity` (BgpInputError on a bad field)."""
    try:
        return BlockAffinity.from_resource(res)
    except ModelError as e:
        raise _edge(e) from None


@dataclass(frozen=True)
class GlobalBgp:
    """Effective BGPConfiguration for one node (``default`` overlaid by ``node.<name>``)."""

    mesh_enabled: bool = True
    as_number: int = DEFAULT_AS
    listen_port: int = DEFAULT_PORT
    bind_node_ip: bool = False
    log_severity: str = "Info"
    mesh_password: Any = None
    mesh_restart_time: int | None = None
    ignored_interfaces: tuple[str, ...] = ()
    node_ports: Mapping[str, int] = field(default_factory=dict)  # per-node listenPort
    program_cluster_routes: str = BGP_DEFAULT_PCR  # which pools' routes BIRD programs
    mesh_bfd: bool = False  # nodeMeshFailureDetectionMode BFDIfDirectlyConnected (ours)
    service_cidrs: tuple[str, ...] = ()  # serviceClusterIPs + ExternalIPs + LoadBalancerIPs
    communities: tuple[tuple[str, str], ...] = ()  # (cidr, "aa:nn[:mm]") prefixAdvertisements

    def port_of(self, node: str) -> int:
        return self.node_ports.get(node, self.listen_port)


def global_bgp(configs: Iterable[Resource], node_name: str) -> GlobalBgp:
    by_name = {str((c.get("metadata") or {}).get("name", "")): c for c in configs}
    d = spec_of(by_name["default"]) if "default" in by_name else {}
    w = "BGPConfiguration/default"
    mine = by_name.get(f"node.{node_name}")
    m = spec_of(mine) if mine is not None else {}
    node_ports: dict[str, int] = {}
    for name, c in by_name.items():
        port = spec_of(c).get("listenPort")
        if name.startswith("node.") and port not in (None, 0):
            node_ports[name[5:]] = _port(port, f"BGPConfiguration/{name}: spec.listenPort")
    mesh = d.get("nodeToNodeMeshEnabled")
    restart = d.get("nodeMeshMaxRestartTime")
    bind = m.get("bindMode") or d.get("bindMode") or "None"
    if bind not in ("None", "NodeIP"):
        raise BgpInputError(f"{w}: spec.bindMode", f"{bind!r} is not None or NodeIP")
    dport = d.get("listenPort")
    fdm = d.get("nodeMeshFailureDetectionMode") or "None"
    if fdm not in ("None", "BFDIfDirectlyConnected"):
        raise BgpInputError(
            f"{w}: spec.nodeMeshFailureDetectionMode", f"{fdm!r} is not None/BFDIfDirectlyConnected"
        )
    return GlobalBgp(
        mesh_enabled=True if mesh is None else bool(mesh),
        as_number=DEFAULT_AS
        if d.get("asNumber") in (None, "")
        else parse_as_number(d["asNumber"], f"{w}: spec.asNumber"),
        listen_port=DEFAULT_PORT if dport in (None, 0) else _port(dport, f"{w}: spec.listenPort"),
        bind_node_ip=bind == "NodeIP",
        log_severity=str(m.get("logSeverityScreen") or d.get("logSeverityScreen") or "Info"),
        mesh_password=d.get("nodeMeshPassword"),
        mesh_restart_time=None
        if restart in (None, "")
        else parse_duration_s(restart, f"{w}: spec.nodeMeshMaxRestartTime"),
        ignored_interfaces=tuple(str(i) for i in d.get("ignoredInterfaces") or ()),
        node_ports=node_ports,
        program_cluster_routes=str(
            m.get("programClusterRoutes") or d.get("programClusterRoutes") or BGP_DEFAULT_PCR
        ),
        mesh_bfd=fdm == "BFDIfDirectlyConnected",
        service_cidrs=_service_cidrs(d, w),
        communities=_communities(d, w),
    )


_SERVICE_FIELDS = ("serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs")


def _service_cidrs(d: Mapping[str, Any], w: str) -> tuple[str, ...]:
    """Every configured service range, canonical, in field order, without duplicates."""
    out: dict[str, None] = {}
    for fld in _SERVICE_FIELDS:
        for i, item in enumerate(d.get(fld) or ()):
            cidr = item.get("cidr") if isinstance(item, Mapping) else None
            out[str(parse_cidr(cidr, f"{w}: spec.{fld}[{i}].cidr"))] = None
    return tuple(out)


_COMMUNITY = re.compile(r"^(\d+):(\d+)(?::(\d+))?$")


def _communities(d: Mapping[str, Any], w: str) -> tuple[tuple[str, str], ...]:
    """(cidr, literal) per prefixAdvertisements entry; names resolved via ``communities``."""
    named = {}
    for c in d.get("communities") or ():
        if isinstance(c, Mapping):
            named[str(c.get("name", ""))] = str(c.get("value", ""))
    out: list[tuple[str, str]] = []
    for i, pa in enumerate(d.get("prefixAdvertisements") or ()):
        fld = f"{w}: spec.prefixAdvertisements[{i}]"
        if not isinstance(pa, Mapping):
            raise BgpInputError(fld, "must be a mapping")
        cidr = str(parse_cidr(pa.get("cidr"), f"{fld}.cidr"))
        for j, ref in enumerate(pa.get("communities") or ()):
            value = named.get(str(ref), str(ref))
            if not is_community(value):
                raise BgpInputError(
                    f"{fld}.communities[{j}]", f"{ref!r} is not a defined name or aa:nn[:mm]"
                )
            out.append((cidr, value))
    return tuple(out)


def is_community(value: str) -> bool:
    """Whether ``value`` is a standard (``aa:nn``, 16-bit parts) or large (``aa:nn:mm``,
    32-bit parts) community literal."""
    m = _COMMUNITY.match(value)
    limit = 0xFFFF if m and m.group(3) is None else 0xFFFFFFFF
    return m is not None and all(int(g) <= limit for g in m.groups() if g is not None)


def _port(value: Any, fld: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise BgpInputError(fld, f"port {value!r} out of range 1..65535")
    return value


def secrets_from_resources(resources: Iterable[Resource]) -> SecretLookup:
    """A lookup over ``Secret``-like dicts: ``stringData`` (plain) or ``data`` (base64)."""
    table: dict[tuple[str, str], str] = {}
    for res in resources:
        name = str((res.get("metadata") or {}).get("name", ""))
        for key, val in (res.get("data") or {}).items():
            try:
                table[(name, key)] = base64.b64decode(str(val), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise BgpInputError(f"Secret/{name}: data.{key}", "not valid base64") from None
        for key, val in (res.get("stringData") or {}).items():
            table[(name, key)] = str(val)
    return lambda name, key: table.get((name, key))


def resolve_password(
    value: Any, fld: str, lookup: SecretLookup | None, annotation: str | None = None
) -> tuple[str | None, str | None]:
    """→ (password or None, warning or None). A missing secret yields a warning."""
    pw: str | None = None
    if annotation:
        pw = annotation
    elif value in (None, "", {}):
        return None, None
    elif isinstance(value, str):
        pw = value
    elif isinstance(value, Mapping) and isinstance(value.get("secretKeyRef"), Mapping):
        ref = value["secretKeyRef"]
        name, key = str(ref.get("name", "")), str(ref.get("key", ""))
        pw = lookup(name, key) if lookup is not None else None
        if pw is None:
            return None, f"{fld}: secret {name}/{key} not found"
    else:
        raise BgpInputError(fld, "must be a string or {secretKeyRef: {name, key}}")
    if '"' in pw or "\\" in pw or "\n" in pw or not pw:
        raise BgpInputError(
            fld, "password must be non-empty without quotes, backslashes or newlines"
        )
    return pw, None
