"""Felix calculation-graph benchmark (pure Python, no kernel).

Measures:
- from scratch: feed N local WorkloadEndpoints (default 1,000, across 20 namespaces) plus
  remote ones, P policies (default 500: namespaced and global, each with an ingress rule
  whose source selector differs, some with named ports), namespaces and service accounts;
  ``on_in_sync`` + ``flush``: seconds and messages;
- per-label-change latency: change one label of a random local endpoint (alternating a label
  that policy selectors use and one that only rule selectors use) and time
  ``on_update`` + ``flush``; p50 / p99 in milliseconds, and selector evaluations per change
  (the label index's counters) compared with policies x endpoints.

Writes bench/results/policy_calc.json.
Usage: python bench/policy_calc.py [--endpoints 1000] [--policies 500] [--changes 500]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.kit import global_network_policy, network_policy, workload_endpoint  # noqa: E402

from pycalico.felix.calc import CalcGraph  # noqa: E402

V3 = "projectcalico.org/v3"
N_NS = 20
N_APPS = 50


def wep(i: int, node: str, app: int, tier: int) -> tuple[str, dict[str, Any]]:
    ns = f"ns{i % N_NS}"
    obj = workload_endpoint(
        f"pod{i}",
        namespace=ns,
        node=node,
        ip=f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
        labels={"app": f"app{app}", "tier": f"t{tier}", "version": "v1"},
        service_account=f"sa{i % 5}",
        ports=[{"name": "http", "protocol": "TCP", "port": 8080}],
        interface_name=None,
    )
    return f"wep/{ns}/{obj['metadata']['name']}", obj


def policy(j: int) -> tuple[str, dict[str, Any]]:
    rule: dict[str, Any] = {
        "action": "Allow",
        "protocol": "TCP",
        "source": {"selector": f"app == 'app{(j * 7) % N_APPS}' && tier == 't{j % 3}'"},
        "destination": {"ports": ["http" if j % 4 == 0 else 80 + j % 10]},
    }
    if j % 2:
        ns = f"ns{j % N_NS}"
        return f"np/{ns}/p{j}", network_policy(
            f"p{j}",
            namespace=ns,
            order=j % 17,
            selector=f"app == 'app{j % N_APPS}'",
            ingress=[rule],
        )
    return f"gnp/p{j}", global_network_policy(
        f"p{j}",
        order=j % 13,
        selector=f"app == 'app{j % N_APPS}' && tier in {{'t0', 't1'}}",
        ingress=[rule],
        egress=[{"action": "Allow", "destination": {"namespaceSelector": "team == 'a'"}}],
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--remote", type=int, default=2000)
    ap.add_argument("--policies", type=int, default=500)
    ap.add_argument("--changes", type=int, default=500)
    args = ap.parse_args()
    rng = random.Random(1)

    updates: list[tuple[str, dict[str, Any]]] = []
    for n in range(N_NS):
        updates.append(
            (
                f"ns/{n}",
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": f"ns{n}", "labels": {"team": "ab"[n % 2]}},
                },
            )
        )
        for s in range(5):
            updates.append(
                (
                    f"sa/{n}/{s}",
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": f"sa{s}", "namespace": f"ns{n}"},
                    },
                )
            )
    local = [
        wep(i, "node1", rng.randrange(N_APPS), rng.randrange(3)) for i in range(args.endpoints)
    ]
    remote = [
        wep(args.endpoints + i, "node2", rng.randrange(N_APPS), rng.randrange(3))
        for i in range(args.remote)
    ]
    pols = [policy(j) for j in range(args.policies)]
    updates += pols + local + remote
    rng.shuffle(updates)

    g = CalcGraph("node1")
    t0 = time.perf_counter()
    for k, v in updates:
        g.on_update(k, v)
    g.on_in_sync()
    msgs = g.flush()
    scratch = time.perf_counter() - t0
    kinds: dict[str, int] = {}
    for m in msgs:
        kinds[type(m).__name__] = kinds.get(type(m).__name__, 0) + 1
    print(
        f"from scratch: {args.endpoints} local + {args.remote} remote endpoints x "
        f"{args.policies} policies: {scratch:.2f} s, {len(msgs)} messages {kinds}"
    )

    lat: list[float] = []
    evals: list[int] = []
    for c in range(args.changes):
        k, v = local[rng.randrange(len(local))]
        labels = dict(v["metadata"]["labels"])
        if c % 2:
            labels["app"] = f"app{rng.randrange(N_APPS)}"  # policy + rule selectors use it
        else:
            labels["version"] = f"v{c}"  # no selector uses it
        v = dict(v, metadata=dict(v["metadata"], labels=labels))
        before = g.policy_index.evaluations + g.ipset_index.evaluations
        t = time.perf_counter()
        g.on_update(k, v)
        g.flush()
        lat.append((time.perf_counter() - t) * 1000)
        evals.append(g.policy_index.evaluations + g.ipset_index.evaluations - before)
    lat.sort()
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    naive = args.policies + args.policies  # every policy selector + every rule selector
    print(
        f"label change: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {args.changes} changes; "
        f"selector evaluations per change: mean {statistics.mean(evals):.1f}, "
        f"max {max(evals)} (naive re-evaluation: {naive})"
    )
    out = ROOT / "bench" / "results" / "policy_calc.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "endpoints_local": args.endpoints,
                "endpoints_remote": args.remote,
                "policies": args.policies,
                "from_scratch_s": round(scratch, 3),
                "messages": kinds,
                "label_change_ms_p50": round(p50, 3),
                "label_change_ms_p99": round(p99, 3),
                "evaluations_per_change_mean": round(statistics.mean(evals), 2),
                "evaluations_per_change_max": max(evals),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
