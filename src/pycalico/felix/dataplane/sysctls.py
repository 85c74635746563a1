"""Sysctl driver: the forwarding sysctls of one IP family in the current network namespace.

Owns ``net.ipv4.ip_forward`` + ``net.ipv4.conf.all.forwarding`` (IPv4) or
``net.ipv6.conf.all.forwarding`` (IPv6). Invariants: a value is written only when it differs
(or cannot be read); the IPv6 instance touches nothing while IPv6 is unused (no routes, no
VXLAN), since IPv6 may even be disabled on the host. Applied on full applies only.
"""

from __future__ import annotations

from pycalico.felix.calc.routetypes import DesiredState
from pycalico.system.sysctl import Sysctl, SysctlError

FORWARDING_SYSCTLS = {
    4: (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.forwarding", 1)),
    6: (("net.ipv6.conf.all.forwarding", 1),),
}


class SysctlDriver:
    def __init__(self, sysctl: Sysctl, version: int = 4) -> None:
        self.sysctl = sysctl
        self.version = version

    def apply(self, want: DesiredState) -> None:
        if self.version == 6 and not (want.routes or want.vxlan):
            return
        for key, val in FORWARDING_SYSCTLS[self.version]:
            try:
                if self.sysctl.read(key) != str(val):
                    self.sysctl.write(key, val)
            except SysctlError:
                self.sysctl.write(key, val)
