"""calico-node puts the workload DNS server's link-local listen addresses on ``lo`` through
the typed kernel seam (and only those: other listen addresses are the operator's)."""

from __future__ import annotations

import ipaddress

from pycalico.datastore.memory import MemoryDatastore
from pycalico.node.agent import _dns_component
from pycalico.system.fakekernel import FakeKernel
from pycalico.system.kernel import Address, Link


def _lo_addrs(k: FakeKernel) -> set[str]:
    return {str(a.ip) for a in k.list_addrs("lo")}


def test_link_local_listen_addresses_go_on_lo() -> None:
    k = FakeKernel()
    k.add_link(Link("lo", None, 65536, up=True), "127.0.0.1/8")
    env = {"CALICO_DNS_LISTEN": "169.254.25.10:53,[fe80::25:10]:53,198.18.0.1:53"}
    comp = _dns_component(MemoryDatastore(), "n1", env, kernel=k)
    assert comp is not None
    assert _lo_addrs(k) == {"127.0.0.1/8", "169.254.25.10/32", "fe80::25:10/128"}
    # Idempotent: a restart replaces, never duplicates.
    _dns_component(MemoryDatastore(), "n1", env, kernel=k)
    assert len(k.addrs["lo"]) == 3


def test_a_kernel_failure_is_logged_not_fatal() -> None:
    k = FakeKernel()  # no lo at all: the write fails
    comp = _dns_component(MemoryDatastore(), "n1", {}, kernel=k)
    assert comp is not None and not k.addrs.get("lo")
    assert Address("lo", ipaddress.ip_interface("169.254.25.10/32")) not in k.addrs.get("lo", ())


def test_disabled_dns_touches_nothing() -> None:
    k = FakeKernel()
    assert (
        _dns_component(MemoryDatastore(), "n1", {"CALICO_DNS_ENABLED": "false"}, kernel=k) is None
    )
    assert k.batches == []
