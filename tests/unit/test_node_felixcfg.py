"""FelixConfiguration precedence for the settings calico-node uses."""

from __future__ import annotations

import pytest

from pycalico.node.felixcfg import FelixConfigError, effective, from_resources


def test_defaults() -> None:
    c = effective({})
    assert c["healthEnabled"] is True
    assert c["healthPort"] == 9099
    assert c["prometheusMetricsEnabled"] is False
    assert c["prometheusMetricsPort"] == 9091
    assert c.source["healthPort"] == "default"


def test_env_over_node_over_global_over_default() -> None:
    g = {"healthPort": 1000, "prometheusMetricsPort": 2000, "vxlanMTU": 1400}
    n = {"healthPort": 1001, "prometheusMetricsPort": 2001}
    env = {"FELIX_HEALTHPORT": "1002"}
    c = effective(env, g, n)
    assert (c["healthPort"], c.source["healthPort"]) == (1002, "env")
    assert (c["prometheusMetricsPort"], c.source["prometheusMetricsPort"]) == (2001, "node")
    assert (c["vxlanMTU"], c.source["vxlanMTU"]) == (1400, "global")


def test_env_names_are_case_insensitive_and_bools_parse() -> None:
    assert effective({"FELIX_HEALTHENABLED": "false"})["healthEnabled"] is False
    assert effective({"felix_prometheusmetricsenabled": "True"})["prometheusMetricsEnabled"]
    assert effective({"FELIX_REPORTINGINTERVAL": "1m30s"})["reportingInterval"] == 90.0


def test_bad_env_value_is_an_error_naming_the_variable() -> None:
    with pytest.raises(FelixConfigError, match="FELIX_HEALTHPORT"):
        effective({"FELIX_HEALTHPORT": "lots"})


def test_bad_datastore_value_falls_back_with_warning() -> None:
    c = effective({}, {"healthPort": 7000}, {"healthPort": "x"})
    assert c["healthPort"] == 7000
    assert any("healthPort" in w for w in c.warnings)


def test_from_resources_picks_global_and_own_node() -> None:
    res = [
        {"metadata": {"name": "default"}, "spec": {"healthPort": 1}},
        {"metadata": {"name": "node.n1"}, "spec": {"healthPort": 2}},
        {"metadata": {"name": "node.n2"}, "spec": {"healthPort": 3}},
    ]
    assert from_resources({}, "n1", res)["healthPort"] == 2
    assert from_resources({}, "n3", res)["healthPort"] == 1
