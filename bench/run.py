"""``make bench``: run every bench in bench/, then write the results file, plots, BENCHMARKS.md.

Owns: the list of benches and their quick variants, the progress display (rich), the merged
results document ``bench/results/<date>-<host>.json`` (machine, load before/after, every
bench's part written through :mod:`harness`, and the JSON of benches that report only their
own file) and regenerating ``BENCHMARKS.md`` with ``bench/report.py``.

Invariants: each bench runs as its own process (a crash is reported with its log and stops
the run with a non-zero exit); a whole run first removes the parts of earlier runs, so the
document holds only this run's figures (``--only`` keeps the other benches' parts: each part
carries its own time and load, shown in BENCHMARKS.md). ``--quick`` (``make bench QUICK=1``) sets
``BENCH_QUICK=1`` for every bench and runs only the quick set (< 5 minutes).
``--only a,b`` runs a subset and ``--report-only`` regenerates from the existing parts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402
import report  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LOGS = RESULTS / "logs"
PLOTS = RESULTS / "plots"

# name, argv after the script, in the quick set, reports through harness
BENCHES: list[tuple[str, list[str], bool, bool]] = [
    ("dataplane", [], True, True),
    ("cni", ["--importtime"], True, True),
    ("policy", [], True, True),
    ("lab", [], True, True),
    ("policy_calc", [], False, False),
    ("ipam", [], False, False),
    ("datastore", [], False, False),
    ("dns", [], False, False),
    ("selector", [], False, False),
    ("block_route", [], False, False),
    ("bgp", [], False, False),
    ("staged_calc", [], False, False),
    ("flows", [], False, True),
    ("docker", [], False, False),
    ("console", [], False, False),
    ("churn", [], False, False),
    ("bgp_failover", ["--baseline"], False, False),
    ("tcguard", [], False, True),
]
FULL_EXTRA = {"lab": ["--sizes", "10,20,40,60"]}


def run_one(
    name: str, argv: list[str], env: dict[str, str], progress: Progress, task: Any
) -> tuple[int, float]:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}.log"
    t0 = time.monotonic()
    cmd = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *argv]
    with log.open("w") as fh:
        fh.write(" ".join(cmd) + "\n")
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
        assert p.stdout is not None
        rounds = 0
        for line in p.stdout:
            fh.write(line)
            if line.startswith("round"):
                rounds += 1
                line = f"{rounds} interleaved rounds done"
            progress.update(task, description=f"[bold]{name}[/]: {line.strip()[:70]}")
        rc = p.wait()
    return rc, time.monotonic() - t0


def collect(
    names: list[str], quick: bool, command: str, started: str, load0: list[float]
) -> dict[str, Any]:
    parts = {}
    for f in sorted(harness.PARTS.glob("*.json")):
        parts[f.stem] = json.loads(f.read_text())
    legacy = {}
    for name, _, _, via_harness in BENCHES:
        f = RESULTS / f"{name}.json"
        if name in names and not via_harness and f.exists():
            legacy[name] = json.loads(f.read_text())
    return {
        "machine": harness.machine(),
        "quick": quick,
        "command": command,
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load": {"before": load0, "after": [round(x, 2) for x in os.getloadavg()]},
        "parts": parts,
        "legacy": legacy,
    }


def write_report(results: dict[str, Any]) -> Path:
    stem = f"{time.strftime('%Y-%m-%d', time.gmtime())}-{platform.node()}"
    out = RESULTS / f"{stem}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    plots = report.plot(results, PLOTS, stem)
    rel = [str(p.relative_to(ROOT)) for p in plots]
    (ROOT / "BENCHMARKS.md").write_text(report.render(results, rel))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--cni-before", default="", help="git rev for the CNI before/after plugin")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    quick = args.quick or harness.quick()
    env = dict(os.environ, BENCH_QUICK="1" if quick else "0")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    only = set(args.only.split(",")) - {""}
    chosen = [b for b in BENCHES if (b[2] or not quick) and (not only or b[0] in only)]
    names = [b[0] for b in chosen]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load0 = [round(x, 2) for x in os.getloadavg()]
    command = "make bench" + (" QUICK=1" if quick else "")
    if args.only:
        command = f"python bench/run.py {'--quick ' if quick else ''}--only {args.only}"
    if args.report_only:
        command = "python bench/run.py --report-only (the parts' own runs: see below)"
    console = Console()
    failed: list[str] = []
    if not args.report_only:
        if not only:
            shutil.rmtree(harness.PARTS, ignore_errors=True)
        cols = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())  # fmt: skip
        with Progress(*cols, console=console) as progress:
            overall = progress.add_task("benches", total=len(chosen))
            for name, argv, _, _ in chosen:
                argv = list(argv)
                if not quick:
                    argv += FULL_EXTRA.get(name, [])
                if name == "cni" and args.cni_before:
                    argv += ["--before-rev", args.cni_before]
                task = progress.add_task(f"[bold]{name}[/]", total=None)
                rc, secs = run_one(name, argv, env, progress, task)
                status = "ok" if rc == 0 else f"FAILED rc={rc} (see {LOGS}/{name}.log)"
                progress.update(task, description=f"[bold]{name}[/]: {status} in {secs:.0f}s",
                                total=1, completed=1)  # fmt: skip
                progress.advance(overall)
                if rc != 0:
                    failed.append(name)
                    break
    results = collect(names, quick, command, started, load0)
    out = write_report(results)
    for row in report.target_rows(results):
        console.print(f"{row['status']:>12}  {row['target']}: {row['measured']}")
    console.print(f"wrote {out.relative_to(ROOT)} and BENCHMARKS.md")
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}[/]")
        sys.exit(1)


if __name__ == "__main__":
    main()
