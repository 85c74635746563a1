"""Base of pycalico's typed error hierarchy, and how an error quotes what it was given.

Library code raises subclasses of :class:`CalicoError`; only the edges (CLI, CNI plugin,
daemon mains) turn them into exit codes or CNI error JSON. :func:`excerpt` is how a message
quotes user input: bounded and with control characters escaped (a 5 MB value or a NUL in a
name never reaches a terminal or a log whole). This module imports nothing of pycalico.
"""

from __future__ import annotations

import re

#: How much of a value an error message quotes by default.
EXCERPT_CHARS = 80
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class CalicoError(Exception):
    """Base class of every error pycalico raises on purpose."""


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``value`` as text for a message: control characters escaped, at most ``limit`` chars
    of the original (then ``...(N chars)``)."""
    text = value if isinstance(value, str) else repr(value)
    cut = text[:limit]
    out = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), cut)
    if len(text) > limit:
        out += f"...({len(text)} chars)"
    return out
