"""calico-node's Docker-driver settings (CALICO_LIBNETWORK_*) and the lab's per-node engine
settings for ``--runtime docker``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycalico.lab.engine import node_env
from pycalico.lab.state import LabState, NodeState
from pycalico.node.libnetwork import ConfigError, from_env
from tests.kit.fakes import memory_datastore


def test_disabled_by_default_and_settings_parsed() -> None:
    ds = memory_datastore()
    assert from_env(ds, "n1", {}) is None
    comp = from_env(
        ds,
        "n1",
        {
            "CALICO_LIBNETWORK_ENABLED": "true",
            "CALICO_LIBNETWORK_PLUGIN_DIR": "/tmp/x",
            "CALICO_LIBNETWORK_VETH_MTU": "1400",
            "CALICO_LIBNETWORK_CREATE_PROFILES": "false",
            "CALICO_LIBNETWORK_LABEL_ENDPOINTS": "true",
            "DOCKER_HOST": "unix:///tmp/d.sock",
        },
    )
    assert comp is not None
    assert comp.plugin_dir == "/tmp/x"
    assert comp.network.mtu == 1400 and not comp.network.create_profiles
    assert comp.network.lookup is not None and comp.network.scope == "local"


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("CALICO_LIBNETWORK_ENABLED", "maybe", "expected true or false"),
        ("CALICO_LIBNETWORK_VETH_MTU", "12", "68..65535"),
        ("CALICO_LIBNETWORK_VETH_MTU", "big", "CALICO_LIBNETWORK_"),
        ("CALICO_LIBNETWORK_SCOPE", "swarm", "local or global"),
        ("DOCKER_HOST", "tcp://1.2.3.4:2375", "only unix://"),
    ],
)
def test_bad_settings_name_the_variable(key: str, value: str, needle: str) -> None:
    env = {"CALICO_LIBNETWORK_ENABLED": "true", "CALICO_LIBNETWORK_LABEL_ENDPOINTS": "true"}
    env[key] = value
    with pytest.raises(ConfigError, match=needle):
        from_env(memory_datastore(), "n1", env)


def test_lab_nodes_get_driver_settings_only_with_the_docker_runtime(tmp_path: Path) -> None:
    node = NodeState("node1", "x-node1", "198.18.0.1/24", 0)
    state = LabState("l", "x-", str(tmp_path), nodes=[node])
    assert node_env(state, node) == {}
    state.runtime = "docker"
    env = node_env(state, node)
    assert env["CALICO_LIBNETWORK_ENABLED"] == "true"
    assert env["CALICO_LIBNETWORK_PLUGIN_DIR"] == str(tmp_path / "node1" / "plugins")
    assert env["DOCKER_HOST"] == f"unix://{tmp_path / 'node1' / 'docker' / 'docker.sock'}"
    state.save()
    again = LabState.read(tmp_path)
    assert again.runtime == "docker" and again.nodes[0].engine_pid == 0
