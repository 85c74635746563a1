"""A node's tunnel addresses: allocated from IPAM and recorded on its Node resource.

:func:`ensure_tunnel_addresses` is what calico-node's ``allocateip`` does at start-up and
whenever pools change (the one implementation; Felix never writes the datastore):
- a VXLAN IPv4 pool -> ``spec.ipv4VXLANTunnelAddr`` (IPAM handle ``vxlan-tunnel-addr-<node>``)
  and ``spec.vxlanTunnelMACAddr``;
- a VXLAN IPv6 pool and a node with ``spec.bgp.ipv6Address`` -> ``spec.ipv6VXLANTunnelAddr``
  (handle ``vxlan-v6-tunnel-addr-<node>``) and ``spec.vxlanTunnelMACAddrV6``;
- an IPIP pool -> ``spec.bgp.ipv4IPIPTunnelAddr`` (handle ``ipip-tunnel-addr-<node>``).
A held address outside every pool of its tunnel type is replaced by a fresh one. When no
(enabled) pool needs a tunnel type any more, its address is removed from the Node and then
released. VTEP MACs are derived from the node name (:func:`vxlan_mac`: stable, unicast,
locally administered) and kept once chosen, even while no VXLAN pool exists.

:class:`TunnelAddressComponent` is the supervised calico-node component that re-runs it when
an IPPool or this Node changes (its own Syncer over IPPool+Node, or a SyncerHub subscription).

Invariants: IPAM does the allocation (CAS inside); the Node write is a CAS retried on
Conflict (:data:`RETRIES` times); idempotent (a second call writes nothing); IPAM errors (no
address available) are reported as problems, never raised; a missing Node raises NotFound.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.datastore import Conflict, Datastore, NotFound
from pycalico.datastore.syncer import Syncer, SyncStatus, SyncUpdate
from pycalico.errors import CalicoError
from pycalico.model import ModelError
from pycalico.model.network import IPPool
from pycalico.system.clock import Clock, RealClock

log = logging.getLogger(__name__)
RETRIES = 10
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
Obj = dict[str, Any]

# Tunnel type -> (IP version, pool encap (model IPPool.encap), Node field path, Node MAC field
# or None).
TUNNELS: dict[str, tuple[int, str, tuple[str, ...], str | None]] = {
    "vxlan": (4, "vxlan", ("ipv4VXLANTunnelAddr",), "vxlanTunnelMACAddr"),
    "vxlan-v6": (6, "vxlan", ("ipv6VXLANTunnelAddr",), "vxlanTunnelMACAddrV6"),
    "ipip": (4, "ipip", ("bgp", "ipv4IPIPTunnelAddr"), None),
}


def vxlan_mac(node_name: str, version: int = 4) -> str:
    """A stable, locally administered unicast MAC for this node's VTEP of ``version``."""
    seed = "vxlan:" if version == 4 else "vxlan-v6:"
    b = bytearray(hashlib.sha256((seed + node_name).encode()).digest()[:6])
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


@dataclass
class TunnelAddresses:
    """The outcome: the Node as stored afterwards, the address per tunnel type (None: not
    needed or not available), whether the Node was written, and problems."""

    node: Obj
    addrs: dict[str, str | None] = field(default_factory=dict)
    changed: bool = False
    problems: list[str] = field(default_factory=list)


def _mode_pools(pools: list[Obj]) -> dict[str, list[IPNet]]:
    """Enabled pools per tunnel type (the model's IPPool.encap; a malformed pool needs no
    tunnel and is logged)."""
    out: dict[str, list[IPNet]] = {t: [] for t in TUNNELS}
    for p in pools:
        try:
            pool = IPPool.from_resource(p)
        except ModelError as e:
            log.warning("tunnel addresses: ignoring invalid pool: %s", e)
            continue
        if pool.disabled:
            continue
        for tunnel, (version, encap, _, _) in TUNNELS.items():
            if pool.version == version and pool.encap == encap:
                out[tunnel].append(pool.cidr)
    return out


def _set_addrs(node_name: str, spec: Obj, addrs: Mapping[str, str | None]) -> None:
    for tunnel, addr in addrs.items():
        version, _, path, mac_field = TUNNELS[tunnel]
        parent = spec
        if len(path) == 2:
            if addr is None and path[0] not in spec:
                continue
            parent = spec.setdefault(path[0], {})
        if addr:
            parent[path[-1]] = addr
            if mac_field and not spec.get(mac_field):
                spec[mac_field] = vxlan_mac(node_name, version)
        else:
            parent.pop(path[-1], None)


def ensure_tunnel_addresses(ds: Datastore, node_name: str) -> TunnelAddresses:
    """Make ``node_name``'s Node carry the tunnel addresses its pools need (module doc)."""
    from pycalico.ipam import IPAM, TUNNEL_TYPES

    ipam = IPAM(ds)
    problems: list[str] = []
    mode_pools = _mode_pools(list(ds.list("IPPool").items))
    has_v6 = bool(
        ((ds.get("Node", node_name).get("spec") or {}).get("bgp") or {}).get("ipv6Address")
    )
    addrs: dict[str, str | None] = {}
    unneeded: list[str] = []
    for tunnel, nets in mode_pools.items():
        if tunnel == "vxlan-v6" and not has_v6:
            nets = []  # an IPv6 VTEP needs the node's IPv6 address
        if not nets:
            addrs[tunnel] = None
            unneeded.append(tunnel)
            continue
        try:
            held = ipam.get_ips_by_handle(TUNNEL_TYPES[tunnel][0] + node_name)
            if held and not any(ip in n for ip in held for n in nets):
                # Its pool no longer has this tunnel type (or is gone): take a fresh one.
                ipam.release_tunnel_address(node_name, tunnel)
            addrs[tunnel] = str(ipam.assign_tunnel_address(node_name, tunnel).ip)
        except CalicoError as e:
            problems.append(f"{tunnel} tunnel address for {node_name}: {e}")
            addrs[tunnel] = None
    changed = False
    for _ in range(RETRIES):
        node = ds.get("Node", node_name)
        spec = node.setdefault("spec", {})
        before = repr(spec)
        _set_addrs(node_name, spec, addrs)
        if repr(spec) == before:
            break
        try:
            node = ds.update(node)
        except Conflict:
            continue
        log.info("node %s: tunnel addresses %s", node_name, addrs)
        changed = True
        break
    else:
        problems.append(f"node {node_name}: too many conflicts writing tunnel addresses")
    # Release addresses of tunnel types no pool needs any more (after the Node stopped
    # naming them).
    for tunnel in unneeded:
        try:
            ipam.release_tunnel_address(node_name, tunnel)
        except (CalicoError, NotFound) as e:
            problems.append(f"release {tunnel} tunnel address: {e}")
    return TunnelAddresses(node, addrs, changed, problems)


def _fingerprint(pools: Mapping[str, Obj], node: Obj | None) -> object:
    """What ensure_tunnel_addresses depends on: pools' CIDRs/modes/disabled and this Node's
    IPv6 address, tunnel addresses and MACs."""
    fp_pools = sorted(
        (str(s.get("cidr")), str(s.get("ipipMode")), str(s.get("vxlanMode")),
         bool(s.get("disabled")))
        for s in ((p.get("spec") or {}) for p in pools.values())
    )  # fmt: skip
    spec = (node or {}).get("spec") or {}
    bgp = spec.get("bgp") or {}
    fields = ("ipv4VXLANTunnelAddr", "vxlanTunnelMACAddr", "ipv6VXLANTunnelAddr",
              "vxlanTunnelMACAddrV6")  # fmt: skip
    mine = (bgp.get("ipv6Address"), bgp.get("ipv4IPIPTunnelAddr"), *map(spec.get, fields))
    return (tuple(fp_pools), node is not None, mine)


class TunnelAddressComponent:
    """Re-runs :func:`ensure_tunnel_addresses` whenever an IPPool or this Node changes (as
    calico-node's ``allocateip`` does); retries failures with back-off up to 5 s. ``hub``: a
    SyncerHub to subscribe to instead of an own Syncer over IPPool+Node. ``clock``: the time
    seam the back-off sleeps on (default :class:`~pycalico.system.clock.RealClock`)."""

    name = "tunnels"
    KINDS = ("IPPool", "Node")
    MAX_BACKOFF_S = 5.0

    def __init__(
        self,
        ds: Datastore,
        node_name: str,
        *,
        hub: Any = None,
        poll_interval: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self.ds = ds
        self.clock: Clock = clock if clock is not None else RealClock()
        self.node_name = node_name
        self.hub = hub
        self.poll_interval = poll_interval
        self.last_problems: list[str] = []
        self.runs = 0
        self._lock = threading.Lock()
        self._pools: dict[str, Obj] = {}
        self._node: Obj | None = None
        self._ds_in_sync = False
        self._done: object = None  # fingerprint of the last successful run
        self._ok = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._syncer: Any = None
        self._thread: threading.Thread | None = None

    # --- component ------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._ok.clear()
        self._done = None
        self._ds_in_sync = False
        with self._lock:
            self._pools, self._node = {}, None
        if self.hub is not None:
            self._syncer = self.hub.syncer_for(self.KINDS, self, f"tunnels-{self.node_name}")
        else:
            self._syncer = Syncer.for_kinds(
                self.ds, self.KINDS, self, poll_interval=self.poll_interval,
                name=f"tunnels-syncer-{self.node_name}",
            )  # fmt: skip
        self._thread = threading.Thread(
            target=self._loop, name=f"tunnels-{self.node_name}", daemon=True
        )
        self._thread.start()
        self._syncer.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._syncer is not None:
            self._syncer.stop(5.0)
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(5.0)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def in_sync(self) -> bool:
        """The Node carries what the current pools need (last run succeeded)."""
        return self._ok.is_set()

    # --- syncer callbacks (syncer thread) ------------------------------------------------
    def on_status(self, status: SyncStatus) -> None:
        if status is SyncStatus.IN_SYNC:
            self._ds_in_sync = True
            self._wake.set()

    def on_updates(self, updates: list[SyncUpdate]) -> None:
        from pycalico.datastore import EventType

        relevant = False
        with self._lock:
            for u in updates:
                kind = u.obj.get("kind")
                name = str((u.obj.get("metadata") or {}).get("name", ""))
                gone = u.type is EventType.DELETED
                if kind == "IPPool":
                    if gone:
                        self._pools.pop(name, None)
                    else:
                        self._pools[name] = u.obj
                    relevant = True
                elif kind == "Node" and name == self.node_name:
                    self._node = None if gone else u.obj
                    relevant = True
        if relevant:
            self._wake.set()

    # --- worker ---------------------------------------------------------------------------
    def _loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set() or not self._ds_in_sync:
                continue
            with self._lock:
                fp = _fingerprint(self._pools, self._node)
                have_node = self._node is not None
            if fp == self._done or not have_node:
                continue
            try:
                result = ensure_tunnel_addresses(self.ds, self.node_name)
                problems = result.problems
            except NotFound:
                continue  # the Node went away meanwhile; its re-creation wakes us
            except CalicoError as e:
                problems = [f"unexpected: {e}"]
            self.runs += 1
            self.last_problems = problems
            if problems:
                log.warning("tunnel addresses: %s (retry in %.1fs)", "; ".join(problems), backoff)
                self._ok.clear()
                self.clock.wait(self._stop, backoff)
                backoff = min(backoff * 2, self.MAX_BACKOFF_S)
                self._wake.set()
                continue
            backoff = 0.1
            with self._lock:  # our own Node write, when it comes back, changes nothing
                self._done = _fingerprint(self._pools, result.node)
            self._ok.set()
