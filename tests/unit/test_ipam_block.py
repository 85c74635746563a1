"""Pure block logic: ordinals, FIFO, reservations, sequence numbers, /32 and IPv6 blocks."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.ipam.block import Block, cidr_name, reserved_ordinals
from pycalico.ipam.errors import AddressNotInBlock, AlreadyAllocated, BadSequenceNumber


def test_cidr_name_matches_calico_crd_names() -> None:
    assert cidr_name("10.0.0.0/26") == "10-0-0-0-26"
    assert cidr_name("fd00::/122") == "fd00---122"


def test_ordinal_and_address_roundtrip() -> None:
    b = Block.new("10.1.2.64/26")
    assert b.size == 64
    assert b.ordinal("10.1.2.64") == 0
    assert b.ordinal("10.1.2.127") == 63
    assert str(b.address(5)) == "10.1.2.69"
    assert str(b.interface(5)) == "10.1.2.69/26"
    with pytest.raises(AddressNotInBlock):
        b.ordinal("10.1.2.128")
    with pytest.raises(AddressNotInBlock):
        b.ordinal("fd00::1")
    with pytest.raises(AddressNotInBlock):
        b.address(64)


def test_allocate_is_fifo_and_release_appends_to_tail() -> None:
    b = Block.new("10.0.0.0/29")
    got = b.allocate(3, "h1", {"pod": "a"})
    assert [str(i.ip) for i in got] == ["10.0.0.0", "10.0.0.1", "10.0.0.2"]
    assert b.num_allocated() == 3 and b.num_free() == 5
    counts, missing = b.release(["10.0.0.1"])
    assert counts == {"h1": 1} and missing == []
    assert b.unallocated[-1] == 1
    # The freed address is reused last.
    nxt = b.allocate(5, "h2")
    assert [str(i.ip) for i in nxt] == [f"10.0.0.{i}" for i in (3, 4, 5, 6, 7)]
    last = b.allocate(2, "h3")
    assert [str(i.ip) for i in last] == ["10.0.0.1"]
    assert b.num_free() == 0
    assert b.allocate(1, "h4") == []


def test_allocate_skips_reserved_and_keeps_them_free() -> None:
    b = Block.new("10.0.0.0/28")
    rsv = reserved_ordinals(b.cidr, [ipaddress.ip_network("10.0.0.0/30")])
    assert rsv == frozenset({0, 1, 2, 3})
    got = b.allocate(20, "h", reserved=rsv)
    assert len(got) == 12
    assert all(int(str(i.ip).rsplit(".", 1)[1]) >= 4 for i in got)
    assert sorted(b.unallocated) == [0, 1, 2, 3]
    assert b.num_free(rsv) == 0 and b.num_free() == 4


def test_reserved_ordinals_other_family_and_partial_overlap() -> None:
    cidr = ipaddress.ip_network("10.0.0.0/26")
    assert reserved_ordinals(cidr, [ipaddress.ip_network("fd00::/64")]) == frozenset()
    assert reserved_ordinals(cidr, [ipaddress.ip_network("10.0.0.62/31")]) == {62, 63}
    assert len(reserved_ordinals(cidr, [ipaddress.ip_network("10.0.0.0/16")])) == 64


def test_attributes_shared_per_handle_and_compacted_on_release() -> None:
    b = Block.new("10.0.0.0/28")
    b.allocate(2, "h1", {"pod": "a"})
    b.allocate(1, "h2", {"pod": "b"})
    b.allocate(1, "h1", {"pod": "a"})
    assert len(b.attributes) == 2
    assert b.attributes_for("10.0.0.3") == {"handle_id": "h1", "secondary": {"pod": "a"}}
    assert b.release_by_handle("h1") == 3
    assert b.attributes == [{"handle_id": "h2", "secondary": {"pod": "b"}}]
    assert b.allocations[2] == 0
    assert b.ips_for_handle("h2") == [ipaddress.ip_address("10.0.0.2")]
    assert b.release_by_handle("nope") == 0


def test_sequence_number_guards_stale_release() -> None:
    b = Block.new("10.0.0.0/31")
    (ip,) = b.allocate(1, "old")
    seen = b.sequence_for(ip.ip)
    assert seen is not None
    b.release([ip.ip])
    b.allocate(1, "x")  # consumes .1
    (again,) = b.allocate(1, "new")  # .0 reused
    assert again.ip == ip.ip
    with pytest.raises(BadSequenceNumber):
        b.release([ip.ip], {str(ip.ip): seen})
    # The new holder still holds it.
    assert b.attributes_for(ip.ip) == {"handle_id": "new", "secondary": {}}
    current = b.sequence_for(ip.ip)
    assert current is not None and current > seen
    counts, _ = b.release([ip.ip], {str(ip.ip): current})
    assert counts == {"new": 1}


def test_release_unallocated_is_reported_not_an_error() -> None:
    b = Block.new("10.0.0.0/30")
    counts, missing = b.release(["10.0.0.2"])
    assert counts == {} and missing == [ipaddress.ip_address("10.0.0.2")]


def test_assign_specific_address() -> None:
    b = Block.new("10.0.0.0/30")
    assert str(b.assign("10.0.0.2", "h")) == "10.0.0.2/30"
    with pytest.raises(AlreadyAllocated):
        b.assign("10.0.0.2", "h2")
    assert 2 not in b.unallocated
    assert [str(i.ip) for i in b.allocate(4, "z")] == ["10.0.0.0", "10.0.0.1", "10.0.0.3"]


def test_slash32_block() -> None:
    b = Block.new("10.9.9.9/32")
    assert b.size == 1
    (ip,) = b.allocate(3, "h")
    assert str(ip) == "10.9.9.9/32"
    assert b.num_free() == 0
    b.release(["10.9.9.9"])
    assert b.is_empty()


def test_ipv6_block() -> None:
    b = Block.new("fd00:1::/122")
    assert b.size == 64
    got = b.allocate(2, "h")
    assert [str(i) for i in got] == ["fd00:1::/122", "fd00:1::1/122"]
    assert b.ordinal("fd00:1::3f") == 63


def test_spec_roundtrip_is_lossless() -> None:
    b = Block.new("10.0.0.0/29", "host:n1")
    b.allocate(3, "h", {"pod": "p", "namespace": "ns"})
    b.release(["10.0.0.1"])
    spec = b.to_spec()
    assert spec["affinity"] == "host:n1"
    assert spec["allocations"][1] is None
    again = Block.from_spec(spec)
    assert again.to_spec() == spec
    assert again.host == "n1"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5)), max_size=40))
def test_invariants_hold_under_random_operations(ops: list[tuple[bool, int]]) -> None:
    b = Block.new("10.0.0.0/28")
    held: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for is_alloc, n in ops:
        if is_alloc:
            held += [i.ip for i in b.allocate(n, f"h{n}")]
        elif held:
            b.release(held[:n])
            held = held[n:]
        free = [o for o, a in enumerate(b.allocations) if a is None]
        assert sorted(b.unallocated) == free
        assert len(set(b.unallocated)) == len(b.unallocated)
        assert b.num_allocated() == len(held)
        assert all(a is None or 0 <= a < len(b.attributes) for a in b.allocations)
        assert len(set(held)) == len(held)


def test_minimal_spec_is_completed() -> None:
    b = Block.from_spec({"cidr": "10.0.0.0/30"})
    assert b.unallocated == [0, 1, 2, 3] and b.allocations == [None] * 4
    assert b.affinity is None and b.sequence_number == 0
