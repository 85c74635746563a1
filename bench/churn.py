"""Pod churn reliability run (issue 19): pods added and deleted in parallel across a lab.

Brings up a private ``calico-lab`` (default 3 nodes, sqlite, no encapsulation), then for
``--duration`` seconds ``--workers`` threads add pods (``calico-lab pod add``, real CNI) on
random nodes until ``--live`` pods exist and delete random ones beyond that, until
``--pods`` pods have been created in all (the pods then live stay for the end check);
meanwhile:
- a sampler probes a random pair of live pods (TCP 80, no policy denies it) every
  ``--sample`` seconds: every probe must pass;
- a policy thread creates and deletes a GlobalNetworkPolicy (deny, selecting no pod) at the
  start and then every ``--policy-every`` seconds (15), so Felix renders policy changes
  during the churn;
- every 10 s, ``calico-lab status``: the IPs of live pods must be distinct.
When the churn stops, a policy denying pods labelled ``side=a`` (odd ids) to ``side=b``
pods is applied and the live matrix of every pod still live must equal
``calicoctl policy matrix``.
At the end every remaining pod is deleted and the run checks: ``calicoctl ipam check`` finds
0 problems and 0 allocations remain (no lost IPs), no WorkloadEndpoint is left, no ``cali*``
link and no route to one is left on any node, no pod namespace is left; calico-node RSS
per node before/after. Prints a summary and writes bench/results/churn.json; exits 1 when a
check failed. Needs root; a 5-minute run is not part of CI (``make test``), it is run by
hand: ``python bench/churn.py [--duration 300] [--pods 200] [--live 40] [--workers 6]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402

CALICO_LAB = str(Path(sys.executable).parent / "calico-lab")
# Applied once the churn has stopped: pods labelled side=a (odd ids) may not reach side=b
# pods; the live matrix of every pod left must then equal calicoctl's policy matrix.
END_POLICY = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: churn-end}
spec:
  selector: side == 'b'
  types: [Ingress]
  ingress:
  - {action: Deny, source: {selector: side == 'a'}}
  - {action: Allow}
"""
DENY_POLICY = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: churn-deny}
spec:
  selector: churn == 'never'
  types: [Ingress]
  ingress: [{action: Deny}]
"""


class Churn:
    def __init__(self, args: argparse.Namespace, env: dict[str, str]) -> None:
        self.a = args
        self.env = env
        self.lock = threading.Lock()
        self.live: dict[str, str] = {}  # pod name -> node
        self.busy: set[str] = set()
        self.created = 0
        self.next_id = 0
        self.adds: list[float] = []
        self.dels: list[float] = []
        self.failures: list[str] = []
        self.probes: list[tuple[float, bool, str]] = []
        self.dup_checks = 0
        self.duplicates: list[str] = []
        self.policy_changes = 0
        self.rss: list[tuple[int, dict[str, float]]] = []
        self.stop = threading.Event()

    def lab(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CALICO_LAB, *argv, "--name", self.a.name], env=self.env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def ctl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        argv = (CALICO_LAB, "calicoctl", "--name", self.a.name, "--", *argv)
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120)

    # -- the churn ------------------------------------------------------------------------
    def worker(self, nodes: list[str], deadline: float) -> None:
        rng = random.Random()
        while time.monotonic() < deadline and not self.stop.is_set():
            with self.lock:
                idle = [p for p in self.live if p not in self.busy]
                add = (len(self.live) + len(self.busy - set(self.live)) < self.a.live
                       and self.created < self.a.pods)  # fmt: skip
                if add:
                    name, node = f"p{self.next_id}", rng.choice(nodes)
                    self.next_id += 1
                    self.created += 1
                elif idle and self.created < self.a.pods:  # the rest stay for the end check
                    name = rng.choice(idle)
                    node = self.live[name]
                else:
                    name = ""
                if name:
                    self.busy.add(name)
            if not name:
                if self.created >= self.a.pods and not self.busy:
                    return
                time.sleep(0.2)
                continue
            t0 = time.monotonic()
            if add:
                side = "a" if int(name[1:]) % 2 else "b"
                r = self.lab("pod", "add", node, f"churn/{name}", "--ports", "80/TCP",
                             "--labels", f"side={side}")  # fmt: skip
            else:
                r = self.lab("pod", "del", f"churn/{name}")
            dt = time.monotonic() - t0
            with self.lock:
                self.busy.discard(name)
                if r.returncode != 0:
                    self.failures.append(f"{'add' if add else 'del'} {name}: {r.stderr[-300:]}")
                    if not add:  # still there
                        continue
                if add and r.returncode == 0:
                    self.live[name] = node
                    self.adds.append(dt)
                elif not add:
                    self.live.pop(name, None)
                    self.dels.append(dt)

    def sampler(self) -> None:
        rng = random.Random()
        while not self.stop.wait(self.a.sample):
            with self.lock:
                idle = [p for p in self.live if p not in self.busy]
                if len(idle) < 2:
                    continue
                a, b = rng.sample(idle, 2)
                self.busy.update((a, b))
            try:
                r = self.lab("probe", f"churn/{a}", f"churn/{b}", "80/TCP", "--timeout", "2")
                self.probes.append((time.monotonic(), r.returncode == 0, f"{a}->{b}"))
            finally:
                with self.lock:
                    self.busy.difference_update((a, b))

    def policies(self, path: Path) -> None:
        """Apply, then delete, the deny policy: first at once (so even a short churn sees a
        policy change), then every ``--policy-every`` seconds until the churn stops."""
        on = False
        while True:
            r = (self.lab("apply", "-f", str(path)) if not on
                 else self.ctl("delete", "globalnetworkpolicy", "churn-deny"))  # fmt: skip
            if r.returncode == 0:
                on = not on
                self.policy_changes += 1
            else:
                self.failures.append(f"policy change: {r.stderr[-300:]}")
            if self.stop.wait(self.a.policy_every):
                return

    def rss_sampler(self, agents: dict[str, int]) -> None:
        """calico-node RSS (MB) of every node every 10 s: flat, or growing with the churn?"""
        t0 = time.monotonic()
        while True:
            sample = {n: round(harness.rss_mb(p), 1) for n, p in agents.items()}
            self.rss.append((round(time.monotonic() - t0), sample))
            if self.stop.wait(10):
                return

    def dup_checker(self) -> None:
        while not self.stop.wait(10):
            r = self.lab("status", "-o", "json")
            if r.returncode != 0:
                continue
            pods = json.loads(r.stdout)["pods"]
            ips = [p["ip"] for p in pods if p["ip"]]
            self.dup_checks += 1
            if len(ips) != len(set(ips)):
                self.duplicates.append(f"{len(ips) - len(set(ips))} duplicate IPs in status")


def end_matrix(c: Churn, path: Path, tries: int = 3) -> dict[str, Any]:
    """With the churn stopped, apply END_POLICY and compare the live matrix of every live
    pod with calicoctl's policy matrix (retried while Felix may still be programming)."""
    c.ctl("delete", "globalnetworkpolicy", "churn-deny")
    path.write_text(END_POLICY)
    c.lab("apply", "-f", str(path))
    t0 = time.monotonic()
    model = json.loads(c.ctl("policy", "matrix", "--ports", "80/TCP", "-o", "json").stdout)
    want = {(p["from"], p["to"]): p["verdict"] for p in model["probes"]}
    mismatches: list[str] = []
    for _ in range(tries):
        time.sleep(2)
        r = c.lab("matrix", "--ports", "80/TCP", "-o", "json", timeout=600)
        live = {(p["from"], p["to"]): p["verdict"] for p in json.loads(r.stdout)["probes"]}
        mismatches = [f"{a}->{b}: live {live.get((a, b))}, policy {v}"
                      for (a, b), v in sorted(want.items()) if live.get((a, b)) != v]  # fmt: skip
        mismatches += [f"{a}->{b}: live only" for a, b in sorted(set(live) - set(want))]
        if not mismatches:
            break
    c.ctl("delete", "globalnetworkpolicy", "churn-end")
    return {"pods": len(c.live), "probes": len(want),
            "denied": sum(v == "deny" for v in want.values()),
            "seconds": round(time.monotonic() - t0, 1), "mismatches": mismatches[:20]}  # fmt: skip


def signal_agents(agents: dict[str, int], label: str, snaps: list[str], memdir: str) -> None:
    """With ``--memtrace``: have every calico-node write a heap snapshot (SIGUSR2)."""
    if not snaps and label != "up":
        return
    for pid in agents.values():
        try:
            os.kill(pid, signal.SIGUSR2)
        except ProcessLookupError:
            pass
    snaps.append(label)
    # written by each agent's main thread (gc, dump): wait for the .json that comes last
    want = [Path(memdir) / f"{p}-{len(snaps) - 1}.json" for p in agents.values()]
    deadline = time.monotonic() + 30
    while not all(w.exists() for w in want) and time.monotonic() < deadline:
        time.sleep(0.2)


def rss_parts(pid: int) -> dict[str, float]:
    """RSS (MB) by mapping kind: the main ``heap`` (brk), ``anon`` mappings (thread malloc
    arenas, pymalloc arenas, stacks) and ``file`` mappings (code, shared libraries)."""
    parts = {"heap": 0.0, "anon": 0.0, "file": 0.0}
    kind = "anon"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for ln in f:
                head = ln.split(None, 6)
                if len(head) >= 5 and "-" in head[0] and ":" in head[3]:  # a mapping's header
                    path = head[5].strip() if len(head) > 5 else ""
                    kind = "file" if path.startswith("/") else "anon"
                    kind = "heap" if path == "[heap]" else kind
                elif ln.startswith("Rss:"):
                    parts[kind] += int(ln.split()[1]) / 1024
    except OSError:
        pass
    return {k: round(v, 1) for k, v in parts.items()}


def thread_count(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("Threads:"))
    except (OSError, StopIteration):
        return 0


def settled_rss(agents: dict[str, int], seconds: float = 5.0) -> dict[str, float]:
    """RSS (MB) per node after ``seconds`` of quiet (Felix has applied the last deletes)."""
    time.sleep(seconds)
    return {n: round(harness.rss_mb(p), 1) for n, p in agents.items()}


def one_round(args: argparse.Namespace, env: dict[str, str], state: dict[str, Any],
              first_id: int, snaps: list[str], rnd: int) -> dict[str, Any]:  # fmt: skip
    """One churn: pods added/deleted for ``--duration`` s, the end matrix, the drain and the
    leak checks; the same lab serves every round."""
    c = Churn(args, env)
    c.next_id = first_id
    nodes = [n["name"] for n in state["nodes"]]
    agents = {n["name"]: n["pid"] for n in state["nodes"]}
    rss0 = {n: round(harness.rss_mb(p), 1) for n, p in agents.items()}
    policy = Path(env["CALICO_LAB_DIR"]) / "churn-deny.yaml"
    policy.write_text(DENY_POLICY)
    deadline = time.monotonic() + args.duration
    threads = [threading.Thread(target=c.worker, args=(nodes, deadline), daemon=True)
               for _ in range(args.workers)]  # fmt: skip
    side = [threading.Thread(target=f, daemon=True) for f in (c.sampler, c.dup_checker)]
    side.append(threading.Thread(target=c.policies, args=(policy,), daemon=True))
    side.append(threading.Thread(target=c.rss_sampler, args=(agents,), daemon=True))
    for t in threads + side:
        t.start()
    if snaps:
        time.sleep(args.duration / 2)
        signal_agents(agents, f"round{rnd}-mid", snaps, args.memtrace)
    for t in threads:
        t.join()
    churn_s = time.monotonic() - (deadline - args.duration)
    rss1 = {n: round(harness.rss_mb(p), 1) for n, p in agents.items()}
    signal_agents(agents, f"round{rnd}-end", snaps, args.memtrace)
    c.stop.set()
    for t in side:
        t.join(30)
    matrix = end_matrix(c, Path(env["CALICO_LAB_DIR"]) / "churn-end.yaml")
    # -- drain and check ------------------------------------------------------------------
    left = sorted(c.live)
    drain = [threading.Thread(target=lambda n=n: c.lab("pod", "del", f"churn/{n}"))
             for n in left]  # fmt: skip
    for t in drain:
        t.start()
    for t in drain:
        t.join()
    c.ctl("delete", "globalnetworkpolicy", "churn-deny")
    time.sleep(3)  # Felix and the CNI have finished with the last deletes
    ipam = c.ctl("ipam", "check").stdout
    problems = ipam.rsplit("found ", 1)[-1].split()[0] if "Check complete" in ipam else "?"
    allocations = (
        ipam.split("IPAM blocks with ", 1)[-1].split()[0] if "blocks with" in ipam else "?"
    )
    weps = json.loads(c.ctl("get", "workloadendpoints", "-A", "-o", "json").stdout or "{}")
    wep_left = len(weps.get("items", []))
    stale_links, stale_routes = {}, {}
    for n in state["nodes"]:
        links = subprocess.run(["ip", "-n", n["netns"], "-o", "link"], capture_output=True,
                               text=True).stdout  # fmt: skip
        stale_links[n["name"]] = sum(1 for ln in links.splitlines() if ": cali" in ln)
        routes = subprocess.run(["ip", "-n", n["netns"], "route"], capture_output=True,
                                text=True).stdout  # fmt: skip
        stale_routes[n["name"]] = sum(1 for ln in routes.splitlines() if " dev cali" in ln)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    pod_ns_left = sum(1 for ln in netns.splitlines() if ln.startswith(f"{state['prefix']}p"))
    status_pods = len(json.loads(c.lab("status", "-o", "json").stdout)["pods"])
    rss_drained = settled_rss(agents)
    signal_agents(agents, f"round{rnd}-drained", snaps, args.memtrace)
    ok_probes = sum(1 for _, ok, _ in c.probes if ok)
    res: dict[str, Any] = {
        "churn_s": round(churn_s, 1),
        "pods_created": len(c.adds),
        "pods_deleted": len(c.dels) + len(left),
        "next_id": c.next_id,
        "add_s": _dist(c.adds),
        "del_s": _dist(c.dels),
        "failures": c.failures,
        "probes": len(c.probes),
        "probes_failed": [w for _, ok, w in c.probes if not ok],
        "probe_ok_ratio": round(ok_probes / len(c.probes), 4) if c.probes else None,
        "policy_changes": c.policy_changes,
        "duplicate_ip_checks": c.dup_checks,
        "duplicates": c.duplicates,
        "ipam_problems": problems,
        "ipam_allocations_left": allocations,
        "weps_left": wep_left,
        "status_pods_left": status_pods,
        "stale_links": stale_links,
        "stale_routes": stale_routes,
        "pod_netns_left": pod_ns_left,
        "end_matrix": matrix,
        "agent_rss_mb_before": rss0,
        "agent_rss_mb_after_churn": rss1,
        "agent_rss_mb_drained": rss_drained,
        "agent_threads_drained": {n: thread_count(p) for n, p in agents.items()},
        "agent_rss_parts_drained": {n: rss_parts(p) for n, p in agents.items()},
        "agent_rss_mb_series": c.rss,
    }
    res["ok"] = (
        not c.failures and not res["probes_failed"] and not c.duplicates and problems == "0"
        and allocations == "0" and wep_left == 0 and status_pods == 0 and pod_ns_left == 0
        and not any(stale_links.values()) and not any(stale_routes.values())
        and not matrix["mismatches"]
    )  # fmt: skip
    return res


def run(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    t0 = time.monotonic()
    r = subprocess.run([CALICO_LAB, "up", "--nodes", str(args.nodes), "--timeout", "600",
                        "--name", args.name], env=env, capture_output=True, text=True,
                       timeout=700)  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"calico-lab up failed:\n{r.stdout}\n{r.stderr}")
    up_s = time.monotonic() - t0
    state_file = Path(env["CALICO_LAB_DIR"]) / args.name / "state.json"
    state = json.loads(state_file.read_text())
    agents = {n["name"]: n["pid"] for n in state["nodes"]}
    snaps: list[str] = []
    rss_idle = settled_rss(agents)
    if args.memtrace:
        signal_agents(agents, "up", snaps, args.memtrace)
    rounds: list[dict[str, Any]] = []
    first_id = 0
    for rnd in range(1, args.rounds + 1):
        rounds.append(one_round(args, env, state, first_id, snaps, rnd))
        first_id = rounds[-1]["next_id"]
    last = rounds[-1]
    res: dict[str, Any] = {"nodes": args.nodes, "up_s": round(up_s, 1), "max_live": args.live}
    res.update(last)  # the checks of the last round; a failure of any round is kept below
    res["failures"] = [f for rd in rounds for f in rd["failures"]]
    res["probes_failed"] = [p for rd in rounds for p in rd["probes_failed"]]
    res["duplicates"] = [d for rd in rounds for d in rd["duplicates"]]
    res["pods_created"] = sum(rd["pods_created"] for rd in rounds)
    res["policy_changes"] = sum(rd["policy_changes"] for rd in rounds)
    res["pods_deleted"] = sum(rd["pods_deleted"] for rd in rounds)
    res["agent_rss_mb_before"] = rounds[0]["agent_rss_mb_before"]
    res["agent_rss_mb_idle"] = rss_idle
    res["agent_rss_mb_drained_per_round"] = [rd["agent_rss_mb_drained"] for rd in rounds]
    if len(rounds) > 1:
        # steady state: round 1 is the warm-up (allocator arenas, caches filled once);
        # what grows from the end of round 1 to the end of the last round is kept per pod
        warm, end = rounds[0]["agent_rss_mb_drained"], last["agent_rss_mb_drained"]
        res["agent_rss_mb_steady_growth"] = {n: round(end[n] - warm[n], 1) for n in end}
        res["rounds"] = [{k: v for k, v in rd.items() if k != "agent_rss_mb_series"}
                         for rd in rounds]  # fmt: skip
    if snaps:  # where the memory is at each snapshot (memtrace's .json next to each .snap)
        stats: dict[str, dict[str, Any]] = {}
        for i, label in enumerate(snaps):
            for n, pid in agents.items():
                f = Path(args.memtrace) / f"{pid}-{i}.json"
                if f.exists():
                    stats.setdefault(label, {})[n] = json.loads(f.read_text())
        res["memtrace"] = {"dir": args.memtrace, "snapshots": snaps, "pids": agents,
                           "stats": stats}  # fmt: skip
    res["ok"] = all(rd["ok"] for rd in rounds)
    return res


def _dist(v: list[float]) -> dict[str, float]:
    if not v:
        return {}
    s = sorted(v)
    return {"n": len(s), "p50": round(statistics.median(s), 2),
            "p95": round(s[int(0.95 * (len(s) - 1))], 2), "max": round(s[-1], 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--pods", type=int, default=200, help="pods to create in all")
    ap.add_argument("--live", type=int, default=40, help="at most this many pods at once")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--sample", type=float, default=2.0, help="seconds between probes")
    ap.add_argument(
        "--policy-every",
        type=float,
        default=15.0,
        help="seconds between policy changes (the first is at the start)",
    )
    ap.add_argument("--name", default=f"ch{os.getpid() % 10000}")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="churn rounds in the same lab; RSS after round 1 (warm-up) vs after "
        "the last, both with every pod deleted: agent_rss_mb_steady_growth",
    )
    ap.add_argument(
        "--memtrace",
        default="",
        metavar="DIR",
        help="trace calico-node's heap (CALICO_MEMTRACE_DIR) and snapshot it after "
        "up and at the middle/end/drain of each round; compare with "
        "python -m pycalico.diag.memtrace OLD NEW",
    )
    ap.add_argument(
        "--memtrace-frames",
        type=int,
        default=12,
        help="frames per traced allocation; 0: no tracing, only where the memory "
        "is at each snapshot (RSS, Python blocks, SQLite, malloc in use/free)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "churn.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="calico-churn-") as d:
        env = dict(os.environ, CALICO_LAB_DIR=d)
        if args.memtrace:
            env["CALICO_MEMTRACE_DIR"] = str(Path(args.memtrace).resolve())
            env["CALICO_MEMTRACE_FRAMES"] = str(args.memtrace_frames)
        try:
            res = run(args, env)
        finally:
            subprocess.run([CALICO_LAB, "down", "--name", args.name], env=env,
                           capture_output=True, timeout=300)  # fmt: skip
    print(json.dumps(res, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "pod churn", "args": vars(args),
                                          "result": res}, indent=2) + "\n")  # fmt: skip
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
