"""compute_bird_config: datastore resources → :class:`BirdConfig` (pure, deterministic).

Owns Calico's peering and export rules (reference §4.2–4.3), reproduced for BIRD 2:
- Node-to-node mesh (``nodeToNodeMeshEnabled``, default on) unless this node is a route
  reflector; towards every other node with an address of the family, skipping route
  reflectors; ``passive on`` towards peers whose IP is higher than ours (the higher node
  connects), so sessions never collide.
- BGPPeers: ``node`` (node specific, ``Node_``), ``nodeSelector`` (``Node_``), neither
  (``Global_``); targets by ``peerIP`` or ``peerSelector`` (Calico nodes, AS and port from
  those nodes). Reverse peering (``reversePeering`` Auto): a node matched by a peer's
  ``peerSelector`` peers back with the nodes the peer applies to.
- Route reflectors: a node with ``routeReflectorClusterID`` emits ``rr client; rr cluster
  id <ours>`` towards iBGP peers not in its cluster.
- Next hops: ``nextHopMode`` Self/Keep; deprecated ``keepOriginalNextHop`` = Keep towards
  eBGP peers only; Auto towards an eBGP peer inside our subnet keeps the next hop of relayed
  routes that lies in that subnet (the node hosting the block). ``reachableBy``: a static
  route to the peer via the gateway. ``restartMode`` LongLivedGracefulRestart: LLGR with
  ``maxRestartTime`` as the stale time.
- Duplicate peers (same ip+port) keep the first in the order mesh, node, global, reverse.
- Export: one static blackhole per confirmed affine block; borrowed /32s outside our blocks;
  pools with ``disableBGPExport`` never; kernel programming accepts exactly the pools whose
  owner is "bird" under :func:`pycalico.model.routing.cluster_route_owner` (FelixConfiguration
  and BGPConfiguration ``programClusterRoutes``); a pool nobody owns is a warning.
- Unlike Calico's BIRD 1.6 template, the kernel protocol does not ``learn`` foreign kernel
  routes: everything BIRD exports comes from this model (static blackholes for blocks,
  ``borrowed`` /32s given by the caller), so workload (``cali*``) and tunnel routes
  programmed by Felix/CNI can never leak into BGP; the export filter also rejects routes on
  those interfaces as a second guard.

Invariants: the result depends only on the inputs (sorted by name/CIDR); malformed input
raises BgpInputError; a peer whose secret cannot be resolved is left out and reported in
``BirdConfig.warnings`` (no unauthenticated session is ever rendered for it).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pycalico.bgp.errors import BgpInputError
from pycalico.bgp.filters import filter_functions, function_name
from pycalico.bgp.inputs import (
    PASSWORD_ANNOTATION,
    GlobalBgp,
    Resource,
    SecretLookup,
    affinity_info,
    global_bgp,
    node_info,
    parse_as_number,
    parse_duration_s,
    parse_peer_ip,
    pool_info,
    resolve_password,
    spec_of,
    where,
)
from pycalico.bgp.model import (
    DEFAULT_PORT,
    EXCLUDED_INTERFACES,
    BfdInterface,
    BirdConfig,
    BirdPeer,
    Community,
    FamilyConfig,
    PeerType,
    peer_protocol_name,
)
from pycalico.model.durations import parse_duration
from pycalico.model.felixconfig import resolve as resolve_felix
from pycalico.model.felixconfig import specs_by_name
from pycalico.model.network import Node
from pycalico.model.routing import cluster_route_owner
from pycalico.model.types import ModelError
from pycalico.selector import parse

SelectorEval = Callable[[str, Mapping[str, str]], bool]


def _default_selector_eval(text: str, labels: Mapping[str, str]) -> bool:
    return parse(text).evaluate(labels)


def compute_bird_config(
    node_name: str,
    *,
    nodes: Iterable[Resource],
    bgp_configurations: Iterable[Resource] = (),
    peers: Iterable[Resource] = (),
    filters: Iterable[Resource] = (),
    pools: Iterable[Resource] = (),
    block_affinities: Iterable[Resource] = (),
    borrowed: Iterable[str] = (),
    felix_configurations: Iterable[Resource] = (),
    bfd_configurations: Iterable[Resource] = (),
    secrets: SecretLookup | None = None,
    selector_eval: SelectorEval | None = None,
) -> BirdConfig:
    """The BIRD configuration of node ``node_name`` (see module docstring for the rules)."""
    sel_eval = selector_eval or _default_selector_eval
    infos = sorted((node_info(n) for n in nodes), key=lambda n: n.name)
    me = next((n for n in infos if n.name == node_name), None)
    if me is None:
        raise BgpInputError(f"Node/{node_name}", "no such node")
    if me.ip is None and me.ip6 is None:
        raise BgpInputError(f"Node/{node_name}: spec.bgp", "no ipv4Address or ipv6Address")
    gcfg = global_bgp(bgp_configurations, node_name)
    peer_res = sorted(peers, key=lambda r: str((r.get("metadata") or {}).get("name", "")))
    filt_res = {str((f.get("metadata") or {}).get("name", "")): f for f in filters}
    pool_infos = sorted((pool_info(p) for p in pools), key=lambda p: (p.cidr.version, p.cidr))
    blocks = _confirmed_blocks(block_affinities, node_name)
    felix_pcr = resolve_felix(node_name, specs_by_name(felix_configurations)).program_cluster_routes
    owners = {
        p.cidr: cluster_route_owner(p, felix_pcr, gcfg.program_cluster_routes) for p in pool_infos
    }
    local_as = me.as_number if me.as_number is not None else gcfg.as_number
    warnings: list[str] = [
        f"IPPool {p.name}: neither Felix (programClusterRoutes={felix_pcr}) nor BIRD "
        f"(programClusterRoutes={gcfg.program_cluster_routes}) programs its cluster routes"
        for p in pool_infos
        if owners[p.cidr] is None
    ]
    ctx = _Ctx(me, infos, gcfg, local_as, secrets, sel_eval, warnings, set(filt_res))

    families = []
    for version in (4, 6):
        my_ip = _ip(me, version)
        if my_ip is None:
            continue
        fam_peers = ctx.peers(version, my_ip, peer_res)
        used = {f for p in fam_peers for f in (*p.import_filters, *p.export_filters)}
        funcs = []
        for fname in sorted(filt_res):
            for fn in filter_functions(filt_res[fname], version):
                if fn.name in used:
                    funcs.append(fn)
        fam_blocks = [b for b in blocks if b.version == version]
        fam_pools = [p for p in pool_infos if p.cidr.version == version]
        families.append(
            FamilyConfig(
                version=version,
                node_ip=my_ip,
                local_as=local_as,
                listen_address=my_ip if gcfg.bind_node_ip else None,
                blocks=tuple(str(b) for b in fam_blocks),
                borrowed=_borrowed(borrowed, fam_blocks, version),
                export_pools=tuple(str(p.cidr) for p in fam_pools if not p.disable_bgp_export),
                no_export_pools=tuple(str(p.cidr) for p in fam_pools if p.disable_bgp_export),
                felix_pools=tuple(str(p.cidr) for p in fam_pools if owners[p.cidr] != "bird"),
                peers=tuple(fam_peers),
                filters=tuple(funcs),
                service_cidrs=tuple(c for c in gcfg.service_cidrs if _v_net(c) == version),
                communities=tuple(
                    Community(cidr, val)
                    for cidr, val in gcfg.communities
                    if _v_net(cidr) == version
                ),
            )
        )
    excluded = tuple(dict.fromkeys((*EXCLUDED_INTERFACES, *gcfg.ignored_interfaces)))
    return BirdConfig(
        node_name=node_name,
        router_id=_ip(me, 4) or _hashed_router_id(node_name),
        listen_port=gcfg.port_of(node_name),
        log_classes=_LOG_CLASSES.get(gcfg.log_severity.lower(), _LOG_CLASSES["info"]),
        excluded_interfaces=excluded,
        families=tuple(families),
        bfd_interfaces=_bfd_interfaces(me, bfd_configurations, sel_eval),
        warnings=tuple(warnings),
    )


_LOG_CLASSES = {
    "debug": ("all",),
    "info": ("info", "remote", "warning", "error", "auth", "fatal", "bug"),
    "warning": ("warning", "error", "auth", "fatal", "bug"),
    "error": ("error", "auth", "fatal", "bug"),
    "fatal": ("fatal", "bug"),
    "none": ("bug",),
}


def _bfd_interfaces(
    me: Node, configs: Iterable[Resource], sel_eval: SelectorEval
) -> tuple[BfdInterface, ...]:
    """Interface timers of the BFDConfigurations selecting ``me`` (by name; first match wins
    in BIRD), then a catch-all ``*`` with Calico's defaults."""
    out: list[BfdInterface] = []
    for res in sorted(configs, key=lambda r: str((r.get("metadata") or {}).get("name", ""))):
        spec, w = spec_of(res), where(res)
        sel = str(spec.get("nodeSelector") or "")
        try:
            if sel and not sel_eval(sel, me.labels):
                continue
        except ValueError as e:
            raise BgpInputError(
                f"{w}: spec.nodeSelector", f"invalid selector {sel!r}: {e}"
            ) from None
        for i, iface in enumerate(spec.get("interfaces") or ()):
            fld = f"{w}: spec.interfaces[{i}]"
            d = BfdInterface()
            out.append(
                BfdInterface(
                    pattern=str(iface.get("matchPattern") or "*"),
                    min_rx_ms=_ms(iface.get("minimumRecvInterval"), d.min_rx_ms, fld),
                    min_tx_ms=_ms(iface.get("minimumSendInterval"), d.min_tx_ms, fld),
                    idle_tx_ms=_ms(iface.get("idleSendInterval"), d.idle_tx_ms, fld),
                    multiplier=int(iface.get("multiplier") or d.multiplier),
                )
            )
    if not any(i.pattern == "*" for i in out):
        out.append(BfdInterface())
    return tuple(out)


def _ms(value: Any, default: int, fld: str) -> int:
    if value in (None, ""):
        return default
    try:
        ms = round(parse_duration(value, fld, bare_numbers=False) * 1000)
    except ModelError:
        raise BgpInputError(fld, f"invalid interval {value!r} (want e.g. 100ms)") from None
    if ms <= 0:
        raise BgpInputError(fld, f"interval {value!r} must be at least 1ms")
    return ms


def _v_net(cidr: str) -> int:
    return ipaddress.ip_network(cidr).version


def _directly_connected(node: Node, version: int, ip: str) -> bool:
    """Whether ``ip`` is inside the subnet of the node's underlay address of ``version``."""
    a = node.address(version)
    return (
        a is not None
        and a.network.prefixlen < a.network.max_prefixlen
        and (ipaddress.ip_address(ip) in a.network)
    )


def _ip(node: Node, version: int) -> str | None:
    """The node's underlay IP of ``version`` as text (None when it has none)."""
    a = node.address(version)
    return None if a is None else str(a.ip)


def _hashed_router_id(node_name: str) -> str:
    """IPv6-only nodes need a 32-bit router id: derive a stable one from the node name."""
    digest = hashlib.sha256(node_name.encode()).digest()
    return str(ipaddress.IPv4Address(int.from_bytes(digest[:4], "big") or 1))


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _confirmed_blocks(affinities: Iterable[Resource], node_name: str) -> list[Net]:
    out: set[Net] = set()
    for a in affinities:
        spec = spec_of(a)
        if spec.get("node") != node_name:
            continue
        aff = affinity_info(a)
        if aff.confirmed:
            out.add(aff.cidr)
    return sorted(out, key=lambda n: (n.version, n))


def _borrowed(items: Iterable[str], blocks: list[Net], version: int) -> tuple[str, ...]:
    out: set[Net] = set()
    for item in items:
        try:
            net = ipaddress.ip_network(
                item if "/" in item else f"{item}/{128 if ':' in item else 32}"
            )
        except ValueError:
            raise BgpInputError("borrowed", f"invalid address {item!r}") from None
        if net.version != version or net.prefixlen != net.max_prefixlen:
            continue
        if any(net.subnet_of(b) for b in blocks):  # type: ignore[arg-type]
            continue
        out.add(net)
    return tuple(str(n) for n in sorted(out))


class _Ctx:
    """Per-computation state shared by the peer builders."""

    def __init__(
        self,
        me: Node,
        nodes: list[Node],
        gcfg: GlobalBgp,
        local_as: int,
        secrets: SecretLookup | None,
        sel_eval: SelectorEval,
        warnings: list[str],
        filter_names: set[str],
    ) -> None:
        self.me, self.nodes, self.g, self.local_as = me, nodes, gcfg, local_as
        self.secrets, self.sel_eval, self.warnings = secrets, sel_eval, warnings
        self.filter_names = filter_names

    def _sel(self, text: str, labels: Mapping[str, str], fld: str) -> bool:
        try:
            return self.sel_eval(text, labels)
        except ValueError as e:  # SelectorError is a ValueError
            raise BgpInputError(fld, f"invalid selector {text!r}: {e}") from None

    def node_as(self, n: Node) -> int:
        return n.as_number if n.as_number is not None else self.g.as_number

    def peers(self, version: int, my_ip: str, peer_res: list[Resource]) -> list[BirdPeer]:
        out: list[BirdPeer] = []
        seen: set[tuple[str, int]] = set()

        def add(p: BirdPeer | None) -> None:
            if p is None or p.ip == my_ip:
                return
            key = (p.ip, p.port or DEFAULT_PORT)
            if key not in seen:
                seen.add(key)
                out.append(p)

        for mp in self.mesh(version, my_ip):
            add(mp)
        forward: list[tuple[int, BirdPeer | None]] = []
        reverse: list[BirdPeer | None] = []
        for res in peer_res:
            spec = spec_of(res)
            w = where(res)
            applies, ptype = self.applies_to_me(spec, w)
            if applies:
                rank = 0 if ptype is PeerType.NODE else 1
                forward += [(rank, p) for p in self.targets(res, spec, ptype, version, my_ip)]
            reverse += self.reverse(res, spec, version, my_ip)
        for _, fp in sorted(forward, key=lambda t: t[0]):
            add(fp)
        for rp in reverse:
            add(rp)
        return out

    def mesh(self, version: int, my_ip: str) -> list[BirdPeer]:
        if not self.g.mesh_enabled or self.me.rr_cluster_id is not None:
            return []
        pw, warn = resolve_password(
            self.g.mesh_password, "BGPConfiguration/default: spec.nodeMeshPassword", self.secrets
        )
        if warn:
            self.warnings.append(warn + " (mesh peers left out)")
            return []
        out = []
        for n in self.nodes:
            ip = _ip(n, version)
            if n.name == self.me.name or ip is None or n.rr_cluster_id is not None:
                continue
            port = self.g.port_of(n.name)
            asn = self.node_as(n)
            out.append(
                BirdPeer(
                    name=peer_protocol_name(PeerType.MESH, ip, port),
                    type=PeerType.MESH,
                    ip=ip,
                    port=None if port == DEFAULT_PORT else port,
                    as_number=asn,
                    internal=asn == self.local_as,
                    source_address=my_ip,
                    passive=_higher(ip, my_ip),
                    password=pw,
                    graceful_restart_time=self.g.mesh_restart_time,
                    calico_node=n.name,
                    bfd=self.g.mesh_bfd and _directly_connected(self.me, version, ip),
                )
            )
        return out

    def applies_to_me(self, spec: Mapping[str, Any], w: str) -> tuple[bool, PeerType]:
        node, nsel = spec.get("node") or "", spec.get("nodeSelector") or ""
        if node:
            return node == self.me.name, PeerType.NODE
        if nsel:
            return self._sel(nsel, self.me.labels, f"{w}: spec.nodeSelector"), PeerType.NODE
        return True, PeerType.GLOBAL

    def targets(
        self, res: Resource, spec: Mapping[str, Any], ptype: PeerType, version: int, my_ip: str
    ) -> list[BirdPeer | None]:
        w = where(res)
        if spec.get("peerIP"):
            ip, port = parse_peer_ip(spec["peerIP"], f"{w}: spec.peerIP")
            if ipaddress.ip_address(ip).version != version:
                return []
            if spec.get("asNumber") in (None, ""):
                raise BgpInputError(f"{w}: spec.asNumber", "required with peerIP")
            asn = parse_as_number(spec["asNumber"], f"{w}: spec.asNumber")
            node = next((n for n in self.nodes if _ip(n, version) == ip), None)
            return [self.build(res, spec, ptype, ip, port, asn, node, my_ip)]
        psel = spec.get("peerSelector") or ""
        if not psel:
            raise BgpInputError(f"{w}: spec", "one of peerIP or peerSelector is required")
        out: list[BirdPeer | None] = []
        for n in self.nodes:
            nip = _ip(n, version)
            if n.name == self.me.name or nip is None:
                continue
            if self._sel(psel, n.labels, f"{w}: spec.peerSelector"):
                port = self.g.port_of(n.name)
                out.append(self.build(res, spec, ptype, nip, port, self.node_as(n), n, my_ip, True))
        return out

    def reverse(
        self, res: Resource, spec: Mapping[str, Any], version: int, my_ip: str
    ) -> list[BirdPeer | None]:
        """Peer back with the nodes a peerSelector BGPPeer applies to, if it selects us."""
        w = where(res)
        psel = spec.get("peerSelector") or ""
        if not psel or spec.get("reversePeering", "Auto") == "Manual":
            return []
        if not self._sel(psel, self.me.labels, f"{w}: spec.peerSelector"):
            return []
        out: list[BirdPeer | None] = []
        for n in self.nodes:
            ip = _ip(n, version)
            if n.name == self.me.name or ip is None:
                continue
            node, nsel = spec.get("node") or "", spec.get("nodeSelector") or ""
            if node and node != n.name:
                continue
            if nsel and not self._sel(nsel, n.labels, f"{w}: spec.nodeSelector"):
                continue
            port = self.g.port_of(n.name)
            out.append(
                self.build(res, spec, PeerType.NODE, ip, port, self.node_as(n), n, my_ip, True)
            )
        return out

    def build(
        self,
        res: Resource,
        spec: Mapping[str, Any],
        ptype: PeerType,
        ip: str,
        port: int | None,
        asn: int,
        node: Node | None,
        my_ip: str,
        calico_peer: bool = False,
    ) -> BirdPeer | None:
        w = where(res)
        port = None if port in (None, DEFAULT_PORT) else port
        local_as = self.local_as
        override = None
        if spec.get("localASNumber") not in (None, ""):
            override = parse_as_number(spec["localASNumber"], f"{w}: spec.localASNumber")
            local_as = override
        ann = ((res.get("metadata") or {}).get("annotations") or {}).get(PASSWORD_ANNOTATION)
        pw, warn = resolve_password(spec.get("password"), f"{w}: spec.password", self.secrets, ann)
        if warn:
            self.warnings.append(warn + f" (peer {ip} left out)")
            return None
        internal = asn == local_as
        rr = None
        if self.me.rr_cluster_id and internal:
            if node is None or node.rr_cluster_id != self.me.rr_cluster_id:
                rr = self.me.rr_cluster_id
        # keepOriginalNextHop (deprecated) means Keep towards eBGP peers only, as in Calico.
        keep = bool(spec.get("keepOriginalNextHop")) and not internal
        nh_mode = spec.get("nextHopMode") or ("Keep" if keep else "Auto")
        if nh_mode not in ("Auto", "Self", "Keep"):
            raise BgpInputError(f"{w}: spec.nextHopMode", f"{nh_mode!r} is not Auto/Self/Keep")
        version = _v(ip)
        direct = _directly_connected(self.me, version, ip)
        third_party = None
        if nh_mode == "Auto" and not internal and direct:
            third_party = str(self.me.address(version).network)  # type: ignore[union-attr]
        via = _reachable_by(spec, w, ip)
        src = spec.get("sourceAddress") or "UseNodeIP"
        if src not in ("UseNodeIP", "None"):
            raise BgpInputError(f"{w}: spec.sourceAddress", f"{src!r} is not UseNodeIP/None")
        ttl = spec.get("ttlSecurity")
        if ttl not in (None, 0) and (isinstance(ttl, bool) or not isinstance(ttl, int)):
            raise BgpInputError(f"{w}: spec.ttlSecurity", f"{ttl!r} is not a hop count 0..255")
        allow = spec.get("numAllowedLocalASNumbers")
        if allow not in (None, 0) and (
            isinstance(allow, bool) or not isinstance(allow, int) or not 0 < allow < 2**31
        ):
            raise BgpInputError(
                f"{w}: spec.numAllowedLocalASNumbers", f"{allow!r} is not a count >= 0"
            )
        fdm = spec.get("failureDetectionMode") or "None"
        if fdm not in ("None", "BFDIfDirectlyConnected"):
            raise BgpInputError(
                f"{w}: spec.failureDetectionMode", f"{fdm!r} is not None/BFDIfDirectlyConnected"
            )
        mode = spec.get("restartMode") or "GracefulRestart"
        if mode not in ("GracefulRestart", "LongLivedGracefulRestart"):
            raise BgpInputError(
                f"{w}: spec.restartMode",
                f"{mode!r} is not GracefulRestart/LongLivedGracefulRestart",
            )
        llgr = mode == "LongLivedGracefulRestart"
        restart = _opt_dur(spec.get("maxRestartTime"), f"{w}: spec.maxRestartTime")
        fnames = []
        for f in spec.get("filters") or []:
            if str(f) in self.filter_names:
                fnames.append(str(f))
            else:
                self.warnings.append(f"{w}: spec.filters: BGPFilter {f!r} not found (ignored)")
        return BirdPeer(
            name=peer_protocol_name(ptype, ip, port),
            type=ptype,
            ip=ip,
            port=port,
            as_number=asn,
            local_as=override,
            internal=internal,
            source_address=my_ip if src == "UseNodeIP" else None,
            # Towards Calico nodes the lower IP waits, so the two sides never collide.
            passive=(calico_peer or node is not None) and _higher(ip, my_ip),
            password=pw,
            graceful_restart_time=None if llgr else restart,
            llgr_stale_time=(restart or 0) if llgr else None,
            keepalive_time=_opt_dur(spec.get("keepaliveTime"), f"{w}: spec.keepaliveTime"),
            ttl_security_hops=int(ttl) if ttl else None,
            rr_cluster_id=rr,
            next_hop={"Auto": None, "Self": "self", "Keep": "keep"}[nh_mode],
            third_party_subnet=third_party,
            reachable_by=via,
            allow_local_as=int(allow) if allow else None,
            import_filters=tuple(function_name(f, "import", _v(ip)) for f in fnames),
            export_filters=tuple(function_name(f, "export", _v(ip)) for f in fnames),
            calico_node=node.name if node is not None else None,
            bfd=fdm == "BFDIfDirectlyConnected" and direct,
        )


def _v(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def _reachable_by(spec: Mapping[str, Any], w: str, peer_ip: str) -> str | None:
    """BGPPeer ``reachableBy``: the gateway of a static route to ``peerIP`` (same family)."""
    value = spec.get("reachableBy") or None
    if value is None:
        return None
    fld = f"{w}: spec.reachableBy"
    if not spec.get("peerIP"):
        raise BgpInputError(fld, "reachableBy must be empty when peerIP is empty")
    try:
        gw = ipaddress.ip_address(str(value))
    except ValueError:
        raise BgpInputError(fld, f"invalid IP address {value!r}") from None
    if gw.version != _v(peer_ip):
        raise BgpInputError(fld, "reachableBy and peerIP address family mismatched")
    return str(gw)


def _higher(peer_ip: str, my_ip: str) -> bool:
    return int(ipaddress.ip_address(peer_ip)) > int(ipaddress.ip_address(my_ip))


def _opt_dur(value: Any, fld: str) -> int | None:
    return None if value in (None, "") else parse_duration_s(value, fld)
