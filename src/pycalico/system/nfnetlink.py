"""Typed readers of netfilter netlink: NFLOG (nfnetlink_log) here, conntrack in
:mod:`pycalico.system.ctnetlink` (on the socket and wire helpers of this module).

pyroute2 (0.9) has no nfnetlink_log support, and its conntrack socket only dumps; both
streams are small fixed protocols, read here with :mod:`socket` and :mod:`struct`.

Owns :class:`NflogSocket` (bind NFLOG groups, copy the first bytes of each packet, parse
``NFULNL_MSG_PACKET`` into :class:`NflogPacket`), :class:`NflogReorder` (the logging order
across groups when the kernel batches), :class:`FiveTuple` and :func:`parse_l3l4` (the
5-tuple of an IPv4/IPv6 packet's first bytes), and the netlink socket base class.

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
from collections.abc import Iterator
from typing import NamedTuple

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
