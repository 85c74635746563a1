"""Shared pytest configuration: tier markers, root checks, shared fixture plugins."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.fixtures.etcd", "tests.fixtures.netns"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "netns" in item.keywords or "e2e" in item.keywords:
            item.add_marker(skip)


# -- where the suite's time goes: wall time per tier and per module (setup + call + teardown),
# printed at the end of every run so CI's log shows what to cut when the budget is tight.
_MODULE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = report.nodeid.split("::", 1)[0]
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _MODULE_SECONDS:
        return
    tiers: dict[str, float] = {}
    for module, seconds in _MODULE_SECONDS.items():
        tier = module.split("/")[1] if module.count("/") >= 2 else module
        tiers[tier] = tiers.get(tier, 0.0) + seconds
    tr = terminalreporter
    tr.section("time per tier and slowest modules")
    tr.write_line("  ".join(f"{t} {s:.0f}s" for t, s in sorted(tiers.items(), key=lambda x: -x[1])))
    for module, seconds in sorted(_MODULE_SECONDS.items(), key=lambda x: -x[1])[:20]:
        tr.write_line(f"{seconds:8.1f}s {module}")
