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

Reports through :mod:`harness`: the containers are split into >= 5 rounds, the order of the
plugins rotates per container, and each ratio is the per-round median of pycalico over the
per-round median of bridge (median, IQR, min-max over rounds).
Targets (issue 18): ADD p50 <= 1.0x bridge on the fast path (shim + server), <= 3x for the
fallback with no server. ``--before-src DIR`` adds ``pycalico-exec-before``: the same fallback
plugin running the pycalico source tree in DIR (e.g. ``git archive <rev> src``), so an
import-path change is measured before/after in one interleaved run; ``--importtime`` records
``python -X importtime`` of one fallback ADD (and of the before tree).
Usage: ``bench/cni.py [N] [--before-src DIR] [--importtime]`` (default N 60, QUICK 15), as root.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
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
sys.path.insert(0, str(ROOT / "bench"))

from tests.fixtures.netns import NetnsFactory  # noqa: E402

import harness  # noqa: E402
from pycalico.datastore.sqlite import SqliteDatastore  # noqa: E402
from pycalico.node.install_cni import build_conflist, install  # noqa: E402

BIN = Path(sys.executable).parent
REF = Path("/usr/lib/cni")


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def call(
    host: str,
    plugin: str,
    cmd: str,
    conf: dict[str, Any],
    cid: str,
    netns: str,
    importtime: Path | None = None,
) -> float:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": cmd,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"{BIN}:{REF}",
    }
    if importtime:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
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
    if importtime:
        importtime.write_bytes(p.stderr)
    return dt


def import_summary(text: str, top: int = 12) -> dict[str, Any]:
    """Total import time of a ``-X importtime`` log (sum of top-level cumulative times) and
    its most expensive modules by cumulative time."""
    rows = []
    total = 0
    for line in text.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if not m:
            continue
        cum, depth, mod = int(m.group(2)), len(m.group(3)), m.group(4)
        if depth == 0:
            total += cum
        rows.append((cum, depth, mod))
    rows.sort(reverse=True)
    return {
        "modules": len(rows),
        "total_ms": round(total / 1000, 1),
        "top": [{"module": mod, "cumulative_ms": round(c / 1000, 1)} for c, _, mod in rows[:top]],
    }


def before_tree(rev: str, tmp: Path) -> str:
    """``git archive <rev> src`` unpacked under ``tmp``; the src path."""
    arch = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True,
                          check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=arch, check=True)
    return str(tmp / "src")


def before_wrapper(bin_dir: Path, before_src: str) -> str:
    """A fallback ``calico`` wrapper importing pycalico from ``before_src``."""
    import pycalico

    text = (bin_dir / "calico").read_text()
    mine = str(Path(pycalico.__file__).resolve().parent.parent)
    out = bin_dir.parent / "bin-before" / "calico"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text.replace(repr(mine), repr(str(Path(before_src).resolve()))))
    out.chmod(0o755)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=15 if harness.quick() else 60)
    ap.add_argument("--before-src", default="", help="pycalico src tree for the before plugin")
    ap.add_argument("--before-rev", default="", help="git rev: its src is the before tree")
    ap.add_argument("--importtime", action="store_true")
    args = ap.parse_args()
    n = max(args.n, harness.MIN_ROUNDS)
    if args.before_rev:
        before_dir = tempfile.mkdtemp(prefix="bench-before-")
        atexit.register(shutil.rmtree, before_dir, True)
        args.before_src = before_tree(args.before_rev, Path(before_dir))
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
    if args.before_src:
        confs["pycalico-exec-before"] = (before_wrapper(tmp / "bin-exec", args.before_src),
                                         calico_conf)  # fmt: skip
    imports: dict[str, Any] = {}
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
            if args.importtime:
                # -X importtime of one ADD per side, interleaved over rounds (one sample of a
                # loaded machine says little); the summary shown is the median round's.
                sides = [k for k in ("pycalico-exec", "pycalico-exec-before") if k in confs]
                runs: dict[str, list[dict[str, Any]]] = {k: [] for k in sides}
                for r in range(harness.MIN_ROUNDS):
                    for k in sides if r % 2 == 0 else sides[::-1]:
                        w = f.netns(f"i{r}{k[-6:]}")
                        log = tmp / f"importtime-{k}.txt"
                        call(host, confs[k][0], "ADD", confs[k][1], f"imp{r}{k}", w.path, log)
                        call(host, confs[k][0], "DEL", confs[k][1], f"imp{r}{k}", w.path)
                        runs[k].append(import_summary(log.read_text(errors="replace")))
                for k, rs in runs.items():
                    totals = [x["total_ms"] for x in rs]
                    mid = sorted(rs, key=lambda x: x["total_ms"])[len(rs) // 2]
                    imports[k] = dict(mid, total_ms_samples=totals)
            names = list(confs)
            for cmd, acc in (("ADD", add), ("DEL", dele)):
                for i in range(n):
                    # rotate the order per container: no plugin always goes first
                    for k in names[i % len(names) :] + names[: i % len(names)]:
                        plugin, conf = confs[k]
                        acc[k].append(call(host, plugin, cmd, conf, f"{k}{i}", pods[k][i].path))
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
            f"{k}/bridge ADD p50 ratio: {out[f'ratio_add_p50_vs_bridge[{k}]']};"
            f" DEL: {out[f'ratio_del_p50_vs_bridge[{k}]']}"
        )
    out["target_add_ratio"] = {"fast path": 1.0, "fallback": 3.0}  # issue 18
    out["importtime"] = imports
    res = ROOT / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "cni.json").write_text(json.dumps(out, indent=2) + "\n")
    args.import_samples = {k: v["total_ms_samples"] for k, v in imports.items()}
    harness.write_part("cni", figures(add, dele, n, args), importtime=imports, raw=out)


def rounds_of(xs: list[float], rounds: int) -> list[float]:
    """Per-round medians of consecutive chunks of ``xs``."""
    size = len(xs) // rounds
    return [statistics.median(xs[r * size : (r + 1) * size]) for r in range(rounds)]


def figures(
    add: dict[str, list[float]], dele: dict[str, list[float]], n: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    rounds = harness.MIN_ROUNDS
    cmd = f"python bench/cni.py {n}"
    if args.before_rev:
        cmd += f" --before-rev {args.before_rev}"
    elif args.before_src:
        cmd += " --before-src <dir>"
    if args.importtime:
        cmd += " --importtime"
    out = []
    pairs = [
        ("add.fast_path", add, "pycalico", "bridge", "CNI ADD, fast path (C shim + cni-server)"),
        ("add.fallback", add, "pycalico-exec", "bridge", "CNI ADD, fallback (no cni-server)"),
        ("add.python_plugin", add, "pycalico-py", "bridge", "CNI ADD, Python plugin + server"),
        ("add.fast_path_vs_ptp", add, "pycalico", "ptp", "CNI ADD, fast path vs ptp"),
        ("del.fast_path", dele, "pycalico", "bridge", "CNI DEL, fast path"),
        ("del.fallback", dele, "pycalico-exec", "bridge", "CNI DEL, fallback (no cni-server)"),
    ]
    if "pycalico-exec-before" in add:
        pairs += [
            ("add.fallback_after_vs_before", add, "pycalico-exec", "pycalico-exec-before",
             "CNI ADD fallback: this tree vs the before tree (import-path cut)"),
            ("add.fallback_before", add, "pycalico-exec-before", "bridge",
             "CNI ADD, fallback before the import-path cut"),
        ]  # fmt: skip
    imp = getattr(args, "import_samples", {})
    if len(imp) == 2:
        res = harness.Abab(imp["pycalico-exec"], imp["pycalico-exec-before"])
        out.append(harness.figure(
            "cni.import.fallback_after_vs_before",
            "CNI fallback ADD: total import time (-X importtime), this tree vs the before tree",
            "ms", res, system="pycalico-exec", baseline="pycalico-exec-before", command=cmd,
            better="lower"))  # fmt: skip
    for fid, acc, sysk, basek, title in pairs:
        result = harness.Abab(rounds_of(acc[sysk], rounds), rounds_of(acc[basek], rounds))
        unit = "ms (per-round median)"
        fig = harness.figure(f"cni.{fid}", title, unit, result, system=sysk, baseline=basek,
                             command=cmd, better="lower")  # fmt: skip
        out.append(fig)
    return out


if __name__ == "__main__":
    main()
