"""Typed readers of two netfilter netlink streams: NFLOG (nfnetlink_log) and conntrack events.

pyroute2 (0.9) has no nfnetlink_log support, and its conntrack socket only dumps; both
streams are small fixed protocols, read here with :mod:`socket` and :mod:`struct`.

Owns :class:`NflogSocket` (bind NFLOG groups, copy the first bytes of each packet, parse
``NFULNL_MSG_PACKET`` into :class:`NflogPacket`), :class:`NflogReorder` (the logging order
across groups when the kernel batches), :class:`ConntrackEvents` (subscribe to
the conntrack NEW and DESTROY multicast groups, parse into :class:`CtEvent` with the
original tuple and the per-direction packet/byte counters) and :func:`parse_l3l4` (the
5-tuple of an IPv4/IPv6 packet's first bytes).

Invariants: the sockets live in the network namespace of the calling thread; a malformed
message is skipped (counted in ``malformed``), never raised; a socket buffer overrun
(``ENOBUFS``) is counted in ``overruns`` and reading continues. Nothing here affects
forwarding: NFLOG is a non-terminal statement and the kernel drops log messages when no
one listens.
"""

from __future__ import annotations

import errno
import heapq
import os
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

NETLINK_NETFILTER = 12
_SO_RCVBUFFORCE = 33  # Linux; not exported by the socket module
_NLMSG_HDR = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")  # family, version, res_id (big endian on the wire)
_NLA = struct.Struct("=HH")
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NLMSG_DONE = 3
# nfnetlink_log
_SUBSYS_ULOG = 4
_ULNL_MSG_PACKET = 0
_ULNL_MSG_CONFIG = 1
_CFG_CMD = 1
_CFG_MODE = 2
_CFG_NLBUFSIZ = 3
_CFG_TIMEOUT = 4
_CFG_QTHRESH = 5
_CFG_FLAGS = 6
_CFG_F_SEQ_GLOBAL = 0x0002
_CMD_BIND = 1
_CMD_PF_BIND = 3
_COPY_PACKET = 2
_ULA_PACKET_HDR = 1
_ULA_MARK = 2
_ULA_IFINDEX_INDEV = 4
_ULA_IFINDEX_OUTDEV = 5
_ULA_PAYLOAD = 9
_ULA_PREFIX = 10
_ULA_SEQ_GLOBAL = 13
# ctnetlink
_SUBSYS_CT = 1
_CT_NEW = 0
_CT_DELETE = 2
_CT_GET = 1
_GRP_CT_NEW = 1
_GRP_CT_UPDATE = 2
_GRP_CT_DESTROY = 3
_CTA_PROTOINFO = 4
_CTA_PROTOINFO_TCP = 1
_CTA_PROTOINFO_TCP_STATE = 1
_NLA_F_NESTED = 0x8000
#: TCP conntrack states after which a connection carries no more data (FIN_WAIT,
#: CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE).
TCP_CLOSING = frozenset({4, 5, 6, 7, 8})
_CTA_TUPLE_ORIG = 1
_CTA_COUNTERS_ORIG = 9
_CTA_COUNTERS_REPLY = 10
_CTA_TUPLE_IP = 1
_CTA_TUPLE_PROTO = 2
_CTA_PROTO_NUM = 1
_CTA_PROTO_SRC_PORT = 2
_CTA_PROTO_DST_PORT = 3


@dataclass(frozen=True)
class FiveTuple:
    src: str
    dst: str
    proto: int
    sport: int
    dport: int


@dataclass(frozen=True)
class NflogPacket:
    """One NFLOG message; ``seq``: the namespace-wide sequence number of the log call
    (orders messages across groups; -1 when the kernel sent none)."""

    group: int
    prefix: str
    hook: int
    indev: int
    outdev: int
    mark: int
    payload: bytes
    seq: int = -1


@dataclass(frozen=True)
class CtEvent:
    """``update`` events carry no counters (the kernel sends them only on destroy and in
    answers to :meth:`ConntrackEvents.get`); ``tcp_state`` is -1 when not reported."""

    kind: Literal["new", "update", "destroy"]
    tuple: FiveTuple | None
    packets_orig: int = 0
    bytes_orig: int = 0
    packets_reply: int = 0
    bytes_reply: int = 0
    tcp_state: int = -1


def _attrs(data: bytes, off: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type without flags, payload) of each netlink attribute in ``data[off:]``."""
    end = len(data)
    while off + 4 <= end:
        length, typ = _NLA.unpack_from(data, off)
        if length < 4 or off + length > end:
            raise ValueError("truncated attribute")
        yield typ & 0x3FFF, data[off + 4 : off + length]
        off += (length + 3) & ~3


def _messages(buf: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, flags, message body) of each netlink message in one datagram."""
    off = 0
    while off + _NLMSG_HDR.size <= len(buf):
        length, typ, flags, _seq, _pid = _NLMSG_HDR.unpack_from(buf, off)
        if length < _NLMSG_HDR.size or off + length > len(buf):
            raise ValueError("truncated netlink message")
        yield typ, flags, buf[off + _NLMSG_HDR.size : off + length]
        off += (length + 3) & ~3


def parse_l3l4(payload: bytes) -> FiveTuple | None:
    """The 5-tuple of a packet starting at its IP header (ports 0 for protocols without
    ports, e.g. ICMP); None when it is not parseable."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0xF) * 4
        proto = payload[9]
        src = socket.inet_ntop(socket.AF_INET, payload[12:16])
        dst = socket.inet_ntop(socket.AF_INET, payload[16:20])
        l4 = payload[ihl:]
    elif version == 6 and len(payload) >= 40:
        proto = payload[6]
        src = socket.inet_ntop(socket.AF_INET6, payload[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, payload[24:40])
        l4 = payload[40:]
    else:
        return None
    sport = dport = 0
    if proto in (6, 17, 132, 136) and len(l4) >= 4:
        sport, dport = struct.unpack_from("!HH", l4)
    return FiveTuple(src, dst, proto, sport, dport)


class _NetfilterSocket:
    def __init__(self, groups: int = 0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:  # as root: beyond net.core.rmem_max (bursts of thousands of new connections)
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 16 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, groups))
        self.malformed = 0
        self.overruns = 0
        self._seq = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _request(self, msg_type: int, family: int, res_id: int, attrs: bytes) -> None:
        """Send one request and wait for its ACK (OSError with the kernel's errno)."""
        self._seq += 1
        body = _NFGEN.pack(family, 0, socket.htons(res_id)) + attrs
        hdr = _NLMSG_HDR.pack(
            _NLMSG_HDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, self._seq, 0
        )
        self.sock.send(hdr + body)
        while True:
            buf = self.sock.recv(65536)
            for typ, _flags, data in _messages(buf):
                if typ == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return

    def _recv(self, timeout: float | None) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1 << 17)
        except (TimeoutError, BlockingIOError):
            return None
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                self.overruns += 1
                return b""
            raise


def _nla(typ: int, payload: bytes) -> bytes:
    data = _NLA.pack(4 + len(payload), typ) + payload
    return data + b"\0" * (-len(data) % 4)


class NflogSocket(_NetfilterSocket):
    """Bound to NFLOG ``groups``; each packet copies its first ``copy_range`` bytes. The
    kernel queues messages per group and sends a datagram when ``qthresh`` are queued (or
    its buffer is full) or ``flush_cs`` hundredths of a second after the first was queued.

    Every message carries the namespace-wide sequence number of its log call
    (``NflogPacket.seq``): with ``qthresh`` > 1 one group's datagram can overtake the
    other's (a Pass in group 1 arriving after the deciding Deny in group 2), and the reader
    restores the logging order with :class:`NflogReorder`. A message received at time t
    was logged at or before t, and every message logged before it was sent by t +
    ``flush_cs``/100: that is the ``hold`` a reorder buffer needs."""

    def __init__(
        self,
        groups: tuple[int, ...],
        copy_range: int = 128,
        qthresh: int = 1,
        flush_cs: int = 1,
    ) -> None:
        super().__init__()
        self.flush_s = flush_cs / 100.0
        msg_type = (_SUBSYS_ULOG << 8) | _ULNL_MSG_CONFIG
        for fam in (socket.AF_INET, socket.AF_INET6):
            try:  # only needed by old kernels; newer ones answer EOPNOTSUPP or 0
                self._request(msg_type, fam, 0, _nla(_CFG_CMD, bytes([_CMD_PF_BIND])))
            except OSError:
                pass
        for g in groups:
            self._request(msg_type, 0, g, _nla(_CFG_CMD, bytes([_CMD_BIND])))
            self._request(
                msg_type, 0, g, _nla(_CFG_MODE, struct.pack("!IBB", copy_range, _COPY_PACKET, 0))
            )
            self._request(msg_type, 0, g, _nla(_CFG_NLBUFSIZ, struct.pack("!I", 65536)))
            self._request(msg_type, 0, g, _nla(_CFG_QTHRESH, struct.pack("!I", qthresh)))
            self._request(msg_type, 0, g, _nla(_CFG_TIMEOUT, struct.pack("!I", flush_cs)))
            self._request(msg_type, 0, g, _nla(_CFG_FLAGS, struct.pack("!H", _CFG_F_SEQ_GLOBAL)))

    def read(self, timeout: float | None = 1.0) -> list[NflogPacket] | None:
        """The packets of one datagram ([] for an overrun or other messages); None when
        nothing arrived within ``timeout`` (0: do not wait)."""
        buf = self._recv(timeout)
        out: list[NflogPacket] = []
        if buf is None:
            return None
        if not buf:
            return out
        try:
            for typ, _flags, data in _messages(buf):
                if typ != (_SUBSYS_ULOG << 8) | _ULNL_MSG_PACKET or len(data) < _NFGEN.size:
                    continue
                try:
                    out.append(self._packet(data))
                except (ValueError, struct.error, UnicodeDecodeError):
                    self.malformed += 1
        except ValueError:
            self.malformed += 1
        return out

    @staticmethod
    def _packet(data: bytes) -> NflogPacket:
        _fam, _ver, res_id = _NFGEN.unpack_from(data)
        prefix, payload = "", b""
        hook = indev = outdev = mark = 0
        seq = -1
        for typ, val in _attrs(data, _NFGEN.size):
            if typ == _ULA_SEQ_GLOBAL and len(val) == 4:
                (seq,) = struct.unpack("!I", val)
            elif typ == _ULA_PREFIX:
                prefix = val.split(b"\0", 1)[0].decode()
            elif typ == _ULA_PAYLOAD:
                payload = val
            elif typ == _ULA_PACKET_HDR and len(val) >= 3:
                hook = val[2]
            elif typ == _ULA_IFINDEX_INDEV and len(val) == 4:
                (indev,) = struct.unpack("!I", val)
            elif typ == _ULA_IFINDEX_OUTDEV and len(val) == 4:
                (outdev,) = struct.unpack("!I", val)
            elif typ == _ULA_MARK and len(val) == 4:
                (mark,) = struct.unpack("!I", val)
        return NflogPacket(socket.ntohs(res_id), prefix, hook, indev, outdev, mark, payload, seq)


class NflogReorder:
    """Releases NFLOG messages in logging order (``seq``) once nothing logged before them
    can still be on its way: a message received at t is released (with every message of a
    lower ``seq``) from t + ``hold``. Messages without a ``seq`` pass at once. The 32-bit
    sequence wraps; messages within 2**31 of each other compare correctly."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self._heap: list[tuple[int, int, NflogPacket]] = []
        self._arrivals: deque[tuple[float, int]] = deque()
        self._base: int | None = None
        self._ready: int | None = None  # every message up to this key may be released
        self._n = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, now: float, pkts: list[NflogPacket]) -> list[NflogPacket]:
        """Queue ``pkts`` (received at ``now``); returns those without a sequence number."""
        out = []
        for p in pkts:
            if p.seq < 0:
                out.append(p)
                continue
            if self._base is None:
                self._base = p.seq
            key = (p.seq - self._base + (1 << 31)) % (1 << 32) - (1 << 31)
            self._n += 1
            heapq.heappush(self._heap, (key, self._n, p))
            self._arrivals.append((now, key))
        return out

    def pop_ready(self, now: float) -> list[NflogPacket]:
        """The messages whose predecessors have all arrived, in logging order."""
        limit = now - self.hold
        while self._arrivals and self._arrivals[0][0] <= limit:
            key = self._arrivals.popleft()[1]
            self._ready = key if self._ready is None else max(self._ready, key)
        out: list[NflogPacket] = []
        while self._heap and self._ready is not None and self._heap[0][0] <= self._ready:
            out.append(heapq.heappop(self._heap)[2])
        if not self._heap:  # every message out: the remaining arrivals add nothing
            self._arrivals.clear()
            self._base = self._ready = None  # re-based on the next message (wrap-safe)
        return out

    def next_due(self) -> float | None:
        """When the next queued message becomes releasable (None: nothing queued)."""
        return self._arrivals[0][0] + self.hold if self._arrivals else None


def _ct_tuple(data: bytes) -> FiveTuple | None:
    src = dst = ""
    proto = sport = dport = 0
    for typ, val in _attrs(data):
        if typ == _CTA_TUPLE_IP:
            for t, v in _attrs(val):
                fam = socket.AF_INET if t in (1, 2) else socket.AF_INET6
                if t in (1, 3):
                    src = socket.inet_ntop(fam, v)
                elif t in (2, 4):
                    dst = socket.inet_ntop(fam, v)
        elif typ == _CTA_TUPLE_PROTO:
            for t, v in _attrs(val):
                if t == _CTA_PROTO_NUM:
                    proto = v[0]
                elif t == _CTA_PROTO_SRC_PORT:
                    (sport,) = struct.unpack("!H", v)
                elif t == _CTA_PROTO_DST_PORT:
                    (dport,) = struct.unpack("!H", v)
    if not src or not dst:
        return None
    if proto not in (6, 17, 132, 136):
        sport = dport = 0
    return FiveTuple(src, dst, proto, sport, dport)


def _counters(data: bytes) -> tuple[int, int]:
    packets = nbytes = 0
    for t, v in _attrs(data):
        if t == 1 and len(v) == 8:
            (packets,) = struct.unpack("!Q", v)
        elif t == 2 and len(v) == 8:
            (nbytes,) = struct.unpack("!Q", v)
    return packets, nbytes


def _tcp_state(data: bytes) -> int:
    for t, v in _attrs(data):
        if t == _CTA_PROTOINFO_TCP:
            for t2, v2 in _attrs(v):
                if t2 == _CTA_PROTOINFO_TCP_STATE and v2:
                    return v2[0]
    return -1


# The common layout of an IPv4 TCP/UDP original tuple (first attribute of a ctnetlink
# message): nest, IP nest (src, dst), proto nest (num, sport, dport); see _fast_tuple.
_V4_ORIG = struct.Struct("=HHHHHH4sHH4sHHHHB3xHHH2xHHH2x")
_V4_ORIG_SHAPE = (20, 1, 8, 1, 8, 2, 28, 2, 5, 1, 6, 2, 6, 3)


def _fast_tuple(data: bytes) -> FiveTuple | None:
    """The original tuple of an IPv4 TCP/UDP conntrack message by fixed offsets (one
    unpack); None when the message has another shape (the generic parser reads it)."""
    if len(data) < _NFGEN.size + _V4_ORIG.size:
        return None
    (_lo, to, li, ti, ls, ts, src, ld, td, dst, lp, tp, ln, tn, num, lsp, tsp, sport, ldp, tdp,
     dport) = _V4_ORIG.unpack_from(data, _NFGEN.size)  # fmt: skip
    shape = (li, ti & 0x3FFF, ls, ts, ld, td, lp, tp & 0x3FFF, ln, tn, lsp, tsp, ldp, tdp)
    if to & 0x3FFF != _CTA_TUPLE_ORIG or shape != _V4_ORIG_SHAPE or num not in (6, 17):
        return None
    return FiveTuple(socket.inet_ntop(socket.AF_INET, src), socket.inet_ntop(socket.AF_INET, dst),
                     num, socket.ntohs(sport), socket.ntohs(dport))  # fmt: skip


def _tuple_attr(t: FiveTuple) -> bytes:
    v4 = ":" not in t.src
    fam = socket.AF_INET if v4 else socket.AF_INET6
    ip = _nla(1 if v4 else 3, socket.inet_pton(fam, t.src)) + _nla(
        2 if v4 else 4, socket.inet_pton(fam, t.dst)
    )
    proto = _nla(_CTA_PROTO_NUM, bytes([t.proto]))
    if t.proto in (6, 17, 132, 136):
        proto += _nla(_CTA_PROTO_SRC_PORT, struct.pack("!H", t.sport))
        proto += _nla(_CTA_PROTO_DST_PORT, struct.pack("!H", t.dport))
    inner = _nla(_CTA_TUPLE_IP | _NLA_F_NESTED, ip) + _nla(_CTA_TUPLE_PROTO | _NLA_F_NESTED, proto)
    return _nla(_CTA_TUPLE_ORIG | _NLA_F_NESTED, inner)


class ConntrackEvents(_NetfilterSocket):
    """Conntrack DESTROY and (``updates``) UPDATE events, with ``with_new`` also NEW, of this
    network namespace (DESTROY carries the counters when ``net.netfilter.nf_conntrack_acct``
    is 1; a TCP connection sends an UPDATE per state change, so a reader that only needs
    counters skips them and reads entries with :meth:`get`)."""

    def __init__(
        self, with_new: bool = False, closing_only: bool = False, updates: bool = True
    ) -> None:
        groups = (1 << (_GRP_CT_DESTROY - 1)) | ((1 << (_GRP_CT_UPDATE - 1)) if updates else 0)
        super().__init__(groups | ((1 << (_GRP_CT_NEW - 1)) if with_new else 0))
        self._query: socket.socket | None = None
        # Skip UPDATE events unless TCP entered a closing state (cheap: no tuple parsing).
        self.closing_only = closing_only

    @staticmethod
    def _closing(data: bytes) -> bool:
        for typ, val in _attrs(data, _NFGEN.size):
            if typ == _CTA_PROTOINFO:
                return _tcp_state(val) in TCP_CLOSING
        return False

    def get(self, t: FiveTuple) -> CtEvent | None:
        """The current entry of original tuple ``t`` with its counters (None: gone)."""
        if self._query is None:
            self._query = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            self._query.settimeout(1.0)
        self._seq += 1
        fam = socket.AF_INET6 if ":" in t.src else socket.AF_INET
        body = _NFGEN.pack(fam, 0, 0) + _tuple_attr(t)
        msg_type = (_SUBSYS_CT << 8) | _CT_GET
        hdr = _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), msg_type, NLM_F_REQUEST, self._seq, 0)
        try:
            self._query.send(hdr + body)
            buf = self._query.recv(65536)
            for typ, _flags, data in _messages(buf):
                if typ >> 8 == _SUBSYS_CT and typ & 0xFF == _CT_NEW:
                    return self._event(_CT_DELETE, data)
        except (OSError, ValueError, struct.error):
            return None
        return None

    def close(self) -> None:
        if self._query is not None:
            self._query.close()
        super().close()

    def read(
        self, timeout: float | None = 1.0, keep: Callable[[FiveTuple], bool] | None = None
    ) -> list[CtEvent] | None:
        """The events of one datagram; None when nothing arrived within ``timeout``.
        ``keep``: only events of tuples it accepts (the others' counters, state etc. are
        not parsed: most destroy events are of connections the reader no longer tracks)."""
        buf = self._recv(timeout)
        out: list[CtEvent] = []
        if buf is None:
            return None
        if not buf:
            return out
        try:
            for typ, flags, data in _messages(buf):
                if typ >> 8 != _SUBSYS_CT or (typ & 0xFF) not in (_CT_NEW, _CT_DELETE):
                    continue
                kind = typ & 0xFF
                if kind == _CT_NEW and not flags & 0x400:  # NLM_F_CREATE: new, else update
                    kind = -1
                try:
                    if kind == -1 and self.closing_only and not self._closing(data):
                        continue
                    if keep is not None:
                        t = _fast_tuple(data)
                        if t is None:
                            ev = self._event(kind, data)
                            if ev.tuple is not None and keep(ev.tuple):
                                out.append(ev)
                            continue
                        if not keep(t):
                            continue
                    out.append(self._event(kind, data))
                except (ValueError, struct.error, IndexError):
                    self.malformed += 1
        except ValueError:
            self.malformed += 1
        return out

    @staticmethod
    def _event(kind: int, data: bytes) -> CtEvent:
        tup: FiveTuple | None = None
        po = bo = pr = br = 0
        state = -1
        for typ, val in _attrs(data, _NFGEN.size):
            if typ == _CTA_TUPLE_ORIG:
                tup = _ct_tuple(val)
            elif typ == _CTA_PROTOINFO:
                state = _tcp_state(val)
            elif typ == _CTA_COUNTERS_ORIG:
                po, bo = _counters(val)
            elif typ == _CTA_COUNTERS_REPLY:
                pr, br = _counters(val)
        what: Literal["new", "update", "destroy"] = (
            "new" if kind == _CT_NEW else "destroy" if kind == _CT_DELETE else "update"
        )
        return CtEvent(what, tup, po, bo, pr, br, state)
