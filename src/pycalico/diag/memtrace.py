"""Opt-in heap tracing of a long-running process (a diagnostic, off by default).

With ``CALICO_MEMTRACE_DIR=<dir>`` in its environment, calico-node starts :mod:`tracemalloc`
(``CALICO_MEMTRACE_FRAMES`` frames per allocation, default 12) and, on ``SIGUSR2``, runs a
full garbage collection and writes a snapshot to ``<dir>/<pid>-<n>.snap`` (``n`` counts from
0). Compare two snapshots with ``python -m pycalico.diag.memtrace OLD NEW``: the biggest
growth by traceback, which is how per-pod or per-policy state that is never pruned shows up.
Tracing costs CPU and memory (expect the RSS to roughly double); never leave it on.

Every dump also writes ``<dir>/<pid>-<n>.json``, where the resident memory goes
(:func:`memory_stats`: RSS, Python's allocated blocks, SQLite's own allocations, glibc
malloc's bytes in use and free in its arenas, and the RSS after ``malloc_trim`` gave the
free memory back). ``CALICO_MEMTRACE_FRAMES=0`` writes only these (no tracing, no cost
between dumps): growth in ``malloc_free_mb`` that ``malloc_trim`` returns is allocator
fragmentation, not a leak.

Without the variable nothing is started and no signal handler is installed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import itertools
import json
import logging
import os
import signal
import sys
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from pycalico.errors import CalicoError

log = logging.getLogger(__name__)

ENV_DIR = "CALICO_MEMTRACE_DIR"
ENV_FRAMES = "CALICO_MEMTRACE_FRAMES"


class MemtraceError(CalicoError):
    """The memtrace settings are unusable (the message names the variable)."""


def install(env: Mapping[str, str]) -> Path | None:
    """Start tracing and install the ``SIGUSR2`` dump handler when ``env`` asks for it;
    returns the snapshot directory (None when tracing is off)."""
    where = env.get(ENV_DIR, "")
    if not where:
        return None
    raw = env.get(ENV_FRAMES, "12").strip()
    if not raw.isdigit():
        raise MemtraceError(f"{ENV_FRAMES}={raw!r}: must be a whole number of frames (0: none)")
    frames = int(raw)
    out = Path(where)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MemtraceError(f"{ENV_DIR}={where}: {e.strerror or e}") from None
    if frames:
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
    """Collect garbage, write a tracemalloc snapshot to ``path`` (when tracing) and the
    :func:`memory_stats` next to it (``.json``)."""
    gc.collect()
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        part = path.with_suffix(".tmp")
        snap.dump(str(part))
        part.replace(path)
    stats = memory_stats(trim=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stats) + "\n")
    tmp.replace(path.with_suffix(".json"))
    log.warning("memtrace: %s %s", path, stats)


_MALLINFO2 = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (every field a size_t)."""

    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2.split()]


def _rss_mb() -> float:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def memory_stats(trim: bool = False) -> dict[str, float]:
    """Where this process's memory is (MB unless named otherwise); ``trim``: then give
    glibc's free memory back (``malloc_trim(0)``) and add ``rss_after_trim_mb``."""
    mb = 2**20
    out: dict[str, float] = {"rss_mb": round(_rss_mb(), 2),
                             "python_blocks": sys.getallocatedblocks()}  # fmt: skip
    if tracemalloc.is_tracing():
        out["python_traced_mb"] = round(tracemalloc.get_traced_memory()[0] / mb, 2)
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        out["sqlite_mb"] = round(lib.sqlite3_memory_used() / mb, 2)
    except (OSError, AttributeError):
        pass
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        mi = libc.mallinfo2()
        out["malloc_in_use_mb"] = round((mi.uordblks + mi.hblkhd) / mb, 2)
        out["malloc_free_mb"] = round(mi.fordblks / mb, 2)
        out["malloc_arena_mb"] = round(mi.arena / mb, 2)
        if trim:
            libc.malloc_trim(0)
            out["rss_after_trim_mb"] = round(_rss_mb(), 2)
    except (OSError, AttributeError):
        pass
    return out


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
