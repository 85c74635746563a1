"""Typed readers of two netfilter netlink streams: NFLOG (nfnetlink_log) and conntrack events.

pyroute2 (0.9) has no nfnetlink_log support, and its conntrack socket only dumps; both
streams are small fixed protocols, read here with :mod:`socket` and :mod:`struct`.

Owns :class:`NflogSocket` (bind NFLOG groups, copy the first bytes of each packet, parse
``NFULNL_MSG_PACKET`` into :class:`NflogPacket`), :class:`NflogReorder` (the logging order
across groups when the kernel batches), :class:`ConntrackEvents` (subscribe to
the conntrack NEW and DESTROY multicast groups, parse into :class:`CtEvent` with the
original tuple and the per-direction packet/byte counters; read entries with batched GET
requests, :meth:`ConntrackEvents.get_many`) and :func:`parse_l3l4` (the 5-tuple of an
IPv4/IPv6 packet's first bytes).

The collector runs these parsers for every new connection, so the hot paths read the
datagram in place (``struct`` at offsets, fixed layouts checked and else walked
generically) and the records are named tuples.

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
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, NamedTuple

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


# Named tuples built without their generated __new__ (a Python function) on the hot paths.
_new = tuple.__new__


class FiveTuple(NamedTuple):
    """A connection's original direction (a named tuple: hashed and compared in C, it is
    the aggregator's key for every message)."""

    src: str
    dst: str
    proto: int
    sport: int
    dport: int


class NflogPacket(NamedTuple):
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


class CtEvent(NamedTuple):
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
    return _new(FiveTuple, (src, dst, proto, sport, dport))


_RECV_SIZE = 1 << 17  # above the NFLOG buffer size we ask for (64 KiB)


class _NetfilterSocket:
    def __init__(self, groups: int = 0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:  # as root: beyond net.core.rmem_max (bursts of thousands of new connections)
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 16 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, groups))
        self._buf = bytearray(_RECV_SIZE)
        self._view = memoryview(self._buf)
        self._timeout: float | None = -1.0  # not set yet
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
        if timeout != self._timeout:  # settimeout costs two fcntl calls: only on a change
            self.sock.settimeout(timeout)
            self._timeout = timeout
        try:
            # Into one preallocated buffer: recv(128 KiB) would allocate (mmap) and shrink
            # a fresh 128 KiB object per datagram, ~15 us against ~2 us (one per event).
            n = self.sock.recv_into(self._buf)
            return bytes(self._view[:n])
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
        if buf is None:
            return None
        out: list[NflogPacket] = []
        end = len(buf)
        off = 0
        while off + 16 <= end:  # the netlink messages of the datagram, parsed in place
            length, typ = _NLMSG_LT.unpack_from(buf, off)
            if length < 16 or off + length > end:
                self.malformed += 1
                break
            if typ == _ULNL_PACKET_TYPE and length >= 16 + _NFGEN.size:
                try:
                    out.append(_packet_at(buf, off + 16, off + length))
                except (ValueError, struct.error, UnicodeDecodeError):
                    self.malformed += 1
            off += (length + 3) & ~3
        return out

    @staticmethod
    def _packet(data: bytes) -> NflogPacket:
        return _packet_at(data, 0, len(data))


_ULNL_PACKET_TYPE = (_SUBSYS_ULOG << 8) | _ULNL_MSG_PACKET
_NLMSG_LT = struct.Struct("=IH")  # a netlink message's length and type
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
# Decoded prefixes by their attribute bytes: a ruleset has a few hundred at most; bounded
# against a stream of junk prefixes (cleared when full).
_PREFIXES: dict[bytes, str] = {}
_MAX_PREFIXES = 4096


def _packet_at(buf: bytes, start: int, end: int) -> NflogPacket:
    """The ``NFULNL_MSG_PACKET`` body at ``buf[start:end]`` (its attributes read in place;
    only the prefix and the payload are copied)."""
    (res_id,) = _BE16.unpack_from(buf, start + 2)
    prefix, payload = "", b""
    hook = indev = outdev = mark = 0
    seq = -1
    a = start + _NFGEN.size
    while a + 4 <= end:
        alen, typ = _NLA.unpack_from(buf, a)
        if alen < 4 or a + alen > end:
            raise ValueError("truncated attribute")
        typ &= 0x3FFF
        v = a + 4
        if typ == _ULA_PAYLOAD:
            payload = buf[v : a + alen]
        elif typ == _ULA_PREFIX:
            raw = buf[v : a + alen]
            text = _PREFIXES.get(raw)
            if text is None:
                text = raw.split(b"\0", 1)[0].decode()
                if len(_PREFIXES) >= _MAX_PREFIXES:
                    _PREFIXES.clear()
                _PREFIXES[raw] = text
            prefix = text
        elif alen == 8 and typ in (_ULA_SEQ_GLOBAL, _ULA_IFINDEX_INDEV, _ULA_IFINDEX_OUTDEV,
                                   _ULA_MARK):  # fmt: skip
            (val,) = _BE32.unpack_from(buf, v)
            if typ == _ULA_SEQ_GLOBAL:
                seq = val
            elif typ == _ULA_IFINDEX_INDEV:
                indev = val
            elif typ == _ULA_IFINDEX_OUTDEV:
                outdev = val
            else:
                mark = val
        elif typ == _ULA_PACKET_HDR and alen >= 7:
            hook = buf[v + 2]
        a += (alen + 3) & ~3
    return _new(NflogPacket, (res_id, prefix, hook, indev, outdev, mark, payload, seq))


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
    return _new(FiveTuple, (socket.inet_ntop(socket.AF_INET, src),
                            socket.inet_ntop(socket.AF_INET, dst), num, socket.ntohs(sport),
                            socket.ntohs(dport)))  # fmt: skip


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


#: Conntrack GET requests sent in one datagram by :meth:`ConntrackEvents.get_many`.
GET_BATCH = 64
_GET_TIMEOUT = 0.5
_CT_REPLY_TYPE = (_SUBSYS_CT << 8) | _CT_NEW
_CT_GET_TYPE = (_SUBSYS_CT << 8) | _CT_GET
# A whole GET request for an IPv4 TCP/UDP tuple (the layout of _tuple_attr; ports and
# addresses are in network order, the netlink header and attribute headers in host order).
_V4_GET = struct.Struct("=IHHIIBBHHHHHHH4sHH4sHHHHB3xHH2s2xHH2s2x")


def _get_request(t: FiveTuple, seq: int) -> bytes:
    """The GET request message for original tuple ``t`` (one pack for IPv4 TCP/UDP)."""
    if t.proto in (6, 17) and ":" not in t.src:
        return _V4_GET.pack(
            _V4_GET.size, _CT_GET_TYPE, NLM_F_REQUEST, seq, 0,
            socket.AF_INET, 0, 0,
            52, _CTA_TUPLE_ORIG | _NLA_F_NESTED, 20, _CTA_TUPLE_IP | _NLA_F_NESTED,
            8, 1, socket.inet_aton(t.src), 8, 2, socket.inet_aton(t.dst),
            28, _CTA_TUPLE_PROTO | _NLA_F_NESTED, 5, _CTA_PROTO_NUM, t.proto,
            6, _CTA_PROTO_SRC_PORT, _BE16.pack(t.sport), 6, _CTA_PROTO_DST_PORT,
            _BE16.pack(t.dport),
        )  # fmt: skip
    fam = socket.AF_INET6 if ":" in t.src else socket.AF_INET
    body = _NFGEN.pack(fam, 0, 0) + _tuple_attr(t)
    return _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), _CT_GET_TYPE, NLM_F_REQUEST, seq, 0) + body


def _entry(t: FiveTuple, data: bytes) -> CtEvent:
    """A GET answer's counters and TCP state (the tuple is the one asked for)."""
    po = bo = pr = br = 0
    state = -1
    a, end = _NFGEN.size, len(data)
    while a + 4 <= end:
        alen, typ = _NLA.unpack_from(data, a)
        if alen < 4 or a + alen > end:
            raise ValueError("truncated attribute")
        typ &= 0x3FFF
        if typ in (_CTA_COUNTERS_ORIG, _CTA_COUNTERS_REPLY):
            usual = data[a + 4 : a + 8] == _H_PACKETS and data[a + 16 : a + 20] == _H_BYTES
            if alen == 28 and usual:
                packets, nbytes = _BE64_AT_4_16.unpack_from(data, a)
            else:
                packets, nbytes = _counters(data[a + 4 : a + alen])
            if typ == _CTA_COUNTERS_ORIG:
                po, bo = packets, nbytes
            else:
                pr, br = packets, nbytes
        elif typ == _CTA_PROTOINFO:
            if data[a + 6 : a + 12] == _H_TCP_STATE and alen >= 13:  # TCP nest, state first
                state = data[a + 12]
            else:
                state = _tcp_state(data[a + 4 : a + alen])
        a += (alen + 3) & ~3
    return _new(CtEvent, ("destroy", t, po, bo, pr, br, state))


# Fixed layouts of the usual counter and TCP state attributes (checked, else parsed).
_H_PACKETS = _NLA.pack(12, 1)
_H_BYTES = _NLA.pack(12, 2)
_BE64_AT_4_16 = struct.Struct("!8xQ4xQ")  # in that nest: packets at +8, bytes at +20
_H_TCP_STATE = struct.pack("=H", _CTA_PROTOINFO_TCP | _NLA_F_NESTED) + _NLA.pack(5, 1)


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
        return self.get_many([t])[0]

    def get_many(self, tuples: Sequence[FiveTuple]) -> list[CtEvent | None]:
        """The current entries of ``tuples`` (None: gone or unreadable), in order: up to
        :data:`GET_BATCH` requests go to the kernel in one datagram (it answers each before
        the send returns), the answers are matched by sequence number."""
        out: list[CtEvent | None] = [None] * len(tuples)
        if not tuples:
            return out
        q = self._query
        if q is None:
            q = self._query = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            try:  # room for a whole batch of answers (each skb takes a page or more)
                q.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 4 << 20)
            except OSError:
                q.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            q.settimeout(_GET_TIMEOUT)
        for first in range(0, len(tuples), GET_BATCH):
            chunk = tuples[first : first + GET_BATCH]
            base = self._seq + 1
            self._seq += len(chunk)
            try:
                q.send(b"".join(_get_request(t, base + i) for i, t in enumerate(chunk)))
            except OSError:
                continue
            waiting = len(chunk)
            while waiting:
                try:
                    n = q.recv_into(self._buf)
                except OSError:  # timeout, or answers lost to a full buffer: None
                    break
                buf = bytes(self._view[:n])
                off, end = 0, len(buf)
                while off + 16 <= end:
                    length, typ, _flags, seq, _pid = _NLMSG_HDR.unpack_from(buf, off)
                    if length < 16 or off + length > end:
                        break
                    i = seq - base
                    if 0 <= i < len(chunk):  # else: an answer to an earlier, abandoned batch
                        waiting -= 1
                        if typ == _CT_REPLY_TYPE:
                            try:
                                out[first + i] = _entry(chunk[i], buf[off + 16 : off + length])
                            except (ValueError, struct.error, IndexError):
                                self.malformed += 1
                    off += (length + 3) & ~3
        return out

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
