"""Property tests (hypothesis) of pycalico.selector.

Generated selectors come with an independent oracle (a Python predicate built from the same
random structure), so these check the grammar, precedence, whitespace/quoting rules and the
operator semantics, plus: canonical round trip, compiled == reference evaluation, soundness of
label restrictions, label prefixing and that arbitrary text only ever raises SelectorError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.selector import Selector, SelectorError, and_selectors, parse
from pycalico.selector.ast import NotNode, walk

Labels = Mapping[str, str]
Oracle = Callable[[Labels], bool]
Gen = tuple[str, Oracle]

LABEL_NAMES = ["a", "b", "app", "k8s.io/x-y_z", "in", "has", "all", "not", "contains", "global"]
VALUE_CHARS = "ab\"' {}(),!&|=é"

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ws = st.sampled_from(["", " ", "  ", "\t", " \t "])
ws1 = st.sampled_from([" ", "\t", "  ", " \t"])
inner_ws = st.sampled_from(["", " ", "\t ", "  "])  # between words of "starts with" etc.
labels_st = st.sampled_from(LABEL_NAMES)
values_st = st.text(alphabet=VALUE_CHARS, max_size=3).filter(lambda v: not ('"' in v and "'" in v))
label_maps = st.dictionaries(labels_st, st.text(alphabet="ab\"' é", max_size=2), max_size=5)


@st.composite
def quoted(draw: st.DrawFn) -> tuple[str, str]:
    value = draw(values_st)
    if '"' in value:
        q = "'"
    elif "'" in value:
        q = '"'
    else:
        q = draw(st.sampled_from(['"', "'"]))
    return value, q + value + q


def _value_op(op: str) -> Callable[[str, str], Oracle]:
    def make(label: str, value: str) -> Oracle:
        if op == "==":
            return lambda m: label in m and m[label] == value
        if op == "!=":
            return lambda m: label not in m or m[label] != value
        if op == "contains":
            return lambda m: label in m and value in m[label]
        if op == "starts":
            return lambda m: label in m and m[label].startswith(value)
        return lambda m: label in m and m[label].endswith(value)

    return make


@st.composite
def comparison(draw: st.DrawFn) -> Gen:
    label = draw(labels_st)
    kind = draw(st.sampled_from(["==", "!=", "contains", "starts", "ends", "in", "notin"]))
    if kind in ("==", "!="):
        value, lit = draw(quoted())
        return f"{label}{draw(ws)}{kind}{draw(ws)}{lit}", _value_op(kind)(label, value)
    if kind in ("contains", "starts", "ends"):
        value, lit = draw(quoted())
        word = kind
        if kind != "contains":
            word = kind + draw(inner_ws) + "with"
        return f"{label}{draw(ws1)}{word}{draw(ws)}{lit}", _value_op(kind)(label, value)
    items = draw(st.lists(quoted(), max_size=4))
    members = frozenset(v for v, _ in items)
    sep = f"{draw(ws)},{draw(ws)}"
    body = sep.join(lit for _, lit in items)
    if items and draw(st.booleans()):
        body += ","  # Calico accepts a trailing comma
    word = "in" if kind == "in" else "not" + draw(inner_ws) + "in"
    text = f"{label}{draw(ws1)}{word}{draw(ws)}{{{draw(ws)}{body}{draw(ws)}}}"
    if kind == "in":
        return text, lambda m: label in m and m[label] in members
    return text, lambda m: label not in m or m[label] not in members


@st.composite
def atom(draw: st.DrawFn) -> Gen:
    kind = draw(st.sampled_from(["cmp", "cmp", "cmp", "has", "all", "global"]))
    if kind == "cmp":
        return draw(comparison())
    if kind == "has":
        label = draw(labels_st)
        return f"has({draw(ws)}{label}{draw(ws)})", lambda m: label in m
    return f"{kind}({draw(ws)})", lambda m: True


@st.composite
def operation(draw: st.DrawFn, depth: int) -> Gen:
    nots = draw(st.integers(0, 3))
    if depth > 0 and draw(st.integers(0, 3)) == 0:
        inner, fn = draw(or_expr(depth - 1))
        text = f"({draw(ws)}{inner}{draw(ws)})"
    else:
        text, fn = draw(atom())
    prefix = "".join("!" + draw(ws) for _ in range(nots))
    if nots % 2:
        inner_fn = fn
        return prefix + text, lambda m: not inner_fn(m)
    return prefix + text, fn


@st.composite
def and_expr(draw: st.DrawFn, depth: int) -> Gen:
    parts = draw(st.lists(operation(depth), min_size=1, max_size=3))
    joiner = f"{draw(ws)}&&{draw(ws)}"
    fns = [fn for _, fn in parts]
    return joiner.join(t for t, _ in parts), lambda m: all(f(m) for f in fns)


@st.composite
def or_expr(draw: st.DrawFn, depth: int = 2) -> Gen:
    parts = draw(st.lists(and_expr(depth), min_size=1, max_size=3))
    joiner = f"{draw(ws)}||{draw(ws)}"
    fns = [fn for _, fn in parts]
    return joiner.join(t for t, _ in parts), lambda m: any(f(m) for f in fns)


@st.composite
def selector_text(draw: st.DrawFn) -> Gen:
    text, fn = draw(or_expr())
    return f"{draw(ws)}{text}{draw(ws)}", fn


def has_double_negation(sel: Selector) -> bool:
    return any(isinstance(n, NotNode) and isinstance(n.operand, NotNode) for n in walk(sel.root))


@PROPS
@given(selector_text(), st.lists(label_maps, min_size=1, max_size=6))
def test_generated_selectors_match_oracle(gen: Gen, maps: list[dict[str, str]]) -> None:
    text, oracle = gen
    sel = parse(text)
    for m in maps:
        expected = oracle(m)
        assert sel.evaluate(m) is expected, (text, str(sel), m)
        assert sel.root.evaluate(m) is expected


@PROPS
@given(selector_text(), st.lists(label_maps, min_size=1, max_size=6))
def test_canonical_round_trip(gen: Gen, maps: list[dict[str, str]]) -> None:
    sel = parse(gen[0])
    canonical = str(sel)
    again = parse(canonical)
    if not has_double_negation(sel):
        # "!(!x)" prints as "!!x" in Calico, which re-parses as "x" (see unit tests).
        assert str(again) == canonical
        assert again.unique_id() == sel.unique_id()
    assert str(parse(str(again))) == str(again)
    for m in maps:
        assert again.evaluate(m) is sel.evaluate(m), (gen[0], canonical, m)


@PROPS
@given(selector_text(), st.lists(label_maps, min_size=1, max_size=8))
def test_label_restrictions_are_sound(gen: Gen, maps: list[dict[str, str]]) -> None:
    sel = parse(gen[0])
    restrictions = sel.label_restrictions()
    required = sel.required_equalities()
    for m in maps:
        if not sel.evaluate(m):
            continue
        for name, r in restrictions.items():
            assert not r.impossible
            if r.must_be_present:
                assert name in m
            if r.must_be_absent:
                assert name not in m
            if r.values is not None:
                assert m[name] in r.values
        for name, values in required.items():
            assert name in m and (values is None or m[name] in values)


@settings(PROPS, max_examples=80)
@given(selector_text(), selector_text(), label_maps, st.sampled_from(["pcns.", "p/", "x"]))
def test_prefix_and_conjunction(gen1: Gen, gen2: Gen, m: dict[str, str], prefix: str) -> None:
    s1, s2 = parse(gen1[0]), parse(gen2[0])
    moved = {prefix + k: v for k, v in m.items()}
    assert s1.with_label_prefix(prefix).evaluate(moved) is s1.evaluate(m)
    both = and_selectors(s1, s2)
    assert both.evaluate(m) is (s1.evaluate(m) and s2.evaluate(m))
    if not (has_double_negation(s1) or has_double_negation(s2)):
        assert both == parse(f"({s1}) && ({s2})")


SELECTOR_ALPHABET = "ab/.-_ \t\n(){},!=&|'\"é"
FRAGMENTS = [
    "has(",
    "all(",
    "global(",
    ")",
    "in",
    "not",
    "contains",
    "starts",
    "ends",
    "with",
    "==",
    "!=",
    "&&",
    "||",
    "!",
    "{",
    "}",
    ",",
    "'x'",
    '"y"',
    "a",
    "b.c/d",
    " ",
]


def nested_text(opens: int, closes: int, with_or: bool) -> str:
    prefix = "!(has(a) || " if with_or else "!("
    return prefix * opens + "has(b)" + ")" * closes


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.text(alphabet=SELECTOR_ALPHABET, max_size=40),
        st.lists(st.sampled_from(FRAGMENTS), max_size=16).map("".join),
        st.lists(st.sampled_from(FRAGMENTS), max_size=16).map(" ".join),
        st.builds(nested_text, st.integers(0, 120), st.integers(0, 120), st.booleans()),
    )
)
def test_arbitrary_text_only_raises_selector_error(text: str) -> None:
    try:
        sel = parse(text)
    except SelectorError as err:
        assert 0 <= err.position <= len(text)
        return
    # Whatever parses has a stable canonical form and evaluates without error.
    again = parse(str(sel))
    assert str(parse(str(again))) == str(again)
    assert again.evaluate({}) is sel.evaluate({})
    assert sel.evaluate({"a": "x", "b.c/d": "y"}) in (True, False)
