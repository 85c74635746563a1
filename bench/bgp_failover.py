"""BGP failover benchmark: how long a dead node's routes stay on the others, with and without BFD.

A 3-node calico-lab (full mesh, one pod per node). A failure is node1's ``eth0`` set down
inside its namespace (the agent and BIRD keep running, as when a cable or switch port
dies); the time is from that moment to node2's kernel deleting node1's block route
(:func:`tests.e2e.failover.withdrawal_time`). The link is restored between runs.
- bfd: ``nodeMeshFailureDetectionMode: BFDIfDirectlyConnected``, BFD 100 ms x 5; ``--runs``
  failures, median/min/max.
- no_bfd (``--baseline N``): N failures without BFD: the BGP hold time decides (BIRD's
  240 s, minus the time since the last keepalive), so each takes minutes.
- *_bird_restart_gap: node1's BIRD is killed (SIGKILL) and restarted by calico-node;
  *_agent_restart_gap: node1's calico-node is restarted (SIGTERM, BIRD leaves with
  ``graceful restart``); ``--restarts`` times each, with and without BFD: the seconds
  node2 had no route to node1's block (0: graceful restart kept it; with BFD the agent's
  BFD guard tells these restarts from a dead node, see docs/bgp.md).
Prints a side-by-side table (median, min, max) and writes bench/results/bgp_failover.json.
``--rr`` instead measures a route-reflector lab (node1 reflects for node2 and node3, BFD on
the reflector sessions): node2's link cut seen on node3 (which learns node2's block only via
the reflector), and node3's route gap when BIRD is killed on node2 and on the reflector;
writes bench/results/bgp_failover_rr.json. Needs root; the lab is always taken down.
Usage: python bench/bgp_failover.py [--runs 5] [--restarts 5] [--baseline N] [--rr]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import Lab, wait_for  # noqa: E402
from tests.e2e.failover import restore_link, route_gaps, withdrawal_time  # noqa: E402

BFD = """
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeMeshFailureDetectionMode: %s}
---
apiVersion: projectcalico.org/v3
kind: BFDConfiguration
metadata: {name: bench}
spec: {interfaces: [{matchPattern: eth0, idleSendInterval: 1s}]}
"""

# Seconds a BIRD restart is watched: BIRD's startup delay after flaps grows up to 30 s
# ("error wait time 5,30"), so a gap can be that long; longer ones are reported as inf.
RESTART_WATCH = 40.0


def _block(lab: Lab) -> str:
    pod = next(p for p in lab.state()["pods"] if p["node"] == "node1")
    ip = ipaddress.ip_address(pod["ips"][0].split("/")[0])
    return str(ipaddress.ip_network(f"{ip}/26", strict=False))


def _failures(lab: Lab, mode: str, runs: int, limit: float) -> list[float]:
    lab.run("calicoctl", "--name", lab.name, "apply", "-f", "-", input=BFD % mode)
    block = _block(lab)
    sock = str(lab.dir / lab.name / "node2" / "bird.ctl")

    def routed() -> bool:
        return "via 198.18.0.1" in lab.exec("node2", "ip", "route", "show", block).stdout

    def bfd_up() -> bool:
        out = lab.exec("node2", "birdc", "-s", sock, "show", "bfd", "sessions").stdout
        return out.count(" Up ") == 2

    out = []
    for _ in range(runs):
        if not wait_for(routed, 60, 0.5):
            raise SystemExit(f"{block} not routed on node2")
        if mode != "None" and not wait_for(bfd_up, 30, 0.5):
            raise SystemExit("BFD sessions not up on node2")
        out.append(withdrawal_time(lab, "node1", "node2", block, limit))
        print(f"  {mode}: {out[-1]:.3f} s", flush=True)
        restore_link(lab, "node1")
    return out


def _established(lab: Lab) -> bool:
    sock = str(lab.dir / lab.name / "node2" / "bird.ctl")
    out = lab.exec("node2", "birdc", "-s", sock, "show", "protocols", "Mesh_198_18_0_1").stdout
    return "Established" in out


def _restart_gaps(lab: Lab, mode: str, what: str, runs: int) -> list[float]:
    """Seconds node2 had no route to node1's block while node1's BIRD was killed (SIGKILL)
    and restarted by its calico-node (``what`` = bird) or node1's calico-node was restarted
    (``what`` = agent); 0 when graceful restart kept it."""
    block = _block(lab)
    pidfile = lab.dir / lab.name / "node1" / "bird.pid"

    def routed() -> bool:
        return "via 198.18.0.1" in lab.exec("node2", "ip", "route", "show", block).stdout

    def fault() -> None:
        if what == "bird":
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        else:
            lab.run("node", "restart", "node1")

    out = []
    for _ in range(runs):
        if not wait_for(lambda: routed() and _established(lab), 60, 0.5):
            raise SystemExit(f"{block} not routed on node2")
        time.sleep(3)  # BFD settled
        out.append(route_gaps(lab, ["node2"], block, fault, RESTART_WATCH)["node2"])
        print(f"  {mode}: {what} restart gap {out[-1]:.3f} s", flush=True)
    return out


def _rr_settled(lab: Lab, block: str) -> bool:
    """Every BGP session Established, every BFD session Up, node2's block routed on node3."""
    nodes = lab.status()["nodes"]
    if not all(b.get("info") == "Established" for n in nodes for b in n.get("bgp") or []):
        return False
    for n in ("node1", "node2", "node3"):
        sock = str(lab.dir / lab.name / n / "bird.ctl")
        out = lab.exec(n, "birdc", "-s", sock, "show", "bfd", "sessions", check=False).stdout
        if " Up " not in out or " Down " in out or " Init " in out:
            return False
    return "via 198.18.0.2" in lab.exec("node3", "ip", "route", "show", block).stdout


def _rr(lab: Lab, runs: int, restarts: int) -> dict[str, dict[str, Any]]:
    lab.run("calicoctl", "--name", lab.name, "apply", "-f", "-", input=BFD.split("---")[1])
    lab.run("calicoctl", "--name", lab.name, "patch", "bgppeer", "peer-with-route-reflectors",
            "-p", '{"spec":{"failureDetectionMode":"BFDIfDirectlyConnected"}}')  # fmt: skip
    pod = next(p for p in lab.state()["pods"] if p["node"] == "node2")
    ip = ipaddress.ip_address(pod["ips"][0].split("/")[0])
    block = str(ipaddress.ip_network(f"{ip}/26", strict=False))
    result = {}
    out = []
    for _ in range(runs):
        if not wait_for(lambda: _rr_settled(lab, block), 90, 0.5):
            raise SystemExit("RR lab not settled")
        out.append(withdrawal_time(lab, "node2", "node3", block, 10))
        print(f"  RR: node2 link cut, withdrawn on node3 in {out[-1]:.3f} s", flush=True)
        restore_link(lab, "node2")
    result["rr_bfd"] = _summary(out)
    for victim, key in (("node2", "client"), ("node1", "reflector")):
        pidfile = lab.dir / lab.name / victim / "bird.pid"
        gaps = []
        for _ in range(restarts):
            if not wait_for(lambda: _rr_settled(lab, block), 90, 0.5):
                raise SystemExit("RR lab not settled")
            time.sleep(1)

            def kill(pf: Path = pidfile) -> None:
                os.kill(int(pf.read_text().split()[0]), signal.SIGKILL)

            gaps.append(route_gaps(lab, ["node3"], block, kill, RESTART_WATCH)["node3"])
            print(f"  RR: BIRD kill on {victim}, node3 gap {gaps[-1]:.3f} s", flush=True)
        result[f"rr_bfd_{key}_bird_restart_gap"] = _summary(gaps)
    return result


def _summary(runs: list[float]) -> dict[str, Any]:
    return {"runs": runs, "median_s": statistics.median(runs), "min_s": min(runs),
            "max_s": max(runs)}  # fmt: skip


def _table(result: dict[str, dict[str, Any]]) -> str:
    rows = [("failover (link cut)", "bfd", "no_bfd")]
    rows += [(f"{w} restart gap", f"bfd_{w}_restart_gap", f"no_bfd_{w}_restart_gap")
             for w in ("bird", "agent")]  # fmt: skip

    def cell(key: str) -> str:
        r = result.get(key)
        if r is None:
            return "not run"
        return f"{r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}, n={len(r['runs'])})"

    out = [f"{'seconds: median (min-max)':<26} {'with BFD':<30} without BFD"]
    out += [f"{name:<26} {cell(a):<30} {cell(b)}" for name, a, b in rows]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline", type=int, default=0, help="failures without BFD (minutes each)")
    ap.add_argument("--restarts", type=int, default=5, help="restarts per kind and mode")
    ap.add_argument("--rr", action="store_true", help="route-reflector lab instead")
    args = ap.parse_args()
    if args.rr:
        return _main_rr(args.runs, args.restarts)
    lab_dir = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    lab = Lab(f"bfo{os.getpid() % 1000}", lab_dir)
    result: dict[str, dict[str, Any]] = {}
    try:
        lab.up("--nodes", "3", timeout=90)
        for i in (1, 2, 3):
            lab.pod(f"node{i}", f"default/p{i}")
        bfd = _failures(lab, "BFDIfDirectlyConnected", args.runs, 10)
        result["bfd"] = _summary(bfd)
        for what in ("bird", "agent"):
            result[f"bfd_{what}_restart_gap"] = _summary(
                _restart_gaps(lab, "BFDIfDirectlyConnected", what, args.restarts)
            )
        lab.run("calicoctl", "--name", lab.name, "apply", "-f", "-", input=BFD % "None")
        time.sleep(10)  # the sessions restart without BFD (multihop again) and re-learn
        for what in ("bird", "agent"):
            result[f"no_bfd_{what}_restart_gap"] = _summary(
                _restart_gaps(lab, "None", what, args.restarts)
            )
        if args.baseline:
            result["no_bfd"] = _summary(_failures(lab, "None", args.baseline, 330))
    finally:
        lab.down()
        shutil.rmtree(lab_dir, ignore_errors=True)
    print(_table(result))
    (ROOT / "bench" / "results" / "bgp_failover.json").write_text(json.dumps(result, indent=2))


def _main_rr(runs: int, restarts: int) -> None:
    lab_dir = Path(tempfile.mkdtemp(prefix="bench-failover-rr-"))
    lab = Lab(f"bfr{os.getpid() % 1000}", lab_dir)
    try:
        lab.up("--nodes", "3", "--route-reflectors", "1", timeout=90)
        for i in (2, 3):
            lab.pod(f"node{i}", f"default/p{i}")
        result = _rr(lab, runs, restarts)
    finally:
        lab.down()
        shutil.rmtree(lab_dir, ignore_errors=True)
    for key, r in result.items():
        print(
            f"{key:<38} {r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}, n={len(r['runs'])})"
        )
    path = ROOT / "bench" / "results" / "bgp_failover_rr.json"
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
