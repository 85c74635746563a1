"""Pure typed model of one node's BIRD 2 configuration (the value the template formats).

Owns: the dataclasses :class:`BirdConfig`, :class:`FamilyConfig`, :class:`BirdPeer`,
:class:`FilterFunction`, :class:`FilterRule`, :class:`FilterOperation`, :class:`BfdInterface`,
:class:`Community`. They carry no behaviour beyond naming helpers.

Invariants:
- Immutable (frozen dataclasses, tuples) and fully computed: the jinja2 template only loops
  and branches over these values, it never derives anything.
- IPv4 and IPv6 are two :class:`FamilyConfig` instances of the same class (``version`` 4/6).
- Peer names follow Calico: ``Mesh_<ip>``, ``Node_<ip>``, ``Global_<ip>`` with ``.``/``:``
  replaced by ``_`` and a ``_port_<n>`` suffix when a non-default port is used; names are
  unique within a config, and so are (peer ip, port) pairs.
- Kernel routes BIRD installs carry route protocol **12** (``bird`` in
  ``/etc/iproute2/rt_protos``; BIRD 2 always installs with ``RTPROT_BIRD``) and metric
  :data:`KERNEL_METRIC`; that is the ownership mark of BGP-programmed routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_AS = 64512
DEFAULT_PORT = 179
KERNEL_ROUTE_PROTOCOL = 12
KERNEL_METRIC = 32
# Seconds a BIRD started in graceful restart recovery (-R) keeps its predecessor's kernel
# routes while waiting for BGP sessions to re-establish and send End-of-RIB (BIRD's default
# is 240 s; a peer that is gone would hold back new kernel routes that long).
GRACEFUL_RESTART_WAIT = 30
# Interfaces whose routes are never taken into BIRD nor exported (workloads and tunnels).
EXCLUDED_INTERFACES = ("cali*", "vxlan.calico", "vxlan-v6.calico", "tunl0", "wireguard.cali")


class PeerType(StrEnum):
    """How a peering came about; the value is the protocol-name prefix Calico uses."""

    MESH = "Mesh"
    NODE = "Node"
    GLOBAL = "Global"

    @property
    def description(self) -> str:
        """The PEER TYPE column of ``calicoctl node status``."""
        return {
            PeerType.MESH: "node-to-node mesh",
            PeerType.NODE: "node specific",
            PeerType.GLOBAL: "global",
        }[self]


def peer_protocol_name(kind: PeerType, ip: str, port: int | None) -> str:
    """``Mesh_10_0_0_2``, ``Global_fd00__1_port_1179`` (Calico's naming, parsed back by ctl)."""
    name = f"{kind.value}_{ip.replace('.', '_').replace(':', '_')}"
    if port is not None and port != DEFAULT_PORT:
        name += f"_port_{port}"
    return name


class MatchOperator(StrEnum):
    EQUAL = "Equal"
    NOT_EQUAL = "NotEqual"
    IN = "In"
    NOT_IN = "NotIn"


@dataclass(frozen=True)
class FilterOperation:
    """One operation of an accepting BGPFilter rule, applied before ``accept``:
    ``community`` (AddCommunity, value ``aa:nn``/``aa:nn:mm``), ``prepend`` (PrependASPath:
    one AS number; a rule's prefix becomes several, last first) or ``priority`` (SetPriority:
    the BIRD ``bgp_local_pref`` value, already inverted)."""

    kind: str  # "community" | "prepend" | "priority"
    value: str

    @property
    def bird_pair(self) -> str:
        return "(" + ", ".join(self.value.split(":")) + ")"

    @property
    def large(self) -> bool:
        return self.value.count(":") == 2


@dataclass(frozen=True)
class FilterRule:
    """One BGPFilter rule: all present matches must hold; then ``accept`` or ``reject``."""

    action: str  # "accept" | "reject"
    cidr: str | None = None
    operator: MatchOperator | None = None
    min_len: int | None = None  # set only when prefixLength was given (In/NotIn)
    max_len: int | None = None
    remote_peers_only: bool = False  # source: RemotePeers
    interface: str | None = None  # BIRD glob on ifname
    peer_type: str | None = None  # "eBGP" | "iBGP": only for peers of that kind
    community: str | None = None  # communities.values[0]: "aa:nn" or "aa:nn:mm"
    as_path_prefix: tuple[int, ...] = ()  # the AS path starts with these
    local_pref: int | None = None  # priority match, as the bgp_local_pref it stands for
    operations: tuple[FilterOperation, ...] = ()

    @property
    def community_pair(self) -> str:
        return "(" + ", ".join((self.community or "").split(":")) + ")"

    @property
    def community_attr(self) -> str:
        return "bgp_large_community" if (self.community or "").count(":") == 2 else "bgp_community"


@dataclass(frozen=True)
class FilterFunction:
    """A BIRD function ``bgp_<filter>_<import|export>FilterV<4|6>(bool internal_peer)`` (first
    match wins; each peer passes whether it is iBGP, for ``peerType`` matches)."""

    name: str
    rules: tuple[FilterRule, ...]


@dataclass(frozen=True)
class BirdPeer:
    """One ``protocol bgp`` towards a neighbour."""

    name: str
    type: PeerType
    ip: str
    as_number: int
    port: int | None = None  # None = default 179
    local_as: int | None = None  # per-peer override of the node's AS
    internal: bool = True  # iBGP (peer AS == local AS)
    source_address: str | None = None
    passive: bool = False
    password: str | None = None
    graceful_restart_time: int | None = None
    # restartMode LongLivedGracefulRestart: LLGR on, stale time = maxRestartTime (or BIRD's
    # default 3600 s when 0); graceful_restart_time is then left at BIRD's default.
    llgr_stale_time: int | None = None
    keepalive_time: int | None = None
    ttl_security_hops: int | None = None
    rr_cluster_id: str | None = None  # set => "rr client; rr cluster id <id>"
    next_hop: str | None = None  # "self" | "keep" | None (Auto)
    # Auto next hop towards an eBGP peer on our subnet: routes learned over BGP whose next
    # hop is inside this subnet keep it (the node hosting the block), not ours (the relay).
    third_party_subnet: str | None = None
    # reachableBy: a static route to the peer's /32 (/128) via this gateway.
    reachable_by: str | None = None
    allow_local_as: int | None = None
    import_filters: tuple[str, ...] = ()
    export_filters: tuple[str, ...] = ()
    calico_node: str | None = None  # name of the Calico node behind this peer, if any
    # failureDetectionMode BFDIfDirectlyConnected and the peer is on one of our subnets:
    # the session is "direct" (single hop) and BFD-tracked ("bfd graceful" + the agent's
    # BFD guard: BFD down while established = session down; during a restart = ignored).
    bfd: bool = False


@dataclass(frozen=True)
class BfdInterface:
    """One ``interface "<pattern>"`` block of ``protocol bfd`` (BFDConfiguration timers)."""

    pattern: str = "*"
    min_rx_ms: int = 10
    min_tx_ms: int = 100
    idle_tx_ms: int = 60000
    multiplier: int = 5


@dataclass(frozen=True)
class Community:
    """A community BIRD adds to exported routes inside ``cidr`` (prefixAdvertisements)."""

    cidr: str
    value: str  # "aa:nn" (standard) or "aa:nn:mm" (large)

    @property
    def large(self) -> bool:
        return self.value.count(":") == 2

    @property
    def bird_pair(self) -> str:
        """``(aa, nn)`` / ``(aa, nn, mm)`` as BIRD writes community literals."""
        return "(" + ", ".join(self.value.split(":")) + ")"


@dataclass(frozen=True)
class FamilyConfig:
    """Everything of one IP family (same class for v4 and v6)."""

    version: int
    node_ip: str
    local_as: int
    listen_address: str | None = None  # bindMode NodeIP: sessions bound to node_ip
    blocks: tuple[str, ...] = ()  # confirmed affine blocks: static blackhole + exported
    borrowed: tuple[str, ...] = ()  # borrowed /32 (/128) outside our blocks: exported only
    export_pools: tuple[str, ...] = ()  # pools whose routes may be exported
    no_export_pools: tuple[str, ...] = ()  # disableBGPExport pools: never exported
    felix_pools: tuple[str, ...] = ()  # pools BIRD must not program (owner Felix or nobody)
    # Service ranges (BGPConfiguration serviceClusterIPs/ExternalIPs/LoadBalancerIPs):
    # originated from every node as static blackholes, exported, never programmed locally.
    service_cidrs: tuple[str, ...] = ()
    communities: tuple[Community, ...] = ()  # prefixAdvertisements, in order
    peers: tuple[BirdPeer, ...] = ()
    filters: tuple[FilterFunction, ...] = ()

    @property
    def all_pools(self) -> tuple[str, ...]:
        """Every pool CIDR: kernel routes inside them are never learned into BIRD."""
        return self.export_pools + self.no_export_pools

    @property
    def channel(self) -> str:
        return f"ipv{self.version}"

    @property
    def suffix(self) -> str:
        return str(self.version)

    def peer(self, name: str) -> BirdPeer:
        for p in self.peers:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True)
class BirdConfig:
    """The whole configuration of one node's BIRD 2 daemon (both families in one daemon)."""

    node_name: str
    router_id: str
    listen_port: int = DEFAULT_PORT
    graceful_restart_wait: int = GRACEFUL_RESTART_WAIT
    log_classes: tuple[str, ...] = ("info", "remote", "warning", "error", "auth", "fatal", "bug")
    excluded_interfaces: tuple[str, ...] = EXCLUDED_INTERFACES
    families: tuple[FamilyConfig, ...] = ()
    bfd_interfaces: tuple[BfdInterface, ...] = (BfdInterface(),)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def family(self, version: int) -> FamilyConfig | None:
        for f in self.families:
            if f.version == version:
                return f
        return None

    @property
    def bfd(self) -> bool:
        """Whether any peer is BFD-tracked (then ``protocol bfd`` is rendered)."""
        return any(p.bfd for f in self.families for p in f.peers)

    @property
    def v4(self) -> FamilyConfig | None:
        return self.family(4)

    @property
    def v6(self) -> FamilyConfig | None:
        return self.family(6)
