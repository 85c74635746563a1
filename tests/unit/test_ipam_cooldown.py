"""IPAMConfiguration ``ipCooldownSeconds``: a released address is not reused until it cooled.

Calico (libcalico-go ``ipam_block.go``): a release points the ordinal at an attribute holding
only ``releasedAt``; the ordinal returns to the tail of ``unallocated`` once it is at least
``ipCooldownSeconds`` old (checked whenever a block is read for assignment or released, and
periodically by the IPAM garbage collector). Default 0: reusable at once, still FIFO.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from pycalico.datastore.memory import MemoryDatastore
from pycalico.ipam import IPAM, IPAMConfig, NoAddressesAvailable
from pycalico.ipam.block import Block
from pycalico.ipam.errors import AlreadyAllocated, InvalidIPAMConfig
from pycalico.ipam.gc import LeakCollector, check, collect_cold_ips
from pycalico.ipam.store import KIND_BLOCK, KIND_CONFIG
from tests.kit.builders import ip_pool, node, resource
from tests.kit.fakes import seed

T0 = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def test_block_release_cools_down_then_frees_to_the_fifo_tail() -> None:
    b = Block.new("10.0.0.0/29")
    ips = b.allocate(3, "h1", {"pod": "a"})
    seq_before = b.sequence_number
    counts, missing = b.release([ips[0].ip], cooldown=60, now=T0)
    assert counts == {"h1": 1} and missing == []
    # cooling: neither free nor allocated, the block is not empty, the handle no longer has it
    assert b.num_cooling() == 1 and b.num_free() == 5
    assert not b.is_allocated(ips[0].ip) and b.attributes_for(ips[0].ip) is None
    assert b.released_at(ips[0].ip) == "2026-12-02T12:00:00Z"
    assert [a for a, _ in b.allocated()] == [ips[1].ip, ips[2].ip]
    assert b.ips_for_handle("h1") == [ips[1].ip, ips[2].ip]
    assert b.sequence_number > seq_before
    # releasing again reports it as not allocated; assigning it names the cooldown
    assert b.release([ips[0].ip], cooldown=60, now=T0) == ({}, [ips[0].ip])
    with pytest.raises(AlreadyAllocated, match="in cooldown"):
        b.assign(ips[0].ip, "h2")
    # an allocation never reuses the cooldown record as its attribute
    (n,) = b.allocate(1, None)
    assert b.attributes_for(n.ip) == {"handle_id": None, "secondary": {}}
    assert not b.collect_cold(60, T0 + timedelta(seconds=59))
    assert b.num_cooling() == 1
    assert b.collect_cold(60, T0 + timedelta(seconds=60))
    assert b.num_cooling() == 0 and b.unallocated[-1] == 0 and b.released_at(ips[0].ip) is None
    assert all("releasedAt" not in a for a in b.attributes)
    # survives the stored form
    b.release_by_handle("h1", cooldown=5, now=T0)
    again = Block.from_spec(b.to_spec())
    assert again.num_cooling() == 2
    assert again.collect_cold(5, T0 + timedelta(seconds=5)) and again.num_cooling() == 0


def test_zero_cooldown_frees_at_once_in_fifo_order() -> None:
    b = Block.new("10.0.0.0/30")
    ips = b.allocate(4, "h")
    b.release([ips[1].ip, ips[0].ip])
    # freed to the tail in ordinal order (Calico's garbageCollect walks the ordinals)
    assert b.num_cooling() == 0 and b.unallocated == [0, 1]
    assert [i.ip for i in b.allocate(1, "x")] == [ips[0].ip]
    b.release([ips[3].ip])
    assert b.unallocated == [1, 3]


@pytest.fixture
def ds() -> MemoryDatastore:
    ds = MemoryDatastore()
    seed(ds, [ip_pool("p", "10.0.0.0/30", blockSize=30), node("n1")])
    return ds


def _set_cooldown(ds: MemoryDatastore, seconds: int) -> None:
    seed(ds, [resource(KIND_CONFIG, "default", {"ipCooldownSeconds": seconds})])


def test_a_released_address_is_not_reallocated_during_its_cooldown(ds: MemoryDatastore) -> None:
    _set_cooldown(ds, 600)
    ipam = IPAM(ds)
    got = [ipam.auto_assign(1, 0, f"h{i}", None, "n1")[0][0].ip for i in range(4)]
    assert ipam.release_by_handle("h0") == [got[0]]
    assert ipam.released_at(got[0]) is not None
    with pytest.raises(NoAddressesAvailable):  # the only "free" address is cooling
        ipam.auto_assign(1, 0, "again", None, "n1")
    assert ipam.release_ips([got[0]]) == [got[0]]  # not allocated any more
    # the block keeps the cooling address (not empty, not deleted)
    [blk] = ds.list(KIND_BLOCK).items
    assert any("releasedAt" in a for a in blk["spec"]["attributes"])
    # and calicoctl ipam check does not call it a leak
    assert [lk.ip for lk in check(ds).leaked] == [str(g) for g in got[1:]]


def test_cooled_addresses_are_reused_after_the_cooldown(
    ds: MemoryDatastore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_cooldown(ds, 30)
    ipam = IPAM(ds)
    got = [ipam.auto_assign(1, 0, f"h{i}", None, "n1")[0][0].ip for i in range(4)]
    ipam.release_ips([got[2]])
    later = datetime.now(UTC) + timedelta(seconds=31)
    monkeypatch.setattr("pycalico.ipam.block._utcnow", lambda: later)
    (ip,), _ = ipam.auto_assign(1, 0, "again", None, "n1")
    assert ip.ip == got[2]


def test_the_gc_frees_cooled_addresses_and_deletes_an_emptied_unaffine_block(
    ds: MemoryDatastore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_cooldown(ds, 30)
    ipam = IPAM(ds)
    (ip,), _ = ipam.auto_assign(1, 0, "h", None, "n1")
    ipam.release_affinity("10.0.0.0/30", "n1")  # not empty: kept, unaffine
    ipam.release_by_handle("h")
    assert collect_cold_ips(ipam) == []  # still cooling
    assert len(ds.list(KIND_BLOCK).items) == 1
    later = datetime.now(UTC) + timedelta(seconds=31)
    monkeypatch.setattr("pycalico.ipam.block._utcnow", lambda: later)
    res = LeakCollector(ds, ipam).run_once()
    assert res.cold_blocks_collected == ["10.0.0.0/30"]
    assert ds.list(KIND_BLOCK).items == [] and ipam.released_at(ip.ip) is None


def test_config_range_and_roundtrip(ds: MemoryDatastore) -> None:
    with pytest.raises(InvalidIPAMConfig, match=r"spec\.ipCooldownSeconds: 1201 .* 0-1200"):
        IPAMConfig(ip_cooldown_seconds=1201).validate()
    ipam = IPAM(ds)
    ipam.set_config(IPAMConfig(ip_cooldown_seconds=90))
    assert ipam.get_config().ip_cooldown_seconds == 90
    assert IPAM(ds).get_config() == IPAMConfig(ip_cooldown_seconds=90)


def test_calicoctl_ipam_configure_and_show(tmp_path: Path) -> None:
    from pycalico.config import DatastoreConfig
    from pycalico.ctl.ipam import ipam_group
    from pycalico.datastore import open_datastore

    db = str(tmp_path / "c.db")
    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": db}
    d = open_datastore(DatastoreConfig(datastore_type="sqlite", datastore_path=db))
    seed(d, [ip_pool("p", "10.0.0.0/30", blockSize=30), node("n1")])

    def run(*args: str) -> tuple[int, str]:
        r = CliRunner().invoke(ipam_group, list(args), env=env, catch_exceptions=False)
        return r.exit_code, r.output

    code, out = run("configure", "--ip-cooldown-seconds=45")
    assert code == 0 and "IPCooldownSeconds=45" in out
    code, out = run("show", "--show-configuration")
    assert "| IPCooldownSeconds  | 45" in out
    code, out = run("configure", "--ip-cooldown-seconds=5000")
    assert code == 1 and "ipCooldownSeconds" in out and "0-1200" in out
    code, out = run("configure", "--strictaffinity=true")  # keeps the cooldown
    assert code == 0 and "IPCooldownSeconds=45" in out
    ipam = IPAM(d)
    (ip,), _ = ipam.auto_assign(1, 0, "h", None, "n1")
    ipam.release_by_handle("h")
    code, out = run("show", f"--ip={ip.ip}")
    assert code == 0 and f"IP {ip.ip} is in cooldown (released at " in out
    other = next(a for a in ipaddress.ip_network("10.0.0.0/30") if a != ip.ip)
    code, out = run("show", f"--ip={other}")
    assert f"IP {other} is not assigned" in out
    d.close()


@pytest.mark.parametrize(
    ("released", "cold"),
    [
        ("2026-12-02T11:59:00Z", True),
        ("2026-12-02T11:59:01Z", False),
        ("2026-12-02T11:59:00.500000Z", False),  # other spellings are parsed
        ("2026-12-02T12:59:00+01:00", True),
        ("garbage", True),  # an unreadable time does not pin the address forever
    ],
)
def test_release_times_in_any_rfc3339_spelling(released: str, cold: bool) -> None:
    b = Block.new("10.0.0.0/30")
    (ip,) = b.allocate(1, "h")
    b.release([ip.ip], cooldown=60, now=T0)
    b.attributes[b.allocations[0] or 0]["releasedAt"] = released
    assert b.collect_cold(60, T0) is cold and (b.num_cooling() == 0) is cold
