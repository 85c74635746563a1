"""The Docker drivers' protocol semantics over the memory datastore and the fake dataplane,
plus the unix-socket HTTP server (real sockets, no dockerd)."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from pycalico.cni.dataplane import FakeDataplane
from pycalico.libnetwork.driver import (
    NETWORK_ID_ANNOTATION,
    ContainerInfo,
    IpamDriver,
    NetworkDriver,
)
from pycalico.libnetwork.server import PluginServer
from tests.kit import builders as b
from tests.kit import wait_for
from tests.kit.fakes import memory_datastore

NID = "n" * 64
EID = "e1" + "0" * 62


def _drivers(**kw: Any) -> tuple[Any, IpamDriver, NetworkDriver, FakeDataplane]:
    ds = memory_datastore(
        b.node("h1", "192.0.2.1"),
        b.ip_pool("net-a", "10.1.0.0/24", block_size=26),
        b.ip_pool("tiny", "10.2.0.1/32", block_size=32),
    )
    dp = FakeDataplane()
    return ds, IpamDriver(ds, "h1"), NetworkDriver(ds, "h1", dp, **kw), dp


def _create(net: NetworkDriver, ipam: IpamDriver, cidr: str = "10.1.0.0/24") -> str:
    pool = ipam.handle("IpamDriver.RequestPool", {"Pool": cidr})
    assert "Err" not in pool, pool
    assert pool["Data"] == {"com.docker.network.gateway": "0.0.0.0/0"}
    r = net.handle(
        "NetworkDriver.CreateNetwork",
        {
            "NetworkID": NID,
            "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
            "IPv4Data": [{"Pool": pool["Pool"], "Gateway": "0.0.0.0/0"}],
        },
    )
    assert r == {}, r
    return str(pool["PoolID"])


def test_activate_and_capabilities() -> None:
    _, ipam, net, _ = _drivers()
    assert net.handle("Plugin.Activate", {}) == {"Implements": ["NetworkDriver"]}
    assert ipam.handle("Plugin.Activate", {}) == {"Implements": ["IpamDriver"]}
    assert net.handle("NetworkDriver.GetCapabilities", {})["Scope"] == "local"
    spaces = ipam.handle("IpamDriver.GetDefaultAddressSpaces", {})
    assert spaces["LocalDefaultAddressSpace"] == "CalicoLocalAddressSpace"
    assert "Err" in net.handle("NetworkDriver.Bogus", {})


def test_full_endpoint_lifecycle_leaves_nothing() -> None:
    ds, ipam, net, dp = _drivers()
    pool_id = _create(net, ipam)
    assert pool_id == "net-a"
    assert ds.get("IPPool", "net-a")["metadata"]["annotations"][NETWORK_ID_ANNOTATION] == NID
    addr = ipam.handle("IpamDriver.RequestAddress", {"PoolID": pool_id})["Address"]
    assert addr.startswith("10.1.0.") and addr.endswith("/32")
    r = net.handle(
        "NetworkDriver.CreateEndpoint",
        {"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": addr}},
    )
    mac = r["Interface"]["MacAddress"]
    wep = ds.get("WorkloadEndpoint", "h1-libnetwork-libnetwork-" + EID, "libnetwork")
    assert wep["spec"]["ipNetworks"] == [addr]
    assert wep["spec"]["profiles"] == ["net-a"] and wep["spec"]["mac"] == mac
    assert wep["spec"]["interfaceName"] == "cali" + EID[:11]
    assert ds.get("Profile", "net-a")["spec"]["labelsToApply"] == {"net-a": ""}
    j = net.handle("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID})
    assert j["InterfaceName"] == {"SrcName": "temp" + EID[:11], "DstPrefix": "cali"}
    assert j["Gateway"] == "169.254.1.1"
    assert j["StaticRoutes"] == [{"Destination": "169.254.1.1/32", "RouteType": 1, "NextHop": ""}]
    assert dp.links["cali" + EID[:11]].container_mac == mac
    assert net.handle("NetworkDriver.Leave", {"EndpointID": EID}) == {}
    assert dp.links == {}
    assert net.handle("NetworkDriver.DeleteEndpoint", {"EndpointID": EID}) == {}
    assert ipam.handle("IpamDriver.ReleaseAddress", {"Address": addr.split("/")[0]}) == {}
    assert net.handle("NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == {}
    assert ds.list("WorkloadEndpoint").items == []
    assert not ds.get("IPPool", "net-a")["metadata"].get("annotations")
    from pycalico.ipam.gc import check

    rep = check(ds)
    assert rep.problems == 0 and rep.allocations == 0


@pytest.mark.parametrize(
    ("method", "req", "needle"),
    [
        ("IpamDriver.RequestPool", {"Pool": "10.9.0.0/24"}, "must match the CIDR"),
        ("IpamDriver.RequestPool", {"Pool": "banana"}, "not a valid CIDR"),
        ("IpamDriver.RequestPool", {"Pool": "10.1.0.0/24", "SubPool": "10.1.0.0/25"}, "sub pools"),
        ("IpamDriver.RequestPool", {"Options": {"x": "y"}}, "--ipam-opt"),
        (
            "IpamDriver.RequestAddress",
            {"PoolID": "net-a", "Options": {"RequestAddressType": "com.docker.network.gateway"}},
            "gateway",
        ),
        ("IpamDriver.RequestAddress", {"PoolID": "nope"}, "no such Calico IP pool"),
        ("IpamDriver.RequestAddress", {"PoolID": "net-a", "Address": "10.50.0.1"}, "not in"),
    ],
)
def test_ipam_errors_are_clear(method: str, req: dict[str, Any], needle: str) -> None:
    _, ipam, _, _ = _drivers()
    r = ipam.handle(method, req)
    assert needle in r["Err"] and r["Error"] == r["Err"]


def test_pool_exhausted_and_specific_address() -> None:
    _, ipam, _, _ = _drivers()
    assert ipam.handle("IpamDriver.RequestAddress", {"PoolID": "tiny"})["Address"] == "10.2.0.1/32"
    r = ipam.handle("IpamDriver.RequestAddress", {"PoolID": "tiny"})
    assert "no addresses available in pool tiny" in r["Err"]
    got = ipam.handle("IpamDriver.RequestAddress", {"PoolID": "net-a", "Address": "10.1.0.9"})
    assert got["Address"] == "10.1.0.9/32"
    again = ipam.handle("IpamDriver.RequestAddress", {"PoolID": "net-a", "Address": "10.1.0.9"})
    assert "already allocated" in again["Err"]


@pytest.mark.parametrize(
    ("options", "ipv4", "needle"),
    [
        ({"com.docker.network.internal": True}, "0.0.0.0/0", "flag --internal"),
        ({"com.docker.network.generic": {"foo": "bar"}}, "0.0.0.0/0", "option foo"),
        ({}, "10.1.0.1", "--ipam-driver calico-ipam"),
    ],
)
def test_create_network_refuses_options_and_other_ipam(
    options: dict[str, Any], ipv4: str, needle: str
) -> None:
    _, _, net, _ = _drivers()
    r = net.handle(
        "NetworkDriver.CreateNetwork",
        {
            "NetworkID": NID,
            "Options": options,
            "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": ipv4}],
        },
    )
    assert needle in r["Err"]


def test_network_needs_subnet_and_hosts_share_a_pool() -> None:
    ds, ipam, net, _ = _drivers()
    r = net.handle(
        "NetworkDriver.CreateNetwork",
        {"NetworkID": NID, "IPv4Data": [{"Pool": "0.0.0.0/0", "Gateway": "0.0.0.0/0"}]},
    )
    assert "--subnet" in r["Err"]
    _create(net, ipam)
    # another host's dockerd: its own id for the same local-scope network
    other = "m" * 64
    r = net.handle(
        "NetworkDriver.CreateNetwork",
        {"NetworkID": other, "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "0.0.0.0/0"}]},
    )
    assert r == {}
    net.handle(
        "NetworkDriver.CreateEndpoint",
        {"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.5/24"}},
    )
    wep = ds.get("WorkloadEndpoint", "h1-libnetwork-libnetwork-" + EID, "libnetwork")
    assert wep["spec"]["profiles"] == ["net-a"]
    net.handle("NetworkDriver.DeleteNetwork", {"NetworkID": NID})  # not the annotated one
    ann = ds.get("IPPool", "net-a")["metadata"]["annotations"]
    assert ann[NETWORK_ID_ANNOTATION] == other
    r = net.handle(
        "NetworkDriver.CreateEndpoint",
        {"NetworkID": "z" * 64, "EndpointID": EID, "Interface": {"Address": "10.9.0.5/24"}},
    )
    assert "no Calico IP pool backs it" in r["Err"]
    assert "Err" in net.handle("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": "x" * 64})


def test_labels_and_name_copied_from_docker() -> None:
    calls: list[tuple[str, str]] = []

    def lookup(nid: str, eid: str) -> ContainerInfo | None:
        calls.append((nid, eid))
        if len(calls) < 3:
            return None  # Docker has not recorded the endpoint yet
        return ContainerInfo("web", {"org.projectcalico.label.role": "db", "other": "x"})

    ds, ipam, net, _ = _drivers(lookup=lookup)
    _create(net, ipam)
    addr = ipam.handle("IpamDriver.RequestAddress", {"PoolID": "net-a"})["Address"]
    iface = {"Address": addr, "MacAddress": "02:00:00:00:00:01"}
    r = net.handle(
        "NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID, "Interface": iface}
    )
    assert r == {"Interface": {}}  # Docker chose the MAC: nothing to return
    net.handle("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID})
    name = "h1-libnetwork-libnetwork-" + EID

    def labelled() -> dict[str, Any] | None:
        w = ds.get("WorkloadEndpoint", name, "libnetwork")
        return w if w["metadata"]["labels"].get("role") == "db" else None

    w = wait_for(labelled, 5, 0.02)
    assert "other" not in w["metadata"]["labels"] and w["spec"]["workload"] == "web"
    assert w["spec"]["mac"] == "02:00:00:00:00:01"


def _post(path: Path, method: str, body: bytes) -> dict[str, Any]:
    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(path))
            self.sock = s

    c = Conn("localhost", timeout=5)
    c.request("POST", "/" + method, body, {"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type") == "application/vnd.docker.plugins.v1.2+json"
    out: dict[str, Any] = json.loads(r.read())
    c.close()
    return out


def test_server_speaks_json_over_a_unix_socket(tmp_path: Path) -> None:
    _, ipam, _, _ = _drivers()
    path = tmp_path / "plugins" / "calico-ipam.sock"
    srv = PluginServer(str(path), ipam.handle)
    srv.start("t")
    try:
        assert _post(path, "Plugin.Activate", b"") == {"Implements": ["IpamDriver"]}
        r = _post(path, "IpamDriver.RequestPool", json.dumps({"Pool": "10.1.0.0/24"}).encode())
        assert r["PoolID"] == "net-a"
        assert "not JSON" in _post(path, "IpamDriver.RequestPool", b"{nope")["Err"]
        deep = b"[" * 100_000 + b"]" * 100_000  # under the size cap, too deep for json
        assert "nested too deeply" in _post(path, "IpamDriver.RequestPool", deep)["Err"]
        # A Content-Length over 1 MiB is refused without reading; the server keeps serving.
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(b"POST /IpamDriver.RequestPool HTTP/1.1\r\nHost: d\r\n"
                      b"Content-Length: 999999999999\r\n\r\n{")  # fmt: skip
            s.settimeout(5)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b"request body must be" in answer
        assert _post(path, "Plugin.Activate", b"") == {"Implements": ["IpamDriver"]}
    finally:
        srv.close()
    assert not path.exists()


def test_dual_stack_endpoint_gets_the_v6_gateway() -> None:
    ds, ipam, net, dp = _drivers()
    _create(net, ipam)
    iface = {"Address": "10.1.0.7/24", "AddressIPv6": "fd00::7/64"}
    net.handle(
        "NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID, "Interface": iface}
    )
    wep = ds.get("WorkloadEndpoint", "h1-libnetwork-libnetwork-" + EID, "libnetwork")
    assert wep["spec"]["ipNetworks"] == ["10.1.0.7/32", "fd00::7/128"]
    j = net.handle("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID})
    assert j["GatewayIPv6"] == "fe80::ecee:eeff:feee:eeee"
    assert {"Destination": "fe80::ecee:eeff:feee:eeee/128", "RouteType": 1, "NextHop": ""} in j[
        "StaticRoutes"
    ]
    assert dp.links["cali" + EID[:11]].v6 == ["fd00::7/128"]


CE, CN, RA = (
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.CreateNetwork",
    "IpamDriver.RequestAddress",
)


@pytest.mark.parametrize(
    ("method", "body", "says"),
    [
        (CE, {"EndpointID": 5}, "EndpointID must be a string, not a number (5)"),
        (CE, {"EndpointID": "../etc"}, "EndpointID must be a Docker id"),
        (CE, {"EndpointID": EID, "Interface": "x"}, "Interface must be an object"),
        (CE, {"EndpointID": EID, "Interface": {"Address": ["10.1.0.5"]}},
         "Interface: Address must be a string, not a list"),
        (CE, {"EndpointID": EID, "Interface": {"Address": "fd00::1/64"}}, "not an IPv4 address"),
        (CE, {"EndpointID": EID, "Interface": {"Address": "10.1.0.5/24", "MacAddress": "zz"}},
         "'zz' is not a MAC address"),
        (CN, {"NetworkID": NID, "IPv4Data": [1]}, "IPv4Data[0] must be an object"),
        (CN, {"NetworkID": NID, "IPv4Data": {}}, "IPv4Data must be a list of objects"),
        ("NetworkDriver.Join", [], "the request body must be a JSON object, not a list"),
        (RA, {"Address": [None]}, "Address must be a string"),
        (RA, {"Address": "10.1.0.300"}, "--ip '10.1.0.300': not an IP address"),
        ("IpamDriver.RequestPool", {"V6": "yes"}, "V6 must be a boolean"),
        ("IpamDriver.RequestPool", {"Pool": "x" * 5000}, "...(5000 chars)"),
        ("NetworkDriver.Bogus\x00" + "y" * 500, {}, "unsupported method NetworkDriver.Bogus\\x00"),
    ],
)  # fmt: skip
def test_malformed_requests_get_an_error_naming_the_field(
    method: str, body: Any, says: str
) -> None:
    """Every field is type-checked before use: an error names the field and quotes a short,
    escaped excerpt of what came (never a Python exception's text, never the whole value),
    and nothing is written."""
    ds, ipam, net, dp = _drivers()
    before = {k: ds.list(k).items for k in ("WorkloadEndpoint", "IPPool", "Profile")}
    r = (ipam if method.startswith("Ipam") else net).handle(method, body)
    assert says in r["Err"] and r["Err"] == r["Error"], r
    assert len(r["Err"]) < 400 and "\x00" not in r["Err"]
    assert {k: ds.list(k).items for k in before} == before and not dp.links
