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
- :class:`PolicyInsight` — ``explain`` and ``matrix`` over a list of resource dicts,
  enforced and pending.
- Staged policies: ``CalcGraph(..., pending_view=True)`` + ``flush_pending()``
  (:mod:`.pending`: :class:`StagedFilter`); :class:`PolicyViews`, :class:`PolicySnapshot`,
  :class:`SnapshotBox`, :class:`Verdicts` — the enforced and pending decisions of one node,
  for flow logs (:mod:`.views`).
"""

from pycalico.felix.calc.evaluate import (
    DataplaneView,
    Decision,
    Packet,
    TierDecision,
    make_packet,
)
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
from pycalico.felix.calc.pending import StagedFilter
from pycalico.felix.calc.resolve import RuleResolver, SetSpec
from pycalico.felix.calc.routes import RouteCalculator
from pycalico.felix.calc.routetypes import DesiredState, HostFacts
from pycalico.felix.calc.views import PolicySnapshot, PolicyViews, SnapshotBox, Verdicts

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
    "PolicySnapshot",
    "PolicyViews",
    "ProbeResult",
    "ResolvedRule",
    "RouteCalculator",
    "RouteMessage",
    "RouteSettingsUpdate",
    "RoutesUpdate",
    "RuleResolver",
    "SetSpec",
    "SnapshotBox",
    "StagedFilter",
    "TierDecision",
    "TierInfo",
    "Verdicts",
    "analyse",
    "format_explanation",
    "format_matrix",
    "make_packet",
    "parse_port_list",
]
