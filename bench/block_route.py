"""New IPAM block -> kernel route latency through the running agent (root; its own lab).

Brings up a 2-node calico-lab (VXLAN by default, so Felix owns the pool's routes; ``--encap
none`` measures BIRD's path instead), then ``--claims`` times: claims a new block for node2
in the lab's datastore (``IPAM.claim_affinity``, as the CNI plugin's allocation does) and
measures the seconds until node1's kernel holds the route to it (``ip -j route show <cidr>``
polled every 2 ms inside node1's namespace). Also records, after the claims, the threads of
node1's calico-node (``/proc/<pid>/task``).

Uses only the lab CLI, ``pycalico.lab.state``, ``pycalico.datastore`` and ``pycalico.ipam``,
so the same script measures any checkout (run it with that checkout's ``src`` first on
``PYTHONPATH``). Writes bench/results/block_route.json.
Usage: python bench/block_route.py [--claims 20] [--encap vxlan|none|ipip]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CALICO_LAB = str(Path(sys.executable).parent / "calico-lab")


def _lab(args: list[str], env: dict[str, str]) -> None:
    subprocess.run([CALICO_LAB, *args], env=env, check=True, capture_output=True, timeout=300)


def _has_route(netns: str, cidr: str) -> bool:
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "route", "show", cidr], capture_output=True, text=True
    ).stdout
    return bool(out.strip()) and out.strip() != "[]"


def _agent_pid(netns: str) -> int | None:
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    for pid in pids.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(c.endswith(b"calico-node") for c in cmd) and b"run" in cmd:
            return int(pid)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--claims", type=int, default=20)
    ap.add_argument("--encap", default="vxlan")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "block_route.json"))
    args = ap.parse_args()

    from pycalico.datastore import open_datastore
    from pycalico.ipam import IPAM
    from pycalico.lab.state import LabState

    name = f"br{os.getpid() % 10000}"
    env = dict(os.environ)
    env["CALICO_LAB_DIR"] = tempfile.mkdtemp(prefix="bench-block-route-")
    os.environ["CALICO_LAB_DIR"] = env["CALICO_LAB_DIR"]
    latencies: list[float] = []
    threads = 0
    try:
        _lab(["up", "--name", name, "--nodes", "2", "--encap", args.encap], env)
        state = LabState.load(name)
        node1 = state.node("node1").netns
        ds = open_datastore_for(state, open_datastore)
        ipam = IPAM(ds)
        pool = ipaddress.ip_network(state.pool)
        blocks = list(pool.subnets(new_prefix=26))[-args.claims :]
        for block in blocks:
            cidr = str(block)
            t0 = time.monotonic()
            ipam.claim_affinity(block, "node2")
            while not _has_route(node1, cidr):
                if time.monotonic() - t0 > args.timeout:
                    raise SystemExit(f"{cidr}: no route on node1 after {args.timeout}s")
                time.sleep(0.002)
            latencies.append(time.monotonic() - t0)
            time.sleep(0.05)
        pid = _agent_pid(node1)
        threads = len(os.listdir(f"/proc/{pid}/task")) if pid else 0
    finally:
        subprocess.run([CALICO_LAB, "down", "--name", name], env=env, capture_output=True)
    ms = sorted(x * 1000 for x in latencies)
    result: dict[str, Any] = {
        "encap": args.encap,
        "claims": len(ms),
        "block_to_kernel_ms_p50": round(statistics.median(ms), 1),
        "block_to_kernel_ms_max": round(ms[-1], 1),
        "block_to_kernel_ms_all": [round(x, 1) for x in ms],
        "agent_threads": threads,
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def open_datastore_for(state: Any, open_datastore: Any) -> Any:
    """The lab's datastore (sqlite file; etcd labs are not supported by this bench)."""
    if state.datastore != "sqlite":
        raise SystemExit("block_route bench: sqlite labs only")
    os.environ.update(state.datastore_env())
    return open_datastore()


if __name__ == "__main__":
    sys.exit(main())
