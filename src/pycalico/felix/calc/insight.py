"""Policy insight: ``explain`` one flow and the reachability ``matrix`` of all workloads.

Owns :class:`PolicyInsight`, a pure function of a list of v3 resource dicts: it runs them
through a :class:`~pycalico.felix.calc.graph.CalcGraph` with every endpoint local, applies
the messages to a :class:`~pycalico.felix.calc.evaluate.DataplaneView` and evaluates flows.

A flow src -> dst is allowed iff the source's egress allows it (when the source is a Calico
endpoint) AND the destination's ingress allows it (when the destination is one). Endpoints
are named ``namespace/workload`` (workload = spec.workload, else spec.pod, else the
WorkloadEndpoint's name); a reference that is an IP address and no endpoint's address is an
external (non-Calico) peer.

Invariants: no I/O; errors are :class:`InsightError` naming the bad input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Literal

from pycalico.errors import CalicoError
from pycalico.felix.calc.evaluate import DataplaneView, Decision, IPAddress, Packet
from pycalico.felix.calc.graph import CalcGraph
from pycalico.model import Endpoint, ModelError, protocol_name, protocol_number


class InsightError(CalicoError, ValueError):
    """Bad input to explain/matrix (unknown endpoint, bad port or protocol)."""


@dataclass(frozen=True)
class Peer:
    """One side of a flow: a Calico endpoint, or an external address."""

    ip: IPAddress
    endpoint: Endpoint | None = None

    def label(self) -> str:
        return self.endpoint.display_name() if self.endpoint is not None else str(self.ip)


@dataclass(frozen=True)
class Explanation:
    verdict: Literal["allow", "deny"]
    src: Peer
    dst: Peer
    port: int | None
    protocol: int
    egress: Decision
    ingress: Decision

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "from": self.src.label(),
            "to": self.dst.label(),
            "port": self.port,
            "protocol": protocol_name(self.protocol),
            "egress": self.egress.to_json(),
            "ingress": self.ingress.to_json(),
        }


@dataclass(frozen=True)
class ProbeResult:
    src: str
    dst: str
    port: int
    protocol: int
    verdict: Literal["allow", "deny"]

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.src,
            "to": self.dst,
            "port": self.port,
            "protocol": protocol_name(self.protocol),
            "verdict": self.verdict,
        }


def parse_port_list(text: str) -> list[tuple[int, int]]:
    """``"80/TCP,81/UDP,53"`` -> [(80, 6), (81, 17), (53, 6)] (protocol defaults to TCP)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        port_s, _, proto_s = part.partition("/")
        if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
            raise InsightError(f"--ports: invalid port {part!r}")
        try:
            out.append((int(port_s), protocol_number(proto_s or "TCP")))
        except ModelError as exc:
            raise InsightError(f"--ports: {exc}") from exc
    return out


class PolicyInsight:
    """Explains flows and computes reachability over a set of resource dicts."""

    def __init__(self, resources: Iterable[Mapping[str, Any]]) -> None:
        self.graph = CalcGraph(hostname=None)
        self.graph.load(resources)
        self.view = DataplaneView()
        self.view.apply(self.graph.flush())
        #: Resources the graph skipped as invalid (the verdicts ignore them).
        self.warnings = tuple(
            f"skipped invalid resource {k}: {why}" for k, why in sorted(self.graph.rejected.items())
        )
        self.workloads = sorted(
            (e for e in self.graph.local_endpoints() if not e.is_host),
            key=lambda e: e.display_name(),
        )
        self._by_name: dict[str, Endpoint] = {}
        self._by_ip: dict[IPAddress, Endpoint] = {}
        for ep in self.graph.local_endpoints():
            self._by_name.setdefault(ep.display_name(), ep)
            if ep.namespace:
                self._by_name.setdefault(f"{ep.namespace}/{ep.id.name}", ep)
            for net in ep.nets:
                if net.num_addresses == 1:
                    self._by_ip.setdefault(net.network_address, ep)

    def resolve(self, ref: str) -> Peer:
        """``ns/workload`` (or ``ns/<WorkloadEndpoint name>``) or an IP address."""
        ep = self._by_name.get(ref)
        if ep is not None:
            if not ep.nets:
                raise InsightError(f"endpoint {ref!r} has no IP address")
            return Peer(ep.nets[0].network_address, ep)
        try:
            ip = ip_address(ref)
        except ValueError:
            raise InsightError(f"unknown endpoint {ref!r} (use NAMESPACE/NAME or an IP)") from None
        return Peer(ip, self._by_ip.get(ip))

    @staticmethod
    def _pick_ips(src: Peer, dst: Peer) -> tuple[IPAddress, IPAddress]:
        """Same-family addresses for the two peers (endpoints may be dual-stack)."""
        for version in (4, 6):
            s = [
                n.network_address
                for n in (src.endpoint.nets if src.endpoint else ())
                if n.version == version
            ] or ([src.ip] if src.ip.version == version else [])
            d = [
                n.network_address
                for n in (dst.endpoint.nets if dst.endpoint else ())
                if n.version == version
            ] or ([dst.ip] if dst.ip.version == version else [])
            if s and d:
                return s[0], d[0]
        raise InsightError(f"{src.label()} and {dst.label()} share no IP version")

    def _direction(
        self, peer: Peer, direction: Literal["ingress", "egress"], pkt: Packet
    ) -> Decision:
        if peer.endpoint is None:
            return Decision(
                "allow",
                "not-calico",
                None,
                trace=(f"{peer.ip} is not a Calico endpoint: no {direction} policy",),
            )
        return self.view.evaluate(peer.endpoint.id, direction, pkt)

    def explain_peers(
        self,
        src: Peer,
        dst: Peer,
        port: int | None,
        protocol: int,
        src_port: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
    ) -> Explanation:
        """Evaluate one flow between resolved peers (see :meth:`resolve`)."""
        sip, dip = self._pick_ips(src, dst)
        if protocol in (1, 58) and icmp_type is None:  # a ping: echo request
            icmp_type, icmp_code = (8 if protocol == 1 else 128), 0
        pkt = Packet(sip, dip, protocol, port, src_port, icmp_type, icmp_code)
        egress = self._direction(src, "egress", pkt)
        ingress = self._direction(dst, "ingress", pkt)
        verdict: Literal["allow", "deny"] = (
            "allow" if egress.verdict == "allow" and ingress.verdict == "allow" else "deny"
        )
        return Explanation(verdict, src, dst, port, protocol, egress, ingress)

    def explain(
        self,
        src: str,
        dst: str,
        port: int | None,
        protocol: str | int = "TCP",
        src_port: int | None = None,
    ) -> Explanation:
        try:
            proto = protocol_number(protocol)
        except ModelError as exc:
            raise InsightError(f"--protocol: {exc}") from exc
        return self.explain_peers(self.resolve(src), self.resolve(dst), port, proto, src_port)

    def default_ports(self) -> list[tuple[int, int]]:
        """The workloads' named ports (port, protocol), else 80/TCP."""
        ports = sorted({(p.port, p.protocol) for e in self.workloads for p in e.ports})
        return ports or [(80, 6)]

    def matrix(self, ports: Sequence[tuple[int, int]] | None = None) -> list[ProbeResult]:
        """Every ordered pair of distinct workloads x every (port, protocol)."""
        ports = list(ports) if ports else self.default_ports()
        peers = [Peer(e.nets[0].network_address, e) for e in self.workloads if e.nets]
        out = []
        for s in peers:
            for d in peers:
                if s.endpoint is d.endpoint:
                    continue
                for port, proto in ports:
                    ex = self.explain_peers(s, d, port, proto)
                    out.append(ProbeResult(s.label(), d.label(), port, proto, ex.verdict))
        return out


def format_explanation(ex: Explanation) -> str:
    """Human-readable text for ``calicoctl policy explain``."""
    lines = [
        f"{ex.src.label()} -> {ex.dst.label()} {protocol_name(ex.protocol)}"
        + (f"/{ex.port}" if ex.port is not None else "")
        + f": {ex.verdict.upper()}"
    ]
    for title, d in (("egress", ex.egress), ("ingress", ex.ingress)):
        where = ""
        if d.reason == "rule":
            where = f" by tier {d.tier}, policy {d.policy}, rule {d.rule} ({d.action})"
        elif d.reason == "tier-default":
            where = f" by end of tier {d.tier} (defaultAction Deny)"
        elif d.reason == "profile-rule":
            where = f" by profile {d.profile}, rule {d.rule} ({d.action})"
        elif d.reason == "missing-profile":
            where = f" by missing profile {d.profile}"
        elif d.reason == "no-profile-match":
            where = " by final drop (no profile accepted)"
        elif d.reason == "not-calico":
            where = " (not a Calico endpoint, no policy)"
        lines.append(f"  {title}: {d.verdict}{where}")
        lines.extend(f"    {t}" for t in d.trace)
    return "\n".join(lines)


def format_matrix(results: Sequence[ProbeResult]) -> str:
    """A table: one row per source, one column per destination x port."""
    if not results:
        return "no workloads"
    srcs = sorted({r.src for r in results})
    cols = sorted({(r.dst, r.port, r.protocol) for r in results})
    cell = {(r.src, r.dst, r.port, r.protocol): r.verdict for r in results}
    headers = ["FROM \\ TO"] + [f"{d} {p}/{protocol_name(pr)}" for d, p, pr in cols]
    rows = [
        [s]
        + [
            {"allow": "allow", "deny": "DENY"}.get(cell.get((s, d, p, pr), ""), "-")
            for d, p, pr in cols
        ]
        for s in srcs
    ]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [headers, *rows]
    )
