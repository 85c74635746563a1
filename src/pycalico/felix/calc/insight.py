"""Policy insight: ``explain`` one flow and the reachability ``matrix`` of all workloads.

Owns :class:`PolicyInsight`, a pure function of a list of v3 resource dicts: it runs them
through a :class:`~pycalico.felix.calc.graph.CalcGraph` with every endpoint local and the
pending view on, applies the messages to :class:`~pycalico.felix.calc.views.PolicyViews` and
evaluates every flow twice with the same code: *enforced* (what the dataplane does) and
*pending* (as if every staged policy were enforced, see :mod:`~pycalico.felix.calc.pending`).

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
from pycalico.felix.calc.views import PolicyViews
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


Verdict = Literal["allow", "deny"]


def _both(egress: Decision, ingress: Decision) -> Verdict:
    return "allow" if egress.verdict == "allow" and ingress.verdict == "allow" else "deny"


@dataclass(frozen=True)
class Explanation:
    """One flow's enforced decisions and, as if every staged policy were enforced, its
    pending ones (``pending_egress``/``pending_ingress``; the enforced ones when unset)."""

    verdict: Verdict
    src: Peer
    dst: Peer
    port: int | None
    protocol: int
    egress: Decision
    ingress: Decision
    pending_egress: Decision | None = None
    pending_ingress: Decision | None = None

    @property
    def pending(self) -> tuple[Verdict, Decision, Decision]:
        """(verdict, egress, ingress) of the pending view."""
        egress = self.pending_egress or self.egress
        ingress = self.pending_ingress or self.ingress
        return _both(egress, ingress), egress, ingress

    def to_json(self) -> dict[str, Any]:
        verdict, egress, ingress = self.pending
        return {
            "verdict": self.verdict,
            "from": self.src.label(),
            "to": self.dst.label(),
            "port": self.port,
            "protocol": protocol_name(self.protocol),
            "egress": self.egress.to_json(),
            "ingress": self.ingress.to_json(),
            "pending": {
                "verdict": verdict,
                "egress": egress.to_json(),
                "ingress": ingress.to_json(),
            },
        }


@dataclass(frozen=True)
class ProbeResult:
    src: str
    dst: str
    port: int
    protocol: int
    verdict: Verdict
    pending: Verdict | None = None  # as if every staged policy were enforced; None: = verdict

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.src,
            "to": self.dst,
            "port": self.port,
            "protocol": protocol_name(self.protocol),
            "verdict": self.verdict,
            "pending": self.pending or self.verdict,
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
        resources = list(resources)
        # The pending graph only when something is staged (else pending == enforced).
        staged = any(str(r.get("kind", "")).startswith("Staged") for r in resources)
        self.graph = CalcGraph(hostname=None, pending_view=staged)
        self.graph.load(resources)
        self.views = PolicyViews()
        msgs = self.graph.flush()
        self.views.apply(msgs, self.graph.flush_pending() if staged else msgs)
        self.view: DataplaneView = self.views.enforced
        self.pending_view: DataplaneView = self.views.pending
        #: False when no staged policy changes any endpoint's policy (pending == enforced).
        self.has_staged = self.views.has_staged
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
    def _pick_ips(
        src: Peer, dst: Peer, ip_version: int | None = None
    ) -> tuple[IPAddress, IPAddress]:
        """Same-family addresses for the two peers (endpoints may be dual-stack): of
        ``ip_version``, else IPv4 when both have one, else IPv6."""
        for version in (ip_version,) if ip_version else (4, 6):
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
        if ip_version:
            raise InsightError(f"{src.label()} and {dst.label()} have no IPv{ip_version} pair")
        raise InsightError(f"{src.label()} and {dst.label()} share no IP version")

    def _direction(
        self,
        peer: Peer,
        direction: Literal["ingress", "egress"],
        pkt: Packet,
        view: DataplaneView | None = None,
    ) -> Decision:
        if peer.endpoint is None:
            return Decision(
                "allow",
                "not-calico",
                None,
                trace=(f"{peer.ip} is not a Calico endpoint: no {direction} policy",),
            )
        return (view or self.view).evaluate(peer.endpoint.id, direction, pkt)

    def explain_peers(
        self,
        src: Peer,
        dst: Peer,
        port: int | None,
        protocol: int,
        src_port: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
        ip_version: int | None = None,
    ) -> Explanation:
        """Evaluate one flow between resolved peers (see :meth:`resolve`) over
        ``ip_version`` (default: IPv4 when both peers have an IPv4 address)."""
        sip, dip = self._pick_ips(src, dst, ip_version)
        if protocol in (1, 58) and icmp_type is None:  # a ping: echo request
            icmp_type, icmp_code = (8 if protocol == 1 else 128), 0
        pkt = Packet(sip, dip, protocol, port, src_port, icmp_type, icmp_code)
        egress = self._direction(src, "egress", pkt)
        ingress = self._direction(dst, "ingress", pkt)
        verdict = _both(egress, ingress)
        if not self.has_staged:
            return Explanation(verdict, src, dst, port, protocol, egress, ingress)
        p_egress = self._direction(src, "egress", pkt, self.pending_view)
        p_ingress = self._direction(dst, "ingress", pkt, self.pending_view)
        return Explanation(verdict, src, dst, port, protocol, egress, ingress, p_egress, p_ingress)

    def explain(
        self,
        src: str,
        dst: str,
        port: int | None,
        protocol: str | int = "TCP",
        src_port: int | None = None,
        ip_version: int | None = None,
    ) -> Explanation:
        try:
            proto = protocol_number(protocol)
        except ModelError as exc:
            raise InsightError(f"--protocol: {exc}") from exc
        return self.explain_peers(
            self.resolve(src), self.resolve(dst), port, proto, src_port, ip_version=ip_version
        )

    def default_ports(self) -> list[tuple[int, int]]:
        """The workloads' named ports (port, protocol), else 80/TCP."""
        ports = sorted({(p.port, p.protocol) for e in self.workloads for p in e.ports})
        return ports or [(80, 6)]

    def matrix(
        self, ports: Sequence[tuple[int, int]] | None = None, ip_version: int | None = None
    ) -> list[ProbeResult]:
        """Every ordered pair of distinct workloads x every (port, protocol); with
        ``ip_version`` only the workloads with an address of that family, over it."""
        ports = list(ports) if ports else self.default_ports()
        peers = [
            Peer(nets[0].network_address, e)
            for e in self.workloads
            if (nets := [n for n in e.nets if ip_version in (None, n.version)])
        ]
        out = []
        for s in peers:
            for d in peers:
                if s.endpoint is d.endpoint or not _common_family(s, d, ip_version):
                    continue
                for port, proto in ports:
                    ex = self.explain_peers(s, d, port, proto, ip_version=ip_version)
                    pending = ex.pending[0]
                    out.append(ProbeResult(s.label(), d.label(), port, proto, ex.verdict, pending))
        return out


def _common_family(a: Peer, b: Peer, ip_version: int | None) -> bool:
    """Whether endpoints ``a`` and ``b`` can talk over ``ip_version`` (None: either family);
    a v4-only and a v6-only workload have no flow to evaluate."""
    va = {n.version for n in a.endpoint.nets} if a.endpoint else {a.ip.version}
    vb = {n.version for n in b.endpoint.nets} if b.endpoint else {b.ip.version}
    common = va & vb
    return bool(common) if ip_version is None else ip_version in common


def _where(d: Decision) -> str:
    if d.reason == "rule":
        return f" by tier {d.tier}, policy {d.policy}, rule {d.rule} ({d.action})"
    if d.reason == "tier-default":
        return f" by end of tier {d.tier} (defaultAction Deny)"
    if d.reason == "profile-rule":
        return f" by profile {d.profile}, rule {d.rule} ({d.action})"
    if d.reason == "missing-profile":
        return f" by missing profile {d.profile}"
    if d.reason == "no-profile-match":
        return " by final drop (no profile accepted)"
    if d.reason == "not-calico":
        return " (not a Calico endpoint, no policy)"
    return ""


def format_explanation(ex: Explanation) -> str:
    """Human-readable text for ``calicoctl policy explain``: the verdict line, a table of the
    enforced and pending decisions side by side, then the traces (pending ones only where
    they differ from the enforced ones)."""
    p_verdict, p_egress, p_ingress = ex.pending
    lines = [
        f"{ex.src.label()} -> {ex.dst.label()} {protocol_name(ex.protocol)}"
        + (f"/{ex.port}" if ex.port is not None else "")
        + f": {ex.verdict.upper()} (pending: {p_verdict.upper()})"
    ]
    rows = [
        ("", "ENFORCED", "PENDING (staged policies enforced)"),
        ("verdict", ex.verdict.upper(), p_verdict.upper()),
        ("egress", ex.egress.verdict + _where(ex.egress), p_egress.verdict + _where(p_egress)),
        ("ingress", ex.ingress.verdict + _where(ex.ingress), p_ingress.verdict + _where(p_ingress)),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines += [f"  {a.ljust(widths[0])}  {b.ljust(widths[1])}  {c}".rstrip() for a, b, c in rows]
    for title, d, p in (("egress", ex.egress, p_egress), ("ingress", ex.ingress, p_ingress)):
        lines.append(f"  {title} trace:")
        lines.extend(f"    {t}" for t in d.trace)
        if p.trace != d.trace:
            lines.append(f"  {title} trace (pending):")
            lines.extend(f"    {t}" for t in p.trace)
    return "\n".join(lines)


def format_matrix(results: Sequence[ProbeResult], pending: bool = False) -> str:
    """A table: one row per source, one column per destination x port; with ``pending`` the
    verdicts as if every staged policy were enforced."""
    if not results:
        return "no workloads"
    srcs = sorted({r.src for r in results})
    cols = sorted({(r.dst, r.port, r.protocol) for r in results})
    cell = {
        (r.src, r.dst, r.port, r.protocol): (r.pending or r.verdict) if pending else r.verdict
        for r in results
    }
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
