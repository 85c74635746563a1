"""DnsServer over loopback sockets with an in-memory datastore: UDP + TCP, live updates,
TCP fallback after truncation, forwarding, refusal, hostile input."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.datastore.memory import MemoryDatastore
from pycalico.dns import DnsError, DnsServer, parse_hostport, upstreams_from_resolv_conf

from .test_dns_index import wep

NAME = "web.shop.pod.cluster.local"


def until(pred: Callable[[], bool], timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except TimeoutError:  # a lost datagram: retry, as a resolver would
            pass
        time.sleep(0.01)
    return pred()


def udp(addr: tuple[str, int], q: DNSRecord | bytes, timeout: float = 2.0) -> DNSRecord:
    data = q if isinstance(q, bytes) else bytes(q.pack())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, addr)
        return DNSRecord.parse(s.recv(65535))


def tcp_send(s: socket.socket, data: bytes) -> None:
    s.sendall(struct.pack("!H", len(data)) + data)


def tcp_recv(s: socket.socket) -> DNSRecord:
    buf = b""
    while len(buf) < 2:
        chunk = s.recv(2 - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    (n,) = struct.unpack("!H", buf)
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return DNSRecord.parse(body)


def names_a(r: DNSRecord) -> list[str]:
    return sorted(str(x.rdata) for x in r.rr if x.rtype == QTYPE.A)


@pytest.fixture
def ds() -> MemoryDatastore:
    d = MemoryDatastore()
    d.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "p"},
            "spec": {"cidr": "10.244.0.0/16"},
        }
    )
    d.create(wep("web", "shop", "10.244.1.2/32"))
    return d


@contextlib.contextmanager
def serving(ds: MemoryDatastore, **kw: Any) -> Iterator[DnsServer]:
    srv = DnsServer(ds, "n1", [("127.0.0.1", 0)], **kw)
    srv.start()
    try:
        assert srv.wait_in_sync(5)
        yield srv
    finally:
        srv.stop()


class FakeUpstream:
    """A loopback resolver answering every A query with 192.0.2.1 (UDP and TCP), or never
    answering (``silent``)."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(8)
        self.seen: list[DNSRecord] = []
        self._stop = False
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _answer(self, data: bytes) -> bytes:
        q = DNSRecord.parse(data)
        self.seen.append(q)
        r = q.reply()
        r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("192.0.2.1"), ttl=60))
        return bytes(r.pack())

    def _serve_udp(self) -> None:
        self.udp.settimeout(0.1)
        while not self._stop:
            try:
                data, addr = self.udp.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.silent:
                self.udp.sendto(self._answer(data), addr)

    def _serve_tcp(self) -> None:
        self.tcp.settimeout(0.1)
        while not self._stop:
            try:
                c, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with c:
                c.settimeout(2)
                (n,) = struct.unpack("!H", c.recv(2))
                data = c.recv(n)
                if not self.silent:
                    out = self._answer(data)
                    c.sendall(struct.pack("!H", len(out)) + out)

    def close(self) -> None:
        self._stop = True
        for t in self._threads:
            t.join(2)
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    u = FakeUpstream()
    yield u
    u.close()


def test_udp_and_tcp_answers_and_live_updates(ds: MemoryDatastore) -> None:
    with serving(ds) as srv:
        addr = srv.bound[0]
        assert names_a(udp(addr, DNSRecord.question(NAME))) == ["10.244.1.2"]
        with socket.create_connection(addr, timeout=2) as s:  # two queries, one connection
            tcp_send(s, bytes(DNSRecord.question(NAME).pack()))
            tcp_send(s, bytes(DNSRecord.question("db.prod.pod.cluster.local").pack()))
            assert names_a(tcp_recv(s)) == ["10.244.1.2"]
            assert tcp_recv(s).header.rcode == 3
        ds.create(wep("db", "prod", "10.244.2.9/32"))
        assert until(
            lambda: (
                names_a(udp(addr, DNSRecord.question("db.prod.pod.cluster.local")))
                == ["10.244.2.9"]
            )
        )
        ds.delete("WorkloadEndpoint", "n1-k8s-web-eth0", "shop")
        assert until(lambda: udp(addr, DNSRecord.question(NAME)).header.rcode == 3)
        stats = srv.stats()
        assert stats["queries"] >= 4 and stats["rcode_3"] >= 1


def test_truncated_udp_then_tcp_fallback(ds: MemoryDatastore) -> None:
    ds.create(wep("big", "shop", *[f"fd00::{i:x}/128" for i in range(1, 61)]))
    with serving(ds) as srv:
        addr = srv.bound[0]
        q = DNSRecord.question("big.shop.pod.cluster.local", "AAAA")
        r = udp(addr, q)
        assert r.header.tc == 1 and r.rr == []
        with socket.create_connection(addr, timeout=2) as s:
            tcp_send(s, bytes(q.pack()))
            r = tcp_recv(s)
        assert r.header.tc == 0 and len(r.rr) == 60
        assert srv.stats()["truncated"] == 1


def test_refused_without_upstreams(ds: MemoryDatastore) -> None:
    with serving(ds) as srv:
        t0 = time.monotonic()
        r = udp(srv.bound[0], DNSRecord.question("example.com"))
        assert r.header.rcode == 5 and r.header.ra == 0
        assert time.monotonic() - t0 < 1.0  # "fast": no waiting on anything


def test_forwarding_udp_and_tcp(ds: MemoryDatastore, upstream: FakeUpstream) -> None:
    with serving(ds, upstreams=[("127.0.0.1", upstream.port)]) as srv:
        addr = srv.bound[0]
        q = DNSRecord.question("Example.COM")
        r = udp(addr, q)
        assert r.header.id == q.header.id and names_a(r) == ["192.0.2.1"]
        assert str(r.q.qname) == "Example.COM."
        assert upstream.seen[-1].header.id != q.header.id or len(upstream.seen) == 1
        with socket.create_connection(addr, timeout=2) as s:
            tcp_send(s, bytes(q.pack()))
            assert names_a(tcp_recv(s)) == ["192.0.2.1"]
        # our own zone is never forwarded
        n = len(upstream.seen)
        assert names_a(udp(addr, DNSRecord.question(NAME))) == ["10.244.1.2"]
        assert udp(addr, DNSRecord.question(NAME)).header.ra == 1
        assert len(upstream.seen) == n


def test_forwarding_failures_give_servfail(ds: MemoryDatastore) -> None:
    silent = FakeUpstream(silent=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    try:
        ups = [("127.0.0.1", dead_port), ("127.0.0.1", silent.port)]
        with serving(ds, upstreams=ups, upstream_timeout=0.2) as srv:
            r = udp(srv.bound[0], DNSRecord.question("example.com"), timeout=3)
            assert r.header.rcode == 2
            assert srv.stats()["upstream_errors"] == 2
            # still serving our zone while upstreams are down
            assert names_a(udp(srv.bound[0], DNSRecord.question(NAME))) == ["10.244.1.2"]
    finally:
        silent.close()


def test_hostile_input_does_not_harm_the_server(ds: MemoryDatastore) -> None:
    with serving(ds, max_tcp_clients=4, tcp_idle_timeout=0.3) as srv:
        addr = srv.bound[0]
        r = udp(addr, b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fab")
        assert r.header.id == 0xABCD and r.header.rcode == 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            resp = udp(addr, DNSRecord.question(NAME))
            s.sendto(bytes(resp.pack()), addr)  # a response: dropped, no reply
            with pytest.raises(TimeoutError):
                s.recv(100)
            for i in range(3000):  # flood of garbage and runts
                s.sendto(bytes([i % 256]) * (i % 40), addr)
        # lost queries are possible while the socket buffer is full; answers come back
        assert until(lambda: names_a(udp(addr, DNSRecord.question(NAME), 0.3)) == ["10.244.1.2"])
        # TCP: more clients than allowed are closed; idle ones time out; runts close
        conns = [socket.create_connection(addr, timeout=2) for _ in range(6)]
        try:
            assert until(lambda: srv.stats().get("tcp_rejected", 0) >= 2)
        finally:
            for c in conns:
                c.close()
        with socket.create_connection(addr, timeout=2) as s:
            tcp_send(s, b"\x00\x01")
            assert s.recv(10) == b""
        with socket.create_connection(addr, timeout=2) as s:
            assert s.recv(10) == b""  # idle timeout
        with socket.create_connection(addr, timeout=2) as s:
            tcp_send(s, bytes(DNSRecord.question(NAME).pack()))
            assert names_a(tcp_recv(s)) == ["10.244.1.2"]


def test_restart_and_bind_errors(ds: MemoryDatastore) -> None:
    srv = DnsServer(ds, "n1", [("127.0.0.1", 0)])
    srv.start()
    try:
        assert srv.alive() and srv.wait_in_sync(5)
    finally:
        srv.stop()
    assert not srv.alive() and not srv.in_sync()
    srv.start()
    try:
        assert srv.wait_in_sync(5)
        assert names_a(udp(srv.bound[0], DNSRecord.question(NAME))) == ["10.244.1.2"]
    finally:
        srv.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(DnsError, match="cannot listen"):
            DnsServer(ds, "n1", [("127.0.0.1", port)]).start()
    with pytest.raises(DnsError, match="zone"):
        DnsServer(ds, "n1", zone="bad..zone")
    with pytest.raises(DnsError, match="not an IP"):
        DnsServer(ds, "n1", [("dns.example", 53)])


def test_junk_in_the_datastore_is_ignored(ds: MemoryDatastore) -> None:
    junk = wep("bad", "shop", "10.244.9.9/32")
    junk["spec"]["ports"] = "not-a-list"
    junk["spec"]["ipNetworks"] = ["garbage", 7, "10.244.9.9/32"]
    ds.create(junk)
    empty = wep("noip", "shop")
    ds.create(empty)
    with serving(ds) as srv:
        r = udp(srv.bound[0], DNSRecord.question("bad.shop.pod.cluster.local"))
        assert names_a(r) == ["10.244.9.9"]
        # a workload without addresses has no name (yet)
        r = udp(srv.bound[0], DNSRecord.question("noip.shop.pod.cluster.local"))
        assert r.header.rcode == 3
        assert names_a(udp(srv.bound[0], DNSRecord.question(NAME))) == ["10.244.1.2"]


def test_address_helpers(tmp_path: Any) -> None:
    assert parse_hostport("10.0.0.1") == ("10.0.0.1", 53)
    assert parse_hostport("10.0.0.1:5353") == ("10.0.0.1", 5353)
    assert parse_hostport("[fd00::1]:54") == ("fd00::1", 54)
    assert parse_hostport("fd00::1") == ("fd00::1", 53)
    with pytest.raises(DnsError, match="bad port"):
        parse_hostport("10.0.0.1:99999")
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "search x\nnameserver 169.254.25.10\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n"
    )
    assert upstreams_from_resolv_conf(str(conf)) == [("192.0.2.53", 53), ("fe80::1", 53)]
    assert upstreams_from_resolv_conf(str(tmp_path / "missing")) == []


def test_server_from_env(ds: MemoryDatastore, tmp_path: Any) -> None:
    from pycalico.dns import server_from_env

    assert server_from_env(ds, "n1", {"CALICO_DNS_ENABLED": "false"}) is None
    srv = server_from_env(ds, "n1", {})
    assert srv is not None
    assert srv.listen == [("169.254.25.10", 53)] and srv.upstreams == []
    assert (srv.zone, srv.node_zone) == ("pod.cluster.local", "node.cluster.local")
    srv = server_from_env(
        ds,
        "n1",
        {
            "CALICO_DNS_LISTEN": "127.0.0.1:5300",
            "CALICO_DNS_ZONE": "lab.local.",
            "CALICO_DNS_UPSTREAMS": "192.0.2.53, 192.0.2.54:5353",
            "CALICO_DNS_TTL": "30",
        },
    )
    assert srv is not None
    assert srv.listen == [("127.0.0.1", 5300)] and srv.zone == "lab.local"
    assert srv.upstreams == [("192.0.2.53", 53), ("192.0.2.54", 5353)]
    assert srv.settings.ttl == 30 and srv.settings.forwarding
    with pytest.raises(DnsError, match="CALICO_DNS_TTL"):
        server_from_env(ds, "n1", {"CALICO_DNS_TTL": "soon"})
    with pytest.raises(DnsError, match="CALICO_DNS_UPSTREAMS"):
        server_from_env(ds, "n1", {"CALICO_DNS_UPSTREAMS": "dns.google"})
    with pytest.raises(DnsError, match="CALICO_DNS_ENABLED"):
        server_from_env(ds, "n1", {"CALICO_DNS_ENABLED": "maybe"})


class FlakyDatastore(MemoryDatastore):
    """Unavailable until ``up`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.up = threading.Event()

    def list_prefix(self, prefix: str) -> Any:
        if not self.up.is_set():
            from pycalico.datastore import Unavailable

            raise Unavailable("down for the test")
        return super().list_prefix(prefix)


def test_servfail_not_nxdomain_until_first_sync() -> None:
    ds = FlakyDatastore()
    ds.create(wep("web", "shop", "10.244.1.2/32"))
    srv = DnsServer(ds, "n1", [("127.0.0.1", 0)])
    srv.start()
    try:
        assert not srv.wait_in_sync(0.3)
        r = udp(srv.bound[0], DNSRecord.question(NAME))
        assert r.header.rcode == 2 and str(r.q.qname) == NAME + "."
        ds.up.set()
        assert srv.wait_in_sync(5)
        assert names_a(udp(srv.bound[0], DNSRecord.question(NAME))) == ["10.244.1.2"]
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[DnsServer]:
    d = MemoryDatastore()
    d.create(wep("web", "shop", "10.244.1.2/32"))
    with serving(d, tcp_idle_timeout=0.5) as srv:
        yield srv


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=700), st.booleans())
def test_fuzz_over_the_wire(shared_server: DnsServer, junk: bytes, over_tcp: bool) -> None:
    """Generated packets over UDP or TCP, each followed by a real query on the same socket:
    the real query is always answered correctly."""
    addr = shared_server.bound[0]
    good = DNSRecord.question(NAME)
    if over_tcp:
        with socket.create_connection(addr, timeout=2) as s:
            tcp_send(s, junk)
            tcp_send(s, bytes(good.pack()))
            with contextlib.suppress(ConnectionError, OSError):
                while True:  # the junk may get FORMERR first, or close the connection
                    r = tcp_recv(s)
                    if r.header.id == good.header.id:
                        assert names_a(r) == ["10.244.1.2"]
                        return
        assert names_a(udp(addr, good)) == ["10.244.1.2"]  # closed: the server still serves
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(junk, addr)
        s.sendto(bytes(good.pack()), addr)
        while True:
            data = s.recv(65535)
            if data[:2] == struct.pack("!H", good.header.id) and len(data) > 12:
                r = DNSRecord.parse(data)
                if r.q.qname == NAME:
                    assert names_a(r) == ["10.244.1.2"]
                    return


def test_oversized_queries_get_formerr(shared_server: DnsServer) -> None:
    addr = shared_server.bound[0]
    q = DNSRecord.question(NAME)
    big = bytes(q.pack()) + b"\x00" * 5000
    r = udp(addr, big)
    assert r.header.id == q.header.id and r.header.rcode == 1
    with socket.create_connection(addr, timeout=2) as s:
        tcp_send(s, big)
        assert tcp_recv(s).header.rcode == 1
    assert shared_server.stats()["oversized"] >= 2
