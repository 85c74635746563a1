"""Node IP autodetection (pure function over interface lists)."""

from __future__ import annotations

import ipaddress

import pytest

from pycalico.felix.calc.routes import host_mtu  # the one rule, over autodetected interfaces
from pycalico.node.autodetect import AutodetectError, Interface, autodetect


def itf(index: int, name: str, *addrs: str, up: bool = True, mtu: int = 1500) -> Interface:
    return Interface(index, name, tuple(ipaddress.ip_interface(a) for a in addrs), up, mtu)


HOST = [
    itf(1, "lo", "127.0.0.1/8", "::1/128"),
    itf(2, "docker0", "172.17.0.1/16"),
    itf(3, "cali1234567890a", "169.254.1.1/32"),
    itf(4, "eth0", "fe80::1/64", "10.0.0.5/24", "2001:db8::5/64"),
    itf(5, "eth1", "192.168.7.9/20"),
    itf(6, "vxlan.calico", "10.244.1.0/32"),
    itf(7, "tunl0", "10.244.2.0/32"),
]


def test_first_found_skips_excluded_and_link_local() -> None:
    assert str(autodetect("first-found", HOST)) == "10.0.0.5/24"
    assert str(autodetect("", HOST)) == "10.0.0.5/24"
    assert str(autodetect("first-found", HOST, version=6)) == "2001:db8::5/64"


def test_first_found_uses_index_order_not_list_order() -> None:
    assert str(autodetect("first-found", list(reversed(HOST)))) == "10.0.0.5/24"


def test_interface_regex_and_list() -> None:
    assert str(autodetect("interface=eth1", HOST)) == "192.168.7.9/20"
    assert str(autodetect("interface=nomatch,eth.*", HOST)) == "10.0.0.5/24"
    # an explicit interface regex may even name a device first-found skips
    assert str(autodetect("interface=docker0", HOST)) == "172.17.0.1/16"


def test_skip_interface_keeps_default_excludes() -> None:
    assert str(autodetect("skip-interface=eth0", HOST)) == "192.168.7.9/20"
    with pytest.raises(AutodetectError, match="no valid IPv4"):
        autodetect("skip-interface=eth.*", HOST)


def test_cidr_method() -> None:
    assert str(autodetect("cidr=192.168.0.0/16", HOST)) == "192.168.7.9/20"
    assert str(autodetect("cidr=1.2.3.0/24, 10.0.0.0/8", HOST)) == "10.0.0.5/24"
    with pytest.raises(AutodetectError, match="invalid CIDR"):
        autodetect("cidr=banana", HOST)


def test_can_reach_uses_route_lookup_source() -> None:
    seen = []

    def lookup(dest: ipaddress.IPv4Address | ipaddress.IPv6Address):  # type: ignore[no-untyped-def]
        seen.append(dest)
        return ipaddress.ip_address("192.168.7.9")

    assert str(autodetect("can-reach=8.8.8.8", HOST, route_lookup=lookup)) == "192.168.7.9/20"
    assert seen == [ipaddress.ip_address("8.8.8.8")]
    with pytest.raises(AutodetectError, match="no valid"):
        autodetect("can-reach=8.8.8.8", HOST, route_lookup=lambda d: None)
    with pytest.raises(AutodetectError, match="not an IP address"):
        autodetect("can-reach=example.com", HOST, route_lookup=lookup)


def test_bad_method_and_regex() -> None:
    with pytest.raises(AutodetectError, match="IP_AUTODETECTION_METHOD 'magic'"):
        autodetect("magic", HOST)
    with pytest.raises(AutodetectError, match="invalid regular expression"):
        autodetect("interface=(", HOST)


def test_host_mtu_smallest_matching_up_interface() -> None:
    ifs = [
        itf(1, "lo", mtu=65536),
        itf(2, "eth0", mtu=9000),
        itf(3, "ens3", mtu=1400),
        itf(4, "eth1", mtu=1000, up=False),
        itf(5, "cali123", mtu=1200),
    ]
    assert host_mtu(ifs, r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)") == 1400
    assert host_mtu([itf(1, "lo", mtu=65536)], r"^eth") == 1460
