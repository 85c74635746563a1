"""calicoctl ipam: show / check / release / configure, through click against a sqlite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pycalico.config import DatastoreConfig
from pycalico.ctl.ipam import ipam_group, render_table
from pycalico.datastore import Datastore, open_datastore
from pycalico.ipam import IPAM


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
    assert "GROUPING" in out and "IPS IN USE" in out
    assert "| IP Pool  | 10.0.0.0/24" in out and "3 (1%)" in out
    assert f"| Block    | {v4[0].network}" in out and "3 (5%)" in out
    code, out = run(env, "show", f"--ip={v4[0].ip}")
    assert code == 0 and f"IP {v4[0].ip} is in use" in out and "pod: web" in out
    code, out = run(env, "show", "--ip=10.0.0.250")
    assert "is not assigned" in out
    code, out = run(env, "show", "--ip=banana")
    assert code == 1 and "--ip: 'banana' is not an IP address" in out


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
