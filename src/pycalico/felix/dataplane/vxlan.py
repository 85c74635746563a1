"""VXLAN driver: our VXLAN device of one IP family (``vxlan.calico`` / ``vxlan-v6.calico``),
its address, and the remote VTEPs as permanent neighbour + FDB entries on it.

Owns only objects on that device (whose name is our mark); foreign links are never touched.

Invariants:
- The device matches :class:`VxlanSpec` (VNI, port, local IP, parent, nolearning, MAC, MTU,
  up, exactly one global address ``<tunnel IP>/32|128``); a device whose identity differs is
  deleted and re-added (its neighbours, FDB entries and routes go with it: the caller is told
  so, to re-read them).
- VTEPs are two :class:`DeltaTracker` sets: neighbours (tunnel IP -> MAC, permanent) and FDB
  entries ((MAC, node IP)); an apply writes deletes then replaces of both in ONE batch (one
  ``ip`` and one ``bridge`` process); a resync re-reads them (only permanent neighbours).
- Only confirmed writes are recorded; a failure raises :class:`KernelError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pycalico.felix.calc.routetypes import Addr, Vtep, VxlanSpec, vxlan_device
from pycalico.felix.dataplane.deltatracker import DeltaTracker
from pycalico.felix.dataplane.routes import gone
from pycalico.system.kernel import (
    Address,
    FdbEntry,
    Kernel,
    KernelError,
    Link,
    Neighbour,
    Op,
    VxlanAttrs,
)

FdbKey = tuple[str, Addr]  # (MAC, remote node IP)


def _matches(link: Link, spec: VxlanSpec) -> bool:
    v = link.vxlan
    return (
        link.kind == "vxlan"
        and v is not None
        and v.vni == spec.vni
        and v.port == spec.port
        and v.local == spec.local_ip
        and v.parent == spec.parent
        and not v.learning
    )


class VxlanDriver:
    def __init__(self, kernel: Kernel, version: int = 4) -> None:
        self.kernel = kernel
        self.version = version
        self.dev = vxlan_device(version)
        self.neighs: DeltaTracker[Addr, str] = DeltaTracker()
        self.fdb: DeltaTracker[FdbKey, bool] = DeltaTracker()
        self._spec: VxlanSpec | None = None  # device state confirmed by the last apply
        self._absent = False  # confirmed: no device
        self._resync_vteps = True
        self.writes = 0

    def request_resync(self) -> None:
        self._spec, self._absent, self._resync_vteps = None, False, True

    # -- the device --------------------------------------------------------------------
    def apply_device(self, spec: VxlanSpec | None) -> bool:
        """Converge the device; True when it was created, re-created or deleted (every
        route and entry through it changed)."""
        if spec is not None and spec == self._spec:
            return False
        if spec is None and self._absent:
            return False
        link = self.kernel.get_link(self.dev)
        self._spec = None
        if spec is None:
            changed = False
            if link is not None:
                self.kernel.del_link(self.dev)
                self.writes += 1
                changed = True
            self._absent = True
            self._forget_vteps()
            return changed
        self._absent = False
        recreated = False
        with self.kernel.batch() as b:
            if link is not None and not _matches(link, spec):
                b.del_link(self.dev)
                link = None
            if link is None:
                attrs = VxlanAttrs(spec.vni, spec.port, spec.local_ip, spec.parent, False)
                b.add_vxlan(self.dev, attrs, mtu=spec.mtu, mac=spec.mac)
                recreated = True
            elif link.mac != spec.mac or link.mtu != spec.mtu:
                b.set_link(self.dev, mac=spec.mac, mtu=spec.mtu)
            if link is None or not link.up:
                b.set_link(self.dev, up=True)
            have = set()
            if link is not None:
                have = {
                    a.ip for a in self.kernel.list_addrs(self.dev, self.version) if not a.scope_link
                }
            want = ipaddress.ip_interface(f"{spec.address}/{spec.address.max_prefixlen}")
            if want not in have:
                b.replace_addr(Address(self.dev, want))
            for ip in sorted(have - {want}, key=str):
                b.del_addr(Address(self.dev, ip))
            if b.ops:
                self.writes += 1
        if recreated:
            self._forget_vteps()
        self._spec = spec
        return recreated

    def _forget_vteps(self) -> None:
        self.neighs.replace_all_dataplane({})
        self.fdb.replace_all_dataplane({})

    # -- the VTEPs ---------------------------------------------------------------------
    def apply_vteps(self, vteps: Sequence[Vtep], enabled: bool) -> None:
        if not enabled:
            self.neighs.replace_all_desired({})
            self.fdb.replace_all_desired({})
            self._forget_vteps()  # no device: nothing of ours can exist
            return
        self.neighs.replace_all_desired({v.tunnel_ip: v.mac for v in vteps})
        self.fdb.replace_all_desired({(v.mac, v.node_ip): True for v in vteps})
        if self._resync_vteps:
            nb = self.kernel.list_neighs(self.dev, self.version)
            fdb = self.kernel.list_fdb(self.dev)
            self.neighs.replace_all_dataplane(
                {n.ip: n.lladdr for n in nb if n.permanent and n.lladdr}
            )
            self.fdb.replace_all_dataplane({(e.mac, e.dst): True for e in fdb if e.dst})
            self._resync_vteps = False
        if self.neighs.in_sync() and self.fdb.in_sync():
            return
        nput: dict[Op, tuple[Addr, str]] = {}
        ndel: dict[Op, Addr] = {}
        fput: dict[Op, FdbKey] = {}
        fdel: dict[Op, FdbKey] = {}
        failed: dict[Op, str] = {}
        try:
            with self.kernel.batch() as b:
                nupd = self.neighs.pending_updates
                for ip in sorted(self.neighs.pending_deletes, key=str):
                    ndel[b.del_neigh(Neighbour(self.dev, ip))] = ip
                for ip in sorted(nupd, key=str):
                    nput[b.replace_neigh(Neighbour(self.dev, ip, nupd[ip], True))] = (ip, nupd[ip])
                for mac, dst in sorted(self.fdb.pending_deletes, key=str):
                    fdel[b.del_fdb(FdbEntry(self.dev, mac, dst))] = (mac, dst)
                for mac, dst in sorted(self.fdb.pending_updates, key=str):
                    fput[b.replace_fdb(FdbEntry(self.dev, mac, dst))] = (mac, dst)
                self.writes += 1
        except KernelError as e:
            failed = {f.op: f.error for f in e.failed}
            self._confirm(nput, ndel, fput, fdel, failed)
            real = [f for f in e.failed if not (f.op in ndel or f.op in fdel) or not gone(f.error)]
            if real:
                self._resync_vteps = True
                raise KernelError(str(e), real) from None
            return
        self._confirm(nput, ndel, fput, fdel, failed)

    def _confirm(
        self,
        nput: dict[Op, tuple[Addr, str]],
        ndel: dict[Op, Addr],
        fput: dict[Op, FdbKey],
        fdel: dict[Op, FdbKey],
        failed: dict[Op, str],
    ) -> None:
        for op, ip in ndel.items():
            if op not in failed or gone(failed[op]):
                self.neighs.delete_dataplane(ip)
        for op, (ip, mac) in nput.items():
            if op not in failed:
                self.neighs.set_dataplane(ip, mac)
        for op, key in fdel.items():
            if op not in failed or gone(failed[op]):
                self.fdb.delete_dataplane(key)
        for op, key in fput.items():
            if op not in failed:
                self.fdb.set_dataplane(key, True)
