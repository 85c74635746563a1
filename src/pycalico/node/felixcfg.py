"""Effective Felix settings for calico-node, with Calico's precedence.

Owns: merging the settings calico-node itself uses from (low → high) built-in defaults,
FelixConfiguration ``default`` (global), FelixConfiguration ``node.<name>`` (per host) and
``FELIX_<UPPERCASENAME>`` environment variables, and parsing each value to its type.

Invariants: pure (inputs are plain dicts); a malformed value from the datastore is ignored
with a warning recorded in :attr:`NodeFelixConfig.warnings` (the next layer down wins) while a
malformed environment value raises :class:`FelixConfigError` naming the variable — a typo in
the operator's own env must not be silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.errors import CalicoError
from pycalico.model.durations import parse_duration

# field name -> (type, default). Calico's defaults except healthEnabled: calico-node
# manifests always set FELIX_HEALTHENABLED=true, so the node agent defaults to it.
SETTINGS: dict[str, tuple[str, Any]] = {
    "healthEnabled": ("bool", True),
    "healthHost": ("str", "localhost"),
    "healthPort": ("int", 9099),
    "prometheusMetricsEnabled": ("bool", False),
    "prometheusMetricsHost": ("str", ""),
    "prometheusMetricsPort": ("int", 9091),
    "ipipMTU": ("int", 0),
    "vxlanMTU": ("int", 0),
    "mtuIfacePattern": ("str", r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"),
    "reportingInterval": ("duration", 30.0),
    "logSeverityScreen": ("str", "Info"),
}


class FelixConfigError(CalicoError, ValueError):
    """A FELIX_* environment variable has a malformed value."""


def _parse(typ: str, value: Any) -> Any:
    if typ == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "y", "t"):
            return True
        if text in ("false", "0", "no", "n", "f"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if typ == "int":
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        return int(str(value).strip())
    if typ == "duration":
        return parse_duration(value)  # ModelError is a ValueError
    return str(value)


@dataclass(frozen=True)
class NodeFelixConfig:
    values: dict[str, Any]
    source: dict[str, str]
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def env_var(name: str) -> str:
    return "FELIX_" + name.upper()


def effective(
    env: Mapping[str, str],
    global_spec: Mapping[str, Any] | None = None,
    node_spec: Mapping[str, Any] | None = None,
) -> NodeFelixConfig:
    """Merge defaults < global FelixConfiguration < ``node.<name>`` < env (see module doc)."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    warnings: list[str] = []
    env_upper = {k.upper(): v for k, v in env.items() if k.upper().startswith("FELIX_")}
    for name, (typ, default) in SETTINGS.items():
        values[name], source[name] = default, "default"
        for layer_name, spec in (("global", global_spec), ("node", node_spec)):
            if spec and spec.get(name) is not None:
                try:
                    values[name], source[name] = _parse(typ, spec[name]), layer_name
                except ValueError as e:
                    warnings.append(f"FelixConfiguration ({layer_name}) {name}: {e}; ignored")
        raw = env_upper.get(env_var(name))
        if raw is not None and raw.strip() != "":
            try:
                values[name], source[name] = _parse(typ, raw), "env"
            except ValueError as e:
                raise FelixConfigError(f"{env_var(name)}: {e}") from None
    return NodeFelixConfig(values, source, tuple(warnings))


def from_resources(
    env: Mapping[str, str], node_name: str, felix_configs: list[Mapping[str, Any]]
) -> NodeFelixConfig:
    """:func:`effective` over a list of FelixConfiguration resource dicts."""
    by_name = {str((r.get("metadata") or {}).get("name", "")): r for r in felix_configs}
    g = (by_name.get("default") or {}).get("spec")
    n = (by_name.get(f"node.{node_name}") or {}).get("spec")
    return effective(env, g, n)
