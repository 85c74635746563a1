"""pycalico.bgp: BGP for pycalico nodes with BIRD 2.

Pipeline: v3 resource dicts → :func:`compute_bird_config` (pure, typed :class:`BirdConfig`)
→ :func:`render_bird_config` (jinja2 ``bird.cfg.j2``, formatting only) → :class:`BirdManager`
(atomic write + ``bird -p`` check, supervised ``bird -f``, ``configure`` reloads) and
:class:`BirdControl` (control socket, ``show protocols`` → :class:`ProtocolRow`).

Kernel routes BIRD programs carry route protocol 12 (``bird``) and metric 32.
"""

from pycalico.bgp.compute import compute_bird_config
from pycalico.bgp.control import BirdControl, ProtocolRow, Reply, parse_show_protocols
from pycalico.bgp.errors import (
    BgpError,
    BgpInputError,
    BirdConfigInvalid,
    BirdControlError,
    BirdNotRunning,
)
from pycalico.bgp.inputs import PASSWORD_ANNOTATION, SecretLookup, secrets_from_resources
from pycalico.bgp.manager import BirdManager
from pycalico.bgp.model import (
    KERNEL_METRIC,
    KERNEL_ROUTE_PROTOCOL,
    BirdConfig,
    BirdPeer,
    FamilyConfig,
    FilterFunction,
    FilterRule,
    PeerType,
    peer_protocol_name,
)
from pycalico.bgp.render import render_bird_config
from pycalico.bgp.source import WATCHED_KINDS, inputs_from_datastore, sync

__all__ = [
    "KERNEL_METRIC",
    "KERNEL_ROUTE_PROTOCOL",
    "PASSWORD_ANNOTATION",
    "WATCHED_KINDS",
    "BgpError",
    "BgpInputError",
    "BirdConfig",
    "BirdConfigInvalid",
    "BirdControl",
    "BirdControlError",
    "BirdManager",
    "BirdNotRunning",
    "BirdPeer",
    "FamilyConfig",
    "FilterFunction",
    "FilterRule",
    "PeerType",
    "ProtocolRow",
    "Reply",
    "SecretLookup",
    "compute_bird_config",
    "inputs_from_datastore",
    "parse_show_protocols",
    "peer_protocol_name",
    "render_bird_config",
    "secrets_from_resources",
    "sync",
]
