"""IPAM allocator semantics against the in-memory datastore."""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.datastore.memory import MemoryDatastore
from pycalico.ipam import (
    IPAM,
    BadSequenceNumber,
    BlockNotEmpty,
    InvalidIPAMConfig,
    IPAMConfig,
    NoAddressesAvailable,
    NotInPool,
)
from pycalico.ipam.gc import check
from pycalico.ipam.store import KIND_AFFINITY, KIND_BLOCK, KIND_HANDLE
from tests.kit.builders import ip_pool, node, resource
from tests.kit.fakes import seed


def pool(ds: MemoryDatastore, name: str, cidr: str, **spec: Any) -> None:
    ds.create(ip_pool(name, cidr, **spec))


@pytest.fixture
def ds() -> MemoryDatastore:
    return MemoryDatastore()


@pytest.fixture
def ipam(ds: MemoryDatastore) -> IPAM:
    return IPAM(ds)


def blocks(ds: MemoryDatastore) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r["spec"] for r in ds.list(KIND_BLOCK).items}


def test_auto_assign_claims_affine_block_and_returns_block_prefix(
    ds: MemoryDatastore, ipam: IPAM
) -> None:
    pool(ds, "p", "10.0.0.0/24")
    v4, v6 = ipam.auto_assign(2, 0, "h1", {"pod": "a"}, "n1")
    assert v6 == [] and len(v4) == 2
    assert all(i.network.prefixlen == 26 for i in v4)
    blk = ipaddress.ip_network(str(v4[0].network))
    assert all(i.ip in blk for i in v4)
    spec = blocks(ds)[str(blk).replace(".", "-").replace("/", "-")]
    assert spec["affinity"] == "host:n1"
    (aff,) = ds.list(KIND_AFFINITY).items
    assert aff["spec"]["state"] == "confirmed" and aff["spec"]["node"] == "n1"
    assert aff["metadata"]["name"] == f"n1-{str(blk).replace('.', '-').replace('/', '-')}"
    handle = ds.get(KIND_HANDLE, "h1")["spec"]
    assert handle == {"handleID": "h1", "block": {str(blk): 2}, "deleted": False}
    # Second assignment lands in the same affine block.
    v4b, _ = ipam.auto_assign(1, 0, "h2", None, "n1")
    assert v4b[0].ip in blk
    assert len(blocks(ds)) == 1


def test_hosts_get_distinct_blocks_seeded_by_hostname(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/16")
    a, _ = ipam.auto_assign(1, 0, "ha", None, "node-a")
    b, _ = ipam.auto_assign(1, 0, "hb", None, "node-b")
    assert a[0].network != b[0].network
    # Deterministic per hostname: a fresh store picks the same first block.
    ds2 = MemoryDatastore()
    pool(ds2, "p", "10.0.0.0/16")
    a2, _ = IPAM(ds2).auto_assign(1, 0, "ha", None, "node-a")
    assert a2[0].network == a[0].network


def test_new_block_when_affine_block_full(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/24", blockSize=28)
    got, _ = ipam.auto_assign(20, 0, "h", None, "n1")
    assert len({i.ip for i in got}) == 20
    assert {i.network for i in got} == set(ipaddress.ip_network("10.0.0.0/24").subnets(4)) & {
        i.network for i in got
    }
    assert len(blocks(ds)) == 2
    assert all(s["affinity"] == "host:n1" for s in blocks(ds).values())


def test_borrowing_when_no_block_can_be_claimed(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/28", blockSize=29)  # two blocks of 8
    ipam.auto_assign(9, 0, "h1", None, "n1")  # n1 owns both blocks
    got, _ = ipam.auto_assign(3, 0, "h2", None, "n2")
    assert len(got) == 3
    for s in blocks(ds).values():
        assert s["affinity"] == "host:n1"
    assert ipam.get_assignment_attributes(got[0]) is not None


def test_strict_affinity_forbids_borrowing(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/28", blockSize=29)
    ipam.set_config(IPAMConfig(strict_affinity=True))
    ipam.auto_assign(9, 0, "h1", None, "n1")
    with pytest.raises(
        NoAddressesAvailable, match=r"no addresses available in pools \[10.0.0.0/28\]"
    ):
        ipam.auto_assign(1, 0, "h2", None, "n2")
    assert ds.list(KIND_HANDLE).items and "h2" not in {
        r["metadata"]["name"] for r in ds.list(KIND_HANDLE).items
    }


def test_max_blocks_per_host(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/24", blockSize=30)
    ipam.set_config(IPAMConfig(strict_affinity=True, max_blocks_per_host=2))
    got, _ = ipam.auto_assign(8, 0, "h", None, "n1")
    assert len(got) == 8
    with pytest.raises(NoAddressesAvailable):
        ipam.auto_assign(1, 0, "h2", None, "n1")
    # Non-strict: the host borrows from another host's block instead.
    ipam.auto_assign(1, 0, "other", None, "n2")
    ipam.set_config(IPAMConfig(strict_affinity=False, max_blocks_per_host=0))
    cfg = ipam.get_config()
    assert cfg.effective_max_blocks == 20


def test_invalid_config_rejected(ipam: IPAM) -> None:
    with pytest.raises(InvalidIPAMConfig, match="autoAllocateBlocks"):
        ipam.set_config(IPAMConfig(strict_affinity=False, auto_allocate_blocks=False))
    with pytest.raises(InvalidIPAMConfig, match="maxBlocksPerHost"):
        ipam.set_config(IPAMConfig(max_blocks_per_host=-1))
    with pytest.raises(InvalidIPAMConfig, match="only be set when strictAffinity"):
        ipam.set_config(IPAMConfig(strict_affinity=False, max_blocks_per_host=3))


def test_string_flags_in_stored_resources(ds: MemoryDatastore, ipam: IPAM) -> None:
    """Calico's storage shapes carry some flags as strings ("true"/"false")."""
    pool(ds, "p", "10.0.0.0/24")
    ds.create(resource("IPAMConfiguration", "default", {"strictAffinity": "true"}))
    assert ipam.get_config().strict_affinity is True
    v4, _ = ipam.auto_assign(1, 0, "h", None, "n1")
    (aff,) = ds.list(KIND_AFFINITY).items
    assert aff["spec"]["deleted"] == "false"
    assert ipam.store.affinities("n1")[0].cidr == str(v4[0].network)


def test_exhaustion_raises_and_rolls_back(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/29", blockSize=29)
    with pytest.raises(NoAddressesAvailable) as ei:
        ipam.auto_assign(9, 0, "h", None, "n1")
    assert "10.0.0.0/29" in str(ei.value)
    (spec,) = blocks(ds).values()
    assert spec["allocations"] == [None] * 8
    assert ds.list(KIND_HANDLE).items == []
    got, _ = ipam.auto_assign(8, 0, "h", None, "n1")
    assert len(got) == 8


def test_no_pools(ipam: IPAM) -> None:
    with pytest.raises(NoAddressesAvailable, match="no usable IPv4 pools"):
        ipam.auto_assign(1, 0, "h", None, "n1")


def test_disabled_pools_uses_and_node_selector(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "off", "10.1.0.0/24", disabled=True)
    pool(ds, "tun", "10.2.0.0/24", allowedUses=["Tunnel"])
    pool(ds, "rack1", "10.3.0.0/24", nodeSelector="rack == 'r1'")
    pool(ds, "manual", "10.5.0.0/24", assignmentMode="Manual")
    pool(ds, "any", "10.4.0.0/24")
    seed(ds, [node("n1", labels={"rack": "r1"}), node("n2", labels={"rack": "r2"})])
    seen1 = set()
    for i in range(3):
        v4, _ = ipam.auto_assign(1, 0, f"a{i}", None, "n1")
        seen1.add(str(ipaddress.ip_network(str(v4[0].network)).supernet(new_prefix=24)))
    assert seen1 <= {"10.3.0.0/24", "10.4.0.0/24"}
    for i in range(5):
        v4, _ = ipam.auto_assign(1, 0, f"b{i}", None, "n2")
        assert v4[0].ip in ipaddress.ip_network("10.4.0.0/24")
    v4, _ = ipam.auto_assign(1, 0, "c", None, "n1", ipv4_pools=["rack1"])
    assert v4[0].ip in ipaddress.ip_network("10.3.0.0/24")
    v4, _ = ipam.auto_assign(1, 0, "m", None, "n1", ipv4_pools=["10.5.0.0/24"])
    assert v4[0].ip in ipaddress.ip_network("10.5.0.0/24")
    with pytest.raises(NotInPool, match="off"):
        ipam.auto_assign(1, 0, "d", None, "n1", ipv4_pools=["off"])
    # Calico uses requested pools as given, whatever their nodeSelector (determinePools)
    v4, _ = ipam.auto_assign(1, 0, "e", None, "n2", ipv4_pools=["rack1"])
    assert v4[0].ip in ipaddress.ip_network("10.3.0.0/24")
    with pytest.raises(NoAddressesAvailable):  # ... but still only for their allowed uses
        ipam.auto_assign(1, 0, "t", None, "n2", ipv4_pools=["tun"])


def test_reservations_are_skipped(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/28", blockSize=28)
    ds.create(resource("IPReservation", "r", {"reservedCIDRs": ["10.0.0.0/30", "10.0.0.15/32"]}))
    got, _ = ipam.auto_assign(11, 0, "h", None, "n1")
    ips = {int(str(i.ip).rsplit(".", 1)[1]) for i in got}
    assert ips == set(range(4, 15))
    with pytest.raises(NoAddressesAvailable):
        ipam.auto_assign(1, 0, "h2", None, "n1")
    # A specific request may still take a reserved address.
    assert str(ipam.assign_ip("10.0.0.1", "h3", None, "n1")) == "10.0.0.1/28"


def test_fully_reserved_block_is_not_claimed(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/27", blockSize=28)
    ds.create(resource("IPReservation", "r", {"reservedCIDRs": ["10.0.0.0/28"]}))
    got, _ = ipam.auto_assign(3, 0, "h", None, "n1")
    assert all(i.ip in ipaddress.ip_network("10.0.0.16/28") for i in got)
    assert list(blocks(ds)) == ["10-0-0-16-28"]


def test_slash32_blocks(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/30", blockSize=32)
    got, _ = ipam.auto_assign(4, 0, "h", None, "n1")
    assert sorted(str(i) for i in got) == [f"10.0.0.{i}/32" for i in range(4)]
    assert len(blocks(ds)) == 4
    with pytest.raises(NoAddressesAvailable):
        ipam.auto_assign(1, 0, "h2", None, "n2")


def test_dual_stack_and_ipv6_default_block(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "v4", "10.0.0.0/24")
    pool(ds, "v6", "fd00:1::/64")
    v4, v6 = ipam.auto_assign(1, 2, "h", {"pod": "p"}, "n1")
    assert len(v4) == 1 and len(v6) == 2
    assert all(i.network.prefixlen == 122 for i in v6)
    assert {str(a) for a in ipam.get_ips_by_handle("h")} == {str(i.ip) for i in (*v4, *v6)}
    released = ipam.release_by_handle("h")
    assert len(released) == 3
    assert ipam.get_ips_by_handle("h") == []


def test_dual_stack_rollback_when_v6_fails(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "v4", "10.0.0.0/24")
    with pytest.raises(NoAddressesAvailable, match="IPv6"):
        ipam.auto_assign(1, 1, "h", None, "n1")
    assert ipam.get_ips_by_handle("h") == []
    assert all(all(a is None for a in s["allocations"]) for s in blocks(ds).values())


def test_release_ips_and_sequence_guard(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/24")
    (ip,), _ = ipam.auto_assign(1, 0, "h", {"pod": "a"}, "n1")
    info = ipam.get_assignment_attributes(ip)
    assert info is not None and info.handle_id == "h" and info.attrs == {"pod": "a"}
    assert ipam.release_ips([ip]) == []
    assert ipam.get_assignment_attributes(ip) is None
    assert ds.list(KIND_HANDLE).items == []
    assert ipam.release_ips([ip]) == [ip.ip]
    # Stale release after reuse is refused.
    ipam.assign_ip(ip, "h2", None, "n1")
    with pytest.raises(BadSequenceNumber):
        ipam.release_ips([ip], {str(ip.ip): info.sequence_number})
    assert ipam.get_assignment_attributes(ip) is not None


def test_release_of_unknown_address(ipam: IPAM, ds: MemoryDatastore) -> None:
    pool(ds, "p", "10.0.0.0/24")
    assert ipam.release_ips(["192.168.1.1"]) == [ipaddress.ip_address("192.168.1.1")]


def test_assign_ip_outside_pools(ipam: IPAM) -> None:
    with pytest.raises(NotInPool):
        ipam.assign_ip("192.168.1.1", "h", None, "n1")


def test_release_affinity_and_host_affinities(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/24", blockSize=28)
    got, _ = ipam.auto_assign(20, 0, "h", None, "n1")
    cidrs = {str(i.network) for i in got}
    first = sorted(cidrs)[0]
    with pytest.raises(BlockNotEmpty):
        ipam.release_affinity(first, "n1", must_be_empty=True)
    assert blocks(ds)[first.replace(".", "-").replace("/", "-")]["affinity"] == "host:n1"
    ipam.release_by_handle("h")
    assert len(blocks(ds)) == 2  # empty affine blocks are kept for reuse
    assert ipam.release_host_affinities("n1") == 2
    assert blocks(ds) == {} and ds.list(KIND_AFFINITY).items == []


def test_release_host_affinities_keeps_nonempty_blocks_unaffine(
    ds: MemoryDatastore, ipam: IPAM
) -> None:
    pool(ds, "p", "10.0.0.0/24", blockSize=28)
    (ip,), _ = ipam.auto_assign(1, 0, "h", None, "n1")
    ipam.release_host_affinities("n1")
    (spec,) = blocks(ds).values()
    assert spec["affinity"] is None
    assert ipam.get_assignment_attributes(ip) is not None
    ipam.release_ips([ip])
    assert blocks(ds) == {}  # empty unaffine block deleted on release


def test_claim_affinity(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/24", blockSize=26)
    claimed, failed = ipam.claim_affinity("10.0.0.0/25", "n1")
    assert len(claimed) == 2 and failed == []
    claimed2, failed2 = ipam.claim_affinity("10.0.0.0/26", "n2")
    assert claimed2 == [] and len(failed2) == 1
    got, _ = ipam.auto_assign(1, 0, "h", None, "n1")
    assert got[0].ip in ipaddress.ip_network("10.0.0.0/25")


def test_tunnel_addresses(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "wl", "10.1.0.0/24", ipipMode="Never")
    pool(ds, "ipip", "10.2.0.0/24", ipipMode="Always")
    with pytest.raises(NoAddressesAvailable, match="vxlan"):
        ipam.assign_tunnel_address("n1", "vxlan")
    a = ipam.assign_tunnel_address("n1", "ipip")
    assert a.ip in ipaddress.ip_network("10.2.0.0/24")
    assert ipam.assign_tunnel_address("n1", "ipip") == a  # idempotent
    info = ipam.get_assignment_attributes(a)
    assert info is not None
    assert info.handle_id == "ipip-tunnel-addr-n1"
    assert info.attrs == {"node": "n1", "type": "ipipTunnelAddress"}
    assert ipam.release_tunnel_address("n1", "ipip") == [a.ip]


def test_pending_affinity_from_crashed_claim_is_recovered(ds: MemoryDatastore, ipam: IPAM) -> None:
    pool(ds, "p", "10.0.0.0/24")
    ipam.store.create_affinity("n1", ipaddress.ip_network("10.0.0.64/26"))
    from pycalico.ipam.block import Block

    ipam.store.create_block(Block.new("10.0.0.64/26", "host:n1"))
    got, _ = ipam.auto_assign(1, 0, "h", None, "n1")
    assert got[0].ip in ipaddress.ip_network("10.0.0.64/26")
    (aff,) = ds.list(KIND_AFFINITY).items
    assert aff["spec"]["state"] == "confirmed"


def test_concurrent_threads_get_distinct_addresses(ds: MemoryDatastore) -> None:
    pool(ds, "p", "10.0.0.0/22", blockSize=28)
    results: list[list[str]] = [[] for _ in range(6)]

    def work(i: int) -> None:
        ipam = IPAM(ds)
        for j in range(25):
            v4, _ = ipam.auto_assign(1, 0, f"t{i}-{j}", None, f"n{i % 3}")
            results[i].append(str(v4[0].ip))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [ip for r in results for ip in r]
    assert len(flat) == 150 and len(set(flat)) == 150
    total = sum(sum(1 for a in s["allocations"] if a is not None) for s in blocks(ds).values())
    assert total == 150


def test_reclaims_empty_block_of_another_host(ds: MemoryDatastore) -> None:
    pool(ds, "p", "10.0.0.0/29", blockSize=29)  # a single block
    ipam = IPAM(ds, empty_block_reclaim_age=0.0)
    got, _ = ipam.auto_assign(1, 0, "h1", None, "n1")
    ipam.set_config(IPAMConfig(strict_affinity=True))
    with pytest.raises(NoAddressesAvailable):
        ipam.auto_assign(1, 0, "h2", None, "n2")  # n1's block is not empty
    ipam.release_ips(got)
    v4, _ = ipam.auto_assign(1, 0, "h2", None, "n2")
    (spec,) = blocks(ds).values()
    assert spec["affinity"] == "host:n2"
    assert [a["spec"]["node"] for a in ds.list(KIND_AFFINITY).items] == ["n2"]
    # With the default minimum age a freshly claimed empty block is not taken.
    ipam.release_ips(v4)
    with pytest.raises(NoAddressesAvailable):
        IPAM(ds).auto_assign(1, 0, "h3", None, "n3")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["assign", "release_handle", "release_ip"]), st.integers(0, 99)),
        max_size=30,
    )
)
def test_allocator_matches_a_simple_model(ops: list[tuple[str, int]]) -> None:
    ds = MemoryDatastore()
    pool(ds, "p", "10.0.0.0/27", blockSize=29)  # 32 addresses in 4 blocks
    ipam = IPAM(ds)
    model: dict[str, str] = {}  # ip -> handle
    for n, (op, x) in enumerate(ops):
        if op == "assign":
            k = 1 + x % 6
            node = f"n{x % 3}"
            handle = f"h{n}"
            if 32 - len(model) < k:
                with pytest.raises(NoAddressesAvailable):
                    ipam.auto_assign(k, 0, handle, None, node)
            else:
                v4, _ = ipam.auto_assign(k, 0, handle, None, node)
                assert len(v4) == k
                for i in v4:
                    assert str(i.ip) not in model
                    model[str(i.ip)] = handle
        elif op == "release_handle" and model:
            handle = sorted(set(model.values()))[x % len(set(model.values()))]
            freed = ipam.release_by_handle(handle)
            assert {str(a) for a in freed} == {ip for ip, h in model.items() if h == handle}
            model = {ip: h for ip, h in model.items() if h != handle}
        elif op == "release_ip" and model:
            ip = sorted(model)[x % len(model)]
            assert ipam.release_ips([ip]) == []
            del model[ip]
        actual = {
            str(a): rec["handle_id"]
            for sb in ipam.store.blocks()
            for a, rec in sb.block.allocated()
        }
        assert actual == model
        assert check(ds).handle_mismatches == []
