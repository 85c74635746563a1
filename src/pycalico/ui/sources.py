"""Where the console's live facts come from: node status, the live matrix, flow records.

Owns three narrow interfaces (Protocols) and their real implementations:

- :class:`StatusSource`: each node's ``status.json`` document (readiness, BGP session rows,
  errors) by node name, ``None`` when the node's status is unknown. :class:`LabStatus` reads
  a calico-lab cluster through the ``calico-lab status -o json`` program; :class:`LocalStatus`
  reads this host's calico-node state directory; :class:`ReportedStatus` adds every other
  node's ``CalicoNodeStatus`` report (what a real host's console uses);
  :class:`NoStatus` knows nothing (every node "unknown", never "not ready").
- :class:`LiveMatrix`: live reachability probes (``calico-lab matrix -o json``), lab only.
- :class:`FlowSource`: flow records (issue 13's flow logs, docs/flowlogs.md).
  :func:`open_flow_source` builds the real one, :class:`CommandFlows`, over ``calico-lab
  flows`` / ``calicoctl flows`` (every node's flow API, with those commands' credentials:
  the lab's client certificate, or the token/CA of FelixConfiguration and the inherited
  ``CALICO_FLOWS_*`` variables); a source that fails shows as an error on the Flows page,
  never as an empty table.

A flow record is a plain dict (JSON-shaped, as the node flow API serves it), see
:class:`FlowRecord`. Invariants: every source is read-only; programs are run through
:mod:`pycalico.system.process` (the console never imports another program's package);
a failing program is a :class:`SourceError` naming it and its message.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypedDict

from pycalico.errors import CalicoError
from pycalico.system.process import ProcessRunner, SubprocessRunner

Status = dict[str, Any]


class SourceError(CalicoError):
    """A live source (a program the console runs, a file it reads) failed."""


class StatusSource(Protocol):
    def node_statuses(self) -> dict[str, Status | None]:
        """Node name -> its status document (``ready``, ``bgp`` rows, ``errors``) or None."""
        ...


class LiveMatrix(Protocol):
    def probe_matrix(self, ports: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
        """Live probes as ``calicoctl policy matrix -o json`` rows (from/to/port/protocol/
        verdict) for every ordered pair of pods and every (port, PROTOCOL)."""
        ...


class Endpoint(TypedDict, total=False):
    kind: str  # "wep" | "hep" | "net" (not a Calico endpoint)
    namespace: str
    name: str
    labels: dict[str, str]
    ip: str


class PolicyHit(TypedDict, total=False):
    tier: str
    kind: str
    namespace: str
    name: str
    rule: int | None
    direction: str  # "ingress" | "egress"
    action: str  # "allow" | "deny" | "pass"


class FlowRecord(TypedDict, total=False):
    """One aggregated flow, as a node's flow API serves it (issue 13)."""

    start: float  # unix seconds
    end: float
    node: str
    reporter: str  # "src" | "dst"
    src: Endpoint
    dst: Endpoint
    proto: str  # "TCP", "UDP", ...
    dport: int
    action: str  # "allow" | "deny"
    policy: PolicyHit  # the enforced verdict's tier/policy/rule
    trace: list[PolicyHit]  # enforced trace, in evaluation order
    pending: PendingVerdict | None  # what staged policies would decide (None: no opinion)
    packets_in: int  # towards the reporting endpoint
    packets_out: int
    bytes_in: int
    bytes_out: int
    connections: int


class PendingVerdict(TypedDict, total=False):
    action: str  # "allow" | "deny"
    trace: list[PolicyHit]  # the pending evaluation's steps, in order


class FlowSource(Protocol):
    def flows(self, since: float = 0.0, limit: int = 5000) -> list[FlowRecord]:
        """Flow records whose ``end`` is after ``since`` (unix seconds), oldest first,
        at most ``limit`` (the newest ones when there are more)."""
        ...


def open_flow_source(lab: str | None, config_file: str | None) -> FlowSource | None:
    """The cluster's flow source: every node's flow API, through ``calico-lab flows`` in a
    lab (the nodes' APIs live in their namespaces) or ``calicoctl flows`` otherwise."""
    if lab:
        return CommandFlows([_program("calico-lab"), "flows", "--name", lab])
    extra = ["--config", config_file] if config_file else []
    return CommandFlows([_program("calicoctl"), "flows", *extra])


class CommandFlows:
    """Flow records from a ``flows -o json`` command, fetched at most once per ``ttl``
    seconds (every open Flows page polls; one query serves them all) and kept for
    ``window`` seconds, so a later ``since`` is answered from what was fetched."""

    MARGIN = 60.0

    def __init__(
        self,
        argv: Sequence[str],
        runner: ProcessRunner | None = None,
        ttl: float = 1.0,
        window: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.argv = list(argv)
        self.runner = runner or SubprocessRunner()
        self.ttl, self.window, self.clock = ttl, window, clock
        self._lock = threading.Lock()
        self._fetched_at = -1e18
        self._records: list[FlowRecord] = []

    def _fetch(self, now: float) -> None:
        # Everything since the last fetch, plus a margin for records still being aggregated
        # (a node's open bucket is served with end=now and changes until it is flushed).
        since = int(min(self.window, now - self._fetched_at + self.MARGIN)) + 1
        r = self.runner.run([*self.argv, "-o", "json", "--since", f"{since}s"], timeout=30.0)
        if r.returncode != 0:
            raise SourceError(f"{self.argv[0]} flows: {(r.stderr or r.stdout).strip()[:300]}")
        try:
            fresh = list(json.loads(r.stdout).get("flows") or [])
        except (ValueError, AttributeError) as e:
            raise SourceError(f"{self.argv[0]} flows: bad JSON: {e}") from None
        seen = {_flow_id(f): f for f in self._records if f.get("end", 0) >= now - self.window}
        for f in fresh:
            seen[_flow_id(f)] = f  # the open bucket's record grows until it is flushed
        self._records = sorted(seen.values(), key=lambda f: (f.get("end", 0), f.get("start", 0)))
        self._fetched_at = now

    def flows(self, since: float = 0.0, limit: int = 5000) -> list[FlowRecord]:
        with self._lock:
            now = self.clock()
            if now - self._fetched_at >= self.ttl:
                self._fetch(now)
            out = [f for f in self._records if f.get("end", 0) > since]
        return out[-limit:]


def _flow_id(f: FlowRecord) -> tuple[Any, ...]:
    src, dst = f.get("src") or {}, f.get("dst") or {}
    return (f.get("node"), f.get("start"), f.get("reporter"), src.get("ip"), dst.get("ip"),
            f.get("proto"), f.get("dport"), f.get("action"))  # fmt: skip


def _program(name: str) -> str:
    """The path of a pycalico console script next to the running interpreter."""
    return str(Path(sys.executable).parent / name)


class LabStatus:
    """Node status of a calico-lab cluster, through ``calico-lab status -o json``."""

    def __init__(self, lab: str, runner: ProcessRunner | None = None) -> None:
        self.lab = lab
        self.runner = runner or SubprocessRunner()

    def _run_json(self, *args: str, timeout: float = 30.0) -> Any:
        argv = [_program("calico-lab"), *args, "--name", self.lab]
        r = self.runner.run(argv, timeout=timeout)
        if r.returncode != 0:
            raise SourceError(f"calico-lab {args[0]}: {(r.stderr or r.stdout).strip()}")
        try:
            return json.loads(r.stdout)
        except ValueError as e:
            raise SourceError(f"calico-lab {args[0]}: bad JSON: {e}") from None

    def node_statuses(self) -> dict[str, Status | None]:
        data = self._run_json("status", "-o", "json")
        out: dict[str, Status | None] = {}
        for row in data.get("nodes") or []:
            out[str(row.get("name"))] = {
                "ready": bool(row.get("ready")),
                "bgp": list(row.get("bgp") or []),
                "errors": list(row.get("errors") or []),
            }
        return out

    def probe_matrix(self, ports: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
        spec = ",".join(f"{p}/{proto}" for p, proto in ports)
        data = self._run_json("matrix", "--ports", spec, "-o", "json", timeout=600.0)
        return list(data.get("probes") or [])


class LocalStatus:
    """This host's calico-node status (``<state dir>/status.json``): other nodes are unknown."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir

    def node_statuses(self) -> dict[str, Status | None]:
        try:
            data = json.loads((Path(self.state_dir) / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or not data.get("node"):
            return {}
        return {str(data["node"]): data}


_PEER_DESCRIPTIONS = {
    "NodeMesh": "node-to-node mesh",
    "NodePeer": "node specific",
    "GlobalPeer": "global",
}


def _parse_rfc3339(text: str) -> float | None:
    import datetime as _dt

    try:
        return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC).timestamp()
    except (TypeError, ValueError):
        return None


def status_from_report(res: Mapping[str, Any], now: float) -> Status | None:
    """A console status document from a ``CalicoNodeStatus`` its node filled
    (:mod:`pycalico.node.nodestatus`): BGP rows as ``calicoctl node status`` prints them, and
    ``ready`` = BIRD ready and every session Established. None when there is no report yet
    or it is stale (older than three periods plus 30 s): the node's state is unknown."""
    spec = res.get("spec") or {}
    st = res.get("status") or {}
    when = _parse_rfc3339(str(st.get("lastUpdated") or ""))
    if not st or when is None:
        return None
    period = spec.get("updatePeriodSeconds")
    if isinstance(period, int) and period > 0 and now - when > 3 * period + 30:
        return None
    rows: list[dict[str, str]] = []
    errors: list[str] = []
    bgp = st.get("bgp") or {}
    for v in (4, 6):
        for p in bgp.get(f"peersV{v}") or []:
            state = str(p.get("state") or "")
            rows.append(
                {
                    "peer": str(p.get("peerIP") or ""),
                    "type": _PEER_DESCRIPTIONS.get(str(p.get("type")), str(p.get("type"))),
                    "state": "up" if state == "Established" else "start",
                    "since": str(p.get("since") or ""),
                    "info": state,
                }
            )
    daemon = (st.get("agent") or {}).get("birdV4") or {}
    if daemon and daemon.get("state") != "Ready":
        errors.append("BIRD is not ready")
    down = [r["peer"] for r in rows if r["info"] != "Established"]
    if down:
        errors.append(f"BGP not established with {', '.join(down)}")
    return {
        "node": spec.get("node"),
        "ready": not errors,
        "bgp": rows,
        "errors": errors,
        "source": f"CalicoNodeStatus {(res.get('metadata') or {}).get('name')}",
        "time": when,
    }


class ReportedStatus:
    """Every node's status as its ``CalicoNodeStatus`` report says (create one per node with
    ``classes: [Agent, BGP]``; docs/console.md), with ``local`` (this host's own status file)
    winning for this host. Reads the datastore through ``open_store`` on each call."""

    def __init__(
        self,
        open_store: Callable[[], Any],
        local: StatusSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.open_store = open_store
        self.local = local
        self.clock = clock

    def node_statuses(self) -> dict[str, Status | None]:
        out: dict[str, Status | None] = {}
        ds = self.open_store()
        try:
            items = list(ds.list("CalicoNodeStatus").items)
        except CalicoError as e:
            raise SourceError(f"reading CalicoNodeStatus: {e}") from e
        finally:
            ds.close()
        now = self.clock()
        best: dict[str, float] = {}
        for res in items:
            doc = status_from_report(res, now)
            node = str((doc or {}).get("node") or "")
            if doc is None or not node or doc["time"] < best.get(node, 0.0):
                continue
            best[node] = doc["time"]
            out[node] = doc
        if self.local is not None:
            out.update({k: v for k, v in self.local.node_statuses().items() if v is not None})
        return out


class NoStatus:
    def node_statuses(self) -> dict[str, Status | None]:
        return {}


def default_state_dir(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("CALICO_NODE_STATE_DIR", "/var/run/calico")
