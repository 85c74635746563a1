"""pycalico.ipam: Calico IP address management (blocks, affinities, handles) over a Datastore.

Public API: :class:`IPAM` (allocator), :class:`Block` (pure block logic), :class:`Pool`,
:class:`IPAMConfig`, the typed errors, and :mod:`pycalico.ipam.gc` (leak check and repair).
"""

from pycalico.ipam.allocator import IPAM, TUNNEL_TYPES, AllocationInfo
from pycalico.ipam.block import Block, cidr_name, host_affinity, reserved_ordinals
from pycalico.ipam.errors import (
    AddressNotInBlock,
    AlreadyAllocated,
    BadSequenceNumber,
    BlockClaimConflict,
    BlockNotEmpty,
    InvalidIPAMConfig,
    IPAMError,
    NoAddressesAvailable,
    NotInPool,
    TooManyRetries,
)
from pycalico.ipam.lock import DEFAULT_LOCK_PATH, HostLock
from pycalico.ipam.pools import USE_TUNNEL, USE_WORKLOAD, IPAMConfig, Pool

__all__ = [
    "DEFAULT_LOCK_PATH",
    "IPAM",
    "TUNNEL_TYPES",
    "USE_TUNNEL",
    "USE_WORKLOAD",
    "AddressNotInBlock",
    "AllocationInfo",
    "AlreadyAllocated",
    "BadSequenceNumber",
    "Block",
    "BlockClaimConflict",
    "BlockNotEmpty",
    "HostLock",
    "IPAMConfig",
    "IPAMError",
    "InvalidIPAMConfig",
    "NoAddressesAvailable",
    "NotInPool",
    "Pool",
    "TooManyRetries",
    "cidr_name",
    "host_affinity",
    "reserved_ordinals",
]
