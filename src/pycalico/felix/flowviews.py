"""The enforced and pending policy views that flow logs read, kept by Felix's owner thread.

Owns :class:`FlowViews`: a calc graph of its own built with ``pending_view=True`` (so
staged policies are evaluated, :mod:`pycalico.felix.calc.pending`), the
:class:`~pycalico.felix.calc.views.PolicyViews` it feeds, and the
:class:`~pycalico.felix.calc.views.SnapshotBox` through which the flow-log collector (another
thread) reads immutable snapshots. Felix creates it only while ``flowLogsFileEnabled`` is on,
from its syncer's current snapshot, and from then on hands it every update it hands its own
graph: the pending view costs nothing while flow logs are off, and roughly two extra graph
updates per datastore update while they are on.

Invariants: only Felix's owner thread calls :meth:`on_update`, :meth:`on_in_sync` and
:meth:`publish`; :attr:`box` may be read from any thread; a snapshot is published after every
batch, so the collector never sees a half-applied batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pycalico.felix.calc import CalcGraph
from pycalico.felix.calc.views import PolicyViews, SnapshotBox


class FlowViews:
    def __init__(
        self,
        node_name: str,
        snapshot: Mapping[str, Mapping[str, Any]],
        in_sync: bool,
        skip_prefix: str,
    ) -> None:
        self.graph = CalcGraph(node_name, pending_view=True)
        self.views = PolicyViews()
        self.box = SnapshotBox()
        self._skip = skip_prefix
        for key in sorted(snapshot):
            self.on_update(key, snapshot[key])
        if in_sync:
            self.graph.on_in_sync()
        self.publish()

    def on_update(self, key: str, value: Mapping[str, Any] | None) -> None:
        if not key.startswith(self._skip):
            self.graph.on_update(key, value)

    def on_in_sync(self) -> None:
        self.graph.on_in_sync()

    def publish(self) -> None:
        """Apply what the graph computed since the last call and publish a snapshot."""
        enforced, pending = self.graph.flush(), self.graph.flush_pending()
        if enforced or pending:
            self.views.apply(enforced, pending)
            self.box.publish(self.views.snapshot())
