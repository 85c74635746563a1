"""Typed errors of the rules renderer."""

from __future__ import annotations

from pycalico.errors import CalicoError


class RenderError(CalicoError, ValueError):
    """Invalid renderer input or configuration (names the field and the reason)."""
