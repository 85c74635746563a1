"""The flow record: one aggregated flow of one bucket, as stored, served and printed.

Owns :class:`Peer` (one side: a workload endpoint, host endpoint or plain network address),
:class:`FlowKey` (what flows are aggregated by) and :class:`FlowRecord` with its JSON form,
which is the documented interchange format (docs/flowlogs.md, "Flow record"):

.. code-block:: json

    {"start": 1764684000.0, "end": 1764684015.0, "node": "node1", "reporter": "dst",
     "src": {"kind": "wep", "namespace": "ns1", "name": "a", "labels": {"app": "a"},
             "ip": "10.244.1.2"},
     "dst": {"kind": "wep", ...}, "proto": "TCP", "dport": 80, "action": "deny",
     "policy": {"tier": "default", "kind": "gnp", "namespace": "", "name": "deny-b",
                "rule": 0, "direction": "ingress", "action": "deny", "end_of_tier": false},
     "trace": [<policy objects, in evaluation order>], "pending": null,
     "packets_in": 3, "packets_out": 0, "bytes_in": 180, "bytes_out": 0,
     "connections": 1, "connections_completed": 0}

Invariants: ``reporter`` is ``src`` when the flow was evaluated by the source endpoint's
egress policy on this node, ``dst`` for the destination's ingress policy (a flow between two
endpoints of one node gives two records, as in Calico); ``packets_in``/``bytes_in`` count
the direction towards the reporting endpoint; ``policy`` is the last element of ``trace``
(the step that decided); ``pending`` is None until a staged-policy evaluator fills it
(:class:`pycalico.flows.aggregate.PendingEvaluator`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from pycalico.felix.rules.nflog import RuleRef

PeerKind = Literal["wep", "hep", "net"]
_PROTOS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP", 136: "UDPLite"}
_PROTO_NUMS = {v.upper(): k for k, v in _PROTOS.items()}


def proto_name(n: int) -> str:
    return _PROTOS.get(n, str(n))


def proto_number(name: str) -> int:
    """``TCP``/``tcp``/``6`` -> 6 (ValueError for an unknown name)."""
    text = name.strip().upper()
    if text.isdigit():
        return int(text)
    if text not in _PROTO_NUMS:
        raise ValueError(f"unknown protocol {name!r}")
    return _PROTO_NUMS[text]


class Peer(NamedTuple):
    """One side of a flow (a named tuple: part of the key every connection is looked up
    by, hashed in C)."""

    kind: PeerKind
    ip: str
    namespace: str = ""
    name: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    def label(self) -> str:
        if self.kind == "wep":
            return f"{self.namespace}/{self.name}"
        if self.kind == "hep":
            return f"hep/{self.name}"
        return self.ip

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "labels": dict(self.labels),
            "ip": self.ip,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Peer:
        kind = d.get("kind")
        return cls(
            kind=kind if kind in ("wep", "hep", "net") else "net",
            ip=str(d.get("ip") or ""),
            namespace=str(d.get("namespace") or ""),
            name=str(d.get("name") or ""),
            labels=tuple(sorted((str(k), str(v)) for k, v in (d.get("labels") or {}).items())),
        )


@dataclass(frozen=True)
class FlowKey:
    """What one record aggregates over (Calico's aggregation by endpoint, not source port)."""

    reporter: Literal["src", "dst"]
    src: Peer
    dst: Peer
    proto: int
    dport: int
    action: Literal["allow", "deny"]
    trace: tuple[RuleRef, ...]


@dataclass
class FlowRecord:
    start: float
    end: float
    node: str
    key: FlowKey
    pending: dict[str, Any] | None = None
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    connections: int = 0
    connections_completed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def policy(self) -> RuleRef | None:
        return self.key.trace[-1] if self.key.trace else None

    def to_json(self) -> dict[str, Any]:
        k = self.key
        pol = self.policy
        return {
            "start": self.start,
            "end": self.end,
            "node": self.node,
            "reporter": k.reporter,
            "src": k.src.to_json(),
            "dst": k.dst.to_json(),
            "proto": proto_name(k.proto),
            "dport": k.dport,
            "action": k.action,
            "policy": pol.to_json() if pol is not None else None,
            "trace": [r.to_json() for r in k.trace],
            "pending": self.pending,
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "connections": self.connections,
            "connections_completed": self.connections_completed,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FlowRecord:
        key = FlowKey(
            reporter="src" if d.get("reporter") == "src" else "dst",
            src=Peer.from_json(d.get("src") or {}),
            dst=Peer.from_json(d.get("dst") or {}),
            proto=proto_number(str(d.get("proto") or "0")),
            dport=int(d.get("dport") or 0),
            action="deny" if d.get("action") == "deny" else "allow",
            trace=tuple(RuleRef.from_json(t) for t in d.get("trace") or ()),
        )
        return cls(
            start=float(d["start"]),
            end=float(d["end"]),
            node=str(d.get("node") or ""),
            key=key,
            pending=d.get("pending"),
            packets_in=int(d.get("packets_in") or 0),
            packets_out=int(d.get("packets_out") or 0),
            bytes_in=int(d.get("bytes_in") or 0),
            bytes_out=int(d.get("bytes_out") or 0),
            connections=int(d.get("connections") or 0),
            connections_completed=int(d.get("connections_completed") or 0),
        )
