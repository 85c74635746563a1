"""Supervision of calico-node's components (Felix, tunnel addresses, BGP, CNI server, DNS, ...).

Owns: starting each :class:`Component`, noticing when one dies (``alive()`` false or
``start()`` raising) and restarting it with exponential back-off, and stopping them all
(concurrently).

Invariants: the supervisor never exits because a component failed — a datastore outage
shows up as a component that is not in sync (it resyncs by itself) or that dies and is
restarted; a restart happens no sooner than the back-off allows (``initial`` doubling to
``maximum``; reset after a component stayed up for ``stable_after`` seconds); time comes from
an injected clock so the policy is unit-testable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Component(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def alive(self) -> bool: ...

    def in_sync(self) -> bool: ...


@dataclass
class _Slot:
    component: Component
    started: bool = False
    started_at: float = 0.0
    next_attempt: float = 0.0
    backoff: float = 0.0
    restarts: int = 0
    last_error: str = ""


class Supervisor:
    def __init__(
        self,
        components: Sequence[Component],
        *,
        initial: float = 1.0,
        maximum: float = 30.0,
        stable_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slots = [_Slot(c, backoff=initial) for c in components]
        self.initial = initial
        self.maximum = maximum
        self.stable_after = stable_after
        self.clock = clock
        self._lock = threading.Lock()

    def component(self, name: str) -> Component | None:
        for s in self.slots:
            if s.component.name == name:
                return s.component
        return None

    def _try_start(self, s: _Slot, now: float) -> None:
        try:
            s.component.start()
        except Exception as e:  # a failed start is retried after the back-off
            log.warning("component %s failed to start: %s", s.component.name, e)
            s.last_error = f"start: {e}"
            s.started = False
            s.next_attempt = now + s.backoff
            s.backoff = min(s.backoff * 2, self.maximum)
            try:
                s.component.stop()
            except Exception:
                log.debug("stop after failed start of %s", s.component.name, exc_info=True)
            return
        s.started = True
        s.started_at = now

    def step(self) -> None:
        """One supervision pass: start what is due, notice deaths, schedule restarts."""
        with self._lock:
            now = self.clock()
            for s in self.slots:
                c = s.component
                if not s.started:
                    if now >= s.next_attempt:
                        if s.next_attempt:
                            s.restarts += 1
                        self._try_start(s, now)
                    continue
                if c.alive():
                    if now - s.started_at >= self.stable_after:
                        s.backoff = self.initial
                    continue
                log.warning("component %s died; restarting in %.1fs", c.name, s.backoff)
                s.last_error = s.last_error or "died"
                try:
                    c.stop()
                except Exception as e:
                    log.debug("stop of dead %s: %s", c.name, e)
                s.started = False
                s.next_attempt = now + s.backoff
                s.backoff = min(s.backoff * 2, self.maximum)

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every started component, concurrently (each stop waits for its own threads;
        in parallel the agent exits in about the longest single stop)."""

        def stop_one(s: _Slot) -> None:
            t0 = self.clock()
            try:
                s.component.stop()
            except Exception as e:
                log.warning("stopping %s: %s", s.component.name, e)
            log.info("stopped %s in %.2fs", s.component.name, self.clock() - t0)

        with self._lock:
            threads = []
            for s in reversed(self.slots):
                if s.started:
                    t = threading.Thread(
                        target=stop_one, args=(s,), name=f"stop-{s.component.name}"
                    )
                    t.start()
                    threads.append(t)
                    s.started = False
            for t in threads:
                t.join(timeout)

    def report(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for s in self.slots:
            c = s.component
            alive = s.started and _safe(c.alive)
            out[c.name] = {
                "alive": alive,
                "in_sync": alive and _safe(c.in_sync),
                "restarts": s.restarts,
                "last_error": s.last_error,
            }
        return out


def _safe(fn: Callable[[], bool]) -> bool:
    try:
        return bool(fn())
    except Exception:
        return False
