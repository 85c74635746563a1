"""ClusterNetworkPolicy conformance: every case of cnp_cases.json through the policy model.

The cases are the kubernetes-sigs/network-policy-api conformance suite (Admin and Baseline
tiers, with Kubernetes NetworkPolicies for the integration scenarios), replayed subtest by
subtest with the policy state each ran against. Each case becomes the resources a datastore
would hold (Namespaces, WorkloadEndpoints as the CNI plugin writes them, the
ClusterNetworkPolicies and NetworkPolicies as written) and every probe is compared with
:class:`pycalico.felix.calc.PolicyInsight`'s verdict, as for the Kubernetes NetworkPolicy
cases. A second test runs cases through ``calicoctl policy matrix -o json`` (sqlite
datastore) and checks the stored ClusterNetworkPolicies validate with the API kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycalico.api import decode
from pycalico.felix.calc import PolicyInsight
from tests.conformance.test_policy_conformance import _check, _cli_matrix, k8s_resources

DATA = Path(__file__).parent / "data"
CNP = json.loads((DATA / "cnp_cases.json").read_text())
CASES = CNP["cases"]


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"][:90] for c in cases]


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_cnp_case(case: dict[str, Any]) -> None:
    insight = PolicyInsight(k8s_resources(case))
    peers = {
        f"{p['ns']}/{p['name']}": insight.resolve(f"{p['ns']}/{p['name']}") for p in case["pods"]
    }
    _check(insight, peers, case["probes"])


def test_every_case_policy_validates() -> None:
    """The upstream manifests are valid ClusterNetworkPolicies for ``calicoctl validate``."""
    seen = 0
    for case in CASES:
        for pol in case["policies"]:
            if pol["kind"] == "ClusterNetworkPolicy":
                decode(pol)
                seen += 1
    assert seen >= len(CASES)


# One Admin-tier, one Baseline-tier and the integration (Admin Pass -> NetworkPolicy) case.
CLI_CASES = [
    next(c for c in CASES if c["name"].startswith(prefix))
    for prefix in ("CNPAdminTierGress", "CNPBaselineTierEgressInlineCIDR", "CNPAdminTierIntegr")
]


@pytest.mark.parametrize("case", CLI_CASES, ids=_ids(CLI_CASES))
def test_cli_matrix_matches_cnp_case(case: dict[str, Any], tmp_path: Path) -> None:
    probes = case["probes"]
    ports = sorted({(p["port"], p["protocol"]) for p in probes})
    got = _cli_matrix(tmp_path, k8s_resources(case), ",".join(f"{n}/{pr}" for n, pr in ports))
    for p in probes:
        verdict = got[f"{p['from']} {p['to']} {p['port']}/{p['protocol']}"]
        assert (verdict == "allow") == p["expect"], p
