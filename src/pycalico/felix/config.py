"""What Felix's policy dataplane takes from the one resolved configuration.

The configuration itself is :class:`pycalico.model.felixconfig.FelixConfig`, resolved ONCE by
:func:`pycalico.model.felixconfig.resolve` (defaults < FelixConfiguration ``default`` <
``node.<name>`` < ``FELIX_*`` env < overrides; a bad datastore value is ignored with a
warning, a bad env var or override raises ``FelixConfigError``). This module only derives the
renderer's :class:`~pycalico.felix.rules.settings.RenderConfig` and the nft families from it
(pure functions; no second copy of any setting).
"""

from __future__ import annotations

from pycalico.felix.rules.settings import RenderConfig
from pycalico.model.felixconfig import FelixConfig


def render_config(cfg: FelixConfig) -> RenderConfig:
    """The settings the rules renderer depends on."""
    return RenderConfig(
        interface_prefix=cfg.interface_prefix,
        endpoint_to_host_action=cfg.default_endpoint_to_host_action,
        failsafe_inbound=cfg.failsafe_inbound,
        failsafe_outbound=cfg.failsafe_outbound,
        allow_vxlan_from_workloads=cfg.allow_vxlan_from_workloads,
        allow_ipip_from_workloads=cfg.allow_ipip_from_workloads,
        flow_logs=cfg.flow_logs_file_enabled,
    )


def families(cfg: FelixConfig) -> tuple[str, ...]:
    """The nft families Felix programs: ``ip``, and ``ip6`` unless ``ipv6Support`` is off."""
    return ("ip", "ip6") if cfg.ipv6_support else ("ip",)
