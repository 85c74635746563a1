"""The per-host IPAM flock: exclusive across processes, re-entrant within one object."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from pathlib import Path

from pycalico.ipam.lock import HostLock


def _hold(path: str, seconds: float, ready: object) -> None:
    with HostLock(path):
        ready.set()  # type: ignore[attr-defined]
        time.sleep(seconds)


def _hold_until(path: str, ready: object, release: object) -> None:
    with HostLock(path):
        ready.set()  # type: ignore[attr-defined]
        release.wait(30)  # type: ignore[attr-defined]


def test_lock_excludes_other_processes_and_is_reentrant(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "ipam.lock")
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_until, args=(path, ready, release))
    p.start()
    try:
        assert ready.wait(10)
        acquired = threading.Event()
        lock = HostLock(path)

        def take() -> None:
            with lock, lock:  # nested use of one object does not deadlock
                acquired.set()

        t = threading.Thread(target=take)
        t.start()
        assert not acquired.wait(0.2)  # blocked while the other process holds it
        release.set()
        assert acquired.wait(10)
        t.join(10)
    finally:
        release.set()
        p.join(10)


def test_lock_released_when_holder_is_killed(tmp_path: Path) -> None:
    path = str(tmp_path / "ipam.lock")
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_hold, args=(path, 60, ready))
    p.start()
    assert ready.wait(10)
    p.kill()
    p.join(10)
    with HostLock(path):
        pass


def test_no_path_means_no_locking() -> None:
    with HostLock(None), HostLock(None):
        pass
