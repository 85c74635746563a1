"""Datastore benchmark: sqlite vs etcd in one run.

Measures ops/s for create, get and CAS update (one client, sequential), and watch latency
(writer in this process, watcher in a *separate process*, as Felix would be) as p50/p99.
Starts its own etcd (Debian's /usr/bin/etcd) in a temp dir on free loopback ports and stops it
by PID. Prints a table and writes ``bench/results/datastore.json``.

Targets: sqlite >= 2,000 CAS updates/s; watch latency p99 <= 50 ms on both backends.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.etcd import EtcdServer  # noqa: E402
from tests.kit import ip_pool  # noqa: E402

from pycalico.config import DatastoreConfig  # noqa: E402
from pycalico.datastore import Datastore, open_datastore, prefix_for  # noqa: E402

N_OPS = {"sqlite": 3000, "etcdv3": 600}
N_WATCH = 300


def resource(name: str, **spec: Any) -> dict[str, Any]:
    return ip_pool(
        name, "10.0.0.0/16", ipip_mode="Never", vxlan_mode="Always", labels={"bench": "yes"}, **spec
    )


def rate(n: int, fn: Any) -> float:
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t)


def ops(ds: Datastore, n: int) -> dict[str, float]:
    out = {"create_per_s": rate(n, lambda i: ds.create(resource(f"c{i}")))}
    out["get_per_s"] = rate(n, lambda i: ds.get("IPPool", f"c{i % n}"))
    state = {"obj": ds.create(resource("counter", n=0))}

    def cas(i: int) -> None:
        obj = state["obj"]
        obj["spec"]["n"] = i
        state["obj"] = ds.update(obj)

    out["cas_update_per_s"] = rate(n, cas)
    return out


def _contender(cfg: DatastoreConfig, n: int, conn: Any) -> None:
    from pycalico.datastore import Conflict

    ds = open_datastore(cfg)
    conflicts = 0
    conn.recv()  # start signal
    for _ in range(n):
        while True:
            obj = ds.get("IPPool", "contended")
            obj["spec"]["n"] += 1
            try:
                ds.update(obj)
                break
            except Conflict:
                conflicts += 1
    conn.send(conflicts)
    ds.close()


def contended(ds: Datastore, cfg: DatastoreConfig, procs: int, n: int) -> dict[str, float]:
    """``procs`` processes CAS-increment one key ``n`` times each (get + update, retry)."""
    ds.create(resource("contended", n=0))
    ctx = multiprocessing.get_context("spawn")
    pipes, children = [], []
    for _ in range(procs):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_contender, args=(cfg, n, child))
        p.start()
        pipes.append(parent)
        children.append(p)
    time.sleep(1.0)  # let the children import
    t = time.perf_counter()
    for pp in pipes:
        pp.send("go")
    conflicts = sum(pp.recv() for pp in pipes)
    dt = time.perf_counter() - t
    for p in children:
        p.join(10)
    final = ds.get("IPPool", "contended")["spec"]["n"]
    assert final == procs * n, f"lost updates: {final} != {procs * n}"
    return {
        f"cas_{procs}proc_per_s": procs * n / dt,
        f"cas_{procs}proc_conflicts": float(conflicts),
    }


def _watcher(cfg: DatastoreConfig, since: int, n: int, conn: Any) -> None:
    ds = open_datastore(cfg)
    lat: list[float] = []
    conn.send("ready")
    for ev in ds.watch(prefix_for("IPPool"), since, timeout=30):
        sent = ev.obj["spec"].get("sent")
        if sent is not None:
            lat.append(time.time() - sent)
        if len(lat) >= n:
            break
    conn.send(lat)
    ds.close()


def watch_latency(ds: Datastore, cfg: DatastoreConfig) -> dict[str, float]:
    since = ds.list("IPPool").revision
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_watcher, args=(cfg, since, N_WATCH, child))
    proc.start()
    assert parent.recv() == "ready"
    time.sleep(0.3)
    obj = ds.create(resource("watched", sent=None))
    rng = random.Random(7)
    for _ in range(N_WATCH):
        time.sleep(rng.uniform(0, 0.03))  # a mix of bursts and idle gaps
        obj["spec"]["sent"] = time.time()
        obj = ds.update(obj)
    lat = sorted(parent.recv())
    proc.join(10)
    ms = [x * 1000 for x in lat]
    return {
        "watch_p50_ms": statistics.median(ms),
        "watch_p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "watch_max_ms": ms[-1],
    }


def run_backend(name: str, cfg: DatastoreConfig) -> dict[str, float]:
    ds = open_datastore(cfg)
    try:
        res = ops(ds, N_OPS[name])
        res.update(contended(ds, cfg, 3, N_OPS[name] // 6))
        res.update(watch_latency(ds, cfg))
        return res
    finally:
        ds.close()


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="pycalico-bench-ds-"))
    results: dict[str, dict[str, float]] = {}
    etcd = EtcdServer(tmp / "etcd")
    (tmp / "etcd").mkdir()
    try:
        results["sqlite"] = run_backend(
            "sqlite", DatastoreConfig(datastore_type="sqlite", datastore_path=str(tmp / "b.db"))
        )
        etcd.start()
        results["etcdv3"] = run_backend("etcdv3", etcd.config())
    finally:
        etcd.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    cols = ["create_per_s", "get_per_s", "cas_update_per_s", "cas_3proc_per_s",
            "watch_p50_ms", "watch_p99_ms"]  # fmt: skip
    print(f"{'backend':<8}" + "".join(f"{c:>17}" for c in cols))
    for name, r in results.items():
        print(f"{name:<8}" + "".join(f"{r[c]:>17.1f}" for c in cols))
    targets = {
        "sqlite_cas_ge_2000": results["sqlite"]["cas_update_per_s"] >= 2000,
        "sqlite_watch_p99_le_50ms": results["sqlite"]["watch_p99_ms"] <= 50,
        "etcd_watch_p99_le_50ms": results["etcdv3"]["watch_p99_ms"] <= 50,
    }
    for k, ok in targets.items():
        print(f"target {k}: {'met' if ok else 'MISSED'}")
    out = ROOT / "bench" / "results" / "datastore.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "datastore",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ops": N_OPS,
        "watch_events": N_WATCH,
        "results": results,
        "targets": targets,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
