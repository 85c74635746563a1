"""The autodetection readers (``ip -j`` through the process seam) see what netlink sees:
compared with pyroute2 on a namespace this test builds (veth, v4/v6 addresses, a down link)."""

from __future__ import annotations

import ipaddress
import json

import pytest
from pyroute2 import NetNS

from pycalico.node.autodetect import parse_ip_addr, route_source
from pycalico.system.process import SubprocessRunner
from tests.fixtures.netns import NetnsFactory

pytestmark = [pytest.mark.netns]


class _InNetns(SubprocessRunner):
    """Runs every argv inside one namespace (``ip netns exec``)."""

    def __init__(self, ns: str) -> None:
        super().__init__()
        self.ns = ns

    def run(self, argv, **kw):  # type: ignore[no-untyped-def, override]
        return super().run(["ip", "netns", "exec", self.ns, *argv], **kw)


def test_readers_agree_with_netlink(netns_factory: NetnsFactory) -> None:
    a = netns_factory.netns("ada")
    b = netns_factory.netns("adb")
    netns_factory.veth(a, "eth0", b, "eth0", a_addr="198.18.7.1/24", b_addr="198.18.7.2/24")
    a.batch(["addr add 2001:db8:7::1/64 dev eth0 nodad", "link add br-x type bridge"])
    got = parse_ip_addr(json.loads(a.exec("ip", "-j", "-d", "addr", "show").stdout))
    with NetNS(a.name) as ipr:
        want = {}
        for link in ipr.get_links():
            want[link["index"]] = (link.get_attr("IFLA_IFNAME"), bool(link["flags"] & 1))
        addrs = {
            (x["index"], f"{x.get_attr('IFA_LOCAL') or x.get_attr('IFA_ADDRESS')}/{x['prefixlen']}")
            for x in ipr.get_addr()
        }
    assert {i.index: (i.name, i.up) for i in got} == want
    assert {(i.index, str(ip)) for i in got for ip in i.addresses} == addrs
    eth0 = next(i for i in got if i.name == "eth0")
    assert ipaddress.ip_interface("198.18.7.1/24") in eth0.addresses and eth0.kind == "veth"
    assert next(i for i in got if i.name == "br-x").kind == "bridge"
    runner = _InNetns(a.name)
    assert route_source(ipaddress.ip_address("198.18.7.2"), runner) == ipaddress.ip_address(
        "198.18.7.1"
    )
    assert route_source(ipaddress.ip_address("203.0.113.9"), runner) is None  # no route
