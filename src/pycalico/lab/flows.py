"""``calico-lab flows``: the flow logs of every lab node, with calicoctl's filters and output.

Each node serves its records on ``https://<any address>:9098`` inside its own network
namespace (the flow API of :mod:`pycalico.flows.api`) to clients with the lab's client
certificate or token (:mod:`pycalico.lab.flowauth`); this module asks every node's
``127.0.0.1`` in parallel with the client certificate, each from a worker thread switched
into the node's namespace (:class:`~pycalico.lab.netns.enter_netns`), merges the records by
time; :mod:`pycalico.flows.cli` prints them like ``calicoctl flows``.

Invariant: read-only; a node that does not answer is named on stderr; exit 1 only when none
answered.
"""

from __future__ import annotations

from pycalico.flows.api import DEFAULT_PORT, FlowAPIError, fetch_flows
from pycalico.flows.auth import FlowAuthError
from pycalico.flows.cli import FlowsError, gather
from pycalico.flows.record import FlowRecord
from pycalico.flows.store import FlowFilter
from pycalico.lab.flowauth import files
from pycalico.lab.netns import enter_netns
from pycalico.lab.state import LabState, NodeState


def node_records(
    state: LabState, node: NodeState, flt: FlowFilter, port: int = DEFAULT_PORT
) -> list[FlowRecord]:
    """One node's records (FlowsError naming the node when it cannot be asked)."""
    try:
        creds = files(state.path).client()
        with enter_netns(node.netns):
            return fetch_flows(f"https://127.0.0.1:{port}", flt, creds=creds)[1]
    except (FlowAPIError, FlowAuthError) as e:
        raise FlowsError(f"{node.name}: {e}") from None


def lab_records(state: LabState, flt: FlowFilter) -> list[FlowRecord]:
    return gather(
        list(state.nodes), lambda n: node_records(state, n, flt), 8, "lab node's flow API"
    )
