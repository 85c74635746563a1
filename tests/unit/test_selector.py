"""Unit tests of pycalico.selector: tokenizer rules, grammar, canonical form and the API."""

from __future__ import annotations

import pickle
from types import MappingProxyType

import pytest

from pycalico.errors import CalicoError
from pycalico.selector import (
    MAX_LABEL_LENGTH,
    Selector,
    SelectorError,
    and_selectors,
    parse,
    parse_cache_info,
    validate,
)
from pycalico.selector import tokenizer as tk
from pycalico.selector.parser import MAX_NESTING


def canon(text: str) -> str:
    return str(parse(text))


# --- evaluation semantics -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "present_match", "present_other", "absent"),
    [
        ('a == "x"', True, False, False),
        ('a != "x"', False, True, True),
        ('a contains "x"', True, False, False),
        ('a starts with "x"', True, False, False),
        ('a ends with "x"', True, False, False),
        ('a in {"x", "y"}', True, False, False),
        ('a not in {"x", "y"}', False, True, True),
        ("has(a)", True, True, False),
        ("!has(a)", False, False, True),
        ("all()", True, True, True),
        ("global()", True, True, True),
    ],
)
def test_operator_semantics(
    text: str, present_match: bool, present_other: bool, absent: bool
) -> None:
    sel = parse(text)
    for labels, expected in (
        ({"a": "x", "b": "x"}, present_match),
        ({"a": "other", "b": "x"}, present_other),
        ({"b": "x"}, absent),
    ):
        assert sel.evaluate(labels) is expected, labels
        assert sel.root.evaluate(labels) is expected, labels


def test_substring_operators() -> None:
    assert parse("a contains 'ell'").evaluate({"a": "hello"})
    assert parse("a starts with 'he'").evaluate({"a": "hello"})
    assert not parse("a starts with 'lo'").evaluate({"a": "hello"})
    assert parse("a ends with 'lo'").evaluate({"a": "hello"})
    assert not parse("a ends with 'he'").evaluate({"a": "hello"})
    # The empty string is contained in any present value, but absent labels never match.
    assert parse("a contains ''").evaluate({"a": ""})
    assert not parse("a contains ''").evaluate({})


def test_values_are_case_sensitive_and_exact() -> None:
    assert not parse("a == 'X'").evaluate({"a": "x"})
    assert parse("a == 'é☃'").evaluate({"a": "é☃"})
    assert parse('a == ""').evaluate({"a": ""})
    assert not parse('a == ""').evaluate({})


def test_precedence_and_negation() -> None:
    sel = parse("a == 'x' || b == 'y' && c == 'z'")
    assert str(sel) == '(a == "x" || (b == "y" && c == "z"))'
    assert sel.evaluate({"a": "x"})
    assert not sel.evaluate({"b": "y"})
    assert sel.evaluate({"b": "y", "c": "z"})
    # "!" binds to one operation only.
    assert not parse("!a == 'x' && b == 'y'").evaluate({"a": "x", "b": "y"})
    assert parse("!a == 'x' && b == 'y'").evaluate({"b": "y"})


def test_works_with_any_mapping() -> None:
    labels = MappingProxyType({"app": "web", "tier": "b"})
    assert parse('app == "web" && tier in {"a", "b"}').evaluate(labels)


# --- canonical form -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "all()"),
        (" \t ", "all()"),
        ("( ( all( ) ) )", "all()"),
        ('a=="b"', 'a == "b"'),
        ("a=='b'", 'a == "b"'),
        ("a == '\"'", "a == '\"'"),
        ("a startswith 'x'", 'a starts with "x"'),
        ("a starts \t with 'x'", 'a starts with "x"'),
        ("a endswith 'x'", 'a ends with "x"'),
        ("a notin {'x'}", 'a not in {"x"}'),
        ("a in {'b', 'a', 'b'}", 'a in {"a", "b"}'),
        ("a in {'\"', \"'\", 'c'}", 'a in {\'"\', "\'", "c"}'),
        ("a in {}", "a in {}"),
        ("a in {'x',}", 'a in {"x"}'),
        ("a in{'x'}", 'a in {"x"}'),
        ("!!has(a)", "has(a)"),
        ("!!!has(a)", "!has(a)"),
        ("! ! !has( a )", "!has(a)"),
        ("!(a == 'x')", '!a == "x"'),
        ("a == 'x' && (b == 'y' && c == 'z')", '(a == "x" && (b == "y" && c == "z"))'),
        ("(a == 'x' && b == 'y') && c == 'z'", '((a == "x" && b == "y") && c == "z")'),
        ("!(has(b) || !has(a))", "!(has(b) || !has(a))"),
        ("all == 'x'", 'all == "x"'),
        ("has == 'x'", 'has == "x"'),
        ("global == 'x'", 'global == "x"'),
        ("not in {'a'}", 'not in {"a"}'),
        ("in in {'a'}", 'in in {"a"}'),
        ("contains contains 'contains'", 'contains contains "contains"'),
        ("a!='b'&&c=='d'||e=='f'", '((a != "b" && c == "d") || e == "f")'),
    ],
)
def test_canonical(text: str, expected: str) -> None:
    assert canon(text) == expected
    assert canon(expected) == expected


def test_empty_sets() -> None:
    assert not parse("a in {}").evaluate({"a": ""})
    assert parse("a not in {}").evaluate({"a": "x"})
    assert parse("a not in {}").evaluate({})


# --- lexical rules and errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("a = 'b'", 2),  # lone =
        ("a == 'b' & c == 'd'", 9),  # lone &
        ("a == 'b' | c == 'd'", 9),  # lone |
        ("a == 'b", 5),  # unterminated string
        ("a == \"b'", 5),
        ("a b", 2),  # label followed by a non-operator
        ("a inx {'a'}", 2),  # operator words need a word boundary
        ("a startswithx 'a'", 2),
        ("a starts 'a'", 2),
        ("a", 1),  # unexpected end
        ("a ==", 4),
        ("a == b", 5),  # value must be quoted
        ("'b' == a", 0),
        ("a in 'x'", 5),
        ("a in {'x' 'y'}", 10),
        ("a in {,}", 6),
        ("a in {'x'", 9),
        ("()", 1),
        ("(a == 'x'", 9),
        ("a == 'x')", 8),
        ("has()", 4),
        ("has( a", 6),
        ("has (a)", 4),
        ("all(", 4),
        ("all ()", 4),
        ("global(x)", 7),
        ("a == 'x' &&", 11),
        ("!", 1),
        ("a == 'x'\n", 8),  # whitespace is space/tab only
        ("a == 'x' && %", 12),
        ("a == 'x' ||| b == 'y'", 11),
    ],
)
def test_errors_carry_position(text: str, position: int) -> None:
    with pytest.raises(SelectorError) as info:
        parse(text)
    err = info.value
    assert isinstance(err, CalicoError)
    assert isinstance(err, ValueError)
    assert err.selector == text
    assert err.position == position, err
    assert f"position {position}" in str(err)


def test_label_length_limit() -> None:
    ok = "a" * MAX_LABEL_LENGTH
    assert parse(f"{ok} == 'x'").evaluate({ok: "x"})
    assert parse(f"has({ok})").evaluate({ok: ""})
    for text in (f"{ok}b == 'x'", f"has({ok}b)"):
        with pytest.raises(SelectorError, match="too long"):
            parse(text)


def test_label_characters() -> None:
    sel = parse("calico/k8s_NS-.1/role == 'x' && has(projectcalico.org/namespace)")
    assert sel.labels() == {"calico/k8s_NS-.1/role", "projectcalico.org/namespace"}
    with pytest.raises(SelectorError):
        parse("a:b == 'x'")


def test_tabs_are_whitespace() -> None:
    assert canon("\ta\t==\t'x'\t&&\thas(\tb\t)") == '(a == "x" && has(b))'


def test_non_string_input() -> None:
    with pytest.raises(SelectorError):
        parse(None)  # type: ignore[arg-type]
    with pytest.raises(SelectorError):
        validate(["a"])  # type: ignore[arg-type]


def test_nesting_limit() -> None:
    inner = "a == 'x'"
    # Redundant parentheses: deep text, shallow tree.
    assert str(parse("(" * MAX_NESTING + inner + ")" * MAX_NESTING)) == 'a == "x"'
    too_deep = "(" * (MAX_NESTING + 1) + inner + ")" * (MAX_NESTING + 1)
    with pytest.raises(SelectorError, match="nested"):
        parse(too_deep)
    # Each level of "!(has(b) || ...)" adds a NOT and an OR node.
    levels = (MAX_NESTING - 1) // 2
    deep = "!(has(b) || " * levels + inner + ")" * levels
    sel = parse(deep)
    odd = levels % 2 == 1
    assert sel.evaluate({"a": "x"}) is not odd
    assert sel.evaluate({"a": "x"}) is sel.root.evaluate({"a": "x"})
    assert sel.evaluate({"a": "x", "b": ""}) is False
    assert parse(str(sel)) == sel  # the canonical form stays within the limits
    assert pickle.loads(pickle.dumps(sel)) == sel
    assert sel.labels() == {"a", "b"}
    assert str(sel.with_label_prefix("p.")).count("p.a") == 1
    # Few parentheses but a tall tree (OR, AND and NOT per level) is rejected too.
    tall = "!(x == 'a' || y == 'b' && " * 40 + "has(z)" + ")" * 40
    with pytest.raises(SelectorError, match="nested"):
        parse(tall)


def test_double_negation_through_parentheses_matches_calico() -> None:
    # Calico's parser collapses "!!" by parity, but "!(!x)" nests two NOT nodes and prints as
    # "!!x", which re-parses to plain "x": canonical strings are then a fixpoint one round later.
    sel = parse("!(!has(a))")
    assert str(sel) == "!!has(a)"
    again = parse(str(sel))
    assert str(again) == "has(a)"
    assert str(parse(str(again))) == "has(a)"
    for labels in ({}, {"a": ""}):
        assert sel.evaluate(labels) is again.evaluate(labels) is ("a" in labels)


def test_long_chains_compile() -> None:
    text = " && ".join(f"l{i} != 'v'" for i in range(3000))
    sel = parse(text)
    assert sel.evaluate({})
    assert not sel.evaluate({"l2999": "v"})


def test_large_trees_compile_in_pieces() -> None:
    groups = [f"(g{i} == 'v' && !has(h{i % 7}) && k{i} in {{'1', '2'}})" for i in range(300)]
    sel = parse(" || ".join(groups) + " || !(z starts with 'q' || z ends with 'r')")
    maps: list[dict[str, str]] = [
        {},
        {"z": "qr"},
        {"z": "x"},
        {"g299": "v", "k299": "2"},
        {"g299": "v", "k299": "2", "h5": "", "z": "q"},
        {"g150": "v", "k150": "1", "z": "r"},
        {"g150": "v", "k150": "3", "z": "r"},
    ]
    results = [sel.evaluate(m) for m in maps]
    assert results == [sel.root.evaluate(m) for m in maps]
    assert results == [True, False, True, True, False, True, False]


# --- API ------------------------------------------------------------------------------------


def test_unique_id() -> None:
    assert parse("").unique_id() == "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
    assert parse("all()").unique_id() == parse(" ( all() ) ").unique_id()
    assert parse("a == 'x'").unique_id() != parse("a == 'y'").unique_id()
    uid = parse("has(a)").unique_id()
    assert uid.startswith("s:") and len(uid) == 40 and "=" not in uid


def test_selector_is_immutable_value() -> None:
    a = parse("a == 'x' && b == 'y'")
    b = parse('a=="x"&&b=="y"')
    assert a == b and hash(a) == hash(b)
    assert len({a, b, parse("has(a)")}) == 2
    assert a != "a == 'x'"
    with pytest.raises(AttributeError):
        a.evaluate = lambda labels: True  # type: ignore[method-assign]
    with pytest.raises(AttributeError):
        del a.evaluate
    assert repr(a) == 'Selector(\'(a == "x" && b == "y")\')'


def test_pickle_round_trip() -> None:
    sel = parse("a in {'x', 'y'} || !has(b)")
    copy = pickle.loads(pickle.dumps(sel))
    assert copy == sel
    assert copy.evaluate({"b": "1"}) is False
    assert copy.evaluate({"a": "y", "b": "1"}) is True
    quirky = parse("!(!has(a)) && b in {'x'}")
    assert pickle.loads(pickle.dumps(quirky)) == quirky


def test_parse_is_cached() -> None:
    text = "cache-me == 'yes'"
    first = parse(text)
    hits = parse_cache_info().hits
    assert parse(text) is first
    assert parse_cache_info().hits == hits + 1


def test_is_all_and_uses_global() -> None:
    assert parse("").is_all()
    assert parse("( all() )").is_all()
    assert not parse("all() && all()").is_all()
    assert not parse("global()").is_all()
    assert parse("global()").uses_global()
    assert parse("has(a) || !(b == 'x' && global())").uses_global()
    assert not parse("global == 'x'").uses_global()
    assert not parse("all()").uses_global()


def test_labels() -> None:
    sel = parse("a == 'x' || (!has(b) && c in {'1'}) || d not in {} || e contains 'q'")
    assert sel.labels() == {"a", "b", "c", "d", "e"}
    assert parse("all()").labels() == frozenset()


def test_with_label_prefix() -> None:
    sel = parse("a == 'x' && (has(b) || c not in {'1'}) && !d starts with 'q' && all()")
    pre = sel.with_label_prefix("pcns.")
    assert str(pre) == (
        '(pcns.a == "x" && (has(pcns.b) || pcns.c not in {"1"}) && '
        '!pcns.d starts with "q" && all())'
    )
    assert pre.labels() == {"pcns.a", "pcns.b", "pcns.c", "pcns.d"}
    assert sel.with_label_prefix("") is sel
    assert str(sel) == str(parse(str(sel)))  # original untouched


def test_and_selectors() -> None:
    a = parse("a == 'x' && b == 'y'")
    b = parse("has(c) || has(d)")
    both = and_selectors(a, b)
    assert both == parse(f"({a}) && ({b})")
    assert str(both) == '((a == "x" && b == "y") && (has(c) || has(d)))'
    assert both.evaluate({"a": "x", "b": "y", "d": ""})
    assert not both.evaluate({"a": "x", "b": "y"})
    assert and_selectors().is_all()
    assert and_selectors(b) is b


# --- label restrictions ---------------------------------------------------------------------

V = frozenset


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a == 'value'", {"a": V({"value"})}),
        ("a not in {'v1','v2'}", {}),
        ("a ends with 'foo'", {"a": None}),
        ("a contains 'foo'", {"a": None}),
        ("a != 'value'", {}),
        ("a == 'v1' && a == 'v2'", {"a": V()}),
        ("a in {'v1','v2'} && a in {'v2','v3'} ", {"a": V({"v2"})}),
        ("has(a) && a == 'v1'", {"a": V({"v1"})}),
        ("a == 'v1' && b == 'v2'", {"a": V({"v1"}), "b": V({"v2"})}),
        ("all() && a == 'v1'", {"a": V({"v1"})}),
        ("has(a) || a == 'v2'", {"a": None}),
        ("a=='v2' || has(b)", {}),
        ("a == 'v1' || b == 'v2'", {}),
        ("all() || b == 'v2'", {}),
        ("!!has(a)", {"a": None}),
        ("a in {'x'} || a in {'y'} || a == 'z'", {"a": V({"x", "y", "z"})}),
        ("!(a == 'x')", {}),
        ("has(a) && !has(a)", {"a": V()}),
        ("a in {}", {"a": V()}),
    ],
)
def test_required_equalities(text: str, expected: dict[str, frozenset[str] | None]) -> None:
    assert parse(text).required_equalities() == expected


def test_required_absent() -> None:
    assert parse("!has(a) && b == 'x'").required_absent() == {"a"}
    assert parse("!has(a) || !has(a)").required_absent() == {"a"}
    assert parse("!has(a) || has(b)").required_absent() == frozenset()
    r = parse("!has(a)").label_restrictions()["a"]
    assert r.must_be_absent and not r.must_be_present and not r.impossible


def test_selector_type_exported() -> None:
    assert isinstance(parse("has(a)"), Selector)


# --- tokenizer ------------------------------------------------------------------------------


def kinds(text: str) -> list[tuple[int, str]]:
    return [(t.kind, t.value) for t in tk.tokenize(text)]


def test_tokenizer_operators_after_label() -> None:
    assert [k for k, _ in kinds("x startswith 'v'")] == [
        tk.LABEL,
        tk.STARTS_WITH,
        tk.STRING,
        tk.EOF,
    ]
    assert kinds("startswith starts \t with 'v'")[:2] == [
        (tk.LABEL, "startswith"),
        (tk.STARTS_WITH, "starts \t with"),
    ]
    assert [k for k, _ in kinds('a notin"b"&&!has(c)||d in"e"')] == [
        tk.LABEL,
        tk.NOT_IN,
        tk.STRING,
        tk.AND,
        tk.NOT,
        tk.HAS,
        tk.OR,
        tk.LABEL,
        tk.IN,
        tk.STRING,
        tk.EOF,
    ]
    # Grammar errors are the parser's business: this tokenizes fine.
    assert [k for k, _ in kinds("b in c")] == [tk.LABEL, tk.IN, tk.LABEL, tk.EOF]
    for bad in ("label starts foo 'v'", "label ends foo 'v'", "label squiggles 'v'"):
        with pytest.raises(SelectorError):
            tk.tokenize(bad)


def test_tokenizer_keywords_and_positions() -> None:
    tokens = tk.tokenize("  has( k8s-app )&&all( )||global()")
    assert [(t.kind, t.value, t.pos) for t in tokens] == [
        (tk.HAS, "k8s-app", 2),
        (tk.AND, "&&", 16),
        (tk.ALL, "all( )", 18),
        (tk.OR, "||", 24),
        (tk.GLOBAL, "global()", 26),
        (tk.EOF, "", 34),
    ]
    assert kinds("'a \"b\" c'")[0] == (tk.STRING, 'a "b" c')
    assert kinds('"it\'s"')[0] == (tk.STRING, "it's")
