"""``make demo``: a guided tour of pycalico on a real lab cluster.

Brings up three nodes (one of them a BGP route reflector) in network namespaces, adds two pods
per node in two namespaces with the real CNI plugin, shows BGP sessions, routes and the live
reachability matrix, applies a namespace-isolation policy and shows the matrix again — and
checks that the live matrix equals what ``calicoctl policy matrix`` predicts; when Docker is
installed (``docker.io``) the lab runs one dockerd per node and a last step puts real
containers on the cluster and connects them across nodes by name. Tears the lab down
at the end unless ``KEEP=1``. Every step prints the command it runs (through the
process seam :data:`RUNNER`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from pycalico.system.process import ProcessLauncher, SubprocessRunner

LAB = os.environ.get("LAB_NAME", "demo")
BIN = Path(sys.executable).parent
RUNNER: ProcessLauncher = SubprocessRunner()
# the Docker step runs when docker.io is installed (DOCKER=0 skips it)
DOCKER = os.path.exists("/usr/sbin/dockerd") and os.environ.get("DOCKER", "1") != "0"

PODS = [
    ("node1", "shop/web", "app=web"),
    ("node1", "dev/client-a", "app=client"),
    ("node2", "shop/api", "app=api"),
    ("node2", "dev/client-b", "app=client"),
    ("node3", "shop/db", "app=db"),
    ("node3", "dev/client-c", "app=client"),
]

ISOLATION = """\
# Each namespace accepts traffic only from pods of the same namespace.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-namespace-only, namespace: shop}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-namespace-only, namespace: dev}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
"""


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def sh(*args: str, check: bool = True, capture: bool = False, stdin: str | None = None) -> str:
    shown = " ".join(a if " " not in a else repr(a) for a in args)
    print(f"$ {shown}", flush=True)
    argv = [str(BIN / args[0]) if (BIN / args[0]).exists() else args[0], *args[1:]]
    p = RUNNER.run(argv, input=stdin) if capture else RUNNER.run_attached(argv, input=stdin)
    if check and p.returncode != 0:
        if capture or p.stderr:
            print(p.stdout + p.stderr)
        raise SystemExit(f"demo: step failed: {shown}")
    return p.stdout if capture else ""


def live_matrix() -> dict[tuple[str, str], str]:
    out = sh("calico-lab", "matrix", "--name", LAB, "--ports", "80/TCP", "-o", "json",
             capture=True)  # fmt: skip
    return {(p["from"], p["to"]): p["verdict"] for p in json.loads(out)["probes"]}


def predicted_matrix() -> dict[tuple[str, str], str]:
    out = sh("calico-lab", "calicoctl", "--name", LAB, "policy", "matrix", "--ports", "80/TCP",
             "-o", "json", capture=True)  # fmt: skip
    return {(p["from"], p["to"]): p["verdict"] for p in json.loads(out)["probes"]}


def compare() -> None:
    live, model = live_matrix(), predicted_matrix()
    diff = {k: (live.get(k), model.get(k)) for k in live if live.get(k) != model.get(k)}
    allowed = sum(1 for v in live.values() if v == "allow")
    print(f"live probes: {len(live)}, allowed: {allowed}, denied: {len(live) - allowed}")
    if diff:
        print("MISMATCH between the kernel and calicoctl policy matrix:")
        for (a, b), (lv, mv) in sorted(diff.items()):
            print(f"  {a} -> {b}: live={lv} predicted={mv}")
        raise SystemExit("demo: live matrix differs from the policy model")
    print("live matrix == calicoctl policy matrix (every probe agrees)")


def docker_section() -> None:
    """Real Docker containers on the same cluster (the lab runs one dockerd per node)."""
    banner("10. Docker: containers on the Calico network 'calico', on two nodes")
    sh("calico-lab", "run", "--name", LAB, "node1", "default/web", "--", "nc", "-ll", "-p",
       "8080", "-e", "hostname")  # fmt: skip
    sh("calico-lab", "run", "--name", LAB, "node3", "default/cli", "--", "sleep", "3600")
    sh("calico-lab", "calicoctl", "--name", LAB, "get", "workloadendpoints", "-n", "libnetwork")
    print("cli (node3) finds web (node1) through pycalico's DNS and connects across nodes:")
    sh("calico-lab", "docker", "--name", LAB, "node3", "exec", "cli", "nslookup", "web")
    sh("calico-lab", "docker", "--name", LAB, "node3", "exec", "cli", "sh", "-c",
       "for i in 1 2 3 4 5; do nc -w 2 web 8080 </dev/null && break; sleep 1; done")  # fmt: skip


def main() -> None:
    t0 = time.monotonic()
    print("pycalico demo: a pure layer-3 container network on one machine.")
    print("Each node is a network namespace running calico-node (Felix on nftables + BIRD).")
    sh("calico-lab", "down", "--name", LAB, check=False, capture=True)
    try:
        banner("1. Bring up 3 nodes; node1 is a BGP route reflector (node-to-node mesh off)")
        sh("calico-lab", "up", "--name", LAB, "--nodes", "3", "--route-reflectors", "1",
           *(["--runtime", "docker"] if DOCKER else []))  # fmt: skip

        banner("2. Two pods per node, in namespaces 'shop' and 'dev' (real CNI plugin calls)")
        for node, key, labels in PODS:
            sh("calico-lab", "pod", "add", node, key, "--labels", labels, "--ports",
               "80/TCP,80/UDP", "--name", LAB)  # fmt: skip

        banner("3. Cluster status and BGP sessions (2 sessions to the reflector, none between "
               "clients)")  # fmt: skip
        sh("calico-lab", "status", "--name", LAB)

        banner("4. Routes on node2: one route per remote block, a blackhole for its own")
        sh("calico-lab", "exec", "--name", LAB, "node2", "--", "ip", "route")

        banner("5. Pods find each other by name (workload DNS served by calico-node)")
        sh("calico-lab", "exec", "--name", LAB, "shop/web", "--", "getent", "hosts", "db")
        sh("calico-lab", "exec", "--name", LAB, "shop/web", "--", "getent", "hosts",
           "client-c.dev")  # fmt: skip

        banner("6. Live reachability (TCP 80) before any policy: everything is allowed")
        sh("calico-lab", "matrix", "--name", LAB, "--ports", "80/TCP")
        compare()

        banner("7. Apply a namespace-isolation policy (Kubernetes NetworkPolicy)")
        print(ISOLATION)
        sh("calico-lab", "apply", "--name", LAB, "-f", "-", stdin=ISOLATION)
        time.sleep(1.0)

        banner("8. Live reachability after the policy: only same-namespace traffic passes")
        sh("calico-lab", "matrix", "--name", LAB, "--ports", "80/TCP")
        compare()

        banner("9. Why? Ask the policy model")
        sh("calico-lab", "calicoctl", "--name", LAB, "policy", "explain", "--from",
           "dev/client-a", "--to", "shop/web", "--port", "80", "--protocol", "TCP")  # fmt: skip
        if DOCKER:
            docker_section()
    finally:
        if os.environ.get("KEEP") == "1":
            banner(f"KEEP=1: lab '{LAB}' left running (calico-lab down --name {LAB})")
        else:
            banner("Tear down")
            sh("calico-lab", "down", "--name", LAB, check=False)
    print(f"\ndemo finished in {time.monotonic() - t0:.0f}s")


if __name__ == "__main__":
    main()
