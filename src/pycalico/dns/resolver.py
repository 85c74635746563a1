"""Answering one DNS query from the record index (pure: bytes in, decision out).

Owns the protocol rules of the server:

- responses (QR=1) and packets shorter than a header are dropped (no reflection loops);
  unparseable queries get FORMERR echoing the id; opcode != QUERY -> NOTIMP; QDCOUNT != 1 or
  more than one OPT -> FORMERR; EDNS version > 0 -> BADVERS; class other than IN/ANY ->
  REFUSED; AXFR/IXFR -> REFUSED.
- names in our zones are answered authoritatively (AA=1): records of the asked type (ANY: all
  types), else NODATA (NOERROR, empty answer); NXDOMAIN when the name does not exist; negative
  answers carry the zone's SOA in the authority section (TTL = SOA minimum = negative TTL,
  RFC 2308). SRV answers carry the targets' A/AAAA as additional records.
- names outside our zones -> :attr:`Action.FORWARD` when upstreams are configured, else
  REFUSED at once. RA is set exactly when forwarding is available.
- UDP size limit: 512 without EDNS, else min(max(512, client's size), our max payload); a
  larger response is replaced by header + question (+ OPT) with TC=1, so the client retries
  over TCP (limit 65535). Replies to EDNS queries carry our own OPT record.

Invariant: never raises on any input bytes; the outcome depends only on the bytes after the
query id, the transport and the index (so a reply may be cached by those while the index
generation is unchanged).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from dnslib import AAAA as AAAA_RD
from dnslib import EDNS0, NS, PTR, QTYPE, RR, SOA, SRV, DNSHeader, DNSLabel, DNSRecord
from dnslib import A as A_RD

from pycalico.dns import records as R
from pycalico.dns.fastpath import encode_name, fast_answer
from pycalico.dns.index import RecordIndex, Status

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
CLASS_IN, CLASS_ANY = 1, 255
QTYPE_ANY, QTYPE_AXFR, QTYPE_IXFR, QTYPE_OPT = 255, 252, 251, 41
MAX_TCP = 65535


class Action(Enum):
    REPLY = "reply"
    FORWARD = "forward"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    data: bytes = b""
    rcode: int = NOERROR
    cacheable: bool = False
    truncated: bool = False


DROP = Outcome(Action.DROP)


@dataclass(frozen=True)
class ResolverSettings:
    zone: str = "pod.cluster.local"
    node_zone: str = ""  # "" -> records.default_node_zone(zone)
    ttl: int = 5
    negative_ttl: int = 1
    max_udp_payload: int = 1232
    forwarding: bool = False

    def zones(self) -> tuple[str, str]:
        z = self.zone.lower().rstrip(".")
        return z, (self.node_zone.lower().rstrip(".") or R.default_node_zone(z))


def question_end(data: bytes) -> int:
    """Offset just past a single uncompressed question; 0 when there is none to walk."""
    if len(data) < 12 or data[4:6] != b"\x00\x01":
        return 0
    i = 12
    while i < len(data):
        n = data[i]
        if n == 0:
            return i + 5 if i + 5 <= len(data) else 0
        if n & 0xC0:
            return 0
        i += n + 1
    return 0


def error_reply(data: bytes, rcode: int, ra: bool = False, question: bool = True) -> bytes:
    """An error reply echoing the query's id, opcode, RD bit and (when asked and it can be
    walked) its question — resolvers such as glibc ignore replies whose question does not
    match. FORMERR for an unparseable query carries no question."""
    qid, flags = struct.unpack_from("!HH", data)
    out_flags = 0x8000 | (flags & 0x7900) | (0x80 if ra else 0) | (rcode & 0xF)
    qend = question_end(data) if question else 0
    if qend:
        return struct.pack("!HHHHHH", qid, out_flags, 1, 0, 0, 0) + data[12:qend]
    return struct.pack("!HHHHHH", qid, out_flags, 0, 0, 0, 0)


def qname_key(label: DNSLabel) -> str:
    """Lower-case lookup key of a wire name; dots/backslashes inside a label are escaped so
    such names never match an index entry."""
    parts = []
    for raw in label.label:
        low = raw.lower()
        if b"." in low or b"\\" in low:
            low = low.replace(b"\\", b"\\\\").replace(b".", b"\\.")
        parts.append(low.decode("latin-1"))
    return ".".join(parts)


class Resolver:
    """Turns query bytes into an :class:`Outcome` using ``index`` and ``settings``."""

    def __init__(self, index: RecordIndex, settings: ResolverSettings, fast: bool = True) -> None:
        self.index = index
        self.settings = settings
        self.fast = fast
        fwd = settings.zones()[0]
        self._mname_wire = encode_name(self._mname())
        self._rname_wire = encode_name("hostmaster." + fwd)

    def handle(self, data: bytes, tcp: bool = False) -> Outcome:
        if len(data) < 12 or data[2] & 0x80:
            return DROP
        if self.fast:
            s = self.settings
            try:
                got = fast_answer(
                    data,
                    tcp,
                    self.index,
                    s.ttl,
                    s.negative_ttl,
                    s.max_udp_payload,
                    s.forwarding,
                    self._mname_wire,
                    self._rname_wire,
                )
            except Exception:  # defensive: the general path decides
                got = None
            if got is not None:
                return Outcome(Action.REPLY, got[0], got[1], cacheable=True)
        try:
            query = DNSRecord.parse(data)
        except Exception:  # dnslib raises many types on garbage; all mean FORMERR
            return Outcome(Action.REPLY, error_reply(data, FORMERR, question=False), FORMERR)
        try:
            return self._answer(query, tcp)
        except Exception:  # defensive: a bug must not kill the server; the client retries
            return Outcome(
                Action.REPLY, error_reply(data, SERVFAIL, self.settings.forwarding), SERVFAIL
            )

    # -- the decision ------------------------------------------------------------------
    def _answer(self, query: DNSRecord, tcp: bool) -> Outcome:
        h = query.header
        opts = [rr for rr in query.ar if rr.rtype == QTYPE_OPT]
        edns = opts[0] if len(opts) == 1 else None
        if h.opcode != 0:
            return self._error(query, NOTIMP, edns, cacheable=True)
        if len(query.questions) != 1 or len(opts) > 1:
            return self._error(query, FORMERR, edns)
        if edns is not None and (edns.ttl >> 16) & 0xFF != 0:
            return self._error(query, BADVERS, edns, cacheable=True)
        if tcp:
            limit = MAX_TCP
        elif edns is None:
            limit = 512
        else:
            limit = max(512, min(int(edns.rclass), self.settings.max_udp_payload))
        q = query.q
        if q.qclass not in (CLASS_IN, CLASS_ANY):
            return self._error(query, REFUSED, edns, cacheable=True)
        name = qname_key(q.qname)
        found = self.index.lookup(name)
        if found.status is Status.OUTSIDE:
            if self.settings.forwarding:
                return Outcome(Action.FORWARD)
            return self._error(query, REFUSED, edns, cacheable=True)
        if q.qtype in (QTYPE_AXFR, QTYPE_IXFR):
            return self._error(query, REFUSED, edns, cacheable=True)
        reply = self._reply(query, NOERROR, edns, aa=True)
        zone = found.zone
        ttl = self.settings.ttl
        qtype = q.qtype
        answers: list[RR] = []
        targets: dict[str, None] = {}
        if zone is not None and name == zone and qtype in (R.SOA, R.NS, QTYPE_ANY):
            if qtype in (R.SOA, QTYPE_ANY):
                answers.append(self._soa(zone, q.qname))
            if qtype in (R.NS, QTYPE_ANY):
                answers.append(RR(q.qname, R.NS, rdata=NS(self._mname()), ttl=ttl))
        for rtype, values in found.rrsets.items():
            if qtype != QTYPE_ANY and rtype != qtype:
                continue
            for v in sorted(values, key=str):
                answers.append(RR(q.qname, rtype, rdata=_rdata(rtype, v), ttl=ttl))
                if rtype == R.SRV and isinstance(v, tuple):
                    targets[v[3]] = None
        rcode = NOERROR
        if found.status is Status.NXDOMAIN:
            rcode = NXDOMAIN
            reply.header.rcode = NXDOMAIN
        for rr in answers:
            reply.add_answer(rr)
        for t in targets:
            self._add_target(reply, t)
        if not answers and zone is not None:
            reply.add_auth(self._soa(zone, DNSLabel(zone)))
        if edns is not None:
            reply.add_ar(self._opt())
        return self._finish(reply, query, edns, limit, rcode)

    def _finish(
        self, reply: DNSRecord, query: DNSRecord, edns: RR | None, limit: int, rcode: int
    ) -> Outcome:
        data = bytes(reply.pack())
        if len(data) <= limit:
            return Outcome(Action.REPLY, data, rcode, cacheable=True)
        short = self._reply(query, rcode, edns, aa=True)
        short.header.tc = 1
        if edns is not None:
            short.add_ar(self._opt())
        return Outcome(Action.REPLY, bytes(short.pack()), rcode, cacheable=True, truncated=True)

    # -- helpers -----------------------------------------------------------------------
    def _reply(self, query: DNSRecord, rcode: int, edns: RR | None, aa: bool) -> DNSRecord:
        h = query.header
        hdr = DNSHeader(
            id=h.id,
            qr=1,
            opcode=h.opcode,
            aa=int(aa),
            rd=h.rd,
            ra=int(self.settings.forwarding),
            rcode=rcode & 0xF,
        )
        return DNSRecord(hdr, q=query.q if len(query.questions) == 1 else None)

    def _error(
        self, query: DNSRecord, rcode: int, edns: RR | None, cacheable: bool = False
    ) -> Outcome:
        reply = self._reply(query, rcode, edns, aa=False)
        if edns is not None:
            reply.add_ar(self._opt(ext_rcode=rcode >> 4))
        return Outcome(Action.REPLY, bytes(reply.pack()), rcode, cacheable=cacheable)

    def _opt(self, ext_rcode: int = 0) -> RR:
        return EDNS0(udp_len=self.settings.max_udp_payload, ext_rcode=ext_rcode)

    def _mname(self) -> str:
        return "ns.dns." + self.settings.zones()[0]

    def _soa(self, zone: str, owner: DNSLabel) -> RR:
        neg = self.settings.negative_ttl
        fwd = self.settings.zones()[0]
        rdata = SOA(
            mname=self._mname(),
            rname="hostmaster." + fwd,
            times=(self.index.generation & 0xFFFFFFFF, 7200, 1800, 86400, neg),
        )
        return RR(owner, R.SOA, rdata=rdata, ttl=neg)

    def _add_target(self, reply: DNSRecord, target: str) -> None:
        t = self.index.lookup(target)
        for rtype in (R.A, R.AAAA):
            for v in sorted(t.rrsets.get(rtype, ()), key=str):
                reply.add_ar(RR(target, rtype, rdata=_rdata(rtype, v), ttl=self.settings.ttl))


def _rdata(rtype: int, v: R.RData) -> object:
    if rtype == R.A:
        return A_RD(str(v))
    if rtype == R.AAAA:
        return AAAA_RD(str(v))
    if rtype == R.PTR:
        return PTR(str(v))
    if rtype == R.SRV and isinstance(v, tuple):
        return SRV(priority=v[0], weight=v[1], port=v[2], target=v[3])
    raise ValueError(f"unsupported record type {QTYPE.get(rtype)}")
