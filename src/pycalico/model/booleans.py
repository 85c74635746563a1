"""The ONE boolean-setting parser of pycalico (env vars, settings files, CLI flags, config).

Owns :func:`parse_bool` and :func:`env_flag`. Accepted spellings, case-insensitive and with
surrounding blanks ignored: ``true``/``false``, ``1``/``0``, ``yes``/``no``, ``y``/``n``,
``t``/``f``, ``on``/``off`` (a superset of Go's ``strconv.ParseBool``, which Calico's
components use for their environment). Python ``bool`` values pass through.

Invariant: pure; anything else raises :class:`BooleanError` naming the setting, never a
silent false (a typo such as ``CALICO_DNS_ENABLED=flase`` is an error, not "off").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pycalico.model.types import ModelError

TRUE_WORDS = ("true", "1", "yes", "y", "t", "on")
FALSE_WORDS = ("false", "0", "no", "n", "f", "off")
#: Every accepted spelling (for settings-file validation and docs).
BOOL_WORDS = TRUE_WORDS + FALSE_WORDS


class BooleanError(ModelError):
    """A boolean setting has a value that is neither true nor false."""


def parse_bool(value: Any, name: str) -> bool:
    """``value`` as a bool; :class:`BooleanError` naming ``name`` (when given: callers that
    add the field's name themselves pass "") when it is not one."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    shown = str(value)[:40]
    prefix = f"{name}: " if name else ""
    raise BooleanError(f"{prefix}expected true or false, got {shown!r}")


def env_flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    """``env[key]`` as a bool; unset or blank means ``default``."""
    raw = env.get(key)
    if raw is None or not raw.strip():
        return default
    return parse_bool(raw, key)
