"""Shared field types of the v3 API: ports, protocols, CIDRs/IPs, selectors, endpoint ports.

Owns Calico's ``numorstring`` semantics (``api/pkg/lib/numorstring``):
- :data:`Port` accepts an int, a ``"min:max"`` range string or a named port; numeric forms are
  normalised (``"80"`` -> ``80``, ``"80:80"`` -> ``80``) and range-checked (1..65535,
  min <= max); :class:`PortRange` is the parsed value consumers use.
- :data:`Protocol` accepts ``TCP UDP ICMP ICMPv6 SCTP UDPLite`` or 1..255 (``"6"`` -> ``6``).
- :data:`CIDR` accepts a CIDR or a bare IP (kept as written); :func:`parse_cidr` returns the
  ``ipaddress`` network (host bits masked off, a bare IP becomes /32 or /128).
- :func:`selector_problem` says why a selector is unacceptable (parse error, or ``global()``
  where it is not allowed); ``None`` means acceptable.
Every validator raises ``ValueError`` with a reason; pydantic turns it into a path-named problem.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, StrictInt, StrictStr

from pycalico.api.base import Model, Problems

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MIN_PORT = 1
MAX_PORT = 65535
NAMED_PORT = re.compile(r"^[a-zA-Z0-9_.\-]{1,128}$")

# --- ports ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortRange:
    """A parsed port: a numeric range (``min_port..max_port``) or a named port (``name``)."""

    min_port: int = 0
    max_port: int = 0
    name: str = ""

    @property
    def is_named(self) -> bool:
        return bool(self.name)

    def to_json(self) -> int | str:
        if self.name:
            return self.name
        if self.min_port == self.max_port:
            return self.min_port
        return f"{self.min_port}:{self.max_port}"

    def __str__(self) -> str:
        return str(self.to_json())


def _port_number(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"invalid port {text!r}")
    n = int(text)
    if not MIN_PORT <= n <= MAX_PORT:
        raise ValueError(
            f"port range invalid, port number must be between {MIN_PORT} and {MAX_PORT}"
        )
    return n


def parse_port(value: int | str) -> PortRange:
    """Parse a Calico port value; raise ValueError with Calico's reason when invalid."""
    if isinstance(value, bool):
        raise ValueError("port must be an integer or a string")
    if isinstance(value, int):
        if not MIN_PORT <= value <= MAX_PORT:
            raise ValueError(
                f"port range invalid, port number must be between {MIN_PORT} and {MAX_PORT}"
            )
        return PortRange(value, value)
    text = value
    if re.fullmatch(r"\d+", text):
        n = _port_number(text)
        return PortRange(n, n)
    if re.fullmatch(r"\d+:\d+", text):
        lo_s, hi_s = text.split(":")
        lo, hi = _port_number(lo_s), _port_number(hi_s)
        if lo > hi:
            raise ValueError(f"invalid port range {text!r}: minimum port is greater than maximum")
        return PortRange(lo, hi)
    if ":" not in text and NAMED_PORT.match(text) and not text.isdigit():
        return PortRange(name=text)
    raise ValueError(f"invalid port {text!r}: must be 1-65535, 'min:max' or a port name")


def _validate_port(value: Any) -> int | str:
    return parse_port(value).to_json()


Port = Annotated[StrictInt | StrictStr, AfterValidator(_validate_port)]

# --- protocols ------------------------------------------------------------------------------

PROTOCOL_NAMES: dict[str, int] = {
    "TCP": 6,
    "UDP": 17,
    "ICMP": 1,
    "ICMPv6": 58,
    "SCTP": 132,
    "UDPLite": 136,
}
_PORT_PROTOCOLS = {6, 17, 132}


def _validate_protocol(value: Any) -> int | str:
    if isinstance(value, bool):
        raise ValueError("protocol must be a name or a number")
    if isinstance(value, str) and re.fullmatch(r"\d+", value):
        value = int(value)
    if isinstance(value, int):
        if not 1 <= value <= 255:
            raise ValueError(f"invalid protocol {value}: number must be between 1 and 255")
        return value
    if value in PROTOCOL_NAMES:
        return str(value)
    raise ValueError(
        f"invalid protocol {value!r}: must be one of {', '.join(PROTOCOL_NAMES)} or 1-255"
    )


Protocol = Annotated[StrictInt | StrictStr, AfterValidator(_validate_protocol)]


def protocol_number(protocol: int | str) -> int:
    """The IANA number of a validated protocol value."""
    if isinstance(protocol, int):
        return protocol
    return PROTOCOL_NAMES[protocol]


def protocol_supports_ports(protocol: int | str) -> bool:
    """Calico's ``Protocol.SupportsPorts``: TCP, UDP and SCTP (by name or number)."""
    return protocol_number(protocol) in _PORT_PROTOCOLS


# --- addresses ------------------------------------------------------------------------------


def parse_cidr(text: str) -> IPNetwork:
    """Parse a CIDR or bare IP (Calico ``ParseCIDROrIP``); host bits are masked off."""
    try:
        if "/" in text:
            return ipaddress.ip_network(text, strict=False)
        return ipaddress.ip_network(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"invalid CIDR {text!r}") from None


def parse_ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"invalid IP address {text!r}") from None


def _validate_cidr(value: str) -> str:
    parse_cidr(value)
    return value


def _validate_ip(value: str) -> str:
    parse_ip(value)
    return value


def _validate_strict_cidr(value: str) -> str:
    """A CIDR that must carry an explicit mask (``10.0.0.0/8``)."""
    if "/" not in value:
        raise ValueError(f"invalid CIDR {value!r}: missing prefix length")
    parse_cidr(value)
    return value


CIDR = Annotated[StrictStr, AfterValidator(_validate_cidr)]
"""A CIDR or a bare IP address, kept as written."""
CIDRWithMask = Annotated[StrictStr, AfterValidator(_validate_strict_cidr)]
IPAddr = Annotated[StrictStr, AfterValidator(_validate_ip)]

# --- selectors ------------------------------------------------------------------------------


def selector_problem(text: str, *, allow_global: bool = False) -> str | None:
    """Why ``text`` is not an acceptable selector here, or None."""
    from pycalico.selector import SelectorError, parse

    try:
        sel = parse(text)
    except SelectorError as e:
        return f"invalid selector {text!r}: {e}"
    except ValueError as e:  # defensive: any parse failure is a validation problem
        return f"invalid selector {text!r}: {e}"
    if not allow_global and sel.uses_global():
        return "global() can only be used in an EntityRule namespaceSelector"
    return None


def check_selector(
    value: str | None, path: str, problems: Problems, *, allow_global: bool = False
) -> None:
    if value is None:
        return
    why = selector_problem(value, allow_global=allow_global)
    if why:
        problems.add(path, why)


# --- misc shared shapes ---------------------------------------------------------------------

IPVersion = Literal[4, 6]


_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def port_name_problem(name: str) -> str | None:
    """Kubernetes ``IsValidPortName`` (IANA service name): why ``name`` is invalid, or None."""
    if not name:
        return "port name must not be empty"
    if len(name) > 15:
        return f"invalid port name {name!r}: must be no more than 15 characters"
    if not _IANA_SVC_NAME.match(name) or "--" in name:
        return (
            f"invalid port name {name!r}: lower case alphanumerics and '-', starting and "
            "ending with an alphanumeric, no '--'"
        )
    if not re.search(r"[a-z]", name):
        return f"invalid port name {name!r}: must contain at least one letter"
    return None


class EndpointPort(Model):
    """A named port on a HostEndpoint (``api.EndpointPort``: ``{name, protocol, port}``)."""

    name: str
    protocol: Protocol
    port: StrictInt

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if not protocol_supports_ports(self.protocol):
            problems.add(f"{path}.protocol", "EndpointPort protocol does not support ports.")
        if not MIN_PORT <= self.port <= MAX_PORT:
            problems.add(f"{path}.port", "port number must be between 1 and 65535")
        why = port_name_problem(self.name)
        if why:
            problems.add(f"{path}.name", why)


class WorkloadEndpointPort(Model):
    """A port of a WorkloadEndpoint: named port and/or host port mapping."""

    name: str = ""
    protocol: Protocol
    port: StrictInt
    hostPort: StrictInt | None = None
    hostIP: str | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if not protocol_supports_ports(self.protocol):
            problems.add(
                f"{path}.protocol", "WorkloadEndpointPort protocol does not support ports."
            )
        if not MIN_PORT <= self.port <= MAX_PORT:
            problems.add(f"{path}.port", "port number must be between 1 and 65535")
        if self.name:
            why = port_name_problem(self.name)
            if why:
                problems.add(f"{path}.name", why)
        elif not self.hostPort:
            problems.add(
                f"{path}.name",
                "WorkloadEndpointPort name must not be empty if no HostPort is specified",
            )
        if self.hostPort is not None and not 0 <= self.hostPort <= MAX_PORT:
            problems.add(f"{path}.hostPort", "hostPort must be between 0 and 65535")
        if self.hostIP:
            try:
                parse_ip(self.hostIP)
            except ValueError as e:
                problems.add(f"{path}.hostIP", str(e))
