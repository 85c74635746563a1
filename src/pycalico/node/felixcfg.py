"""Effective Felix settings for calico-node: a view of the one FelixConfiguration resolver.

Owns :class:`NodeFelixConfig` (the settings calico-node itself uses, by FelixConfiguration
field name, with where each came from) built by :func:`pycalico.model.felixconfig.resolve`:
defaults < FelixConfiguration ``default`` < ``node.<name>`` < ``FELIX_<UPPERCASENAME>`` env.

Invariants: pure; a malformed datastore value is ignored with a warning recorded in
:attr:`NodeFelixConfig.warnings` (the next layer down wins) while a malformed environment
value raises :class:`FelixConfigError` naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.model.felixconfig import FIELDS, FelixConfig, resolve, specs_by_name
from pycalico.model.felixconfig import FelixConfigError as FelixConfigError
from pycalico.model.felixconfig import env_var as env_var

# The FelixConfiguration fields calico-node reads (health, metrics, MTU, reporting, logging).
SETTINGS: tuple[str, ...] = (
    "healthEnabled",
    "healthHost",
    "healthPort",
    "prometheusMetricsEnabled",
    "prometheusMetricsHost",
    "prometheusMetricsPort",
    "ipipMTU",
    "vxlanMTU",
    "mtuIfacePattern",
    "reportingInterval",
    "logSeverityScreen",
)


@dataclass(frozen=True)
class NodeFelixConfig:
    values: dict[str, Any]
    source: dict[str, str]
    warnings: tuple[str, ...] = field(default=(), compare=False)
    config: FelixConfig = field(default_factory=FelixConfig, compare=False)  # the whole

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @classmethod
    def of(cls, cfg: FelixConfig) -> NodeFelixConfig:
        values = {n: getattr(cfg, FIELDS[n][0]) for n in SETTINGS}
        source = {n: cfg.sources.get(FIELDS[n][0], "default") for n in SETTINGS}
        return cls(values, source, cfg.warnings, cfg)


def effective(
    env: Mapping[str, str],
    global_spec: Mapping[str, Any] | None = None,
    node_spec: Mapping[str, Any] | None = None,
) -> NodeFelixConfig:
    """Merge defaults < global FelixConfiguration < ``node.<name>`` < env (see module doc)."""
    specs = {"default": global_spec or {}, "node.this": node_spec or {}}
    return NodeFelixConfig.of(resolve("this", specs, env))


def from_resources(
    env: Mapping[str, str], node_name: str, felix_configs: list[Mapping[str, Any]]
) -> NodeFelixConfig:
    """:func:`effective` over a list of FelixConfiguration resource dicts."""
    return NodeFelixConfig.of(resolve(node_name, specs_by_name(felix_configs), env))
