"""Per-kind table columns for ``calicoctl get -o ps|wide`` (as Calico's resource managers).

Owns only presentation: each column is a heading and a function of the resource dict (the v3
JSON shape). Namespaced kinds get a leading NAMESPACE column when listing all namespaces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Res = dict[str, Any]
Column = tuple[str, Callable[[Res], str]]


def _spec(r: Res) -> dict[str, Any]:
    spec = r.get("spec")
    return spec if isinstance(spec, dict) else {}


def _name(r: Res) -> str:
    return str(r.get("metadata", {}).get("name", ""))


def _field(*path: str, default: str = "") -> Callable[[Res], str]:
    def get(r: Res) -> str:
        cur: Any = _spec(r)
        for p in path:
            if not isinstance(cur, dict) or p not in cur:
                return default
            cur = cur[p]
        if cur is None:
            return default
        if isinstance(cur, bool):
            return "true" if cur else "false"
        if isinstance(cur, list):
            return ",".join(str(x) for x in cur)
        if isinstance(cur, dict):
            return ",".join(f"{k}={v}" for k, v in sorted(cur.items()))
        return str(cur)

    return get


def _labels(r: Res) -> str:
    labels = r.get("metadata", {}).get("labels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _workload(r: Res) -> str:
    s = _spec(r)
    return str(s.get("workload") or s.get("pod") or "")


NAME: Column = ("NAME", _name)

# kind -> (ps columns, wide columns)
COLUMNS: dict[str, tuple[list[Column], list[Column]]] = {
    "IPPool": (
        [NAME, ("CIDR", _field("cidr")), ("SELECTOR", _field("nodeSelector", default="all()"))],
        [
            NAME,
            ("CIDR", _field("cidr")),
            ("NAT", _field("natOutgoing", default="false")),
            ("IPIPMODE", _field("ipipMode", default="Never")),
            ("VXLANMODE", _field("vxlanMode", default="Never")),
            ("DISABLED", _field("disabled", default="false")),
            ("DISABLEBGPEXPORT", _field("disableBGPExport", default="false")),
            ("SELECTOR", _field("nodeSelector", default="all()")),
            ("ASSIGNMENTMODE", _field("assignmentMode", default="Automatic")),
        ],
    ),
    "IPReservation": (
        [NAME, ("CIDRS", _field("reservedCIDRs"))],
        [NAME, ("CIDRS", _field("reservedCIDRs"))],
    ),
    "BGPConfiguration": (
        [
            NAME,
            ("LOGSEVERITY", _field("logSeverityScreen")),
            ("MESHENABLED", _field("nodeToNodeMeshEnabled")),
            ("ASNUMBER", _field("asNumber")),
        ],
        [
            NAME,
            ("LOGSEVERITY", _field("logSeverityScreen")),
            ("MESHENABLED", _field("nodeToNodeMeshEnabled")),
            ("ASNUMBER", _field("asNumber")),
        ],
    ),
    "BGPPeer": (
        [
            NAME,
            ("PEERIP", _field("peerIP")),
            ("NODE", lambda r: _field("node")(r) or _field("nodeSelector", default="(global)")(r)),
            ("ASN", _field("asNumber")),
        ],
        [
            NAME,
            ("PEERIP", _field("peerIP")),
            ("NODE", lambda r: _field("node")(r) or _field("nodeSelector", default="(global)")(r)),
            ("ASN", _field("asNumber")),
            ("PEERSELECTOR", _field("peerSelector")),
        ],
    ),
    "Node": (
        [NAME],
        [
            NAME,
            ("ASN", _field("bgp", "asNumber", default="(64512)")),
            ("IPV4", _field("bgp", "ipv4Address")),
            ("IPV6", _field("bgp", "ipv6Address")),
        ],
    ),
    "Tier": ([NAME, ("ORDER", _field("order"))], [NAME, ("ORDER", _field("order"))]),
    "CalicoNodeStatus": (
        [NAME, ("NODE", _field("node"))],
        [
            NAME,
            ("NODE", _field("node")),
            ("CLASSES", _field("classes")),
        ],
    ),
    "GlobalNetworkPolicy": (
        [NAME],
        [NAME, ("ORDER", _field("order")), ("SELECTOR", _field("selector"))],
    ),
    "StagedGlobalNetworkPolicy": (
        [NAME],
        [NAME, ("ORDER", _field("order")), ("SELECTOR", _field("selector"))],
    ),
    "NetworkPolicy": (
        [NAME],
        [NAME, ("ORDER", _field("order")), ("SELECTOR", _field("selector"))],
    ),
    "StagedNetworkPolicy": (
        [NAME],
        [NAME, ("ORDER", _field("order")), ("SELECTOR", _field("selector"))],
    ),
    "ClusterNetworkPolicy": (
        [NAME, ("TIER", _field("tier")), ("PRIORITY", _field("priority"))],
        [NAME, ("TIER", _field("tier")), ("PRIORITY", _field("priority"))],
    ),
    "GlobalNetworkSet": ([NAME], [NAME, ("NETS", _field("nets"))]),
    "NetworkSet": ([NAME], [NAME, ("NETS", _field("nets"))]),
    "HostEndpoint": (
        [NAME, ("NODE", _field("node"))],
        [
            NAME,
            ("NODE", _field("node")),
            ("INTERFACE", _field("interfaceName")),
            ("IPS", _field("expectedIPs")),
            ("PROFILES", _field("profiles")),
        ],
    ),
    "Profile": ([NAME], [NAME, ("LABELS", _field("labelsToApply"))]),
    "WorkloadEndpoint": (
        [
            ("WORKLOAD", _workload),
            ("NODE", _field("node")),
            ("NETWORKS", _field("ipNetworks")),
            ("INTERFACE", _field("interfaceName")),
        ],
        [
            NAME,
            ("WORKLOAD", _workload),
            ("NODE", _field("node")),
            ("NETWORKS", _field("ipNetworks")),
            ("INTERFACE", _field("interfaceName")),
            ("PROFILES", _field("profiles")),
            ("NATS", _field("ipNATs")),
        ],
    ),
    "BlockAffinity": (
        [NAME, ("NODE", _field("node")), ("CIDR", _field("cidr")), ("STATE", _field("state"))],
        [NAME, ("NODE", _field("node")), ("CIDR", _field("cidr")), ("STATE", _field("state"))],
    ),
    "Namespace": ([NAME, ("LABELS", _labels)], [NAME, ("LABELS", _labels)]),
    "ServiceAccount": ([NAME, ("LABELS", _labels)], [NAME, ("LABELS", _labels)]),
}


def columns_for(kind: str, wide: bool, all_namespaces: bool, namespaced: bool) -> list[Column]:
    """The columns to print for ``kind``."""
    ps, wide_cols = COLUMNS.get(kind, ([NAME], [NAME]))
    cols = list(wide_cols if wide else ps)
    if namespaced and all_namespaces:
        cols.insert(0, ("NAMESPACE", lambda r: str(r.get("metadata", {}).get("namespace", ""))))
    return cols


def render_table(rows: list[list[str]], headings: list[str]) -> str:
    """Left-aligned columns separated by 3 spaces, like calicoctl's tabwriter output."""
    widths = [len(h) for h in headings]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headings, *rows]:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)
