"""The ONE rule deciding which pools' cluster routes Felix programs and which BIRD programs.

Calico v3.33 (reference calico-behaviour.md, "Route ownership"): VXLAN pools are always
Felix's. Otherwise each component's ``programClusterRoutes`` names the non-VXLAN pool types it
programs: ``Enabled`` = IPIP and no-encap, ``EnabledIPIPOnly`` = IPIP, ``EnabledNoEncapOnly``
= no-encap, ``Disabled`` = none. FelixConfiguration defaults to ``EnabledIPIPOnly``,
BGPConfiguration to ``EnabledNoEncapOnly``. If both claim a pool type Felix wins; if neither
does the owner is None (nobody programs it; callers report it).

Felix's route calculation and the BIRD renderer both call :func:`cluster_route_owner`.
Invariant: pure; an unset/unknown value means the component's default.
"""

from __future__ import annotations

from typing import Literal

from pycalico.model.felixconfig import FELIX_DEFAULT_PROGRAM_CLUSTER_ROUTES
from pycalico.model.network import IPPool

FELIX_DEFAULT_PCR = FELIX_DEFAULT_PROGRAM_CLUSTER_ROUTES  # "EnabledIPIPOnly"
BGP_DEFAULT_PCR = "EnabledNoEncapOnly"
Owner = Literal["felix", "bird"]

_CLAIMS: dict[str, frozenset[str]] = {
    "Enabled": frozenset({"ipip", "none"}),
    "EnabledIPIPOnly": frozenset({"ipip"}),
    "EnabledNoEncapOnly": frozenset({"none"}),
    "Disabled": frozenset(),
}


def claims(pcr: str | None, default: str) -> frozenset[str]:
    """The non-VXLAN pool encapsulations a ``programClusterRoutes`` value claims."""
    return _CLAIMS.get(pcr or default, _CLAIMS[default])


def cluster_route_owner(pool: IPPool, felix_pcr: str | None, bgp_pcr: str | None) -> Owner | None:
    """Who programs the cluster routes of ``pool`` (see the module docstring)."""
    if pool.encap == "vxlan":
        return "felix"
    if pool.encap in claims(felix_pcr, FELIX_DEFAULT_PCR):
        return "felix"
    if pool.encap in claims(bgp_pcr, BGP_DEFAULT_PCR):
        return "bird"
    return None
