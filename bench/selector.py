"""Benchmark of pycalico.selector: parse rate (uncached and cached) and evaluation rate.

Run as ``.venv/bin/python bench/selector.py``.  Prints one line per measurement; the target is
>= 1,000,000 evaluations/s of ``app == "web" && tier in {"a","b"}`` on one core.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pycalico.selector import clear_parse_cache, parse
from pycalico.selector.compiler import clear_compile_cache

TARGET = 'app == "web" && tier in {"a","b"}'

SELECTORS = [
    TARGET,
    "has(app)",
    "all()",
    "role != 'db' && !has(quarantine)",
    "env in {'prod', 'staging', 'qa'} || team starts with 'net'",
    "(a == 'x' || b contains 'y') && !(c ends with 'z' && d not in {'1', '2'})",
    "projectcalico.org/namespace == 'default' && (app == 'web' || app == 'api')",
]

LABEL_MAPS: list[dict[str, str]] = [
    {"app": "web", "tier": "a", "env": "prod"},
    {"app": "web", "tier": "c", "role": "db"},
    {"app": "api", "team": "network", "projectcalico.org/namespace": "default"},
    {},
    {"a": "x", "b": "xyz", "c": "baz", "d": "1", "quarantine": "yes"},
]


def rate(fn: Callable[[], int], seconds: float = 0.5) -> float:
    """Operations per second of ``fn`` (which returns how many operations it did)."""
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        ops += fn()
        now = time.perf_counter()
        if now >= deadline:
            return ops / (now - start)


def bench_parse_uncached() -> float:
    texts = SELECTORS

    def run() -> int:
        clear_parse_cache()
        for t in texts:
            parse(t)
        return len(texts)

    return rate(run)


def bench_parse_and_compile_uncached() -> float:
    """Parse plus first evaluation (which compiles), with both caches cold per round."""
    texts = SELECTORS

    def run() -> int:
        clear_parse_cache()
        clear_compile_cache()
        for t in texts:
            parse(t).evaluate({})
        return len(texts)

    return rate(run)


def bench_parse_cached() -> float:
    texts = SELECTORS * 20
    for t in SELECTORS:
        parse(t)

    def run() -> int:
        for t in texts:
            parse(t)
        return len(texts)

    return rate(run)


def bench_eval(text: str) -> float:
    sel = parse(text)
    maps = LABEL_MAPS * 200

    def run() -> int:
        ev = sel.evaluate
        for m in maps:
            ev(m)
        return len(maps)

    return rate(run)


def bench_eval_method(text: str) -> float:
    """Through the attribute each call (``sel.evaluate(m)``), as typical callers write it."""
    sel = parse(text)
    maps = LABEL_MAPS * 200

    def run() -> int:
        for m in maps:
            sel.evaluate(m)
        return len(maps)

    return rate(run)


def main() -> None:
    print(f"parse (uncached): {bench_parse_uncached():>12,.0f} selectors/s")
    print(f"parse + compile (uncached): {bench_parse_and_compile_uncached():>12,.0f} selectors/s")
    print(f"parse (cached):   {bench_parse_cached():>12,.0f} selectors/s")
    for text in SELECTORS:
        print(f"evaluate {text!r}: {bench_eval(text):>12,.0f} evals/s")
    target = bench_eval_method(TARGET)
    verdict = "OK" if target >= 1_000_000 else "BELOW TARGET"
    print(f"target sel.evaluate(labels) {TARGET!r}: {target:,.0f} evals/s ({verdict} >= 1,000,000)")


if __name__ == "__main__":
    main()
