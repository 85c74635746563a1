"""The clock seam: monotonic time, sleeping and waiting on an event with a timeout.

:class:`RealClock` is the system clock; :class:`FakeClock` is virtual time for tests.

Invariants: :meth:`Clock.wait` returns True as soon as the event is set and False when the
timeout elapsed first (like :meth:`threading.Event.wait`). A :class:`FakeClock` only moves
when :meth:`FakeClock.advance` is called (or, with ``autoadvance``, when a caller sleeps or
waits: time jumps to the deadline at once, so single-threaded loops run without real delays).
Without ``autoadvance`` a waiter blocks (in real time) until another thread advances the clock
past its deadline or sets the event.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def wait(self, event: threading.Event, timeout: float | None) -> bool: ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.wait(timeout)


class FakeClock:
    """Virtual time (see module doc); thread-safe."""

    def __init__(self, start: float = 0.0, *, autoadvance: bool = False) -> None:
        self._now = start
        self.autoadvance = autoadvance
        self._cond = threading.Condition()
        self.sleeps: list[float] = []  # every sleep/wait timeout asked for

    def monotonic(self) -> float:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += max(0.0, seconds)
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        self.wait(threading.Event(), seconds)

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        with self._cond:
            if timeout is not None:
                self.sleeps.append(timeout)
            if event.is_set():
                return True
            if timeout is not None and self.autoadvance:
                self._now += max(0.0, timeout)
                self._cond.notify_all()
                return event.is_set()
            deadline = None if timeout is None else self._now + timeout
            while not event.is_set() and (deadline is None or self._now < deadline):
                # Poll the event in short real-time slices: a setter does not notify us.
                self._cond.wait(0.01)
            return event.is_set()
