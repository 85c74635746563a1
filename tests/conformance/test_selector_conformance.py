"""Data-driven conformance tests of pycalico.selector against Calico's own test tables.

Runs every applicable section of ``data/selector_cases.json`` (see data/README.md for the
provenance).  The harness knows the semantics only through the public API; it never
special-cases individual entries.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pycalico.selector import Selector, SelectorError, parse
from pycalico.selector.ast import NotNode, walk

DATA = json.loads((Path(__file__).parent / "data" / "selector_cases.json").read_text())


def global_allowed(context: str) -> bool:
    """validator_context_rules: global() is accepted only in an EntityRule's namespaceSelector."""
    return "EntityRule" in context and "namespaceSelector" in context


def cases(section: str) -> list[dict[str, Any]]:
    value = DATA.get(section) or []
    assert isinstance(value, list)
    return value


def case_id(case: dict[str, Any]) -> str:
    text = case["selector"]
    return text if len(text) <= 60 else text[:57] + "..."


def as_labels(raw: Any) -> dict[str, str]:
    # The data encodes an empty label map as [] (Go's nil map serialised as a list).
    if not raw:
        return {}
    assert isinstance(raw, dict)
    return {str(k): str(v) for k, v in raw.items()}


def all_label_maps() -> list[dict[str, str]]:
    maps = [as_labels(c["labels"]) for c in cases("match_cases") + cases("derived_match_cases")]
    return maps or [{}]


def probe_maps(sel: Selector) -> Iterator[dict[str, str]]:
    """Label maps exercising ``sel``: each referenced label absent / set to a literal / other."""
    values: set[str] = {"", "zz-unrelated"}
    for token in str(sel).replace("'", '"').split('"')[1::2]:
        values.add(token)
        values.add(token + "x")
        values.add("x" + token)
    names = sorted(sel.labels())[:4]
    choices: list[list[str | None]] = [[None, *sorted(values)[:6]] for _ in names]
    for combo in itertools.islice(itertools.product(*choices), 400):
        yield {n: v for n, v in zip(names, combo, strict=True) if v is not None}
    yield from all_label_maps()


def assert_round_trips(sel: Selector) -> Selector:
    """``parse(str(sel))`` reproduces ``sel``; returns the re-parsed selector.

    Exception inherited from Calico: a NOT directly wrapping a NOT (only reachable through
    parentheses, e.g. ``!(!has(a))``) prints as ``!!has(a)``, which parses to ``has(a)``; the
    canonical string is then a fixpoint one round later.
    """
    again = parse(str(sel))
    if any(isinstance(n, NotNode) and isinstance(n.operand, NotNode) for n in walk(sel.root)):
        assert str(parse(str(again))) == str(again)
    else:
        assert str(again) == str(sel)
        assert again.unique_id() == sel.unique_id()
    return again


def assert_same_behaviour(a: Selector, b: Selector, extra: list[Mapping[str, str]]) -> None:
    for labels in itertools.chain(probe_maps(a), extra):
        assert a.evaluate(labels) == b.evaluate(labels), (str(a), str(b), labels)
        assert a.evaluate(labels) == a.root.evaluate(labels), (str(a), labels)


@pytest.mark.parametrize("case", cases("match_cases") + cases("derived_match_cases"), ids=case_id)
def test_match(case: dict[str, Any]) -> None:
    labels = as_labels(case["labels"])
    sel = parse(case["selector"])
    assert sel.evaluate(labels) is case["match"]
    # Calico re-tests every selector after canonicalisation.
    canonical = assert_round_trips(sel)
    assert canonical.evaluate(labels) is case["match"]


@pytest.mark.parametrize(
    "case", cases("invalid_selectors") + cases("derived_invalid_selectors"), ids=case_id
)
def test_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(SelectorError) as info:
        parse(case["selector"])
    err = info.value
    assert isinstance(err, ValueError)
    assert 0 <= err.position <= len(case["selector"])
    assert err.selector == case["selector"]


@pytest.mark.parametrize("case", cases("valid_selectors"), ids=case_id)
def test_valid(case: dict[str, Any]) -> None:
    sel = parse(case["selector"])
    again = assert_round_trips(sel)
    assert_same_behaviour(sel, again, [])


@pytest.mark.parametrize("case", cases("canonical_cases"), ids=case_id)
def test_canonical(case: dict[str, Any]) -> None:
    sel = parse(case["selector"])
    assert str(sel) == case["canonical"]
    if "unique_id" in case:
        assert sel.unique_id() == case["unique_id"]
    again = parse(case["canonical"])
    assert str(again) == case["canonical"]
    assert again == sel
    assert again.unique_id() == sel.unique_id()
    assert_same_behaviour(sel, again, [])


@pytest.mark.parametrize("case", cases("visitor_canonical_cases"), ids=case_id)
def test_prefix_visitor(case: dict[str, Any]) -> None:
    sel = parse(case["selector"])
    prefixed = sel.with_label_prefix(case["prefix"])
    assert str(prefixed) == case["canonical_after_prefix_visitor"]
    if "canonical_derived" in case:
        assert str(sel) == case["canonical_derived"]
    # The prefixed selector re-parses to itself and sees labels only under the prefix.
    assert_round_trips(prefixed)
    prefix = case["prefix"]
    assert all(name.startswith(prefix) for name in prefixed.labels())
    for labels in probe_maps(sel):
        moved = {prefix + k: v for k, v in labels.items()}
        assert prefixed.evaluate(moved) == sel.evaluate(labels), labels


@pytest.mark.parametrize("case", cases("validator_cases"), ids=case_id)
def test_validator_context(case: dict[str, Any]) -> None:
    allow_global = global_allowed(str(case.get("context", "")))
    try:
        sel = parse(case["selector"])
        ok = allow_global or not sel.uses_global()
    except SelectorError:
        ok = False
    assert ok is case["valid"]


def test_data_present() -> None:
    assert cases("match_cases"), "selector_cases.json has no match_cases"
    assert cases("invalid_selectors")
    assert cases("canonical_cases")
