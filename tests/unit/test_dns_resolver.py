"""The pure query -> reply logic: answers, TTLs, negative answers, EDNS, truncation, errors,
and fuzzing with generated packets."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.dns import records as R
from pycalico.dns.index import RecordIndex
from pycalico.dns.resolver import Action, Resolver, ResolverSettings

from .test_dns_index import NZONE, ZONE, wep

NAME = "web.shop.pod.cluster.local"


def make_resolver(*objs: dict[str, Any], forwarding: bool = False, **kw: Any) -> Resolver:
    idx = RecordIndex([ZONE, NZONE])
    for i, o in enumerate(objs):
        idx.set_source(f"k{i}", R.workload_records(o, ZONE))
    idx.set_pool("pool", "244.10.in-addr.arpa")
    return Resolver(idx, ResolverSettings(forwarding=forwarding, **kw))


@pytest.fixture
def res() -> Resolver:
    return make_resolver(
        wep(
            "web",
            "shop",
            "10.244.1.2/32",
            "fd00::2/128",
            ports=[{"name": "http", "protocol": "TCP", "port": 8080}],
        ),
        wep("db", "prod", "10.244.2.9/32"),
    )


def ask(
    res: Resolver, name: str, qtype: str = "A", *, edns: int | None = None, tcp: bool = False
) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    out = res.handle(bytes(q.pack()), tcp)
    assert out.action is Action.REPLY
    reply = DNSRecord.parse(out.data)
    assert reply.header.id == q.header.id
    assert reply.header.qr == 1
    return reply


def test_a_and_aaaa_with_ttl(res: Resolver) -> None:
    r = ask(res, NAME)
    assert r.header.rcode == 0 and r.header.aa == 1
    assert [(str(x.rdata), x.ttl, x.rtype) for x in r.rr] == [("10.244.1.2", 5, QTYPE.A)]
    r = ask(res, NAME, "AAAA")
    assert [str(x.rdata) for x in r.rr] == ["fd00::2"]
    r = ask(res, NAME, "ANY")
    assert sorted(QTYPE[x.rtype] for x in r.rr) == ["A", "AAAA"]


def test_case_of_the_question_is_preserved(res: Resolver) -> None:
    r = ask(res, "WeB.ShOp.pod.CLUSTER.local")
    assert str(r.q.qname) == "WeB.ShOp.pod.CLUSTER.local."
    assert str(r.rr[0].rname) == "WeB.ShOp.pod.CLUSTER.local."
    assert str(r.rr[0].rdata) == "10.244.1.2"


def test_nodata_vs_nxdomain_carry_soa(res: Resolver) -> None:
    nodata = ask(res, "db.prod.pod.cluster.local", "AAAA")
    assert nodata.header.rcode == 0 and nodata.rr == []
    ent = ask(res, "shop.pod.cluster.local")
    assert ent.header.rcode == 0 and ent.rr == []
    nx = ask(res, "nope.shop.pod.cluster.local")
    assert nx.header.rcode == 3 and nx.rr == []
    for r in (nodata, ent, nx):
        assert r.header.aa == 1
        [soa] = r.auth
        assert soa.rtype == QTYPE.SOA and str(soa.rname) == "pod.cluster.local."
        assert soa.ttl == 1 and soa.rdata.times[4] == 1  # negative TTL = SOA minimum
    assert ask(res, "x.node.cluster.local").auth[0].rname == "node.cluster.local."


def test_ttls_configurable() -> None:
    res = make_resolver(wep("web", "shop", "10.0.0.1/32"), ttl=30, negative_ttl=7)
    assert ask(res, NAME).rr[0].ttl == 30
    soa = ask(res, "zz.shop.pod.cluster.local").auth[0]
    assert soa.ttl == 7 and soa.rdata.times[4] == 7


def test_apex_soa_and_ns(res: Resolver) -> None:
    r = ask(res, "pod.cluster.local", "SOA")
    assert [x.rtype for x in r.rr] == [QTYPE.SOA]
    r = ask(res, "pod.cluster.local", "NS")
    assert [str(x.rdata) for x in r.rr] == ["ns.dns.pod.cluster.local."]


def test_ptr_in_pool_zone(res: Resolver) -> None:
    r = ask(res, "2.1.244.10.in-addr.arpa", "PTR")
    assert [str(x.rdata) for x in r.rr] == [NAME + "."]
    r = ask(res, ipaddress.ip_address("fd00::2").reverse_pointer, "PTR")
    assert [str(x.rdata) for x in r.rr] == [NAME + "."]
    nx = ask(res, "77.1.244.10.in-addr.arpa", "PTR")
    assert nx.header.rcode == 3 and str(nx.auth[0].rname) == "244.10.in-addr.arpa."


def test_srv_with_additional_addresses(res: Resolver) -> None:
    r = ask(res, "_http._tcp." + NAME, "SRV")
    [srv] = r.rr
    assert (srv.rdata.priority, srv.rdata.weight, srv.rdata.port) == (0, 100, 8080)
    assert str(srv.rdata.target) == NAME + "."
    assert sorted(str(x.rdata) for x in r.ar) == ["10.244.1.2", "fd00::2"]
    assert ask(res, "_http._udp." + NAME, "SRV").header.rcode == 3
    ent = ask(res, "_tcp." + NAME, "SRV")
    assert ent.header.rcode == 0 and ent.rr == []


def test_outside_names_refused_or_forwarded(res: Resolver) -> None:
    r = ask(res, "example.com")
    assert r.header.rcode == 5 and r.header.ra == 0 and r.header.aa == 0
    fwd = make_resolver(forwarding=True)
    q = bytes(DNSRecord.question("example.com").pack())
    assert fwd.handle(q).action is Action.FORWARD
    assert ask(fwd, "nope.pod.cluster.local").header.ra == 1


def _many_ips() -> dict[str, Any]:
    return wep("big", "shop", *[f"fd00::{i:x}/128" for i in range(1, 61)])


def test_truncation_and_edns_sizes() -> None:
    res = make_resolver(_many_ips())
    name = "big.shop.pod.cluster.local"
    small = ask(res, name, "AAAA")  # no EDNS: 512 bytes
    assert small.header.tc == 1 and small.rr == [] and small.q.qname == name
    full = ask(res, name, "AAAA", tcp=True)
    assert full.header.tc == 0 and len(full.rr) == 60
    big = ask(res, name, "AAAA", edns=4096)  # capped at our 1232 payload; 60 AAAA ~ 1.7 kB
    assert big.header.tc == 1
    [opt] = big.ar
    assert opt.rtype == QTYPE.OPT and opt.rclass == 1232
    res2 = make_resolver(_many_ips(), max_udp_payload=4096)
    ok = ask(res2, name, "AAAA", edns=4096)
    assert ok.header.tc == 0 and len(ok.rr) == 60
    for payload in (0, 100, 511):  # below 512 means 512
        r = ask(res2, name, "A", edns=payload)
        assert r.header.tc == 0


def test_edns_reply_has_opt_and_badvers(res: Resolver) -> None:
    r = ask(res, NAME, edns=1400)
    assert [x.rtype for x in r.ar] == [QTYPE.OPT]
    q = DNSRecord.question(NAME)
    q.add_ar(EDNS0(udp_len=1400, version=1))
    r = DNSRecord.parse(res.handle(bytes(q.pack())).data)
    [opt] = r.ar
    assert r.header.rcode == 0 and (opt.ttl >> 24) == 1  # extended rcode 16 = BADVERS
    q = DNSRecord.question(NAME)
    q.add_ar(EDNS0(udp_len=1400))
    q.add_ar(EDNS0(udp_len=1400))
    assert DNSRecord.parse(res.handle(bytes(q.pack())).data).header.rcode == 1


def test_protocol_errors(res: Resolver) -> None:
    # response packets and runts are dropped
    reply = ask(res, NAME)
    assert res.handle(bytes(reply.pack())).action is Action.DROP
    assert res.handle(b"\x00" * 11).action is Action.DROP
    # garbage after a valid header: FORMERR with the same id
    out = res.handle(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab")
    assert out.action is Action.REPLY and out.data[:2] == b"\x12\x34"
    assert out.data[3] & 0xF == 1 and out.data[2] & 0x80
    # two questions: FORMERR; opcode NOTIFY: NOTIMP; class CH: REFUSED; AXFR: REFUSED
    two = DNSRecord(DNSHeader(id=7), questions=[DNSQuestion(NAME), DNSQuestion(NAME)])
    assert DNSRecord.parse(res.handle(bytes(two.pack())).data).header.rcode == 1
    notify = DNSRecord(DNSHeader(id=8, opcode=4), q=DNSQuestion(NAME))
    assert DNSRecord.parse(res.handle(bytes(notify.pack())).data).header.rcode == 4
    chaos = DNSRecord(DNSHeader(id=9), q=DNSQuestion("version.bind", QTYPE.TXT, 3))
    assert DNSRecord.parse(res.handle(bytes(chaos.pack())).data).header.rcode == 5
    assert ask(res, "pod.cluster.local", "AXFR").header.rcode == 5


def test_names_with_odd_labels_never_match(res: Resolver) -> None:
    q = DNSRecord.question("x.shop.pod.cluster.local")
    q.q.qname.label = (b"web.shop", b"pod", b"cluster", b"local")  # a dot inside a label
    r = DNSRecord.parse(res.handle(bytes(q.pack())).data)
    assert r.rr == []


# -- fuzzing ------------------------------------------------------------------------------
def _check(res: Resolver, data: bytes) -> None:
    out = res.handle(data)
    if out.action is Action.DROP:
        assert len(data) < 12 or data[2] & 0x80
        return
    if out.action is Action.FORWARD:  # only with forwarding on
        return
    assert out.data[:2] == data[:2] and out.data[2] & 0x80
    assert len(out.data) <= 1232  # never above our UDP payload size
    DNSRecord.parse(out.data)  # every reply is well-formed


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    res = make_resolver(wep("web", "shop", "10.244.1.2/32"), forwarding=True)
    _check(res, data)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0x7FFF),
    st.lists(st.binary(min_size=1, max_size=70), min_size=0, max_size=6),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
    st.binary(max_size=40),
)
def test_fuzz_structured_queries(
    qid: int,
    flags: int,
    labels: list[bytes],
    qtype: int,
    qclass: int,
    counts: list[int],
    tail: bytes,
) -> None:
    """Headers with arbitrary flags/counts, names with odd labels, random trailing bytes."""
    res = make_resolver(wep("web", "shop", "10.244.1.2/32"))
    name = b"".join(bytes([min(len(x), 63)]) + x[:63] for x in labels) + b"\x00"
    data = struct.pack("!HHHHHH", qid, flags, *counts) + name + struct.pack("!HH", qtype, qclass)
    _check(res, data + tail)
    one = struct.pack("!HHHHHH", qid, flags & 0x7900, 1, 0, 0, 0)
    _check(res, one + name + struct.pack("!HH", qtype, qclass))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["web", "db", "nope", "WEB"]), st.sampled_from(list(QTYPE.forward)))
def test_fuzz_every_qtype_gets_valid_reply(label: str, qtype: int) -> None:
    res = make_resolver(
        wep("web", "shop", "10.244.1.2/32", ports=[{"name": "h", "protocol": "TCP", "port": 1}])
    )
    q = DNSRecord(DNSHeader(id=1), q=DNSQuestion(f"{label}.shop.pod.cluster.local", qtype))
    q.add_ar(EDNS0(udp_len=4096))
    out = res.handle(bytes(q.pack()))
    r = DNSRecord.parse(out.data)
    assert r.header.rcode in (0, 3, 5)


def _sections(data: bytes) -> tuple[Any, ...]:
    r = DNSRecord.parse(data)
    h = r.header
    rrs = [
        [(str(x.rname).lower(), x.rtype, x.rclass, x.ttl, str(x.rdata)) for x in sec]
        for sec in (r.rr, r.auth, r.ar)
    ]
    return (
        h.id,
        h.qr,
        h.aa,
        h.rd,
        h.ra,
        h.tc,
        h.rcode,
        h.opcode,
        str(r.q.qname),
        r.q.qtype,
        *map(str, rrs),
    )


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["web", "WeB", "db", "nope", "big", "shop", "_tcp.web", "x.y.web"]),
    st.sampled_from(
        [
            "shop.pod.cluster.local",
            "prod.pod.cluster.local",
            "pod.cluster.local",
            "example.com",
            "node.cluster.local",
        ]
    ),
    st.sampled_from(["A", "AAAA", "MX", "SRV"]),
    st.one_of(st.none(), st.integers(0, 5000)),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_fast_path_equals_general_path(
    label: str, suffix: str, qtype: str, edns: int | None, tcp: bool, rd: bool, forwarding: bool
) -> None:
    objs = (
        wep(
            "web",
            "shop",
            "10.244.1.2/32",
            "fd00::2/128",
            ports=[{"name": "http", "protocol": "TCP", "port": 1}],
        ),
        wep("db", "prod", "10.244.2.9/32"),
        _many_ips(),
    )
    fast = make_resolver(*objs, forwarding=forwarding)
    slow = make_resolver(*objs, forwarding=forwarding)
    slow.fast = False
    q = DNSRecord.question(f"{label}.{suffix}", qtype)
    q.header.rd = int(rd)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    data = bytes(q.pack())
    a, b = fast.handle(data, tcp), slow.handle(data, tcp)
    assert (a.action, a.rcode, a.cacheable) == (b.action, b.rcode, b.cacheable)
    if a.action is Action.REPLY:
        assert _sections(a.data) == _sections(b.data)
