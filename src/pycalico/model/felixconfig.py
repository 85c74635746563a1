"""The ONE FelixConfiguration resolver: every Felix setting any consumer uses, resolved once.

Precedence (low -> high): built-in defaults < FelixConfiguration ``default`` <
FelixConfiguration ``node.<name>`` < environment ``FELIX_<UPPERCASENAME>`` (names are
case-insensitive, empty values ignored) < explicit overrides (FelixConfiguration field names).

Error policy: a malformed datastore value is ignored with a warning (the layer below wins) and
the warning is returned in :attr:`FelixConfig.warnings`; a malformed environment variable or
override raises :class:`FelixConfigError` naming the variable and its source. Unknown fields
are ignored (other components read them).

Consumers read :class:`FelixConfig` itself: Felix resolves it once and derives the rules
renderer's settings (``pycalico.felix.config``) and hands it to the route calc node;
calico-node reads its own fields through ``pycalico.node.felixcfg``. Invariant: pure; no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pycalico.model.booleans import parse_bool
from pycalico.model.durations import parse_duration
from pycalico.model.types import ModelError

FailsafePort = tuple[str, int] | tuple[str, int, str]
DEFAULT_FAILSAFE_IN: tuple[tuple[str, int], ...] = (
    ("tcp", 22), ("udp", 68), ("tcp", 179), ("tcp", 2379), ("tcp", 2380),
    ("tcp", 5473), ("tcp", 6443), ("tcp", 6666), ("tcp", 6667),
)  # fmt: skip
DEFAULT_FAILSAFE_OUT: tuple[tuple[str, int], ...] = (
    ("udp", 53), ("udp", 67), ("tcp", 179), ("tcp", 2379), ("tcp", 2380),
    ("tcp", 5473), ("tcp", 6443), ("tcp", 6666), ("tcp", 6667),
)  # fmt: skip
ENDPOINT_TO_HOST_ACTIONS = ("Drop", "Return", "Accept")
PROGRAM_CLUSTER_ROUTES = ("Enabled", "Disabled", "EnabledIPIPOnly", "EnabledNoEncapOnly")
FELIX_DEFAULT_PROGRAM_CLUSTER_ROUTES = "EnabledIPIPOnly"
DEFAULT_VXLAN_VNI = 4096
DEFAULT_VXLAN_PORT = 4789
DEFAULT_MTU_IFACE_PATTERN = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"
DEFAULT_ROUTE_REFRESH_S = 90.0


class FelixConfigError(ModelError):
    """A FELIX_* environment variable or an override has a malformed value (names it)."""


@dataclass(frozen=True)
class FelixConfig:
    """Every resolved Felix setting (attribute = FelixConfiguration field in snake case)."""

    # policy dataplane
    nftables_refresh_interval: float = 180.0
    default_endpoint_to_host_action: str = "Drop"
    interface_prefix: str = "cali"
    ipv6_support: bool = True
    failsafe_inbound: tuple[FailsafePort, ...] = DEFAULT_FAILSAFE_IN
    failsafe_outbound: tuple[FailsafePort, ...] = DEFAULT_FAILSAFE_OUT
    allow_vxlan_from_workloads: bool = False
    allow_ipip_from_workloads: bool = False
    # routing, tunnels, NAT-outgoing, MTU
    vxlan_vni: int = DEFAULT_VXLAN_VNI
    vxlan_port: int = DEFAULT_VXLAN_PORT
    vxlan_enabled: bool | None = None  # None: derived from the pools
    ipip_enabled: bool | None = None
    vxlan_mtu: int = 0  # 0 = auto
    vxlan_mtu_v6: int = 0
    ipip_mtu: int = 0
    mtu_iface_pattern: str = DEFAULT_MTU_IFACE_PATTERN
    route_refresh_interval: float = DEFAULT_ROUTE_REFRESH_S
    program_cluster_routes: str = FELIX_DEFAULT_PROGRAM_CLUSTER_ROUTES
    nat_outgoing_address: str | None = None
    nat_outgoing_exclusions: str = "IPPoolsOnly"
    # calico-node (health, metrics, reporting, logging); healthEnabled defaults on as the
    # calico-node manifests always set FELIX_HEALTHENABLED=true.
    health_enabled: bool = True
    health_host: str = "localhost"
    health_port: int = 9099
    prometheus_metrics_enabled: bool = False
    prometheus_metrics_host: str = ""
    prometheus_metrics_port: int = 9091
    reporting_interval: float = 30.0
    log_severity_screen: str = "Info"
    # flow logs (docs/flowlogs.md): Calico's names where Calico has them
    flow_logs_file_enabled: bool = False
    flow_logs_flush_interval: float = 15.0
    flow_logs_file_directory: str = "/var/log/calico/flowlogs"
    flow_logs_file_max_file_size_mb: int = 100
    flow_logs_retention: float = 86400.0
    flow_logs_api_port: int = 9098
    flow_logs_max_flows: int = 10000
    # the flow API's bind address and credentials (docs/flowlogs.md "Access")
    flow_logs_api_host: str = "127.0.0.1"
    flow_logs_api_token_file: str = ""  # "": <flowLogsFileDirectory>/api.token
    flow_logs_api_cert_file: str = ""
    flow_logs_api_key_file: str = ""
    flow_logs_api_ca_file: str = ""
    # where each set field came from: "global", "node", "env", "override"
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def nat_exclude_host_ips(self) -> bool:
        return self.nat_outgoing_exclusions == "IPPoolsAndHostIPs"


def _bool(value: Any) -> bool:
    return parse_bool(value, "")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None


def _positive_int(value: Any) -> int:
    n = _int(value)
    if n <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return n


def _port_or_zero(value: Any) -> int:
    n = _int(value)
    if not 0 <= n <= 65535:
        raise ValueError(f"must be a port 0..65535 (0: off), got {value!r}")
    return n


def _duration(value: Any) -> float:
    return parse_duration(value)


def _positive_duration(value: Any) -> float:
    secs = parse_duration(value, negative=True)
    if secs <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return secs


def _ports(value: Any) -> tuple[FailsafePort, ...]:
    items: list[FailsafePort] = []
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
        if value == ["none"]:
            return ()
    for v in value or ():
        net = ""
        if isinstance(v, Mapping):
            proto, port = str(v.get("protocol") or "tcp"), v.get("port")
            net = str(v.get("net") or "")
        else:
            proto, _, port = str(v).strip().rpartition(":")
            proto = proto or "tcp"
        try:
            n = int(port)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"invalid port in {v!r}") from None
        if proto.lower() not in ("tcp", "udp", "sctp") or not 0 <= n <= 65535:
            raise ValueError(f"invalid protocol/port {v!r}")
        items.append((proto.lower(), n, net) if net else (proto.lower(), n))
    return tuple(items)


def _action(value: Any) -> str:
    text = str(value).strip().capitalize()
    if text not in ENDPOINT_TO_HOST_ACTIONS:
        raise ValueError(f"must be one of Drop, Return, Accept, not {value!r}")
    return text


def _host(value: Any) -> str:
    """A bind address: an IP address, ``localhost`` or a host name (no port, no spaces)."""
    text = str(value).strip()
    if not re.fullmatch(r"[A-Za-z0-9:._-]{1,253}", text):
        raise ValueError(f"must be an IP address or host name, got {value!r}")
    return text


def _pattern(value: Any) -> str:
    try:
        re.compile(str(value))
    except re.error as e:
        raise ValueError(f"invalid regular expression: {e}") from None
    return str(value)


def _ipv4_or_none(value: Any) -> str | None:
    if value in (None, ""):
        return None
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise ValueError(f"not an IPv4 address: {value!r}") from None


def _one_of(*choices: str) -> Callable[[Any], str]:
    def conv(value: Any) -> str:
        if str(value) not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return conv


# FelixConfiguration field -> (FelixConfig attribute, converter raising ValueError)
FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "nftablesRefreshInterval": ("nftables_refresh_interval", _duration),
    "defaultEndpointToHostAction": ("default_endpoint_to_host_action", _action),
    "interfacePrefix": ("interface_prefix", str),
    "ipv6Support": ("ipv6_support", _bool),
    "failsafeInboundHostPorts": ("failsafe_inbound", _ports),
    "failsafeOutboundHostPorts": ("failsafe_outbound", _ports),
    "allowVXLANPacketsFromWorkloads": ("allow_vxlan_from_workloads", _bool),
    "allowIPIPPacketsFromWorkloads": ("allow_ipip_from_workloads", _bool),
    "vxlanVNI": ("vxlan_vni", _int),
    "vxlanPort": ("vxlan_port", _int),
    "vxlanEnabled": ("vxlan_enabled", _bool),
    "ipipEnabled": ("ipip_enabled", _bool),
    "vxlanMTU": ("vxlan_mtu", _int),
    "vxlanMTUV6": ("vxlan_mtu_v6", _int),
    "ipipMTU": ("ipip_mtu", _int),
    "mtuIfacePattern": ("mtu_iface_pattern", _pattern),
    "routeRefreshInterval": ("route_refresh_interval", _positive_duration),
    "programClusterRoutes": ("program_cluster_routes", _one_of(*PROGRAM_CLUSTER_ROUTES)),
    "natOutgoingAddress": ("nat_outgoing_address", _ipv4_or_none),
    "natOutgoingExclusions": (
        "nat_outgoing_exclusions",
        _one_of("IPPoolsOnly", "IPPoolsAndHostIPs"),
    ),
    "healthEnabled": ("health_enabled", _bool),
    "healthHost": ("health_host", str),
    "healthPort": ("health_port", _int),
    "prometheusMetricsEnabled": ("prometheus_metrics_enabled", _bool),
    "prometheusMetricsHost": ("prometheus_metrics_host", str),
    "prometheusMetricsPort": ("prometheus_metrics_port", _int),
    "reportingInterval": ("reporting_interval", _duration),
    "logSeverityScreen": ("log_severity_screen", str),
    "flowLogsFileEnabled": ("flow_logs_file_enabled", _bool),
    "flowLogsFlushInterval": ("flow_logs_flush_interval", _positive_duration),
    "flowLogsFileDirectory": ("flow_logs_file_directory", str),
    "flowLogsFileMaxFileSizeMB": ("flow_logs_file_max_file_size_mb", _positive_int),
    "flowLogsRetention": ("flow_logs_retention", _positive_duration),
    "flowLogsAPIPort": ("flow_logs_api_port", _port_or_zero),
    "flowLogsMaxFlows": ("flow_logs_max_flows", _positive_int),
    "flowLogsAPIHost": ("flow_logs_api_host", _host),
    "flowLogsAPITokenFile": ("flow_logs_api_token_file", str),
    "flowLogsAPICertFile": ("flow_logs_api_cert_file", str),
    "flowLogsAPIKeyFile": ("flow_logs_api_key_file", str),
    "flowLogsAPICAFile": ("flow_logs_api_ca_file", str),
}
ATTRS = {attr: name for name, (attr, _c) in FIELDS.items()}


def env_var(name: str) -> str:
    """``FELIX_<UPPERCASENAME>`` of FelixConfiguration field ``name``."""
    return "FELIX_" + name.upper()


def specs_by_name(resources: Any) -> dict[str, Mapping[str, Any]]:
    """FelixConfiguration specs by resource name, from a list of resources or a mapping of
    name -> resource."""
    if isinstance(resources, Mapping):  # name -> resource
        return {str(k): (v.get("spec") or {}) for k, v in resources.items() if v}
    out: dict[str, Mapping[str, Any]] = {}
    for r in resources:
        out[str((r.get("metadata") or {}).get("name", ""))] = r.get("spec") or {}
    return out


def resolve(
    node_name: str,
    specs: Mapping[str, Mapping[str, Any]],
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> FelixConfig:
    """The settings of ``node_name``; ``specs``: FelixConfiguration specs by name (see
    :func:`specs_by_name`). FelixConfigError for a bad env var or override."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    warnings: list[str] = []
    for layer, name in (("global", "default"), ("node", f"node.{node_name}")):
        spec = specs.get(name) or {}
        for fname, (attr, conv) in FIELDS.items():
            raw = spec.get(fname)
            if raw is None:
                continue
            try:
                values[attr], sources[attr] = conv(raw), layer
            except ValueError as e:
                warnings.append(f"FelixConfiguration {name}: {fname}: {e}; ignored")
    env_upper = {k.upper(): v for k, v in (env or {}).items() if k.upper().startswith("FELIX_")}
    for fname, (attr, conv) in FIELDS.items():
        raw = env_upper.get(env_var(fname))
        if raw is None or str(raw).strip() == "":
            continue
        try:
            values[attr], sources[attr] = conv(raw), "env"
        except ValueError as e:
            var = env_var(fname)
            raise FelixConfigError(f"environment: {fname} ({var}): {e}", field=var) from None
    for fname, raw in (overrides or {}).items():
        if fname not in FIELDS or raw is None:
            continue
        attr, conv = FIELDS[fname]
        try:
            values[attr], sources[attr] = conv(raw), "override"
        except ValueError as e:
            raise FelixConfigError(f"override: {fname}: {e}", field=fname) from None
    return replace(FelixConfig(), **values, sources=sources, warnings=tuple(warnings))
