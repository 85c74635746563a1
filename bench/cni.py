"""CNI plugin benchmark: pycalico ``calico`` (+ in-process calico-ipam on sqlite) vs Debian's
reference ``bridge`` and ``ptp`` plugins with ``host-local`` IPAM, in the same run.

pycalico is measured three ways, all installed by ``calico-node install-cni`` into a temp dir,
with ``calico-node cni-server`` running in the host namespace as calico-node would:
``pycalico`` = the C shim forwarding to the server, ``pycalico-py`` = the Python plugin
(no C compiler) forwarding to the server, ``pycalico-exec`` = the Python plugin doing all the
work in-process (no server reachable).

Everything runs inside the bench's own namespaces: a "host" namespace playing the runtime's
namespace (plugins are started with ``nsenter --net=<host>``, the same cost for every
plugin) and one fresh container namespace per ADD. ADDs are interleaved across plugins
(container i of every plugin, then i+1, ...) so background load hits all of them alike;
DELs likewise. Prints p50/p99 per plugin and the pycalico/bridge ratio; writes
``bench/results/cni.json``.

Target: pycalico ADD p50 <= 1.5x bridge's ADD p50.
Usage: ``bench/cni.py [N]`` (default 60 containers per plugin), as root.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.netns import NetnsFactory  # noqa: E402

from pycalico.datastore.sqlite import SqliteDatastore  # noqa: E402
from pycalico.node.install_cni import build_conflist, install  # noqa: E402

BIN = Path(sys.executable).parent
REF = Path("/usr/lib/cni")


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def call(host: str, plugin: str, cmd: str, conf: dict[str, Any], cid: str, netns: str) -> float:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": cmd,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"{BIN}:{REF}",
    }
    t0 = time.perf_counter()
    p = subprocess.run(
        ["nsenter", f"--net=/run/netns/{host}", plugin],
        input=json.dumps(conf).encode(),
        capture_output=True,
        env=env,
    )
    dt = (time.perf_counter() - t0) * 1000
    if p.returncode != 0:
        raise SystemExit(f"{plugin} {cmd} {cid} failed: {p.stdout!r} {p.stderr!r}")
    return dt


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    tmp = Path(tempfile.mkdtemp(prefix="pycalico-bench-cni-"))
    db = str(tmp / "calico.db")
    ds = SqliteDatastore(db)
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "bench-pool"},
            "spec": {"cidr": "10.244.0.0/16", "blockSize": 26},
        }
    )
    ds.close()
    calico_conf = {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "nodename": "bench-node",
        "datastore_type": "sqlite",
        "datastore_path": db,
        "ipam_lock_file": str(tmp / "ipam.lock"),
        "mtu": 1500,
        "ipam": {"type": "calico-ipam"},
    }
    sock = str(tmp / "cni.sock")
    install(str(tmp / "bin"), str(tmp / "net.d"), build_conflist(), socket_path=sock)
    install(str(tmp / "bin-py"), str(tmp / "net.d"), build_conflist(), shim=False, socket_path=sock)
    install(
        str(tmp / "bin-exec"),
        str(tmp / "net.d"),
        build_conflist(),
        shim=False,
        socket_path=str(tmp / "no-server.sock"),
    )
    confs: dict[str, tuple[str, dict[str, Any]]] = {
        "pycalico": (str(tmp / "bin" / "calico"), calico_conf),
        "pycalico-py": (str(tmp / "bin-py" / "calico"), calico_conf),
        "pycalico-exec": (str(tmp / "bin-exec" / "calico"), calico_conf),
        "bridge": (
            str(REF / "bridge"),
            {
                "cniVersion": "1.0.0",
                "name": "benchbr",
                "type": "bridge",
                "bridge": "cnibench0",
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "subnet": "10.88.0.0/16",
                    "dataDir": str(tmp / "hl"),
                },
            },
        ),
        "ptp": (
            str(REF / "ptp"),
            {
                "cniVersion": "1.0.0",
                "name": "benchptp",
                "type": "ptp",
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "subnet": "10.89.0.0/16",
                    "dataDir": str(tmp / "hl"),
                },
            },
        ),
    }
    add: dict[str, list[float]] = {k: [] for k in confs}
    dele: dict[str, list[float]] = {k: [] for k in confs}
    try:
        with NetnsFactory(tag="b") as f:
            ul = f.underlay(1)
            host = ul.nodes[0].name
            server = ul.nodes[0].popen(str(BIN / "calico-node"), "cni-server", "--socket", sock)
            deadline = time.monotonic() + 20
            while not os.path.exists(sock):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("cni-server did not start")
                time.sleep(0.05)
            pods = {k: [f.netns(f"{k[:3]}{i}") for i in range(n)] for k in confs}
            # warm-up (page cache, bridge creation), not measured
            for k, (plugin, conf) in confs.items():
                w = f.netns(f"w{k[:3]}")
                call(host, plugin, "ADD", conf, f"warm{k}", w.path)
                call(host, plugin, "DEL", conf, f"warm{k}", w.path)
            for i in range(n):
                for k, (plugin, conf) in confs.items():
                    add[k].append(call(host, plugin, "ADD", conf, f"{k}{i}", pods[k][i].path))
            for i in range(n):
                for k, (plugin, conf) in confs.items():
                    dele[k].append(call(host, plugin, "DEL", conf, f"{k}{i}", pods[k][i].path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, Any] = {"containers": n, "cpus": os.cpu_count(), "plugins": {}}
    print(f"{'plugin':13} {'ADD p50':>9} {'ADD p99':>9} {'DEL p50':>9} {'DEL p99':>9}  (ms, n={n})")
    for k in confs:
        row = {
            "add_p50_ms": round(statistics.median(add[k]), 2),
            "add_p99_ms": round(pct(add[k], 99), 2),
            "del_p50_ms": round(statistics.median(dele[k]), 2),
            "del_p99_ms": round(pct(dele[k], 99), 2),
        }
        out["plugins"][k] = row
        print(
            f"{k:13} {row['add_p50_ms']:9.1f} {row['add_p99_ms']:9.1f} "
            f"{row['del_p50_ms']:9.1f} {row['del_p99_ms']:9.1f}"
        )
    b = out["plugins"]["bridge"]
    for k in ("pycalico", "pycalico-py", "pycalico-exec"):
        p = out["plugins"][k]
        out[f"ratio_add_p50_vs_bridge[{k}]"] = round(p["add_p50_ms"] / b["add_p50_ms"], 2)
        out[f"ratio_del_p50_vs_bridge[{k}]"] = round(p["del_p50_ms"] / b["del_p50_ms"], 2)
        print(
            f"{k}/bridge ADD p50 ratio: {out[f'ratio_add_p50_vs_bridge[{k}]']} (target <= 1.5);"
            f" DEL: {out[f'ratio_del_p50_vs_bridge[{k}]']}"
        )
    out["target_add_ratio"] = 1.5
    res = ROOT / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "cni.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
