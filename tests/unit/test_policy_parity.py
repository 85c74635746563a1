"""Calico 3.32 parity of policy semantics (issue 16, fixes 2-6), through the real model,
calc graph and policy insight, and through ``calicoctl`` where cheap.

Upstream sources each case was checked against (projectcalico/calico v3.32.0):
- tie-break: ``felix/calc/policy_sorter.go`` ``PolKVLess`` (one string
  ``name/namespace/kind``) and ``TierLess``; policy keys from
  ``libcalico-go/lib/backend/k8s/conversion/conversion.go`` (a Kubernetes NetworkPolicy keeps
  its own name, kind ``KubernetesNetworkPolicy``);
- ``pcns.``/``pcsa.`` stripping and the service-account label of any length:
  ``libcalico-go/lib/backend/syncersv1/updateprocessors/workloadendpointprocessor.go``;
- ``serviceAccountSelector`` ``all()``: ``globalnetworkpolicyprocessor.go`` (rewritten to
  ``has(projectcalico.org/serviceaccount)``) vs ``networkpolicyprocessor.go`` and
  ``rules.go`` (no rewrite);
- ``kubernetes.io/metadata.name``: set by the Kubernetes API server on every Namespace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pycalico.api import decode
from pycalico.ctl.main import cli
from pycalico.felix.calc import CalcGraph, PolicyInsight
from pycalico.model import Policy, PolicyID, convert
from tests.kit import (
    global_network_policy,
    k8s_network_policy,
    namespace,
    network_policy,
    service_account,
    workload_endpoint,
)

DENY_ALL = [{"action": "Deny"}]
ALLOW_ALL = [{"action": "Allow"}]


def wep(pod: str, ns: str, ip: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("labels", {"app": pod})
    return workload_endpoint(pod, namespace=ns, ip=ip, **kw)


BASE = [namespace("a"), wep("web", "a", "10.0.0.1"), wep("cli", "a", "10.0.0.2")]


def verdict(resources: list[dict[str, Any]], src: str = "a/cli", dst: str = "a/web") -> str:
    return PolicyInsight(resources).explain(src, dst, 80).verdict


# --- 2: tie-break of equal order -----------------------------------------------------------
def test_equal_order_prefix_names_evaluate_as_calico() -> None:
    """``web-allow`` sorts before ``web`` ("web-allow/a/NetworkPolicy" < "web/a/...")."""
    pols = [
        network_policy("web", namespace="a", order=100, selector="app == 'web'", ingress=DENY_ALL),
        network_policy(
            "web-allow", namespace="a", order=100, selector="app == 'web'", ingress=ALLOW_ALL
        ),
    ]
    ex = PolicyInsight([*BASE, *pols]).explain("a/cli", "a/web", 80)
    assert ex.verdict == "allow"
    assert ex.ingress.policy == "np/a/web-allow"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # '-' and '.' sort before '/': the longer name goes first.
        (PolicyID("np", "a", "default-deny-egress"), PolicyID("np", "a", "default-deny")),
        (PolicyID("gnp", "", "web.v2"), PolicyID("gnp", "", "web")),
        # Then namespace, then the v3 kind: "a//GlobalNetworkPolicy" < "a/x/NetworkPolicy".
        (PolicyID("gnp", "", "a"), PolicyID("np", "x", "a")),
        (PolicyID("knp", "a", "knp.default.web"), PolicyID("np", "a", "web")),
        # A Kubernetes policy sorts by its own name, not by pycalico's knp.default. prefix.
        (PolicyID("np", "a", "web"), PolicyID("knp", "a", "knp.default.zzz")),
    ],
)
def test_tiebreak_string(first: PolicyID, second: PolicyID) -> None:
    def pol(pid: PolicyID) -> Policy:
        return Policy(pid, "default", 5.0, "all()", frozenset({"Ingress"}))

    assert pol(first).sort_key() < pol(second).sort_key()
    assert Policy(first, "default", 1.0, "all()", frozenset()).sort_key() < pol(second).sort_key()


def test_k8s_policy_ties_with_calico_policy_by_its_own_name() -> None:
    """A k8s NetworkPolicy ``zzz`` and a Calico NetworkPolicy ``web`` at order 1000: Calico
    evaluates ``web`` first (``web/a/NetworkPolicy`` < ``zzz/a/KubernetesNetworkPolicy``)."""
    res = [
        *BASE,
        k8s_network_policy("zzz", namespace="a", ingress=[{}]),  # allow all ingress
        network_policy("web", namespace="a", order=1000, selector="all()", ingress=DENY_ALL),
    ]
    ex = PolicyInsight(res).explain("a/cli", "a/web", 80)
    assert (ex.verdict, ex.ingress.policy) == ("deny", "np/a/web")


def test_felix_and_insight_share_the_order() -> None:
    """The endpoint message Felix renders lists the policies in the same order."""
    pols = [
        network_policy("web", namespace="a", order=100, selector="all()", ingress=DENY_ALL),
        network_policy("web-allow", namespace="a", order=100, selector="all()", ingress=ALLOW_ALL),
    ]
    g = CalcGraph("node1")
    g.load([*BASE, *pols])
    eps = [m for m in g.flush() if type(m).__name__ == "EndpointUpdate"]
    assert eps
    for m in eps:
        assert [str(p) for p in m.tiers[0].ingress_policies] == ["np/a/web-allow", "np/a/web"]


# --- 3: namespace / service-account spoofing -------------------------------------------------
def test_workload_cannot_pose_as_another_namespace() -> None:
    res = [
        namespace("a", labels={"team": "untrusted"}),
        namespace("b", labels={"team": "trusted"}),
        wep("web", "b", "10.0.0.1"),
        wep("cli", "a", "10.0.0.2", labels={"app": "cli", "pcns.team": "trusted"}),
        wep("spy", "a", "10.0.0.3", labels={"app": "spy", "pcsa.role": "admin"}),
        global_network_policy(
            "trusted-only",
            selector="app == 'web'",
            ingress=[
                {"action": "Allow", "source": {"namespaceSelector": "team == 'trusted'"}},
                {"action": "Allow", "source": {"serviceAccounts": {"selector": "role == 'admin'"}}},
            ],
        ),
    ]
    assert verdict(res, "a/cli", "b/web") == "deny"
    assert verdict(res, "a/spy", "b/web") == "deny"
    ep = convert(res[3]).obj
    assert ep is not None and "pcns.team" not in dict(ep.labels)  # type: ignore[union-attr]


def _write(tmp_path: Path, docs: list[dict[str, Any]]) -> str:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def test_validate_warns_about_reserved_label_prefixes(tmp_path: Path) -> None:
    spoof = wep("cli", "a", "10.0.0.2", labels={"pcns.team": "x", "pcsa.role": "y", "ok": "1"})
    r = CliRunner().invoke(cli, ["validate", "-f", _write(tmp_path, [spoof])])
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 2
    assert "metadata.labels.pcns.team" in warnings[0] and "ignored" in warnings[0]
    assert "metadata.labels.pcsa.role" in warnings[1]
    assert "Successfully validated 1 resource(s)" in r.output
    clean = CliRunner().invoke(cli, ["validate", "-f", _write(tmp_path, [BASE[1]])])
    assert "Warning" not in clean.output


def test_apply_warns_and_writes(tmp_path: Path) -> None:
    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(tmp_path / "c.db")}
    spoof = wep("cli", "a", "10.0.0.2", labels={"pcns.team": "x"})
    r = CliRunner().invoke(cli, ["apply", "-f", _write(tmp_path, [spoof])], env=env)
    assert r.exit_code == 0, r.output
    assert "Warning: WorkloadEndpoint a/" in r.output and "metadata.labels.pcns.team" in r.output
    assert "Successfully applied 1" in r.output


# --- 4: long service-account names -----------------------------------------------------------
@pytest.mark.parametrize("length", [62, 63, 64, 253])
def test_service_account_names_match_any_length(length: int) -> None:
    sa = ("s" * (length - 1)) + "x"
    res = [
        *BASE[:2],
        wep("cli", "a", "10.0.0.2", service_account=sa),
        service_account(sa, "a"),
        global_network_policy(
            "by-sa",
            selector="app == 'web'",
            ingress=[{"action": "Allow", "source": {"serviceAccounts": {"names": [sa]}}}],
        ),
    ]
    assert verdict(res) == "allow"


# --- 5: serviceAccountSelector: all() ----------------------------------------------------------
def test_gnp_service_account_selector_all_needs_a_service_account() -> None:
    res = [
        *BASE[:2],
        wep("cli", "a", "10.0.0.2"),
        wep("svc", "a", "10.0.0.3", service_account="sa1"),
        service_account("sa1", "a"),
        global_network_policy(
            "sa-only", order=1, serviceAccountSelector="all()", ingress=ALLOW_ALL
        ),
        global_network_policy("rest", order=2000, selector="all()", ingress=DENY_ALL),
    ]
    ins = PolicyInsight(res)
    # web has no service account: sa-only does not apply, "rest" denies.
    assert ins.explain("a/svc", "a/web", 80).ingress.policy == "gnp/rest"
    assert ins.explain("a/web", "a/svc", 80).ingress.policy == "gnp/sa-only"
    pol = convert(res[5]).obj
    assert isinstance(pol, Policy)
    assert pol.selector == "has(projectcalico.org/serviceaccount)"


def test_np_and_rule_service_account_all_are_not_rewritten() -> None:
    """Upstream rewrites only the GlobalNetworkPolicy's own serviceAccountSelector."""
    np = network_policy("p", namespace="a", serviceAccountSelector="all()", ingress=ALLOW_ALL)
    pol = convert(np).obj
    assert isinstance(pol, Policy)
    assert "serviceaccount" not in pol.selector
    res = [
        *BASE,
        global_network_policy(
            "rule-sa",
            selector="app == 'web'",
            ingress=[{"action": "Allow", "source": {"serviceAccounts": {"selector": "all()"}}}],
        ),
    ]
    assert verdict(res) == "allow"  # cli has no service account, the rule still matches


# --- 6: kubernetes.io/metadata.name on namespaces ----------------------------------------------
def test_namespace_selector_by_metadata_name() -> None:
    res = [
        namespace("a"),
        namespace("b"),
        wep("web", "a", "10.0.0.1"),
        wep("cli", "b", "10.0.0.2"),
        wep("other", "a", "10.0.0.3"),
        k8s_network_policy(
            "from-b",
            namespace="a",
            pod_selector={"matchLabels": {"app": "web"}},
            ingress=[
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "b"}}}
                    ]
                }
            ],
        ),
        global_network_policy(
            "calico-ns",
            selector="app == 'other'",
            ingress=[
                {
                    "action": "Allow",
                    "source": {"namespaceSelector": "kubernetes.io/metadata.name == 'b'"},
                },
                {"action": "Deny"},
            ],
        ),
    ]
    ins = PolicyInsight(res)
    assert ins.explain("b/cli", "a/web", 80).verdict == "allow"
    assert ins.explain("a/other", "a/web", 80).verdict == "deny"
    assert ins.explain("b/cli", "a/other", 80).verdict == "allow"
    assert ins.explain("a/web", "a/other", 80).verdict == "deny"


def test_namespace_label_is_set_on_write_and_wins() -> None:
    ns = decode(namespace("team-a", labels={"kubernetes.io/metadata.name": "spoofed"}))
    assert ns.metadata.labels == {"kubernetes.io/metadata.name": "team-a"}


def test_calicoctl_explain_tiebreak_and_skipped_resource(tmp_path: Path) -> None:
    """Through ``calicoctl policy explain``: the tie-break decides, and a malformed stored
    policy is skipped with a warning instead of failing the command."""
    from pycalico.config import load_config
    from pycalico.datastore import open_datastore

    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(tmp_path / "c.db")}
    bad = global_network_policy("broken", ingress=[{"action": "Allow"}])
    bad["spec"]["ingress"][0]["destination"] = {"ports": "not-a-list"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        ds = open_datastore(load_config(None))
        try:
            for r in [
                *BASE,
                network_policy("web", namespace="a", order=100, ingress=DENY_ALL),
                network_policy("web-allow", namespace="a", order=100, ingress=ALLOW_ALL),
                bad,
            ]:
                ds.create(r)
        finally:
            ds.close()
    args = ["policy", "explain", "--from", "a/cli", "--to", "a/web", "--port", "80"]
    r = CliRunner().invoke(cli, args, env=env)
    assert r.exit_code == 0, r.output
    assert "ALLOW" in r.output and "np/a/web-allow" in r.output
    assert "Warning: skipped invalid resource" in r.output and "broken" in r.output


def test_gnp_selector_all_is_rewritten_with_the_service_account_selector() -> None:
    """Found by the differential test: upstream rewrites every ``all()`` of the text built
    so far, so ``selector: all()`` + ``serviceAccountSelector: '!has(role)'`` becomes
    ``(has(projectcalico.org/serviceaccount)) && !has(pcsa.role)``: an endpoint without a
    service account is not selected."""
    gnp = global_network_policy(
        "p", selector="all()", serviceAccountSelector="!has(role)", ingress=DENY_ALL
    )
    pol = convert(gnp).obj
    assert isinstance(pol, Policy)
    assert pol.selector == "(has(projectcalico.org/serviceaccount) && !has(pcsa.role))"
    assert verdict([*BASE, gnp]) == "allow"  # web has no service account: kns.a allows
