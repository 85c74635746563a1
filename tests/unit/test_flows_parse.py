"""The collector's hot paths read netlink bytes in place (pycalico.system.nfnetlink and
.ctnetlink): the NFLOG packet parser, the batched conntrack GET (request layout, answer
parsing) agree with the generic attribute walkers; malformed input is counted, never
raised. The aggregator reads due conntrack entries in one batch and resolves each prefix
once per bucket; the reader thread yields the CPU to workloads."""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from pycalico.felix.rules.nflog import RuleRef, prefix_for
from pycalico.flows.aggregate import Aggregator
from pycalico.flows.record import Peer
from pycalico.system import ctnetlink as ct
from pycalico.system import nfnetlink as nf
from pycalico.system.ctnetlink import CtEvent
from pycalico.system.nfnetlink import FiveTuple

SYN = bytes.fromhex(
    "45000028000100004006" + "0000" + "0a000001" + "0a000002" + "9c400050" + "00" * 16
)


def _nlmsg(typ: int, body: bytes, seq: int = 0) -> bytes:
    msg = nf._NLMSG_HDR.pack(16 + len(body), typ, 0, seq, 0) + body
    return msg + b"\0" * (-len(msg) % 4)


def _nflog_body(prefix: bytes, seq: int, group: int = 2) -> bytes:
    return (
        nf._NFGEN.pack(socket.AF_INET, 0, socket.htons(group))
        + nf._nla(nf._ULA_PACKET_HDR, struct.pack("!HBx", 0x0800, 3))
        + nf._nla(nf._ULA_PREFIX, prefix + b"\0")
        + nf._nla(nf._ULA_IFINDEX_INDEV, struct.pack("!I", 7))
        + nf._nla(nf._ULA_MARK, struct.pack("!I", 0x10000))
        + nf._nla(nf._ULA_SEQ_GLOBAL, struct.pack("!I", seq))
        + nf._nla(nf._ULA_PAYLOAD, SYN)
    )


class _Datagrams(nf.NflogSocket):
    def __init__(self, bufs: list[bytes]) -> None:  # no socket: reads the given datagrams
        self.bufs = bufs
        self.malformed = 0
        self.overruns = 0

    def _recv(self, timeout: float | None) -> bytes | None:
        return self.bufs.pop(0) if self.bufs else None


def test_nflog_messages_are_parsed_in_place_and_malformed_ones_counted() -> None:
    typ = nf._ULNL_PACKET_TYPE
    good = _nflog_body(b"DPI|default", 41)
    truncated = good[:-3]  # the payload attribute runs past the message
    bad_attr = _nlmsg(typ, good[:4] + struct.pack("=HH", 2, 9))  # attribute length < 4
    s = _Datagrams([_nlmsg(typ, good) + _nlmsg(typ, _nflog_body(b"API0|gnp/x", 42, 1)),
                    _nlmsg(typ, truncated) + bad_attr, b"\x10\0\0"])  # fmt: skip
    p1, p2 = s.read(0) or []
    assert p1 == nf.NflogPacket(2, "DPI|default", 3, 7, 0, 0x10000, SYN, 41)
    assert (p2.group, p2.prefix, p2.seq) == (1, "API0|gnp/x", 42)
    assert nf.parse_l3l4(p1.payload) == FiveTuple("10.0.0.1", "10.0.0.2", 6, 40000, 80)
    assert s.read(0) == [] and s.malformed == 2
    assert s.read(0) == [] and s.read(0) is None  # a runt datagram: nothing, no raise


def _answer(t: FiveTuple, counters: tuple[int, int, int, int], state: int) -> bytes:
    """A GET answer as the kernel writes it: tuples, status, counters, protoinfo."""
    po, bo, pr, br = counters

    def cnt(typ: int, p: int, b: int) -> bytes:
        inner = nf._nla(1, struct.pack("!Q", p)) + nf._nla(2, struct.pack("!Q", b))
        return nf._nla(typ | ct._NLA_F_NESTED, inner)

    tcp = nf._nla(ct._CTA_PROTOINFO_TCP | ct._NLA_F_NESTED,
                  nf._nla(ct._CTA_PROTOINFO_TCP_STATE, bytes([state]))
                  + nf._nla(2, b"\x07"))  # fmt: skip
    return (
        nf._NFGEN.pack(socket.AF_INET, 0, 0)
        + ct._tuple_attr(t)
        + nf._nla(3, struct.pack("!I", 0x18E))  # CTA_STATUS
        + cnt(ct._CTA_COUNTERS_ORIG, po, bo)
        + cnt(ct._CTA_COUNTERS_REPLY, pr, br)
        + nf._nla(ct._CTA_PROTOINFO | ct._NLA_F_NESTED, tcp)
    )


def test_conntrack_get_requests_and_answers_agree_with_the_generic_layout() -> None:
    for t in (FiveTuple("10.0.0.1", "10.0.0.2", 6, 40000, 80),
              FiveTuple("192.0.2.7", "10.9.8.7", 17, 53, 65535),
              FiveTuple("fd00::1", "fd00::2", 6, 1, 2)):  # fmt: skip
        fam = socket.AF_INET6 if ":" in t.src else socket.AF_INET
        body = nf._NFGEN.pack(fam, 0, 0) + ct._tuple_attr(t)
        assert ct._get_request(t, 9) == nf._NLMSG_HDR.pack(
            16 + len(body), ct._CT_GET_TYPE, nf.NLM_F_REQUEST, 9, 0) + body  # fmt: skip
        data = _answer(t, (5, 269, 4, 217), 7)
        got = ct._entry(t, data)
        assert got == CtEvent("destroy", t, 5, 269, 4, 217, 7)
        assert got == ct.ConntrackEvents._event(ct._CT_DELETE, data)
    # counters with another layout (a pad attribute first) go through the generic walker
    inner = nf._nla(3, b"\0" * 4) + nf._nla(1, struct.pack("!Q", 3))
    inner += nf._nla(2, struct.pack("!Q", 99))
    odd = nf._nla(ct._CTA_COUNTERS_ORIG | ct._NLA_F_NESTED, inner)
    assert ct._entry(t, nf._NFGEN.pack(0, 0, 0) + odd)[2:4] == (3, 99)


class _Kernel:
    """Stands in for the query socket: answers every request of a datagram, by sequence."""

    def __init__(self, table: dict[FiveTuple, CtEvent]) -> None:
        self.table = table
        self.sends = 0
        self.queue: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sends += 1
        off = 0
        while off < len(data):
            length, _typ, _f, seq, _pid = nf._NLMSG_HDR.unpack_from(data, off)
            t = ct._ct_tuple(data[off + 16 + 4 + 4 : off + length])
            assert t is not None
            ev = self.table.get(t)
            if ev is None:  # ENOENT
                self.queue.append(_nlmsg(nf.NLMSG_ERROR, struct.pack("=i", -2), seq))
            else:
                c = (ev.packets_orig, ev.bytes_orig, ev.packets_reply, ev.bytes_reply)
                self.queue.append(_nlmsg(ct._CT_REPLY_TYPE, _answer(t, c, ev.tcp_state), seq))
            off += (length + 3) & ~3
        return len(data)

    def recv_into(self, buf: bytearray) -> int:
        if not self.queue:
            raise TimeoutError
        msg = self.queue.pop(0)
        buf[: len(msg)] = msg
        return len(msg)


def test_get_many_batches_requests_and_matches_answers_by_sequence() -> None:
    ts = [FiveTuple("10.0.0.1", "10.0.0.2", 6, 1000 + i, 80) for i in range(ct.GET_BATCH + 6)]
    table = {t: CtEvent("destroy", t, i, 10 * i, 1, 1, 3) for i, t in enumerate(ts) if i % 3}
    reader = ct.ConntrackEvents.__new__(ct.ConntrackEvents)
    reader._seq, reader.malformed = 100, 0
    reader._buf = bytearray(nf._RECV_SIZE)
    reader._view = memoryview(reader._buf)
    reader._query = kernel = _Kernel(table)  # type: ignore[assignment]
    # a stale answer from an abandoned batch (lower sequence) is skipped
    kernel.queue.append(_nlmsg(nf.NLMSG_ERROR, struct.pack("=i", -2), 7))
    got = reader.get_many(ts)
    assert kernel.sends == 2  # one datagram per GET_BATCH requests
    assert got == [table.get(t) for t in ts]


def test_due_entries_are_read_in_one_batch_and_prefixes_resolved_once_per_bucket() -> None:
    allow = RuleRef("allow", "ingress", "policy", "default", "np", "ns1", "b-in", 1)
    calls: list[Sequence[FiveTuple]] = []
    lookups: list[str] = []

    def counters(ts: Sequence[FiveTuple]) -> list[CtEvent | None]:
        calls.append(list(ts))
        return [CtEvent("destroy", t, 2, 120, 1, 60, tcp_state=7) for t in ts]

    def resolve(prefix: str) -> RuleRef | None:
        lookups.append(prefix)
        return {prefix_for(allow): allow}.get(prefix)

    a = Aggregator("n1", resolve, lambda ip: Peer("net", ip), interval=15.0,
                   counters=counters, now=1500.0, poll_after=(0.5,))  # fmt: skip
    ts = [FiveTuple("10.0.0.1", "10.0.0.2", 6, 40000 + i, 80) for i in range(3)]
    for t in ts:
        a.on_nflog(1500.1, prefix_for(allow), t, 60)
    a.tick(1500.1)
    a.tick(1500.7)
    assert [sorted(c) for c in calls] == [ts]  # one read for the three due entries
    (rec,) = a.snapshot(1500.7)
    assert (rec.connections, rec.connections_completed, rec.bytes_in) == (3, 3, 360)
    assert lookups == [prefix_for(allow)] and a.verdicts[
        ("default", "np/ns1/b-in", "1", "ingress", "allow")] == 3  # fmt: skip
    a.tick(1515.0)  # the bucket rolls: resolved again (Felix's map may have changed)
    a.on_nflog(1515.1, prefix_for(allow), ts[0], 60)
    assert len(lookups) == 2


def test_the_reader_thread_yields_the_cpu_to_workloads() -> None:
    import os
    import threading

    from pycalico.flows import collector

    seen: dict[str, int] = {}

    def reader() -> None:
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        collector._yield_to_workloads()
        seen["policy"] = os.sched_getscheduler(0)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, tid) - before
        seen["want"] = min(before + collector.READER_NICE, 19) - before  # 19: the lowest

    t = threading.Thread(target=reader)
    t.start()
    t.join()
    assert seen["policy"] == os.SCHED_BATCH and seen["nice"] == seen["want"]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # only that thread
