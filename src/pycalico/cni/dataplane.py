"""Workload wiring: the veth pair, addresses, routes and sysctls Calico gives a workload.

Owns the kernel side of ADD/DEL/CHECK behind :class:`WorkloadDataplane`:
:class:`LinuxDataplane` (iproute2 ``-batch`` + ``/proc/sys``, see bench/cni.py for why not
pyroute2) and :class:`FakeDataplane` (in-memory, with failure injection) for unit tests.

Wiring, exactly as Calico: host veth ``cali…`` (MAC ``ee:ee:ee:ee:ee:ee``, up, sysctls
``proxy_arp=1``, ``neigh.proxy_delay=0``, ``forwarding=1``, ``route_localnet=1``; v6
``forwarding=1``, ``accept_ra=0``), host route ``<ip>/32 dev cali… scope link`` (``/128``);
container side ``CNI_IFNAME`` with the ``/32``/``/128`` addresses, ``169.254.1.1/32 dev eth0
scope link`` + ``default via 169.254.1.1``; v6 default via the host side's link-local
``fe80::ecee:eeff:feee:eeee`` (derived from the fixed MAC, so no waiting).

Invariants: :meth:`setup` either completes or removes the veth it created before raising
:class:`WiringError`; :meth:`teardown` is idempotent (missing netns/links are success).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pycalico.errors import CalicoError
from pycalico.system.iproute import IpError, IpRoute
from pycalico.system.netns import exists as netns_exists
from pycalico.system.netns import netns_name
from pycalico.system.sysctl import Sysctl, SysctlError

HOST_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY_V4 = "169.254.1.1"
GATEWAY_V6 = "fe80::ecee:eeff:feee:eeee"
_PROC_PID_NS = re.compile(r"^/proc/(\d+)/ns/net$")


class WiringError(CalicoError):
    """Setting up or checking a workload interface failed."""


class InterfaceExists(WiringError):
    """``CNI_IFNAME`` already exists in the container (ADD twice without DEL)."""


@dataclass(frozen=True)
class WorkloadIface:
    host_ifname: str
    container_ifname: str
    netns: str
    addresses: tuple[str, ...]  # "10.0.0.5/32", "fd00::5/128"
    mtu: int
    container_mac: str

    @property
    def v4(self) -> list[str]:
        return [a for a in self.addresses if ":" not in a]

    @property
    def v6(self) -> list[str]:
        return [a for a in self.addresses if ":" in a]


class WorkloadDataplane(Protocol):
    def setup(self, w: WorkloadIface) -> None: ...

    def teardown(self, host_ifname: str, netns: str, container_ifname: str) -> bool:
        """Remove the pair; True if something was removed."""
        ...

    def check(self, w: WorkloadIface) -> list[str]:
        """Problems found (empty = all present and correct)."""
        ...


def random_mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{x:02x}" for x in b)


def read_mtu_file(path: str) -> int:
    """The MTU Felix wrote (``/var/lib/calico/mtu``); 0 when absent or unparsable."""
    try:
        with open(path) as f:
            v = int(f.read().strip())
    except (OSError, ValueError):
        return 0
    return v if 68 <= v <= 65535 else 0


def _host_sysctls(name: str, v6: bool) -> list[tuple[str, int]]:
    out = [
        (f"net.ipv4.conf.{name}.route_localnet", 1),
        (f"net.ipv4.neigh.{name}.proxy_delay", 0),
        (f"net.ipv4.conf.{name}.proxy_arp", 1),
        (f"net.ipv4.conf.{name}.forwarding", 1),
    ]
    if v6:
        out += [
            (f"net.ipv6.conf.{name}.accept_dad", 0),
            (f"net.ipv6.conf.{name}.accept_ra", 0),
            (f"net.ipv6.conf.{name}.forwarding", 1),
        ]
    return out


def _host_routes(w: WorkloadIface) -> list[str]:
    routes = [f"route replace {a.split('/')[0]} dev {w.host_ifname} scope link" for a in w.v4]
    routes += [f"route replace {a.split('/')[0]}/128 dev {w.host_ifname}" for a in w.v6]
    # Static neighbour entries, as Felix programs them: no ARP/ND round trip for the
    # workload, and permanent entries do not count against the kernel's (global)
    # neighbour-table limit, which many namespaces on one host can exhaust.
    routes += [
        f"neigh replace {a.split('/')[0]} lladdr {w.container_mac} dev {w.host_ifname} "
        "nud permanent"
        for a in (*w.v4, *w.v6)
    ]
    return routes


class LinuxDataplane:
    """Wires workloads with two or three ``ip -batch`` processes plus /proc/sys writes."""

    def __init__(
        self,
        ip: IpRoute,
        sysctl: Sysctl,
        netns_exists: Callable[[str], bool] = netns_exists,
        netns_via: Mapping[str, str] | None = None,
    ) -> None:
        self.ip = ip
        self.sysctl = sysctl
        self.netns_exists = netns_exists
        # CNI_NETNS -> the path this process reaches it by (e.g. /proc/<pid>/fd/<n> for a
        # namespace fd the CNI server received); messages and results keep CNI_NETNS.
        self.netns_via = dict(netns_via or {})

    def _reach(self, netns: str) -> str:
        return self.netns_via.get(netns, netns)

    def host_link_exists(self, name: str) -> bool:
        return self.sysctl.exists(f"net.ipv4.conf.{name}")

    def _container_has(self, netns: str, ifname: str) -> bool:
        try:
            self.ip.run("link", "show", "dev", ifname, netns=netns)
        except IpError:
            return False
        return True

    def setup(self, w: WorkloadIface) -> None:
        ns = self._reach(w.netns)
        if not self.netns_exists(ns):
            raise WiringError(f"netns {w.netns} does not exist")
        host: list[str] = []
        if self.host_link_exists(w.host_ifname):
            # A stale host veth: fine (Calico deletes it) unless its container end is this
            # very interface, i.e. an ADD repeated without DEL.
            if self._container_has(ns, w.container_ifname):
                raise InterfaceExists(
                    f"interface {w.container_ifname} already exists in netns {w.netns}"
                )
            host.append(f"link del {w.host_ifname}")
        name = netns_name(ns)
        m = _PROC_PID_NS.match(ns)
        target = name if name is not None else (m.group(1) if m else None)
        v6 = bool(w.v6)
        created = False
        try:
            if target is not None:
                host.append(
                    f"link add {w.host_ifname} mtu {w.mtu} address {HOST_MAC} type veth "
                    f"peer name {w.container_ifname} mtu {w.mtu} address {w.container_mac} "
                    f"netns {target}"
                )
            else:
                # CNI_NETNS is some other bind mount: create from inside, peer to our netns.
                self.ip.batch(host, None)
                host = []
                self.ip.batch(
                    [
                        f"link add {w.container_ifname} mtu {w.mtu} address {w.container_mac} "
                        f"type veth peer name {w.host_ifname} mtu {w.mtu} address {HOST_MAC} "
                        f"netns {os.getpid()}"
                    ],
                    ns,
                )
                created = True
            up = [f"link set {w.host_ifname} up", *_host_routes(w)]
            if v6:
                # v6 sysctls (no DAD on the host side) must precede link-up.
                self.ip.batch(host, None)
                created = True
                self._set_sysctls(w.host_ifname, v6)
                self.ip.batch(up, None)
            else:
                self.ip.batch(host + up, None)
                created = True
                self._set_sysctls(w.host_ifname, v6)
            self.ip.batch(self._container_lines(w), ns)
        except (IpError, SysctlError) as e:
            if created:
                self._delete_host(w.host_ifname)
            if "File exists" in str(e) and not created:
                raise InterfaceExists(
                    f"interface {w.container_ifname} already exists in netns {w.netns}: {e}"
                ) from None
            raise WiringError(f"wiring {w.host_ifname}/{w.container_ifname}: {e}") from None

    def setup_host(self, w: WorkloadIface) -> None:
        """The host half only, for runtimes that move the peer themselves (Docker's
        libnetwork): the pair is created here, the peer named ``w.container_ifname`` stays in
        this namespace (the runtime moves it, renames it and puts the addresses, gateway and
        routes on it); host side exactly as :meth:`setup` (MAC, up, /32 route, permanent
        neighbour, sysctls). Removes what it created before raising :class:`WiringError`."""
        v6 = bool(w.v6)
        pre = [f"link del {w.host_ifname}"] if self.host_link_exists(w.host_ifname) else []
        add = (
            f"link add {w.host_ifname} mtu {w.mtu} address {HOST_MAC} type veth "
            f"peer name {w.container_ifname} mtu {w.mtu} address {w.container_mac}"
        )
        created = False
        try:
            self.ip.batch([*pre, add], None)
            created = True
            self._set_sysctls(w.host_ifname, v6)
            self.ip.batch([f"link set {w.host_ifname} up", *_host_routes(w)], None)
        except (IpError, SysctlError) as e:
            if created:
                self._delete_host(w.host_ifname)
            raise WiringError(f"wiring {w.host_ifname}/{w.container_ifname}: {e}") from None

    def _set_sysctls(self, name: str, v6: bool) -> None:
        for key, value in _host_sysctls(name, v6):
            self.sysctl.write(key, value)

    @staticmethod
    def _container_lines(w: WorkloadIface) -> list[str]:
        dev = w.container_ifname
        lines = [f"link set {dev} up"]
        for a in w.v4:
            lines.append(f"addr add {a} dev {dev}")
        for a in w.v6:
            lines.append(f"addr add {a} dev {dev} nodad")
        if w.v4:
            lines += [
                f"route add {GATEWAY_V4}/32 dev {dev} scope link",
                f"route add default via {GATEWAY_V4} dev {dev}",
                f"neigh replace {GATEWAY_V4} lladdr {HOST_MAC} dev {dev} nud permanent",
            ]
        if w.v6:
            lines.append(f"route add ::/0 via {GATEWAY_V6} dev {dev}")
        return lines

    def _delete_host(self, name: str) -> bool:
        try:
            self.ip.batch([f"link del {name}"], None)
        except IpError:
            return False
        return True

    def teardown(self, host_ifname: str, netns: str, container_ifname: str) -> bool:
        if self.host_link_exists(host_ifname):
            return self._delete_host(host_ifname)
        return False

    def check(self, w: WorkloadIface) -> list[str]:
        problems: list[str] = []
        ns = self._reach(w.netns)
        if not self.netns_exists(ns):
            return [f"netns {w.netns} does not exist"]
        dev = w.container_ifname
        try:
            docs = self.ip.query([f"addr show dev {dev}", f"route show dev {dev}"], ns)
        except IpError as e:
            return [f"container interface {dev}: {e}"]
        addrs = {
            f"{a['local']}/{a['prefixlen']}" for link in docs[0] for a in link.get("addr_info", [])
        }
        for a in w.addresses:
            if a not in addrs:
                problems.append(f"address {a} missing on {dev}")
        if docs[0] and docs[0][0].get("address", "").lower() != w.container_mac.lower():
            problems.append(f"{dev} MAC {docs[0][0].get('address')} != {w.container_mac}")
        if w.v4:
            dsts = {(r.get("dst"), r.get("gateway")) for r in docs[1]}
            if (GATEWAY_V4, None) not in dsts:
                problems.append(f"route {GATEWAY_V4} dev {dev} missing")
            if ("default", GATEWAY_V4) not in dsts:
                problems.append(f"default route via {GATEWAY_V4} missing")
        if w.v6:
            out = self.ip.run("-6", "route", "show", "dev", dev, netns=ns)
            if GATEWAY_V6 not in out:
                problems.append(f"v6 default route via {GATEWAY_V6} missing")
        problems += self._check_host(w)
        return problems

    def _check_host(self, w: WorkloadIface) -> list[str]:
        h = w.host_ifname
        if not self.host_link_exists(h):
            return [f"host interface {h} missing"]
        problems: list[str] = []
        docs = self.ip.query([f"link show dev {h}", f"route show dev {h}"], None)
        link: dict[str, Any] = docs[0][0] if docs[0] else {}
        if link.get("address") != HOST_MAC:
            problems.append(f"{h} MAC {link.get('address')} != {HOST_MAC}")
        if "UP" not in link.get("flags", []):
            problems.append(f"{h} is down")
        dsts = {r.get("dst") for r in docs[1]}
        for a in w.v4:
            if a.split("/")[0] not in dsts:
                problems.append(f"host route {a} dev {h} missing")
        for key, want in _host_sysctls(h, False):
            try:
                got = self.sysctl.read(key)
            except SysctlError as e:
                problems.append(str(e))
                continue
            if got != str(want):
                problems.append(f"sysctl {key}={got}, want {want}")
        return problems


@dataclass
class FakeDataplane:
    """In-memory dataplane: ``links`` maps host ifname -> its WorkloadIface.

    ``fail_setup`` makes the next setups raise WiringError (after "creating" nothing);
    ``netns_present`` lists namespaces that exist (None = all).
    """

    links: dict[str, WorkloadIface] = field(default_factory=dict)
    fail_setup: int = 0
    netns_present: set[str] | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def setup(self, w: WorkloadIface) -> None:
        self.calls.append(("setup", w.host_ifname))
        if self.netns_present is not None and w.netns not in self.netns_present:
            raise WiringError(f"netns {w.netns} does not exist")
        if self.fail_setup:
            self.fail_setup -= 1
            raise WiringError(f"injected failure wiring {w.host_ifname}")
        for other in self.links.values():
            if other.netns == w.netns and other.container_ifname == w.container_ifname:
                raise InterfaceExists(f"interface {w.container_ifname} already exists")
        self.links[w.host_ifname] = w

    def setup_host(self, w: WorkloadIface) -> None:
        self.calls.append(("setup_host", w.host_ifname))
        if self.fail_setup:
            self.fail_setup -= 1
            raise WiringError(f"injected failure wiring {w.host_ifname}")
        self.links[w.host_ifname] = w

    def teardown(self, host_ifname: str, netns: str, container_ifname: str) -> bool:
        self.calls.append(("teardown", host_ifname))
        return self.links.pop(host_ifname, None) is not None

    def check(self, w: WorkloadIface) -> list[str]:
        have = self.links.get(w.host_ifname)
        if have is None:
            return [f"host interface {w.host_ifname} missing"]
        return [f"address {a} missing" for a in w.addresses if a not in have.addresses]
