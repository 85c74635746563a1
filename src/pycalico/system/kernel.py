"""The typed kernel seam: links, addresses, routes, neighbours and FDB entries of one network
namespace, as frozen values, behind a narrow :class:`Kernel` protocol.

Owns: the value types (:class:`Link`, :class:`VxlanAttrs`, :class:`Address`,
:class:`KernelRoute`, :class:`Neighbour`, :class:`FdbEntry`), the write operations
(:class:`Op`), :class:`KernelError`, and :class:`IpRouteKernel`, the real implementation on
iproute2 (``ip``/``bridge``) through :class:`pycalico.system.process.ProcessRunner`.
:class:`pycalico.system.fakekernel.FakeKernel` is the stateful in-memory twin.

Invariants:
- Reads return values only (never iproute2 records); a listing of a device that does not
  exist is empty, not an error. Routes are the main table's, with numeric ``proto``.
- Writes are grouped per call site: ``with kernel.batch() as b: b.replace_route(...)`` runs
  every ``ip`` op in ONE ``ip -force -batch -`` process and then every ``bridge`` op in ONE
  ``bridge -force -batch -`` process; a failing op does not stop the others, and the batch
  raises :class:`KernelError` whose ``failed`` names exactly the ops that failed (every other
  op was applied). A batch left by an exception writes nothing.
- The single-op methods on a kernel (``kernel.replace_route(r)``) are one-op batches.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pycalico.errors import CalicoError
from pycalico.system.process import ProcessRunner

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address
Iface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

PROTO_KERNEL = 2
PROTO_BOOT = 3
PROTO_STATIC = 4


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class VxlanAttrs:
    """What identifies a VXLAN device: VNI, UDP port, local address, parent device."""

    vni: int
    port: int
    local: Addr | None = None
    parent: str | None = None
    learning: bool = False


@dataclass(frozen=True)
class Link:
    """A network device. ``kind`` is the rtnetlink ``info_kind`` (``vxlan``, ``tun``,
    ``veth``, ...; None for plain devices such as ``lo``); ``up`` is the admin flag."""

    name: str
    kind: str | None = None
    mtu: int = 1500
    mac: str | None = None
    up: bool = False
    vxlan: VxlanAttrs | None = None


@dataclass(frozen=True)
class LinkChange:
    """A ``set_link`` request: None fields are left as they are."""

    name: str
    mtu: int | None = None
    mac: str | None = None
    up: bool | None = None


@dataclass(frozen=True, order=True)
class Address:
    """An address on ``dev``; ``scope_link`` marks the kernel's IPv6 link-local addresses."""

    dev: str
    ip: Iface
    scope_link: bool = False


RouteType = Literal["unicast", "blackhole", "unreachable", "prohibit", "local", "other"]


@dataclass(frozen=True)
class KernelRoute:
    """A main-table route. ``proto`` is the numeric rtnetlink protocol (80 = ours)."""

    dst: Net
    type: RouteType = "unicast"
    gateway: Addr | None = None
    dev: str | None = None
    onlink: bool = False
    scope_link: bool = False
    proto: int | None = None


@dataclass(frozen=True)
class Neighbour:
    """A neighbour entry (ARP/NDP). ``lladdr`` None for NOARP devices (``tunl0``)."""

    dev: str
    ip: Addr
    lladdr: str | None = None
    permanent: bool = True


@dataclass(frozen=True)
class FdbEntry:
    """A forwarding-database entry of a VXLAN device: ``mac`` is reached at ``dst``."""

    dev: str
    mac: str
    dst: Addr | None = None


OpName = Literal[
    "add_vxlan", "set_link", "del_link", "replace_addr", "del_addr", "replace_route",
    "del_route", "replace_neigh", "del_neigh", "replace_fdb", "del_fdb",
]  # fmt: skip


@dataclass(frozen=True)
class Op:
    """One write; ``target`` is the value it writes (or names, for deletes)."""

    name: OpName
    target: Link | LinkChange | Address | KernelRoute | Neighbour | FdbEntry

    @property
    def tool(self) -> Literal["ip", "bridge"]:
        return "bridge" if self.name.endswith("_fdb") else "ip"


@dataclass(frozen=True)
class FailedOp:
    op: Op
    error: str


class KernelError(CalicoError):
    """A kernel read or write failed. For a batch, ``failed`` lists the ops that failed
    (all the others were applied); for a read it is empty."""

    def __init__(self, message: str, failed: Sequence[FailedOp] = ()) -> None:
        super().__init__(message)
        self.failed = tuple(failed)

    @property
    def failed_ops(self) -> frozenset[Op]:
        return frozenset(f.op for f in self.failed)


# --------------------------------------------------------------------------- protocol


class Batch:
    """Write ops recorded for one transaction; :meth:`commit` hands them to ``apply``."""

    def __init__(self, apply: Callable[[Sequence[Op]], None]) -> None:
        self._apply = apply
        self.ops: list[Op] = []

    def _add(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    def add_vxlan(
        self, name: str, attrs: VxlanAttrs, *, mtu: int | None = None, mac: str | None = None
    ) -> Op:
        return self._add(Op("add_vxlan", Link(name, "vxlan", mtu or 0, mac, False, attrs)))

    def set_link(
        self, name: str, *, mtu: int | None = None, mac: str | None = None, up: bool | None = None
    ) -> Op:
        return self._add(Op("set_link", LinkChange(name, mtu, mac, up)))

    def del_link(self, name: str) -> Op:
        return self._add(Op("del_link", LinkChange(name)))

    def replace_addr(self, addr: Address) -> Op:
        return self._add(Op("replace_addr", addr))

    def del_addr(self, addr: Address) -> Op:
        return self._add(Op("del_addr", addr))

    def replace_route(self, route: KernelRoute) -> Op:
        return self._add(Op("replace_route", route))

    def del_route(self, route: KernelRoute) -> Op:
        return self._add(Op("del_route", route))

    def replace_neigh(self, neigh: Neighbour) -> Op:
        return self._add(Op("replace_neigh", neigh))

    def del_neigh(self, neigh: Neighbour) -> Op:
        return self._add(Op("del_neigh", neigh))

    def replace_fdb(self, entry: FdbEntry) -> Op:
        return self._add(Op("replace_fdb", entry))

    def del_fdb(self, entry: FdbEntry) -> Op:
        return self._add(Op("del_fdb", entry))

    def commit(self) -> None:
        """Apply every op (ip ops, then bridge ops); raise KernelError naming the failed."""
        ops, self.ops = self.ops, []
        if ops:
            self._apply(ops)


class Kernel(Protocol):
    """Reads and batched writes on one network namespace (see module doc)."""

    def list_links(self) -> list[Link]: ...

    def get_link(self, name: str) -> Link | None: ...

    def list_addrs(self, dev: str | None = None, family: int | None = None) -> list[Address]: ...

    def list_routes(self, family: int, proto: int | None = None) -> list[KernelRoute]: ...

    def list_neighs(self, dev: str, family: int) -> list[Neighbour]: ...

    def list_fdb(self, dev: str) -> list[FdbEntry]: ...

    def batch(self) -> AbstractContextManager[Batch]: ...

    # single-op writes (each a one-op batch)
    def add_vxlan(
        self, name: str, attrs: VxlanAttrs, *, mtu: int | None = None, mac: str | None = None
    ) -> None: ...

    def set_link(
        self, name: str, *, mtu: int | None = None, mac: str | None = None, up: bool | None = None
    ) -> None: ...

    def del_link(self, name: str) -> None: ...

    def replace_addr(self, addr: Address) -> None: ...

    def del_addr(self, addr: Address) -> None: ...

    def replace_route(self, route: KernelRoute) -> None: ...

    def del_route(self, route: KernelRoute) -> None: ...

    def replace_neigh(self, neigh: Neighbour) -> None: ...

    def del_neigh(self, neigh: Neighbour) -> None: ...

    def replace_fdb(self, entry: FdbEntry) -> None: ...

    def del_fdb(self, entry: FdbEntry) -> None: ...


class KernelBase:
    """Shared write surface: ``batch()`` and the single-op conveniences; subclasses
    implement :meth:`_apply` (run a list of ops, raise KernelError with the failed ones)."""

    def _apply(self, ops: Sequence[Op]) -> None:
        raise NotImplementedError

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        b = Batch(self._apply)
        yield b
        b.commit()

    def _one(self, op: Op) -> None:
        self._apply([op])

    def add_vxlan(
        self, name: str, attrs: VxlanAttrs, *, mtu: int | None = None, mac: str | None = None
    ) -> None:
        self._one(Op("add_vxlan", Link(name, "vxlan", mtu or 0, mac, False, attrs)))

    def set_link(
        self, name: str, *, mtu: int | None = None, mac: str | None = None, up: bool | None = None
    ) -> None:
        self._one(Op("set_link", LinkChange(name, mtu, mac, up)))

    def del_link(self, name: str) -> None:
        self._one(Op("del_link", LinkChange(name)))

    def replace_addr(self, addr: Address) -> None:
        self._one(Op("replace_addr", addr))

    def del_addr(self, addr: Address) -> None:
        self._one(Op("del_addr", addr))

    def replace_route(self, route: KernelRoute) -> None:
        self._one(Op("replace_route", route))

    def del_route(self, route: KernelRoute) -> None:
        self._one(Op("del_route", route))

    def replace_neigh(self, neigh: Neighbour) -> None:
        self._one(Op("replace_neigh", neigh))

    def del_neigh(self, neigh: Neighbour) -> None:
        self._one(Op("del_neigh", neigh))

    def replace_fdb(self, entry: FdbEntry) -> None:
        self._one(Op("replace_fdb", entry))

    def del_fdb(self, entry: FdbEntry) -> None:
        self._one(Op("del_fdb", entry))


# --------------------------------------------------------------------------- iproute2 text


def route_spec(r: KernelRoute) -> str:
    """``ip route`` arguments naming/describing ``r`` (with ``proto`` when set)."""
    parts = [r.type, str(r.dst)] if r.type != "unicast" else [str(r.dst)]
    if r.type == "unicast":
        if r.gateway is not None:
            parts += ["via", str(r.gateway)]
        if r.dev:
            parts += ["dev", r.dev]
        if r.onlink:
            parts.append("onlink")
        if r.scope_link:
            parts += ["scope", "link"]
    if r.proto is not None:
        parts += ["proto", str(r.proto)]
    return " ".join(parts)


def render(op: Op) -> str:
    """The ``ip -batch`` / ``bridge -batch`` line of ``op``."""
    t = op.target
    if isinstance(t, Link):  # add_vxlan
        assert t.vxlan is not None
        v = t.vxlan
        line = f"link add {t.name}"
        if t.mac:
            line += f" address {t.mac}"
        if t.mtu:
            line += f" mtu {t.mtu}"
        line += f" type vxlan id {v.vni}"
        if v.local is not None:
            line += f" local {v.local}"
        if v.parent:
            line += f" dev {v.parent}"
        return line + f" dstport {v.port} " + ("learning" if v.learning else "nolearning")
    if isinstance(t, LinkChange):
        if op.name == "del_link":
            return f"link del {t.name}"
        line = f"link set dev {t.name}"
        if t.mac is not None:
            line += f" address {t.mac}"
        if t.mtu is not None:
            line += f" mtu {t.mtu}"
        if t.up is not None:
            line += " up" if t.up else " down"
        return line
    if isinstance(t, Address):
        verb = "replace" if op.name == "replace_addr" else "del"
        return f"addr {verb} {t.ip.with_prefixlen} dev {t.dev}"
    if isinstance(t, KernelRoute):
        verb = "replace" if op.name == "replace_route" else "del"
        return f"route {verb} {route_spec(t)}"
    if isinstance(t, Neighbour):
        if op.name == "del_neigh":
            return f"neigh del {t.ip} dev {t.dev}"
        ll = f" lladdr {t.lladdr}" if t.lladdr else ""
        nud = "permanent" if t.permanent else "reachable"
        return f"neigh replace {t.ip}{ll} dev {t.dev} nud {nud}"
    assert isinstance(t, FdbEntry)
    dst = f" dst {t.dst}" if t.dst is not None else ""
    if op.name == "del_fdb":
        return f"fdb del {t.mac} dev {t.dev}{dst} self"
    return f"fdb replace {t.mac} dev {t.dev}{dst} self permanent"


_FAILED = re.compile(r"^Command failed \S*:(\d+)\s*$")
_ROUTE_TYPES: dict[str, RouteType] = {
    "1": "unicast", "2": "local", "6": "blackhole", "7": "unreachable", "8": "prohibit",
}  # fmt: skip


def parse_batch_errors(stderr: str, count: int) -> dict[int, str]:
    """0-based line index -> error text, from ``ip``/``bridge -force -batch`` stderr."""
    out: dict[int, str] = {}
    msg: list[str] = []
    for line in stderr.splitlines():
        m = _FAILED.match(line.strip())
        if m:
            idx = int(m.group(1)) - 1
            if 0 <= idx < count:
                out[idx] = "; ".join(msg) or "failed"
            msg = []
        elif line.strip():
            msg.append(line.strip())
    return out


def parse_route(rec: dict[str, Any], family: int) -> KernelRoute | None:
    """A :class:`KernelRoute` from one ``ip -N -j route show`` record (None if unusable)."""
    text = str(rec.get("dst", ""))
    if text == "default":
        text = "0.0.0.0/0" if family == 4 else "::/0"
    try:
        dst = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    typ: RouteType = _ROUTE_TYPES.get(str(rec.get("type", "1")), "other")
    proto = str(rec.get("protocol", ""))
    if typ != "unicast":  # no next hop (IPv6 shows blackholes on ``lo``)
        return KernelRoute(dst, typ, proto=int(proto) if proto.isdigit() else None)
    gw = rec.get("gateway")
    return KernelRoute(
        dst,
        typ,
        gateway=ipaddress.ip_address(gw) if gw else None,
        dev=rec.get("dev"),
        onlink="onlink" in (rec.get("flags") or []),
        scope_link=str(rec.get("scope")) in ("253", "link"),
        proto=int(proto) if proto.isdigit() else None,
    )


def parse_link(rec: dict[str, Any]) -> Link:
    info = rec.get("linkinfo") or {}
    kind = info.get("info_kind")
    vx = None
    if kind == "vxlan":
        d = info.get("info_data") or {}
        local = d.get("local") or d.get("local6")
        vx = VxlanAttrs(
            vni=int(d.get("id", 0)),
            port=int(d.get("port", 0)),
            local=ipaddress.ip_address(local) if local else None,
            parent=d.get("link"),
            learning=bool(d.get("learning")),
        )
    return Link(
        name=str(rec["ifname"]),
        kind=kind,
        mtu=int(rec.get("mtu") or 0),
        mac=(str(rec["address"]).lower() if rec.get("address") else None),
        up="UP" in (rec.get("flags") or []),
        vxlan=vx,
    )


_MISSING_DEV = ("does not exist", "Cannot find device")


@dataclass
class IpRouteKernel(KernelBase):
    """The real kernel through ``ip``/``bridge`` (``netns``: a named namespace, ``ip -n``)."""

    runner: ProcessRunner
    netns: str | None = None
    timeout: float = 30.0
    processes: int = field(default=0)  # processes spawned (observability/benchmarks)

    def _argv(self, tool: str, *args: str) -> list[str]:
        return [tool, *(("-n", self.netns) if self.netns else ()), *args]

    def _json(self, tool: str, *args: str, missing_ok: bool = False) -> list[dict[str, Any]]:
        self.processes += 1
        argv = self._argv(tool, "-j", *args)
        r = self.runner.run(argv, timeout=self.timeout)
        if r.returncode != 0:
            err = (r.stderr or r.stdout).strip()
            if missing_ok and any(m in err for m in _MISSING_DEV):
                return []
            raise KernelError(f"{' '.join(argv)}: {err}")
        out = r.stdout.strip()
        try:
            return list(json.loads(out)) if out else []
        except ValueError as e:
            raise KernelError(f"{' '.join(argv)}: unparsable output: {e}") from None

    def list_links(self) -> list[Link]:
        return [parse_link(r) for r in self._json("ip", "-d", "link", "show")]

    def get_link(self, name: str) -> Link | None:
        recs = self._json("ip", "-d", "link", "show", "dev", name, missing_ok=True)
        return parse_link(recs[0]) if recs else None

    def list_addrs(self, dev: str | None = None, family: int | None = None) -> list[Address]:
        args = [f"-{family}"] if family else []
        args += ["addr", "show"] + (["dev", dev] if dev else [])
        out = []
        for link in self._json("ip", *args, missing_ok=dev is not None):
            for a in link.get("addr_info") or []:
                if a.get("family") not in ("inet", "inet6"):
                    continue
                ip = ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
                out.append(Address(str(link["ifname"]), ip, str(a.get("scope")) == "link"))
        return out

    def list_routes(self, family: int, proto: int | None = None) -> list[KernelRoute]:
        args = ["-N", f"-{family}", "route", "show", "table", "main"]
        if proto is not None:
            args += ["proto", str(proto)]
        out = []
        for rec in self._json("ip", *args):
            if proto is not None:
                rec.setdefault("protocol", str(proto))
            r = parse_route(rec, family)
            if r is not None:
                out.append(r)
        return out

    def list_neighs(self, dev: str, family: int) -> list[Neighbour]:
        out = []
        for rec in self._json("ip", f"-{family}", "neigh", "show", "dev", dev, missing_ok=True):
            try:
                ip = ipaddress.ip_address(str(rec["dst"]))
            except (KeyError, ValueError):
                continue
            ll = rec.get("lladdr")
            perm = "PERMANENT" in (rec.get("state") or [])
            out.append(Neighbour(dev, ip, str(ll).lower() if ll else None, perm))
        return out

    def list_fdb(self, dev: str) -> list[FdbEntry]:
        out = []
        for rec in self._json("bridge", "fdb", "show", "dev", dev, missing_ok=True):
            dst = rec.get("dst")
            try:
                addr = ipaddress.ip_address(str(dst)) if dst else None
            except ValueError:
                addr = None
            out.append(FdbEntry(dev, str(rec.get("mac", "")).lower(), addr))
        return out

    def _apply(self, ops: Sequence[Op]) -> None:
        failed: list[FailedOp] = []
        for tool in ("ip", "bridge"):
            mine = [op for op in ops if op.tool == tool]
            if not mine:
                continue
            self.processes += 1
            argv = self._argv(tool, "-force", "-batch", "-")
            text = "".join(render(op) + "\n" for op in mine)
            r = self.runner.run(argv, input=text, timeout=self.timeout)
            if r.returncode == 0:
                continue
            errs = parse_batch_errors(r.stderr, len(mine))
            if not errs:  # could not attribute (e.g. the tool did not run): all failed
                err = (r.stderr or r.stdout).strip() or f"exit {r.returncode}"
                failed += [FailedOp(op, err) for op in mine]
            else:
                failed += [FailedOp(mine[i], e) for i, e in sorted(errs.items())]
        if failed:
            first = failed[0]
            raise KernelError(
                f"{len(failed)} of {len(ops)} kernel writes failed, first: "
                f"{render(first.op)}: {first.error}",
                failed,
            )
