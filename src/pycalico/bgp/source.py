"""Feeding the renderer from a Datastore: one list per kind → compute → BirdManager.apply.

Owns: :func:`inputs_from_datastore` (the resource lists :func:`compute_bird_config` reads)
and :func:`sync` (one full reconcile pass: list, compute, render, write + reload). A daemon
calls :func:`sync` at start and whenever a watched kind changes (coalesced); every pass
computes the full desired config, so a lost event is repaired by the next pass.

Kinds read: Node, BGPConfiguration, BGPPeer, BGPFilter, IPPool, BlockAffinity (only this
node's), FelixConfiguration (programClusterRoutes), BFDConfiguration (timers) and, when the
store has them, Secret (for ``secretKeyRef`` passwords).
Invariant: read-only on the datastore.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pycalico.bgp.compute import compute_bird_config
from pycalico.bgp.inputs import secrets_from_resources
from pycalico.bgp.manager import BirdManager
from pycalico.bgp.model import BirdConfig
from pycalico.datastore.base import Datastore, DatastoreError

WATCHED_KINDS = (
    "Node",
    "BGPConfiguration",
    "BGPPeer",
    "BGPFilter",
    "IPPool",
    "BlockAffinity",
    "FelixConfiguration",  # programClusterRoutes: which pools Felix (not BIRD) programs
    "BFDConfiguration",  # BFD timers
)


def inputs_from_datastore(ds: Datastore, node_name: str) -> dict[str, Any]:
    """Keyword arguments for :func:`compute_bird_config` (without ``borrowed``)."""
    affinities = [
        a for a in ds.list("BlockAffinity").items if (a.get("spec") or {}).get("node") == node_name
    ]
    try:
        secrets = secrets_from_resources(ds.list("Secret").items)
    except DatastoreError:
        secrets = None
    return {
        "nodes": ds.list("Node").items,
        "bgp_configurations": ds.list("BGPConfiguration").items,
        "peers": ds.list("BGPPeer").items,
        "filters": ds.list("BGPFilter").items,
        "pools": ds.list("IPPool").items,
        "block_affinities": affinities,
        "felix_configurations": ds.list("FelixConfiguration").items,
        "bfd_configurations": ds.list("BFDConfiguration").items,
        "secrets": secrets,
    }


def sync(
    ds: Datastore, node_name: str, manager: BirdManager, borrowed: Iterable[str] = ()
) -> BirdConfig:
    """One reconcile pass; returns the config applied (``warnings`` says what was skipped)."""
    cfg = compute_bird_config(node_name, borrowed=borrowed, **inputs_from_datastore(ds, node_name))
    manager.apply(cfg)
    return cfg
