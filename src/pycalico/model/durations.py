"""The ONE Go-duration parser of pycalico (``time.ParseDuration`` plus Felix's bare seconds).

Owns :func:`parse_duration`: ``1h2m3.5s``, ``500ms``, ``90s``, ``-1ns``, ``0`` (units ``ns``,
``us``, ``µs``/``μs``, ``ms``, ``s``, ``m``, ``h``, in any combination, each number may have a
fraction) into float seconds. Python numbers (int/float, never bool) are seconds.

Two switches cover every caller:
- ``bare_numbers``: a unit-less string (``"90"``, ``"1.5"``) is seconds, as Felix's config
  params of type seconds accept; Go's strict form (the v3 API, BGP) only allows ``"0"``.
- ``negative``: a leading ``-`` (or a negative number) is allowed (the v3 API keeps Go's
  signed durations); otherwise it is an error.

Invariant: pure; every malformed value raises :class:`ModelError` naming ``field``.
"""

from __future__ import annotations

import re
from typing import Any

from pycalico.model.types import ModelError

_NUM = r"(?:\d+\.?\d*|\.\d+)"
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_UNIT_RE = "|".join(sorted(_UNITS, key=len, reverse=True))
_DURATION = re.compile(rf"(?:{_NUM}(?:{_UNIT_RE}))+")
_PART = re.compile(rf"({_NUM})({_UNIT_RE})")
_BARE = re.compile(_NUM)


def _err(field: str, reason: str) -> ModelError:
    return ModelError(f"{field}: {reason}" if field else reason)


def parse_duration(
    value: Any, field: str = "", *, bare_numbers: bool = True, negative: bool = False
) -> float:
    """``value`` in seconds (see the module docstring); ModelError naming ``field``."""
    if isinstance(value, bool):
        raise _err(field, f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0 and not negative:
            raise _err(field, f"duration {value!r} must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise _err(field, f"invalid duration {value!r}")
    text = value.strip() if bare_numbers else value
    sign = 1.0
    body = text
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0" or (bare_numbers and _BARE.fullmatch(body)):
        secs = float(body)
    elif _DURATION.fullmatch(body):
        secs = sum(float(n) * _UNITS[u] for n, u in _PART.findall(body))
    else:
        raise _err(field, f"invalid duration {value!r} (expected e.g. '90s', '5m30s', '1h')")
    if sign < 0 and secs != 0 and not negative:
        raise _err(field, f"duration {value!r} must not be negative")
    return sign * secs if secs else 0.0
