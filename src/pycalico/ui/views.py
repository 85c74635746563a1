"""Pure view models of the console's pages: plain dicts/lists the templates only format.

Owns: the cluster view (nodes with readiness, the BGP session graph, IP pools and block usage
per node, pods per node), the reachability matrix grouped per port/protocol (the same
:class:`~pycalico.felix.calc.insight.PolicyInsight` as ``calicoctl policy matrix``), the policy
view (tiers and policies in evaluation order with what each selects) and the what-if delta
(resources pasted as YAML overlaid on the stored ones as ``calicoctl apply`` would write them,
in a memory datastore: the real one is never written).

Invariants: no I/O besides the in-memory datastore of :func:`whatif`; every input is the list
of stored resource dicts (``Datastore.list_prefix(ROOT)``) plus the status documents of
:mod:`pycalico.ui.sources`; bad what-if YAML raises :class:`WhatIfError` whose ``lines`` are
exactly the problem lines ``calicoctl validate`` prints.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

from pycalico.api import ValidationFailed, decode_all
from pycalico.api.loader import ManifestError
from pycalico.client import POLICY_KINDS, ResourceClient, policy_resources
from pycalico.datastore.memory import MemoryDatastore
from pycalico.errors import CalicoError
from pycalico.felix.calc.insight import Peer, PolicyInsight, ProbeResult
from pycalico.model import Endpoint, ModelError, protocol_name, protocol_number
from pycalico.model.network import Block, IPPool, Node

Obj = Mapping[str, Any]
Cell = tuple[str, str, int, str]  # (from, to, port, PROTOCOL)


def _of_kind(resources: Iterable[Obj], kind: str) -> list[Obj]:
    return [r for r in resources if r.get("kind") == kind]


def _established(row: Mapping[str, Any]) -> bool:
    return str(row.get("info", "")).split(" ")[0] == "Established"


def _peer_ip(peer: str) -> str:
    """``198.18.0.2`` from ``198.18.0.2``, ``198.18.0.2:1790`` or ``[fd00::1]:1790``."""
    if peer.startswith("["):
        return peer[1:].split("]")[0]
    return peer.rsplit(":", 1)[0] if peer.count(":") == 1 else peer


def cluster_view(resources: Sequence[Obj], statuses: Mapping[str, Any]) -> dict[str, Any]:
    """Nodes, BGP graph (cytoscape elements), pools with per-node block usage, pods."""
    nodes: list[dict[str, Any]] = []
    by_ip: dict[str, str] = {}
    for res in _of_kind(resources, "Node"):
        try:
            n = Node.from_resource(res)
        except ModelError:
            continue
        st = statuses.get(n.name)
        ready = None if st is None else bool(st.get("ready"))
        ip = str(n.ip.ip) if n.ip else ""
        if ip:
            by_ip[ip] = n.name
        nodes.append(
            {
                "name": n.name,
                "ip": ip,
                "asn": n.as_number,
                "rr": n.rr_cluster_id,
                "ready": ready,
                "state": "unknown" if ready is None else ("ready" if ready else "not-ready"),
                "errors": list((st or {}).get("errors") or []),
                "bgp": list((st or {}).get("bgp") or []),
                "established": sum(1 for r in (st or {}).get("bgp") or [] if _established(r)),
                "pods": [],
            }
        )
    nodes.sort(key=lambda x: str(x["name"]))
    node_by_name = {n["name"]: n for n in nodes}
    pods: list[dict[str, Any]] = []
    for res in _of_kind(resources, "WorkloadEndpoint"):
        spec = res.get("spec") or {}
        meta = res.get("metadata") or {}
        workload = spec.get("workload") or spec.get("pod") or meta.get("name")
        pod = {
            "name": f"{meta.get('namespace', '')}/{workload}",
            "node": str(spec.get("node") or ""),
            "ips": [str(i).split("/")[0] for i in spec.get("ipNetworks") or []],
            "labels": dict(meta.get("labels") or {}),
        }
        pods.append(pod)
        if pod["node"] in node_by_name:
            node_by_name[pod["node"]]["pods"].append(pod)
    for row in nodes:
        row["pods"].sort(key=lambda p: p["name"])
    return {
        "nodes": nodes,
        "graph": bgp_graph(nodes, by_ip),
        "pools": pool_usage(resources),
        "pods": sorted(pods, key=lambda p: p["name"]),
    }


def bgp_graph(nodes: Sequence[Mapping[str, Any]], by_ip: Mapping[str, str]) -> dict[str, Any]:
    """Cytoscape elements: one vertex per node (class = readiness, ``rr`` for route
    reflectors) and per external peer; one edge per session (class ``established`` only when
    every side that reports it says Established, else ``down``), seen from either side."""
    vertices: list[dict[str, Any]] = []
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    for n in nodes:
        classes = [str(n["state"])] + (["rr"] if n.get("rr") else [])
        vertices.append(
            {
                "data": {"id": f"node:{n['name']}", "label": f"{n['name']}\n{n['ip']}"},
                "classes": " ".join(classes),
            }
        )
    external: dict[str, dict[str, Any]] = {}
    for n in nodes:
        for row in n.get("bgp") or []:
            ip = _peer_ip(str(row.get("peer", "")))
            other = by_ip.get(ip)
            if other is not None:
                peer_id = f"node:{other}"
            else:
                peer_id = f"peer:{ip}"
                external.setdefault(
                    ip,
                    {"data": {"id": peer_id, "label": f"peer\n{ip}"}, "classes": "external"},
                )
            me = f"node:{n['name']}"
            pair = (me, peer_id) if me < peer_id else (peer_id, me)
            e = edges.setdefault(
                pair,
                {
                    "data": {
                        "id": f"{pair[0]}--{pair[1]}",
                        "source": pair[0],
                        "target": pair[1],
                        "type": str(row.get("type", "")),
                        "state": "Established",
                        "sides": {},
                    },
                },
            )
            e["data"]["sides"][n["name"]] = f"{row.get('state', '')} {row.get('info', '')}".strip()
            if not _established(row):
                e["data"]["state"] = str(row.get("info") or row.get("state") or "down")
    out_edges = []
    for e in edges.values():
        ok = e["data"]["state"] == "Established"
        e["classes"] = ("established" if ok else "down") + (
            " mesh" if "mesh" in e["data"]["type"] else ""
        )
        out_edges.append(e)
    return {
        "nodes": vertices + sorted(external.values(), key=lambda v: str(v["data"]["id"])),
        "edges": sorted(out_edges, key=lambda e: str(e["data"]["id"])),
    }


def pool_usage(resources: Sequence[Obj]) -> list[dict[str, Any]]:
    """Per IP pool: its settings and, per node, blocks held and addresses in use."""
    pools: list[tuple[IPPool, dict[str, Any]]] = []
    for res in _of_kind(resources, "IPPool"):
        try:
            p = IPPool.from_resource(res)
        except ModelError:
            continue
        pools.append(
            (
                p,
                {
                    "name": p.name,
                    "cidr": str(p.cidr),
                    "block_size": p.block_size,
                    "encap": p.encap,
                    "nat_outgoing": p.nat_outgoing,
                    "disabled": p.disabled,
                    "nodes": {},
                },
            )
        )
    for res in _of_kind(resources, "IPAMBlock"):
        try:
            b = Block.from_resource(res)
        except ModelError:
            continue
        if b is None:
            continue
        allocs = (res.get("spec") or {}).get("allocations") or []
        used = sum(1 for a in allocs if a is not None)
        for p, view in pools:
            if p.cidr.version == b.cidr.version and b.cidr.subnet_of(p.cidr):  # type: ignore[arg-type]
                row = view["nodes"].setdefault(
                    b.node or "(unaffine)", {"blocks": 0, "used": 0, "size": 0}
                )
                row["blocks"] += 1
                row["used"] += used
                row["size"] += b.cidr.num_addresses
                break
    out = []
    for _p, view in pools:
        view["nodes"] = dict(sorted(view["nodes"].items()))
        view["used"] = sum(r["used"] for r in view["nodes"].values())
        view["size"] = ipaddress.ip_network(view["cidr"]).num_addresses
        out.append(view)
    return sorted(out, key=lambda v: str(v["name"]))


def matrix_grids(
    results: Sequence[ProbeResult], live: Mapping[Cell, str] | None = None
) -> list[dict[str, Any]]:
    """One grid per (port, protocol): ``names`` (rows = from, columns = to) and ``rows`` of
    (name, the row's cells as HTML). Cells are bare ``<td class="allow|deny">`` (a matrix of
    200 pods has 40,000 of them); a live verdict that differs from the model adds class
    ``disagree`` and ``data-live``. ``disagree`` counts those cells."""
    grids: dict[tuple[int, str], dict[str, Any]] = {}
    for r in results:
        proto = protocol_name(r.protocol)
        g = grids.setdefault((r.port, proto), {"port": r.port, "protocol": proto, "cells": {}})
        g["cells"][(r.src, r.dst)] = r.verdict
    names = sorted({r.src for r in results} | {r.dst for r in results})
    out = []
    for (port, proto), g in sorted(grids.items()):
        grid_cells: dict[tuple[str, str], str] = g.pop("cells")
        rows, disagree = [], 0
        for s in names:
            parts = []
            for d in names:
                v = grid_cells.get((s, d))
                lv = live.get((s, d, port, proto)) if live else None
                if s == d:
                    parts.append('<td class="self"></td>')
                elif lv is not None and lv != v:
                    disagree += 1
                    parts.append(f'<td class="{v} disagree" data-live="{escape(lv)}"></td>')
                else:
                    parts.append(f'<td class="{v or ""}"></td>')
            rows.append((s, Markup("".join(parts))))
        g.update(
            names=names,
            rows=rows,
            disagree=disagree,
            allowed=sum(1 for v in grid_cells.values() if v == "allow"),
            total=len(grid_cells),
        )
        out.append(g)
    return out


def cells(results: Iterable[ProbeResult | Mapping[str, Any]]) -> dict[Cell, str]:
    """(from, to, port, PROTOCOL) -> verdict, from insight results or matrix JSON rows."""
    out: dict[Cell, str] = {}
    for r in results:
        if isinstance(r, ProbeResult):
            out[(r.src, r.dst, r.port, protocol_name(r.protocol))] = r.verdict
        else:
            key = (str(r["from"]), str(r["to"]), int(r["port"]), str(r["protocol"]).upper())
            out[key] = str(r["verdict"])
    return out


def policy_view(insight: PolicyInsight) -> list[dict[str, Any]]:
    """Tiers in evaluation order; in each, policies in evaluation order with their
    selector, types and the endpoints they select."""
    names = {ep.id: ep.display_name() for ep in insight.graph.local_endpoints()}
    out = []
    for tier, policies in insight.graph.policy_order():
        out.append(
            {
                "name": tier.name,
                "order": tier.order,
                "default_action": tier.default_action,
                "policies": [
                    {
                        "kind": p.id.kind,
                        "namespace": p.id.namespace,
                        "name": p.id.name,
                        "order": p.order,
                        "selector": p.selector,
                        "types": sorted(p.types),
                        "selects": sorted(names.get(i, str(i)) for i in selected),
                    }
                    for p, selected in policies
                ],
            }
        )
    return out


class WhatIfError(CalicoError, ValueError):
    """Pasted YAML that ``calicoctl validate`` (or ``apply``) would reject."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("; ".join(lines))


def overlay(stored: Sequence[Obj], text: str, source: str = "what-if") -> list[dict[str, Any]]:
    """The policy resources after ``calicoctl apply`` of ``text`` on ``stored``, computed on
    a memory copy (the caller's datastore is never touched)."""
    try:
        resources = decode_all(text, source=source)
    except ValidationFailed as e:
        raise WhatIfError([str(p) for p in e.problems]) from None
    except ManifestError as e:
        raise WhatIfError([str(e)]) from None
    if not resources:
        raise WhatIfError([f"{source}: no resources given"])
    mem = MemoryDatastore()
    for obj in stored:
        if obj.get("kind") not in POLICY_KINDS:
            continue
        copy = dict(obj, metadata=dict(obj.get("metadata") or {}))
        copy["metadata"].pop("resourceVersion", None)
        mem.create(copy)
    client = ResourceClient(mem)
    for res in resources:
        try:
            client.apply(res)
        except CalicoError as e:
            raise WhatIfError([str(e)]) from None
    return policy_resources(mem)


def _chain(insight: PolicyInsight, ep: Endpoint) -> object:
    """Everything the evaluation of ``ep``'s policy reads, except IP set contents."""
    view = insight.view
    upd = view.endpoints.get(ep.id)
    if upd is None:
        return None
    pids = [p for t in upd.tiers for p in (*t.ingress_policies, *t.egress_policies)]
    return (
        upd,
        tuple(view.policies.get(p) for p in pids),
        tuple(view.profiles.get(p) for p in upd.profile_ids),
    )


def _sets(insight: PolicyInsight) -> dict[str, object]:
    view = insight.view
    out: dict[str, object] = {
        k: (frozenset(v.hosts), tuple(v.nets)) for k, v in view.net_sets.items()
    }
    out.update(view.ip_port_sets)
    return out


def changed_endpoints(before: PolicyInsight, after: PolicyInsight) -> set[str] | None:
    """Names of the workloads whose verdicts may differ between two models; ``None`` when
    any may (the workloads differ, or an IP set both models have differs in members).

    IP set ids are content hashes of their selector, so a set only one model has is only
    referenced by rules that changed, and those rules are part of :func:`_chain`."""
    names_b = {e.display_name(): e for e in before.workloads}
    names_a = {e.display_name(): e for e in after.workloads}
    if names_b.keys() != names_a.keys():
        return None
    sets_b, sets_a = _sets(before), _sets(after)
    if any(sets_b[k] != sets_a[k] for k in sets_b.keys() & sets_a.keys()):
        return None
    return {n for n, e in names_a.items() if _chain(before, names_b[n]) != _chain(after, e)}


def matrix_touching(
    insight: PolicyInsight, ports: Sequence[tuple[int, int]], names: set[str]
) -> list[ProbeResult]:
    """The rows of ``insight.matrix(ports)`` whose source or destination is in ``names``."""
    peers = [Peer(e.nets[0].network_address, e) for e in insight.workloads if e.nets]
    out = []
    for s in peers:
        for d in peers:
            if s.endpoint is d.endpoint or (s.label() not in names and d.label() not in names):
                continue
            for port, proto in ports:
                ex = insight.explain_peers(s, d, port, proto)
                out.append(ProbeResult(s.label(), d.label(), port, proto, ex.verdict))
    return out


def whatif(
    stored: Sequence[Obj],
    text: str,
    ports: Sequence[tuple[int, int]] | None = None,
    before: PolicyInsight | None = None,
    current: Sequence[ProbeResult] | None = None,
    full: bool = False,
    flows: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The matrix delta of applying ``text``: every cell whose verdict changes.

    ``before``/``current``: the stored resources' model and its matrix at ``ports`` when
    the caller has them. Only cells touching a workload whose policy chain changed are
    re-evaluated (:func:`changed_endpoints`), unless ``full`` or IP sets changed. With
    ``flows`` (recorded flow records) the result also lists the flows whose verdict would
    change (:func:`flow_changes`); ``"flows"`` is None without them."""
    after_insight = PolicyInsight(overlay(stored, text))
    before = before or PolicyInsight(stored)
    ports = list(ports) if ports else before.default_ports()
    if current is None:
        current = before.matrix(ports)
    prior = cells(current)
    touched = None if full else changed_endpoints(before, after_insight)
    if touched is None:
        after = cells(after_insight.matrix(ports))
    else:
        after = dict(prior)
        after.update(cells(matrix_touching(after_insight, ports, touched)))
    changes = [
        {
            "from": k[0],
            "to": k[1],
            "port": k[2],
            "protocol": k[3],
            "before": prior.get(k, "-"),
            "after": after.get(k, "-"),
        }
        for k in sorted(prior.keys() | after.keys())
        if prior.get(k) != after.get(k)
    ]
    return {
        "changes": changes,
        "cells": len(after),
        "ports": ports,
        "flows": flow_changes(flows, before, after_insight) if flows is not None else None,
    }


def _flow_peer(insight: PolicyInsight, side: Mapping[str, Any]) -> Peer | None:
    """A flow side as a peer of ``insight``: its ``namespace/name`` when that is a workload
    the model knows, else its IP (an external peer); None when neither resolves."""
    refs = []
    if side.get("namespace") and side.get("name"):
        refs.append(f"{side['namespace']}/{side['name']}")
    if side.get("ip"):
        refs.append(str(side["ip"]))
    for ref in refs:
        try:
            return insight.resolve(ref)
        except CalicoError:
            continue
    return None


def flow_changes(
    records: Iterable[Mapping[str, Any]], before: PolicyInsight, after: PolicyInsight
) -> list[dict[str, Any]]:
    """The recorded flows (one per src, dst, protocol, port) whose verdict differs between
    two models, as ``calicoctl policy diff`` reports them: recorded action, before, after."""
    seen: set[tuple[str, str, str, int]] = set()
    out = []
    for rec in records:
        src, dst = rec.get("src"), rec.get("dst")
        if not isinstance(src, Mapping) or not isinstance(dst, Mapping):
            continue
        try:
            proto = protocol_number(str(rec.get("proto") or "TCP"))
            port = int(rec["dport"]) if rec.get("dport") is not None else None
        except (ModelError, ValueError, TypeError):
            continue
        verdicts, label = [], ""
        for insight in (before, after):
            s, d = _flow_peer(insight, src), _flow_peer(insight, dst)
            if s is None or d is None:
                break
            try:
                verdicts.append(insight.explain_peers(s, d, port, proto).verdict)
            except CalicoError:
                break
            label = f"{s.label()}|{d.label()}"
        if len(verdicts) != 2 or verdicts[0] == verdicts[1]:
            continue
        src_label, dst_label = label.split("|", 1)
        key = (src_label, dst_label, protocol_name(proto), port or 0)
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "from": key[0],
                "to": key[1],
                "protocol": key[2],
                "port": port,
                "recorded": str(rec.get("action", "")),
                "before": verdicts[0],
                "after": verdicts[1],
            }
        )
    return out
