"""Compile a selector AST into one fast Python predicate.

Owns code generation for evaluation.  The tree is turned into a single Python expression
(``lambda L: L.get(k0) == v0 and L.get(k1) in s1``) whose label names and values are bound
as closure constants, never spliced into the source text, so no selector content can inject
code.  Semantics are identical to the nodes' reference ``evaluate`` methods (the tests check
this); trees too deep for Python's compiler fall back to the reference tree walk.
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
    depth,
)

Predicate = Callable[[Mapping[str, str]], bool]

# Python's own parser rejects deeply nested expressions; stay well below its limits.
MAX_CODEGEN_DEPTH = 40


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
    """A predicate equivalent to ``node.evaluate``; fast for ordinary selectors."""
    if isinstance(node, AllNode | GlobalNode):
        return _always_true
    if depth(node) > MAX_CODEGEN_DEPTH:
        return node.evaluate
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
