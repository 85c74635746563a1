"""Conformance: Calico's own accept/reject manifests against pycalico.api.

Data in ``data/manifests`` (provenance in ``data/README.md``). Every valid manifest must
decode; every invalid one must be rejected, and when the case's ``why`` or expected error
names a field of the manifest, some problem must mention that field (in its path, or for
cross-field rules in its reason). Cases of kinds
that are not registered (yet) are xfail(strict=False), decided only by the registry.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import pycalico.api  # registers every kind
from pycalico.api import ValidationFailed, decode, decode_all, load_documents, lookup

DATA = Path(__file__).parent / "data" / "manifests"


def _registered(doc: dict[str, Any]) -> bool:
    return lookup(str(doc.get("apiVersion")), str(doc.get("kind"))) is not None


def _param(case_id: str, value: Any, docs: list[dict[str, Any]]) -> Any:
    missing = sorted({str(d.get("kind")) for d in docs if not _registered(d)})
    marks = [
        pytest.mark.xfail(
            bool(missing), reason=f"kind not registered: {', '.join(missing)}", strict=False
        )
    ]
    return pytest.param(value, id=case_id, marks=marks)


def _cases(name: str) -> list[Any]:
    cases = json.loads((DATA / name).read_text())
    out = []
    for i, case in enumerate(cases):
        slug = re.sub(r"[^A-Za-z0-9]+", "-", case["why"]).strip("-")[:60]
        out.append(_param(f"{i:03d}-{case['kind']}-{slug}", case, [case["manifest"]]))
    return out


def _yaml_files() -> list[Any]:
    out = []
    for path in sorted((DATA / "valid").glob("*.yaml")):
        out.append(_param(path.name, path, load_documents(path.read_text(), str(path))))
    return out


def _keys(value: Any, out: set[str]) -> set[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in ("apiVersion", "kind"):
                out.add(str(k))
            _keys(v, out)
    elif isinstance(value, list):
        for v in value:
            _keys(v, out)
    return out


def _norm_key(key: str) -> str:
    if re.match(r"^not[A-Z]", key):
        key = key[3:]
    return key.lower().rstrip("s")


def named_fields(case: dict[str, Any]) -> set[str]:
    """Manifest field names that the case's description / expected error mentions.

    Words are compared without case, plural ``s`` or a ``not`` prefix (``NotPorts`` and
    ``ports`` both name ``notPorts``).
    """
    text = " ".join(
        str(t)
        for t in (
            case["why"],
            case["source"].get("expected_error_substring"),
            case["source"].get("expected_error"),
        )
        if t
    )
    words = {w.lower().rstrip("s") for w in re.findall(r"[A-Za-z][A-Za-z0-9]*", text)}
    return {k for k in _keys(case["manifest"], set()) if _norm_key(k) in words}


# Cases where we deliberately keep Calico's validator behaviour over the sample's label:
KNOWN_DIVERGENCES = {
    # Documentation placeholders (x.x.x.x/16) that Calico's own validator rejects as CIDRs.
    "bgpconfiguration_04.yaml": "doc placeholder CIDRs x.x.x.x/16, y.y.y.y/32",
}
# Cases whose rejection Calico reports at a different field than the description names.
OTHER_FIELD = {
    # A /128 pool is smaller than the IPv6 block size (122): rejected for spec.cidr.
    "should reject VXLANMode 'Always' for IPv6 pool": {"cidr"},
}


@pytest.mark.parametrize("path", _yaml_files())
def test_documented_manifest_is_accepted(path: Path) -> None:
    if path.name in KNOWN_DIVERGENCES:
        pytest.xfail(f"Calico rejects this too: {KNOWN_DIVERGENCES[path.name]}")
    resources = decode_all(path.read_text(), source=str(path))
    assert resources, f"{path.name} holds no resources"


@pytest.mark.parametrize("case", _cases("valid.json"))
def test_valid_case_is_accepted(case: dict[str, Any]) -> None:
    res = decode(case["manifest"])
    assert res.kind == case["kind"]
    assert res.metadata.name == case["manifest"]["metadata"]["name"]


@pytest.mark.parametrize("case", _cases("invalid.json"))
def test_invalid_case_is_rejected(case: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as info:
        decode(case["manifest"])
    problems = info.value.problems
    assert problems
    fields = OTHER_FIELD.get(case["why"]) or named_fields(case)
    if fields:
        # A cross-field rule is reported at one of its fields and names the other in its
        # reason, so a field counts as mentioned by a problem's path or its reason.
        said = " ".join(f"{p.path} {p.reason}".lower() for p in problems)
        assert any(f.lower() in said for f in fields), (
            f"no problem mentions {sorted(fields)}: {[str(p) for p in problems]}"
        )


def test_valid_json_round_trips_through_yaml() -> None:
    """Every accepted case re-decodes from its own encoding (codec symmetry)."""
    from pycalico.api import encode, to_yaml

    for case in json.loads((DATA / "valid.json").read_text()):
        if not _registered(case["manifest"]):
            continue
        res = decode(case["manifest"])
        again = decode_all(to_yaml(res))
        assert len(again) == 1, case["why"]
        assert encode(again[0]) == encode(res), case["why"]


def test_data_is_present() -> None:
    assert len(json.loads((DATA / "invalid.json").read_text())) > 0
    assert yaml is not None and pycalico.api.KINDS
