"""Route-agent effects: make the kernel of the current network namespace match a DesiredState.

Owns, and touches nothing else than: main-table routes with protocol :data:`ROUTE_PROTO`
(80), the ``vxlan.calico`` device with its neighbour and FDB entries, the userspace ``tunl0``
(:class:`pycalico.felix.tunnels.uipip.UserspaceIpip`), the ``ip calico-nat`` table
(:mod:`pycalico.felix.natout`), the forwarding sysctls and the MTU file.

Invariants (Felix's desired-vs-actual drivers):
- Each object class keeps a cache of what it believes the kernel holds; an incremental apply
  only writes the delta against that cache; a *full* apply (first run, periodic resync,
  after any error) re-reads the kernel first, so drift made by others is repaired.
- Deletions only ever name objects we own (proto 80 routes; entries on our own device).
- Writes go through ``ip -batch -force`` / ``bridge -batch -force``: a failing line does not
  stop the rest; any failure invalidates the caches so the next apply is full.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pycalico.errors import CalicoError
from pycalico.felix.calc.routetypes import (
    IPIP_DEVICE,
    ROUTE_PROTO,
    Addr,
    DesiredState,
    HostFacts,
    IpipSpec,
    Net,
    Route,
    Vtep,
    VxlanSpec,
    vxlan_device,
)
from pycalico.felix.natout import NatOutgoing
from pycalico.felix.routes.mtu import host_mtu, write_mtu_file
from pycalico.felix.tunnels.uipip import UserspaceIpip
from pycalico.system.process import ProcessRunner
from pycalico.system.sysctl import Sysctl, SysctlError

log = logging.getLogger(__name__)

FORWARDING_SYSCTLS = {
    4: (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.forwarding", 1)),
    6: (("net.ipv6.conf.all.forwarding", 1),),
}


class KernelError(CalicoError):
    """A kernel read failed (the apply is retried in full)."""


def parse_route(rec: Mapping[str, Any]) -> Route | None:
    """A :class:`Route` from one ``ip -j route show`` record (None if unparsable)."""
    try:
        dst = ipaddress.ip_network(str(rec["dst"]), strict=False)
    except (KeyError, ValueError):
        return None

    if rec.get("type") == "blackhole":
        return Route(dst, kind="blackhole")
    gw = rec.get("gateway")
    return Route(
        dst,
        gateway=ipaddress.ip_address(gw) if gw else None,
        dev=rec.get("dev"),
        onlink="onlink" in (rec.get("flags") or []),
        scope_link=rec.get("scope") == "link",
    )


def route_delta(
    actual: Mapping[Net, Route], desired: Mapping[Net, Route]
) -> tuple[list[Route], list[Route]]:
    """(to write with ``replace``, to delete): pure."""
    put = [r for d, r in sorted(desired.items(), key=_key) if actual.get(d) != r]
    dele = [r for d, r in sorted(actual.items(), key=_key) if d not in desired]
    return put, dele


def _key(item: tuple[Net, Route]) -> tuple[int, int, int]:
    d = item[0]
    return d.version, int(d.network_address), d.prefixlen


def _route_del(r: Route) -> str:
    prefix = "blackhole " if r.kind == "blackhole" else ""
    return f"route del {prefix}{r.dst} proto {ROUTE_PROTO}"


class KernelRoutes:
    """The effects half of the route agent (see module doc). Single-threaded: only the agent's
    owner thread calls it."""

    def __init__(
        self,
        runner: ProcessRunner,
        sysctl: Sysctl,
        *,
        mtu_file: str | None = None,
        nat: bool = True,
        ipip_factory: Callable[[str, str], UserspaceIpip] = UserspaceIpip,
        version: int = 4,
    ) -> None:
        self.runner = runner
        self.sysctl = sysctl
        self.mtu_file = mtu_file
        self.version = version
        self.vx_dev = vxlan_device(version)
        self._fam = f"-{version}"
        self.nat = NatOutgoing(runner, version) if nat else None
        self.ipip_factory = ipip_factory
        self.ipip: UserspaceIpip | None = None
        self._routes: dict[Net, Route] | None = None
        self._vteps: set[Vtep] | None = None
        self._vxlan: VxlanSpec | None = None
        self._ipip_spec: IpipSpec | None = None
        self._ipip_absent = False  # checked that no stale tunl0 of ours exists
        self._vxlan_absent = False  # checked that no vxlan.calico exists
        self._links: list[dict[str, Any]] = []
        self.writes = 0  # kernel write batches issued (observability/tests)

    # -- reads -------------------------------------------------------------------------
    def _run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        r = self.runner.run(list(argv), input=stdin, timeout=30)
        if r.returncode != 0:
            raise KernelError(f"{' '.join(argv)}: {(r.stderr or r.stdout).strip()}")
        return r.stdout

    def _json(self, argv: Sequence[str]) -> list[dict[str, Any]]:
        out = self._run(argv).strip()
        return list(json.loads(out)) if out else []

    def facts(self, node_ip: Addr | None, mtu_pattern: str) -> HostFacts:
        """Read links/addresses: the interface holding ``node_ip`` and the host MTU."""
        self._links = self._json(["ip", "-j", "addr", "show"])
        iface = None
        if node_ip is not None:
            for link in self._links:
                for a in link.get("addr_info") or []:
                    if a.get("family") in ("inet", "inet6") and a.get("local") == str(node_ip):
                        iface = str(link["ifname"])
        return HostFacts(underlay_iface=iface, host_mtu=host_mtu(self._links, mtu_pattern))

    def _link(self, name: str) -> dict[str, Any] | None:
        recs = self.runner.run(["ip", "-j", "-d", "link", "show", "dev", name], timeout=30)
        if recs.returncode != 0:
            return None
        out = json.loads(recs.stdout) if recs.stdout.strip() else []
        return dict(out[0]) if out else None

    # -- the apply ---------------------------------------------------------------------
    def apply(self, want: DesiredState, *, full: bool) -> list[str]:
        """Converge; returns problems (empty = fully applied). Raises nothing kernel-related:
        a failure is reported and the caches are dropped so the next apply is full."""
        if full:
            self._routes, self._vteps, self._vxlan, self._ipip_spec = None, None, None, None
            self._ipip_absent = self._vxlan_absent = False
        errors: list[str] = []
        steps: list[tuple[str, Callable[[], None]]] = [
            ("sysctls", (lambda: self._sysctls(want)) if full else lambda: None),
            ("vxlan device", lambda: self._apply_vxlan(want.vxlan)),
            ("ipip tunnel", lambda: self._apply_ipip(want)),
            ("vteps", lambda: self._apply_vteps(want)),
            ("routes", lambda: self._apply_routes(want.routes)),
            ("nat-outgoing", lambda: self._apply_nat(want, full)),
            ("mtu file", lambda: self._apply_mtu(want.pod_mtu)),
        ]
        for name, fn in steps:
            try:
                fn()
            except (CalicoError, OSError, ValueError) as e:
                errors.append(f"{name}: {e}")
        if errors:
            self._routes, self._vteps, self._vxlan, self._ipip_spec = None, None, None, None
            self._ipip_absent = self._vxlan_absent = False
        return errors

    def _sysctls(self, want: DesiredState) -> None:
        if self.version == 6 and not (want.routes or want.vxlan):
            return  # IPv6 unused (it may even be disabled on this host)
        for key, val in FORWARDING_SYSCTLS[self.version]:
            try:
                if self.sysctl.read(key) != str(val):
                    self.sysctl.write(key, val)
            except SysctlError:
                self.sysctl.write(key, val)

    def _apply_vxlan(self, spec: VxlanSpec | None) -> None:
        if spec == self._vxlan and spec is not None:
            return
        if spec is None and self._vxlan_absent:
            return
        link = self._link(self.vx_dev)
        if spec is None:
            if link is not None:
                self._run(["ip", "link", "del", self.vx_dev])
                self.writes += 1
            self._vxlan, self._vteps, self._vxlan_absent = None, None, True
            return
        self._vxlan_absent = False
        lines: list[str] = []
        data = ((link or {}).get("linkinfo") or {}).get("info_data") or {}
        kind = ((link or {}).get("linkinfo") or {}).get("info_kind")
        if link is not None and (
            kind != "vxlan"
            or data.get("id") != spec.vni
            or data.get("port") != spec.port
            or (data.get("local") or data.get("local6")) != str(spec.local_ip)
            or data.get("link") != spec.parent
            or data.get("learning")
        ):
            lines.append(f"link del {self.vx_dev}")
            link = None
        if link is None:
            lines.append(
                f"link add {self.vx_dev} type vxlan id {spec.vni} local {spec.local_ip} "
                f"dev {spec.parent} dstport {spec.port} nolearning"
            )
            self._vteps, self._routes = None, None  # entries went with the old device
        if link is None or link.get("address") != spec.mac or link.get("mtu") != spec.mtu:
            lines.append(f"link set dev {self.vx_dev} address {spec.mac} mtu {spec.mtu}")
        if link is None or "UP" not in (link.get("flags") or []):
            lines.append(f"link set dev {self.vx_dev} up")
        have = set() if link is None else self._addrs(self.vx_dev)
        want_addr = f"{spec.address}/{spec.address.max_prefixlen}"
        if want_addr not in have:
            lines.append(f"addr replace {want_addr} dev {self.vx_dev}")
        lines += [f"addr del {a} dev {self.vx_dev}" for a in sorted(have - {want_addr})]
        if lines:
            self._batch("ip", lines)
        self._vxlan = spec

    def _addrs(self, dev: str) -> set[str]:
        out = set()
        for link in self._json(["ip", "-j", self._fam, "addr", "show", "dev", dev]):
            for a in link.get("addr_info") or []:
                if str(a.get("scope")) == "link":
                    continue  # the kernel's IPv6 link-local address
                out.add(f"{a['local']}/{a['prefixlen']}")
        return out

    def _apply_ipip(self, want: DesiredState) -> None:
        if self.version != 4:
            return  # IPIP is IPv4 only; tunl0 belongs to the IPv4 instance
        spec = want.ipip
        if spec is None:
            if self.ipip is not None:
                self.ipip.stop(remove=True)
                self.ipip = None
                self.writes += 1
            elif not self._ipip_absent:
                # A persistent tunl0 left by an earlier run (ours only if it is a TUN).
                link = self._link(IPIP_DEVICE)
                if link and (link.get("linkinfo") or {}).get("info_kind") == "tun":
                    self._run(["ip", "link", "del", IPIP_DEVICE])
                    self.writes += 1
            self._ipip_spec, self._ipip_absent = None, True
            return
        self._ipip_absent = False
        if self.ipip is not None and (
            not self.ipip.running or self.ipip.local_ip != str(spec.local_ip)
        ):
            self.ipip.stop()
            self.ipip = None
        if self.ipip is None:
            self.ipip = self.ipip_factory(IPIP_DEVICE, str(spec.local_ip))
            self.ipip.start()
            self._ipip_spec, self._routes = None, None
        self.ipip.set_next_hops(want.ipip_next_hops)
        if spec == self._ipip_spec:
            return
        link = self._link(IPIP_DEVICE) or {}
        lines = []
        if link.get("mtu") != spec.mtu:
            lines.append(f"link set dev {IPIP_DEVICE} mtu {spec.mtu}")
        if "UP" not in (link.get("flags") or []):
            lines.append(f"link set dev {IPIP_DEVICE} up")
        # On a point-to-point device every next hop shares one neighbour entry (key
        # 0.0.0.0); making it permanent keeps tunl0 working when the kernel's (global)
        # neighbour table is full, where creating it on demand fails with ENOBUFS.
        lines.append(f"neigh replace 0.0.0.0 dev {IPIP_DEVICE} nud permanent")
        have = self._addrs(IPIP_DEVICE)
        want_addrs = {f"{spec.address}/32"} if spec.address else set()
        lines += [f"addr replace {a} dev {IPIP_DEVICE}" for a in sorted(want_addrs - have)]
        lines += [f"addr del {a} dev {IPIP_DEVICE}" for a in sorted(have - want_addrs)]
        if lines:
            self._batch("ip", lines)
        self._ipip_spec = spec

    def _apply_vteps(self, want: DesiredState) -> None:
        desired = set(want.vteps) if want.vxlan is not None else set()
        if want.vxlan is None:
            self._vteps = set()
            return
        if self._vteps is None:
            neigh = {
                (r["dst"], str(r.get("lladdr", "")).lower())
                for r in self._json(["ip", "-j", self._fam, "neigh", "show", "dev", self.vx_dev])
                if "PERMANENT" in (r.get("state") or [])
            }
            fdb = {
                (str(r["mac"]).lower(), str(r["dst"]))
                for r in self._json(["bridge", "-j", "fdb", "show", "dev", self.vx_dev])
                if r.get("dst")
            }
        else:
            neigh = {(str(v.tunnel_ip), v.mac) for v in self._vteps}
            fdb = {(v.mac, str(v.node_ip)) for v in self._vteps}
        want_neigh = {(str(v.tunnel_ip), v.mac) for v in desired}
        want_fdb = {(v.mac, str(v.node_ip)) for v in desired}
        stale_neigh = {ip for ip, _ in neigh - want_neigh} - {ip for ip, _ in want_neigh}
        ip_lines = [f"neigh del {ip} dev {self.vx_dev}" for ip in sorted(stale_neigh)]
        ip_lines += [
            f"neigh replace {ip} lladdr {mac} dev {self.vx_dev} nud permanent"
            for ip, mac in sorted(want_neigh - neigh)
        ]
        br_lines = [
            f"fdb del {mac} dev {self.vx_dev} dst {dst} self" for mac, dst in sorted(fdb - want_fdb)
        ]
        br_lines += [
            f"fdb replace {mac} dev {self.vx_dev} dst {dst} self permanent"
            for mac, dst in sorted(want_fdb - fdb)
        ]
        if br_lines:
            self._batch("bridge", br_lines)
        if ip_lines:
            self._batch("ip", ip_lines)
        self._vteps = desired

    def _apply_routes(self, desired: Mapping[Net, Route]) -> None:
        # Workload routes need their interface; one the CNI plugin has not created yet (or
        # has already removed) is skipped, not an error (the CNI plugin adds the route itself).
        if self._routes is None:
            actual: dict[Net, Route] = {}
            cmd = ["ip", "-j", self._fam, "route", "show", "proto", str(ROUTE_PROTO)]
            for rec in self._json(cmd):
                r = parse_route(rec)
                if r is not None:
                    actual[r.dst] = r
        else:
            actual = self._routes
        put, dele = route_delta(actual, desired)
        if any(r.scope_link for r in put):  # only then is the link list worth a read
            present = {str(x.get("ifname")) for x in self._json(["ip", "-j", "link", "show"])}
            desired = {d: r for d, r in desired.items() if not r.scope_link or r.dev in present}
            put, dele = route_delta(actual, desired)
        self._routes = None  # unknown until the batches succeeded
        if dele:
            try:
                self._batch("ip", [_route_del(r) for r in dele])
            except KernelError:
                # Typically already gone with its interface; re-read next time, not an error.
                self._routes = None
                if not put:
                    return
        if put:
            self._batch("ip", [f"route replace {r.ip_spec()} proto {ROUTE_PROTO}" for r in put])
        self._routes = dict(desired)

    def _apply_nat(self, want: DesiredState, full: bool) -> None:
        if self.nat is not None:
            excl = want.nat_exclude if want.nat_exclude else None
            if self.nat.reconcile(
                want.masq_pools,
                want.all_pools,
                exclude_hosts=excl,
                snat_to=want.nat_snat_to,
                check=full,
            ):
                self.writes += 1

    def _apply_mtu(self, mtu: int) -> None:
        if self.mtu_file and mtu > 0:
            write_mtu_file(mtu, self.mtu_file)

    def _batch(self, tool: str, lines: Sequence[str]) -> None:
        self.writes += 1
        argv = [tool, self._fam, "-force", "-batch", "-"] if tool == "ip" else [
            tool, "-force", "-batch", "-"]  # fmt: skip
        r = self.runner.run(argv, input="\n".join(lines) + "\n", timeout=30)
        if r.returncode != 0:
            raise KernelError(f"{tool} -batch: {(r.stderr or r.stdout).strip()}")

    def close(self) -> None:
        """Stop the userspace tunnel's I/O; its (persistent) device, the routes and the other
        devices stay, as Calico leaves the dataplane in place when Felix stops."""
        if self.ipip is not None:
            self.ipip.stop()
            self.ipip = None
