"""calicoctl ipam: show / check / release / configure, through click against a sqlite file."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pycalico.config import DatastoreConfig
from pycalico.ctl.ipam import block_reserved, covered_count, ipam_group, render_table
from pycalico.datastore import Datastore, open_datastore
from pycalico.ipam import IPAM
from pycalico.ipam.block import Block


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(tmp_path / "c.db")}


@pytest.fixture
def ds(env: dict[str, str]) -> Iterator[Datastore]:
    d = open_datastore(
        DatastoreConfig(datastore_type="sqlite", datastore_path=env["CALICO_DATASTORE_PATH"])
    )
    for kind, name, spec in (
        ("IPPool", "p", {"cidr": "10.0.0.0/24"}),
        ("Node", "n1", {}),
        ("Node", "n2", {}),
    ):
        d.create(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": kind,
                "metadata": {"name": name},
                "spec": spec,
            }
        )
    yield d
    d.close()


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(ipam_group, list(args), env=env, catch_exceptions=False)
    return res.exit_code, res.output


def test_render_table_layout() -> None:
    out = render_table(("A", "BB"), [("x", 1), ("long", 22)]).splitlines()
    assert out[0] == out[2] == out[-1] == "+------+----+"
    assert out[3] == "| x    | 1  |"


def test_show_pools_blocks_and_ip(env: dict[str, str], ds: Datastore) -> None:
    ipam = IPAM(ds)
    v4, _ = ipam.auto_assign(3, 0, "h1", {"namespace": "ns", "pod": "web", "node": "n1"}, "n1")
    code, out = run(env, "show", "--show-blocks")
    assert code == 0
    assert "GROUPING" in out and "IPS IN USE" in out and "IPS RESERVED" in out
    assert "| IP Pool  | 10.0.0.0/24" in out and "3 (1%)" in out
    assert f"| Block    | {v4[0].network}" in out and "3 (5%)" in out
    code, out = run(env, "show", f"--ip={v4[0].ip}")
    assert code == 0 and f"IP {v4[0].ip} is in use" in out and "pod: web" in out
    code, out = run(env, "show", "--ip=10.0.0.250")
    assert "is not assigned" in out
    code, out = run(env, "show", "--ip=banana")
    assert code == 1 and "--ip: 'banana' is not an IP address" in out


def _row(out: str, cidr: str) -> list[str]:
    """The cells of the usage-table row for ``cidr``."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[1] == cidr:
            return cells
    raise AssertionError(f"no row for {cidr} in:\n{out}")


def test_show_headers_order(env: dict[str, str], ds: Datastore) -> None:
    code, out = run(env, "show")
    assert code == 0
    header = [c.strip() for c in out.splitlines()[1].strip("|").split("|")]
    assert header == ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS RESERVED", "IPS FREE"]
    assert _row(out, "10.0.0.0/24") == [
        "IP Pool",
        "10.0.0.0/24",
        "256",
        "0 (0%)",
        "0 (0%)",
        "256 (100%)",
    ]


def test_show_reserved_counts_pool_and_blocks(env: dict[str, str], ds: Datastore) -> None:
    ipam = IPAM(ds)
    v4, _ = ipam.auto_assign(3, 0, "h1", {"node": "n1"}, "n1")
    block = str(v4[0].network)
    taken = str(v4[0].ip)
    # Overlapping reservations: the allocated address (in use, not reserved), plus a /28 and an
    # overlapping /29 in the first 16 addresses of the block, plus 64 addresses outside any block.
    base = ipaddress.ip_network(block).network_address
    first16 = ipaddress.ip_network(f"{base}/28")
    assert ipaddress.ip_address(taken) in first16
    outside = next(
        ipaddress.ip_network(f"10.0.0.{i * 64}/26")
        for i in range(4)
        if not ipaddress.ip_network(f"10.0.0.{i * 64}/26").overlaps(ipaddress.ip_network(block))
    )
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPReservation",
            "metadata": {"name": "r"},
            "spec": {"reservedCIDRs": [str(first16), f"{base}/29", str(outside), "fd00::/120"]},
        }
    )
    code, out = run(env, "show", "--show-blocks")
    assert code == 0
    # Pool: 16 reserved in the block, 3 of which are allocated (the FIFO head) -> 13 reserved,
    # plus the 64 outside any block = 77; free = 256 - 3 - 77 = 176.
    allocated_in_first16 = sum(1 for i in v4 if i.ip in first16)
    rsv_pool = 16 - allocated_in_first16 + 64
    assert _row(out, "10.0.0.0/24")[3:] == [
        "3 (1%)",
        f"{rsv_pool} ({round(100 * rsv_pool / 256)}%)",
        f"{256 - 3 - rsv_pool} ({round(100 * (256 - 3 - rsv_pool) / 256)}%)",
    ]
    rsv_block = 16 - allocated_in_first16
    assert _row(out, block)[3:] == [
        "3 (5%)",
        f"{rsv_block} ({round(100 * rsv_block / 64)}%)",
        f"{64 - 3 - rsv_block} ({round(100 * (64 - 3 - rsv_block) / 64)}%)",
    ]
    assert "Reserved CIDRs (never auto-assigned):" in out


def test_covered_count_merges_overlaps_and_clips() -> None:
    n = ipaddress.ip_network
    pool = n("10.0.0.0/24")
    assert covered_count(pool, []) == 0
    assert covered_count(pool, [n("10.0.0.0/28"), n("10.0.0.8/29"), n("10.0.0.16/30")]) == 20
    assert covered_count(pool, [n("10.0.0.0/16")]) == 256  # clipped to the pool
    assert covered_count(pool, [n("10.1.0.0/24"), n("fd00::/8")]) == 0  # disjoint / other family
    big = n("fd00:1::/48")
    assert covered_count(big, [n("fd00:1::/64"), n("fd00:1::/96")]) == 1 << 64


def test_block_reserved_splits_free_and_taken() -> None:
    n = ipaddress.ip_network
    b = Block.new("10.0.0.0/29")
    b.allocate(2, "h")
    assert block_reserved(b, []) == (0, 0)
    assert block_reserved(b, [n("10.0.0.0/30")]) == (2, 2)
    assert block_reserved(b, [n("10.0.1.0/30")]) == (0, 0)


def test_show_borrowed(env: dict[str, str], ds: Datastore) -> None:
    ipam = IPAM(ds)
    # As applied with `calicoctl apply` (ipam configure insists on strict affinity for this).
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPAMConfiguration",
            "metadata": {"name": "default"},
            "spec": {"strictAffinity": False, "maxBlocksPerHost": 1},
        }
    )
    ipam.auto_assign(1, 0, "h1", {"node": "n1"}, "n1")
    # n2 claims its one block, fills it, then borrows.
    ipam.auto_assign(65, 0, "h2", {"node": "n2", "namespace": "ns", "pod": "big"}, "n2")
    code, out = run(env, "show", "--show-borrowed")
    assert code == 0
    assert "BORROWING-NODE" in out and "| n2 " in out and "ns/big" in out


def test_check_report_and_release_from_report(
    env: dict[str, str], ds: Datastore, tmp_path: Path
) -> None:
    ipam = IPAM(ds)
    v4, _ = ipam.auto_assign(2, 0, "k8s-pod-network.dead", {"node": "n1"}, "n1")
    report = tmp_path / "r.json"
    code, out = run(env, "check", "-o", str(report))
    assert code == 0
    assert "Found 2 IPs that are allocated in IPAM but not actually in use." in out
    assert "Check complete; found 2 problems." in out
    doc = json.loads(report.read_text())
    assert {x["ip"] for x in doc["leakedIPs"]} == {str(i.ip) for i in v4}
    assert all(x["handle"] == "k8s-pod-network.dead" and x["block"] for x in doc["leakedIPs"])
    code, out = run(env, "release", f"--from-report={report}")
    assert code == 0 and "Released 2 of 2" in out
    code, out = run(env, "check")
    assert "Check complete; found 0 problems." in out


def test_release_ip_and_errors(env: dict[str, str], ds: Datastore) -> None:
    v4, _ = IPAM(ds).auto_assign(1, 0, "h", None, "n1")
    code, out = run(env, "release", f"--ip={v4[0].ip}")
    assert code == 0 and "Successfully released" in out
    code, out = run(env, "release", f"--ip={v4[0].ip}")
    assert code == 1 and "is not assigned" in out
    code, out = run(env, "release")
    assert code == 1 and "exactly one of" in out
    code, out = run(env, "release", "--from-report=/nonexistent.json")
    assert code == 1 and "cannot read report" in out


def test_configure(env: dict[str, str], ds: Datastore) -> None:
    code, out = run(env, "configure", "--strictaffinity=true", "--max-blocks-per-host=4")
    assert code == 0
    cfg = IPAM(ds).get_config()
    assert cfg.strict_affinity and cfg.max_blocks_per_host == 4
    code, out = run(env, "show", "--show-configuration")
    assert "| StrictAffinity     | true" in out and "| MaxBlocksPerHost   | 4" in out
    code, out = run(env, "configure", "--strictaffinity=false", "--autoallocateblocks=false")
    assert code == 1 and "autoAllocateBlocks" in out
    code, out = run(env, "configure", "--max-blocks-per-host=-3")
    assert code == 1 and "maxBlocksPerHost" in out
    code, out = run(env, "configure", "--strictaffinity=false")
    assert code == 1 and "maxBlocksPerHost: can only be set when strictAffinity is true" in out
    code, out = run(env, "configure", "--strictaffinity=false", "--max-blocks-per-host=0")
    assert code == 0
    code, out = run(env, "configure", "--strictaffinity=perhaps")
    assert code == 1


def test_bad_datastore_config_is_a_clear_error() -> None:
    code, out = run({"DATASTORE_TYPE": "bogus"}, "show")
    assert code == 1 and "datastore" in out and "datastoreType" in out
