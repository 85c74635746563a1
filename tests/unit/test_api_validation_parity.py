"""Validation rules Calico 3.32 enforces (issue 16): ``notProtocol`` agrees with ``ipVersion``
like ``protocol`` does, and metadata annotation/label limits as in Kubernetes.

Upstream: ``libcalico-go/lib/validator/v3/validator.go`` (v3.32.0) ``validateRule`` (ICMP /
ICMPv6 as protocol OR notProtocol need ipVersion 4 / 6 when one is set) and
``validateObjectMetaAnnotations`` (keys are qualified names checked lower-cased; keys +
values at most ``256 * (1 << 10)`` bytes, Kubernetes' TotalAnnotationSizeLimitB);
``validateObjectMetaLabels`` (qualified names, label values <= 63 characters).
Each rejected manifest: ``calicoctl validate`` exits 1 naming the field, ``apply`` writes
nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pycalico.api import ValidationFailed, decode
from pycalico.ctl.main import cli
from tests.kit import global_network_policy, namespace, network_policy, resource


def gnp_rule(**rule: Any) -> dict[str, Any]:
    return global_network_policy("p", ingress=[{"action": "Allow", **rule}])


def problems(doc: dict[str, Any]) -> list[str]:
    try:
        decode(doc)
    except ValidationFailed as e:
        return [f"{p.path}: {p.reason}" for p in e.problems]
    return []


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ({"notProtocol": "ICMP", "ipVersion": 6}, "notProtocol ICMP requires ipVersion 4"),
        ({"notProtocol": "ICMPv6", "ipVersion": 4}, "notProtocol ICMPv6 requires ipVersion 6"),
        ({"notProtocol": 1, "ipVersion": 6}, "notProtocol ICMP requires ipVersion 4"),
        ({"protocol": "ICMP", "ipVersion": 6}, "protocol ICMP requires ipVersion 4"),
        ({"protocol": "ICMPv6", "ipVersion": 4}, "protocol ICMPv6 requires ipVersion 6"),
        (
            {"protocol": "ICMPv6", "notProtocol": "ICMP", "ipVersion": 6},
            "notProtocol ICMP requires ipVersion 4",
        ),
    ],
)
def test_icmp_protocols_must_agree_with_ip_version(rule: dict[str, Any], reason: str) -> None:
    got = problems(gnp_rule(**rule))
    assert any(p.startswith("spec.ingress[0].ipVersion: " + reason) for p in got), got


@pytest.mark.parametrize(
    "rule",
    [
        {"notProtocol": "ICMP", "ipVersion": 4},
        {"notProtocol": "ICMPv6", "ipVersion": 6},
        {"notProtocol": "ICMP"},  # no ipVersion: nothing to disagree with
        {"notProtocol": "TCP", "ipVersion": 6},
        {"protocol": "ICMP", "icmp": {"type": 8}, "ipVersion": 4},
    ],
)
def test_agreeing_rules_are_accepted(rule: dict[str, Any]) -> None:
    assert problems(gnp_rule(**rule)) == []


LIMIT = 256 * 1024


def with_annotations(annotations: dict[str, str]) -> dict[str, Any]:
    return resource("Namespace", "a", api_version="v1", annotations=annotations)


def test_annotations_total_size_limit() -> None:
    key = "k"
    at_limit = {key: "x" * (LIMIT - len(key))}
    assert problems(with_annotations(at_limit)) == []
    over = {key: "x" * (LIMIT - len(key) + 1)}
    assert problems(with_annotations(over)) == [
        "metadata.annotations: total size of annotations is too large by 1 bytes "
        f"({LIMIT + 1} > {LIMIT}: keys and values count)"
    ]
    # Keys count too, and sizes are bytes (UTF-8), as Kubernetes counts them.
    many = {f"k{i}": "x" * (LIMIT // 4) for i in range(4)}
    assert problems(with_annotations(many))
    utf8 = {key: "é" * ((LIMIT // 2) - 1) + "x"}
    assert problems(with_annotations(utf8)) == []
    assert problems(with_annotations({key: "é" * (LIMIT // 2)}))


def test_annotation_limits_apply_to_every_kind_and_rule_metadata() -> None:
    big = {"k": "x" * LIMIT}
    pol = network_policy("p", ingress=[{"action": "Allow", "metadata": {"annotations": big}}])
    assert any(p.startswith("spec.ingress[0].metadata.annotations:") for p in problems(pol))
    gnp = global_network_policy("p")
    gnp["metadata"]["annotations"] = big
    assert any(p.startswith("metadata.annotations:") for p in problems(gnp))


@pytest.mark.parametrize(
    ("labels", "path", "why"),
    [
        ({"a" * 64: "v"}, "metadata.labels", "name part must be no more than 63 characters"),
        ({"a": "v" * 64}, "metadata.labels", "must be no more than 63 characters"),
        ({"-a": "v"}, "metadata.labels", "must start and end with an alphanumeric"),
        ({"a": "v-"}, "metadata.labels", "must be empty or consist of"),
        ({"Example.com/a": "v"}, "metadata.labels", "must be a lower-case DNS subdomain"),
        ({("p" * 254) + "/a": "v"}, "metadata.labels", "invalid label key prefix"),
    ],
)
def test_label_limits(labels: dict[str, str], path: str, why: str) -> None:
    got = problems(namespace("a", labels=labels))
    assert len(got) == 1 and got[0].startswith(path + ": ") and why in got[0], got


def test_label_limits_accept_the_maximum() -> None:
    labels = {("p" * 63) + "." + ("q" * 63) + "/" + ("a" * 63): "v" * 63}
    assert problems(namespace("a", labels=labels)) == []


def test_calicoctl_rejects_and_writes_nothing(tmp_path: Path) -> None:
    bad = [
        gnp_rule(notProtocol="ICMPv6", ipVersion=4),
        with_annotations({"k": "x" * LIMIT}),
    ]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all(bad))
    r = CliRunner().invoke(cli, ["validate", "-f", str(path)])
    assert r.exit_code == 1
    assert "GlobalNetworkPolicy p: spec.ingress[0].ipVersion: notProtocol ICMPv6" in r.output
    assert "Namespace a: metadata.annotations: total size of annotations" in r.output
    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(tmp_path / "c.db")}
    r = CliRunner().invoke(cli, ["apply", "-f", str(path)], env=env)
    assert r.exit_code == 1 and "nothing was written" in r.output
    got = CliRunner().invoke(cli, ["get", "globalnetworkpolicies", "-o", "yaml"], env=env)
    assert "name: p" not in got.output
