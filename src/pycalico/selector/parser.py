"""Recursive-descent parser for the Calico selector language.

Owns the grammar (mirroring Calico's ``libcalico-go/lib/selector/parser/parser.go``)::

    selector  := <empty> | or_expr EOF            (empty or blank => all())
    or_expr   := and_expr ( "||" and_expr )*
    and_expr  := operation ( "&&" operation )*
    operation := "!"* ( has(L) | all() | global()
                      | L "==" S | L "!=" S | L contains S | L starts with S | L ends with S
                      | L in "{" [S ("," S)* [","]] "}" | L not in "{" ... "}"
                      | "(" or_expr ")" )

Invariants: leading ``!``s collapse by parity into at most one NotNode; a group with one
member is returned unwrapped (so ``(a == "b")`` is just the comparison); groups are never
flattened (``a && (b && c)`` keeps its nested AND).  Parenthesis nesting or a tree height
above :data:`MAX_NESTING` is rejected with a SelectorError (Calico has no limit; Python's
recursion does).  The height bound keeps every accepted selector's canonical text (which has
one parenthesis pair per AND/OR node) within the parenthesis bound.  Every failure raises
:class:`SelectorError` with a position.
"""

from __future__ import annotations

from pycalico.selector import tokenizer as tk
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
    string_set,
)
from pycalico.selector.errors import SelectorError
from pycalico.selector.tokenizer import Token

MAX_NESTING = 100

_VALUE_OPS: dict[int, type[EqNode | NeNode | ContainsNode | StartsWithNode | EndsWithNode]] = {
    tk.EQ: EqNode,
    tk.NE: NeNode,
    tk.CONTAINS: ContainsNode,
    tk.STARTS_WITH: StartsWithNode,
    tk.ENDS_WITH: EndsWithNode,
}


class _Parser:
    __slots__ = ("depth", "max_depth", "text", "tokens")

    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.depth = 0
        self.max_depth = 0

    def error(self, reason: str, tok: Token) -> SelectorError:
        return SelectorError(reason, selector=self.text, position=tok.pos)

    def unexpected(self, tok: Token, wanted: str) -> SelectorError:
        return self.error(f"expected {wanted}, found {tk.KIND_NAMES[tok.kind]}", tok)

    def parse_or(self, i: int) -> tuple[Node, int]:
        node, i = self.parse_and(i)
        if self.tokens[i].kind != tk.OR:
            return node, i
        operands = [node]
        while self.tokens[i].kind == tk.OR:
            node, i = self.parse_and(i + 1)
            operands.append(node)
        return OrNode(tuple(operands)), i

    def parse_and(self, i: int) -> tuple[Node, int]:
        node, i = self.parse_operation(i)
        if self.tokens[i].kind != tk.AND:
            return node, i
        operands = [node]
        while self.tokens[i].kind == tk.AND:
            node, i = self.parse_operation(i + 1)
            operands.append(node)
        return AndNode(tuple(operands)), i

    def parse_operation(self, i: int) -> tuple[Node, int]:
        tokens = self.tokens
        negated = False
        while tokens[i].kind == tk.NOT:
            negated = not negated
            i += 1
        tok = tokens[i]
        kind = tok.kind
        node: Node
        if kind == tk.HAS:
            node = HasNode(tok.value)
            i += 1
        elif kind == tk.ALL:
            node = AllNode()
            i += 1
        elif kind == tk.GLOBAL:
            node = GlobalNode()
            i += 1
        elif kind == tk.LABEL:
            node, i = self.parse_comparison(i)
        elif kind == tk.LPAREN:
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise self.error(f"parentheses nested deeper than {MAX_NESTING}", tok)
            self.max_depth = max(self.max_depth, self.depth)
            node, i = self.parse_or(i + 1)
            if tokens[i].kind != tk.RPAREN:
                raise self.unexpected(tokens[i], "')'")
            self.depth -= 1
            i += 1
        else:
            raise self.unexpected(tok, "a selector expression")
        if negated:
            node = NotNode(node)
        return node, i

    def parse_comparison(self, i: int) -> tuple[Node, int]:
        tokens = self.tokens
        label = tokens[i].value
        op = tokens[i + 1]
        if op.kind == tk.EOF:
            raise self.unexpected(op, "an operator")
        operand = tokens[i + 2]
        cls = _VALUE_OPS.get(op.kind)
        if cls is not None:
            if operand.kind != tk.STRING:
                raise self.unexpected(operand, "a quoted string")
            return cls(label, operand.value), i + 3
        if op.kind in (tk.IN, tk.NOT_IN):
            if operand.kind != tk.LBRACE:
                raise self.unexpected(operand, "'{' (a set literal)")
            i += 3
            values: list[str] = []
            while tokens[i].kind == tk.STRING:
                values.append(tokens[i].value)
                i += 1
                if tokens[i].kind != tk.COMMA:
                    break
                i += 1
            if tokens[i].kind != tk.RBRACE:
                raise self.unexpected(tokens[i], "'}'")
            items = string_set(values)
            node: Node = InNode(label, items) if op.kind == tk.IN else NotInNode(label, items)
            return node, i + 1
        raise self.unexpected(op, "an operator (==, !=, in, not in, contains, ...)")


def parse_node(text: str) -> Node:
    """Parse selector text into an AST; empty/blank text gives ``AllNode()``."""
    tokens = tk.tokenize(text)
    if tokens[0].kind == tk.EOF:
        return AllNode()
    p = _Parser(text, tokens)
    node, i = p.parse_or(0)
    if tokens[i].kind != tk.EOF:
        raise p.error(f"unexpected {tk.KIND_NAMES[tokens[i].kind]} at end of selector", tokens[i])
    # Each parenthesis level adds at most an OR, an AND and a NOT node.  Bounding the tree's
    # height as well keeps the canonical text (one parenthesis pair per AND/OR node) within
    # the parenthesis limit, so every accepted selector's canonical form parses too.
    if 3 * (p.max_depth + 1) > MAX_NESTING and depth(node) > MAX_NESTING:
        raise SelectorError(
            f"selector nested deeper than {MAX_NESTING} levels", selector=text, position=0
        )
    return node
