"""Versions from one place: ``calicoctl version`` (client, commit, and the cluster's version
from ClusterInformation when a datastore answers), ``calico-node --version``, and the commit
stamp a built wheel carries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from pycalico import __version__
from pycalico.client import ResourceClient
from pycalico.ctl.main import cli as calicoctl
from pycalico.datastore.sqlite import SqliteDatastore
from pycalico.node.main import cli as calico_node
from pycalico.node.startup import ensure_cluster_information
from pycalico.system import buildinfo

COMMIT = r"([0-9a-f]{7,40}|unknown)"


def test_client_version_and_commit() -> None:
    res = CliRunner().invoke(calicoctl, ["version", "--client"])
    assert res.exit_code == 0
    assert res.output.splitlines()[0] == f"Client Version:    v{__version__}"
    assert re.fullmatch(rf"Git commit:        {COMMIT}", res.output.splitlines()[1])
    assert "Cluster" not in res.output


def test_cluster_version_from_cluster_information(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "ds.db"
    monkeypatch.setenv("DATASTORE_TYPE", "sqlite")
    monkeypatch.setenv("CALICO_DATASTORE_PATH", str(db))
    res = CliRunner().invoke(calicoctl, ["version"])
    assert res.exit_code == 0 and "Cluster Version:   unknown" in res.output
    ds = SqliteDatastore(str(db))
    ensure_cluster_information(ResourceClient(ds), "pycalico,bgp")
    ds.close()
    res = CliRunner().invoke(calicoctl, ["version"])
    assert f"Cluster Version:   pycalico-{__version__}" in res.output
    assert "Cluster Type:      pycalico,bgp" in res.output


def test_calico_node_version() -> None:
    res = CliRunner().invoke(calico_node, ["--version"])
    assert res.exit_code == 0
    assert re.fullmatch(rf"calico-node \(pycalico\) v{re.escape(__version__)}, commit {COMMIT}\n",
                        res.output)  # fmt: skip


def test_commit_file_wins_over_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = tmp_path / "_commit"
    stamp.write_text("0123456789ab\n")
    monkeypatch.setattr(buildinfo, "COMMIT_FILE", stamp)
    assert buildinfo.git_commit.__wrapped__() == "0123456789ab"
    monkeypatch.setattr(buildinfo, "COMMIT_FILE", tmp_path / "absent")
    monkeypatch.setattr(buildinfo, "PACKAGE_DIR", tmp_path)  # not a git checkout
    assert buildinfo.git_commit.__wrapped__() == "unknown"
