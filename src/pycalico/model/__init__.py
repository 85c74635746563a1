"""pycalico.model: the backend model of every stored kind, parsed once with Calico's defaults.

Public API: the value types in :mod:`.types` and :func:`convert` (v3/v1/k8s dict ->
model object). Nothing here depends on ``pycalico.api``.
"""

from pycalico.model.convert import convert, convert_wep_tolerant
from pycalico.model.k8s import k8s_to_v3_spec
from pycalico.model.types import (
    Converted,
    Endpoint,
    EntityMatch,
    ItemID,
    ModelError,
    ModelObject,
    NamedPort,
    Namespace,
    NetworkSet,
    Policy,
    PolicyID,
    PortRange,
    Profile,
    Rule,
    ServiceAccount,
    Tier,
    implied_tier,
    protocol_name,
    protocol_number,
)

__all__ = [
    "Converted",
    "Endpoint",
    "EntityMatch",
    "ItemID",
    "ModelError",
    "ModelObject",
    "NamedPort",
    "Namespace",
    "NetworkSet",
    "Policy",
    "PolicyID",
    "PortRange",
    "Profile",
    "Rule",
    "ServiceAccount",
    "Tier",
    "convert",
    "convert_wep_tolerant",
    "implied_tier",
    "k8s_to_v3_spec",
    "protocol_name",
    "protocol_number",
]
