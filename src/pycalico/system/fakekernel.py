"""FakeKernel: a stateful in-memory network namespace implementing the kernel seam
(:class:`pycalico.system.kernel.Kernel`), with failure injection, for unit tests.

Owns: links (with VXLAN attributes), addresses, the main routing table (routes with
``proto``), neighbours and FDB entries; the log of write batches and reads.

Behaves like Linux for the operations pycalico uses (the same scenarios run against the real
kernel in tests/netns/test_kernel_seam.py):
- ``add_vxlan`` fails if the name exists or the parent does not; a new device is down, its
  MTU is the parent's minus the encapsulation overhead unless given.
- Writes naming a missing device fail (``Cannot find device``); a unicast route needs its
  device up; deleting what is not there fails (``No such process`` / ``No such file``).
- Deleting a link (or setting it down) removes its routes; deleting it also removes its
  addresses, neighbours, FDB entries and the VXLAN devices on top of it.
- ``replace_fdb`` on a known MAC moves its (first) remote; one entry per (dev, MAC) otherwise;
  ``del_fdb`` of a known MAC naming another remote succeeds without deleting anything.
- An Ethernet-like link gets an IPv6 link-local address (scope link) when set up.
- A batch applies ``ip`` ops then ``bridge`` ops (as :class:`IpRouteKernel` runs two
  processes); a failing op does not stop the others; the batch raises :class:`KernelError`
  naming the failed ops.

Failure injection: :meth:`fail_writes` (the next N writes matching a predicate fail),
:meth:`fail_reads` (the next N reads fail). Drift: tests edit the public dicts directly.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pycalico.system.kernel import (
    Address,
    FailedOp,
    FdbEntry,
    Iface,
    KernelBase,
    KernelError,
    KernelRoute,
    Link,
    LinkChange,
    Neighbour,
    Net,
    Op,
    render,
)

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


class _OpFailed(Exception):
    pass


def _link_local(mac: str) -> ipaddress.IPv6Interface:
    b = bytearray(int(x, 16) for x in mac.split(":"))
    b[0] ^= 0x02
    eui = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return ipaddress.IPv6Interface((b"\xfe\x80" + bytes(6) + eui, 64))


@dataclass
class FakeKernel(KernelBase):
    links: dict[str, Link] = field(default_factory=dict)
    addrs: dict[str, set[Address]] = field(default_factory=dict)
    routes: dict[Net, KernelRoute] = field(default_factory=dict)
    neighs: dict[tuple[str, Addr], Neighbour] = field(default_factory=dict)
    fdb: dict[tuple[str, str], FdbEntry] = field(default_factory=dict)
    batches: list[list[Op]] = field(default_factory=list)  # every write batch, as submitted
    reads: list[str] = field(default_factory=list)  # every read, by method name
    _write_faults: list[list[object]] = field(default_factory=list)
    _read_faults: list[list[object]] = field(default_factory=list)
    _macs: int = 0

    # -- test helpers ------------------------------------------------------------------
    def add_link(self, link: Link, *addrs: str) -> Link:
        """Create ``link`` (any kind) directly, with addresses (``"198.18.0.1/24"``)."""
        self.links[link.name] = link
        for a in addrs:
            self.addrs.setdefault(link.name, set()).add(
                Address(link.name, ipaddress.ip_interface(a))
            )
        return link

    def fail_writes(self, pred: Callable[[Op], bool], times: int | None = 1) -> None:
        """The next ``times`` (None: every) write ops matching ``pred`` fail."""
        self._write_faults.append([pred, times])

    def fail_reads(self, times: int | None = 1, what: str | None = None) -> None:
        """The next ``times`` reads (of method ``what``, or any) fail."""
        self._read_faults.append([what, times])

    def clear_faults(self) -> None:
        self._write_faults.clear()
        self._read_faults.clear()

    @property
    def ops(self) -> list[Op]:
        return [op for b in self.batches for op in b]

    # -- reads -------------------------------------------------------------------------
    def _read(self, what: str) -> None:
        self.reads.append(what)
        for fault in self._read_faults:
            w, n = fault
            if (w is None or w == what) and (n is None or int(str(n)) > 0):
                if n is not None:
                    fault[1] = int(str(n)) - 1
                raise KernelError(f"{what}: injected read failure")

    def list_links(self) -> list[Link]:
        self._read("list_links")
        return list(self.links.values())

    def get_link(self, name: str) -> Link | None:
        self._read("get_link")
        return self.links.get(name)

    def list_addrs(self, dev: str | None = None, family: int | None = None) -> list[Address]:
        self._read("list_addrs")
        devs = [dev] if dev is not None else list(self.links)
        found = [
            a
            for d in devs
            for a in self.addrs.get(d, ())
            if family is None or a.ip.version == family
        ]
        return sorted(found, key=lambda a: (a.dev, a.ip.version, a.ip))

    def list_routes(self, family: int, proto: int | None = None) -> list[KernelRoute]:
        self._read("list_routes")
        return [
            r
            for r in self.routes.values()
            if r.dst.version == family and (proto is None or r.proto == proto)
        ]

    def list_neighs(self, dev: str, family: int) -> list[Neighbour]:
        self._read("list_neighs")
        return [n for (d, ip), n in self.neighs.items() if d == dev and ip.version == family]

    def list_fdb(self, dev: str) -> list[FdbEntry]:
        self._read("list_fdb")
        return [e for (d, _), e in self.fdb.items() if d == dev]

    # -- writes ------------------------------------------------------------------------
    def _apply(self, ops: Sequence[Op]) -> None:
        self.batches.append(list(ops))
        ordered = [op for op in ops if op.tool == "ip"] + [op for op in ops if op.tool != "ip"]
        failed: list[FailedOp] = []
        for op in ordered:
            try:
                self._inject(op)
                self._do(op)
            except _OpFailed as e:
                failed.append(FailedOp(op, str(e)))
        if failed:
            raise KernelError(
                f"{len(failed)} of {len(ops)} kernel writes failed, first: "
                f"{render(failed[0].op)}: {failed[0].error}",
                failed,
            )

    def _inject(self, op: Op) -> None:
        for fault in self._write_faults:
            pred, n = fault
            if (n is None or int(str(n)) > 0) and callable(pred) and pred(op):
                if n is not None:
                    fault[1] = int(str(n)) - 1
                raise _OpFailed("injected failure")

    def _dev(self, name: str | None) -> Link:
        link = self.links.get(name or "")
        if link is None:
            raise _OpFailed(f'Cannot find device "{name}"')
        return link

    def _do(self, op: Op) -> None:
        t = op.target
        if op.name == "add_vxlan":
            assert isinstance(t, Link) and t.vxlan is not None
            if t.name in self.links:
                raise _OpFailed("RTNETLINK answers: File exists")
            parent = self._dev(t.vxlan.parent) if t.vxlan.parent else None
            overhead = 70 if t.vxlan.local is not None and t.vxlan.local.version == 6 else 50
            mtu = t.mtu or ((parent.mtu if parent else 1500) - overhead)
            self._macs += 1
            mac = t.mac or f"02:fa:00:00:{self._macs >> 8 & 0xFF:02x}:{self._macs & 0xFF:02x}"
            self.links[t.name] = Link(t.name, "vxlan", mtu, mac, False, t.vxlan)
        elif op.name == "set_link":
            assert isinstance(t, LinkChange)
            link = self._dev(t.name)
            new = dataclasses.replace(
                link,
                mtu=link.mtu if t.mtu is None else t.mtu,
                mac=link.mac if t.mac is None else t.mac.lower(),
                up=link.up if t.up is None else t.up,
            )
            self.links[t.name] = new
            if link.up and not new.up:
                self._drop_routes(t.name)
            if new.up and not link.up and new.mac and new.kind != "tun":
                self.addrs.setdefault(t.name, set()).add(
                    Address(t.name, _link_local(new.mac), scope_link=True)
                )
        elif op.name == "del_link":
            assert isinstance(t, LinkChange)
            self._dev(t.name)
            self._remove_link(t.name)
        elif op.name in ("replace_addr", "del_addr"):
            assert isinstance(t, Address)
            self._dev(t.dev)
            have = self.addrs.setdefault(t.dev, set())
            same = {a for a in have if a.ip.ip == t.ip.ip}
            if op.name == "del_addr" and not same:
                raise _OpFailed("RTNETLINK answers: Cannot assign requested address")
            have -= same
            if op.name == "replace_addr":
                have.add(Address(t.dev, t.ip, t.scope_link))
        elif op.name == "replace_route":
            assert isinstance(t, KernelRoute)
            if t.type == "unicast":
                link = self._dev(t.dev)
                if not link.up:
                    raise _OpFailed("Error: Nexthop device is not up.")
            self.routes[t.dst] = t
        elif op.name == "del_route":
            assert isinstance(t, KernelRoute)
            r = self.routes.get(t.dst)
            if (
                r is None
                or (t.proto is not None and r.proto != t.proto)
                or (t.type != "unicast" and r.type != t.type)
                or (t.dev is not None and r.dev != t.dev)
                or (t.gateway is not None and r.gateway != t.gateway)
            ):
                raise _OpFailed("RTNETLINK answers: No such process")
            del self.routes[t.dst]
        elif op.name == "replace_neigh":
            assert isinstance(t, Neighbour)
            self._dev(t.dev)
            self.neighs[(t.dev, t.ip)] = t
        elif op.name == "del_neigh":
            assert isinstance(t, Neighbour)
            self._dev(t.dev)
            if self.neighs.pop((t.dev, t.ip), None) is None:
                raise _OpFailed("RTNETLINK answers: No such file or directory")
        elif op.name == "replace_fdb":
            assert isinstance(t, FdbEntry)
            self._dev(t.dev)
            self.fdb[(t.dev, t.mac.lower())] = dataclasses.replace(t, mac=t.mac.lower())
        elif op.name == "del_fdb":
            assert isinstance(t, FdbEntry)
            self._dev(t.dev)
            e = self.fdb.get((t.dev, t.mac.lower()))
            if e is None:
                raise _OpFailed("RTNETLINK answers: No such file or directory")
            if t.dst is None or e.dst == t.dst:  # another remote: a no-op, as in Linux
                del self.fdb[(t.dev, t.mac.lower())]
        else:  # pragma: no cover - OpName is closed
            raise _OpFailed(f"unknown op {op.name}")

    def _drop_routes(self, dev: str) -> None:
        for dst in [d for d, r in self.routes.items() if r.dev == dev]:
            del self.routes[dst]

    def _remove_link(self, name: str) -> None:
        self.links.pop(name, None)
        self.addrs.pop(name, None)
        self._drop_routes(name)
        for nk in [k for k in self.neighs if k[0] == name]:
            del self.neighs[nk]
        for fk in [k for k in self.fdb if k[0] == name]:
            del self.fdb[fk]
        for upper in [n for n, lk in self.links.items() if lk.vxlan and lk.vxlan.parent == name]:
            self._remove_link(upper)


def iface(text: str) -> Iface:
    """Parse ``"10.0.0.1/32"`` (test convenience)."""
    return ipaddress.ip_interface(text)
