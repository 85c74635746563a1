"""calico-lab e2e: a staged deny never enforces, and ``policy explain`` reports it as pending.

One single-node lab, two pods (``st/cli`` -> ``st/web``). A StagedGlobalNetworkPolicy denies
ingress to ``web`` (order 5); then an enforced canary policy (order 10) denies port 81 to
``web`` and passes the rest to the profiles. Once the canary
is live (Felix has processed the staged policy, which came first), port 80 still flows
through the kernel, and ``calicoctl policy explain`` says: enforced allow, pending deny by
the staged policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Lab, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


def _gnp(kind: str, name: str, order: int, ingress: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"selector": "app == 'web'", "order": order, "ingress": ingress},
    }


def test_staged_deny_is_pending_only(lab_factory: Callable[[], Lab]) -> None:
    lab = lab_factory()
    lab.up("--nodes", "1")
    lab.run("pod", "add", "node1", "st/web", "--labels", "app=web", "--ports", "80/TCP,81/TCP")
    lab.run("pod", "add", "node1", "st/cli", "--labels", "app=cli", "--ports", "80/TCP")
    assert wait_for(lambda: lab.run("probe", "st/cli", "st/web", "80/TCP", check=False)
                    .returncode == 0, 20, 0.5), "no traffic before any policy"  # fmt: skip

    staged = _gnp("StagedGlobalNetworkPolicy", "staged-deny", 5, [{"action": "Deny"}])
    canary = _gnp(
        "GlobalNetworkPolicy",
        "canary",
        10,
        [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [81]}}, {"action": "Pass"}],
    )
    lab.run("apply", "-f", "-", input=yaml.safe_dump(staged))
    lab.run("apply", "-f", "-", input=yaml.safe_dump(canary))

    def canary_live() -> bool:
        return lab.run("probe", "st/cli", "st/web", "81/TCP", check=False).returncode != 0

    assert wait_for(canary_live, 30, 0.5), "the enforced canary never took effect"
    assert lab.run("probe", "st/cli", "st/web", "80/TCP", check=False).returncode == 0, (
        "a staged deny blocked live traffic"
    )

    out = lab.calicoctl(
        "policy", "explain", "--from", "st/cli", "--to", "st/web", "--port", "80", "-o", "json"
    ).stdout
    ex = json.loads(out)
    assert ex["verdict"] == "allow"
    assert ex["pending"]["verdict"] == "deny"
    assert ex["pending"]["ingress"]["policy"] == "sgnp/staged-deny"
    text = lab.calicoctl(
        "policy", "explain", "--from", "st/cli", "--to", "st/web", "--port", "80"
    ).stdout
    assert "ALLOW (pending: DENY)" in text and "sgnp/staged-deny" in text
