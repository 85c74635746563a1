"""pycalico.felix.calc: the pure calculation graph and policy insight.

Public API:
- :class:`CalcGraph` — ``on_update(key, dict | None)``, ``on_in_sync()``, ``flush()`` ->
  messages (see :mod:`pycalico.felix.calc.messages` for the message types and their order).
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
    TierInfo,
)
from pycalico.felix.calc.resolve import RuleResolver, SetSpec

__all__ = [
    "ActivePolicyRemove",
    "ActivePolicyUpdate",
    "ActiveProfileRemove",
    "ActiveProfileUpdate",
    "CalcGraph",
    "DataplaneView",
    "Decision",
    "EndpointRemove",
    "EndpointUpdate",
    "Explanation",
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
    "RuleResolver",
    "SetSpec",
    "TierInfo",
    "analyse",
    "format_explanation",
    "format_matrix",
    "make_packet",
    "parse_port_list",
]
