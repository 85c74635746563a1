"""Felix's policy-dataplane settings: a view of the one FelixConfiguration resolver.

Owns :class:`FelixSettings` (the settings the policy dataplane uses, with its RenderConfig)
and :func:`resolve_settings`, which delegates to :func:`pycalico.model.felixconfig.resolve`
(precedence defaults < ``default`` < ``node.<name>`` < ``FELIX_*`` env < overrides).
Invariant: a bad datastore value is ignored with a warning (``FelixSettings.warnings``); a bad
env var or override raises :class:`FelixConfigError` naming the field and the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.felix.rules.settings import RenderConfig
from pycalico.model import durations
from pycalico.model.felixconfig import (
    DEFAULT_FAILSAFE_IN,
    DEFAULT_FAILSAFE_OUT,
    FailsafePort,
    FelixConfig,
    resolve,
)
from pycalico.model.felixconfig import FelixConfigError as FelixConfigError
from pycalico.model.types import ModelError


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
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def of(cls, cfg: FelixConfig) -> FelixSettings:
        return cls(
            nftables_refresh_interval=cfg.nftables_refresh_interval,
            default_endpoint_to_host_action=cfg.default_endpoint_to_host_action,
            interface_prefix=cfg.interface_prefix,
            ipv6_support=cfg.ipv6_support,
            failsafe_inbound=cfg.failsafe_inbound,
            failsafe_outbound=cfg.failsafe_outbound,
            allow_vxlan_from_workloads=cfg.allow_vxlan_from_workloads,
            allow_ipip_from_workloads=cfg.allow_ipip_from_workloads,
            warnings=cfg.warnings,
        )

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


def parse_duration(value: Any, what: str) -> float:
    """Go-style duration (``90s``, ``1m30s``, ``500ms``) or a number of seconds."""
    try:
        return durations.parse_duration(value, what)
    except ModelError as e:
        raise FelixConfigError(str(e)) from None


def resolve_settings(
    node_name: str,
    felix_configs: Mapping[str, Mapping[str, Any]],
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> FelixSettings:
    """Settings for ``node_name`` from FelixConfiguration specs by name, env and overrides
    (``overrides`` use FelixConfiguration field names)."""
    return FelixSettings.of(resolve(node_name, felix_configs, env, overrides))
