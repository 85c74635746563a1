"""The shared test kit: resource builders, ``wait_for``, fakes, fixtures and calc expanders.

Tests and ``bench/`` scripts import from here instead of growing local copies:

- :mod:`tests.kit.builders` — one builder per stored kind (plain v3 dicts), ``key_of``.
- :mod:`tests.kit.waiting` — ``wait_for`` (raises with what/last value), ``poll``,
  ``wait_time``.
- :mod:`tests.kit.fakes` — in-memory fakes re-exported from their homes, ``memory_datastore``.
- :mod:`tests.kit.fixtures` — the netns/etcd harness classes (imports pytest; not re-exported
  here so benchmarks stay light).
- :mod:`tests.kit.expanders` — whole-state sequences -> update orders that must agree.

Benchmarks run as ``python bench/x.py`` from the repository root put the root on
``sys.path`` first (``sys.path.insert(0, str(ROOT))``) and then ``import tests.kit``.
"""

from tests.kit.builders import (
    K8S_CORE,
    K8S_NETWORKING,
    V3,
    bgp_configuration,
    bgp_filter,
    bgp_peer,
    block_affinity,
    felix_configuration,
    global_network_policy,
    global_network_set,
    host_endpoint,
    ip_pool,
    ipam_block,
    k8s_network_policy,
    key_of,
    keyed,
    namespace,
    network_policy,
    network_set,
    node,
    profile,
    resource,
    service_account,
    tier,
    wep_name,
    workload_endpoint,
)
from tests.kit.waiting import poll, wait_for, wait_time

__all__ = [
    "K8S_CORE",
    "K8S_NETWORKING",
    "V3",
    "bgp_configuration",
    "bgp_filter",
    "bgp_peer",
    "block_affinity",
    "felix_configuration",
    "global_network_policy",
    "global_network_set",
    "host_endpoint",
    "ip_pool",
    "ipam_block",
    "k8s_network_policy",
    "key_of",
    "keyed",
    "namespace",
    "network_policy",
    "network_set",
    "node",
    "poll",
    "profile",
    "resource",
    "service_account",
    "tier",
    "wait_for",
    "wait_time",
    "wep_name",
    "workload_endpoint",
]
