"""Docker benchmark: ``docker run --net <calico network>`` start-to-first-packet vs Docker's own
``bridge`` driver, same dockerd, same run.

One node namespace (on the bench's own underlay) runs calico-node (Felix, the ``calico`` and
``calico-ipam`` Docker drivers, sqlite datastore) and one dockerd (vfs, ``--iptables=false``,
in a private mount namespace; see :mod:`tests.fixtures.docker`). Two networks on that dockerd:
``cal`` (driver calico, a /24 Calico pool) and ``br`` (Docker's bridge driver, a bridge inside
the node namespace). On each a server container answers TCP 8080. One sample = the wall time
of ``docker run --net X bb sh -c 'until nc -w 1 SERVER 8080; do :; done'`` (attached, so it
ends once the new container's first connection got an answer: create, IPAM, endpoint, veth,
Felix policy for the new endpoint, start, first packet and reply, exit). Samples interleave
ABAB (cal, br, cal, br ...) so background load hits both alike; containers are removed
untimed. Prints p50/p90 per network and the ratio; writes ``bench/results/docker.json``.

Target (issue 14): calico p50 <= 1.2x bridge p50.
Usage: ``bench/docker.py [N]`` (default 15 samples per network), as root.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.docker import (  # noqa: E402
    IMAGE,
    Dockerd,
    available,
    import_busybox,
    libnetwork_node_env,
)
from tests.fixtures.netns import NetnsFactory  # noqa: E402

BIN = Path(sys.executable).parent
POOL = "10.81.0.0/24"
BRIDGE = "172.31.250.0/24"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    if not available():
        sys.exit("bench/docker.py: needs docker.io and busybox-static")
    tmp = Path(tempfile.mkdtemp(prefix="bench-docker-"))
    factory = NetnsFactory("bdk")
    node_proc: subprocess.Popen[str] | None = None
    d: Dockerd | None = None
    try:
        ns = factory.underlay(1).nodes[0]
        env = libnetwork_node_env("bnode", tmp, POOL)
        log = open(tmp / "calico-node.log", "a")  # noqa: SIM115 - closed below
        node_proc = ns.popen(str(BIN / "calico-node"), "run", env=env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 60
        while not (tmp / "plugins" / "calico.sock").exists():
            if time.monotonic() > deadline or node_proc.poll() is not None:
                sys.exit(f"calico-node did not start: {(tmp / 'calico-node.log').read_text()}")
            time.sleep(0.2)
        d = Dockerd(ns, tmp / "d", tmp / "plugins")
        d.start()
        import_busybox(d)
        d("network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam",
          "--subnet", POOL, "cal")  # fmt: skip
        d("network", "create", "--driver", "bridge", "--subnet", BRIDGE, "br")
        servers = {}
        for net in ("cal", "br"):
            d("run", "-d", "--name", f"srv-{net}", "--net", net, IMAGE, "nc", "-ll", "-p",
              "8080", "-e", "hostname")  # fmt: skip
            servers[net] = d.out(
                "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                f"srv-{net}",
            )  # fmt: skip
        samples: dict[str, list[float]] = {"cal": [], "br": []}
        for i in range(n + 1):  # the first round warms caches and is not counted
            for net in ("cal", "br"):
                name = f"c{i}-{net}"
                script = f"until nc -w 1 {servers[net]} 8080 </dev/null; do :; done"
                t0 = time.perf_counter()
                d("run", "--name", name, "--net", net, IMAGE, "sh", "-c", script, timeout=120)
                dt = time.perf_counter() - t0
                if i:
                    samples[net].append(dt)
                d("rm", "-f", name)
        out = {
            "n": n,
            "calico_p50_s": round(pct(samples["cal"], 50), 4),
            "calico_p90_s": round(pct(samples["cal"], 90), 4),
            "bridge_p50_s": round(pct(samples["br"], 50), 4),
            "bridge_p90_s": round(pct(samples["br"], 90), 4),
        }
        out["ratio_p50"] = round(out["calico_p50_s"] / out["bridge_p50_s"], 3)
        out["target_ratio_p50"] = 1.2
        print(json.dumps(out, indent=2))
        res = ROOT / "bench" / "results"
        res.mkdir(exist_ok=True)
        (res / "docker.json").write_text(json.dumps(out, indent=2) + "\n")
    finally:
        if d is not None:
            d.stop()
        if node_proc is not None and node_proc.poll() is None:
            node_proc.send_signal(signal.SIGTERM)
            try:
                node_proc.wait(15)
            except subprocess.TimeoutExpired:
                node_proc.kill()
        factory.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
