"""IPAM leak repair from three node processes sharing one datastore (sqlite file or etcd).

Each process runs the real :class:`IpamGcComponent` thread (short lease, grace period and
interval) and logs to its own file. Exactly one node holds the ``ipam-gc`` lease; only it
releases the leaked address, after the grace period, and never a live one. When the holder
is SIGKILLed (no release), another node takes the lease over and repairs a new leak.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from pycalico.config import DatastoreConfig
from pycalico.datastore import Datastore, open_datastore
from pycalico.datastore.base import NotFound
from pycalico.ipam import IPAM
from pycalico.ipam.store import IPAMStore
from tests.contract.conftest import Backend
from tests.kit import ip_pool, resource, wait_for
from tests.kit.builders import node as calico_node
from tests.kit.fakes import seed

pytestmark = pytest.mark.slow

CTX = mp.get_context("spawn")
GRACE = 2.0
ENV = {
    "CALICO_IPAM_GC_GRACE_PERIOD": f"{GRACE}s",
    "CALICO_IPAM_GC_INTERVAL": "0.5",
    "CALICO_IPAM_GC_LEASE_DURATION": "1.5",
}


def _gc_node(cfg: DatastoreConfig, node: str, log_file: str) -> None:
    """Child process: one calico-node's IPAM GC component, until killed."""
    from pycalico.node.ipamgc import IpamGcComponent

    logging.basicConfig(filename=log_file, level=logging.INFO, format="%(message)s")
    ds = open_datastore(cfg)
    comp = IpamGcComponent(ds, node, ENV)
    comp.start()
    while comp.alive():
        time.sleep(0.2)
    raise SystemExit("ipam-gc thread died")


def alloc(ds: Datastore, cid: str, node: str) -> str:
    v4, _ = IPAM(ds).auto_assign(1, 0, f"k8s-pod-network.{cid}", {"node": node}, node)
    return str(v4[0].ip)


def ips(ds: Datastore) -> set[str]:
    return {str(a) for sb in IPAMStore(ds).blocks() for a, _ in sb.block.allocated()}


def holder(ds: Datastore) -> str:
    try:
        return str(ds.get("Lease", "ipam-gc")["spec"]["holder"])
    except NotFound:
        return ""


def released_by(logs: dict[str, Path], ip: str) -> list[str]:
    out = []
    for node, path in logs.items():
        text = path.read_text() if path.exists() else ""
        if any(
            "IPAM GC: released" in ln and ip in ln.replace(",", " ").split()
            for ln in text.splitlines()
        ):
            out.append(node)
    return out


def test_three_node_processes_one_collector_and_takeover(backend: Backend, tmp_path: Path) -> None:
    if backend.config is None:
        pytest.skip("memory store cannot be shared across processes")
    ds = backend.store
    nodes = ["n0", "n1", "n2"]
    seed(ds, [ip_pool("p", "10.88.0.0/16"), *(calico_node(n) for n in nodes)])
    live = alloc(ds, "alive", "n0")
    spec = {"containerID": "alive", "node": "n0", "ipNetworks": [f"{live}/32"]}
    ds.create(resource("WorkloadEndpoint", "n0-cni-alive-eth0", spec, namespace="default"))
    leak1 = alloc(ds, "dead1", "n1")
    logs = {n: tmp_path / f"{n}.log" for n in nodes}
    procs = {n: CTX.Process(target=_gc_node, args=(backend.config, n, str(logs[n]))) for n in nodes}
    for p in procs.values():
        p.start()
    try:
        wait_for(lambda: holder(ds) in nodes, 30, 0.1, what="a lease holder")
        first = holder(ds)
        wait_for(lambda: leak1 not in ips(ds), 30, 0.1, what=f"release of {leak1}")
        # The collector logs a run once it has finished (after its datastore writes).
        wait_for(lambda: released_by(logs, leak1), 10, 0.1, what=f"log of {leak1}'s release")
        assert holder(ds) == first
        assert released_by(logs, leak1) == [first]
        assert live in ips(ds)
        # SIGKILL the holder: no release; another node takes over after the lease expires.
        victim = procs[first]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        t0 = time.monotonic()
        wait_for(lambda: holder(ds) not in ("", first), 30, 0.1, what="takeover")
        took = time.monotonic() - t0
        second = holder(ds)
        leak2 = alloc(ds, "dead2", "n2")
        born = time.monotonic()
        wait_for(lambda: leak2 not in ips(ds), 30, 0.1, what=f"release of {leak2}")
        assert time.monotonic() - born >= GRACE
        wait_for(lambda: released_by(logs, leak2), 10, 0.1, what=f"log of {leak2}'s release")
        assert released_by(logs, leak2) == [second]
        assert live in ips(ds)
        for n, p in procs.items():
            if n != first:
                assert p.is_alive(), f"{n} died: see {logs[n]}"
        print(f"takeover after SIGKILL took {took:.2f}s (lease 1.5s)")
    finally:
        for p in procs.values():
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGKILL)
            p.join(10)
