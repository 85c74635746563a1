"""Conntrack over netlink (ctnetlink): destroy/update/new events and batched entry reads.

Owns :class:`ConntrackEvents` (subscribe to the conntrack multicast groups, parse events
into :class:`CtEvent` with the original tuple and the per-direction packet/byte counters;
read entries with batched GET requests, :meth:`ConntrackEvents.get_many`) and the wire
layout of conntrack tuples (:func:`_tuple_attr`, the fixed-offset fast paths). The socket
base and the attribute walkers are :mod:`pycalico.system.nfnetlink`'s.

Invariants: as for NFLOG: a malformed message is counted in ``malformed``, never raised;
an overrun is counted in ``overruns``; the socket lives in the calling thread's network
namespace. The collector reads one entry per allowed connection, so the hot paths read in
place (``struct`` at offsets, fixed layouts checked, else walked generically).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

from pycalico.system.nfnetlink import (
    _BE16,
    _NFGEN,
    _NLA,
    _NLMSG_HDR,
    NETLINK_NETFILTER,
    NLM_F_REQUEST,
    FiveTuple,
    _attrs,
    _messages,
    _NetfilterSocket,
    _new,
    _nla,
)

_SO_RCVBUFFORCE = 33  # Linux; not exported by the socket module
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
