"""Shared fixtures and harnesses, reachable from the kit.

The fixture modules stay where they are (``tests/fixtures/netns.py``, ``tests/fixtures/
etcd.py``; registered for every tier by ``tests/conftest.py`` through ``PLUGINS``), so
existing imports keep working; this module re-exports their public classes and helpers.

Importing this module imports pytest (the fixture modules define fixtures); benchmarks that
only need builders import :mod:`tests.kit.builders` or :mod:`tests.kit` instead.
"""

from __future__ import annotations

from tests.fixtures.etcd import EtcdServer, TLSFiles, free_port, make_tls
from tests.fixtures.netns import (
    UNDERLAY_SUBNET,
    CniCall,
    Netns,
    NetnsCommandError,
    NetnsFactory,
    Underlay,
    invoke_cni,
)

# The pytest plugins carrying the shared fixtures (netns_factory, netns_factory_module,
# netns, etcd_server, etcd_server_fn, etcd_tls).
PLUGINS = ["tests.fixtures.etcd", "tests.fixtures.netns"]

__all__ = [
    "PLUGINS",
    "UNDERLAY_SUBNET",
    "CniCall",
    "EtcdServer",
    "Netns",
    "NetnsCommandError",
    "NetnsFactory",
    "TLSFiles",
    "Underlay",
    "free_port",
    "invoke_cni",
    "make_tls",
]
