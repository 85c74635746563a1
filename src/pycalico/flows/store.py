"""The node's bounded local flow store (SQLite) and the query filter shared with the API.

Owns :class:`FlowStore` (append finished records, query by :class:`FlowFilter`, enforce
retention by age (``flowLogsRetention``) and by size (``flowLogsFileMaxFileSizeMB``)) and
:class:`FlowFilter` (``--from``/``--to`` as ``NS/NAME``, ``NS/*`` or a CIDR, ``--action``,
``--policy`` (a policy name, ``kind/name``, ``ns/name`` or ``tier/name``; or ``end-of-tier``,
``profile``) and ``--since``).

Invariants: a store that cannot write (disk full, locked, corrupt) never raises into the
collector: :meth:`FlowStore.append` returns False and counts the loss in ``lost``; the
oldest rows go first when the size bound is hit (counted in ``evicted``). One connection,
used by one thread at a time (a lock); the API reads through the same object.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pycalico.flows.record import FlowRecord, Peer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    start REAL NOT NULL, end REAL NOT NULL, action TEXT NOT NULL, record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_end ON flows(end);
"""


class FilterError(ValueError):
    """A malformed filter value (names the option)."""


def _peer_matcher(text: str, what: str) -> Any:
    text = text.strip()
    if "/" in text and not text.replace(".", "").replace("/", "").replace(":", "").isdigit():
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            ns, _, name = text.partition("/")
            if not ns or not name:
                raise FilterError(
                    f"{what}: expected NAMESPACE/NAME or a CIDR, not {text!r}"
                ) from None

            def by_name(p: Peer) -> bool:
                return p.namespace == ns and (name == "*" or p.name == name)

            return by_name
    else:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise FilterError(f"{what}: expected NAMESPACE/NAME or a CIDR, not {text!r}") from None

    def by_net(p: Peer) -> bool:
        try:
            return ipaddress.ip_address(p.ip) in net
        except ValueError:
            return False

    return by_net


@dataclass(frozen=True)
class FlowFilter:
    src: str = ""
    dst: str = ""
    action: str = ""
    policy: str = ""
    since: float = 0.0  # records ending at or after this time (epoch seconds)

    def __post_init__(self) -> None:
        if self.action not in ("", "allow", "deny"):
            raise FilterError(f"action: must be allow or deny, not {self.action!r}")
        if self.src:
            _peer_matcher(self.src, "from")
        if self.dst:
            _peer_matcher(self.dst, "to")

    @classmethod
    def from_query(cls, q: dict[str, str]) -> FlowFilter:
        try:
            since = float(q.get("since") or 0)
        except ValueError:
            raise FilterError(f"since: not a number: {q.get('since')!r}") from None
        return cls(q.get("from", ""), q.get("to", ""), q.get("action", ""), q.get("policy", ""),
                   since)  # fmt: skip

    def to_query(self) -> dict[str, str]:
        out = {"from": self.src, "to": self.dst, "action": self.action, "policy": self.policy}
        out = {k: v for k, v in out.items() if v}
        if self.since:
            out["since"] = repr(self.since)
        return out

    def matches(self, r: FlowRecord) -> bool:
        k = r.key
        if self.since and r.end < self.since:
            return False
        if self.action and k.action != self.action:
            return False
        if self.src and not _peer_matcher(self.src, "from")(k.src):
            return False
        if self.dst and not _peer_matcher(self.dst, "to")(k.dst):
            return False
        if self.policy:
            pol = r.policy
            if pol is None:
                return False
            want = self.policy
            names = {pol.name, pol.policy_id(), f"{pol.tier}/{pol.name}"}
            if pol.namespace:
                names.add(f"{pol.namespace}/{pol.name}")
            if pol.end_of_tier:
                names = {"end-of-tier", f"end-of-tier/{pol.tier}", pol.tier}
            elif pol.owner == "profile":
                names.add("profile")
            elif pol.owner == "host":
                names.add("host")
            if want not in names:
                return False
        return True


class FlowStore:
    def __init__(self, path: str, max_bytes: int, retention: float) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.retention = retention
        self.lost = 0
        self.evicted = 0
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(self, records: Iterable[FlowRecord]) -> bool:
        rows = [(r.start, r.end, r.key.action, json.dumps(r.to_json())) for r in records]
        if not rows:
            return True
        try:
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO flows(start, end, action, record) VALUES (?, ?, ?, ?)", rows
                )
                self._db.execute("COMMIT")
                self._enforce(time.time())
            return True
        except sqlite3.Error:
            self.lost += len(rows)
            try:
                with self._lock:
                    self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return False

    def size(self) -> int:
        (pages,) = self._db.execute("PRAGMA page_count").fetchone()
        (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
        (psize,) = self._db.execute("PRAGMA page_size").fetchone()
        return int((pages - free) * psize)

    def _enforce(self, now: float) -> None:
        self._db.execute("DELETE FROM flows WHERE end < ?", (now - self.retention,))
        while self.size() > self.max_bytes:
            (n,) = self._db.execute("SELECT COUNT(*) FROM flows").fetchone()
            if not n:
                break
            k = max(1, n // 10)
            self._db.execute(
                "DELETE FROM flows WHERE id IN (SELECT id FROM flows ORDER BY id LIMIT ?)", (k,)
            )
            self.evicted += k

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM flows").fetchone()
        return int(n)

    def query(self, flt: FlowFilter, limit: int = 10000) -> list[FlowRecord]:
        sql = "SELECT record FROM flows WHERE end >= ?"
        args: list[Any] = [flt.since]
        if flt.action:
            sql += " AND action = ?"
            args.append(flt.action)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit * 4)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        out = []
        for (text,) in rows:
            try:
                rec = FlowRecord.from_json(json.loads(text))
            except (ValueError, KeyError, TypeError):
                continue
            if flt.matches(rec):
                out.append(rec)
            if len(out) >= limit:
                break
        out.reverse()
        return out
