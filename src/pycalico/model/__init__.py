"""pycalico.model: the backend model of every stored kind, parsed once with Calico's defaults.

Public API: the value types in :mod:`.types` and :func:`convert` (v3/v1/k8s dict ->
model object). Nothing here depends on ``pycalico.api``.

Import cost: :func:`convert`, :func:`convert_wep_tolerant` and :func:`k8s_to_v3_spec` (with
the selector parser behind them) are imported on first use, so importing a light submodule
such as :mod:`.network` (the CNI plugin's IPAM path) does not pay for the converters.
Invariant: ``pycalico.model.convert`` is always the function, never the submodule of the same
name, exactly as when this package imported it eagerly.
"""

import sys
import types as _types
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from pycalico.model.convert import convert, convert_wep_tolerant
    from pycalico.model.k8s import k8s_to_v3_spec

_LAZY = {
    "convert": "pycalico.model.convert",
    "convert_wep_tolerant": "pycalico.model.convert",
    "k8s_to_v3_spec": "pycalico.model.k8s",
}


class _Package(_types.ModuleType):
    """This package's module type: loading the submodule ``convert`` must not replace the
    function ``convert`` (the import system binds every loaded submodule on its parent)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, _types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name not in _LAZY:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        fn = getattr(importlib.import_module(_LAZY[name]), name)
        super().__setattr__(name, fn)
        return fn


sys.modules[__name__].__class__ = _Package

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
