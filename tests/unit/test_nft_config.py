"""Felix settings resolution and the agent's in-sync gate (no threads started)."""

from __future__ import annotations

import pytest

from pycalico.datastore import EventType
from pycalico.datastore.memory import MemoryDatastore
from pycalico.datastore.syncer import SyncStatus, SyncUpdate
from pycalico.felix.agent import Felix
from pycalico.felix.config import families, render_config
from pycalico.felix.dataplane import FakeNftRunner, ReplaceTable
from pycalico.model import ModelError
from pycalico.model.durations import parse_duration
from pycalico.model.felixconfig import FelixConfigError, resolve
from tests.unit.test_rules_renderer import state


def test_parse_duration() -> None:
    assert parse_duration("90s", "x") == 90.0
    assert parse_duration("1m30s", "x") == 90.0
    assert parse_duration("500ms", "x") == 0.5
    assert parse_duration(2, "x") == 2.0
    assert parse_duration("1.5", "x") == 1.5
    for bad in ("", "ten", "5 s", "-1"):
        with pytest.raises(ModelError, match="x"):
            parse_duration(bad, "x")


def test_precedence_default_node_env_override() -> None:
    configs = {
        "default": {"nftablesRefreshInterval": "60s", "defaultEndpointToHostAction": "Return"},
        "node.n1": {"nftablesRefreshInterval": "30s"},
        "node.other": {"nftablesRefreshInterval": "5s"},
    }
    s = resolve("n1", configs)
    assert (s.nftables_refresh_interval, s.default_endpoint_to_host_action) == (30.0, "Return")
    s = resolve("n1", configs, env={"FELIX_DEFAULTENDPOINTTOHOSTACTION": "ACCEPT"})
    assert s.default_endpoint_to_host_action == "Accept"
    s = resolve("n1", configs, overrides={"nftablesRefreshInterval": 1})
    assert s.nftables_refresh_interval == 1.0
    s = resolve("n1", {"default": {"failsafeInboundHostPorts": [
        {"protocol": "TCP", "port": 22}, {"protocol": "UDP", "port": 68}]}})  # fmt: skip
    assert s.failsafe_inbound == (("tcp", 22), ("udp", 68))
    s = resolve("n1", {}, env={"FELIX_FAILSAFEINBOUNDHOSTPORTS": "tcp:22,udp:68"})
    assert s.failsafe_inbound == (("tcp", 22), ("udp", 68))
    assert families(resolve("n1", {}, env={"FELIX_IPV6SUPPORT": "false"})) == ("ip",)


def test_bad_values_name_field_and_source() -> None:
    # A bad datastore value is ignored with a warning naming it (the one resolver's policy).
    s = resolve("n1", {"default": {"defaultEndpointToHostAction": "Maybe"}})
    assert s.default_endpoint_to_host_action == "Drop"
    assert any(
        w.startswith("FelixConfiguration default: defaultEndpointToHostAction") for w in s.warnings
    )
    with pytest.raises(FelixConfigError, match="environment: failsafeInboundHostPorts"):
        resolve("n1", {}, env={"FELIX_FAILSAFEINBOUNDHOSTPORTS": "icmp:1"})


def test_nothing_programmed_before_in_sync() -> None:
    fake = FakeNftRunner()
    felix = Felix("node1", MemoryDatastore(), fake)  # threads not started: drive the loop
    updates = [SyncUpdate(EventType.CREATED, f"k{i}", r, i + 1) for i, r in enumerate(state())]
    felix._process([SyncStatus.RESYNC, updates])
    felix._maybe_apply()
    assert fake.transactions == [] and not felix.wait_in_sync(0)
    felix._process([SyncStatus.IN_SYNC])
    felix._maybe_apply()
    assert felix.wait_in_sync(0)
    main = [(f, ops) for f, t, ops in fake.transactions if t == "calico"]
    assert [type(o) for _f, ops in main for o in ops] == [ReplaceTable] * 2
    assert {f for f, _o in main} == {"ip", "ip6"}
    # The fail-closed guard tables (issue 19) land in the SAME transaction as the main ones
    # (a crash can never leave one without the other).
    assert fake.batches == [
        [("ip", "calico-guard"), ("ip6", "calico-guard"), ("ip", "calico"), ("ip6", "calico")]
    ]


def test_failsafe_net_is_kept_for_the_renderer() -> None:
    spec = {
        "failsafeInboundHostPorts": [
            {"protocol": "TCP", "port": 22, "net": "10.0.0.0/8"},
            {"protocol": "UDP", "port": 68},
        ]
    }
    s = resolve("n1", {"default": spec}, {}, None)
    assert render_config(s).failsafe_inbound == (("tcp", 22, "10.0.0.0/8"), ("udp", 68))
