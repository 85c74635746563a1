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
