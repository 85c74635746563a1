"""CalicoNodeStatus: a node reports its agent, BGP and route status into the datastore.

As upstream calico-node's status reporter: a user (or the console) creates a
``CalicoNodeStatus`` naming a node, the ``classes`` wanted (``Agent``, ``BGP``, ``Routes``) and
``updatePeriodSeconds``; that node's calico-node fills its ``status`` every period (0: once,
then never refreshed) with Calico's field names:

- ``lastUpdated``: RFC 3339 time of the report;
- ``agent.birdV4``/``birdV6``: ``state`` Ready/NotReady, ``version``, ``routerID``,
  ``lastBootTime``, ``lastReconfigurationTime`` (BIRD's ``show status``; one BIRD serves both
  families here, so both carry the same daemon);
- ``bgp``: ``numberEstablishedV4``/``numberNotEstablishedV4`` (and V6), ``peersV4``/``peersV6``
  with ``peerIP``, ``type`` (NodeMesh/NodePeer/GlobalPeer), ``state`` (the BGP FSM state:
  Idle, Connect, Active, OpenSent, OpenConfirm, Established, Close) and ``since``;
- ``routes.routesV4``/``routesV6``: BIRD's routes, ``type`` FIB (the selected route) or RIB,
  ``destination``, ``gateway``, ``interface``, ``learnedFrom`` (``sourceType`` Kernel, Static,
  Direct, NodeMesh or BGPPeer, and ``peerIP`` for BGP).

Classes not requested are left empty. Without BIRD (``CALICO_NETWORKING_BACKEND`` vxlan/none)
the daemon is reported NotReady with no peers or routes, as upstream does when its socket is
missing.

Invariants: the parsers and :func:`build_status` are pure; a report is written with
compare-and-swap on the resource's revision and only into ``status`` (the spec is the user's:
a lost race or a changed spec is retried at the next tick, never overwritten); only resources
whose ``spec.node`` is this node are touched; a failure is logged and retried, never fatal.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycalico.bgp.control import Reply, parse_show_protocols
from pycalico.datastore import Conflict, Datastore, NotFound
from pycalico.datastore.syncer import SyncStatus, SyncUpdate
from pycalico.errors import CalicoError

log = logging.getLogger(__name__)

KIND = "CalicoNodeStatus"
CLASSES = ("Agent", "BGP", "Routes")
_PEER = re.compile(r"^(Global|Node|Mesh)_(.+?)(?:_port_\d+)?$")
_PEER_TYPES = {"Global": "GlobalPeer", "Node": "NodePeer", "Mesh": "NodeMesh"}
_BGP_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established", "Close")
_ROUTE = re.compile(
    r"^(?P<dest>\S+)?\s+(?P<kind>unicast|blackhole|unreachable|prohibit)\s+"
    r"\[(?P<src>[^\s\]]+)[^\]]*\](?P<primary>\s+\*)?"
)
_VIA = re.compile(r"^\s*via\s+(?P<gw>\S+)\s+on\s+(?P<iface>\S+)")
_DEV = re.compile(r"^\s*dev\s+(?P<iface>\S+)")


@dataclass
class BirdView:
    """What BIRD says now: ``show status``, ``show protocols`` and ``show route`` replies
    (None: BIRD is not there)."""

    status: Reply | None = None
    protocols: Reply | None = None
    routes: Reply | None = None


def parse_show_status(reply: Reply) -> dict[str, str]:
    """``show status`` → ``version``, ``routerID``, ``lastBootTime``,
    ``lastReconfigurationTime`` (BIRD's own time strings, as upstream copies them)."""
    out: dict[str, str] = {}
    keys = {
        "Router ID is ": "routerID",
        "Last reboot on ": "lastBootTime",
        "Last reconfiguration on ": "lastReconfigurationTime",
    }
    for code, text in reply.lines:
        if code == 1000 and text.startswith("BIRD "):
            out["version"] = text.removeprefix("BIRD ").strip()
            continue
        for prefix, key in keys.items():
            if text.startswith(prefix):
                out[key] = text.removeprefix(prefix).strip()
    return out


def _family(addr: str) -> int:
    return 6 if ":" in addr else 4


def parse_peers(reply: Reply) -> list[dict[str, str]]:
    """``show protocols`` → peers (``peerIP``, ``type``, ``state``, ``since``) of both
    families, in BIRD's order."""
    out = []
    for row in parse_show_protocols(reply):
        m = _PEER.match(row.name)
        if row.proto != "BGP" or m is None:
            continue
        raw = m.group(2)
        v4 = re.fullmatch(r"\d+_\d+_\d+_\d+", raw) is not None
        word = row.info.split()[0] if row.info.split() else ""
        state = word if word in _BGP_STATES else ("Idle" if row.state != "up" else "")
        out.append(
            {
                "peerIP": raw.replace("_", "." if v4 else ":"),
                "type": _PEER_TYPES[m.group(1)],
                "state": state,
                "since": row.since,
            }
        )
    return out


def _learned_from(src: str) -> dict[str, str]:
    if src.startswith("kernel"):
        return {"sourceType": "Kernel"}
    if src.startswith("direct"):
        return {"sourceType": "Direct"}
    m = _PEER.match(src)
    if m is None:  # static4, borrowed4, services4, ...: BIRD static protocols
        return {"sourceType": "Static"}
    raw = m.group(2)
    v4 = re.fullmatch(r"\d+_\d+_\d+_\d+", raw) is not None
    kind = "NodeMesh" if m.group(1) == "Mesh" else "BGPPeer"
    return {"sourceType": kind, "peerIP": raw.replace("_", "." if v4 else ":")}


def parse_routes(reply: Reply) -> list[dict[str, Any]]:
    """``show route`` → routes (Calico's ``CalicoNodeRoute`` fields); a prefix with several
    routes gives one entry each, the selected one typed FIB, the others RIB."""
    out: list[dict[str, Any]] = []
    dest = ""
    for _code, text in reply.lines:
        m = _ROUTE.match(text)
        if m is not None:
            dest = m.group("dest") or dest
            route: dict[str, Any] = {
                "type": "FIB" if m.group("primary") else "RIB",
                "destination": dest,
                "learnedFrom": _learned_from(m.group("src")),
            }
            out.append(route)
            continue
        if not out:
            continue
        if (via := _VIA.match(text)) is not None:
            out[-1]["gateway"] = via.group("gw")
            out[-1]["interface"] = via.group("iface")
        elif (dev := _DEV.match(text)) is not None:
            out[-1]["interface"] = dev.group("iface")
    return out


def _rfc3339(now: float) -> str:
    return _dt.datetime.fromtimestamp(now, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_status(classes: list[str], view: BirdView, now: float) -> dict[str, Any]:
    """The ``status`` of a CalicoNodeStatus asking for ``classes``, from ``view``."""
    status: dict[str, Any] = {"lastUpdated": _rfc3339(now), "agent": {}, "bgp": {}, "routes": {}}
    if "Agent" in classes:
        if view.status is None:
            daemon: dict[str, str] = {"state": "NotReady"}
        else:
            daemon = {"state": "Ready", **parse_show_status(view.status)}
        status["agent"] = {"birdV4": daemon, "birdV6": dict(daemon)}
    if "BGP" in classes:
        peers = parse_peers(view.protocols) if view.protocols is not None else []
        bgp: dict[str, Any] = {}
        for v in (4, 6):
            mine = [p for p in peers if _family(p["peerIP"]) == v]
            up = sum(1 for p in mine if p["state"] == "Established")
            bgp[f"numberEstablishedV{v}"] = up
            bgp[f"numberNotEstablishedV{v}"] = len(mine) - up
            if mine:
                bgp[f"peersV{v}"] = mine
        status["bgp"] = bgp
    if "Routes" in classes:
        routes = parse_routes(view.routes) if view.routes is not None else []
        out: dict[str, Any] = {}
        for v in (4, 6):
            mine_r = [r for r in routes if _family(r["destination"]) == v]
            if mine_r:
                out[f"routesV{v}"] = mine_r
        status["routes"] = out
    return status


@dataclass
class _Request:
    spec: dict[str, Any]
    due: float = 0.0
    done_once: bool = False


class NodeStatusReporter:
    """The supervised component (see the module docstring). ``bird()`` returns a callable
    running one BIRD CLI command (None without BIRD); ``clock`` gives wall time."""

    name = "node-status"
    KINDS = (KIND,)
    TICK = 0.5

    def __init__(
        self,
        ds: Datastore,
        node_name: str,
        bird: Callable[[], Callable[[str], Reply] | None],
        *,
        hub: Any = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.ds = ds
        self.node_name = node_name
        self.bird = bird
        self.hub = hub
        self.clock = clock or time.time
        self.reports = 0
        self.last_error: str | None = None
        self._requests: dict[str, _Request] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._syncer: Any = None
        self._thread: threading.Thread | None = None
        self._synced = False

    # --- component ------------------------------------------------------------------------
    def start(self) -> None:
        from pycalico.datastore.syncer import Syncer

        self._stop.clear()
        with self._lock:
            self._requests = {}
        if self.hub is not None:
            self._syncer = self.hub.syncer_for(self.KINDS, self, f"node-status-{self.node_name}")
        else:
            self._syncer = Syncer.for_kinds(self.ds, self.KINDS, self, poll_interval=1.0,
                                            name=f"node-status-{self.node_name}")  # fmt: skip
        self._thread = threading.Thread(
            target=self._loop, name=f"node-status-{self.node_name}", daemon=True
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
        return self._synced

    # --- syncer callbacks (syncer thread) -------------------------------------------------
    def on_status(self, status: SyncStatus) -> None:
        if status is SyncStatus.IN_SYNC:
            self._synced = True
            self._wake.set()

    def on_updates(self, updates: list[SyncUpdate]) -> None:
        from pycalico.datastore import EventType

        with self._lock:
            for u in updates:
                meta = u.obj.get("metadata") or {}
                name = str(meta.get("name", ""))
                raw = u.obj.get("spec")
                spec: dict[str, Any] = raw if isinstance(raw, dict) else {}
                if u.type is EventType.DELETED or spec.get("node") != self.node_name:
                    self._requests.pop(name, None)
                    continue
                old = self._requests.get(name)
                if old is None or old.spec != spec:  # new or changed spec: report now
                    self._requests[name] = _Request(dict(spec))
        self._wake.set()

    # --- reporting (own thread) -----------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.TICK)
            self._wake.clear()
            if self._stop.is_set() or not self._synced:
                continue
            try:
                self.step()
            except Exception as e:  # never let the reporter die; retried next tick
                log.exception("node status report failed")
                self.last_error = str(e)

    def _view(self) -> BirdView:
        run = self.bird()
        if run is None:
            return BirdView()
        try:
            return BirdView(run("show status"), run("show protocols"), run("show route"))
        except CalicoError as e:
            log.debug("BIRD not answering: %s", e)
            return BirdView()

    def step(self) -> int:
        """Write every due report; returns how many were written."""
        now = self.clock()
        with self._lock:
            due = {n: r for n, r in self._requests.items() if r.due <= now and not r.done_once}
        if not due:
            return 0
        view = self._view()
        written = 0
        for name, req in due.items():
            if self._write(name, req, view, now):
                written += 1
        return written

    def _write(self, name: str, req: _Request, view: BirdView, now: float) -> bool:
        classes = [c for c in (req.spec.get("classes") or []) if c in CLASSES]
        period = req.spec.get("updatePeriodSeconds")
        try:
            obj = self.ds.get(KIND, name, "")
        except NotFound:
            return False
        spec = obj.get("spec") or {}
        if spec != req.spec:  # changed under us: the syncer brings the new spec
            return False
        new = dict(obj)
        new["status"] = build_status(classes, view, now)
        try:
            self.ds.update(new)
        except Conflict:
            return False  # a concurrent write: retried at the next tick
        with self._lock:
            cur = self._requests.get(name)
            if cur is req:
                if isinstance(period, int) and period > 0:
                    req.due = now + period
                else:
                    req.done_once = True
        self.reports += 1
        return True


def bird_runner(control: Any) -> Callable[[str], Reply]:
    """A command runner over a :class:`~pycalico.bgp.control.BirdControl`."""

    def run(cmd: str) -> Reply:
        reply: Reply = control.command(cmd)
        return reply

    return run
