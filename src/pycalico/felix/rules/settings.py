"""RenderConfig: the Felix settings the rules renderer depends on, validated once (pure).

Owns the values both the workload chains (:mod:`pycalico.felix.rules.endpoints`) and the
host endpoint chains (:mod:`pycalico.felix.rules.hostendpoints`) read: interface prefix,
``defaultEndpointToHostAction``, failsafe ports, VXLAN/IPIP from workloads, anti-spoofing
and the workload DNS addresses; and the failsafe-port normalisation both use.

Invariants: a :class:`RenderConfig` that exists is valid (``__post_init__`` raises
:class:`~pycalico.felix.rules.errors.RenderError` naming the Felix field otherwise); this
module imports no other renderer module but ``errors`` (it is the bottom of the package);
the failsafe-port type and defaults are the model's (:mod:`pycalico.model.felixconfig`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import ip_network

from pycalico.felix.rules.errors import RenderError
from pycalico.model.felixconfig import DEFAULT_FAILSAFE_IN, DEFAULT_FAILSAFE_OUT, FailsafePort

ENDPOINT_TO_HOST_ACTIONS = {"Drop": "drop", "Return": "return", "Accept": "accept"}
_FAILSAFE_PROTOS = ("tcp", "udp", "sctp")


def failsafe_entries(ports: Sequence[FailsafePort], what: str) -> list[tuple[str, int, str]]:
    """Normalised ``(protocol, port, cidr or "")``; raises RenderError naming ``what``."""
    out = []
    for p in ports:
        if len(p) not in (2, 3):
            raise RenderError(f"{what}: {p!r} is not (protocol, port[, net])")
        proto, port = str(p[0]).lower(), p[1]
        net = str(p[2]) if len(p) == 3 and p[2] else ""
        if proto not in _FAILSAFE_PROTOS:
            raise RenderError(f"{what}: protocol must be TCP, UDP or SCTP, not {p[0]!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise RenderError(f"{what}: invalid port {port!r}")
        if net:
            try:
                net = str(ip_network(net, strict=False))
            except ValueError:
                raise RenderError(f"{what}: invalid net {net!r}") from None
        out.append((proto, port, net))
    return out


@dataclass(frozen=True)
class RenderConfig:
    """Felix settings the renderer depends on (see :mod:`pycalico.felix.config`)."""

    interface_prefix: str = "cali"
    endpoint_to_host_action: str = "Drop"
    # (protocol, port) or (protocol, port, CIDR): the CIDR restricts the remote end (source
    # of inbound, destination of outbound), as Calico's ``net`` field of a failsafe port.
    failsafe_inbound: tuple[FailsafePort, ...] = DEFAULT_FAILSAFE_IN
    failsafe_outbound: tuple[FailsafePort, ...] = DEFAULT_FAILSAFE_OUT
    allow_vxlan_from_workloads: bool = False
    allow_ipip_from_workloads: bool = False
    anti_spoofing: bool = True
    # The node-local workload DNS server (pycalico.dns): once egress policy has allowed a
    # query to it, it is accepted whatever defaultEndpointToHostAction says.
    workload_dns_v4: tuple[str, ...] = ("169.254.25.10",)
    # Flow logs (``flowLogsFileEnabled``): rules ending a policy evaluation emit NFLOG with
    # their attribution prefix (pycalico.felix.rules.nflog).
    flow_logs: bool = False
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        failsafe_entries(self.failsafe_inbound, "failsafeInboundHostPorts")
        failsafe_entries(self.failsafe_outbound, "failsafeOutboundHostPorts")
        if self.endpoint_to_host_action not in ENDPOINT_TO_HOST_ACTIONS:
            raise RenderError(
                f"defaultEndpointToHostAction: must be one of "
                f"{', '.join(ENDPOINT_TO_HOST_ACTIONS)}, not {self.endpoint_to_host_action!r}"
            )
