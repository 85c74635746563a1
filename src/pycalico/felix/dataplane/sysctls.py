"""Sysctl driver: the forwarding sysctls of one IP family in the current network namespace,
and those of every local workload interface.

Owns ``net.ipv4.ip_forward`` + ``net.ipv4.conf.all.forwarding`` (IPv4) or
``net.ipv6.conf.all.forwarding`` (IPv6), and, as Calico's Felix configures each workload
interface it routes to, the per-interface settings the CNI plugin set when it wired the pod
(:data:`WORKLOAD_SYSCTLS`: proxy ARP and no proxy delay, so the pod's 169.254.1.1 gateway
answers; forwarding; route_localnet; IPv6: forwarding, no router advertisements). The
interfaces are the devices of the family's local workload routes (``scope link`` routes
with a device). Someone turning proxy ARP or forwarding off on a ``cali*`` interface is
seen by Felix's ``ip monitor netconf`` watcher and repaired by the full apply it triggers.

Invariants: a value is written only when it differs (or cannot be read); an interface that
vanished between the route calc and the write is skipped (its pod is going away); the IPv6
instance touches nothing while IPv6 is unused (no routes, no VXLAN), since IPv6 may even be
disabled on the host. Applied on full applies only.
"""

from __future__ import annotations

from pycalico.felix.calc.routetypes import DesiredState
from pycalico.system.sysctl import Sysctl, SysctlError

FORWARDING_SYSCTLS = {
    4: (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.forwarding", 1)),
    6: (("net.ipv6.conf.all.forwarding", 1),),
}
#: Per workload interface (``{}``: its name), by IP version.
WORKLOAD_SYSCTLS = {
    4: (
        ("net.ipv4.conf.{}.proxy_arp", 1),
        ("net.ipv4.neigh.{}.proxy_delay", 0),
        ("net.ipv4.conf.{}.forwarding", 1),
        ("net.ipv4.conf.{}.route_localnet", 1),
    ),
    6: (("net.ipv6.conf.{}.forwarding", 1), ("net.ipv6.conf.{}.accept_ra", 0)),
}


class SysctlDriver:
    def __init__(self, sysctl: Sysctl, version: int = 4) -> None:
        self.sysctl = sysctl
        self.version = version
        self.writes = 0

    def _ensure(self, key: str, val: int) -> None:
        try:
            if self.sysctl.read(key) == str(val):
                return
        except SysctlError:
            pass
        self.sysctl.write(key, val)
        self.writes += 1

    def apply(self, want: DesiredState) -> None:
        if self.version == 6 and not (want.routes or want.vxlan):
            return
        for key, val in FORWARDING_SYSCTLS[self.version]:
            self._ensure(key, val)
        ifaces = sorted({r.dev for r in want.routes.values() if r.scope_link and r.dev})
        for iface in ifaces:
            keys = [(k.format(iface), v) for k, v in WORKLOAD_SYSCTLS[self.version]]
            if not self.sysctl.exists(keys[0][0]):
                continue  # the interface is gone (or not there yet): nothing to configure
            for key, val in keys:
                self._ensure(key, val)
