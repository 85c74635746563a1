"""The one reporting path of every bench: ABAB interleaving, ratio statistics, figures.

Owns: how a ratio is measured (system and baseline interleaved A,B,A,B,... for at least
``MIN_ROUNDS`` rounds, the ratio taken per round and summarised by median, quartiles and
min-max), the figure record every bench writes, the machine description and the part files
``bench/results/parts/<bench>.json`` that ``bench/run.py`` merges into one results file.

Invariants: a figure's ``ratio`` is always system / baseline of the same round, whatever the
unit; ``better`` says whether higher or lower is better so a target reads the same way
(``>=`` for higher-is-better, ``<=`` for lower-is-better). Nothing here times itself or
touches the network; it is pure bookkeeping so it can be unit tested.

``BENCH_QUICK=1`` in the environment asks every bench for its quick variant (``quick()``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PARTS = ROOT / "bench" / "results" / "parts"
MIN_ROUNDS = 5


def stop_process(proc: subprocess.Popen[Any], wait_s: float = 5.0) -> None:
    """Terminate ``proc`` (if still running) and reap it; killed when it has not exited
    within ``wait_s`` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (0.0 once it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def quick() -> bool:
    """True when the run is the quick look (``make bench QUICK=1``)."""
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (``q`` in [0, 1]) of a non-empty sequence."""
    if not xs:
        raise ValueError("quantile of no values")
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def spread(xs: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and min-max of ``xs``."""
    return {
        "median": statistics.median(xs),
        "q1": quantile(xs, 0.25),
        "q3": quantile(xs, 0.75),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
    }


def ratio_stats(system: Sequence[float], baseline: Sequence[float]) -> dict[str, float]:
    """Per-round ratios system[i] / baseline[i], summarised (median, IQR, min-max)."""
    if len(system) != len(baseline):
        raise ValueError(f"rounds differ: {len(system)} system vs {len(baseline)} baseline")
    if not system:
        raise ValueError("no rounds")
    if any(b == 0 for b in baseline):
        raise ValueError("baseline sample of 0: ratio undefined")
    return spread([a / b for a, b in zip(system, baseline, strict=True)])


@dataclass
class Abab:
    """Samples of one interleaved comparison; ``system[i]`` and ``baseline[i]`` are one round."""

    system: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)

    def ratio(self) -> dict[str, float]:
        return ratio_stats(self.system, self.baseline)


def abab(
    system: Callable[[], float],
    baseline: Callable[[], float],
    rounds: int = MIN_ROUNDS,
    tick: Callable[[], None] | None = None,
) -> Abab:
    """Run ``system`` and ``baseline`` alternately (A,B,A,B,...) ``rounds`` times.

    Each call returns one sample. Rounds alternate which side goes first (AB, BA, AB, ...) so
    a slow drift of the machine's load does not favour one side. ``tick`` is called after
    every round (progress display).
    """
    rounds = max(rounds, MIN_ROUNDS)
    out = Abab()
    for i in range(rounds):
        if i % 2 == 0:
            a = system()
            b = baseline()
        else:
            b = baseline()
            a = system()
        out.system.append(a)
        out.baseline.append(b)
        if tick:
            tick()
    return out


def interleave(
    sides: dict[str, Callable[[], float]],
    rounds: int = MIN_ROUNDS,
    tick: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Like :func:`abab` for any number of sides (system and several baselines): each round
    runs every side once, the order rotating by one each round; samples per side name."""
    rounds = max(rounds, MIN_ROUNDS)
    names = list(sides)
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            out[n].append(sides[n]())
        if tick:
            tick()
    return out


def pair(samples: dict[str, list[float]], system: str, baseline: str) -> Abab:
    """The :class:`Abab` of two sides of one :func:`interleave` run."""
    return Abab(list(samples[system]), list(samples[baseline]))


def figure(
    fid: str,
    title: str,
    unit: str,
    result: Abab,
    *,
    system: str,
    baseline: str,
    command: str,
    better: str = "higher",
    note: str = "",
) -> dict[str, Any]:
    """The record of one ratio figure, as stored in the results file."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better: must be 'higher' or 'lower', not {better!r}")
    return {
        "id": fid,
        "title": title,
        "unit": unit,
        "better": better,
        "system": system,
        "baseline": baseline,
        "system_samples": [round(x, 6) for x in result.system],
        "baseline_samples": [round(x, 6) for x in result.baseline],
        "system_stats": spread(result.system),
        "baseline_stats": spread(result.baseline),
        "ratio": result.ratio(),
        "command": command,
        "note": note,
    }


def value(
    fid: str,
    title: str,
    unit: str,
    samples: Sequence[float],
    *,
    command: str,
    better: str = "lower",
    note: str = "",
) -> dict[str, Any]:
    """The record of an absolute figure (no baseline: RSS, update latency, ...)."""
    return {
        "id": fid,
        "title": title,
        "unit": unit,
        "better": better,
        "samples": [round(x, 6) for x in samples],
        "stats": spread(list(samples)),
        "command": command,
        "note": note,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """CPU, cores, kernel, Python and the load average now."""
    return {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_part(bench: str, figures: list[dict[str, Any]], **extra: Any) -> Path:
    """Write this bench's figures (and the load before/after) for ``bench/run.py``."""
    PARTS.mkdir(parents=True, exist_ok=True)
    path = PARTS / f"{bench}.json"
    doc = {"bench": bench, "quick": quick(), "machine_at_end": machine(), "figures": figures}
    doc.update(extra)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path
