"""Polling for tests and benchmarks: one ``wait_for`` instead of ad-hoc deadline loops.

Owns: :func:`wait_for` (raises, naming what was awaited and the last value seen),
:func:`poll` (returns the last value, for callers that handle a timeout themselves) and
:func:`wait_time` (``wait_for``, returning how many seconds the condition took: for tests and
benchmarks that report or bound convergence time).

Invariants: the predicate is always evaluated at least once and once more at (or after) the
deadline, so a condition that became true during the final sleep is not missed; time is
``time.monotonic``; exceptions raised by the predicate propagate unless listed in
``ignore``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> T | None:
    """Call ``predicate`` until it returns something truthy or ``timeout`` seconds pass;
    return its last value (``None`` if every call raised one of ``ignore``)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        final = time.monotonic() >= deadline
        try:
            last = predicate()
        except ignore:
            last = None
        if last or final:
            return last
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    what: str = "",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """The first truthy value of ``predicate()`` within ``timeout`` seconds.

    On timeout raises :class:`AssertionError` with ``what`` (default: the predicate's name),
    the timeout and the last value the predicate returned (or the last ignored error)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        final = time.monotonic() >= deadline
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if final:
            label = what or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"timed out after {timeout}s waiting for {label}; last: {last!r}")
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


def wait_time(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.05,
    what: str = "",
    ignore: tuple[type[BaseException], ...] = (),
) -> float:
    """Seconds from the call until ``predicate()`` was first truthy; raises like
    :func:`wait_for` on timeout."""
    t0 = time.monotonic()
    wait_for(predicate, timeout, interval, what or getattr(predicate, "__name__", ""), ignore)
    return time.monotonic() - t0
