"""IPIP driver: the userspace ``tunl0`` (:class:`pycalico.felix.dataplane.uipip.UserspaceIpip`)
of the IPv4 instance: its I/O thread, next-hop table, MTU, up flag, address and the permanent
``0.0.0.0`` neighbour.

Owns ``tunl0`` only when it is a TUN device (ours); a kernel ``ipip`` tunl0 is never touched.

Invariants:
- With an :class:`IpipSpec` the tunnel runs bound to ``spec.local_ip`` (restarted when that
  changes or its thread died); the next hops are swapped in on every apply (cheap).
- The device's MTU/up/address/neighbour are written in ONE batch, only when the spec changed
  since the last confirmed apply (or after :meth:`request_resync`).
- On a point-to-point device every next hop shares one neighbour entry (key 0.0.0.0); making
  it permanent keeps tunl0 working when the kernel's (global) neighbour table is full, where
  creating it on demand fails with ENOBUFS.
- Without a spec the tunnel is stopped and its device removed; a TUN ``tunl0`` left by an
  earlier run is deleted (checked once per resync).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from pycalico.felix.calc.routetypes import IPIP_DEVICE, DesiredState, IpipSpec
from pycalico.felix.dataplane.uipip import UserspaceIpip
from pycalico.system.kernel import Address, Kernel, Neighbour

ZERO = ipaddress.IPv4Address("0.0.0.0")


class IpipDriver:
    def __init__(
        self, kernel: Kernel, factory: Callable[[str, str], UserspaceIpip] = UserspaceIpip
    ) -> None:
        self.kernel = kernel
        self.factory = factory
        self.tunnel: UserspaceIpip | None = None
        self._spec: IpipSpec | None = None  # device state confirmed by the last apply
        self._absent = False  # checked: no stale tunl0 of ours
        self.writes = 0

    def request_resync(self) -> None:
        self._spec, self._absent = None, False

    def apply(self, want: DesiredState) -> bool:
        """Converge; True when the tunnel was (re)started (routes through it must be
        re-read: a new device has none)."""
        spec = want.ipip
        if spec is None:
            if self.tunnel is not None:
                self.tunnel.stop(remove=True)
                self.tunnel = None
                self.writes += 1
            elif not self._absent:
                link = self.kernel.get_link(IPIP_DEVICE)
                if link is not None and link.kind == "tun":
                    self.kernel.del_link(IPIP_DEVICE)
                    self.writes += 1
            self._spec, self._absent = None, True
            return False
        self._absent = False
        started = False
        t = self.tunnel
        if t is not None and (not t.running or t.local_ip != str(spec.local_ip)):
            t.stop()
            self.tunnel = None
        if self.tunnel is None:
            self.tunnel = self.factory(IPIP_DEVICE, str(spec.local_ip))
            self.tunnel.start()
            self._spec, started = None, True
        self.tunnel.set_next_hops(want.ipip_next_hops)
        if spec == self._spec:
            return started
        link = self.kernel.get_link(IPIP_DEVICE)
        have = {a.ip for a in self.kernel.list_addrs(IPIP_DEVICE, 4) if not a.scope_link}
        want_addrs = {ipaddress.ip_interface(f"{spec.address}/32")} if spec.address else set()
        with self.kernel.batch() as b:
            if link is None or link.mtu != spec.mtu:
                b.set_link(IPIP_DEVICE, mtu=spec.mtu)
            if link is None or not link.up:
                b.set_link(IPIP_DEVICE, up=True)
            b.replace_neigh(Neighbour(IPIP_DEVICE, ZERO, None, True))
            for a in sorted(want_addrs - have, key=str):
                b.replace_addr(Address(IPIP_DEVICE, a))
            for a in sorted(have - want_addrs, key=str):
                b.del_addr(Address(IPIP_DEVICE, a))
            self.writes += 1
        self._spec = spec
        return started

    def close(self) -> None:
        """Stop the I/O thread; the (persistent) device stays."""
        if self.tunnel is not None:
            self.tunnel.stop()
            self.tunnel = None
