"""The embedded default Datastore: one SQLite file (WAL) shared safely by many processes.

Tables: ``kv`` (key -> value JSON, mod revision), ``log`` (one row per revision: the change
log watchers read) and ``meta`` (the store-wide ``revision`` counter and the ``compacted``
watermark). Invariants:
- Every write runs in a ``BEGIN IMMEDIATE`` transaction (the database-wide write lock, so CAS
  holds across processes; waiters queue up to ``busy_timeout``), bumps ``revision`` by one and
  appends exactly one ``log`` row with that revision.
- ``log`` keeps the last ``history`` revisions; older rows are deleted and ``compacted`` records
  the highest revision whose row is gone. A watcher resuming below it gets :class:`Compacted`.
- Watchers poll the cheap ``revision`` cell (adaptive 1-20 ms, immediate wakeup for writes
  made through the same object) and read the log in a snapshot transaction.
- A new store file is created mode 0600 (so are its -wal and -shm files, which SQLite creates
  with the database file's mode) and a directory it creates 0700: the store holds the whole
  cluster's policy and configuration. An existing file (and its -wal/-shm) that group or
  others can access - created 0644 by versions before this rule - is tightened to 0600 on
  open, with a warning (silently left as is when we may not chmod it, e.g. not its owner). With
  ``create_dirs=False`` (read-only commands) a missing directory is an error, not created.
- Every ``sqlite3`` error (corrupt file, unwritable path, lock timeout) surfaces as
  :class:`Unavailable` with the path and reason; no raw sqlite3 exception escapes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pycalico.datastore._common import (
    decode,
    encode,
    ident,
    obj_key,
    prefix_end,
    required_revision,
    stamp_new,
    stamp_update,
    with_revision,
)
from pycalico.datastore.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    EventType,
    ListResult,
    NotFound,
    Resource,
    Unavailable,
    WatchEvent,
    key_for,
    prefix_for,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, rev INTEGER NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY, key TEXT NOT NULL, type TEXT NOT NULL,
    value TEXT NOT NULL, obj_rev INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0), ('schema', 1);
"""

_POLL_MIN = 0.001
_POLL_MAX = 0.02
_WATCH_BATCH = 500


def _tighten(path: str) -> None:
    """chmod 0600 the store file and its -wal/-shm when group or others have any access."""
    for p in (path, f"{path}-wal", f"{path}-shm"):
        try:
            mode = os.stat(p).st_mode & 0o777
            if mode & 0o077:
                os.chmod(p, 0o600)
                log.warning("sqlite datastore %s was mode %o; tightened to 0600", p, mode)
        except OSError:  # absent, or not ours to chmod: a reader still works
            continue


class SqliteDatastore:
    """Datastore on one SQLite file. ``history``: revisions of watch history kept."""

    def __init__(
        self,
        path: str,
        *,
        history: int = 10_000,
        busy_timeout: float = 10.0,
        compact_every: int = 256,
        create_dirs: bool = True,
    ) -> None:
        self.path = str(path)
        self.history = history
        self._busy_ms = int(busy_timeout * 1000)
        self._compact_every = max(1, compact_every)
        self._local = threading.local()
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._wake = threading.Condition()
        with self._errors("open"):
            parent = Path(self.path).parent
            if not parent.exists():
                if not create_dirs:  # a reader: never create a store in a missing directory
                    raise Unavailable(
                        f"sqlite datastore {self.path}: directory {parent} does not exist"
                    )
                parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not os.path.exists(self.path):
                # Created owner-only: SQLite gives the -wal and -shm files the same mode.
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            else:
                _tighten(self.path)
            conn = self._conn()
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            ready = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('kv', 'log', 'meta')"
            ).fetchone()[0]
            if ready != 3:  # a new file: create the schema (idempotent, under the write lock)
                with self._txn(conn):
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            conn.execute(stmt)

    # -- connections and errors --------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise Unavailable(f"sqlite datastore {self.path}: closed")
        if os.getpid() != self._pid:  # forked: never reuse the parent's connections
            self._pid = os.getpid()
            self._local = threading.local()
            self._conns = []
            self._conns_lock = threading.Lock()
            self._wake = threading.Condition()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._conns_lock:  # also close connections of threads that have ended
                live = []
                for t, c in self._conns:
                    if t.is_alive():
                        live.append((t, c))
                    else:
                        with contextlib.suppress(sqlite3.Error):
                            c.close()
                self._conns = [*live, (threading.current_thread(), conn)]
        return conn

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            msg = str(e)
            if "locked" in msg or "busy" in msg:
                msg += f" (held by another process for more than {self._busy_ms} ms)"
            elif "not a database" in msg or "malformed" in msg:
                msg += " (the file is corrupt)"
            elif "unable to open" in msg or "readonly" in msg or "read-only" in msg:
                msg += " (check the path exists and is writable)"
            raise Unavailable(f"sqlite datastore {self.path}: {what}: {msg}") from None
        except OSError as e:
            raise Unavailable(f"sqlite datastore {self.path}: {what}: {e}") from None

    @contextlib.contextmanager
    def _txn(self, conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
        conn.execute(f"BEGIN {mode}")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- reads -------------------------------------------------------------------------
    def get(self, kind: str, name: str, namespace: str = "") -> Resource:
        key = key_for(kind, name, namespace)
        with self._errors("get"):
            row = self._conn().execute("SELECT rev, value FROM kv WHERE key=?", (key,)).fetchone()
        if row is None:
            raise NotFound(f"{kind} {_display(name, namespace)} not found")
        return decode(row[1], row[0])

    def list(self, kind: str, namespace: str | None = None) -> ListResult:
        if namespace is None:
            return self.list_prefix(prefix_for(kind))
        return self.list_prefix(prefix_for(kind, namespace))

    def list_prefix(self, prefix: str) -> ListResult:
        with self._errors("list"):
            conn = self._conn()
            with self._txn(conn, "DEFERRED"):
                rev = self._revision(conn)
                rows = conn.execute(
                    "SELECT rev, value FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                    (prefix, prefix_end(prefix)),
                ).fetchall()
        return ListResult(items=[decode(v, r) for r, v in rows], revision=rev)

    @property
    def revision(self) -> int:
        with self._errors("revision"):
            return self._revision(self._conn())

    @staticmethod
    def _revision(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()
        return int(row[0])

    # -- writes ------------------------------------------------------------------------
    def create(self, obj: Resource, keep_identity: bool = False) -> Resource:
        key = obj_key(obj)
        new = stamp_new(obj, keep_identity)
        value = encode(new)
        with self._errors("create"):
            conn = self._conn()
            with self._txn(conn):
                if conn.execute("SELECT 1 FROM kv WHERE key=?", (key,)).fetchone():
                    kind, name, ns = ident(obj)
                    raise AlreadyExists(f"{kind} {_display(name, ns)} already exists")
                rev = self._write(conn, EventType.CREATED, key, value)
        self._notify()
        return with_revision(new, rev)

    def update(self, obj: Resource) -> Resource:
        key = obj_key(obj)
        want = required_revision(obj)
        with self._errors("update"):
            conn = self._conn()
            with self._txn(conn):
                row = conn.execute("SELECT rev, value FROM kv WHERE key=?", (key,)).fetchone()
                kind, name, ns = ident(obj)
                if row is None:
                    raise NotFound(f"{kind} {_display(name, ns)} not found")
                if row[0] != want:
                    raise Conflict(
                        f"{kind} {_display(name, ns)}: resourceVersion {want} is stale "
                        f"(stored {row[0]})"
                    )
                new = stamp_update(obj, decode(row[1], row[0]))
                rev = self._write(conn, EventType.UPDATED, key, encode(new))
        self._notify()
        return with_revision(new, rev)

    def delete(
        self, kind: str, name: str, namespace: str = "", revision: str | None = None
    ) -> Resource:
        key = key_for(kind, name, namespace)
        with self._errors("delete"):
            conn = self._conn()
            with self._txn(conn):
                row = conn.execute("SELECT rev, value FROM kv WHERE key=?", (key,)).fetchone()
                if row is None:
                    raise NotFound(f"{kind} {_display(name, namespace)} not found")
                if revision is not None and str(revision) != str(row[0]):
                    raise Conflict(
                        f"{kind} {_display(name, namespace)}: resourceVersion {revision} is "
                        f"stale (stored {row[0]})"
                    )
                self._write(conn, EventType.DELETED, key, row[1], obj_rev=row[0])
        self._notify()
        return decode(row[1], row[0])

    def _write(
        self, conn: sqlite3.Connection, typ: EventType, key: str, value: str, obj_rev: int = 0
    ) -> int:
        """Inside a write transaction: bump the revision, apply the change, log it."""
        rev = int(
            conn.execute(
                "UPDATE meta SET value = value + 1 WHERE name='revision' RETURNING value"
            ).fetchone()[0]
        )
        if typ is EventType.DELETED:
            conn.execute("DELETE FROM kv WHERE key=?", (key,))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO kv (key, rev, value) VALUES (?, ?, ?)", (key, rev, value)
            )
            obj_rev = rev
        conn.execute(
            "INSERT INTO log (rev, key, type, value, obj_rev) VALUES (?, ?, ?, ?, ?)",
            (rev, key, typ.value, value, obj_rev),
        )
        if rev % self._compact_every == 0 and rev > self.history:
            self._compact(conn, rev - self.history)
        return rev

    # -- compaction --------------------------------------------------------------------
    def compact(self, revision: int | None = None) -> None:
        """Drop watch history up to ``revision`` (default: everything so far)."""
        with self._errors("compact"):
            conn = self._conn()
            with self._txn(conn):
                current = self._revision(conn)
                self._compact(conn, current if revision is None else min(revision, current))

    @staticmethod
    def _compact(conn: sqlite3.Connection, upto: int) -> None:
        conn.execute("DELETE FROM log WHERE rev <= ?", (upto,))
        conn.execute("UPDATE meta SET value = ? WHERE name='compacted' AND value < ?", (upto, upto))

    # -- watch -------------------------------------------------------------------------
    def watch(
        self, prefix: str, from_revision: int, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        last = from_revision
        end = prefix_end(prefix)
        idle_since = time.monotonic()
        poll = _POLL_MIN
        seen_rev = -1
        while not self._closed:
            with self._errors("watch"):
                try:
                    conn = self._conn()
                except Unavailable:
                    if self._closed:  # closed concurrently: end quietly, as documented
                        return
                    raise
                current = self._revision(conn)
                batch: list[WatchEvent] = []
                if current != seen_rev:
                    with self._txn(conn, "DEFERRED"):
                        compacted = int(
                            conn.execute(
                                "SELECT value FROM meta WHERE name='compacted'"
                            ).fetchone()[0]
                        )
                        if last < compacted:
                            raise Compacted(
                                f"watch from revision {last}: history up to {compacted} "
                                "was compacted"
                            )
                        rows = conn.execute(
                            "SELECT rev, key, type, value, obj_rev FROM log WHERE rev > ? "
                            "AND key >= ? AND key < ? ORDER BY rev LIMIT ?",
                            (last, prefix, end, _WATCH_BATCH + 1),
                        ).fetchall()
                        current = self._revision(conn)
                    # One committed snapshot: a write transaction is all in or all out; all
                    # but the last event have more, and that one too when a row beyond the
                    # page exists (read one more than the page to know).
                    full = len(rows) > _WATCH_BATCH
                    rows = rows[:_WATCH_BATCH]
                    batch = [
                        WatchEvent(EventType(t), k, r, decode(v, orev), i < len(rows) - 1 or full)
                        for i, (r, k, t, v, orev) in enumerate(rows)
                    ]
                    if not full:
                        seen_rev = current
                        if not rows:
                            last = max(last, current)
            if batch:
                for ev in batch:
                    last = ev.revision
                    yield ev
                idle_since = time.monotonic()
                poll = _POLL_MIN
                continue
            if timeout is not None and time.monotonic() - idle_since >= timeout:
                return
            with self._wake:
                self._wake.wait(poll)
            poll = min(poll * 1.5, _POLL_MAX)

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def close(self) -> None:
        self._closed = True
        self._notify()
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for _, c in conns:
            with contextlib.suppress(sqlite3.Error):
                c.close()


def _display(name: str, namespace: str) -> str:
    return f"{namespace}/{name}" if namespace else name
