"""pycalico.felix.calc: the pure calculation graph and policy insight.

Public API:
- :class:`CalcGraph` — ``on_update(key, dict | None)``, ``on_in_sync()``, ``flush()`` ->
  messages (see :mod:`pycalico.felix.calc.messages` for the message types and their order).
- :class:`RouteCalculator` — the routes calc node the graph owns (``set_host_facts``;
  :class:`RouteSettingsUpdate` / :class:`RoutesUpdate` messages; values in
  :mod:`pycalico.felix.calc.routetypes`).
- :class:`LabelIndex` — incremental selector/label matching.
- :class:`DataplaneView`, :class:`Packet`, :class:`Decision` — packet evaluation over the
  graph's messages.
- :class:`PolicyInsight` — ``explain`` and ``matrix`` over a list of resource dicts.
"""

from pycalico.felix.calc.evaluate import DataplaneView, Decision, Packet, make_packet
from pycalico.felix.calc.graph import CalcGraph
from pycalico.felix.calc.insight import (
    Explanation,
    InsightError,
    PolicyInsight,
    ProbeResult,
    format_explanation,
    format_matrix,
    parse_port_list,
)
from pycalico.felix.calc.labelindex import LabelIndex, analyse
from pycalico.felix.calc.messages import (
    ActivePolicyRemove,
    ActivePolicyUpdate,
    ActiveProfileRemove,
    ActiveProfileUpdate,
    EndpointRemove,
    EndpointUpdate,
    InSync,
    IPSetRemove,
    IPSetUpdate,
    Message,
    ResolvedRule,
    RouteMessage,
    RouteSettingsUpdate,
    RoutesUpdate,
    TierInfo,
)
from pycalico.felix.calc.resolve import RuleResolver, SetSpec
from pycalico.felix.calc.routes import RouteCalculator
from pycalico.felix.calc.routetypes import DesiredState, HostFacts

__all__ = [
    "ActivePolicyRemove",
    "ActivePolicyUpdate",
    "ActiveProfileRemove",
    "ActiveProfileUpdate",
    "CalcGraph",
    "DataplaneView",
    "Decision",
    "DesiredState",
    "EndpointRemove",
    "EndpointUpdate",
    "Explanation",
    "HostFacts",
    "IPSetRemove",
    "IPSetUpdate",
    "InSync",
    "InsightError",
    "LabelIndex",
    "Message",
    "Packet",
    "PolicyInsight",
    "ProbeResult",
    "ResolvedRule",
    "RouteCalculator",
    "RouteMessage",
    "RouteSettingsUpdate",
    "RoutesUpdate",
    "RuleResolver",
    "SetSpec",
    "TierInfo",
    "analyse",
    "format_explanation",
    "format_matrix",
    "make_packet",
    "parse_port_list",
]
