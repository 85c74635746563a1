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


_IDENT = re.compile(r"[a-zA-Z0-9_./-]*")
_WS = re.compile(r"[ \t]*")
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")

_SIMPLE = {
    "(": LPAREN,
    ")": RPAREN,
    "{": LBRACE,
    "}": RBRACE,
    ",": COMMA,
}

# Operator words accepted right after a label, in the order Calico tries them.
_OPERATORS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("contains",), CONTAINS),
    (("starts", "with"), STARTS_WITH),
    (("ends", "with"), ENDS_WITH),
    (("not", "in"), NOT_IN),
    (("in",), IN),
)

_KEYWORD_CALLS = (("all(", ALL), ("global(", GLOBAL))


def _skip_ws(text: str, pos: int) -> int:
    m = _WS.match(text, pos)
    assert m is not None
    return m.end()


def _at_word_boundary(text: str, pos: int) -> bool:
    return pos >= len(text) or text[pos] not in _IDENT_CHARS


def _cut_identifier(text: str, pos: int) -> tuple[str, int]:
    m = _IDENT.match(text, pos)
    assert m is not None
    ident = m.group()
    if not ident:
        raise SelectorError("expected a label name", selector=text, position=pos)
    if len(ident) > MAX_LABEL_LENGTH:
        raise SelectorError(
            f"label name too long ({len(ident)} > {MAX_LABEL_LENGTH} characters)",
            selector=text,
            position=pos,
        )
    return ident, m.end()


def _match_operator(text: str, pos: int) -> tuple[int, int] | None:
    """Return ``(kind, end)`` of an operator word at ``pos`` or None."""
    for words, kind in _OPERATORS:
        p = pos
        ok = True
        for i, word in enumerate(words):
            if not text.startswith(word, p):
                ok = False
                break
            p += len(word)
            if i < len(words) - 1:
                p = _skip_ws(text, p)
        if ok and _at_word_boundary(text, p):
            return kind, p
    return None


def _expect_close_paren(text: str, pos: int, what: str) -> int:
    pos = _skip_ws(text, pos)
    if not text.startswith(")", pos):
        raise SelectorError(f"no closing ')' after {what}(", selector=text, position=pos)
    return pos + 1


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; the list always ends with an ``EOF`` token."""
    tokens: list[Token] = []
    n = len(text)
    pos = 0
    last = 0
    while True:
        pos = _skip_ws(text, pos)
        if pos >= n:
            tokens.append(Token(EOF, "", n))
            return tokens
        c = text[pos]
        start = pos
        simple = _SIMPLE.get(c)
        if simple is not None:
            tokens.append(Token(simple, c, start))
            pos += 1
        elif c == '"' or c == "'":
            end = text.find(c, pos + 1)
            if end < 0:
                raise SelectorError("unterminated string", selector=text, position=start)
            tokens.append(Token(STRING, text[pos + 1 : end], start))
            pos = end + 1
        elif c == "=":
            if not text.startswith("==", pos):
                raise SelectorError("expected '=='", selector=text, position=start)
            tokens.append(Token(EQ, "==", start))
            pos += 2
        elif c == "!":
            if text.startswith("!=", pos):
                tokens.append(Token(NE, "!=", start))
                pos += 2
            else:
                tokens.append(Token(NOT, "!", start))
                pos += 1
        elif c == "&":
            if not text.startswith("&&", pos):
                raise SelectorError("expected '&&'", selector=text, position=start)
            tokens.append(Token(AND, "&&", start))
            pos += 2
        elif c == "|":
            if not text.startswith("||", pos):
                raise SelectorError("expected '||'", selector=text, position=start)
            tokens.append(Token(OR, "||", start))
            pos += 2
        elif last == LABEL:
            op = _match_operator(text, pos)
            if op is None:
                raise SelectorError(
                    f"expected an operator after label {tokens[-1].value!r}",
                    selector=text,
                    position=start,
                )
            kind, pos = op
            tokens.append(Token(kind, text[start:pos], start))
        elif text.startswith("has(", pos):
            pos = _skip_ws(text, pos + 4)
            ident, pos = _cut_identifier(text, pos)
            pos = _expect_close_paren(text, pos, "has")
            tokens.append(Token(HAS, ident, start))
        else:
            for word, kind in _KEYWORD_CALLS:
                if text.startswith(word, pos):
                    pos = _expect_close_paren(text, pos + len(word), word[:-1])
                    tokens.append(Token(kind, text[start:pos], start))
                    break
            else:
                if c not in _IDENT_CHARS:
                    raise SelectorError(
                        f"unexpected character {c!r}", selector=text, position=start
                    )
                ident, pos = _cut_identifier(text, pos)
                tokens.append(Token(LABEL, ident, start))
        last = tokens[-1].kind
