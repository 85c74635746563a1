"""``calicoctl ipam split`` and ``calicoctl datastore migrate lock | unlock``."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pycalico.config import DatastoreConfig
from pycalico.ctl.datastore_cmd import datastore
from pycalico.ctl.ipam import ipam_group
from pycalico.datastore import Datastore, Unavailable, open_datastore
from pycalico.datastore.memory import MemoryDatastore
from pycalico.ipam import IPAM
from pycalico.ipam.split import SplitError, plan_split, set_datastore_ready, split_cidr, split_pool
from tests.kit.builders import ip_pool, node
from tests.kit.fakes import seed


def test_split_cidr() -> None:
    assert split_cidr("10.0.0.0/16", 4) == [
        "10.0.0.0/18",
        "10.0.64.0/18",
        "10.0.128.0/18",
        "10.0.192.0/18",
    ]
    assert split_cidr("10.0.0.5/30", 2) == ["10.0.0.4/31", "10.0.0.6/31"]  # masked first
    assert split_cidr("fd00::/120", 2) == ["fd00::/121", "fd00::80/121"]
    for bad in (0, 1, 3, 6, -2):
        with pytest.raises(SplitError, match=f"not a valid power of 2: {bad}"):
            split_cidr("10.0.0.0/16", bad)
    with pytest.raises(SplitError, match="not large enough to be split into 4 parts"):
        split_cidr("10.0.0.0/31", 4)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(tmp_path / "c.db")}


@pytest.fixture
def ds(env: dict[str, str]) -> Iterator[Datastore]:
    d = open_datastore(
        DatastoreConfig(datastore_type="sqlite", datastore_path=env["CALICO_DATASTORE_PATH"])
    )
    big = ip_pool("big", "10.8.0.0/22", vxlan_mode="Always", nat_outgoing=True, labels={"a": "b"})
    seed(d, [big, node("n1")])
    yield d
    d.close()


def ctl(env: dict[str, str], *args: str) -> tuple[int, str]:
    group = datastore if args[0] == "migrate" else ipam_group
    r = CliRunner().invoke(group, list(args), env=env, catch_exceptions=False)
    return r.exit_code, r.output


def pools(ds: Datastore) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in ds.list("IPPool").items}


def test_split_needs_the_lock_then_splits_and_keeps_allocations(
    env: dict[str, str], ds: Datastore
) -> None:
    ipam = IPAM(ds)
    v4, _ = ipam.auto_assign(3, 0, "h", {"node": "n1"}, "n1")
    code, out = ctl(env, "split", "4", "--name", "big")
    assert code == 1 and "datastore is not locked" in out and "migrate lock" in out
    assert list(pools(ds)) == ["big"]
    code, out = ctl(env, "migrate", "lock")
    assert code == 0 and "Datastore locked." in out
    assert ds.get("ClusterInformation", "default")["spec"]["datastoreReady"] is False
    code, out = ctl(env, "split", "4", "--cidr", "10.8.0.0/22")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "IP Pool big was successfully split into 4 smaller pools."
    assert lines[1:5] == [f"Created split-big-{i} with CIDR 10.8.{i}.0/24." for i in range(4)]
    got = pools(ds)
    assert sorted(got) == [f"split-big-{i}" for i in range(4)]
    for i in range(4):
        p = got[f"split-big-{i}"]
        assert p["spec"]["cidr"] == f"10.8.{i}.0/24" and p["spec"]["disabled"] is False
        assert p["spec"]["vxlanMode"] == "Always" and p["spec"]["natOutgoing"] is True
        assert p["metadata"]["labels"] == {"a": "b"}
    # the allocations made in the old pool stay where they are, now inside a child
    for ip in v4:
        info = ipam.get_assignment_attributes(ip)
        assert info is not None and info.handle_id == "h"
        assert any(ip.ip in ipaddress.ip_network(p["spec"]["cidr"]) for p in got.values())
    code, out = ctl(env, "migrate", "unlock")
    assert code == 0 and "Datastore unlocked." in out
    assert ds.get("ClusterInformation", "default")["spec"]["datastoreReady"] is True


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("split", "4"), "no name or CIDR provided"),
        (("split", "four", "--name", "big"), "'four' is not a valid number"),
        (("split", "3", "--name", "big"), "not a valid power of 2: 3"),
        (("split", "2", "--name", "nope"), "unable to find IP pool with name nope"),
        (("split", "2", "--cidr", "10.9.0.0/22"), "covering the specified CIDR 10.9.0.0/22"),
        (("split", "32", "--name", "big"), "/27 pools, smaller than the pool's blockSize 26"),
    ],
)
def test_split_errors_name_the_reason_and_change_nothing(
    env: dict[str, str], ds: Datastore, args: tuple[str, ...], why: str
) -> None:
    set_datastore_ready(ds, False)
    before = pools(ds)
    code, out = ctl(env, *args)
    assert code == 1 and why in out, out
    assert pools(ds) == before


def test_split_refuses_a_child_name_that_exists(env: dict[str, str], ds: Datastore) -> None:
    seed(ds, [ip_pool("split-big-1", "10.50.0.0/24")])
    set_datastore_ready(ds, False)
    code, out = ctl(env, "split", "2", "--name", "big")
    assert code == 1 and "IP pool split-big-1 already exists" in out


class FailingCreates(MemoryDatastore):
    """Fails the second IPPool create after ``armed``."""

    armed = False
    creates = 0

    def create(self, obj: dict[str, Any], keep_identity: bool = False) -> dict[str, Any]:
        if self.armed and obj.get("kind") == "IPPool":
            self.creates += 1
            if self.creates == 2:
                raise Unavailable("injected failure")
        return super().create(obj, keep_identity)


def test_a_failed_split_undoes_its_writes() -> None:
    ds = FailingCreates()
    seed(ds, [ip_pool("big", "10.8.0.0/22")])
    set_datastore_ready(ds, False)
    plan = plan_split(ds, 4, None, "big")
    ds.armed = True
    with pytest.raises(Unavailable):
        split_pool(ds, plan)
    [only] = ds.list("IPPool").items
    assert only["metadata"]["name"] == "big" and not only["spec"].get("disabled")
