"""Tokenizer for the Calico selector language.

Owns the lexical rules (mirroring Calico's ``libcalico-go/lib/selector/tokenizer``):

* whitespace between tokens is space or tab only;
* a label (identifier) is a run of ``[a-zA-Z0-9_./-]``, at most 512 characters;
* string literals are ``"..."`` or ``'...'`` with no escapes (ends at the next same quote);
* ``==``, ``!=``, ``&&``, ``||`` are two-character tokens; a lone ``=``, ``&`` or ``|`` is an
  error, a lone ``!`` is negation;
* directly after a label only an operator word is accepted: ``contains``, ``starts with``,
  ``ends with``, ``not in``, ``in`` (multi-word operators allow spaces/tabs, or nothing,
  between the words; the last word must end at a word boundary);
* ``has(label)``, ``all()`` and ``global()`` are single tokens (spaces/tabs allowed inside the
  parentheses, none between the keyword and ``(``).

Invariant: :func:`tokenize` either returns a token list ending in exactly one ``EOF`` token or
raises :class:`SelectorError`; every token records the index where it starts.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pycalico.selector.errors import SelectorError

MAX_LABEL_LENGTH = 512

# Token kinds (plain ints for speed).
LABEL = 1
STRING = 2
LBRACE = 3
RBRACE = 4
COMMA = 5
EQ = 6
NE = 7
IN = 8
NOT = 9
NOT_IN = 10
CONTAINS = 11
STARTS_WITH = 12
ENDS_WITH = 13
ALL = 14
HAS = 15
LPAREN = 16
RPAREN = 17
AND = 18
OR = 19
GLOBAL = 20
EOF = 21

KIND_NAMES = {
    LABEL: "label",
    STRING: "string literal",
    LBRACE: "'{'",
    RBRACE: "'}'",
    COMMA: "','",
    EQ: "'=='",
    NE: "'!='",
    IN: "'in'",
    NOT: "'!'",
    NOT_IN: "'not in'",
    CONTAINS: "'contains'",
    STARTS_WITH: "'starts with'",
    ENDS_WITH: "'ends with'",
    ALL: "'all()'",
    HAS: "'has()'",
    LPAREN: "'('",
    RPAREN: "')'",
    AND: "'&&'",
    OR: "'||'",
    GLOBAL: "'global()'",
    EOF: "end of selector",
}


class Token(NamedTuple):
    kind: int
    value: str
    pos: int


_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")

# One token (after optional space/tab): a string literal, an identifier run, or a symbol.
# Anything else (end of input, unterminated string, lone = & |, stray character) fails to
# match and is diagnosed by ``_diagnose``.
_TOKEN = re.compile(
    r"[ \t]*(?:"
    r""""(?P<dq>[^"]*)"|'(?P<sq>[^']*)'"""
    r"|(?P<id>[a-zA-Z0-9_./-]+)"
    r"|(?P<sym>==|!=|&&|\|\||[(){},!]))"
)
_WS = re.compile(r"[ \t]*")
_CALL_ARG = re.compile(r"[ \t]*([a-zA-Z0-9_./-]*)[ \t]*")

_SYMBOLS = {
    "(": LPAREN,
    ")": RPAREN,
    "{": LBRACE,
    "}": RBRACE,
    ",": COMMA,
    "!": NOT,
    "==": EQ,
    "!=": NE,
    "&&": AND,
    "||": OR,
}

# Operator words accepted right after a label.  An identifier run that is exactly one of
# these is the operator (so "in{" works but "inx" does not: a word boundary is required).
_ONE_WORD_OPS = {
    "contains": CONTAINS,
    "in": IN,
    "startswith": STARTS_WITH,
    "endswith": ENDS_WITH,
    "notin": NOT_IN,
}
# First word of a two-word operator -> (second word, kind); space/tab may separate them.
_TWO_WORD_OPS = {
    "starts": ("with", STARTS_WITH),
    "ends": ("with", ENDS_WITH),
    "not": ("in", NOT_IN),
}

_CALLS = {"has": HAS, "all": ALL, "global": GLOBAL}


def _skip_ws(text: str, pos: int) -> int:
    m = _WS.match(text, pos)
    assert m is not None
    return m.end()


def _diagnose(text: str, pos: int) -> SelectorError:
    """The error for a position where no token matches."""
    c = text[pos]
    if c == '"' or c == "'":
        return SelectorError("unterminated string", selector=text, position=pos)
    if c in "=&|":
        return SelectorError(f"expected '{c}{c}'", selector=text, position=pos)
    return SelectorError(f"unexpected character {c!r}", selector=text, position=pos)


def _label_error(text: str, ident: str, pos: int) -> SelectorError:
    if not ident:
        return SelectorError("expected a label name", selector=text, position=pos)
    return SelectorError(
        f"label name too long ({len(ident)} > {MAX_LABEL_LENGTH} characters)",
        selector=text,
        position=pos,
    )


def _operator(text: str, word: str, start: int, end: int) -> tuple[int, int] | None:
    """Operator starting with identifier run ``word`` (at ``start``..``end``): (kind, end)."""
    kind = _ONE_WORD_OPS.get(word)
    if kind is not None:
        return kind, end
    two = _TWO_WORD_OPS.get(word)
    if two is not None:
        second, kind = two
        p = _skip_ws(text, end)
        if text.startswith(second, p):
            q = p + len(second)
            if q >= len(text) or text[q] not in _IDENT_CHARS:
                return kind, q
    return None


def _call(text: str, name: str, start: int, pos: int) -> tuple[Token, int]:
    """``has(label)``, ``all()`` or ``global()`` starting at ``start``; ``pos`` is just after
    the ``(``.  Returns the token and the position after its ``)``."""
    m = _CALL_ARG.match(text, pos)
    assert m is not None
    arg = m.group(1)
    kind = _CALLS[name]
    if kind == HAS:
        if not arg or len(arg) > MAX_LABEL_LENGTH:
            raise _label_error(text, arg, m.start(1))
    elif arg:
        raise SelectorError(f"no closing ')' after {name}(", selector=text, position=m.start(1))
    end = m.end()
    if not text.startswith(")", end):
        raise SelectorError(f"no closing ')' after {name}(", selector=text, position=end)
    end += 1
    return Token(kind, arg if kind == HAS else text[start:end], start), end


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; the list always ends with an ``EOF`` token."""
    tokens: list[Token] = []
    append = tokens.append
    match = _TOKEN.match
    n = len(text)
    pos = 0
    last = 0
    while True:
        m = match(text, pos)
        if m is None:
            pos = _skip_ws(text, pos)
            if pos >= n:
                append(Token(EOF, "", n))
                return tokens
            raise _diagnose(text, pos)
        group = m.lastgroup
        start = m.start(group)  # type: ignore[arg-type]
        pos = m.end()
        if group == "id":
            word = m.group("id")
            if last == LABEL:
                op = _operator(text, word, start, pos)
                if op is None:
                    raise SelectorError(
                        f"expected an operator after label {tokens[-1].value!r}",
                        selector=text,
                        position=start,
                    )
                last, pos = op
                append(Token(last, text[start:pos], start))
                continue
            if word in _CALLS and text.startswith("(", pos):
                tok, pos = _call(text, word, start, pos + 1)
                append(tok)
                last = tok.kind
                continue
            if len(word) > MAX_LABEL_LENGTH:
                raise _label_error(text, word, start)
            append(Token(LABEL, word, start))
            last = LABEL
        elif group == "sym":
            sym = m.group("sym")
            last = _SYMBOLS[sym]
            append(Token(last, sym, start))
        else:  # a string literal; the group starts after the opening quote
            last = STRING
            append(Token(STRING, m.group(group), start - 1))  # type: ignore[arg-type]
