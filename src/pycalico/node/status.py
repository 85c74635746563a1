"""calico-node status: the per-node ``status.json`` and the readiness/liveness verdicts.

Owns: turning BIRD's ``show protocols`` rows into the ``bgp`` list (peer/type/state/since/info
exactly as ``calicoctl node status`` prints them), the readiness rule, the atomic write of
``<CALICO_NODE_STATE_DIR>/status.json`` and the ``--felix-ready``/``--bird-ready``/
``--felix-live``/``--bird-live``/``--bird6-ready`` checks that read it back (Calico's
messages; one BIRD serves both families, so ``--bird-ready`` judges the IPv4 sessions and
``--bird6-ready`` the IPv6 ones, as Calico's two daemons would).

Readiness rule: ``ready`` = Felix in sync AND routes in sync AND BIRD running AND every
configured BGP session Established AND the datastore healthy. One Felix programs policy and
routes, so ``routes_in_sync`` mirrors ``felix_in_sync`` (kept in ``status.json`` for older readers).
Components that are not part of this build (reported as
``None``) are left out of the rule and shown as such.

Datastore health (``datastore_ready``, :func:`datastore_health`): the node's SyncerHub must
have reached ``IN_SYNC`` once, and must not have been out of ``IN_SYNC`` (datastore
unreachable: ``WAIT_FOR_DATASTORE``; relisting: ``RESYNC``) for longer than the grace period
(env ``CALICO_NODE_DATASTORE_GRACE_PERIOD``, a Go duration or seconds, default
:data:`DEFAULT_DATASTORE_GRACE` = 10 s), so a short blip or an etcd compaction never flaps
readiness. The reason (``datastore unreachable for 12s``) is in ``errors`` and in the
``--felix-ready`` message. Readiness returns as soon as the hub is ``IN_SYNC`` again. Liveness
never looks at the datastore: an agent waiting for its datastore is alive and will resync.

Invariants: pure except :func:`write_status`/:func:`read_status`; the file is replaced
atomically (write temp + rename), so a reader never sees a torn document; a status older than
:data:`STALE_AFTER` seconds counts as "agent not running" for the checks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycalico.bgp.control import ProtocolRow
from pycalico.bgp.peers import peer_rows
from pycalico.datastore.hub import SyncState
from pycalico.datastore.syncer import SyncStatus

STATUS_FILE = "status.json"
STALE_AFTER = 10.0
DATASTORE_GRACE_ENV = "CALICO_NODE_DATASTORE_GRACE_PERIOD"
DEFAULT_DATASTORE_GRACE = 10.0


def datastore_health(
    state: SyncState, grace: float, now: float
) -> tuple[bool, dict[str, Any], str | None]:
    """``(ready, info, reason)`` of the node's datastore feed (rule in the module doc);
    ``now`` is on the same monotonic clock as ``state``'s times."""
    status = state.status.value if state.status is not None else None
    out_for = None if state.unsynced_since is None else max(0.0, now - state.unsynced_since)
    info: dict[str, Any] = {
        "status": status,
        "for": round(max(0.0, now - state.since), 1),
        "unsynced_for": None if out_for is None else round(out_for, 1),
        "grace_period": grace,
    }
    reason: str | None = None
    if state.in_sync:
        ready = True
    elif not state.synced_once:
        ready = False
        reason = (
            f"datastore unreachable for {out_for:.0f}s (never in sync)"
            if state.status is SyncStatus.WAIT_FOR_DATASTORE
            else "datastore not in sync yet"
        )
    else:
        ready = out_for is not None and out_for <= grace
        if not ready:
            what = (
                "resyncing"
                if state.status is SyncStatus.RESYNC
                else "unreachable"  # WAIT_FOR_DATASTORE
            )
            reason = f"datastore {what} for {out_for or 0.0:.0f}s"
    info["ready"] = ready
    info["reason"] = reason
    return ready, info, reason


def bgp_rows(rows: Iterable[ProtocolRow] | None) -> list[dict[str, str]]:
    """``calicoctl node status`` rows of both families as dicts."""
    if rows is None:
        return []
    rows = list(rows)
    out = []
    for version in (4, 6):
        for peer, typ, state, since, info in peer_rows(rows, version):
            out.append({"peer": peer, "type": typ, "state": state, "since": since, "info": info})
    return out


def established(row: dict[str, str]) -> bool:
    return row.get("info", "").split(" ")[0] == "Established"


@dataclass
class NodeStatus:
    node: str
    pid: int
    felix_in_sync: bool | None  # None: no Felix in this build
    routes_in_sync: bool | None  # mirrors felix_in_sync (None: no Felix in this build)
    bird_running: bool | None  # None: BGP disabled (CALICO_NETWORKING_BACKEND=none)
    bgp: list[dict[str, str]] = field(default_factory=list)
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    time: float = 0.0
    datastore_ready: bool | None = None  # None: no SyncerHub (standalone agent, tests)
    datastore: dict[str, Any] = field(default_factory=dict)  # datastore_health()'s info

    @property
    def ready(self) -> bool:
        return (
            self.felix_in_sync is not False
            and self.routes_in_sync is not False
            and self.bird_running is not False
            and all(established(r) for r in self.bgp)
            and self.datastore_ready is not False
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "felix_in_sync": self.felix_in_sync,
            "routes_in_sync": self.routes_in_sync,
            "bird_running": self.bird_running,
            "datastore_ready": self.datastore_ready,
            "datastore": self.datastore,
            "bgp": self.bgp,
            "pid": self.pid,
            "node": self.node,
            "components": self.components,
            "errors": self.errors,
            "time": self.time,
        }


def write_status(state_dir: str, status: NodeStatus) -> str:
    path = os.path.join(state_dir, STATUS_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(status.to_json(), f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_status(state_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(state_dir, STATUS_FILE)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fresh(data: dict[str, Any] | None, now: float | None) -> bool:
    if data is None:
        return False
    now = time.time() if now is None else now
    t = data.get("time")
    return isinstance(t, int | float) and now - t <= STALE_AFTER


def check(
    data: dict[str, Any] | None,
    *,
    felix_ready: bool = False,
    bird_ready: bool = False,
    felix_live: bool = False,
    bird_live: bool = False,
    bird6_ready: bool = False,
    now: float | None = None,
) -> list[str]:
    """Failure messages of the requested checks (empty = healthy), Calico's wording."""
    problems: list[str] = []
    alive = _fresh(data, now)
    d = data or {}
    if felix_live and (not alive or d.get("components", {}).get("felix", {}).get("alive") is False):
        problems.append("calico/node is not live: Felix is not live: liveness probe reporting 503")
    if bird_live and (not alive or d.get("bird_running") is False):
        problems.append(
            "calico/node is not live: bird/confd is not live: BIRD is not running"
            if alive
            else "calico/node is not live: bird/confd is not live: calico-node is not running"
        )
    if felix_ready:
        if not alive:
            problems.append(
                "calico/node is not ready: felix is not ready: calico-node is not running"
            )
        elif d.get("felix_in_sync") is False or d.get("routes_in_sync") is False:
            problems.append(
                "calico/node is not ready: felix is not ready: readiness probe reporting 503"
            )
        elif d.get("datastore_ready") is False:
            reason = (d.get("datastore") or {}).get("reason") or "datastore not in sync"
            problems.append(
                "calico/node is not ready: felix is not ready: readiness probe reporting 503"
                f" ({reason})"
            )
    for wanted, name, version in ((bird_ready, "BIRD", 4), (bird6_ready, "BIRD6", 6)):
        if not wanted:
            continue
        if not alive:
            problems.append(
                f"calico/node is not ready: {name} is not ready: calico-node is not running"
            )
        elif d.get("bird_running") is False:
            problems.append(
                f"calico/node is not ready: {name} is not ready: Error querying BIRD: "
                f"unable to connect to BIRDv{version} socket"
            )
        else:
            rows = [r for r in d.get("bgp") or [] if (":" in r.get("peer", "")) == (version == 6)]
            down = not_established(rows)
            if down:
                problems.append(
                    f"calico/node is not ready: {name} is not ready: BGP not established with "
                    + ",".join(down)
                )
    return problems


def not_established(rows: Sequence[dict[str, str]]) -> list[str]:
    return [str(r.get("peer", "")) for r in rows if not established(r)]
