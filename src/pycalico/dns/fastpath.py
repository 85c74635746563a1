"""Fast path for the common query: one A/AAAA question, class IN, plain header, optionally one
EDNS0 (version 0) OPT — parsed and answered with ``struct``, without dnslib.

Owns nothing but speed: for every query it accepts, the reply carries exactly the sections,
flags, TTLs and rcode :class:`pycalico.dns.resolver.Resolver`'s general path would produce
(a unit test compares both on generated queries). Anything else — other types or classes,
names with unusual bytes or compression, names outside our zones (REFUSED / forwarding),
replies that would need truncation — returns None and takes the general path.
"""

from __future__ import annotations

import socket
import struct

from pycalico.dns import records as R
from pycalico.dns.index import RecordIndex, Status

_HDR = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHHIH")  # name pointer, type, class, ttl, rdlength
_OPT = struct.Struct("!BHHIH")  # root name, type 41, payload size, ext-rcode/ver/flags, rdlen
_SOA_TIMES = struct.Struct("!IIIII")
_OK_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.split("."):
        raw = label.encode("ascii")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def fast_answer(
    data: bytes,
    tcp: bool,
    index: RecordIndex,
    ttl: int,
    negative_ttl: int,
    max_udp_payload: int,
    forwarding: bool,
    mname: bytes,
    rname: bytes,
) -> tuple[bytes, int] | None:
    """(reply, rcode) for a simple query, or None (use the general path)."""
    n = len(data)
    if n < 17:
        return None
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(data)
    if flags & 0xF800 or qd != 1 or an or ns or ar > 1:
        return None  # QR or an opcode set, or unusual counts
    labels: list[str] = []
    i = 12
    total = 0
    while True:
        if i >= n:
            return None
        ln = data[i]
        if ln == 0:
            break
        if ln > 63:
            return None
        part = data[i + 1 : i + 1 + ln]
        if len(part) != ln or not _OK_BYTES.issuperset(part):
            return None
        labels.append(part.decode("ascii").lower())
        total += ln + 1
        i += ln + 1
    if not labels or total > 254 or i + 5 > n:
        return None
    qend = i + 5
    qtype, qclass = struct.unpack_from("!HH", data, i + 1)
    if qclass != 1 or qtype not in (R.A, R.AAAA):
        return None
    edns = False
    limit = 65535 if tcp else 512
    if ar:
        if qend + 11 > n:
            return None
        root, rtype, payload, xttl, rdlen = _OPT.unpack_from(data, qend)
        if root != 0 or rtype != 41 or qend + 11 + rdlen != n or (xttl >> 16) & 0xFF:
            return None
        edns = True
        if not tcp:
            limit = max(512, min(payload, max_udp_payload))
    elif qend != n:
        return None
    name = ".".join(labels)
    found = index.lookup(name)
    if found.status is Status.OUTSIDE:
        return None
    zone = found.zone
    answers = bytearray()
    count = 0
    values = found.rrsets.get(qtype, ())
    if values:
        fam, size = (socket.AF_INET, 4) if qtype == R.A else (socket.AF_INET6, 16)
        fixed = _RR_FIXED.pack(0xC00C, qtype, 1, ttl, size)
        for v in sorted(values, key=str):
            answers += fixed + socket.inet_pton(fam, str(v))
            count += 1
    rcode = 3 if found.status is Status.NXDOMAIN else 0
    auth = b""
    if not count and zone is not None:
        rdata = (
            mname
            + rname
            + _SOA_TIMES.pack(index.generation & 0xFFFFFFFF, 7200, 1800, 86400, negative_ttl)
        )
        owner = encode_name(zone)
        auth = owner + struct.pack("!HHIH", R.SOA, 1, negative_ttl, len(rdata)) + rdata
    out_flags = 0x8400 | (flags & 0x0100) | (0x80 if forwarding else 0) | rcode
    opt = _OPT.pack(0, 41, max_udp_payload, 0, 0) if edns else b""
    reply = (
        _HDR.pack(qid, out_flags, 1, count, 1 if auth else 0, 1 if edns else 0)
        + data[12:qend]
        + answers
        + auth
        + opt
    )
    if len(reply) > limit:
        return None
    return reply, rcode
