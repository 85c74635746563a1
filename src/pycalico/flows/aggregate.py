"""Joins NFLOG attributions and conntrack counters into flow records, in time buckets (pure).

Owns :class:`Aggregator`. Inputs (the collector feeds them; tests feed them directly):

- :meth:`Aggregator.on_nflog` — one NFLOG message: its prefix and the packet's 5-tuple.
  Messages of one packet arrive together (egress policy of the source, then ingress policy
  of the destination on the same node; one per tier that passed); they are joined per
  original 5-tuple and direction into a *trace*. A direction's trace ends at its first
  allow/deny; another message for a direction whose trace ended is a new evaluation of the
  same tuple (a retransmitted SYN that was denied, a new UDP flow on the same ports).
- :meth:`Aggregator.on_ct` — a conntrack event: TCP entering a closing state or the
  entry's destruction closes the connection and adds its packet/byte counters (read with
  the ``counters`` callable when the event carries none). NFLOG and conntrack are separate
  sockets, so such an event for a tuple not seen yet is kept up to 2 s (bounded) and
  applied when the connection's trace settles.
- :meth:`Aggregator.tick` — settles every direction whose trace ended (allow/deny; a
  trace so far ending in a Pass waits up to 2 s for its deciding step) into the current
  bucket, rolls the bucket every ``interval`` seconds (returning the finished records)
  and polls counters of long-lived connections once per bucket. With ``poll_after`` (the
  collector's mode: it does not subscribe to conntrack's per-state UPDATE events, several
  per TCP connection) an allowed connection's entry is read that many seconds after it
  settled (e.g. 0.5, 2, 5): a TCP connection found closing is closed with its counters
  there; the DESTROY event (which carries the counters) closes everything else.

Per bucket, each prefix is resolved once (``resolve_ref``, else :func:`parse_prefix`) and
each open record is found by a key of plain strings, ints and peers (the trace as its
prefixes), so a connection costs a few dict lookups; both are dropped when the bucket rolls.

Bounded memory: at most ``max_conns`` tracked connections and ``max_flows`` records per
bucket; what does not fit is counted in :attr:`Aggregator.dropped` (``conns``, ``flows``),
never raised. Unknown or malformed prefixes are counted (``unknown_prefix``) and ignored.

Pending (staged policy) traces: a :class:`PendingEvaluator` given to the aggregator fills
each new record's ``pending``; without one it stays None (nothing is guessed).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pycalico.felix.rules.nflog import RuleRef, parse_prefix
from pycalico.flows.record import FlowKey, FlowRecord, Peer
from pycalico.system.ctnetlink import TCP_CLOSING, CtEvent
from pycalico.system.nfnetlink import FiveTuple

Direction = Literal["ingress", "egress"]
_EARLY_TTL = 2.0  # seconds a conntrack event waits for its connection's NFLOG
_INCOMPLETE_TTL = 2.0  # seconds a trace ending in a Pass waits for its deciding step
_MAX_REFS = 4096  # resolved prefixes kept per bucket (a stream of junk is not cached)
VerdictKey = tuple[str, str, str, str, str]  # tier, policy, rule, direction, action


class PendingEvaluator(Protocol):
    """What staged policies would have done with a flow (filled by the calc graph's
    staged-policy evaluation). Returns ``{"action": "allow"|"deny", "trace": [policy
    objects]}`` or None when it has no opinion (no staged policy applies)."""

    def pending(self, key: FlowKey) -> dict[str, Any] | None: ...


# A record's key as the aggregator looks it up (str/int/tuple: hashed in C): direction,
# action, source and destination peers, protocol, port and the trace's prefixes.
RawKey = tuple[str, str, Peer, Peer, int, int, tuple[str, ...]]
Counters = Callable[[Sequence[FiveTuple]], Sequence[CtEvent | None]]


@dataclass(slots=True)
class _Conn:
    ftuple: FiveTuple
    first: float
    last: float
    traces: dict[Direction, list[RuleRef]] = field(default_factory=dict)
    prefixes: dict[Direction, list[str]] = field(default_factory=dict)
    ended: dict[Direction, bool] = field(default_factory=dict)
    evals: dict[Direction, int] = field(default_factory=dict)
    ip_bytes: dict[Direction, int] = field(default_factory=dict)
    keys: dict[Direction, tuple[RawKey, FlowKey]] = field(default_factory=dict)
    counted: tuple[int, int, int, int] = (0, 0, 0, 0)
    allowed: bool = False


def _bucket_start(now: float, interval: float) -> float:
    return now - (now % interval)


class Aggregator:
    def __init__(
        self,
        node: str,
        resolve_ref: Callable[[str], RuleRef | None],
        resolve_peer: Callable[[str], Peer],
        *,
        interval: float = 15.0,
        max_conns: int = 10000,
        max_flows: int = 10000,
        settle: float = 0.0,
        counters: Counters | None = None,
        pending: PendingEvaluator | None = None,
        now: float = 0.0,
        poll_after: tuple[float, ...] = (),
    ) -> None:
        self.node = node
        self.resolve_ref = resolve_ref
        self.resolve_peer = resolve_peer
        self.interval = interval
        self.max_conns = max_conns
        self.max_flows = max_flows
        self.settle = settle
        self.counters = counters
        self.pending = pending
        self.conns: dict[FiveTuple, _Conn] = {}
        self.bucket_start = _bucket_start(now, interval)
        self.records: dict[FlowKey, FlowRecord] = {}
        self.dropped: Counter[str] = Counter()
        self.verdicts: Counter[VerdictKey] = Counter()
        self.nflog_messages = 0
        self._unsettled: set[FiveTuple] = set()
        # Conntrack close/destroy events that arrived before their connection's NFLOG.
        self._early: dict[FiveTuple, tuple[float, CtEvent]] = {}
        # Reads of allowed connections' entries: (due, n, tuple, settled at, index).
        self.poll_after = poll_after
        self._polls: list[tuple[float, int, FiveTuple, float, int]] = []
        self._npolls = 0
        # Per bucket (cleared when it rolls): prefix -> (rule, verdict counter key) as
        # resolved, and the open records by RawKey (an index of ``records``).
        self._refs: dict[str, tuple[RuleRef, VerdictKey]] = {}
        self._by_raw: dict[RawKey, FlowRecord] = {}

    # --- inputs -------------------------------------------------------------------------
    def on_nflog(self, now: float, prefix: str, t: FiveTuple | None, ip_len: int = 0) -> None:
        self.nflog_messages += 1
        if t is None:
            self.dropped["malformed_packet"] += 1
            return
        ent = self._refs.get(prefix)
        if ent is None:
            ref = self.resolve_ref(prefix) or parse_prefix(prefix)
            if ref is None:
                self.dropped["unknown_prefix"] += 1
                return
            ent = (ref, (
                ref.tier, ref.policy_id() if ref.rule is not None or ref.owner != "policy" else "",
                "" if ref.rule is None else str(ref.rule), ref.direction, ref.action,
            ))  # fmt: skip
            if len(self._refs) < _MAX_REFS:
                self._refs[prefix] = ent
        ref, vkey = ent
        conn = self.conns.get(t)
        if conn is None:
            if len(self.conns) >= self.max_conns:
                self.dropped["conns"] += 1
                return
            conn = self.conns[t] = _Conn(t, now, now)
        d = ref.direction
        if conn.ended.get(d, True):  # a new evaluation of this direction
            conn.traces[d] = [ref]
            conn.prefixes[d] = [prefix]
            conn.ended[d] = False
            conn.evals[d] = conn.evals.get(d, 0) + 1
            conn.ip_bytes[d] = conn.ip_bytes.get(d, 0) + ip_len
        else:
            conn.traces[d].append(ref)
            conn.prefixes[d].append(prefix)
        if ref.action != "pass":
            conn.ended[d] = True
        conn.last = now
        self.verdicts[vkey] += 1
        self._unsettled.add(t)

    def on_ct(self, now: float, ev: CtEvent) -> None:
        if ev.tuple is None:
            return
        conn = self.conns.get(ev.tuple)
        if conn is None:
            if ev.kind == "destroy" or ev.tcp_state in TCP_CLOSING:
                # The NFLOG of this connection may still be in the kernel's batch: keep the
                # event briefly (bounded) and apply it when the connection settles.
                if len(self._early) >= self.max_conns:
                    self._early.pop(next(iter(self._early)))
                self._early[ev.tuple] = (now, ev)
            return
        self._apply_ct(conn, now, ev)

    def _apply_ct(self, conn: _Conn, now: float, ev: CtEvent) -> None:
        if ev.kind == "destroy":
            self._settle(conn, now, force=True)
            self._close(conn, ev if ev.packets_orig or ev.packets_reply else self._read([conn])[0])
        elif ev.kind == "update" and ev.tcp_state in TCP_CLOSING:
            self._settle(conn, now, force=True)
            self._close(conn, self._read([conn])[0])

    def tick(self, now: float) -> list[FlowRecord]:
        """Settle quiet traces; at a bucket boundary poll counters of open connections and
        return the finished bucket's records."""
        for t in [t for t in self._unsettled if now - self.conns[t].last >= self.settle]:
            conn = self.conns[t]
            self._settle(conn, now)
            if t in self._unsettled:  # a direction still waits for its deciding step
                continue
            early = self._early.pop(t, None)
            if early is not None:
                self._apply_ct(conn, now, early[1])
        self._due_polls(now)
        while self._early:
            t0, (at, _ev) = next(iter(self._early.items()))
            if now - at <= _EARLY_TTL:
                break
            del self._early[t0]
        if now < self.bucket_start + self.interval:
            return []
        allowed = []
        for conn in list(self.conns.values()):
            if conn.allowed:
                allowed.append(conn)
            elif now - conn.last > self.interval:
                self.conns.pop(conn.ftuple, None)  # denied and quiet: nothing more to learn
                self._unsettled.discard(conn.ftuple)
        for conn, ev in zip(allowed, self._read(allowed), strict=True):
            if ev is None:  # gone without an event we saw: stop tracking
                self._close(conn, None)
            else:
                self._count(conn, ev)
        done = list(self.records.values())
        for r in done:
            r.end = self.bucket_start + self.interval
        self.records = {}
        self._by_raw = {}
        self._refs = {}
        self.bucket_start = _bucket_start(now, self.interval)
        return done

    def snapshot(self, now: float) -> list[FlowRecord]:
        """The open bucket's records so far (``end`` = now)."""
        out = []
        for r in self.records.values():
            c = FlowRecord(**{**r.__dict__, "end": now})
            out.append(c)
        return out

    # --- internals ------------------------------------------------------------------------
    def _schedule(self, t: FiveTuple, since: float, i: int) -> None:
        if i < len(self.poll_after):
            self._npolls += 1
            due = since + self.poll_after[i]
            heapq.heappush(self._polls, (due, self._npolls, t, since, i))

    def _due_polls(self, now: float) -> None:
        due: list[tuple[_Conn, float, int]] = []
        while self._polls and self._polls[0][0] <= now:
            _due, _n, t, since, i = heapq.heappop(self._polls)
            conn = self.conns.get(t)
            if conn is None or not conn.allowed:
                continue  # closed meanwhile (destroy event) or never allowed
            due.append((conn, since, i))
        if not due:
            return
        for (conn, since, i), ev in zip(due, self._read([c for c, _s, _i in due]), strict=True):
            if ev is None or self.conns.get(conn.ftuple) is not conn:
                continue  # gone: its destroy event closes it (or it already did)
            if ev.tcp_state in TCP_CLOSING:
                self._settle(conn, now, force=True)
                self._close(conn, ev)
            else:
                self._count(conn, ev)
                self._schedule(conn.ftuple, since, i + 1)

    def _read(self, conns: Sequence[_Conn]) -> Sequence[CtEvent | None]:
        """The conntrack entries of ``conns`` (one batch), None for each without one."""
        if self.counters is None or not conns:
            return [None] * len(conns)
        return self.counters([c.ftuple for c in conns])

    def _rec(self, raw: RawKey, key: FlowKey) -> FlowRecord | None:
        """The open record of ``key`` (looked up by ``raw``: cheaper to hash)."""
        rec = self._by_raw.get(raw)
        if rec is None:
            rec = self._record(key)
            if rec is not None:
                self._by_raw[raw] = rec
        return rec

    def _record(self, key: FlowKey) -> FlowRecord | None:
        rec = self.records.get(key)
        if rec is None:
            if len(self.records) >= self.max_flows:
                self.dropped["flows"] += 1
                return None
            pending = self.pending.pending(key) if self.pending is not None else None
            rec = FlowRecord(self.bucket_start, self.bucket_start, self.node, key, pending)
            self.records[key] = rec
        return rec

    def _settle(self, conn: _Conn, now: float, force: bool = False) -> None:
        """Record every direction whose evaluation ended (allow/deny). A direction whose
        trace so far ends in a Pass waits for its next step (another NFLOG group's batch may
        bring it later) up to :data:`_INCOMPLETE_TTL` (or ``force``), then is counted as
        ``incomplete_trace`` and dropped."""
        t = conn.ftuple
        waiting = False
        src = dst = None
        for d, trace in conn.traces.items():
            n = conn.evals.get(d, 0)
            if not trace or not n:
                continue
            if not conn.ended.get(d, True):
                if force or now - conn.last > _INCOMPLETE_TTL:
                    self.dropped["incomplete_trace"] += n
                    conn.evals[d] = 0
                else:
                    waiting = True
                continue
            action: Literal["allow", "deny"] = "deny" if trace[-1].action == "deny" else "allow"
            if src is None or dst is None:
                src, dst = self.resolve_peer(t.src), self.resolve_peer(t.dst)
            raw: RawKey = (d, action, src, dst, t.proto, t.dport, tuple(conn.prefixes[d]))
            rec = self._by_raw.get(raw)
            if rec is not None:
                key = rec.key
            else:
                key = FlowKey(
                    reporter="src" if d == "egress" else "dst",
                    src=src,
                    dst=dst,
                    proto=t.proto,
                    dport=t.dport,
                    action=action,
                    trace=tuple(trace),
                )
                rec = self._rec(raw, key)
            conn.keys[d] = (raw, key)
            conn.evals[d] = 0
            nbytes, conn.ip_bytes[d] = conn.ip_bytes.get(d, 0), 0
            if rec is None:
                continue
            rec.end = now
            rec.connections += n
            if action == "deny":
                if d == "egress":
                    rec.packets_out += n
                    rec.bytes_out += nbytes
                else:
                    rec.packets_in += n
                    rec.bytes_in += nbytes
            elif not conn.allowed:
                conn.allowed = True
                self._schedule(t, now, 0)
        if waiting:
            self._unsettled.add(t)
        else:
            self._unsettled.discard(t)

    def _count(self, conn: _Conn, ev: CtEvent) -> None:
        po, bo, pr, br = ev.packets_orig, ev.bytes_orig, ev.packets_reply, ev.bytes_reply
        cpo, cbo, cpr, cbr = conn.counted
        dpo, dbo, dpr, dbr = max(po - cpo, 0), max(bo - cbo, 0), max(pr - cpr, 0), max(br - cbr, 0)
        conn.counted = (max(po, cpo), max(bo, cbo), max(pr, cpr), max(br, cbr))
        for d, (raw, key) in conn.keys.items():
            if key.action != "allow":
                continue
            rec = self._rec(raw, key)
            if rec is None:
                continue
            if d == "egress":  # reporter src: out = original direction
                rec.packets_out += dpo
                rec.bytes_out += dbo
                rec.packets_in += dpr
                rec.bytes_in += dbr
            else:
                rec.packets_in += dpo
                rec.bytes_in += dbo
                rec.packets_out += dpr
                rec.bytes_out += dbr

    def _close(self, conn: _Conn, ev: CtEvent | None) -> None:
        if ev is not None:
            self._count(conn, ev)
        if conn.allowed:
            for raw, key in conn.keys.values():
                if key.action == "allow":
                    rec = self._rec(raw, key)
                    if rec is not None:
                        rec.connections_completed += 1
        self.conns.pop(conn.ftuple, None)
        self._unsettled.discard(conn.ftuple)

    def stats(self) -> Mapping[str, int]:
        return {
            "conns": len(self.conns),
            "flows": len(self.records),
            "nflog_messages": self.nflog_messages,
            **{f"dropped_{k}": v for k, v in self.dropped.items()},
        }
