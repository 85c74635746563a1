"""IPAM check (leaks, missing allocations, duplicates, stale affinities) and leak repair."""

from __future__ import annotations

import ipaddress

import pytest

from pycalico.datastore.memory import MemoryDatastore
from pycalico.ipam import IPAM
from pycalico.ipam.gc import (
    CheckReport,
    LeakCollector,
    ReportError,
    check,
    release_from_report,
)
from tests.kit.builders import ip_pool, node, resource
from tests.kit.fakes import seed


def wep(ds: MemoryDatastore, name: str, container: str, *ips: str) -> None:
    spec = {"containerID": container, "ipNetworks": [f"{i}/32" for i in ips], "node": "n1"}
    ds.create(resource("WorkloadEndpoint", name, spec, namespace="default"))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def ds() -> MemoryDatastore:
    d = MemoryDatastore()
    seed(d, [ip_pool("p", "10.0.0.0/24", ipip_mode="Always"), node("n1")])
    return d


def alloc(ipam: IPAM, container: str, node: str = "n1") -> str:
    v4, _ = ipam.auto_assign(
        1, 0, f"k8s-pod-network.{container}", {"pod": container, "node": node}, node
    )
    return str(v4[0].ip)


def test_clean_state_has_no_problems(ds: MemoryDatastore) -> None:
    ipam = IPAM(ds)
    ip = alloc(ipam, "c1")
    wep(ds, "w1", "c1", ip)
    ipam.assign_tunnel_address("n1", "ipip")
    rep = check(ds)
    assert rep.problems == 0, rep.to_json()
    assert rep.allocations == 2


def test_leak_detection_by_ip_or_container(ds: MemoryDatastore) -> None:
    ipam = IPAM(ds)
    ip1 = alloc(ipam, "c1")
    ip2 = alloc(ipam, "c2")
    ip3 = alloc(ipam, "c3")
    wep(ds, "w1", "c1", ip1)
    wep(ds, "w2", "c2")  # container known, IP not yet written to the WEP
    rep = check(ds)
    assert [lk.ip for lk in rep.leaked] == [ip3]
    assert ip2 not in {lk.ip for lk in rep.leaked}
    (lk,) = rep.leaked
    assert lk.handle == "k8s-pod-network.c3" and lk.block.endswith("/26") and lk.node == "n1"
    assert rep.problems == 1


def test_tunnel_address_of_deleted_node_and_stale_affinity(ds: MemoryDatastore) -> None:
    ipam = IPAM(ds)
    tun = ipam.assign_tunnel_address("gone", "ipip")
    rep = check(ds)
    assert [(lk.ip, lk.tunnel) for lk in rep.leaked] == [(str(tun.ip), True)]
    assert [a["node"] for a in rep.stale_affinities] == ["gone"]


def test_in_use_not_allocated_duplicates_outside_pools(ds: MemoryDatastore) -> None:
    ipam = IPAM(ds)
    ip = alloc(ipam, "c1")
    wep(ds, "w1", "c1", ip)
    wep(ds, "w2", "c2", ip)  # duplicate
    wep(ds, "w3", "c3", "10.0.0.250")  # in a pool, never allocated
    wep(ds, "w4", "c4", "192.168.0.1")  # outside every pool
    ds.create(node("n2", ipip_tunnel_addr="10.0.0.251"))
    rep = check(ds)
    assert [d["ip"] for d in rep.duplicates] == [ip]
    assert {d["ip"] for d in rep.in_use_not_allocated} == {"10.0.0.250", "10.0.0.251"}
    assert [d["ip"] for d in rep.outside_pools] == ["192.168.0.1"]
    assert rep.leaked == []


def test_handle_mismatch(ds: MemoryDatastore) -> None:
    ipam = IPAM(ds)
    ip = alloc(ipam, "c1")
    wep(ds, "w1", "c1", ip)
    ipam.store.adjust_handle("k8s-pod-network.c1", "10.9.9.0/26", 1)  # crash residue
    rep = check(ds)
    (m,) = rep.handle_mismatches
    assert m["handle"] == "k8s-pod-network.c1" and "10.9.9.0/26" in m["recorded"]


def test_report_roundtrip_and_release_guard(ds: MemoryDatastore) -> None:
    ipam = IPAM(ds)
    ip1 = alloc(ipam, "c1")
    ip2 = alloc(ipam, "c2")
    doc = check(ds).to_json()
    rep = CheckReport.from_json(doc)
    assert {lk.ip for lk in rep.leaked} == {ip1, ip2}
    # ip2 is released and re-allocated to a live workload before the report is applied.
    ipam.release_ips([ip2])
    for i in range(64):  # cycle the FIFO so ip2 comes back
        got = alloc(ipam, f"z{i}")
        if got == ip2:
            wep(ds, "wz", f"z{i}", got)
            break
        ipam.release_ips([got])
    else:
        pytest.fail("address was not reused")
    released, skipped = release_from_report(ipam, rep)
    assert released == [ip1] and skipped == [ip2]
    assert ipam.get_assignment_attributes(ip2) is not None
    with pytest.raises(ReportError):
        CheckReport.from_json({"version": "other"})


def test_collector_waits_for_grace_and_rechecks(ds: MemoryDatastore) -> None:
    ipam = IPAM(ds)
    clock = Clock()
    gc = LeakCollector(ds, ipam, grace_period=60, clock=clock)
    ip1 = alloc(ipam, "c1")
    ip2 = alloc(ipam, "c2")
    first = gc.run_once()
    assert first.released == [] and set(first.pending) == {ip1, ip2}
    clock.t += 30
    wep(ds, "w2", "c2", ip2)  # the workload showed up late: no longer a leak
    assert gc.run_once().released == []
    clock.t += 31
    res = gc.run_once()
    assert res.released == [ip1]
    assert ipam.get_assignment_attributes(ip1) is None
    assert ipam.get_assignment_attributes(ip2) is not None
    assert check(ds).problems == 0


def test_collector_releases_dead_node_tunnel_and_affinities(ds: MemoryDatastore) -> None:
    ipam = IPAM(ds)
    clock = Clock()
    gc = LeakCollector(ds, ipam, grace_period=60, clock=clock)
    tun = ipam.assign_tunnel_address("gone", "ipip")
    res = gc.run_once()
    assert res.released == [str(tun.ip)]
    assert res.affinities_released == []
    clock.t += 61
    res = gc.run_once()
    assert res.affinities_released == ["gone"]
    assert check(ds).problems == 0
    assert ds.list("IPAMBlock").items == []


def test_release_from_report_repairs_overcounting_handle(ds: MemoryDatastore) -> None:
    ipam = IPAM(ds)
    ip = alloc(ipam, "c1")
    wep(ds, "w1", "c1", ip)
    (cidr,) = ipam.store.handle_blocks("k8s-pod-network.c1")
    ipam.store.adjust_handle("k8s-pod-network.c1", cidr, 2)  # crashed before its block write
    ipam.store.adjust_handle("k8s-pod-network.ghost", cidr, 1)
    rep = check(ds)
    assert {m["handle"] for m in rep.handle_mismatches} == {
        "k8s-pod-network.c1",
        "k8s-pod-network.ghost",
    }
    release_from_report(ipam, CheckReport.from_json(rep.to_json()))
    assert ipam.store.handle_blocks("k8s-pod-network.c1") == {cidr: 1}
    assert ipam.store.handle_blocks("k8s-pod-network.ghost") == {}
    assert check(ds).problems == 0


def test_collector_releases_empty_blocks_after_two_runs_keeping_one(
    ds: MemoryDatastore,
) -> None:
    ipam = IPAM(ds)
    ds.create(ip_pool("small", "10.1.0.0/24", block_size=29))
    ds.delete("IPPool", "p")
    got, _ = ipam.auto_assign(20, 0, "k8s-pod-network.x", {"node": "n1"}, "n1")
    assert len({str(i.network) for i in got}) == 3
    ipam.release_by_handle("k8s-pod-network.x")
    gc = LeakCollector(ds, ipam, grace_period=60, clock=Clock())
    assert gc.run_once().empty_blocks_released == []
    # A block that is reused between runs is not released.
    (ip,), _ = ipam.auto_assign(1, 0, "k8s-pod-network.y", {"node": "n1"}, "n1")
    wep(ds, "wy", "y", str(ip.ip))
    res = gc.run_once()
    assert len(res.empty_blocks_released) == 2
    assert str(ip.network) not in res.empty_blocks_released
    assert [r["spec"]["cidr"] for r in ds.list("IPAMBlock").items] == [str(ip.network)]
    ipam.release_by_handle("k8s-pod-network.y")
    gc.run_once()
    gc.run_once()
    assert len(ds.list("IPAMBlock").items) == 1  # the node keeps one block
    assert len(ds.list("BlockAffinity").items) == 1


def test_orphan_affinity_reported_and_deleted_after_two_runs(ds: MemoryDatastore) -> None:
    ipam = IPAM(ds)
    ip = alloc(ipam, "c1")
    wep(ds, "w1", "c1", ip)
    # A claim that died after writing its pending affinity, before creating the block.
    ipam.store.create_affinity("n1", ipaddress.ip_network("10.0.0.192/26"))
    rep = check(ds)
    assert rep.orphan_affinities == [{"node": "n1", "cidr": "10.0.0.192/26", "state": "pending"}]
    gc = LeakCollector(ds, ipam, grace_period=60, clock=Clock())
    assert gc.run_once().orphan_affinities_deleted == []
    assert gc.run_once().orphan_affinities_deleted == ["n1 10.0.0.192/26"]
    assert check(ds).problems == 0
    assert len(ds.list("BlockAffinity").items) == 1
