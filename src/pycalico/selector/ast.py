"""Abstract syntax tree of a parsed Calico selector.

Owns the node types, their reference (tree-walking) evaluation, Calico's canonical string
rendering, label-restriction analysis and label-name prefixing.  Invariants:

* nodes are immutable (frozen dataclasses) and compare by value;
* set operands hold their values sorted (by code point, i.e. UTF-8 byte order) and
  de-duplicated, which is what the canonical form prints;
* ``==``, ``contains``, ``starts with``, ``ends with`` and ``in`` are false when the label is
  absent; ``!=`` and ``not in`` are true when it is absent; ``all()``/``global()`` are true;
* canonical form: AND/OR groups are always parenthesised, NOT is ``!`` directly before its
  operand, values are double-quoted unless they contain ``"`` (then single-quoted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class LabelRestriction:
    """What every label map matching a selector must satisfy for one label.

    ``values`` is None when no value restriction is known; an empty frozenset means the
    selector can never match.  ``must_be_present`` and ``must_be_absent`` both true also means
    the selector can never match.
    """

    must_be_present: bool = False
    must_be_absent: bool = False
    values: frozenset[str] | None = None

    @property
    def impossible(self) -> bool:
        return (self.must_be_present and self.must_be_absent) or self.values == frozenset()


Restrictions = dict[str, LabelRestriction]


def quote(value: str) -> str:
    """Quote a value the way Calico's canonical form does."""
    q = "'" if '"' in value else '"'
    return q + value + q


class Node:
    """Base of all AST nodes."""

    __slots__ = ()

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        raise NotImplementedError

    def fragments(self, out: list[str]) -> None:
        raise NotImplementedError

    def restrictions(self) -> Restrictions:
        return {}

    def prefixed(self, prefix: str) -> Node:
        return self

    def children(self) -> tuple[Node, ...]:
        return ()

    def label_name(self) -> str | None:
        return None

    def __str__(self) -> str:
        out: list[str] = []
        self.fragments(out)
        return "".join(out)


@dataclass(frozen=True, slots=True)
class AllNode(Node):
    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def fragments(self, out: list[str]) -> None:
        out.append("all()")


@dataclass(frozen=True, slots=True)
class GlobalNode(Node):
    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def fragments(self, out: list[str]) -> None:
        out.append("global()")


@dataclass(frozen=True, slots=True)
class HasNode(Node):
    label: str

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.label in labels

    def fragments(self, out: list[str]) -> None:
        out.extend(("has(", self.label, ")"))

    def restrictions(self) -> Restrictions:
        return {self.label: LabelRestriction(must_be_present=True)}

    def prefixed(self, prefix: str) -> Node:
        return HasNode(prefix + self.label)

    def label_name(self) -> str | None:
        return self.label


@dataclass(frozen=True, slots=True)
class LabelValueNode(Node):
    """``label <op> "value"`` for the single-value operators."""

    label: str
    value: str
    OP: ClassVar[str] = ""

    def fragments(self, out: list[str]) -> None:
        out.extend((self.label, self.OP, quote(self.value)))

    def restrictions(self) -> Restrictions:
        return {self.label: LabelRestriction(must_be_present=True)}

    def prefixed(self, prefix: str) -> Node:
        return type(self)(prefix + self.label, self.value)

    def label_name(self) -> str | None:
        return self.label


@dataclass(frozen=True, slots=True)
class EqNode(LabelValueNode):
    OP: ClassVar[str] = " == "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.label)
        return v is not None and v == self.value

    def restrictions(self) -> Restrictions:
        return {self.label: LabelRestriction(must_be_present=True, values=frozenset((self.value,)))}


@dataclass(frozen=True, slots=True)
class NeNode(LabelValueNode):
    OP: ClassVar[str] = " != "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.label)
        return v is None or v != self.value

    def restrictions(self) -> Restrictions:
        return {}


@dataclass(frozen=True, slots=True)
class ContainsNode(LabelValueNode):
    OP: ClassVar[str] = " contains "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.label)
        return v is not None and self.value in v


@dataclass(frozen=True, slots=True)
class StartsWithNode(LabelValueNode):
    OP: ClassVar[str] = " starts with "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.label)
        return v is not None and v.startswith(self.value)


@dataclass(frozen=True, slots=True)
class EndsWithNode(LabelValueNode):
    OP: ClassVar[str] = " ends with "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.label)
        return v is not None and v.endswith(self.value)


def string_set(values: Iterable[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated values (Calico's StringSet)."""
    return tuple(sorted(set(values)))


@dataclass(frozen=True, slots=True)
class SetNode(Node):
    """``label in {...}`` / ``label not in {...}``; ``values`` is sorted and de-duplicated."""

    label: str
    values: tuple[str, ...]
    members: frozenset[str] = field(init=False, compare=False, repr=False)
    OP: ClassVar[str] = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", frozenset(self.values))

    def fragments(self, out: list[str]) -> None:
        out.extend((self.label, self.OP, "{", ", ".join(quote(v) for v in self.values), "}"))

    def prefixed(self, prefix: str) -> Node:
        return type(self)(prefix + self.label, self.values)

    def label_name(self) -> str | None:
        return self.label


@dataclass(frozen=True, slots=True)
class InNode(SetNode):
    OP: ClassVar[str] = " in "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.label)
        return v is not None and v in self.members

    def restrictions(self) -> Restrictions:
        return {self.label: LabelRestriction(must_be_present=True, values=self.members)}


@dataclass(frozen=True, slots=True)
class NotInNode(SetNode):
    OP: ClassVar[str] = " not in "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.label)
        return v is None or v not in self.members


@dataclass(frozen=True, slots=True)
class NotNode(Node):
    operand: Node

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.evaluate(labels)

    def fragments(self, out: list[str]) -> None:
        out.append("!")
        self.operand.fragments(out)

    def restrictions(self) -> Restrictions:
        # Only !has(l) can be inverted: "!(a == 'b')" does not require "a" to be absent.
        if isinstance(self.operand, HasNode):
            return {self.operand.label: LabelRestriction(must_be_absent=True)}
        return {}

    def prefixed(self, prefix: str) -> Node:
        return NotNode(self.operand.prefixed(prefix))

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True)
class AndNode(Node):
    operands: tuple[Node, ...]

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        # Explicit loop, not all()/any(): no generator frame per level of nesting.
        for op in self.operands:  # noqa: SIM110
            if not op.evaluate(labels):
                return False
        return True

    def fragments(self, out: list[str]) -> None:
        out.append("(")
        for i, op in enumerate(self.operands):
            if i:
                out.append(" && ")
            op.fragments(out)
        out.append(")")

    def restrictions(self) -> Restrictions:
        result: Restrictions = {}
        for op in self.operands:
            for name, r in op.restrictions().items():
                base = result.get(name)
                if base is None:
                    result[name] = r
                    continue
                if base.values is None:
                    values = r.values
                elif r.values is None:
                    values = base.values
                else:
                    values = base.values & r.values
                result[name] = LabelRestriction(
                    must_be_present=base.must_be_present or r.must_be_present,
                    must_be_absent=base.must_be_absent or r.must_be_absent,
                    values=values,
                )
        return result

    def prefixed(self, prefix: str) -> Node:
        return AndNode(tuple(op.prefixed(prefix) for op in self.operands))

    def children(self) -> tuple[Node, ...]:
        return self.operands


@dataclass(frozen=True, slots=True)
class OrNode(Node):
    operands: tuple[Node, ...]

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        # Explicit loop, not all()/any(): no generator frame per level of nesting.
        for op in self.operands:  # noqa: SIM110
            if op.evaluate(labels):
                return True
        return False

    def fragments(self, out: list[str]) -> None:
        out.append("(")
        for i, op in enumerate(self.operands):
            if i:
                out.append(" || ")
            op.fragments(out)
        out.append(")")

    def restrictions(self) -> Restrictions:
        result = self.operands[0].restrictions()
        for op in self.operands[1:]:
            other = op.restrictions()
            merged: Restrictions = {}
            for name, r in result.items():
                o = other.get(name, LabelRestriction())
                present = r.must_be_present and o.must_be_present
                absent = r.must_be_absent and o.must_be_absent
                values: frozenset[str] | None = None
                if present and r.values is not None and o.values is not None:
                    values = r.values | o.values
                if present or absent:
                    merged[name] = LabelRestriction(present, absent, values)
            result = merged
        return result

    def prefixed(self, prefix: str) -> Node:
        return OrNode(tuple(op.prefixed(prefix) for op in self.operands))

    def children(self) -> tuple[Node, ...]:
        return self.operands


def walk(node: Node) -> Iterable[Node]:
    """Every node of the tree rooted at ``node`` (pre-order, iterative)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children()))


def depth(node: Node) -> int:
    """Height of the tree rooted at ``node`` (a leaf has depth 1), computed iteratively."""
    best = 0
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        best = max(best, d)
        stack.extend((c, d + 1) for c in n.children())
    return best
