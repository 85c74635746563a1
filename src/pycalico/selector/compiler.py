"""Compile a selector AST into one fast Python predicate.

Owns code generation for evaluation.  The tree is turned into a single Python expression
(``lambda L: L.get(k0) == v0 and L.get(k1) in s1``) whose label names and values are bound
as closure constants, never spliced into the source text, so no selector content can inject
code.  Semantics are identical to the nodes' reference ``evaluate`` methods (the tests check
this); large or deep trees are split into generated pieces composed by small closures.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from pycalico.selector.ast import (
    AllNode,
    AndNode,
    ContainsNode,
    EndsWithNode,
    EqNode,
    GlobalNode,
    HasNode,
    InNode,
    NeNode,
    Node,
    NotInNode,
    NotNode,
    OrNode,
    StartsWithNode,
)

Predicate = Callable[[Mapping[str, str]], bool]

# Largest subtree turned into a single generated expression: Python's parser rejects deeply
# nested expressions and compiles huge ones slowly, so bigger trees are split up.
MAX_CODEGEN_DEPTH = 24
MAX_CODEGEN_SIZE = 64


class _Gen:
    def __init__(self) -> None:
        self.consts: list[object] = []
        self.tmp = 0

    def const(self, value: object) -> str:
        self.consts.append(value)
        return f"c{len(self.consts) - 1}"

    def temp(self) -> str:
        self.tmp += 1
        return f"t{self.tmp}"

    def expr(self, node: Node) -> str:
        if isinstance(node, AllNode | GlobalNode):
            return "True"
        if isinstance(node, HasNode):
            return f"({self.const(node.label)} in L)"
        if isinstance(node, EqNode):
            return f"(L.get({self.const(node.label)}) == {self.const(node.value)})"
        if isinstance(node, NeNode):
            return f"(L.get({self.const(node.label)}) != {self.const(node.value)})"
        if isinstance(node, InNode):
            return f"(L.get({self.const(node.label)}) in {self.const(node.members)})"
        if isinstance(node, NotInNode):
            return f"(L.get({self.const(node.label)}) not in {self.const(node.members)})"
        if isinstance(node, ContainsNode | StartsWithNode | EndsWithNode):
            t = self.temp()
            k = self.const(node.label)
            v = self.const(node.value)
            if isinstance(node, ContainsNode):
                test = f"{v} in {t}"
            elif isinstance(node, StartsWithNode):
                test = f"{t}.startswith({v})"
            else:
                test = f"{t}.endswith({v})"
            return f"(({t} := L.get({k})) is not None and {test})"
        if isinstance(node, NotNode):
            return f"(not {self.expr(node.operand)})"
        if isinstance(node, AndNode):
            return "(" + " and ".join(self.expr(op) for op in node.operands) + ")"
        if isinstance(node, OrNode):
            return "(" + " or ".join(self.expr(op) for op in node.operands) + ")"
        raise TypeError(f"unknown selector node {node!r}")  # pragma: no cover


def compile_node(node: Node) -> Predicate:
    """A predicate equivalent to ``node.evaluate``; fast for ordinary selectors.

    Small subtrees become one generated expression each; nodes of large or deep trees are
    composed as closures over their compiled children (so Python's compiler never sees a huge
    or deeply nested expression, and call depth stays proportional to the tree's depth).
    """
    if isinstance(node, AllNode | GlobalNode):
        return _always_true
    return _compile(node, _measure(node))


def _measure(root: Node) -> dict[int, tuple[int, int]]:
    """``id(node) -> (size, height)`` for every node, computed without recursion."""
    out: dict[int, tuple[int, int]] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        kids = node.children()
        if not done:
            stack.append((node, True))
            stack.extend((k, False) for k in kids)
            continue
        size, height = 1, 1
        for k in kids:
            ks, kh = out[id(k)]
            size += ks
            height = max(height, kh + 1)
        out[id(node)] = (size, height)
    return out


def _compile(node: Node, sizes: dict[int, tuple[int, int]]) -> Predicate:
    size, height = sizes[id(node)]
    if size <= MAX_CODEGEN_SIZE and height <= MAX_CODEGEN_DEPTH:
        return _codegen(node)
    if isinstance(node, NotNode):
        return _negate(_compile(node.operand, sizes))
    if isinstance(node, AndNode):
        return _conjoin(tuple(_compile(op, sizes) for op in node.operands))
    if isinstance(node, OrNode):
        return _disjoin(tuple(_compile(op, sizes) for op in node.operands))
    return _codegen(node)  # pragma: no cover - leaves are always small


def _negate(p: Predicate) -> Predicate:
    def negated(labels: Mapping[str, str]) -> bool:
        return not p(labels)

    return negated


def _conjoin(preds: tuple[Predicate, ...]) -> Predicate:
    def conjunction(labels: Mapping[str, str]) -> bool:
        # Explicit loop, not all()/any(): no generator frame per level of nesting.
        for p in preds:  # noqa: SIM110
            if not p(labels):
                return False
        return True

    return conjunction


def _disjoin(preds: tuple[Predicate, ...]) -> Predicate:
    def disjunction(labels: Mapping[str, str]) -> bool:
        # Explicit loop, not all()/any(): no generator frame per level of nesting.
        for p in preds:  # noqa: SIM110
            if p(labels):
                return True
        return False

    return disjunction


def _codegen(node: Node) -> Predicate:
    gen = _Gen()
    body = gen.expr(node)
    factory = _factory_for(body, len(gen.consts))
    if factory is None:  # pragma: no cover - Python refused the generated code
        return node.evaluate
    predicate: Predicate = factory(*gen.consts)
    return predicate


@functools.lru_cache(maxsize=1024)
def _factory_for(body: str, nconsts: int) -> Callable[..., Predicate] | None:
    """Compile (once per selector *shape*) a factory binding the constants to a predicate.

    ``body`` names constants only as ``c0..cN``, so selectors differing only in label names
    or values share one compiled factory.
    """
    params = ", ".join(f"c{i}" for i in range(nconsts))
    source = f"def _factory({params}):\n    return lambda L: {body}\n"
    namespace: dict[str, object] = {}
    try:
        code = compile(source, "<selector>", "exec")
        exec(code, {"__builtins__": {}}, namespace)
    except (SyntaxError, RecursionError, MemoryError, ValueError):  # pragma: no cover
        return None
    factory = namespace["_factory"]
    assert callable(factory)
    return factory


def _always_true(labels: Mapping[str, str]) -> bool:
    return True


def clear_compile_cache() -> None:
    """Forget compiled selector shapes (for benchmarks and tests)."""
    _factory_for.cache_clear()
