"""Enforced and pending policy views of one node, for flow logs and policy insight.

Owns :class:`PolicyViews` (two :class:`~pycalico.felix.calc.evaluate.DataplaneView` s: the
*enforced* one fed by ``CalcGraph.flush()`` and the *pending* one fed by
``CalcGraph.flush_pending()`` of a graph built with ``pending_view=True``), the immutable
:class:`PolicySnapshot` it hands out, and :class:`SnapshotBox`, the one place a snapshot is
published for other threads. One evaluation code (``DataplaneView.evaluate``) serves both
views.

Interface for the flow-log collector (or any reader outside Felix's owner thread):

1. The thread that owns the graph (Felix's owner thread) does, after each batch::

       views.apply(msgs, graph.flush_pending())   # msgs: what graph.flush() returned
       box.publish(views.snapshot())

2. Any other thread reads ``snap = box.latest()`` (never blocks on the owner thread) and
   asks ``snap.evaluate(endpoint_id, "ingress" | "egress", packet)`` -> :class:`Verdicts`
   (``None`` when the endpoint is not local), where ``Verdicts.enforced`` and
   ``Verdicts.pending`` are :class:`~pycalico.felix.calc.evaluate.Decision` s: verdict,
   reason, deciding tier/policy/rule or profile, the text ``trace`` and, per tier,
   :class:`~pycalico.felix.calc.evaluate.TierDecision` (``tiers``). Staged policies appear
   in pending decisions under their staged identity: ``snp/<ns>/<name>``, ``sgnp/<name>``,
   ``sknp/<ns>/knp.default.<name>``. ``snap.endpoint_at(ip)`` maps an address to the local
   endpoint holding it, ``snap.has_staged`` says whether the two views can differ at all.

Invariants: a snapshot never changes after it is made (it shares only immutable values with
the live views); the enforced view holds nothing staged; pure (no I/O, no threads but the
lock of :class:`SnapshotBox`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from pycalico.felix.calc.evaluate import DataplaneView, Decision, Direction, Packet
from pycalico.felix.calc.messages import Message
from pycalico.model import ItemID

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True)
class Verdicts:
    """One direction at one endpoint, decided by the enforced and by the pending view."""

    enforced: Decision
    pending: Decision

    @property
    def differs(self) -> bool:
        return self.enforced.verdict != self.pending.verdict

    def to_json(self) -> dict[str, Any]:
        return {"enforced": self.enforced.to_json(), "pending": self.pending.to_json()}


class PolicySnapshot:
    """An immutable pair of views (see the module docstring)."""

    def __init__(self, enforced: DataplaneView, pending: DataplaneView, has_staged: bool) -> None:
        self._enforced = enforced
        self._pending = pending
        self.has_staged = has_staged

    @cached_property
    def _by_ip(self) -> dict[IPAddress, ItemID]:
        out: dict[IPAddress, ItemID] = {}
        for iid in sorted(self._enforced.endpoints):
            for net in self._enforced.endpoints[iid].endpoint.nets:
                if net.num_addresses == 1:
                    out.setdefault(net.network_address, iid)
        return out

    def endpoint_at(self, ip: IPAddress) -> ItemID | None:
        """The local endpoint holding address ``ip``, if any."""
        return self._by_ip.get(ip)

    def evaluate(self, ep_id: ItemID, direction: Direction, pkt: Packet) -> Verdicts | None:
        """Both decisions for ``pkt`` at local endpoint ``ep_id`` (None if not local)."""
        if ep_id not in self._enforced.endpoints:
            return None
        enforced = self._enforced.evaluate(ep_id, direction, pkt)
        if not self.has_staged or ep_id not in self._pending.endpoints:
            return Verdicts(enforced, enforced)
        return Verdicts(enforced, self._pending.evaluate(ep_id, direction, pkt))


class PolicyViews:
    """The live enforced and pending views; owned by the thread that flushes the graph."""

    def __init__(self) -> None:
        self.enforced = DataplaneView()
        self.pending = DataplaneView()

    def apply(self, enforced: list[Message], pending: list[Message]) -> None:
        """Apply one flush's messages of each view (non-policy messages are ignored)."""
        self.enforced.apply(enforced)
        self.pending.apply(pending)

    @property
    def has_staged(self) -> bool:
        """Can the views differ at all? Yes iff a staged policy is active on a local endpoint
        or an active enforced policy is missing from the pending view (replaced or deleted):
        otherwise both views hold the same policies, computed from the same resources."""
        e, p = self.enforced.policies, self.pending.policies
        return any(pid.is_staged for pid in p) or not e.keys() <= p.keys()

    def snapshot(self) -> PolicySnapshot:
        return PolicySnapshot(self.enforced.copy(), self.pending.copy(), self.has_staged)


class SnapshotBox:
    """The latest published :class:`PolicySnapshot`; safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snap = PolicySnapshot(DataplaneView(), DataplaneView(), False)

    def publish(self, snap: PolicySnapshot) -> None:
        with self._lock:
            self._snap = snap

    def latest(self) -> PolicySnapshot:
        with self._lock:
            return self._snap
