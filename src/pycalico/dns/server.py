"""The DNS server of calico-node: UDP + TCP listeners, forwarding, the datastore feed.

Owns: one event-loop thread that holds the sockets, the :class:`RecordIndex` and the response
caches; a :class:`Syncer` (its own thread; or, given the node's :class:`SyncerHub`, a
subscription to it) over WorkloadEndpoints, Nodes and IPPools whose updates are marshalled
onto the loop (``call_soon_threadsafe``), so the index has exactly one owner and needs no
locks.

Invariants:
- A change from the datastore is visible to queries as soon as the loop has run the update
  (sub-millisecond after the syncer delivers it); every response cache is cleared on every
  index change, so a cached reply is never older than the index. Until the first full sync
  every (well-formed) query gets SERVFAIL: an empty index must not produce false NXDOMAINs.
- UDP: each wake-up drains up to ``_BURST`` datagrams; a reply that cannot be sent at once is
  dropped (the client retries); responses and runts are dropped, garbage and queries over
  ``MAX_QUERY`` bytes get FORMERR (the latter unparsed).
- TCP: 2-byte length framing, many queries per connection answered in order; connections
  beyond ``max_tcp_clients`` are closed at once; an idle connection is closed after
  ``tcp_idle_timeout``; a message shorter than a header closes the connection.
- Forwarding: at most ``max_inflight_forwards`` upstream queries at a time (beyond that the
  query is dropped); each upstream is tried in order with ``upstream_timeout``; replies are
  matched on a fresh id, a fresh socket and the echoed question; all failing -> SERVFAIL.
- ``start()`` binds every listener before returning (raises :class:`DnsError` otherwise) and
  may be called again after ``stop()`` (the supervisor restarts dead components).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from pycalico.datastore import Datastore
from pycalico.datastore.hub import SyncerHub, SyncSource
from pycalico.datastore.syncer import Syncer, SyncStatus, SyncUpdate
from pycalico.dns import records as R
from pycalico.dns.index import RecordIndex
from pycalico.dns.resolver import (
    FORMERR,
    MAX_TCP,
    SERVFAIL,
    Action,
    Resolver,
    ResolverSettings,
    error_reply,
    question_end,
)
from pycalico.dnsconf import DEFAULT_ZONE, DNS_ADDRESS
from pycalico.errors import CalicoError

log = logging.getLogger(__name__)

KINDS = ("WorkloadEndpoint", "Node", "IPPool")
_BURST = 64
MAX_QUERY = 4096  # bytes; larger queries get FORMERR without being parsed
_IP_FREEBIND = 15
_IPV6_FREEBIND = 78

Address = tuple[str, int]


class DnsError(CalicoError):
    """The DNS server cannot start (bad listen address, port in use, bad settings)."""


def parse_hostport(text: str, default_port: int = 53) -> Address:
    """``"1.2.3.4"``, ``"1.2.3.4:53"``, ``"[2001:db8::1]:53"`` or ``"2001:db8::1"``."""
    t = text.strip()
    host, port = t, default_port
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], text)
    elif t.count(":") == 1:
        host, p = t.split(":")
        port = _port(p, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise DnsError(f"invalid address {text!r}: {host!r} is not an IP address") from None
    return host, port


def _port(p: str, text: str) -> int:
    if not p.isdigit() or not 0 <= int(p) < 65536:
        raise DnsError(f"invalid address {text!r}: bad port {p!r}")
    return int(p)


def upstreams_from_resolv_conf(
    path: str = "/etc/resolv.conf", exclude: Iterable[str] = (DNS_ADDRESS,)
) -> list[Address]:
    """The ``nameserver`` lines of a resolv.conf (port 53), minus ``exclude``."""
    skip = set(exclude)
    out: list[Address] = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] not in skip:
                    try:
                        out.append(parse_hostport(parts[1].split("%")[0]))
                    except DnsError:
                        continue
    except OSError:
        return []
    return out


class DnsServer:
    """calico-node's DNS server (see module doc). Also a supervisor ``Component``."""

    name = "dns"

    def __init__(
        self,
        datastore: Datastore,
        node_name: str,
        listen: Sequence[Address] = ((DNS_ADDRESS, 53),),
        zone: str = DEFAULT_ZONE,
        upstreams: Sequence[Address] = (),
        *,
        node_zone: str = "",
        ttl: int = 5,
        negative_ttl: int = 1,
        upstream_timeout: float = 1.0,
        max_udp_payload: int = 1232,
        max_tcp_clients: int = 256,
        tcp_idle_timeout: float = 10.0,
        max_inflight_forwards: int = 512,
        cache_size: int = 20000,
        freebind: bool = True,
        hub: SyncerHub | None = None,
    ) -> None:
        zone = zone.lower().rstrip(".")
        if not R.valid_name(zone):
            raise DnsError(f"zone: invalid DNS name {zone!r}")
        if not 512 <= max_udp_payload <= 65535:
            raise DnsError(f"max_udp_payload: must be 512..65535, not {max_udp_payload}")
        if ttl < 0 or negative_ttl < 0:
            raise DnsError("ttl/negative_ttl: must not be negative")
        if not listen:
            raise DnsError("listen: at least one address is required")
        for host, port in listen:
            parse_hostport(host)
            _port(str(port), f"{host}:{port}")
        self.datastore = datastore
        self.hub = hub
        self.node_name = node_name
        self.listen = [(h, int(p)) for h, p in listen]
        self.upstreams = list(upstreams)
        self.settings = ResolverSettings(
            zone=zone,
            node_zone=node_zone,
            ttl=ttl,
            negative_ttl=negative_ttl,
            max_udp_payload=max_udp_payload,
            forwarding=bool(upstreams),
        )
        self.zone, self.node_zone = self.settings.zones()
        self.upstream_timeout = upstream_timeout
        self.max_tcp_clients = max_tcp_clients
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_inflight_forwards = max_inflight_forwards
        self.cache_size = cache_size
        self.freebind = freebind
        self.counters: Counter[str] = Counter()
        self.bound: list[Address] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._syncer: SyncSource | None = None
        self._synced = threading.Event()
        self._udp: list[socket.socket] = []
        self._tcp_servers: list[asyncio.base_events.Server] = []
        self._tcp_clients = 0
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs to forwarding tasks
        self._cache: dict[bool, dict[bytes, bytes]] = {False: {}, True: {}}
        self._new_index()

    def _new_index(self) -> None:
        self.index = RecordIndex([self.zone, self.node_zone])
        self.resolver = Resolver(self.index, self.settings)

    # -- lifecycle (supervisor Component) ---------------------------------------------
    def start(self) -> None:
        """Bind every listener, then start following the datastore (non-blocking)."""
        if self._thread is not None:
            if self._thread.is_alive():
                return
            self.stop()  # a dead loop thread: clean up, then start afresh
        self._new_index()
        self._synced.clear()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="dns", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._bind(), loop).result(10)
        except BaseException:
            self.stop()
            raise
        if self.hub is not None:
            self._syncer = self.hub.syncer_for(KINDS, _Feed(self, loop), name="dns").start()
        else:
            self._syncer = Syncer.for_kinds(
                self.datastore, KINDS, _Feed(self, loop), poll_interval=0.5, name="dns-syncer"
            ).start()
        log.info("dns: serving %s on %s", self.zone, self.bound)

    def stop(self) -> None:
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._close(), loop).result(5)
            except Exception:
                log.debug("dns: close failed", exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
        if loop is not None and not loop.is_running():
            loop.close()
        self._loop = self._thread = None
        self._synced.clear()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def in_sync(self) -> bool:
        return self._synced.is_set()

    def wait_in_sync(self, timeout: float | None = None) -> bool:
        """True once the index holds the full datastore state (as of some revision)."""
        return self._synced.wait(timeout)

    def stats(self) -> dict[str, int]:
        """Counters (queries, cache_hits, rcode_<n>, truncated, forwarded, dropped, ...)
        plus ``names``, the number of owner names in the index; callable from any thread."""
        for _ in range(5):
            try:
                out = dict(self.counters)  # the loop thread may add a key meanwhile
                break
            except RuntimeError:
                continue
        else:
            out = {}
        out["names"] = len(self.index)
        return out

    # -- datastore feed (runs on the loop) ----------------------------------------------
    def apply(self, updates: Iterable[SyncUpdate]) -> None:
        """Apply syncer updates to the index (loop thread, or any thread before start)."""
        for u in updates:
            obj = u.obj
            kind = obj.get("kind") if isinstance(obj, dict) else None
            deleted = u.type.value == "deleted"
            if kind == "WorkloadEndpoint":
                recs = [] if deleted else R.workload_records(obj, self.zone)
                self.index.set_source(u.key, recs)
            elif kind == "Node":
                recs = [] if deleted else R.node_records(obj, self.node_zone)
                self.index.set_source(u.key, recs)
            elif kind == "IPPool":
                self.index.set_pool(u.key, None if deleted else R.pool_zone(obj))
        self._cache[False].clear()
        self._cache[True].clear()

    # -- sockets ------------------------------------------------------------------------
    def _socket(self, host: str, port: int, kind: int) -> socket.socket:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, kind)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.freebind:
                if fam == socket.AF_INET:
                    s.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
                else:
                    s.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
            s.setblocking(False)
        except OSError as e:
            s.close()
            raise DnsError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        return s

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        self.bound = []
        for host, port in self.listen:
            for _attempt in range(20):
                u = self._socket(host, port, socket.SOCK_DGRAM)
                real_port = u.getsockname()[1]
                try:
                    t = self._socket(host, real_port, socket.SOCK_STREAM)
                except DnsError as e:
                    u.close()
                    cause = e.__cause__
                    if port == 0 and isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                        continue  # ephemeral UDP port taken for TCP: pick another
                    raise
                break
            else:
                raise DnsError(f"cannot find a free port on {host} for UDP and TCP")
            t.listen(128)
            self._udp.append(u)
            loop.add_reader(u.fileno(), self._udp_ready, u)
            srv = await asyncio.start_server(self._tcp_client, sock=t, limit=MAX_TCP + 2)
            self._tcp_servers.append(srv)
            self.bound.append((host, real_port))

    async def _close(self) -> None:
        loop = asyncio.get_running_loop()
        for u in self._udp:
            loop.remove_reader(u.fileno())
            u.close()
        self._udp = []
        for srv in self._tcp_servers:
            srv.close()
        self._tcp_servers = []
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the query path -----------------------------------------------------------------
    def _resolve(self, data: bytes, tcp: bool) -> bytes | Action | None:
        """Reply bytes, None (drop) or Action.FORWARD; uses and fills the cache."""
        self.counters["queries"] += 1
        if len(data) < 12 or data[2] & 0x80:
            self.counters["dropped"] += 1
            return None
        if len(data) > MAX_QUERY:  # no legitimate query is this big; never parse it
            self.counters["oversized"] += 1
            return error_reply(data, FORMERR, question=False)
        if not self._synced.is_set():  # an empty index would give false NXDOMAINs
            self.counters["not_ready"] += 1
            return error_reply(data, SERVFAIL, bool(self.upstreams))
        cache = self._cache[tcp]
        key = data[2:]
        hit = cache.get(key)
        if hit is not None:
            self.counters["cache_hits"] += 1
            return data[:2] + hit
        out = self.resolver.handle(data, tcp)
        if out.action is Action.DROP:
            self.counters["dropped"] += 1
            return None
        if out.action is Action.FORWARD:
            return Action.FORWARD
        self.counters[f"rcode_{out.rcode}"] += 1
        if out.truncated:
            self.counters["truncated"] += 1
        if out.cacheable and self.cache_size > 0:
            if len(cache) >= self.cache_size:
                cache.clear()
            cache[key] = out.data[2:]
        return out.data

    def _udp_ready(self, sock: socket.socket) -> None:
        for _ in range(_BURST):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            res = self._resolve(data, False)
            if res is None:
                continue
            if res is Action.FORWARD:
                self._spawn_forward(data, sock, addr)
                continue
            assert isinstance(res, bytes)
            self._send_udp(sock, res, addr)

    def _send_udp(self, sock: socket.socket, data: bytes, addr: Any) -> None:
        try:
            sock.sendto(data, addr)
        except OSError:
            self.counters["send_errors"] += 1

    def _spawn_forward(self, data: bytes, sock: socket.socket, addr: Any) -> None:
        if self._inflight >= self.max_inflight_forwards:
            self.counters["forward_dropped"] += 1
            return
        self._inflight += 1

        async def run() -> None:
            try:
                resp = await self._forward(data, tcp=False)
                self._send_udp(sock, resp, addr)
            finally:
                self._inflight -= 1

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_clients >= self.max_tcp_clients:
            self.counters["tcp_rejected"] += 1
            writer.close()
            return
        self._tcp_clients += 1
        try:
            while True:
                hdr = await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_timeout)
                (n,) = struct.unpack("!H", hdr)
                data = await asyncio.wait_for(reader.readexactly(n), self.tcp_idle_timeout)
                res = self._resolve(data, True)
                if res is None:
                    break
                if res is Action.FORWARD:
                    if self._inflight >= self.max_inflight_forwards:
                        self.counters["forward_dropped"] += 1
                        break
                    self._inflight += 1
                    try:
                        res = await self._forward(data, tcp=True)
                    finally:
                        self._inflight -= 1
                assert isinstance(res, bytes)
                writer.write(struct.pack("!H", len(res)) + res)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._tcp_clients -= 1
            writer.close()

    # -- forwarding ---------------------------------------------------------------------
    async def _forward(self, data: bytes, tcp: bool) -> bytes:
        self.counters["forwarded"] += 1
        qid = os.urandom(2)
        out = qid + data[2:]
        qend = question_end(data)
        for up in self.upstreams:
            try:
                ask = self._ask_tcp(up, out) if tcp else self._ask_udp(up, out, qid, qend)
                resp = await asyncio.wait_for(ask, self.upstream_timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
                log.debug("dns: upstream %s: %s", up, e)
                self.counters["upstream_errors"] += 1
                continue
            if _matches(resp, out, qid, qend):
                return data[:2] + resp[2:]
            self.counters["upstream_errors"] += 1
        self.counters[f"rcode_{SERVFAIL}"] += 1
        return error_reply(data, SERVFAIL, ra=True)

    async def _ask_udp(self, up: Address, out: bytes, qid: bytes, qend: int) -> bytes:
        loop = asyncio.get_running_loop()
        fam = socket.AF_INET6 if ":" in up[0] else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            await loop.sock_connect(s, up)
            await loop.sock_sendall(s, out)
            while True:
                resp = await loop.sock_recv(s, 65535)
                if _matches(resp, out, qid, qend):
                    return resp

    async def _ask_tcp(self, up: Address, out: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(up[0], up[1])
        try:
            writer.write(struct.pack("!H", len(out)) + out)
            await writer.drain()
            (n,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(n)
        finally:
            writer.close()


def _matches(resp: bytes, query: bytes, qid: bytes, qend: int) -> bool:
    if len(resp) < 12 or resp[:2] != qid or not resp[2] & 0x80:
        return False
    return qend == 0 or resp[12:qend].lower() == query[12:qend].lower()


class _Feed:
    """Syncer callbacks: hand everything to the server's loop (see module doc)."""

    def __init__(self, server: DnsServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop

    def on_status(self, status: SyncStatus) -> None:
        if status is SyncStatus.IN_SYNC:
            self._call(self.server._synced.set)

    def on_updates(self, updates: list[SyncUpdate]) -> None:
        self._call(self.server.apply, updates)

    def _call(self, fn: Any, *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed during stop(): nothing left to update
            pass
