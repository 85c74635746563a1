"""Timing a node's underlay failure in a calico-lab: shared by the BFD e2e test and the bench.

Owns :func:`withdrawal_time` (link down on one node → a block's kernel route deleted on
another, both timestamps taken inside the lab: ``date`` on the victim, ``ip -ts monitor`` on
the watcher) and :func:`restore_link` (the victim's eth0 and default route back).
"""

from __future__ import annotations

import datetime as dt
import selectors
import subprocess
import time

from tests.e2e.conftest import CALICO_LAB, Lab


def withdrawal_time(lab: Lab, victim: str, watcher: str, block: str, limit: float) -> float:
    """Seconds from ``victim``'s eth0 going down to ``watcher``'s kernel dropping ``block``."""
    argv = [CALICO_LAB, "exec", "--name", lab.name, watcher, "sh", "-c"]
    mon = subprocess.Popen(
        [*argv, "echo ready; exec ip -ts monitor route"],
        stdout=subprocess.PIPE,
        text=True,
        env=lab.env,
    )
    try:
        assert mon.stdout is not None and mon.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # ip monitor subscribed
        down = lab.exec(victim, "sh", "-c", "date +%Y-%m-%dT%H:%M:%S.%N; ip link set eth0 down")
        t0 = dt.datetime.fromisoformat(down.stdout.strip()[:26])
        sel = selectors.DefaultSelector()
        sel.register(mon.stdout, selectors.EVENT_READ)
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if not sel.select(timeout=0.5):
                continue
            line = mon.stdout.readline()
            if line.startswith("[") and "Deleted" in line and f" {block} " in f" {line} ":
                t1 = dt.datetime.fromisoformat(line[1 : line.index("]")])
                return (t1 - t0).total_seconds()
        raise AssertionError(f"{block} still routed on {watcher} after {limit}s")
    finally:
        mon.kill()
        mon.wait()


def restore_link(lab: Lab, victim: str, gateway: str = "198.18.0.254") -> None:
    """Bring ``victim``'s eth0 back with its default route (lost when the link went down)."""
    lab.exec(victim, "ip", "link", "set", "eth0", "up")
    lab.exec(victim, "sh", "-c", f"sleep 1; ip route replace default via {gateway}")
