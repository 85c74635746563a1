"""QoS packet-rate limits of workload endpoints in the ``calico`` table (pure).

Calico puts ``limit rate over <rate>/second burst <burst> packets drop`` at the top of a
workload's endpoint chains, before the conntrack rules, so that every packet to
(``qosControls.ingressPacketRate``) or from (``egressPacketRate``) the workload counts.
pycalico's filter base chains accept established traffic before any endpoint chain, so the
limits live in their own base chains instead, one priority earlier (``filter - 1``), and
only while some local workload has a packet rate:

  qos-FORWARD (forward, -1): oifname vmap @cali-qtw-dispatch   (ingress limit of the dest.)
                             iifname vmap @cali-qfw-dispatch   (egress limit of the source)
  qos-INPUT   (input, -1):   iifname vmap @cali-qfw-dispatch   (workload -> host counts too)
  cali-qtw-<iface> / cali-qfw-<iface>: the one limit rule (one token bucket per direction,
                             shared by the forward and input paths, as Calico's one rule)

The maps ``jump`` (never ``goto``: a chain reached by goto from a base chain would end in
the base chain's accept policy); a packet under the limit returns and goes on to the
filter chains. Host-to-workload traffic (output) is not limited, as in Calico.
"""

from __future__ import annotations

from collections.abc import Iterable

from pycalico.felix.calc.messages import EndpointUpdate
from pycalico.felix.rules import names as N
from pycalico.felix.rules.model import Chain, Hook, NftSet, make_chain

TO_CHAIN = "cali-qtw-"
FROM_CHAIN = "cali-qfw-"
TO_MAP = "cali-qtw-dispatch"
FROM_MAP = "cali-qfw-dispatch"
BASE_FORWARD = "qos-FORWARD"
BASE_INPUT = "qos-INPUT"
PRIORITY = -1


def is_qos_chain(name: str) -> bool:
    return name.startswith((TO_CHAIN, FROM_CHAIN)) or name in (BASE_FORWARD, BASE_INPUT)


def limit_rule(rate: int, burst: int) -> str:
    return f"limit rate over {rate}/second burst {burst} packets drop"


def packet_rate_objects(
    endpoints: Iterable[EndpointUpdate],
) -> tuple[dict[str, Chain], dict[str, NftSet]]:
    """The chains and maps for the workloads' packet rates. The two maps always exist (empty
    when no workload has a packet rate): a delta deletes map elements before the chains they
    name, but whole maps only after chains, so a map that comes and goes could not be
    deleted together with its chains in one transaction."""
    chains: dict[str, Chain] = {}
    to_map: dict[str, str] = {}
    from_map: dict[str, str] = {}
    for ep in endpoints:
        qos, iface = ep.endpoint.qos, ep.endpoint.interface_name
        if qos is None or ep.endpoint.is_host or not iface or iface == "*":
            continue
        for rate, burst, prefix, targets in (
            (qos.ingressPacketRate, qos.ingressPacketBurst, TO_CHAIN, to_map),
            (qos.egressPacketRate, qos.egressPacketBurst, FROM_CHAIN, from_map),
        ):
            if rate and iface not in targets:
                name = N.endpoint_chain(prefix, iface)
                chains[name] = make_chain(name, [limit_rule(rate, burst)])
                targets[iface] = name
    sets = {
        m: NftSet(
            m, "ifname", frozenset(f'"{i}" : jump {c}' for i, c in t.items()), map_to="verdict"
        )
        for m, t in ((TO_MAP, to_map), (FROM_MAP, from_map))
    }
    if not chains:
        return {}, sets
    chains[BASE_FORWARD] = make_chain(
        BASE_FORWARD,
        [f"oifname vmap @{TO_MAP}", f"iifname vmap @{FROM_MAP}"],
        Hook("forward", PRIORITY),
    )
    chains[BASE_INPUT] = make_chain(
        BASE_INPUT, [f"iifname vmap @{FROM_MAP}"], Hook("input", PRIORITY)
    )
    return chains, sets
