"""In-memory fakes, re-exported from where they live, so tests import fakes from one place.

Owns nothing but the re-exports and :func:`memory_datastore` (a MemoryDatastore seeded with
resources). The fakes themselves stay next to the seam they fake (``pycalico.system``,
``pycalico.datastore``, ...): production code owns the contract, the kit only gathers them.
When a seam moves or a new one lands, add its fake here and tests keep importing
``tests.kit.fakes``. Gathered: the typed kernel seam's stateful ``FakeKernel`` (failure
injection), the clock seam's ``FakeClock`` (virtual time), the process seam's
``FakeProcessRunner`` with its spawn support (``FakeProcess``: long-running children that
exit when told or signalled), the nft runner, sysctls, the CNI dataplane and the memory
datastore.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pycalico.cni.dataplane import FakeDataplane
from pycalico.datastore.memory import MemoryDatastore
from pycalico.felix.dataplane.runner import FakeNftRunner
from pycalico.system.clock import FakeClock
from pycalico.system.fakekernel import FakeKernel
from pycalico.system.process import Completed, FakeProcess, FakeProcessRunner
from pycalico.system.sysctl import FakeSysctl

__all__ = [
    "Completed",
    "FakeClock",
    "FakeDataplane",
    "FakeKernel",
    "FakeNftRunner",
    "FakeProcess",
    "FakeProcessRunner",
    "FakeSysctl",
    "MemoryDatastore",
    "memory_datastore",
    "seed",
]


def seed(ds: Any, resources: Iterable[Mapping[str, Any]]) -> Any:
    """``ds.create`` every resource in order; returns ``ds``."""
    for r in resources:
        ds.create(dict(r))
    return ds


def memory_datastore(*resources: Mapping[str, Any]) -> MemoryDatastore:
    """A fresh MemoryDatastore holding ``resources`` (created in the order given)."""
    ds = MemoryDatastore()
    seed(ds, resources)
    return ds
