"""IPAM against real backends (sqlite file, real etcd) with real concurrent processes.

- 8 processes x 250 allocations on 4 nodes: 2,000 distinct addresses inside the pool, each in a
  block affine to its node; releasing everything and the nodes' affinities leaves no blocks.
- A process SIGKILLed mid-allocation leaves no duplicate; ``calicoctl ipam check`` reports the
  leak and ``calicoctl ipam release --from-report`` repairs it.
- Pool exhaustion is a typed error, never a hang.
"""

from __future__ import annotations

import ipaddress
import json
import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pycalico.config import DatastoreConfig
from pycalico.ctl.ipam import ipam_group
from pycalico.datastore import Datastore, open_datastore
from pycalico.ipam import IPAM, NoAddressesAvailable
from pycalico.ipam.gc import check
from tests.contract.conftest import Backend
from tests.kit.builders import ip_pool, resource
from tests.kit.builders import node as calico_node
from tests.kit.fakes import seed

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)], indirect=True
)

POOL = "10.44.0.0/16"
CTX = mp.get_context("spawn")


def _allocator(
    cfg: DatastoreConfig, node: str, proc: int, n: int, lock: str, q: Any, release: Any
) -> None:
    """Allocate ``n`` addresses, report them, then (when told) release them by handle."""
    ds = open_datastore(cfg)
    ipam = IPAM(ds, lock_path=lock)
    out = []
    for i in range(n):
        v4, _ = ipam.auto_assign(1, 0, f"h-{proc}-{i}", {"node": node}, node)
        out.append(str(v4[0]))
    q.put((proc, node, out))
    release.wait(120)
    freed = sum(len(ipam.release_by_handle(f"h-{proc}-{i}")) for i in range(n))
    q.put(("released", freed))
    ds.close()


def _cni_like(cfg: DatastoreConfig, node: str, proc: int, lock: str) -> None:
    """Allocate (under the node's lock) then write the WorkloadEndpoint, until killed."""
    ds = open_datastore(cfg)
    ipam = IPAM(ds, lock_path=lock)
    i = 0
    while True:
        cid = f"k{proc}x{i}"
        v4, _ = ipam.auto_assign(1, 0, f"k8s-pod-network.{cid}", {"node": node}, node)
        spec = {"containerID": cid, "node": node, "ipNetworks": [f"{v4[0].ip}/32"]}
        ds.create(resource("WorkloadEndpoint", f"{node}-cni-{cid}-eth0", spec, namespace="default"))
        i += 1


def _cfg(backend: Backend) -> DatastoreConfig:
    assert backend.config is not None
    return backend.config


def _env(cfg: DatastoreConfig) -> dict[str, str]:
    if cfg.datastore_type == "sqlite":
        return {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": cfg.datastore_path}
    return {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": ",".join(cfg.etcd_endpoints)}


@pytest.mark.slow
def test_eight_processes_four_nodes(backend: Backend, tmp_path: Path) -> None:
    ds = backend.store
    nodes = [f"node{i}" for i in range(4)]
    seed(ds, [ip_pool("p", POOL), *(calico_node(n) for n in nodes)])
    q = CTX.Queue()
    release = CTX.Event()
    procs = [
        CTX.Process(
            target=_allocator,
            args=(
                _cfg(backend),
                nodes[i % 4],
                i,
                250,
                str(tmp_path / f"{nodes[i % 4]}.lock"),
                q,
                release,
            ),
        )
        for i in range(8)
    ]
    for p in procs:
        p.start()
    try:
        results = [q.get(timeout=150) for _ in procs]
        _check_allocations(ds, results)
        # Release everything by handle, from the 8 processes at once.
        release.set()
        freed = [q.get(timeout=150) for _ in procs]
        assert sum(n for _, n in freed) == 2000
    finally:
        release.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
    assert all(p.exitcode == 0 for p in procs)
    ipam = IPAM(ds)
    assert all(sb.block.num_allocated() == 0 for sb in ipam.store.blocks())
    assert ipam.store.handles() == {}
    for n in nodes:
        ds.delete("Node", n)
        ipam.release_host_affinities(n)
    assert ipam.store.blocks() == []
    assert ipam.store.affinities() == []


def _check_allocations(ds: Datastore, results: list[Any]) -> None:
    ips = [ip for _, _, out in results for ip in out]
    assert len(ips) == 2000
    assert len({ipaddress.ip_interface(i).ip for i in ips}) == 2000
    pool = ipaddress.ip_network(POOL)
    assert all(ipaddress.ip_interface(i).ip in pool for i in ips)
    ipam = IPAM(ds)
    blocks = {str(sb.block.cidr): sb.block for sb in ipam.store.blocks()}
    for _, node, out in results:
        for i in out:
            iface = ipaddress.ip_interface(i)
            assert blocks[str(iface.network)].affinity == f"host:{node}"
    assert sum(b.num_allocated() for b in blocks.values()) == 2000
    assert check(ds).handle_mismatches == []


@pytest.mark.slow
def test_sigkill_mid_allocation_then_check_and_release(backend: Backend, tmp_path: Path) -> None:
    ds = backend.store
    seed(ds, [ip_pool("p", "10.45.0.0/22", block_size=28), calico_node("na"), calico_node("nb")])
    nodes = ["na", "nb", "na", "nb"]
    locks = {n: str(tmp_path / f"{n}.lock") for n in ("na", "nb")}
    procs = [
        CTX.Process(target=_cni_like, args=(_cfg(backend), n, i, locks[n]))
        for i, n in enumerate(nodes)
    ]
    for p in procs:
        p.start()
    rng = random.Random(7)
    try:
        for target, p in zip((10, 20, 30, 40), procs, strict=True):
            deadline = time.monotonic() + 60
            while len(ds.list("WorkloadEndpoint").items) < target:
                assert time.monotonic() < deadline, "allocators made no progress"
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.01))
            assert p.pid is not None
            os.kill(p.pid, signal.SIGKILL)
            p.join(10)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    # The kernel dropped the dead processes' flocks: the nodes can allocate again.
    for n, lock in locks.items():
        ipam_n = IPAM(ds, lock_path=lock)
        (ip,), _ = ipam_n.auto_assign(1, 0, f"k8s-pod-network.after-{n}", {"node": n}, n)
        spec = {"containerID": f"after-{n}", "node": n, "ipNetworks": [f"{ip.ip}/32"]}
        ds.create(resource("WorkloadEndpoint", f"{n}-cni-after-eth0", spec, namespace="default"))
    # Whether a kill landed between allocation and WEP write is luck; make one such orphan
    # deterministic so the repair path is always exercised.
    (orphan,), _ = IPAM(ds).auto_assign(1, 0, "k8s-pod-network.orphan", {"node": "na"}, "na")
    rep = check(ds)
    assert str(orphan.ip) in {lk.ip for lk in rep.leaked}
    assert rep.duplicates == []
    assert rep.in_use_not_allocated == []
    weps = ds.list("WorkloadEndpoint").items
    wep_ips = {w["spec"]["ipNetworks"][0].split("/")[0] for w in weps}
    assert len(wep_ips) == len(weps)
    leaked = {lk.ip for lk in rep.leaked}
    assert not (leaked & wep_ips)
    assert rep.allocations == len(wep_ips) + len(leaked)
    # Repair with the CLI, as an operator would.
    env = _env(_cfg(backend))
    report = tmp_path / "report.json"
    runner = CliRunner()
    res = runner.invoke(ipam_group, ["check", "-o", str(report)], env=env)
    assert res.exit_code == 0, res.output
    assert f"Check complete; found {rep.problems} problems." in res.output
    doc = json.loads(report.read_text())
    assert {x["ip"] for x in doc["leakedIPs"]} == leaked
    res = runner.invoke(ipam_group, ["release", f"--from-report={report}"], env=env)
    assert res.exit_code == 0, res.output
    res = runner.invoke(ipam_group, ["check"], env=env)
    assert "Check complete; found 0 problems." in res.output, res.output
    assert check(ds).allocations == len(wep_ips)


def test_pool_exhaustion_is_a_typed_error(backend: Backend) -> None:
    ds = backend.store
    ds.create(ip_pool("tiny", "10.46.0.0/28", block_size=30))
    ipam = IPAM(ds)
    got = []
    for i, node in enumerate(["a", "b", "a", "b"] * 4):
        v4, _ = ipam.auto_assign(1, 0, f"h{i}", None, node)
        got.append(v4[0].ip)
    assert len(set(got)) == 16
    t0 = time.monotonic()
    with pytest.raises(
        NoAddressesAvailable, match=r"no addresses available in pools \[10.46.0.0/28\]"
    ):
        ipam.auto_assign(1, 0, "one-too-many", None, "c")
    assert time.monotonic() - t0 < 30
    assert "one-too-many" not in ipam.store.handles()


def test_borrow_and_strict_affinity(backend: Backend) -> None:
    ds = backend.store
    ds.create(ip_pool("p", "10.47.0.0/29", block_size=30))
    ipam = IPAM(ds)
    a, _ = ipam.auto_assign(5, 0, "ha", None, "a")  # both blocks affine to a
    b, _ = ipam.auto_assign(1, 0, "hb", None, "b")  # b borrows
    assert {str(sb.block.affinity) for sb in ipam.store.blocks()} == {"host:a"}
    assert b[0].ip not in {x.ip for x in a}
    from pycalico.ipam import IPAMConfig

    ipam.set_config(IPAMConfig(strict_affinity=True))
    with pytest.raises(NoAddressesAvailable):
        ipam.auto_assign(1, 0, "hc", None, "c")


def test_dual_stack_release_by_handle(backend: Backend) -> None:
    ds = backend.store
    seed(ds, [ip_pool("v4", "10.48.0.0/24"), ip_pool("v6", "fd00:48::/120", block_size=124)])
    ipam = IPAM(ds)
    v4, v6 = ipam.auto_assign(2, 2, "k8s-pod-network.ds", {"node": "n1"}, "n1")
    assert [i.network.prefixlen for i in v4] == [26, 26]
    assert [i.network.prefixlen for i in v6] == [124, 124]
    assert {sb.block.name for sb in ipam.store.blocks()} == {
        str(v4[0].network).replace(".", "-").replace("/", "-"),
        str(v6[0].network).replace(":", "-").replace("/", "-"),
    }
    info = ipam.get_assignment_attributes(v6[1])
    assert info is not None and info.handle_id == "k8s-pod-network.ds"
    assert len(ipam.release_by_handle("k8s-pod-network.ds")) == 4
    assert ipam.store.handles() == {}
