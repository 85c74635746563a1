"""Opt-in heap tracing of a long-running process (a diagnostic, off by default).

With ``CALICO_MEMTRACE_DIR=<dir>`` in its environment, calico-node starts :mod:`tracemalloc`
(``CALICO_MEMTRACE_FRAMES`` frames per allocation, default 12) and, on ``SIGUSR2``, runs a
full garbage collection and writes a snapshot to ``<dir>/<pid>-<n>.snap`` (``n`` counts from
0). Compare two snapshots with ``python -m pycalico.diag.memtrace OLD NEW``: the biggest
growth by traceback, which is how per-pod or per-policy state that is never pruned shows up.
Tracing costs CPU and memory (expect the RSS to roughly double); never leave it on.

Without the variable nothing is started and no signal handler is installed.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import signal
import sys
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

ENV_DIR = "CALICO_MEMTRACE_DIR"
ENV_FRAMES = "CALICO_MEMTRACE_FRAMES"


def install(env: Mapping[str, str]) -> Path | None:
    """Start tracing and install the ``SIGUSR2`` dump handler when ``env`` asks for it;
    returns the snapshot directory (None when tracing is off)."""
    where = env.get(ENV_DIR, "")
    if not where:
        return None
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    try:
        frames = max(1, int(env.get(ENV_FRAMES, "12")))
    except ValueError:
        frames = 12
    tracemalloc.start(frames)
    counter = itertools.count()

    def dump(_sig: int, _frame: FrameType | None) -> None:
        path = out / f"{os.getpid()}-{next(counter)}.snap"
        try:
            snapshot(path)
        except OSError as e:
            log.warning("memtrace: cannot write %s: %s", path, e)

    signal.signal(signal.SIGUSR2, dump)
    log.warning("memtrace: tracing allocations (%d frames); SIGUSR2 dumps to %s", frames, out)
    return out


def snapshot(path: Path) -> None:
    """Collect garbage and write a tracemalloc snapshot (tracing must be on)."""
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),)
    )
    tmp = path.with_suffix(".tmp")
    snap.dump(str(tmp))
    tmp.replace(path)
    size, peak = tracemalloc.get_traced_memory()
    log.warning("memtrace: %s (traced %.1f MB, peak %.1f MB)", path, size / 2**20, peak / 2**20)


def diff(old: Path, new: Path, top: int = 15, frames: int = 8) -> str:
    """The ``top`` tracebacks that grew most from ``old`` to ``new``, as text."""
    a = tracemalloc.Snapshot.load(str(old))
    b = tracemalloc.Snapshot.load(str(new))
    stats = b.compare_to(a, "traceback")
    total = sum(s.size_diff for s in stats)
    lines = [f"total {total / 1024:+.1f} KiB, {sum(s.count_diff for s in stats):+d} blocks"]
    for s in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:top]:
        lines.append(f"{s.size_diff / 1024:+9.1f} KiB {s.count_diff:+7d} blocks")
        for ln in s.traceback.format(limit=frames, most_recent_first=True):
            lines.append("    " + ln.strip())
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m pycalico.diag.memtrace OLD.snap NEW.snap", file=sys.stderr)
        return 2
    print(diff(Path(argv[0]), Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
