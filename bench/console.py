"""Web console benchmark: page load time with 200 pods, flow stream latency at 5,000 flows/min.

Serves the real console application with uvicorn on a loopback port (in this process, a
thread) over a memory datastore holding N pods (default 200) on 10 nodes in 10 namespaces,
with 20 policies, 2 IP pools' blocks, and a status document per node (full mesh). Measures:
- per page (cluster, reachability at 80/TCP, policy, flows) and the matrix JSON: the first
  load, p50/p95 of the full HTTP GET (server render + transfer) over ``--loads`` loads, and
  the page size. The snapshot cache is off (``snapshot_ttl=0``): every load re-reads the
  datastore; the policy model and matrix are cached per datastore revision, so the first
  reachability load computes the 39,800-cell matrix and later ones reuse it;
- what-if: p50/p95 of one POST computing the matrix delta of one pasted policy;
- flows: a FlowSource fed 5,000 flows/min (one record every 12 ms) by a thread; the SSE
  stream's latency = arrival at the client - the record's ``end``, p50/p95 over ``--flow-secs``.

Writes bench/results/console.json. Usage: python bench/console.py [--pods 200] [--loads 20]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from tests.kit import (  # noqa: E402
    ip_pool,
    ipam_block,
    namespace,
    network_policy,
    node,
    workload_endpoint,
)
from tests.kit.fakes import memory_datastore  # noqa: E402

from pycalico.ui.app import Console, create_app  # noqa: E402

N_NODES = 10
N_NS = 10

POLICY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: whatif, namespace: ns0}
spec:
  order: 5
  selector: all()
  ingress: [{action: Deny, source: {selector: app == 'cli'}}]
"""


def resources(pods: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [ip_pool(cidr="10.244.0.0/16", block_size=26)]
    for n in range(N_NODES):
        out.append(node(f"node{n}", f"198.18.0.{n + 1}"))
        out.append(ipam_block(f"10.244.{n}.0/26", f"node{n}"))
    for i in range(N_NS):
        out.append(namespace(f"ns{i}"))
        out.append(
            network_policy(
                f"same-ns-{i}", namespace=f"ns{i}", selector="all()",
                ingress=[{"action": "Allow", "source": {"selector": "all()"}}],
            )
        )  # fmt: skip
        out.append(
            network_policy(
                f"app-{i}", namespace=f"ns{i}", selector="app == 'db'", order=10,
                ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]},
                          "source": {"selector": "app == 'web'"}}],
            )
        )  # fmt: skip
    for p in range(pods):
        n, ns = p % N_NODES, p % N_NS
        out.append(
            workload_endpoint(
                f"pod{p}", namespace=f"ns{ns}", node=f"node{n}",
                ip=f"10.244.{n}.{p // N_NODES + 1}", labels={"app": ("web", "db", "cli")[p % 3]},
            )
        )  # fmt: skip
    return out


class Status:
    def node_statuses(self) -> dict[str, Any]:
        rows = {
            f"node{n}": [
                {"peer": f"198.18.0.{m + 1}", "type": "node-to-node mesh", "state": "up",
                 "since": "00:00:01", "info": "Established"}
                for m in range(N_NODES) if m != n
            ]
            for n in range(N_NODES)
        }  # fmt: skip
        return {name: {"ready": True, "bgp": bgp} for name, bgp in rows.items()}


class Flows:
    """5,000 flows/minute appended by a thread."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            now = time.time()
            rec = {
                "start": now, "end": now, "node": f"node{i % N_NODES}", "reporter": "dst",
                "src": {"namespace": "ns0", "name": f"pod{i % 200}"},
                "dst": {"namespace": "ns1", "name": f"pod{(i + 1) % 200}"},
                "proto": "TCP", "dport": 80, "action": "deny" if i % 4 else "allow",
                "policy": {"tier": "default", "name": "p", "namespace": "ns1", "rule": 0},
                "trace": [], "pending": [], "packets": 1, "bytes": 60,
            }  # fmt: skip
            with self.lock:
                self.records.append(rec)
            i += 1
            time.sleep(0.012)

    def flows(self, since: float = 0.0, limit: int = 5000) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.records[-limit:] if r["end"] > since]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--loads", type=int, default=20)
    ap.add_argument("--flow-secs", type=float, default=10.0)
    args = ap.parse_args()

    ds = memory_datastore(*resources(args.pods))

    class Store:
        def __call__(self) -> Any:
            class View:
                list_prefix = ds.list_prefix

                def close(self) -> None:
                    pass

            return View()

    flows = Flows()
    console = Console(open_store=Store(), status=Status(), flow_source=flows, snapshot_ttl=0.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(console), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=120)
    while not server.started:
        time.sleep(0.05)
    results: dict[str, Any] = {"pods": args.pods, "nodes": N_NODES, "loads": args.loads}
    pages = ["/cluster", "/reachability?ports=80/TCP", "/policy", "/flows",
             "/api/matrix?ports=80/TCP"]  # fmt: skip
    for page in pages:
        times, size = [], 0
        for _ in range(args.loads):
            t0 = time.perf_counter()
            r = client.get(page)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, (page, r.status_code)
            size = len(r.content)
        results[page] = {"first_ms": round(1000 * times[0], 1),
                         "p50_ms": round(1000 * statistics.median(times), 1),
                         "p95_ms": round(1000 * pct(times, 0.95), 1), "bytes": size}  # fmt: skip
        print(f"{page:<28} first {results[page]['first_ms']:>8} ms  p50 "
              f"{results[page]['p50_ms']:>8} ms  p95 {results[page]['p95_ms']:>8} ms  "
              f"{size / 1024:.0f} KiB")  # fmt: skip
    times = []
    for _ in range(max(3, args.loads // 4)):
        t0 = time.perf_counter()
        r = client.post("/policy/whatif", data={"yaml": POLICY, "ports": "80/TCP"},
                        headers={"accept": "application/json"})  # fmt: skip
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
    changes = len(r.json()["changes"])
    results["whatif"] = {"p50_ms": round(1000 * statistics.median(times), 1),
                         "p95_ms": round(1000 * pct(times, 0.95), 1),
                         "changes": changes}  # fmt: skip
    print(f"{'what-if POST':<28} p50 {results['whatif']['p50_ms']:>8} ms  p95 "
          f"{results['whatif']['p95_ms']:>8} ms  ({changes} cells change)")  # fmt: skip

    feeder = threading.Thread(target=flows.run, daemon=True)
    feeder.start()
    lat: list[float] = []
    deadline = time.time() + args.flow_secs
    with client.stream("GET", "/flows/stream") as s:
        for line in s.iter_lines():
            if line.startswith("data: "):
                now = time.time()
                lat.extend(now - float(row["end"]) for row in json.loads(line[6:]))
            if time.time() > deadline:
                break
    flows.stop.set()
    rate = len(flows.records) / (flows.records[-1]["end"] - flows.records[0]["end"]) * 60
    results["flow_stream"] = {"flows_per_min": round(rate), "rows": len(lat),
                              "p50_ms": round(1000 * statistics.median(lat), 1),
                              "p95_ms": round(1000 * pct(lat, 0.95), 1)}  # fmt: skip
    print(
        f"{'flow stream':<28} p50 {results['flow_stream']['p50_ms']:>8} ms  p95 "
        f"{results['flow_stream']['p95_ms']:>8} ms  ({len(lat)} rows at {rate:.0f}/min)"
    )
    server.should_exit = True
    out = ROOT / "bench" / "results" / "console.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
