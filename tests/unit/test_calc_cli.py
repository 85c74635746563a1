"""``calicoctl policy explain|matrix`` through a real sqlite datastore."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pycalico.ctl.main import cli
from tests.unit.test_calc_evaluate import BASE, gnp


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    from pycalico.config import load_config
    from pycalico.datastore import open_datastore

    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(tmp_path / "c.db")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        ds = open_datastore(load_config(None))
        try:
            resources: list[dict[str, Any]] = [
                *BASE,
                gnp(
                    "web-in",
                    {
                        "selector": "app == 'web'",
                        "ingress": [{"action": "Allow", "source": {"selector": "app == 'db'"}}],
                    },
                ),
            ]
            for r in resources:
                ds.create(r)
        finally:
            ds.close()
    return env


def test_explain_json(env: dict[str, str]) -> None:
    r = CliRunner().invoke(
        cli,
        [
            "policy",
            "explain",
            "--from",
            "b/cli",
            "--to",
            "a/web",
            "--port",
            "80",
            "--protocol",
            "TCP",
            "-o",
            "json",
        ],
        env=env,
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["verdict"] == "deny"
    assert out["egress"]["verdict"] == "allow"
    assert out["ingress"] | {"trace": []} == {
        "verdict": "deny",
        "reason": "tier-default",
        "endpoint": "a/web",
        "tier": "default",
        "action": "Deny",
        "trace": [],
    }


def test_explain_text_by_ip(env: dict[str, str]) -> None:
    r = CliRunner().invoke(
        cli, ["policy", "explain", "--from", "10.0.0.2", "--to", "a/web", "--port", "80"], env=env
    )
    assert r.exit_code == 0, r.output
    assert r.output.startswith("a/db -> a/web TCP/80: ALLOW")
    assert "policy gnp/web-in, rule 0 (Allow)" in r.output


def test_matrix_json_and_errors(env: dict[str, str]) -> None:
    r = CliRunner().invoke(cli, ["policy", "matrix", "-o", "json"], env=env)
    assert r.exit_code == 0, r.output
    probes = {(p["from"], p["to"]): p["verdict"] for p in json.loads(r.output)["probes"]}
    assert probes[("a/db", "a/web")] == "allow"
    assert probes[("b/cli", "a/web")] == "deny"
    assert probes[("a/web", "b/cli")] == "allow"
    assert {p["port"] for p in json.loads(r.output)["probes"]} == {5432}
    bad = CliRunner().invoke(cli, ["policy", "explain", "--from", "x/y", "--to", "a/web"], env=env)
    assert bad.exit_code == 1 and "unknown endpoint 'x/y'" in bad.output
    bad = CliRunner().invoke(cli, ["policy", "matrix", "--ports", "80/XYZ"], env=env)
    assert bad.exit_code == 1 and "--ports" in bad.output
