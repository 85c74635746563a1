"""calicoctl at the edge of datastore failures: clear one-line errors, exit 1, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CALICOCTL = str(Path(sys.executable).parent / "calicoctl")
POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p1}
spec: {cidr: 10.9.0.0/16}
"""


def ctl(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATASTORE", "ETCD", "CALICO"))
    }
    return subprocess.run(
        [CALICOCTL, *args], env={**base, **env}, input=stdin, capture_output=True, text=True
    )


@pytest.mark.etcd
def test_etcd_down_fails_fast_and_clearly(etcd_server_fn) -> None:  # type: ignore[no-untyped-def]
    env = {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": etcd_server_fn.url}
    assert ctl(env, "apply", "-f", "-", stdin=POOL).returncode == 0
    etcd_server_fn.stop()
    for args, stdin in ((("get", "pools"), None), (("apply", "-f", "-"), POOL)):
        t0 = time.monotonic()
        p = ctl(env, *args, stdin=stdin)
        assert time.monotonic() - t0 < 5.0
        assert p.returncode == 1
        assert "datastore unavailable" in p.stderr
        assert "Traceback" not in p.stderr
    etcd_server_fn.start()
    p = ctl(env, "get", "pools", "-o", "name")
    assert p.returncode == 0 and p.stdout.split() == ["p1"]


def test_corrupt_and_unwritable_sqlite_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"this is not a database" * 100)
    p = ctl({"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(bad)}, "get", "pools")
    assert p.returncode == 1 and "corrupt" in p.stderr and "Traceback" not in p.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = ctl(
        {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(blocker / "x.db")},
        "apply",
        "-f",
        "-",
        stdin=POOL,
    )
    assert p.returncode == 1 and str(blocker) in p.stderr and "Traceback" not in p.stderr
