"""NFLOG messages back in logging order (pycalico.system.nfnetlink.NflogReorder): the kernel
batches each group separately, so a Pass (group 1) can arrive after the Deny (group 2) it
preceded; the reader releases a message only when everything logged before it must have
arrived, in sequence order, across the 32-bit wrap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pycalico.flows.aggregate import Aggregator
from pycalico.flows.record import Peer
from pycalico.system.nfnetlink import FiveTuple, NflogPacket, NflogReorder, parse_l3l4

SYN = bytes.fromhex(
    "45000028000100004006" + "0000" + "0a000001" + "0a000002" + "9c400050" + "00" * 16
)


def pkt(seq: int, prefix: str = "x", group: int = 1) -> NflogPacket:
    return NflogPacket(group, prefix, 0, 0, 0, 0, SYN, seq)


def test_a_later_group_batch_is_put_back_before_the_deny_it_preceded() -> None:
    r = NflogReorder(hold=0.05)
    assert r.push(10.0, [pkt(8, "DPI|default", 2)]) == []  # the Deny's batch first
    assert r.pop_ready(10.01) == []  # held: an earlier message may still come
    r.push(10.02, [pkt(7, "PPI0|gnp/sec.p", 1)])  # the Pass's batch, 20 ms later
    assert r.next_due() == 10.05
    assert [p.seq for p in r.pop_ready(10.05)] == [7, 8]
    assert len(r) == 0 and r.next_due() is None
    assert r.push(11.0, [pkt(-1)]) == [pkt(-1)]  # no sequence number: passes at once
    # the aggregator joins them into one trace (pass, then the deciding deny)
    a = Aggregator("n1", lambda p: None, lambda ip: Peer("net", ip))
    t = parse_l3l4(SYN)
    assert t == FiveTuple("10.0.0.1", "10.0.0.2", 6, 40000, 80)
    for p in (pkt(7, "PPI0|gnp/sec.p"), pkt(8, "DPI|default", 2)):
        a.on_nflog(1.0, p.prefix, t, 40)
    a.tick(1.0)
    (rec,) = a.snapshot(1.0)
    assert [s.action for s in rec.key.trace] == ["pass", "deny"] and rec.connections == 1


@given(st.integers(0, 2**32 - 1), st.permutations(list(range(12))), st.integers(1, 11))
def test_release_is_in_sequence_order_across_the_wrap(
    base: int, order: list[int], split: int
) -> None:
    r = NflogReorder(hold=0.05)
    r.push(0.0, [pkt((base + i) % 2**32) for i in order[:split]])
    r.push(0.01, [pkt((base + i) % 2**32) for i in order[split:]])
    out = r.pop_ready(0.07)
    assert [p.seq for p in out] == [(base + i) % 2**32 for i in range(12)]


def test_fast_conntrack_tuple_parse_agrees_with_the_generic_one() -> None:
    from pycalico.system import ctnetlink as nf

    for t in (FiveTuple("10.0.0.1", "10.0.0.2", 6, 40000, 80),
              FiveTuple("192.0.2.7", "10.9.8.7", 17, 53, 65535),
              FiveTuple("fd00::1", "fd00::2", 6, 1, 2),
              FiveTuple("10.0.0.1", "10.0.0.2", 1, 0, 0)):  # fmt: skip
        msg = nf._NFGEN.pack(2, 0, 0) + nf._tuple_attr(t)
        assert nf.ConntrackEvents._event(nf._CT_DELETE, msg).tuple == t
        fast = nf._fast_tuple(msg)
        assert fast == (t if t.proto in (6, 17) and ":" not in t.src else None)
    assert nf._fast_tuple(b"\0" * 20) is None
