"""Issue 19, fuzz slice: the Docker drivers' requests (libnetwork/driver.py, server.py).

Hypothesis drives sequences of plugin calls - every method of the network and IPAM drivers
plus unknown ones - whose bodies mix what dockerd sends (IDs, CIDRs, addresses, MACs,
options) with arbitrary JSON in every field, against one node's drivers over the memory
datastore and the fake dataplane (no dockerd, no kernel). After every call:

- ``handle`` returned a dict, and an error is a short, escaped ``Err``/``Error`` text;
- no request reached the drivers' catch-all (which logs "<method> failed" with a traceback:
  an unexpected exception, i.e. a request shape nobody checked);

and after every sequence each resource the drivers wrote (WorkloadEndpoints, Profiles, IP
pools) still passes the API's validation, as ``calicoctl apply`` would demand. A few raw
bodies also go through the unix-socket server (bytes, not JSON; wrong lengths).

Derandomized and bounded (a few seconds).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.api.codec import decode
from pycalico.libnetwork.server import PluginServer
from tests.unit.test_libnetwork_driver import _drivers, _post

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
NET_METHODS = [
    "Plugin.Activate", "NetworkDriver.GetCapabilities", "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork", "NetworkDriver.CreateEndpoint", "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.EndpointOperInfo", "NetworkDriver.Join", "NetworkDriver.Leave",
    "NetworkDriver.AllocateNetwork", "NetworkDriver.FreeNetwork",
]  # fmt: skip
IPAM_METHODS = [
    "Plugin.Activate", "IpamDriver.GetCapabilities", "IpamDriver.GetDefaultAddressSpaces",
    "IpamDriver.RequestPool", "IpamDriver.ReleasePool", "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
]  # fmt: skip
IDS = ["e1" + "0" * 62, "f" * 64, "n" * 64, "e1" + "0" * 9 + "f" * 53]
ERR_LIMIT = 1024

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=3),
    max_leaves=8,
)  # fmt: skip
addresses = st.sampled_from(["10.1.0.5/24", "10.1.0.6", "10.1.0.0/24", "10.2.0.1/32",
                             "fd00::7/64", "10.9.0.1/24", "not-an-ip", "", "0.0.0.0/0",
                             "10.1.0.5/99", "::/0"])  # fmt: skip
pools = st.sampled_from(["net-a", "tiny", "CalicoPoolIPv4", "CalicoPoolIPv6", "nope", ""])
option_values = st.dictionaries(
    st.sampled_from(["com.docker.network.enable_ipv6", "com.docker.network.generic",
                     "com.docker.network.mtu", "RequestAddressType", "x"]),
    json_values | st.sampled_from(["com.docker.network.gateway", True, {}]), max_size=3,
)  # fmt: skip
ip_data = st.lists(
    st.fixed_dictionaries({}, optional={"Pool": addresses | json_values,
                                        "Gateway": addresses | json_values,
                                        "AddressSpace": st.text(max_size=8)}),
    max_size=2,
) | json_values  # fmt: skip
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "NetworkID": st.sampled_from(IDS) | json_values,
    "EndpointID": st.sampled_from(IDS) | st.text(max_size=70) | json_values,
    "Interface": st.fixed_dictionaries({}, optional={
        "Address": addresses | json_values, "AddressIPv6": addresses | json_values,
        "MacAddress": st.sampled_from(["02:00:00:00:00:01", "zz", ""]) | json_values,
    }) | json_values,
    "Options": option_values | json_values,
    "IPv4Data": ip_data,
    "IPv6Data": ip_data,
    "Pool": addresses | json_values,
    "SubPool": addresses | json_values,
    "PoolID": pools | json_values,
    "Address": addresses | json_values,
    "V6": st.booleans() | json_values,
    "SandboxKey": st.text(max_size=20),
    "AddressSpace": st.sampled_from(["CalicoLocalAddressSpace", "x"]) | json_values,
}  # fmt: skip
bodies = st.fixed_dictionaries({}, optional=FIELDS) | json_values
calls = st.lists(
    st.tuples(st.booleans(), st.integers(0, 20), st.text(max_size=10), bodies),
    min_size=1, max_size=6,
)  # fmt: skip


class Failures(logging.Handler):
    """Records the drivers' catch-all reports ("<method> failed", with the exception)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(FUZZ, max_examples=400)
@given(calls)
def test_fuzz_driver_requests(seq: list[tuple[bool, int, str, Any]]) -> None:
    ds, ipam, net, _ = _drivers()
    failures = Failures()
    logger = logging.getLogger("pycalico.libnetwork.driver")
    logger.addHandler(failures)
    try:
        for is_net, pick, other, body in seq:
            methods = NET_METHODS if is_net else IPAM_METHODS
            method = methods[pick] if pick < len(methods) else other
            resp = (net if is_net else ipam).handle(method, body)
            assert isinstance(resp, dict), (method, body, resp)
            for key in ("Err", "Error"):
                if key in resp:
                    msg = resp[key]
                    assert isinstance(msg, str) and msg and len(msg) <= ERR_LIMIT, (method, msg)
                    assert not any(ord(c) < 0x20 for c in msg), (method, msg)
            json.dumps(resp)  # what the server sends must encode
            assert not failures.records, (
                f"{method} {body!r}: unexpected {failures.records[0].getMessage()} "
                f"{failures.records[0].exc_info}"
            )
    finally:
        logger.removeHandler(failures)
    for kind in ("WorkloadEndpoint", "Profile", "IPPool"):
        for item in ds.list(kind).items:
            decode(item)  # raises ValidationFailed naming the field


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One network driver on a unix socket for every example (a server per example would
    spend its time in shutdown's poll interval)."""
    _, _, net, _ = _drivers()
    path = tmp_path_factory.mktemp("plug") / "calico.sock"
    srv = PluginServer(str(path), net.handle)
    srv.start("fuzz")
    yield path
    srv.close()


@settings(FUZZ, max_examples=150)
@given(st.binary(max_size=300), st.sampled_from([*NET_METHODS, "", "../x", "A" * 300]))
def test_fuzz_raw_bodies_over_the_socket(plugin: Path, body: bytes, method: str) -> None:
    resp = _post(plugin, method, body)
    assert isinstance(resp, dict)
    for key in ("Err", "Error"):
        assert len(resp.get(key, "")) <= ERR_LIMIT
    assert _post(plugin, "Plugin.Activate", b"") == {"Implements": ["NetworkDriver"]}
