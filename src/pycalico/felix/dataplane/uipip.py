"""Userspace IP-in-IP (RFC 2003) tunnel for kernels without the ``ipip`` module.

``tunl0`` is a TUN device (IFF_TUN | IFF_NO_PI) whose file descriptor this object holds,
plus a raw ``IPPROTO_IPIP`` socket bound to the node IP:

- a packet the kernel routes into ``tunl0`` (``<block> via <node IP> dev tunl0 onlink``) is
  read from the TUN; its inner destination is looked up (longest prefix match) in the next-hop
  table the route agent computed, and it is sent with ``sendto(pkt, (node_ip, 0))``: the
  kernel prepends the outer IPv4 header (protocol 4, source = the bound node IP);
- a protocol-4 packet received on the raw socket from a known remote node has its outer
  header stripped and the inner IPv4 packet written to the TUN (the kernel then routes it as
  if it had arrived on ``tunl0``).

Invariants: one daemon thread does all I/O (epoll, batched non-blocking reads of up to
:data:`BATCH` packets per readiness); the next-hop table is an immutable :class:`Lpm`
swapped atomically by :meth:`set_next_hops` from any thread; packets with no next hop, from
unknown outer sources, or not IPv4 are dropped and counted. The TUN is persistent, like the
rest of the dataplane: when the agent stops or dies, ``tunl0`` and the routes through it stay
(traffic is dropped meanwhile) and the next agent re-attaches to it; ``stop(remove=True)``
deletes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4
BATCH = 64
MAX_PKT = 65535
CACHE_MAX = 4096


class Lpm:
    """Longest-prefix-match table: IPv4 prefix -> outer destination (immutable)."""

    def __init__(self, entries: Iterable[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]]):
        by_len: dict[int, dict[int, str]] = {}
        for net, hop in entries:
            by_len.setdefault(net.prefixlen, {})[int(net.network_address)] = str(hop)
        self._levels = [
            (((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF), table)
            for plen, table in sorted(by_len.items(), reverse=True)
        ]
        self.sources = frozenset(socket.inet_aton(h) for t in by_len.values() for h in t.values())
        # Per-destination memo (inner destination bytes -> sendto address); the table is
        # immutable, so the memo never goes stale; bounded by clearing when full.
        self.cache: dict[bytes, tuple[str, int]] = {}

    def remember(self, dst: bytes, hop: str) -> tuple[str, int]:
        if len(self.cache) >= CACHE_MAX:
            self.cache.clear()
        addr = self.cache[dst] = (hop, 0)
        return addr

    def lookup(self, dst: int) -> str | None:
        for mask, table in self._levels:
            hop = table.get(dst & mask)
            if hop is not None:
                return hop
        return None

    def __len__(self) -> int:
        return sum(len(t) for _, t in self._levels)


def inner_destination(pkt: bytes) -> int | None:
    """The IPv4 destination of a packet read from the TUN (None if not IPv4)."""
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return None
    return int.from_bytes(pkt[16:20], "big")


def decapsulate(data: bytes, sources: frozenset[bytes]) -> bytes | None:
    """The inner IPv4 packet of an IPIP packet from a raw socket, or None to drop it
    (not protocol 4, outer source not a known node, inner not IPv4)."""
    if len(data) < 40 or data[0] >> 4 != 4 or data[9] != IPPROTO_IPIP:
        return None
    if data[12:16] not in sources:
        return None
    ihl = (data[0] & 0x0F) * 4
    inner = data[ihl:]
    if len(inner) < 20 or inner[0] >> 4 != 4:
        return None
    return inner


@dataclass
class TunnelStats:
    encapsulated: int = 0
    decapsulated: int = 0
    no_route: int = 0
    dropped_in: int = 0
    send_errors: int = 0


def open_tun(name: str, persist: bool = True) -> int:
    """Create, or attach to, TUN device ``name`` in the current network namespace."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
        fcntl.ioctl(fd, TUNSETPERSIST, int(persist))
    except OSError:
        os.close(fd)
        raise
    return fd


class UserspaceIpip:
    """The tunnel: :meth:`start` creates ``name`` and the I/O thread; :meth:`stop` removes both."""

    def __init__(self, name: str, local_ip: str) -> None:
        self.name = name
        self.local_ip = local_ip
        self.stats = TunnelStats()
        self._lpm = Lpm(())
        self._tun = -1
        self._raw: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._rxbuf = bytearray(MAX_PKT)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def set_next_hops(
        self, hops: Iterable[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]]
    ) -> None:
        self._lpm = Lpm(hops)

    def start(self) -> None:
        if self.running:
            return
        self._tun = open_tun(self.name)
        try:
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
            raw.bind((self.local_ip, 0))
            raw.setblocking(False)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        except OSError:
            os.close(self._tun)
            self._tun = -1
            raise
        self._raw = raw
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"uipip-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0, *, remove: bool = False) -> None:
        """Stop the I/O thread; ``remove`` also deletes the device (else it persists)."""
        t = self._thread
        if t is None:
            return
        if remove:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._tun, TUNSETPERSIST, 0)
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        t.join(timeout)
        self._thread = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        for fd in (self._tun, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._tun, self._wake_r, self._wake_w = -1, -1, -1

    # -- the I/O thread ----------------------------------------------------------------
    def _run(self) -> None:
        raw = self._raw
        assert raw is not None
        tun, rawfd = self._tun, raw.fileno()
        ep = select.epoll()
        try:
            ep.register(tun, select.EPOLLIN)
            ep.register(rawfd, select.EPOLLIN)
            ep.register(self._wake_r, select.EPOLLIN)
            while not self._stopping:
                for fd, _ in ep.poll():
                    if fd == tun:
                        self._from_tun(tun, raw)
                    elif fd == rawfd:
                        self._from_wire(tun, raw)
        except Exception:
            log.exception("userspace IPIP %s: I/O thread failed", self.name)
        finally:
            ep.close()

    def _from_tun(self, tun: int, raw: socket.socket) -> None:
        lpm, st = self._lpm, self.stats
        cache = lpm.cache
        read, sendto = os.read, raw.sendto
        sent = 0
        try:
            for _ in range(BATCH):
                try:
                    pkt = read(tun, MAX_PKT)
                except BlockingIOError:
                    return
                addr = cache.get(pkt[16:20])
                if addr is None:
                    dst = inner_destination(pkt)
                    hop = lpm.lookup(dst) if dst is not None else None
                    if hop is None:
                        st.no_route += 1
                        continue
                    addr = lpm.remember(pkt[16:20], hop)
                try:
                    sendto(pkt, addr)
                    sent += 1
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.EHOSTUNREACH,
                                       errno.ENETUNREACH, errno.EMSGSIZE):  # fmt: skip
                        raise
                    st.send_errors += 1
        finally:
            st.encapsulated += sent

    def _from_wire(self, tun: int, raw: socket.socket) -> None:
        sources, st = self._lpm.sources, self.stats
        buf = self._rxbuf
        view = memoryview(buf)
        recv_into, write = raw.recv_into, os.write
        got = 0
        try:
            for _ in range(BATCH):
                try:
                    n = recv_into(buf)
                except BlockingIOError:
                    return
                # Inline decapsulate(): outer IPv4 + protocol 4 + known source, inner IPv4.
                ihl = (buf[0] & 0x0F) * 4
                if (n < ihl + 20 or buf[0] >> 4 != 4 or buf[9] != IPPROTO_IPIP
                        or bytes(view[12:16]) not in sources or buf[ihl] >> 4 != 4):  # fmt: skip
                    st.dropped_in += 1
                    continue
                try:
                    write(tun, view[ihl:n])
                    got += 1
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EINVAL, errno.EIO):
                        raise
                    st.dropped_in += 1
        finally:
            st.decapsulated += got
