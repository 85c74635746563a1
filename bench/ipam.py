"""IPAM benchmark: allocations/s on sqlite and etcd, one process and 8 processes.

Single process: ``auto_assign`` of one IPv4 address per call (as the CNI plugin does) for N
handles on one node, then ``release_by_handle`` of each. Eight processes: 8 workers on 4 nodes
(per-node flock, as on a real host) each allocating 250 addresses at once; the rate is total
allocations over wall time from a common start. Starts its own etcd in a temp dir and stops
it by PID. Prints a table and writes ``bench/results/ipam.json``.

Target: >= 500 allocations/s single process on sqlite.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.etcd import EtcdServer  # noqa: E402

from pycalico.config import DatastoreConfig  # noqa: E402
from pycalico.datastore import Datastore, open_datastore  # noqa: E402
from pycalico.ipam import IPAM  # noqa: E402

N_SINGLE = {"sqlite": 1000, "etcdv3": 500}
PER_WORKER = 250
WORKERS = 8
NODES = 4
TARGET_SQLITE = 500.0


def seed(ds: Datastore) -> None:
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "bench"},
            "spec": {"cidr": "10.64.0.0/14"},
        }
    )


def single(cfg: DatastoreConfig, n: int) -> dict[str, float]:
    ds = open_datastore(cfg)
    try:
        seed(ds)
        ipam = IPAM(ds)
        t = time.perf_counter()
        for i in range(n):
            ipam.auto_assign(1, 0, f"k8s-pod-network.s{i}", {"node": "n0"}, "n0")
        alloc = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(n):
            ipam.release_by_handle(f"k8s-pod-network.s{i}")
        rel = n / (time.perf_counter() - t)
        return {"alloc_per_s": alloc, "release_per_s": rel}
    finally:
        ds.close()


def _worker(cfg: DatastoreConfig, w: int, lock_dir: str, start: Any, q: Any) -> None:
    ds = open_datastore(cfg)
    node = f"n{w % NODES}"
    ipam = IPAM(ds, lock_path=f"{lock_dir}/{node}.lock")
    start.wait()
    try:
        for i in range(PER_WORKER):
            ipam.auto_assign(1, 0, f"k8s-pod-network.w{w}-{i}", {"node": node}, node)
        q.put(time.perf_counter())
    except Exception as e:
        q.put(f"worker {w}: {e}")
    finally:
        ds.close()


def multi(cfg: DatastoreConfig, lock_dir: str) -> dict[str, float]:
    ds = open_datastore(cfg)
    seed(ds)
    ds.close()
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(cfg, w, lock_dir, start, q)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let every worker import and connect
    t0 = time.perf_counter()
    start.set()
    ends = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(30)
    errors = [e for e in ends if isinstance(e, str)]
    if errors:
        raise RuntimeError("; ".join(errors))
    total = WORKERS * PER_WORKER
    return {"alloc_per_s": total / (max(ends) - t0), "allocations": float(total)}


def run_backend(
    name: str, cfg_single: DatastoreConfig, cfg_multi: DatastoreConfig
) -> dict[str, Any]:
    out: dict[str, Any] = {"single": single(cfg_single, N_SINGLE[name])}
    with tempfile.TemporaryDirectory(prefix="pycalico-ipam-lock-") as d:
        out["multi8"] = multi(cfg_multi, d)
    return out


def main() -> int:
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="pycalico-bench-ipam-"))
    try:
        results["sqlite"] = run_backend(
            "sqlite",
            DatastoreConfig(datastore_type="sqlite", datastore_path=str(tmp / "a.db")),
            DatastoreConfig(datastore_type="sqlite", datastore_path=str(tmp / "b.db")),
        )
        for part in ("single", "multi8"):
            root = tmp / f"etcd-{part}"
            root.mkdir()
            server = EtcdServer(root)
            server.start()
            try:
                if part == "single":
                    results["etcdv3"] = {"single": single(server.config(), N_SINGLE["etcdv3"])}
                else:
                    with tempfile.TemporaryDirectory(prefix="pycalico-ipam-lock-") as d:
                        results["etcdv3"]["multi8"] = multi(server.config(), d)
            finally:
                server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'backend':<8} {'1 proc alloc/s':>15} {'1 proc release/s':>17} {'8 procs alloc/s':>16}")
    for name, r in results.items():
        print(
            f"{name:<8} {r['single']['alloc_per_s']:>15.0f} {r['single']['release_per_s']:>17.0f} "
            f"{r['multi8']['alloc_per_s']:>16.0f}"
        )
    ok = results["sqlite"]["single"]["alloc_per_s"] >= TARGET_SQLITE
    print(
        f"target sqlite single-process >= {TARGET_SQLITE:.0f} alloc/s: {'met' if ok else 'MISSED'}"
    )
    out = ROOT / "bench" / "results" / "ipam.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "results": results,
        "target_sqlite_single_alloc_per_s": TARGET_SQLITE,
        "target_met": ok,
        "workers": WORKERS,
        "nodes": NODES,
        "per_worker": PER_WORKER,
    }
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
