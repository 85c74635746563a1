"""The CNI server runs a request with the node's MTU file unless the plugin names one."""

from __future__ import annotations

from pycalico.cni.server import request_env


def test_server_mtu_file_fills_in_when_the_plugin_names_none() -> None:
    env = request_env({"CNI_COMMAND": "ADD"}, {"CALICO_MTU_FILE": "/lab/node1/mtu"})
    assert env == {"CNI_COMMAND": "ADD", "CALICO_MTU_FILE": "/lab/node1/mtu"}


def test_plugin_mtu_file_wins_and_no_server_file_adds_nothing() -> None:
    plugin = {"CALICO_MTU_FILE": "/p/mtu"}
    assert request_env(plugin, {"CALICO_MTU_FILE": "/s/mtu"}) == plugin
    assert request_env({"X": "1"}, {}) == {"X": "1"}
