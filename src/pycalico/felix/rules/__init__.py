"""pycalico.felix.rules: calc-graph messages -> nftables chains, rules and sets (pure).

Public API:
- :class:`RuleRenderer` — ``apply(messages)``, ``tables() -> {family: TableSpec}``.
- :class:`RenderConfig` — Felix settings the rules depend on (defaultEndpointToHostAction,
  failsafe ports, interface prefix, VXLAN/IPIP from workloads).
- Value objects :class:`TableSpec`, :class:`Chain`, :class:`Rule`, :class:`NftSet`,
  :class:`Hook`, :class:`Family` (``IPV4``/``IPV6``); :func:`make_chain`.
- Module order (no cycles): ``errors``, ``settings``, ``model``, ``names``, ``policy``
  <- ``endpoints`` <- ``hostendpoints`` <- ``renderer`` (an arrow points at what a module
  imports; :mod:`tests.unit.test_layering` fails on any cycle).
- Naming helpers in :mod:`pycalico.felix.rules.names`; mark bits in
  :mod:`pycalico.felix.rules.policy`.
"""

from pycalico.felix.rules.errors import RenderError
from pycalico.felix.rules.model import (
    FAMILIES,
    IPV4,
    IPV6,
    Chain,
    Family,
    Hook,
    NftSet,
    Rule,
    TableSpec,
    element_key,
    make_chain,
)
from pycalico.felix.rules.renderer import TABLE, RuleRenderer, render_ipset
from pycalico.felix.rules.settings import RenderConfig

__all__ = [
    "FAMILIES",
    "IPV4",
    "IPV6",
    "TABLE",
    "Chain",
    "Family",
    "Hook",
    "NftSet",
    "RenderConfig",
    "RenderError",
    "Rule",
    "RuleRenderer",
    "TableSpec",
    "element_key",
    "make_chain",
    "render_ipset",
]
