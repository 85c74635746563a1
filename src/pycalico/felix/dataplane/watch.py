"""Kernel change watchers: wake Felix's owner loop when someone touches what Felix owns.

Owns: :class:`LineWatcher` (one long-running monitor child - ``nft monitor`` or
``ip -o monitor label route link address neigh netconf`` - started through the
:class:`~pycalico.system.process.ProcessLauncher` seam, its output read line by line on a
small reader thread), the pure line classifiers :func:`nft_topic` and :func:`route_topic`,
and :class:`Debouncer` (which topics are due for a resync, and when).

Invariants:
- A watcher never touches the kernel or any driver: it only calls ``notify(topic)`` (which
  must be cheap and thread-safe; Felix sets a flag and wakes its owner loop). The ONE owner
  thread still does every read and write, so there is no second kernel-owning thread.
- Topics: ``nft:<family>:<table>`` for an nft event on a table we watch; ``qos`` for a
  qdisc or filter deleted (``tc monitor``, :func:`tc_topic`); ``routes`` for a route with
  protocol 80, a link/address/route on one of our devices (``vxlan.calico``,
  ``vxlan-v6.calico``, ``tunl0``) or a workload interface (``<prefix>*``), a neighbour or
  FDB entry on one of our devices (the remote VTEPs), or a netconf change (forwarding,
  proxy ARP) of a workload interface or of ``all``; ``route-table`` instead of ``routes``
  for a labelled ``[ROUTE]`` line (re-reading the routes alone repairs it), ``vteps`` for a
  ``[NEIGH]`` line (the VXLAN device's entries alone).
- Our own writes produce events too. The loop cannot spin: a resync reads back and writes
  only what differs from the desired state (nothing, after our own write), and the
  :class:`Debouncer` runs at most one resync per topic per ``min_gap`` seconds.
- A monitor that exits is restarted with back-off (0.5 s doubling to 10 s) while the
  watcher runs; one that cannot be started (no ``nft``/``ip`` binary, no permission) is
  logged once and given up: the periodic refresh stays the backstop.
  :meth:`LineWatcher.stop` terminates the child and joins the reader. If Felix's process
  dies without stopping (SIGKILL), the child dies with it when the launcher sets the
  parent-death signal (Felix's do: ``SubprocessRunner(die_with_parent=True)``; the reader
  thread that spawns the child lives as long as it), else of SIGPIPE at its next event.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence

from pycalico.system.process import DEVNULL, Process, ProcessLauncher, WaitTimeout

log = logging.getLogger(__name__)

#: Devices Felix owns (names as in :mod:`pycalico.felix.calc.routetypes`).
OUR_DEVICES = ("vxlan.calico", "vxlan-v6.calico", "tunl0")
ROUTE_ARGV = ("ip", "-o", "monitor", "label", "route", "link", "address", "neigh", "netconf")
ROUTES_TOPIC = "routes"
#: A ``[ROUTE]`` line on what we own: re-reading the routes alone repairs it.
ROUTE_TABLE_TOPIC = "route-table"
#: A ``[NEIGH]`` line (VTEP neighbour or FDB entry) on our devices: the VXLAN part alone.
VTEP_TOPIC = "vteps"
#: A pod-bandwidth IFB device (``bw<prefix>*``) changed: only the QoS driver resyncs.
QOS_TOPIC = "qos"

_NFT_EVENT = re.compile(
    r"^(?:add|delete|replace|flush|update|destroy|insert)\s+\S+\s+(\S+)\s+([^\s{;]+)"
)


def nft_topic(line: str, tables: Iterable[tuple[str, str]]) -> str | None:
    """``nft:<family>:<table>`` when ``line`` (of ``nft monitor``) is an event on one of
    ``tables`` ((family, name) pairs), else None."""
    m = _NFT_EVENT.match(line.strip())
    if m is None:
        return None
    fam, table = m.group(1), m.group(2)
    return f"nft:{fam}:{table}" if (fam, table) in set(tables) else None


def tc_topic(line: str) -> str | None:
    """:data:`QOS_TOPIC` when ``line`` (of ``tc monitor``) deletes or replaces a qdisc or
    filter (the tc guard's or QoS's may be gone); additions (our own writes) are ignored."""
    return QOS_TOPIC if line.startswith(("deleted qdisc", "deleted filter", "replaced")) else None


def route_topic(line: str, prefix: str = "cali", proto: int = 80) -> str | None:
    """:data:`ROUTES_TOPIC` when ``line`` (of :data:`ROUTE_ARGV`, optionally labelled
    ``[ROUTE]``/``[LINK]``/``[ADDR]``/``[NEIGH]``/``[NETCONF]``) touches what the route
    drivers own, else None. A ``[NEIGH]`` line (a neighbour, or an FDB entry: the kernel
    reports both on the neighbour group) counts only on our tunnel devices (the VTEP
    entries): ARP on workload interfaces is the kernel's own business and far too frequent
    to resync on."""
    label, _, rest = line.partition("]") if line.startswith("[") else ("", "", line)
    if label == "[NEIGH":
        words = rest.split()
        return VTEP_TOPIC if any(w in OUR_DEVICES for w in words) else None
    if label == "[NETCONF":  # "inet cali123 proxy_neigh off", "inet all forwarding off"
        words = rest.split()
        dev = words[1] if len(words) > 1 else ""
        mine = dev == "all" or (prefix and dev.startswith(prefix))
        return ROUTES_TOPIC if mine else None
    words = rest.replace("@", " ").replace(":", " ").split()
    topic = ROUTE_TABLE_TOPIC if label == "[ROUTE" else ROUTES_TOPIC
    if any(a == "proto" and b == str(proto) for a, b in itertools.pairwise(words)):
        return topic
    for w in words:
        if w in OUR_DEVICES or (prefix and w.startswith(prefix)):
            return topic
        if prefix and w.startswith("bw" + prefix):
            return QOS_TOPIC
    return None


class LineWatcher:
    """See the module docstring. ``classify(line) -> topic | None``; ``notify(topic)``."""

    MIN_BACKOFF_S = 0.5
    MAX_BACKOFF_S = 10.0

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        classify: Callable[[str], str | None],
        notify: Callable[[str], None],
        launcher: ProcessLauncher,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.classify = classify
        self.notify = notify
        self.launcher = launcher
        self.events = 0  # lines that produced a topic
        self.starts = 0
        self.gave_up = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._proc: Process | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def start(self) -> LineWatcher:
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = self.MIN_BACKOFF_S
        while not self._stop.is_set():
            r, w = os.pipe()
            try:
                proc = self.launcher.spawn(self.argv, stdout=w, stderr=DEVNULL, stdin=DEVNULL)
            except OSError as e:
                os.close(r)
                os.close(w)
                log.warning("%s watcher: cannot run %s (%s); relying on the periodic refresh",
                            self.name, " ".join(self.argv), e)  # fmt: skip
                self.gave_up = True
                return
            os.close(w)
            with self._lock:
                self._proc = proc
            self.starts += 1
            with os.fdopen(r, "rb") as out:
                for raw in out:
                    topic = self.classify(raw.decode(errors="replace"))
                    if topic is not None:
                        self.events += 1
                        self.notify(topic)
            try:
                rc = proc.wait(1.0)
            except WaitTimeout:
                proc.kill()
                rc = proc.wait()
            if self._stop.is_set():
                return
            log.warning("%s watcher: %s exited (%s); restarting in %.1fs",
                        self.name, " ".join(self.argv), rc, backoff)  # fmt: skip
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self.MAX_BACKOFF_S)


class Debouncer:
    """Which topics are due for a resync. :meth:`note` (any thread) records an event;
    a topic is due ``delay`` seconds after its first pending event, and never sooner than
    ``min_gap`` after its previous resync. Times are the caller's clock (monotonic s)."""

    def __init__(self, delay: float = 0.1, min_gap: float = 0.5) -> None:
        self.delay = delay
        self.min_gap = min_gap
        self._lock = threading.Lock()
        self._due: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def note(
        self, topic: str, now: float, delay: float | None = None, min_gap: float | None = None
    ) -> None:
        """``delay`` and ``min_gap`` override the defaults for this topic (e.g. 0 and a few
        ms for a cheap check that must not wait)."""
        with self._lock:
            if topic not in self._due:
                last = self._last.get(topic)
                at = now + (self.delay if delay is None else delay)
                gap = self.min_gap if min_gap is None else min_gap
                self._due[topic] = at if last is None else max(at, last + gap)

    def deadline(self) -> float | None:
        with self._lock:
            return min(self._due.values()) if self._due else None

    def take_due(self, now: float) -> list[str]:
        """Topics due at ``now`` (removed from the pending set, their resync time noted)."""
        with self._lock:
            due = sorted(t for t, at in self._due.items() if at <= now)
            for t in due:
                del self._due[t]
                self._last[t] = now
            return due
