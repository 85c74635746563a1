"""The one FelixConfiguration resolver (pycalico.model.felixconfig) and its views."""

from __future__ import annotations

import pytest

from pycalico.felix.config import families
from pycalico.model.felixconfig import FelixConfig, FelixConfigError, resolve, specs_by_name
from pycalico.node.felixcfg import effective


def test_precedence_default_node_env_override() -> None:
    specs = {
        "default": {"vxlanVNI": 5000, "healthPort": 1, "programClusterRoutes": "Enabled"},
        "node.n1": {"healthPort": 2, "vxlanVNI": 5001},
    }
    c = resolve("n1", specs, {"FELIX_HEALTHPORT": "3"}, {"vxlanVNI": 6000})
    assert (c.vxlan_vni, c.health_port, c.program_cluster_routes) == (6000, 3, "Enabled")
    assert c.sources["health_port"] == "env" and c.sources["vxlan_vni"] == "override"
    assert resolve("n2", specs).vxlan_vni == 5000
    assert resolve("n2", {}) == FelixConfig()


def test_bad_datastore_value_warns_and_lower_layer_wins() -> None:
    specs = {"default": {"vxlanPort": 8472}, "node.n1": {"vxlanPort": "x", "vxlanEnabled": "?"}}
    c = resolve("n1", specs)
    assert c.vxlan_port == 8472 and c.vxlan_enabled is None
    assert len(c.warnings) == 2 and "node.n1: vxlanPort" in c.warnings[0]


def test_bad_env_or_override_raises_naming_it() -> None:
    with pytest.raises(FelixConfigError, match="FELIX_VXLANPORT"):
        resolve("n1", {}, {"FELIX_VXLANPORT": "lots"})
    with pytest.raises(FelixConfigError, match="override: programClusterRoutes"):
        resolve("n1", {}, None, {"programClusterRoutes": "Sometimes"})


def test_string_booleans_parse() -> None:
    assert resolve("n", {"default": {"vxlanEnabled": "false"}}).vxlan_enabled is False


def test_views_agree() -> None:
    res = [{"metadata": {"name": "default"}, "spec": {"ipipMTU": 1300, "ipv6Support": False}}]
    specs = specs_by_name(res)
    assert resolve("n1", specs_by_name({"default": res[0]})).ipip_mtu == 1300
    assert families(resolve("n1", specs)) == ("ip",)
    assert effective({}, specs["default"])["ipipMTU"] == 1300
