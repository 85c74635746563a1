"""calicoctl resource commands against a real sqlite datastore in a temp dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from pycalico.ctl.main import cli

POOLS = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool1}
spec: {cidr: 10.1.0.0/16, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool2}
spec: {cidr: 10.2.0.0/16, ipipMode: Always}
"""

POLICIES = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: shop}
spec: {selector: app == 'web', ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-db}
spec: {selector: app == 'db', ingress: [{action: Allow}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-web, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""


@pytest.fixture()
def ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATASTORE_TYPE", "sqlite")
    monkeypatch.setenv("CALICO_DATASTORE_PATH", str(tmp_path / "calico.db"))
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(cli, list(args), input=stdin, catch_exceptions=False)

    return run


def _file(tmp_path: Path, text: str, name: str = "r.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_apply_get_and_messages(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = ctl("apply", "-f", _file(tmp_path, POOLS))
    assert r.exit_code == 0
    assert "Successfully applied 2 'IPPool' resource(s)" in r.output
    r = ctl("get", "ippools")
    lines = r.output.splitlines()
    assert lines[0].split() == ["NAME", "CIDR", "SELECTOR"]
    assert lines[1].split() == ["pool1", "10.1.0.0/16", "all()"]
    wide = ctl("get", "pool", "-o", "wide").output.splitlines()
    assert "IPIPMODE" in wide[0] and "Always" in wide[2]
    one = yaml.safe_load(ctl("get", "ipp", "pool1", "-o", "yaml").output)
    assert one["kind"] == "IPPool" and one["spec"]["blockSize"] == 26
    assert one["metadata"]["uid"] and one["metadata"]["resourceVersion"]
    listed = json.loads(ctl("get", "pools", "-o", "json").output)
    assert listed["kind"] == "IPPoolList" and len(listed["items"]) == 2
    assert ctl("get", "pools", "-o", "name").output.split() == ["pool1", "pool2"]
    cc = ctl("get", "pools", "-o", "custom-columns=NAME,NAT:.spec.natOutgoing").output
    assert cc.splitlines()[1].split() == ["pool1", "true"]


def test_create_existing_fails_unless_skip_exists(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = _file(tmp_path, POOLS)
    assert ctl("create", "-f", f).exit_code == 0
    r = ctl("create", "-f", f)
    assert r.exit_code == 1
    assert "resource already exists: IPPool(pool1)" in r.output
    assert ctl("create", "-f", f, "--skip-exists").exit_code == 0


def test_invalid_document_writes_nothing(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = POOLS + "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p3}\n"
    bad += "spec: {cidr: 10.3.0.1/16}\n"
    r = ctl("apply", "-f", _file(tmp_path, bad))
    assert r.exit_code == 1
    assert "IPPool p3: spec.cidr" in r.output
    assert ctl("get", "pools", "-o", "name").output.strip() == ""


def test_replace_with_stale_revision_conflicts(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ctl("apply", "-f", _file(tmp_path, POOLS))
    cur = yaml.safe_load(ctl("get", "pool", "pool1", "-o", "yaml").output)
    stale = dict(cur)
    cur["spec"]["natOutgoing"] = False
    assert ctl("replace", "-f", _file(tmp_path, yaml.safe_dump(cur), "a.yaml")).exit_code == 0
    stale["spec"]["disabled"] = True
    r = ctl("replace", "-f", _file(tmp_path, yaml.safe_dump(stale), "b.yaml"))
    assert r.exit_code == 1 and "conflict" in r.output.lower()
    after = yaml.safe_load(ctl("get", "pool", "pool1", "-o", "yaml").output)
    assert after["spec"]["disabled"] is False and after["spec"]["natOutgoing"] is False


def test_replace_missing_fails(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = ctl("replace", "-f", _file(tmp_path, POOLS))
    assert r.exit_code == 1 and "resource does not exist: IPPool(pool1)" in r.output


def test_delete_and_skip_not_exists(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ctl("apply", "-f", _file(tmp_path, POOLS))
    r = ctl("delete", "ippool", "pool1")
    assert r.exit_code == 0 and "Successfully deleted 1 'IPPool' resource(s)" in r.output
    r = ctl("delete", "ippool", "pool1")
    assert r.exit_code == 1 and "resource does not exist" in r.output
    assert ctl("delete", "ippool", "pool1", "--skip-not-exists").exit_code == 0
    assert ctl("delete", "-f", _file(tmp_path, POOLS), "-s").exit_code == 0
    assert ctl("get", "pools", "-o", "name").output.strip() == ""


def test_patch_validates_and_keeps_immutable_fields(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ctl("apply", "-f", _file(tmp_path, POOLS))
    assert ctl("patch", "pool", "pool1", "-p", '{"spec":{"disabled":true}}').exit_code == 0
    r = ctl("patch", "pool", "pool1", "-p", '{"spec":{"blockSize":28}}')
    assert r.exit_code == 1 and "immutable" in r.output
    r = ctl("patch", "pool", "pool1", "-p", '{"spec":{"ipipMode":"Sometimes"}}')
    assert r.exit_code == 1 and "ipipMode" in r.output
    got = yaml.safe_load(ctl("get", "pool", "pool1", "-o", "yaml").output)
    assert got["spec"]["disabled"] is True and got["spec"]["blockSize"] == 26


def test_label_set_overwrite_remove(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ctl("apply", "-f", _file(tmp_path, POOLS))
    assert ctl("label", "pool", "pool1", "env=prod").exit_code == 0
    assert ctl("label", "pool", "pool1", "env=dev").exit_code == 1
    assert ctl("label", "pool", "pool1", "env=dev", "--overwrite").exit_code == 0
    got = yaml.safe_load(ctl("get", "pool", "pool1", "-o", "yaml").output)
    assert got["metadata"]["labels"] == {"env": "dev"}
    assert ctl("label", "pool", "pool1", "env", "--remove").exit_code == 0
    got = yaml.safe_load(ctl("get", "pool", "pool1", "-o", "yaml").output)
    assert not got["metadata"].get("labels")


def test_namespaces_and_k8s_policy_kept_apart(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = ctl("apply", "-f", _file(tmp_path, POLICIES))
    assert r.exit_code == 0, r.output
    assert ctl("get", "networkpolicy", "-n", "shop", "-o", "name").output.split() == ["allow-web"]
    assert ctl("get", "np", "-o", "name").output.split() == ["allow-db"]
    all_ns = ctl("get", "policies", "-A").output.splitlines()
    assert all_ns[0].split() == ["NAMESPACE", "NAME"]
    assert [ln.split() for ln in all_ns[1:]] == [["default", "allow-db"], ["shop", "allow-web"]]
    got = yaml.safe_load(ctl("get", "np", "allow-web", "-n", "shop", "-o", "yaml").output)
    assert got["apiVersion"] == "projectcalico.org/v3"


def test_unknown_kind_and_stdin(ctl) -> None:  # type: ignore[no-untyped-def]
    r = ctl("get", "frobnicators")
    assert r.exit_code == 1 and "not supported" in r.output
    assert ctl("apply", "-f", "-", stdin=POOLS).exit_code == 0
    assert "pool2" in ctl("get", "pools").output
