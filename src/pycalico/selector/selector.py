"""The public :class:`Selector` value and the cached :func:`parse` entry point.

Owns the facade over the AST: canonical string, Calico unique ID, compiled evaluation,
label-prefixing, label restrictions and AND-composition.  Invariants:

* a ``Selector`` is immutable; equality and hashing use its canonical string, so two texts
  that canonicalise identically are equal selectors;
* ``parse(str(sel))`` gives a selector equal to ``sel`` that evaluates identically;
* ``evaluate`` is a compiled predicate stored on the instance (no per-call tree walk),
  compiled on first use;
* ``parse`` keeps an LRU cache keyed by the exact input text; cached selectors are shared,
  which is safe because they are immutable.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from pycalico.selector.ast import (
    AllNode,
    AndNode,
    GlobalNode,
    LabelRestriction,
    Node,
    NotNode,
    walk,
)
from pycalico.selector.compiler import compile_node
from pycalico.selector.errors import SelectorError
from pycalico.selector.parser import parse_node

PARSE_CACHE_SIZE = 8192


def make_unique_id(prefix: str, content: str) -> str:
    """Calico's ``hash.MakeUniqueID``: ``prefix:`` + base64url-nopad(SHA-224(prefix:content))."""
    data = f"{prefix}:{content}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha224(data).digest()
    return f"{prefix}:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Selector:
    """A parsed Calico selector.

    ``evaluate(labels)`` tells whether a label map matches; ``str(sel)`` is Calico's canonical
    form.  Build one with :func:`parse` (or :meth:`from_node` for an AST).
    """

    __slots__ = ("_canonical", "_labels", "_restrictions", "_root", "_uid", "evaluate")

    evaluate: Callable[[Mapping[str, str]], bool]
    """``evaluate(labels) -> bool``: does the label map match this selector?"""

    _root: Node
    _canonical: str
    _uid: str | None
    _labels: frozenset[str] | None
    _restrictions: dict[str, LabelRestriction] | None

    def __init__(self, root: Node) -> None:
        init = object.__setattr__
        init(self, "_root", root)
        init(self, "_canonical", str(root))
        init(self, "_uid", None)
        init(self, "_labels", None)
        init(self, "_restrictions", None)
        # ``evaluate`` is left unset: the first access compiles it (see __getattr__), so
        # parse-only users never pay for compilation.

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found normally, i.e. ``evaluate`` before first use.
        if name != "evaluate":
            raise AttributeError(name)
        predicate = compile_node(self._root)
        object.__setattr__(self, "evaluate", predicate)
        return predicate

    @classmethod
    def from_node(cls, root: Node) -> Selector:
        return cls(root)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Selector is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Selector is immutable")

    def __str__(self) -> str:
        return self._canonical

    def __repr__(self) -> str:
        return f"Selector({self._canonical!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Selector):
            return self._canonical == other._canonical
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._canonical)

    def __reduce__(self) -> tuple[Callable[..., Selector], tuple[Any]]:
        # Pickle as text (cheap, no deep recursion) unless the text would not reproduce the
        # AST: "!(!x)" prints as "!!x", which parses as "x".
        if any(isinstance(n, NotNode) and isinstance(n.operand, NotNode) for n in walk(self._root)):
            return (Selector, (self._root,))
        return (parse, (self._canonical,))

    @property
    def root(self) -> Node:
        """The (immutable) AST."""
        return self._root

    @property
    def canonical(self) -> str:
        return self._canonical

    def unique_id(self) -> str:
        """Calico's selector ID, ``"s:" + base64url(SHA-224("s:" + canonical))`` (names IP sets)."""
        uid = self._uid
        if uid is None:
            uid = make_unique_id("s", self._canonical)
            object.__setattr__(self, "_uid", uid)
        return uid

    def is_all(self) -> bool:
        """True for ``all()`` (and the empty selector), whose canonical form is ``all()``."""
        return isinstance(self._root, AllNode)

    def uses_global(self) -> bool:
        """True if ``global()`` appears anywhere in the selector."""
        return any(isinstance(n, GlobalNode) for n in walk(self._root))

    def labels(self) -> frozenset[str]:
        """Names of all labels the selector refers to."""
        names = self._labels
        if names is None:
            names = frozenset(
                name for n in walk(self._root) if (name := n.label_name()) is not None
            )
            object.__setattr__(self, "_labels", names)
        return names

    def with_label_prefix(self, prefix: str) -> Selector:
        """A copy with every label name prefixed (Calico's PrefixVisitor), e.g. ``pcns.``."""
        if not prefix:
            return self
        return Selector(self._root.prefixed(prefix))

    def label_restrictions(self) -> dict[str, LabelRestriction]:
        """Per-label conditions every matching label map satisfies (Calico's LabelRestrictions).

        Sound but incomplete: a label absent from the result may still be constrained.
        """
        r = self._restrictions
        if r is None:
            r = self._root.restrictions()
            object.__setattr__(self, "_restrictions", r)
        return dict(r)

    def required_equalities(self) -> dict[str, frozenset[str] | None]:
        """Labels that every matching label map must have, with their allowed values.

        Maps label name to the frozenset of values one of which it must have, or to None when
        it must merely be present.  An empty frozenset means nothing can match.  A label index
        can look candidates up by any one entry instead of scanning everything.
        """
        out: dict[str, frozenset[str] | None] = {}
        for name, r in self.label_restrictions().items():
            if r.must_be_present and r.must_be_absent:
                out[name] = frozenset()
            elif r.must_be_present:
                out[name] = r.values
        return out

    def required_absent(self) -> frozenset[str]:
        """Labels that every matching label map must lack (from ``!has(l)`` terms)."""
        return frozenset(name for name, r in self.label_restrictions().items() if r.must_be_absent)


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse_cached(text: str) -> Selector:
    return Selector(parse_node(text))


def parse(text: str) -> Selector:
    """Parse Calico selector text; raises :class:`SelectorError` on any syntax error.

    Empty or blank text is ``all()``.  Results are cached by text (LRU).
    """
    if not isinstance(text, str):
        raise SelectorError(
            f"selector must be a string, not {type(text).__name__}", selector="", position=0
        )
    return _parse_cached(text)


def validate(text: str) -> None:
    """Raise :class:`SelectorError` if ``text`` is not a valid selector."""
    parse(text)


def and_selectors(*selectors: Selector) -> Selector:
    """The conjunction of ``selectors`` — same as parsing ``(s1) && (s2) && ...``.

    No arguments gives ``all()``; a single argument is returned unchanged.
    """
    if not selectors:
        return parse("")
    if len(selectors) == 1:
        return selectors[0]
    return Selector(AndNode(tuple(s.root for s in selectors)))


def parse_cache_info() -> functools._CacheInfo:
    """Statistics of the parse cache."""
    return _parse_cached.cache_info()


def clear_parse_cache() -> None:
    _parse_cached.cache_clear()
