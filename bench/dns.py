"""Workload DNS benchmark: queries/s one node's server answers over UDP from 2 pods, latency,
and how fast datastore changes become visible.

Everything runs in the bench's own namespaces: an underlay with one node namespace, two pod
namespaces wired Calico-style (veth ``cali*``, /32 routes, gateway 169.254.1.1), the server
(``python -m pycalico.dns``) bound on 169.254.25.10:53 inside the node namespace and pinned to
CPU 0 (``taskset``); the two load generators (one per pod) share CPU 1. The datastore is a
sqlite file holding ``--pods`` WorkloadEndpoints in 10 namespaces.

Phases, each ``--seconds`` long:
- ``throughput``: each client keeps 32 UDP queries in flight (A queries for random existing
  pods, 1 in 10 for a missing name -> NXDOMAIN): answered queries/s of both clients together
  and p50/p99 latency under that load; the median of 3 runs. The server's CPU time is
  sampled too: ``server_cpu`` (fraction of its core busy) and ``qps_per_server_core``
  (answers per CPU-second of the server: its capacity when the clients are the limit).
  Run twice: with the server's response cache (the default) and with ``--cache-size 0``
  (every query resolved from the index).
- ``latency``: one query in flight per client: p50/p99 round trip.
- ``propagation``: a WorkloadEndpoint is created (then deleted) in the datastore; a pod polls
  (1 ms) until the name resolves (is NXDOMAIN): p50/max over 20 pods.

Prints the numbers and writes ``bench/results/dns.json``. Target: >= 5,000 qps on one core.
Usage: ``bench/dns.py [--seconds S] [--pods N]``, as root.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.fixtures.netns import Netns, NetnsFactory  # noqa: E402
from tests.kit import workload_endpoint  # noqa: E402

import harness  # noqa: E402
from pycalico.datastore.sqlite import SqliteDatastore  # noqa: E402
from pycalico.dns import DNS_ADDRESS  # noqa: E402

TARGET_QPS = 5000
NAMESPACES = [f"ns{i}" for i in range(10)]

LOADGEN = r"""
import json, random, socket, struct, sys, time
seconds, window, seed = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
names = sys.argv[4].split(",")
rng = random.Random(seed)
def q(i, name):
    qn = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + qn + b"\0\1\0\1"
pool = [n if rng.random() > 0.1 else "missing-" + n for n in names for _ in range(1)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("169.254.25.10", 53))
s.settimeout(0.2)
sent = {}
lat = []
seq = 0
ok = lost = 0
def send():
    global seq
    seq = (seq + 1) & 0xFFFF
    sent[seq] = time.perf_counter()
    s.send(q(seq, rng.choice(pool)))
end = time.perf_counter() + seconds
for _ in range(window):
    send()
while time.perf_counter() < end:
    try:
        data = s.recv(4096)
    except TimeoutError:
        lost += len(sent)
        sent.clear()
        for _ in range(window):
            send()
        continue
    t = time.perf_counter()
    (i,) = struct.unpack_from("!H", data)
    t0 = sent.pop(i, None)
    if t0 is None:
        continue
    lat.append(t - t0)
    ok += 1
    send()
print(json.dumps({"ok": ok, "lost": lost, "seconds": seconds, "lat": lat}))
"""

WATCHER = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("169.254.25.10", 53))
s.settimeout(0.5)
def rcode(name, i):
    qn = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    s.send(struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + qn + b"\0\1\0\1")
    while True:
        d = s.recv(4096)
        if struct.unpack_from("!H", d)[0] == i:
            return d[3] & 0xF
print("ready", flush=True)
for line in sys.stdin:
    want, name = line.split()
    t0 = time.perf_counter()
    i = 0
    while True:
        i = (i + 1) & 0xFFFF
        try:
            rc = rcode(name, i)
        except TimeoutError:
            continue
        if (rc == 0) == (want == "add"):
            break
        time.sleep(0.001)
    print(f"{(time.perf_counter() - t0) * 1000:.3f}", flush=True)
"""


def wep(pod: str, ns: str, ip: str) -> dict[str, Any]:
    return workload_endpoint(pod, namespace=ns, node="n1", ip=ip)


def ip_of(i: int) -> str:
    return f"10.244.{i // 250}.{i % 250 + 2}"


def wire_pod(f: NetnsFactory, node: Netns, tag: str, ip: str) -> Netns:
    pod = f.netns(tag)
    cali = f"calib{tag}"[:15]
    f.veth(pod, "eth0", node, cali)
    node.ip("link", "set", cali, "address", "ee:ee:ee:ee:ee:ee")
    node.sysctl(f"net.ipv4.conf.{cali}.proxy_arp", 1)
    mac = pod.ip_json("link", "show", "eth0")[0]["address"]
    node.ip("neigh", "replace", ip, "lladdr", mac, "dev", cali, "nud", "permanent")
    node.ip("route", "add", f"{ip}/32", "dev", cali, "scope", "link")
    pod.batch(
        [
            "neigh replace 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent",
            f"addr add {ip}/32 dev eth0",
            "route add 169.254.1.1 dev eth0 scope link",
            "route add default via 169.254.1.1 dev eth0",
        ]
    )
    return pod


def start_server(node: Netns, db: str, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, DATASTORE_TYPE="sqlite", CALICO_DATASTORE_PATH=db)
    argv = ["taskset", "-c", "0", sys.executable, "-m", "pycalico.dns", *extra]
    p = node.popen(*argv, stdout=subprocess.PIPE, env=env)
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], 30)
    if not ready or not p.stdout.readline().startswith("in-sync"):
        raise RuntimeError("DNS server did not start")
    return p


def load(
    pods: list[Netns], names: list[str], seconds: float, window: int, server_pid: int
) -> dict[str, Any]:
    cpu0 = harness.cpu_s(server_pid)
    procs = [
        pod.popen(
            "taskset",
            "-c",
            "1",
            sys.executable,
            "-c",
            LOADGEN,
            str(seconds),
            str(window),
            str(i),
            ",".join(names),
            stdout=subprocess.PIPE,
        )
        for i, pod in enumerate(pods)
    ]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 60)
        outs.append(json.loads(out))
    cpu = harness.cpu_s(server_pid) - cpu0
    ok = sum(o["ok"] for o in outs)
    lat = sorted(x for o in outs for x in o["lat"])
    q = statistics.quantiles(lat, n=100) if len(lat) >= 100 else [0.0] * 99
    return {
        "qps": round(ok / seconds),
        "lost": sum(o["lost"] for o in outs),
        "p50_ms": round(q[49] * 1000, 3),
        "p99_ms": round(q[98] * 1000, 3),
        "window_per_client": window,
        "server_cpu": round(cpu / seconds, 2),
        "qps_per_server_core": round(ok / cpu) if cpu > 0 else None,
    }


def propagation(pod: Netns, ds: SqliteDatastore, n: int) -> dict[str, float]:
    w = pod.popen(sys.executable, "-c", WATCHER, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert w.stdin is not None and w.stdout is not None
    assert w.stdout.readline().startswith("ready")
    adds: list[float] = []
    dels: list[float] = []
    for i in range(n):
        pod_name, ns = f"new{i}", "ns0"
        ds.create(wep(pod_name, ns, f"10.245.0.{i + 2}"))
        w.stdin.write(f"add {pod_name}.{ns}.pod.cluster.local\n")
        w.stdin.flush()
        adds.append(float(w.stdout.readline()))
        ds.delete("WorkloadEndpoint", f"n1-k8s-{pod_name}-eth0", ns)
        w.stdin.write(f"del {pod_name}.{ns}.pod.cluster.local\n")
        w.stdin.flush()
        dels.append(float(w.stdout.readline()))
    w.stdin.close()
    w.wait(5)
    return {
        "add_p50_ms": round(statistics.median(adds), 2),
        "add_max_ms": round(max(adds), 2),
        "delete_p50_ms": round(statistics.median(dels), 2),
        "delete_max_ms": round(max(dels), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--pods", type=int, default=1000)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pcdnsbench-")
    results: dict[str, Any] = {"pods": args.pods, "cpus": os.cpu_count(), "target_qps": TARGET_QPS}
    try:
        db = os.path.join(tmp, "ds.sqlite")
        ds = SqliteDatastore(db)
        names = []
        for i in range(args.pods):
            ns = NAMESPACES[i % len(NAMESPACES)]
            ds.create(wep(f"pod{i}", ns, ip_of(i)))
            names.append(f"pod{i}.{ns}.pod.cluster.local")
        with NetnsFactory(tag="dnsb") as f:
            ul = f.underlay(1)
            node = ul.nodes[0]
            node.ip("addr", "add", f"{DNS_ADDRESS}/32", "dev", "lo")
            clients = [wire_pod(f, node, f"c{i}", f"10.246.0.{i + 2}") for i in range(2)]
            for label, extra in (("cached", ()), ("uncached", ("--cache-size", "0"))):
                srv = start_server(node, db, *extra)
                try:
                    load(clients, names, 1.0, 32, srv.pid)  # warm-up
                    runs = [load(clients, names, args.seconds, 32, srv.pid) for _ in range(3)]
                    runs.sort(key=lambda r: r["qps"])
                    best = runs[1]  # the median run: other load on the machine adds noise
                    best["qps_of_runs"] = [r["qps"] for r in runs]
                    results[f"throughput_{label}"] = best
                    results[f"latency_{label}"] = load(clients, names, args.seconds / 2, 1, srv.pid)
                    if label == "cached":
                        results["propagation"] = propagation(clients[0], ds, 20)
                finally:
                    harness.stop_process(srv)
        ds.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["meets_target"] = (
        min(results["throughput_cached"]["qps"], results["throughput_uncached"]["qps"])
        >= TARGET_QPS
    )
    for k, v in results.items():
        print(f"{k}: {v}")
    out = ROOT / "bench" / "results" / "dns.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
