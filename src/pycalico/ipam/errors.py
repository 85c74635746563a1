"""Typed IPAM errors (all subclasses of :class:`pycalico.errors.CalicoError`).

Library code in ``pycalico.ipam`` raises only these (or datastore errors it cannot handle);
the CLI and CNI edges turn them into messages and exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence

from pycalico.errors import CalicoError


class IPAMError(CalicoError):
    """Base of IPAM errors."""


class BadSequenceNumber(IPAMError):
    """A release named a sequence number that no longer matches the allocation (stale)."""


class AddressNotInBlock(IPAMError, ValueError):
    """An address outside the block's CIDR was given to the block."""


class AlreadyAllocated(IPAMError):
    """A specific address was requested but is already allocated."""


class NotInPool(IPAMError, ValueError):
    """An address or CIDR is not inside any configured IP pool."""


class InvalidIPAMConfig(IPAMError, ValueError):
    """IPAMConfiguration values that are out of range or inconsistent."""


class BlockNotEmpty(IPAMError):
    """Affinity release with ``must_be_empty`` on a block that still has allocations."""


class BlockClaimConflict(IPAMError):
    """Another host claimed the block first."""


class TooManyRetries(IPAMError):
    """A compare-and-swap loop did not converge within the retry bound."""


class NoAddressesAvailable(IPAMError):
    """The request cannot be satisfied from the usable pools (exhausted or none usable)."""

    def __init__(
        self, pools: Sequence[str], requested: int = 0, version: int = 4, detail: str = ""
    ) -> None:
        self.pools = list(pools)
        self.requested = requested
        self.version = version
        msg = f"no addresses available in pools [{', '.join(self.pools)}]"
        if requested:
            msg += f" (requested {requested} IPv{version} address{'es' if requested > 1 else ''})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)
