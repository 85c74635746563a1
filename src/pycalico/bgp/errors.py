"""Typed errors of the BGP package (renderer, BIRD process control, control socket).

Invariant: every error raised on purpose by ``pycalico.bgp`` is a :class:`BgpError`
(itself a :class:`~pycalico.errors.CalicoError`); only CLI/daemon edges map them to exit codes.
"""

from __future__ import annotations

from pycalico.errors import CalicoError


class BgpError(CalicoError):
    """Base of every error of ``pycalico.bgp``."""


class BgpInputError(BgpError, ValueError):
    """A datastore resource cannot be turned into BIRD configuration.

    ``field`` names the offending field (``kind/name: spec.path``), ``reason`` says why.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class BirdConfigInvalid(BgpError):
    """``bird -p -c`` rejected a rendered configuration (``output`` holds BIRD's message)."""

    def __init__(self, path: str, output: str) -> None:
        super().__init__(f"BIRD rejected config {path}: {output.strip()}")
        self.path = path
        self.output = output


class BirdControlError(BgpError):
    """The BIRD control socket failed or BIRD answered with an error reply code."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class BirdNotRunning(BirdControlError):
    """Nothing listens on the BIRD control socket (no socket file / connection refused)."""
