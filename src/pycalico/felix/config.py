"""Felix configuration resolution: built-in defaults < FelixConfiguration ``default`` <
FelixConfiguration ``node.<name>`` < environment ``FELIX_<NAME>`` < explicit overrides.

Owns :class:`FelixSettings` (the settings the policy dataplane uses) and
:func:`resolve_settings`. Invariant: a bad value raises :class:`FelixConfigError` naming the
field and the source; unknown fields are ignored (other components read them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pycalico.api.kinds_felix import DEFAULT_FAILSAFE_IN, DEFAULT_FAILSAFE_OUT
from pycalico.errors import CalicoError
from pycalico.felix.rules.settings import ENDPOINT_TO_HOST_ACTIONS, FailsafePort, RenderConfig


class FelixConfigError(CalicoError, ValueError):
    """An invalid Felix setting (names the field and where it came from)."""


@dataclass(frozen=True)
class FelixSettings:
    nftables_refresh_interval: float = 180.0
    default_endpoint_to_host_action: str = "Drop"
    interface_prefix: str = "cali"
    ipv6_support: bool = True
    failsafe_inbound: tuple[FailsafePort, ...] = DEFAULT_FAILSAFE_IN
    failsafe_outbound: tuple[FailsafePort, ...] = DEFAULT_FAILSAFE_OUT
    allow_vxlan_from_workloads: bool = False
    allow_ipip_from_workloads: bool = False

    def render_config(self) -> RenderConfig:
        return RenderConfig(
            interface_prefix=self.interface_prefix,
            endpoint_to_host_action=self.default_endpoint_to_host_action,
            failsafe_inbound=self.failsafe_inbound,
            failsafe_outbound=self.failsafe_outbound,
            allow_vxlan_from_workloads=self.allow_vxlan_from_workloads,
            allow_ipip_from_workloads=self.allow_ipip_from_workloads,
        )

    def families(self) -> tuple[str, ...]:
        return ("ip", "ip6") if self.ipv6_support else ("ip",)


_DUR = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any, what: str) -> float:
    """Go-style duration (``90s``, ``1m30s``, ``500ms``) or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise FelixConfigError(f"{what}: must not be negative")
        return float(value)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        return parse_duration(number, what)
    pos, total = 0, 0.0
    for m in _DUR.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise FelixConfigError(f"{what}: invalid duration {value!r}")
    return total


def _bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise FelixConfigError(f"{what}: invalid boolean {value!r}")


def _ports(value: Any, what: str) -> tuple[FailsafePort, ...]:
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
            raise FelixConfigError(f"{what}: invalid port in {v!r}") from None
        if proto.lower() not in ("tcp", "udp", "sctp") or not 0 <= n <= 65535:
            raise FelixConfigError(f"{what}: invalid protocol/port {v!r}")
        items.append((proto.lower(), n, net) if net else (proto.lower(), n))
    return tuple(items)


def _action(value: Any, what: str) -> str:
    text = str(value).strip().capitalize()
    if text not in ENDPOINT_TO_HOST_ACTIONS:
        raise FelixConfigError(f"{what}: must be one of Drop, Return, Accept, not {value!r}")
    return text


# FelixConfiguration field -> (settings attribute, converter)
_FIELDS: dict[str, tuple[str, Any]] = {
    "nftablesRefreshInterval": ("nftables_refresh_interval", parse_duration),
    "defaultEndpointToHostAction": ("default_endpoint_to_host_action", _action),
    "interfacePrefix": ("interface_prefix", lambda v, w: str(v)),
    "ipv6Support": ("ipv6_support", _bool),
    "failsafeInboundHostPorts": ("failsafe_inbound", _ports),
    "failsafeOutboundHostPorts": ("failsafe_outbound", _ports),
    "allowVXLANPacketsFromWorkloads": ("allow_vxlan_from_workloads", _bool),
    "allowIPIPPacketsFromWorkloads": ("allow_ipip_from_workloads", _bool),
}


def _apply(settings: FelixSettings, values: Mapping[str, Any], source: str) -> FelixSettings:
    changes: dict[str, Any] = {}
    for field, (attr, conv) in _FIELDS.items():
        if values.get(field) is not None:
            changes[attr] = conv(values[field], f"{source}: {field}")
    return replace(settings, **changes) if changes else settings


def resolve_settings(
    node_name: str,
    felix_configs: Mapping[str, Mapping[str, Any]],
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> FelixSettings:
    """Settings for ``node_name`` from FelixConfiguration specs by name, env and overrides
    (``overrides`` use FelixConfiguration field names)."""
    s = FelixSettings()
    for name in ("default", f"node.{node_name}"):
        spec = felix_configs.get(name)
        if spec:
            s = _apply(s, spec, f"FelixConfiguration {name}")
    if env:
        by_env = {f"FELIX_{f.upper()}": f for f in _FIELDS}
        s = _apply(s, {by_env[k]: v for k, v in env.items() if k in by_env}, "environment")
    if overrides:
        s = _apply(s, overrides, "override")
    return s
