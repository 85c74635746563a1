"""Flow aggregation: trace joining, counters, buckets, bounds; the store; the record JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pycalico.felix.rules.nflog import RuleRef, prefix_for
from pycalico.flows.aggregate import Aggregator
from pycalico.flows.record import FlowKey, FlowRecord, Peer
from pycalico.flows.store import FilterError, FlowFilter, FlowStore
from pycalico.system.ctnetlink import CtEvent
from pycalico.system.nfnetlink import FiveTuple, parse_l3l4

PASS = RuleRef("pass", "ingress", "policy", "sec", "gnp", "", "sec.p", 0)
ALLOW_IN = RuleRef("allow", "ingress", "policy", "default", "np", "ns1", "b-in", 1)
DENY_IN = RuleRef("deny", "ingress", "policy", "default", "np", "ns1", "b-in", 0)
ALLOW_OUT = RuleRef("allow", "egress", "profile", name="kns.ns1", rule=0)
REFS = {prefix_for(r): r for r in (PASS, ALLOW_IN, DENY_IN, ALLOW_OUT)}
PEERS = {"10.0.0.1": Peer("wep", "10.0.0.1", "ns1", "a", (("app", "a"),)),
         "10.0.0.2": Peer("wep", "10.0.0.2", "ns1", "b", (("app", "b"),))}  # fmt: skip
T = FiveTuple("10.0.0.1", "10.0.0.2", 6, 40000, 80)


def peer(ip: str) -> Peer:
    return PEERS.get(ip, Peer("net", ip))


class Counters:
    def __init__(self) -> None:
        self.values: dict[FiveTuple, CtEvent] = {}

    def __call__(self, ts: Sequence[FiveTuple]) -> list[CtEvent | None]:
        return [self.values.get(t) for t in ts]


def agg(**kw: Any) -> tuple[Aggregator, Counters]:
    c = Counters()
    a = Aggregator("node1", REFS.get, peer, interval=15.0, counters=c, now=1500.0, **kw)
    return a, c


def test_allowed_connection_joins_both_directions_and_counts_bytes_on_close() -> None:
    a, c = agg()
    a.on_nflog(1500.1, prefix_for(ALLOW_OUT), T, 60)
    a.on_nflog(1500.1, prefix_for(PASS), T, 60)
    a.on_nflog(1500.1, prefix_for(ALLOW_IN), T, 60)
    a.tick(1500.5)
    recs = {r.key.reporter: r for r in a.snapshot(1500.5)}
    assert set(recs) == {"src", "dst"}
    dst = recs["dst"]
    assert dst.key.action == "allow" and dst.policy == ALLOW_IN
    assert dst.key.trace == (PASS, ALLOW_IN)
    assert dst.key.src.name == "a" and dst.key.dst.name == "b" and dst.connections == 1
    c.values[T] = CtEvent("update", T, 5, 500, 4, 4000)
    a.on_ct(1501.0, CtEvent("update", T, tcp_state=7))  # TIME_WAIT: read the counters
    recs = {r.key.reporter: r for r in a.snapshot(1501.0)}
    assert (recs["dst"].packets_in, recs["dst"].bytes_in) == (5, 500)  # towards b
    assert (recs["dst"].packets_out, recs["dst"].bytes_out) == (4, 4000)
    assert (recs["src"].packets_out, recs["src"].bytes_out) == (5, 500)  # from a
    assert recs["src"].connections_completed == 1 and not a.conns


def test_a_pod_to_host_packet_allowed_out_and_dropped_by_the_host_default() -> None:
    """The egress allow (the pod's profile) and the host's default drop (``DHI``) of one
    packet: two records, the source's allow and the destination's deny, as for pod -> pod."""
    host = RuleRef("deny", "ingress", "host")
    a, _ = agg()
    a.resolve_ref = {**REFS, prefix_for(host): host}.get
    t = FiveTuple("10.0.0.1", "198.18.0.1", 1, 0, 0)
    a.on_nflog(1500.1, prefix_for(ALLOW_OUT), t, 84)
    a.on_nflog(1500.1, prefix_for(host), t, 84)
    a.tick(1500.5)
    recs = {r.key.reporter: r for r in a.snapshot(1500.5)}
    assert recs["src"].key.action == "allow" and recs["src"].policy == ALLOW_OUT
    assert recs["dst"].key.action == "deny" and recs["dst"].policy == host
    assert recs["dst"].packets_in == 1 and recs["dst"].key.dst.kind == "net"
    assert a.verdicts[("", "endpoint-to-host-default", "", "ingress", "deny")] == 1


def test_denied_retransmits_count_as_evaluations_and_buckets_roll() -> None:
    a, _ = agg()
    for i in range(3):
        a.on_nflog(1501.0 + i, prefix_for(DENY_IN), T, 60)
        a.tick(1501.5 + i)
    (rec,) = a.snapshot(1504.0)
    assert rec.key.action == "deny" and rec.policy == DENY_IN
    assert (rec.connections, rec.packets_in, rec.bytes_in) == (3, 3, 180)
    done = a.tick(1515.0)
    assert len(done) == 1 and done[0].end == 1515.0 and done[0].start == 1500.0
    assert a.snapshot(1515.0) == []


def test_unknown_and_malformed_prefixes_are_counted_not_raised() -> None:
    a, _ = agg()
    a.on_nflog(1500.0, "calico-packet", T)
    a.on_nflog(1500.0, "\x00garbage|||", T)
    a.on_nflog(1500.0, prefix_for(ALLOW_IN), None)
    a.tick(1501.0)
    assert a.dropped["unknown_prefix"] == 2 and a.dropped["malformed_packet"] == 1
    assert a.snapshot(1501.0) == []


def test_unmapped_but_well_formed_prefix_is_decoded_without_the_tier() -> None:
    a, _ = agg()
    a.on_nflog(1500.0, "DPI3|gnp/other", T)
    a.tick(1501.0)
    (rec,) = a.snapshot(1501.0)
    assert rec.policy is not None and (rec.policy.name, rec.policy.rule) == ("other", 3)


def test_memory_is_bounded_with_drop_counters() -> None:
    a, _ = agg(max_conns=2, max_flows=1)
    for port in range(5):
        a.on_nflog(1500.0, prefix_for(DENY_IN), FiveTuple("10.0.0.1", "10.0.0.2", 6, port, port))
    assert len(a.conns) == 2 and a.dropped["conns"] == 3
    a.tick(1501.0)
    assert len(a.records) == 1 and a.dropped["flows"] == 1


class Pending:
    def pending(self, key: FlowKey) -> dict[str, Any] | None:
        return {"action": "deny", "trace": []} if key.action == "allow" else None


def test_pending_evaluator_fills_pending() -> None:
    a, _ = agg(pending=Pending())
    a.on_nflog(1500.0, prefix_for(ALLOW_IN), T)
    a.tick(1501.0)
    (rec,) = a.snapshot(1501.0)
    assert rec.pending == {"action": "deny", "trace": []}
    assert rec.to_json()["pending"]["action"] == "deny"


def _record(action: str = "deny", end: float = 1000.0, ref: RuleRef = DENY_IN) -> FlowRecord:
    key = FlowKey("dst", PEERS["10.0.0.1"], PEERS["10.0.0.2"], 6, 80, action, (ref,))  # type: ignore[arg-type]
    return FlowRecord(end - 15, end, "node1", key, packets_in=2, connections=1)


def test_record_json_round_trips() -> None:
    r = _record()
    d = r.to_json()
    assert d["proto"] == "TCP" and d["src"]["labels"] == {"app": "a"}
    assert d["policy"]["name"] == "b-in" and d["policy"]["rule"] == 0
    assert FlowRecord.from_json(d).to_json() == d
    eot = RuleRef("deny", "ingress", "policy", tier="default")
    assert RuleRef.from_json(eot.to_json()) == eot
    prof = RuleRef("deny", "egress", "profile")
    assert RuleRef.from_json(prof.to_json()) == prof


def test_filters() -> None:
    r = _record()
    assert FlowFilter(src="ns1/a").matches(r) and not FlowFilter(src="ns1/b").matches(r)
    assert FlowFilter(dst="10.0.0.0/24").matches(r) and FlowFilter(src="ns1/*").matches(r)
    assert FlowFilter(action="deny", policy="b-in").matches(r)
    assert FlowFilter(policy="ns1/b-in").matches(r) and not FlowFilter(policy="x").matches(r)
    assert not FlowFilter(action="allow").matches(r)
    eot = _record(ref=RuleRef("deny", "ingress", "policy", tier="default"))
    assert FlowFilter(policy="end-of-tier").matches(eot)
    for bad in ({"action": "drop"}, {"src": "nonsense"}, {"dst": "10.0.0.0/99"}):
        with pytest.raises(FilterError):
            FlowFilter(**bad)


def test_store_retention_size_and_query(tmp_path: Path) -> None:
    s = FlowStore(str(tmp_path / "f" / "flows.db"), max_bytes=1 << 30, retention=3600)
    import time

    now = time.time()
    assert s.append([_record(end=now - 7200), _record(end=now), _record("allow", now, ALLOW_IN)])
    assert s.count() == 2  # the 2-hour-old record is past retention
    assert [r.key.action for r in s.query(FlowFilter(action="deny"))] == ["deny"]
    small = FlowStore(str(tmp_path / "small.db"), max_bytes=64 << 10, retention=3600)
    for _ in range(50):
        small.append([_record(end=now) for _ in range(20)])
    assert small.size() <= 64 << 10 and small.evicted > 0 and small.count() < 1000
    small.close()
    (tmp_path / "ro").mkdir()
    s.close()
    # A store that cannot write counts the loss instead of raising.
    broken = FlowStore(str(tmp_path / "b.db"), max_bytes=1 << 20, retention=3600)
    broken._db.execute("DROP TABLE flows")
    assert broken.append([_record(end=now)]) is False and broken.lost == 1


def test_parse_l3l4() -> None:
    v4 = bytes.fromhex("4500003c0000400040060000") + bytes([10, 0, 0, 1, 10, 0, 0, 2])
    v4 += (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    assert parse_l3l4(v4) == T
    assert parse_l3l4(b"") is None and parse_l3l4(b"\x45\x00") is None
    icmp = bytes.fromhex("4500001c00004000400100000a0000010a000002") + b"\x08\x00"
    assert parse_l3l4(icmp) == FiveTuple("10.0.0.1", "10.0.0.2", 1, 0, 0)


def test_close_event_before_the_nflog_is_applied_when_the_trace_settles() -> None:
    a, _ = agg()
    a.on_ct(1500.0, CtEvent("destroy", T, 3, 180, 2, 120))  # NFLOG still batched
    a.on_nflog(1500.05, prefix_for(ALLOW_IN), T, 60)
    a.tick(1500.5)
    (rec,) = a.snapshot(1500.5)
    assert (rec.packets_in, rec.bytes_in, rec.connections_completed) == (3, 180, 1)
    assert not a.conns
    a.on_ct(1501.0, CtEvent("destroy", FiveTuple("10.0.0.9", "10.0.0.2", 6, 1, 80)))
    a.tick(1504.0)  # expired: never joined
    assert not a._early


def test_a_pass_step_waits_for_the_deciding_step_from_the_other_group() -> None:
    a, _ = agg()
    a.on_nflog(1500.0, prefix_for(PASS), T, 60)  # group 1's batch
    a.tick(1500.5)
    assert a.snapshot(1500.5) == []  # not decided yet: nothing recorded
    a.on_nflog(1500.8, prefix_for(DENY_IN), T, 60)  # group 2's batch, later
    a.tick(1500.9)
    (rec,) = a.snapshot(1500.9)
    assert rec.key.action == "deny" and rec.key.trace == (PASS, DENY_IN)
    assert rec.connections == 1
    # A pass that never gets its deciding step is dropped (counted) after 2 s.
    t2 = FiveTuple("10.0.0.1", "10.0.0.2", 6, 40001, 80)
    a.on_nflog(1501.0, prefix_for(PASS), t2, 60)
    a.tick(1503.5)
    assert a.dropped["incomplete_trace"] == 1 and len(a.snapshot(1503.5)) == 1


def test_polled_entries_close_a_connection_without_update_events() -> None:
    # The collector's mode: no per-state UPDATE events; the entry is read 0.5 s, 2 s, 5 s
    # after the connection settled; a closing TCP state closes it with its counters.
    a, c = agg(poll_after=(0.5, 2.0, 5.0))
    a.on_nflog(1500.1, prefix_for(ALLOW_IN), T, 60)
    a.tick(1500.2)
    c.values[T] = CtEvent("destroy", T, 2, 120, 1, 60, tcp_state=3)  # ESTABLISHED
    a.tick(1500.6)
    (rec,) = a.snapshot(1500.6)
    assert rec.packets_in == 0  # not read yet (due 0.5 s after settling at 1500.2)
    a.tick(1500.75)  # first read: still open, counted so far
    (rec,) = a.snapshot(1500.75)
    assert (rec.packets_in, rec.bytes_in, rec.connections_completed) == (2, 120, 0)
    c.values[T] = CtEvent("destroy", T, 5, 500, 4, 4000, tcp_state=7)  # TIME_WAIT
    a.tick(1501.0)
    assert T in a.conns  # the next read is due 2 s after settling
    a.tick(1502.3)
    (rec,) = a.snapshot(1502.3)
    assert (rec.packets_in, rec.bytes_in, rec.bytes_out) == (5, 500, 4000)  # not twice
    assert rec.connections_completed == 1 and not a.conns
    # A denied connection is never read.
    a.on_nflog(1503.0, prefix_for(DENY_IN), FiveTuple("10.0.0.1", "10.0.0.2", 6, 2, 80), 60)
    a.tick(1503.1)
    c.values.clear()
    a.tick(1510.0)
    assert not a._polls
