"""pycalico.felix.model: the calc-internal typed policy model and its v3-dict conversion.

Public API: the value types in :mod:`.types` and :func:`convert` (v3/v1/k8s dict ->
model object). Nothing here depends on ``pycalico.api``.
"""

from pycalico.felix.model.convert import convert, k8s_to_v3_spec
from pycalico.felix.model.types import (
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
    "implied_tier",
    "k8s_to_v3_spec",
    "protocol_name",
    "protocol_number",
]
