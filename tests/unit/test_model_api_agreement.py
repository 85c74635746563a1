"""Property: the API validator (pycalico.api) and the backend model (pycalico.model) agree.

For every kind both understand, whatever ``api.decode`` accepts the model converts without
error, and the model's defaults equal the API's: converting the raw resource and converting
the API's defaulted encoding give the same model value. Seeds: Calico's valid conformance
manifests and the validator's YAML examples; hypothesis varies the optional/defaulted fields.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.api.base import ValidationFailed
from pycalico.api.codec import decode, encode
from pycalico.model import convert
from pycalico.model.felixconfig import resolve
from pycalico.model.network import Block, BlockAffinity, IPPool, Node

DATA = Path(__file__).parents[1] / "conformance" / "data" / "manifests"


def _felix(res: dict[str, Any]) -> Any:
    cfg = resolve("n", {"default": res.get("spec") or {}})
    assert cfg.warnings == (), cfg.warnings
    return cfg


MODEL: dict[str, Callable[[dict[str, Any]], Any]] = {
    "IPPool": IPPool.from_resource,
    "Node": Node.from_resource,
    "IPAMBlock": Block.from_resource,
    "BlockAffinity": BlockAffinity.from_resource,
    "FelixConfiguration": _felix,
}
POLICY_KINDS = {
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "StagedNetworkPolicy",
    "StagedGlobalNetworkPolicy",
    "StagedKubernetesNetworkPolicy",
    "Profile",
    "Tier",
    "WorkloadEndpoint",
    "HostEndpoint",
    "NetworkSet",
    "GlobalNetworkSet",
}


def to_model(res: dict[str, Any]) -> Any:
    kind = res["kind"]
    if kind in MODEL:
        return MODEL[kind](copy.deepcopy(res))
    return convert(copy.deepcopy(res))


def _seeds() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cases = json.loads((DATA / "valid.json").read_text()) if (DATA / "valid.json").exists() else []
    out += [c["manifest"] for c in cases]
    if (DATA / "valid").is_dir():
        for p in sorted((DATA / "valid").glob("*.yaml")):
            out += [d for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)]
    known = MODEL.keys() | POLICY_KINDS
    return [s for s in out if s.get("kind") in known and isinstance(s.get("metadata"), dict)]


SEEDS = _seeds()


NAMESPACED = {"NetworkPolicy", "StagedNetworkPolicy", "StagedKubernetesNetworkPolicy",
              "WorkloadEndpoint", "NetworkSet"}  # fmt: skip


def check(res: dict[str, Any]) -> None:
    if res.get("kind") in NAMESPACED and not (res.get("metadata") or {}).get("namespace"):
        # The client stores namespaced kinds in "default" when none is given (calicoctl).
        res = {**res, "metadata": {**res["metadata"], "namespace": "default"}}
    try:
        decoded = decode(copy.deepcopy(res))
    except ValidationFailed:
        return  # only what validates must convert
    raw = to_model(res)
    defaulted = to_model(encode(decoded))
    assert raw == defaulted, (res, raw, defaulted)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"{s['kind']}-{s['metadata'].get('name')}")
def test_every_valid_seed_converts_with_the_same_defaults(seed: dict[str, Any]) -> None:
    try:
        decode(copy.deepcopy(seed))
    except ValidationFailed:
        pytest.skip("not valid in pycalico.api (covered by the conformance suite)")
    check(seed)


MODES = st.sampled_from([None, "Never", "Always", "CrossSubnet"])
POOL = st.fixed_dictionaries(
    {"cidr": st.sampled_from(["10.244.0.0/16", "192.168.0.0/24", "fd00:10::/64"])},
    optional={
        "blockSize": st.integers(20, 128),
        "ipipMode": MODES,
        "vxlanMode": MODES,
        "natOutgoing": st.booleans(),
        "disabled": st.booleans(),
        "disableBGPExport": st.booleans(),
        "nodeSelector": st.sampled_from(["all()", "", "rack == 'a'", "!has(x)"]),
        "allowedUses": st.sampled_from([["Workload"], ["Tunnel"], ["Workload", "Tunnel"]]),
        "assignmentMode": st.sampled_from(["Automatic", "Manual"]),
        "namespaceSelector": st.sampled_from(["all()", "team == 'a'"]),
    },
)
FELIX = st.fixed_dictionaries(
    {},
    optional={
        "programClusterRoutes": st.sampled_from(
            ["Enabled", "Disabled", "EnabledIPIPOnly", "EnabledNoEncapOnly"]
        ),
        "vxlanVNI": st.integers(1, 1 << 24),
        "vxlanPort": st.integers(1, 65535),
        "vxlanMTU": st.integers(0, 9000),
        "ipipMTU": st.integers(0, 9000),
        "vxlanEnabled": st.booleans(),
        "ipipEnabled": st.booleans(),
        "routeRefreshInterval": st.sampled_from(["90s", "1m30s", "500ms", "2h"]),
        "reportingInterval": st.sampled_from(["30s", "0", "1m"]),
        "nftablesRefreshInterval": st.sampled_from(["3m", "10s"]),
        "defaultEndpointToHostAction": st.sampled_from(["Drop", "Return", "Accept"]),
        "healthPort": st.integers(1, 65535),
        "natOutgoingAddress": st.sampled_from(["198.18.0.9", "10.0.0.1"]),
        "natOutgoingExclusions": st.sampled_from(["IPPoolsOnly", "IPPoolsAndHostIPs"]),
        "ipv6Support": st.booleans(),
        "interfacePrefix": st.sampled_from(["cali", "tap"]),
    },
)
RULE = st.fixed_dictionaries(
    {"action": st.sampled_from(["Allow", "Deny", "Pass", "Log"])},
    optional={"protocol": st.sampled_from(["TCP", "UDP", 6])},
)
POLICY = st.fixed_dictionaries(
    {},
    optional={
        "order": st.floats(0, 1e6, allow_nan=False),
        "selector": st.sampled_from(["all()", "app == 'x'", ""]),
        "types": st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]),
        "ingress": st.lists(RULE, max_size=2),
        "egress": st.lists(RULE, max_size=2),
    },
)


def _res(kind: str, spec: dict[str, Any], ns: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x"}
    if ns:
        meta["namespace"] = ns
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(POOL)
def test_ippool(spec: dict[str, Any]) -> None:
    check(_res("IPPool", spec))


@FAST
@given(FELIX)
def test_felixconfiguration(spec: dict[str, Any]) -> None:
    check(_res("FelixConfiguration", spec))


@FAST
@given(POLICY, st.sampled_from(["NetworkPolicy", "GlobalNetworkPolicy", "StagedNetworkPolicy"]))
def test_policies(spec: dict[str, Any], kind: str) -> None:
    check(_res(kind, spec, "default" if "Global" not in kind else None))
