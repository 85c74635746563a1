"""Userspace IPIP pure parts: longest-prefix match, inner destination, decapsulation rules."""

from __future__ import annotations

import ipaddress
import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from pycalico.felix.dataplane.uipip import Lpm, decapsulate, inner_destination

N = ipaddress.IPv4Network
A = ipaddress.IPv4Address


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))  # fmt: skip
    return hdr + payload


def test_lpm_prefers_longest_prefix() -> None:
    lpm = Lpm([
        (N("10.244.1.0/26"), A("198.18.0.1")),
        (N("10.244.1.7/32"), A("198.18.0.3")),
        (N("10.244.0.0/16"), A("198.18.0.9")),
    ])  # fmt: skip
    assert lpm.lookup(int(A("10.244.1.7"))) == "198.18.0.3"
    assert lpm.lookup(int(A("10.244.1.8"))) == "198.18.0.1"
    assert lpm.lookup(int(A("10.244.9.1"))) == "198.18.0.9"
    assert lpm.lookup(int(A("10.245.0.1"))) is None
    assert len(lpm) == 3
    assert lpm.sources == {socket.inet_aton(x) for x in ("198.18.0.1", "198.18.0.3", "198.18.0.9")}


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)), max_size=20),
       st.integers(0, 2**32 - 1))  # fmt: skip
def test_lpm_matches_a_linear_scan(entries: list[tuple[int, int]], dst: int) -> None:
    nets = [(N(f"{A(a)}/{p}", strict=False), A(i + 1)) for i, (a, p) in enumerate(entries)]
    table: dict[N, A] = {}
    for net, hop in nets:
        table[net] = hop  # later duplicates win, as in Lpm
    best = max((n for n in table if A(dst) in n), key=lambda n: n.prefixlen, default=None)
    want = None if best is None else str(table[best])
    assert Lpm(nets).lookup(dst) == want


def test_inner_destination_and_decapsulation() -> None:
    inner = ipv4("10.244.1.2", "10.244.2.3", 6, b"x" * 20)
    assert inner_destination(inner) == int(A("10.244.2.3"))
    assert inner_destination(b"\x60" + bytes(39)) is None  # IPv6
    assert inner_destination(b"\x45") is None
    outer = ipv4("198.18.0.2", "198.18.0.1", 4, inner)
    known = frozenset({socket.inet_aton("198.18.0.2")})
    assert decapsulate(outer, known) == inner
    assert decapsulate(outer, frozenset()) is None  # unknown outer source
    assert decapsulate(ipv4("198.18.0.2", "198.18.0.1", 17, inner), known) is None  # not IPIP
    bad_inner = ipv4("198.18.0.2", "198.18.0.1", 4, b"\x60" + bytes(39))
    assert decapsulate(bad_inner, known) is None
