"""sqlite backend specifics: corrupt / unwritable files, automatic history compaction,
cross-object watch, closing."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from pycalico.datastore import Compacted, Resource, Unavailable, prefix_for
from pycalico.datastore.sqlite import SqliteDatastore


def pool(name: str) -> Resource:
    return {"kind": "IPPool", "metadata": {"name": name}, "spec": {"cidr": "10.0.0.0/16"}}


def test_corrupt_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not an sqlite database at all" * 100)
    with pytest.raises(Unavailable, match=r"bad\.db.*corrupt") as exc:
        SqliteDatastore(str(path))
    assert not isinstance(exc.value, sqlite3.Error)
    assert exc.value.__cause__ is None


def test_file_corrupted_after_open_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    ds = SqliteDatastore(str(path))
    ds.create(pool("a"))
    ds.close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # smash the header tail and the schema page
    path.write_bytes(bytes(data))
    with pytest.raises(Unavailable):
        ds2 = SqliteDatastore(str(path))
        ds2.get("IPPool", "a")


@pytest.mark.parametrize("layout", ["parent-is-a-file", "path-is-a-directory"])
def test_unwritable_path_is_unavailable(tmp_path: Path, layout: str) -> None:
    if layout == "parent-is-a-file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "calico.db"
    else:
        path = tmp_path / "dir.db"
        path.mkdir()
    with pytest.raises(Unavailable, match="sqlite datastore"):
        SqliteDatastore(str(path))


def test_readonly_database_is_unavailable_on_write(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    SqliteDatastore(str(path)).close()
    ds = SqliteDatastore(str(path))
    # a read-only connection stands in for an unwritable file (root ignores file modes)
    ds._local.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    with pytest.raises(Unavailable, match=r"readonly|read-only"):
        ds.create(pool("a"))


def test_creates_parent_directories(tmp_path: Path) -> None:
    ds = SqliteDatastore(str(tmp_path / "a" / "b" / "calico.db"))
    ds.create(pool("a"))
    assert (tmp_path / "a" / "b" / "calico.db").exists()
    ds.close()


def test_history_is_compacted_automatically(tmp_path: Path) -> None:
    ds = SqliteDatastore(str(tmp_path / "h.db"), history=10, compact_every=5)
    obj = ds.create(pool("a"))
    start = int(obj["metadata"]["resourceVersion"])
    for _ in range(30):
        obj = ds.update(obj)
    with pytest.raises(Compacted):
        list(ds.watch(prefix_for("IPPool"), start, timeout=0.5))
    recent = int(obj["metadata"]["resourceVersion"]) - 3
    evs = list(ds.watch(prefix_for("IPPool"), recent, timeout=0.2))
    assert [e.revision for e in evs] == [recent + 1, recent + 2, recent + 3]
    ds.close()


def test_watch_across_two_store_objects(tmp_path: Path) -> None:
    path = str(tmp_path / "w.db")
    a, b = SqliteDatastore(path), SqliteDatastore(path)
    rev = a.list("IPPool").revision
    got: list[str] = []

    def run() -> None:
        for ev in a.watch(prefix_for("IPPool"), rev, timeout=3):
            got.append(ev.obj["metadata"]["name"])
            if len(got) == 2:
                return

    t = threading.Thread(target=run)
    t.start()
    b.create(pool("x"))
    b.create(pool("y"))
    t.join(5)
    assert got == ["x", "y"]
    a.close()
    b.close()


def test_watch_returns_when_closed(tmp_path: Path) -> None:
    ds = SqliteDatastore(str(tmp_path / "c.db"))
    done = threading.Event()

    def run() -> None:
        list(ds.watch(prefix_for("IPPool"), 0))
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ds.close()
    assert done.wait(3)
    with pytest.raises(Unavailable, match="closed"):
        ds.get("IPPool", "a")
