"""Codec: multi-document YAML, JSON, Lists, unknown fields, error paths, encode round trips."""

from __future__ import annotations

import json

import pytest

from pycalico.api import (
    GlobalNetworkSet,
    K8sNetworkPolicy,
    NetworkPolicy,
    ValidationFailed,
    decode,
    decode_all,
    encode,
    load_documents,
    resolve_kind,
    to_json,
    to_yaml,
)
from pycalico.api.codec import loc_to_path

GNS = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: {name}
  labels: {{role: db}}
spec:
  nets: [10.0.0.0/8]
"""


def test_multi_document_yaml_skips_empty_documents() -> None:
    text = "---\n" + GNS.format(name="a") + "---\n---\n" + GNS.format(name="b")
    res = decode_all(text)
    assert [r.metadata.name for r in res] == ["a", "b"]
    assert all(isinstance(r, GlobalNetworkSet) for r in res)


def test_json_object_array_and_lists() -> None:
    one = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Tier",
        "metadata": {"name": "t1"},
        "spec": {"order": 10},
    }
    assert len(load_documents(json.dumps(one))) == 1
    assert len(load_documents(json.dumps([one, one]))) == 2
    listed = {"apiVersion": "v1", "kind": "List", "items": [one, {**one, "kind": "Tier"}]}
    assert len(load_documents(json.dumps(listed))) == 2
    tier_list = {"apiVersion": "projectcalico.org/v3", "kind": "TierList", "items": [one]}
    nested = {"kind": "List", "items": [tier_list, one]}
    assert [d["metadata"]["name"] for d in load_documents(json.dumps(nested))] == ["t1", "t1"]


def test_yaml_list_kind() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n" + "".join(
        "- " + GNS.format(name=n).replace("\n", "\n  ").rstrip() + "\n" for n in ("x", "y")
    )
    assert [r.metadata.name for r in decode_all(text)] == ["x", "y"]


def test_yaml_syntax_error_is_one_problem_naming_the_source() -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_all("kind: [unclosed\n", source="bad.yaml")
    (p,) = info.value.problems
    assert p.name == "bad.yaml" and "parse" in p.reason


def test_unknown_fields_are_rejected_with_their_path() -> None:
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "colour": "red"},
        "spec": {"ingress": [{"action": "Allow", "destination": {"portz": [1]}}], "x": 1},
    }
    with pytest.raises(ValidationFailed) as info:
        decode(doc)
    found = {(p.path, p.reason) for p in info.value.problems}
    assert found == {
        ("metadata.colour", "unknown field"),
        ("spec.ingress[0].destination.portz", "unknown field"),
        ("spec.x", "unknown field"),
    }
    assert all(p.kind == "NetworkPolicy" and p.name == "p" for p in info.value.problems)


def test_unknown_kind_and_api_version() -> None:
    with pytest.raises(ValidationFailed) as info:
        decode({"apiVersion": "projectcalico.org/v3", "kind": "Frobnicator", "metadata": {}})
    assert info.value.problems[0].path == "kind"
    with pytest.raises(ValidationFailed) as info:
        decode({"apiVersion": "projectcalico.org/v2", "kind": "Tier", "metadata": {"name": "a"}})
    assert info.value.problems[0].path == "apiVersion"
    with pytest.raises(ValidationFailed) as info:
        decode({"kind": "Tier", "metadata": {"name": "a"}})
    assert info.value.problems[0].path == "apiVersion"


def test_decode_all_reports_every_problem_of_every_document() -> None:
    text = (
        GNS.format(name="Bad_Name")
        + "---\n"
        + GNS.format(name="ok").replace("10.0.0.0/8", "10.0.0.0/33")
    )
    with pytest.raises(ValidationFailed) as info:
        decode_all(text)
    got = {(p.name, p.path) for p in info.value.problems}
    assert got == {("Bad_Name", "metadata.name"), ("ok", "spec.nets[0]")}


def test_loc_to_path_drops_pydantic_tags() -> None:
    loc = ("spec", "ingress", 0, "destination", "ports", 1, "function-after[x(), int]", "int")
    assert loc_to_path(loc) == "spec.ingress[0].destination.ports[1]"


def test_encode_shape_omits_none_and_applies_defaults() -> None:
    res = decode(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p"},
            "spec": {"selector": "app == 'x'", "egress": [{"action": "Deny"}]},
        }
    )
    out = encode(res)
    assert list(out) == ["apiVersion", "kind", "metadata", "spec"]
    assert out["metadata"] == {"name": "p", "namespace": "default"}
    assert out["spec"] == {
        "tier": "default",
        "selector": "app == 'x'",
        "types": ["Egress"],
        "egress": [{"action": "Deny"}],
    }


def test_round_trip_yaml_and_json() -> None:
    res = decode_all(GNS.format(name="rt"))[0]
    assert encode(decode_all(to_yaml(res))[0]) == encode(res)
    assert encode(decode_all(to_json(res))[0]) == encode(res)
    both = decode_all(to_yaml([res, res]))
    assert len(both) == 2


def test_k8s_and_calico_network_policy_share_the_kind_name() -> None:
    k8s = decode(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-db"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{}]}],
            },
        }
    )
    assert isinstance(k8s, K8sNetworkPolicy)
    assert encode(k8s)["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    assert resolve_kind("np") == "NetworkPolicy"
    assert resolve_kind("networkpolicies") == "NetworkPolicy"
    cal = decode(
        {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "a"}}
    )
    assert isinstance(cal, NetworkPolicy)


@pytest.mark.parametrize(
    ("alias", "kind"),
    [
        ("policy", "NetworkPolicy"),
        ("pols", "NetworkPolicy"),
        ("gnp", "GlobalNetworkPolicy"),
        ("hep", "HostEndpoint"),
        ("weps", "WorkloadEndpoint"),
        ("pro", "Profile"),
        ("tiers", "Tier"),
        ("netsets", "NetworkSet"),
        ("GlobalNetworkSets", "GlobalNetworkSet"),
        ("sa", "ServiceAccount"),
    ],
)
def test_aliases(alias: str, kind: str) -> None:
    assert resolve_kind(alias) == kind


WEP_DOC = """\
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-my--nginx--b1337a-eth0
  namespace: default
  labels:
    app: frontend
    version: 2
spec:
  node: node1
  orchestrator: k8s
  endpoint: eth0
  containerID: 1337495556942031415926535
  pod: my-nginx-b1337a
  interfaceName: cali0ef24ba
  mac: 12:34:56:78:90:12
  ipNetworks:
  - 192.168.0.0/32
  profiles:
  - profile1
  ports:
  - name: some-port
    port: 1234
    protocol: TCP
"""


def test_yaml_scalars_meant_as_text_stay_text() -> None:
    (wep,) = decode_all(WEP_DOC)
    assert wep.spec.containerID == "1337495556942031415926535"
    assert wep.spec.mac == "12:34:56:78:90:12"  # no YAML 1.1 base-60 integer
    assert wep.metadata.labels == {"app": "frontend", "version": "2"}


def test_empty_yaml_values_mean_unset() -> None:
    text = "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n  name: p\nspec:\n"
    (res,) = decode_all(text)
    assert encode(res) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": "p"},
        "spec": {},
    }
    gnp = "kind: GlobalNetworkPolicy\napiVersion: projectcalico.org/v3\nmetadata: {name: g}\n"
    assert decode_all(gnp + "spec:\n  ingress:\n  selector:\n")[0].spec.types == ["Ingress"]


def test_timestamps_stay_strings() -> None:
    text = GNS.format(name="t").replace(
        "  name: t\n", "  name: t\n  creationTimestamp: 2024-05-01T10:00:00Z\n"
    )
    (res,) = decode_all(text)
    assert res.metadata.creationTimestamp == "2024-05-01T10:00:00Z"
