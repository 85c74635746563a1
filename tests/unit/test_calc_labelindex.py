"""LabelIndex: matches equal brute force under any update sequence; label changes are
incremental (only selectors referencing a changed label are re-evaluated)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.felix.calc.labelindex import LabelIndex, analyse
from pycalico.selector import parse

SELECTORS = [
    "all()",
    "a == 'x'",
    "a == 'y'",
    "a in {'x', 'y'}",
    "has(b)",
    "!has(a)",
    "a != 'x'",
    "a == 'x' && b == '1'",
    "a == 'x' || b == '1'",
    "!(a == 'x')",
    "b starts with '1'",
    "c not in {'q'}",
    "(a == 'x' && has(c)) && b != '2'",
]
LABELS = st.dictionaries(
    st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y", "1", "2", "q"]), max_size=3
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("sel"), st.integers(0, 5), st.sampled_from(SELECTORS)),
        st.tuples(st.just("unsel"), st.integers(0, 5), st.just("")),
        st.tuples(st.just("item"), st.integers(0, 6), LABELS),
        st.tuples(st.just("unitem"), st.integers(0, 6), st.just({})),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_matches_equal_brute_force_and_callbacks_consistent(ops: list[tuple]) -> None:
    events: set[tuple[int, int]] = set()

    def on_match(s: int, i: int) -> None:
        assert (s, i) not in events
        events.add((s, i))

    def on_unmatch(s: int, i: int) -> None:
        assert (s, i) in events
        events.remove((s, i))

    idx: LabelIndex[int, int] = LabelIndex(on_match, on_unmatch)
    sels: dict[int, str] = {}
    items: dict[int, dict[str, str]] = {}
    for op, n, arg in ops:
        if op == "sel":
            idx.update_selector(n, arg)
            sels[n] = arg
        elif op == "unsel":
            idx.remove_selector(n)
            sels.pop(n, None)
        elif op == "item":
            idx.update_item(n, arg)
            items[n] = dict(arg)
        else:
            idx.remove_item(n)
            items.pop(n, None)
        expected = {
            (s, i)
            for s, text in sels.items()
            for i, lab in items.items()
            if parse(text).evaluate(lab)
        }
        assert events == expected
        for s in sels:
            assert idx.matches(s) == {i for (s2, i) in expected if s2 == s}


def test_label_change_only_reevaluates_selectors_using_changed_label() -> None:
    idx: LabelIndex[int, str] = LabelIndex(lambda s, i: None, lambda s, i: None)
    for n in range(500):
        idx.update_selector(n, f"role == 'r{n}'")
    idx.update_selector(1000, "app == 'web'")
    idx.update_selector(1001, "has(app) && tier == 'front'")
    for e in range(100):
        idx.update_item(f"ep{e}", {"role": f"r{e}", "app": "db", "tier": "front"})
    before = idx.evaluations
    idx.update_item("ep7", {"role": "r7", "app": "web", "tier": "front"})
    # Only the two selectors referencing "app" are candidates.
    assert idx.evaluations - before == 2
    assert "ep7" in idx.matches(1000)
    assert idx.matches(7) == {"ep7"}


def test_new_item_only_meets_selectors_it_can_satisfy() -> None:
    idx: LabelIndex[int, str] = LabelIndex(lambda s, i: None, lambda s, i: None)
    for n in range(300):
        idx.update_selector(n, f"role == 'r{n}' && env != 'dev'")
    before = idx.evaluations
    idx.update_item("x", {"role": "r42", "env": "prod"})
    assert idx.evaluations - before == 1
    assert idx.selectors_matching("x") == {42}


def test_new_selector_only_meets_items_with_its_required_label() -> None:
    idx: LabelIndex[int, int] = LabelIndex(lambda s, i: None, lambda s, i: None)
    for i in range(1000):
        idx.update_item(i, {"k": str(i % 100)})
    before = idx.evaluations
    idx.update_selector(1, "k in {'3', '4'}")
    assert idx.evaluations - before == 20
    assert len(idx.matches(1)) == 20


def test_analyse_restriction_picks_most_selective_label() -> None:
    info = analyse(parse("has(a) && b == 'x' && c in {'1', '2'}"))
    assert info.restrict_label == "b"
    assert info.restrict_values == frozenset({"x"})
    assert info.labels == {"a", "b", "c"}
    assert analyse(parse("a == 'x' || b == 'y'")).restrict_label is None
