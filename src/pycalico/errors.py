"""Base of pycalico's typed error hierarchy.

Library code raises subclasses of :class:`CalicoError`; only the edges (CLI, CNI plugin,
daemon mains) turn them into exit codes or CNI error JSON.
"""


class CalicoError(Exception):
    """Base class of every error pycalico raises on purpose."""
