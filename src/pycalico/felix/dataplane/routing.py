"""RouteDataplane: make the kernel of one network namespace match a route DesiredState — the
facade over the route, VXLAN, IPIP, sysctl, NAT-outgoing and MTU drivers (same contract as
the route agent's former ``KernelRoutes``).

Owns, and touches nothing else than: main-table routes with protocol 80, our VXLAN device with
its address/neighbours/FDB, the userspace ``tunl0``, the ``calico-nat`` nft table, the
forwarding sysctls and the MTU file. One instance per IP version (IPIP is IPv4 only).

Invariants (Felix's desired-vs-actual drivers):
- An incremental apply writes only the delta against what the drivers believe the kernel
  holds, and reads nothing when nothing changed; a *full* apply (first run, periodic resync,
  and automatically after any failure) re-reads the kernel first, so drift is repaired.
- Deletions only ever name objects we own (proto 80 routes; entries on our own device).
- :meth:`apply` never raises kernel errors: each step's failure is returned as a problem
  ``"<step>: <error>"`` and makes the next apply full. Single-threaded: the owner loop only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pycalico.errors import CalicoError
from pycalico.felix.calc.routes import host_mtu
from pycalico.felix.calc.routetypes import Addr, DesiredState, HostFacts
from pycalico.felix.dataplane.ipip import IpipDriver
from pycalico.felix.dataplane.mtu import MtuFile
from pycalico.felix.dataplane.natout import NatOutgoing
from pycalico.felix.dataplane.routes import RouteDriver
from pycalico.felix.dataplane.sysctls import SysctlDriver
from pycalico.felix.dataplane.uipip import UserspaceIpip
from pycalico.felix.dataplane.vxlan import VxlanDriver
from pycalico.system.kernel import Kernel
from pycalico.system.process import ProcessRunner, SubprocessRunner
from pycalico.system.sysctl import Sysctl

log = logging.getLogger(__name__)


class RouteDataplane:
    def __init__(
        self,
        kernel: Kernel,
        sysctl: Sysctl,
        *,
        mtu_file: str | None = None,
        nat: bool = True,
        ipip_factory: Callable[[str, str], UserspaceIpip] = UserspaceIpip,
        version: int = 4,
        runner: ProcessRunner | None = None,
    ) -> None:
        """``runner`` runs ``nft`` for NAT-outgoing (default: a SubprocessRunner)."""
        self.kernel = kernel
        self.sysctl = sysctl
        self.version = version
        self.routes = RouteDriver(kernel, version)
        self.vxlan = VxlanDriver(kernel, version)
        self.tunnel = IpipDriver(kernel, ipip_factory) if version == 4 else None
        self.sysctls = SysctlDriver(sysctl, version)
        self.nat = NatOutgoing(runner or SubprocessRunner(), version) if nat else None
        self.mtu = MtuFile(mtu_file)
        self._nat_writes = 0
        self._full_next = True

    @property
    def ipip(self) -> UserspaceIpip | None:
        return self.tunnel.tunnel if self.tunnel is not None else None

    @property
    def writes(self) -> int:
        """Kernel write batches (and tunnel/NAT/MTU writes) issued so far."""
        n = self.routes.writes + self.vxlan.writes + self._nat_writes + self.mtu.writes
        return n + (self.tunnel.writes if self.tunnel is not None else 0)

    def facts(self, node_ip: Addr | None, mtu_pattern: str) -> HostFacts:
        """The interface holding ``node_ip`` and the host MTU (reads links and addresses)."""
        links = self.kernel.list_links()
        iface = None
        if node_ip is not None:
            for a in self.kernel.list_addrs():
                if a.ip.ip == node_ip:
                    iface = a.dev
        return HostFacts(underlay_iface=iface, host_mtu=host_mtu(links, mtu_pattern))

    def apply(self, want: DesiredState, *, full: bool) -> list[str]:
        """Converge; returns problems (empty = fully applied)."""
        full = full or self._full_next
        if full:
            self._resync()
        errors: list[str] = []
        steps: list[tuple[str, Callable[[], None]]] = [
            ("sysctls", (lambda: self.sysctls.apply(want)) if full else lambda: None),
            ("vxlan device", lambda: self._vxlan_device(want)),
            ("ipip tunnel", lambda: self._ipip(want)),
            ("vteps", lambda: self.vxlan.apply_vteps(want.vteps, want.vxlan is not None)),
            ("routes", lambda: self._routes(want)),
            ("nat-outgoing", lambda: self._nat(want, full)),
            ("mtu file", lambda: self.mtu.apply(want.pod_mtu)),
        ]
        for name, fn in steps:
            try:
                fn()
            except (CalicoError, OSError, ValueError) as e:
                errors.append(f"{name}: {e}")
        self._full_next = bool(errors)
        return errors

    def request_resync(self, part: str) -> None:
        """The next apply re-reads ``part`` of the kernel's state: ``routes`` (a route
        event) or ``vxlan`` (the device and its VTEP entries: a neighbour or FDB event);
        the rest is not re-read."""
        if part == "routes":
            self.routes.request_resync()
        elif part == "vxlan":
            self.vxlan.request_resync()
        else:
            raise ValueError(f"unknown part {part!r}")

    def _resync(self) -> None:
        self.routes.request_resync()
        self.vxlan.request_resync()
        if self.tunnel is not None:
            self.tunnel.request_resync()

    def _vxlan_device(self, want: DesiredState) -> None:
        if self.vxlan.apply_device(want.vxlan):
            self.routes.request_resync()  # routes through the old device went with it

    def _ipip(self, want: DesiredState) -> None:
        if self.tunnel is not None and self.tunnel.apply(want):
            self.routes.request_resync()

    def _routes(self, want: DesiredState) -> None:
        self.routes.set_desired(want.routes)
        self.routes.apply()

    def _nat(self, want: DesiredState, full: bool) -> None:
        if self.nat is not None:
            excl = want.nat_exclude if want.nat_exclude else None
            if self.nat.reconcile(
                want.masq_pools,
                want.all_pools,
                exclude_hosts=excl,
                snat_to=want.nat_snat_to,
                check=full,
            ):
                self._nat_writes += 1

    def close(self) -> None:
        """Stop the userspace tunnel's I/O; devices and routes stay (as Calico leaves the
        dataplane in place when Felix stops)."""
        if self.tunnel is not None:
            self.tunnel.close()
