"""Timing a node's underlay failure in a calico-lab: shared by the BFD e2e test and the bench.

Owns :func:`withdrawal_times` (link down on one node → a block's kernel route deleted on each
watcher, both timestamps taken inside the lab: ``date`` on the victim, ``ip -ts monitor`` on
the watchers), :func:`route_gaps` (how long a block was unrouted on each watcher around a
fault) and :func:`restore_link` (the victim's eth0 and default route back).
"""

from __future__ import annotations

import datetime as dt
import selectors
import subprocess
import time
from collections.abc import Callable

from tests.e2e.conftest import CALICO_LAB, Lab


def withdrawal_times(
    lab: Lab, victim: str, watchers: list[str], block: str, limit: float
) -> dict[str, float]:
    """Seconds from ``victim``'s eth0 going down to each watcher's kernel dropping ``block``."""
    script = "echo ready; exec ip -ts monitor route"
    argv = [CALICO_LAB, "exec", "--name", lab.name]
    mons = {
        w: subprocess.Popen(
            [*argv, w, "sh", "-c", script], stdout=subprocess.PIPE, text=True, env=lab.env
        )
        for w in watchers
    }
    try:
        sel = selectors.DefaultSelector()
        for w, mon in mons.items():
            assert mon.stdout is not None and mon.stdout.readline().strip() == "ready"
            sel.register(mon.stdout, selectors.EVENT_READ, w)
        time.sleep(0.3)  # ip monitor subscribed
        down = lab.exec(victim, "sh", "-c", "date +%Y-%m-%dT%H:%M:%S.%N; ip link set eth0 down")
        t0 = dt.datetime.fromisoformat(down.stdout.strip()[:26])
        out: dict[str, float] = {}
        end = time.monotonic() + limit
        while time.monotonic() < end and len(out) < len(mons):
            for key, _ in sel.select(timeout=0.5):
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if line.startswith("[") and "Deleted" in line and f" {block} " in f" {line} ":
                    t1 = dt.datetime.fromisoformat(line[1 : line.index("]")])
                    out.setdefault(key.data, (t1 - t0).total_seconds())
        missing = set(mons) - set(out)
        assert not missing, f"{block} still routed on {sorted(missing)} after {limit}s ({out})"
        return out
    finally:
        for mon in mons.values():
            mon.kill()
            mon.wait()


def route_gaps(
    lab: Lab, watchers: list[str], block: str, fault: Callable[[], None], watch: float
) -> dict[str, float]:
    """Seconds each watcher's kernel had no route to ``block`` while ``fault()`` happened and
    ``watch`` seconds after (``inf`` when it was still missing at the end)."""
    script = "echo ready; exec ip -ts monitor route"
    argv = [CALICO_LAB, "exec", "--name", lab.name]
    mons = {
        w: subprocess.Popen(
            [*argv, w, "sh", "-c", script], stdout=subprocess.PIPE, text=True, env=lab.env
        )
        for w in watchers
    }
    try:
        sel = selectors.DefaultSelector()
        for w, mon in mons.items():
            assert mon.stdout is not None and mon.stdout.readline().strip() == "ready"
            sel.register(mon.stdout, selectors.EVENT_READ, w)
        time.sleep(0.3)  # ip monitor subscribed
        fault()
        gaps = dict.fromkeys(mons, 0.0)
        down: dict[str, dt.datetime] = {}
        end = time.monotonic() + watch
        while time.monotonic() < end:
            for key, _ in sel.select(timeout=0.5):
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line.startswith("[") or f" {block} " not in f" {line} ":
                    continue
                t = dt.datetime.fromisoformat(line[1 : line.index("]")])
                if "Deleted" in line:
                    down.setdefault(key.data, t)
                elif key.data in down:
                    gaps[key.data] += (t - down.pop(key.data)).total_seconds()
        for w in down:
            gaps[w] = float("inf")
        return {w: round(g, 3) for w, g in gaps.items()}
    finally:
        for mon in mons.values():
            mon.kill()
            mon.wait()


def withdrawal_time(lab: Lab, victim: str, watcher: str, block: str, limit: float) -> float:
    """:func:`withdrawal_times` for one watcher."""
    return withdrawal_times(lab, victim, [watcher], block, limit)[watcher]


def restore_link(lab: Lab, victim: str, gateway: str = "198.18.0.254") -> None:
    """Bring ``victim``'s eth0 back with its default route (lost when the link went down)."""
    lab.exec(victim, "ip", "link", "set", "eth0", "up")
    lab.exec(victim, "sh", "-c", f"sleep 1; ip route replace default via {gateway}")
