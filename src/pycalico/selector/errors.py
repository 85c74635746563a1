"""The selector package's typed error.

Owns :class:`SelectorError`.  Invariant: every failure to tokenize or parse selector text is
reported as a ``SelectorError`` (which is both a :class:`~pycalico.errors.CalicoError` and a
:class:`ValueError`) carrying the offending text and the 0-based character position at which
the problem was detected.
"""

from __future__ import annotations

from pycalico.errors import CalicoError

_MAX_SHOWN = 120


class SelectorError(CalicoError, ValueError):
    """A selector could not be parsed.

    Attributes: ``reason`` (what is wrong), ``selector`` (the full input text) and
    ``position`` (0-based index into ``selector`` where the problem was found; equal to
    ``len(selector)`` for an unexpected end of input).
    """

    def __init__(self, reason: str, *, selector: str, position: int) -> None:
        self.reason = reason
        self.selector = selector
        self.position = position
        shown = selector if len(selector) <= _MAX_SHOWN else selector[:_MAX_SHOWN] + "..."
        super().__init__(f"{reason} at position {position} in selector {shown!r}")
