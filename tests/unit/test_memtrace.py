"""The opt-in heap-snapshot diagnostic (``CALICO_MEMTRACE_DIR``): off without the variable;
with it, SIGUSR2 writes a snapshot and where the memory is, and ``diff`` names the
traceback that grew; ``CALICO_MEMTRACE_FRAMES=0`` writes only where the memory is."""

from __future__ import annotations

import json
import os
import signal
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycalico.diag import memtrace


@pytest.fixture
def restore() -> Iterator[None]:
    old = signal.getsignal(signal.SIGUSR2)
    try:
        yield
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGUSR2, old)


def test_off_without_the_variable(restore: None) -> None:
    before = signal.getsignal(signal.SIGUSR2)
    assert memtrace.install({}) is None
    assert not tracemalloc.is_tracing()
    assert signal.getsignal(signal.SIGUSR2) is before


def test_sigusr2_snapshots_and_diff_names_what_grew(tmp_path: Path, restore: None) -> None:
    out = memtrace.install({"CALICO_MEMTRACE_DIR": str(tmp_path / "snaps")})
    assert out == tmp_path / "snaps" and tracemalloc.is_tracing()
    os.kill(os.getpid(), signal.SIGUSR2)
    kept = [bytearray(1000) for _ in range(500)]  # ~500 KB kept between the snapshots
    os.kill(os.getpid(), signal.SIGUSR2)
    first, second = (out / f"{os.getpid()}-{n}.snap" for n in (0, 1))
    assert first.exists() and second.exists()
    assert json.loads(second.with_suffix(".json").read_text())["python_traced_mb"] > 0.4
    report = memtrace.diff(first, second, top=3)
    assert report.splitlines()[0].startswith("total +")
    biggest = report.split("KiB", 3)[2]  # the first entry: its size, then its traceback
    assert "test_memtrace.py" in biggest and "bytearray(1000)" in biggest, report
    assert memtrace.main([str(first)]) == 2
    assert len(kept) == 500


def test_frames_zero_writes_only_where_the_memory_is(tmp_path: Path, restore: None) -> None:
    out = memtrace.install({"CALICO_MEMTRACE_DIR": str(tmp_path), "CALICO_MEMTRACE_FRAMES": "0"})
    assert out == tmp_path and not tracemalloc.is_tracing()
    os.kill(os.getpid(), signal.SIGUSR2)
    assert not (tmp_path / f"{os.getpid()}-0.snap").exists()
    stats = json.loads((tmp_path / f"{os.getpid()}-0.json").read_text())
    assert stats["rss_mb"] > 0 and stats["python_blocks"] > 0
    assert stats["malloc_in_use_mb"] > 0 and stats["rss_after_trim_mb"] > 0  # glibc


@pytest.mark.parametrize("frames", ["twelve", "-1", "1.5", ""])
def test_a_bad_frame_count_is_an_error_naming_the_variable(
    tmp_path: Path, restore: None, frames: str
) -> None:
    env = {"CALICO_MEMTRACE_DIR": str(tmp_path / "snaps"), "CALICO_MEMTRACE_FRAMES": frames}
    with pytest.raises(memtrace.MemtraceError, match="CALICO_MEMTRACE_FRAMES"):
        memtrace.install(env)
    assert not tracemalloc.is_tracing() and not (tmp_path / "snaps").exists()
