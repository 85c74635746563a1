"""BGP component of calico-node: datastore → :func:`compute_bird_config` → BIRD.

Owns (the job of Calico's confd + runit's bird service):
- a :class:`Syncer` (or, given the node's :class:`SyncerHub`, a subscription to it) over
  BGPConfiguration, Node, BGPPeer, BGPFilter, IPPool, BlockAffinity,
  IPAMBlock, Secret (peer passwords) and BFDConfiguration; every change marks the config
  dirty, and one worker thread recomputes after a short coalescing delay (a burst of pod adds is one
  recompute), renders and hands the result to :class:`BirdManager` (which writes only
  changed text and soft-reconfigures);
- starting BIRD the first time a config exists, and adopting a BIRD that a previous
  calico-node incarnation started (kill -9 of the agent leaves BIRD and its sessions up:
  the new agent finds ``bird.pid`` naming a live ``bird`` with our config path, keeps it and
  reconfigures it over the socket; established routes are never withdrawn);
- stopping BIRD on :meth:`stop` (SIGTERM of the agent) with BIRD's ``graceful restart``
  command: BIRD exits without a Cease, so peers (graceful restart is on in every session)
  keep this node's routes as stale for the restart time (120 s) and the next agent's BIRD
  re-establishes and refreshes them; BIRD's kernel protocol has ``persist``, so this node's
  own kernel routes stay too, and the next BIRD starts in graceful restart recovery (``-R``,
  see :class:`BirdManager`), so it keeps them until its sessions reconverged instead of
  deleting them on its first kernel scan. (Calico's BIRD also just dies with the container;
  this keeps cross-node traffic flowing across an agent restart, a BIRD crash or an
  upgrade.)
- the BFD guard (:class:`~pycalico.bgp.bfdguard.BfdGuard`, its own thread, polling only
  while a peer is BFD-tracked): a BFD-tracked session that BFD took down while established
  is restarted (its routes withdrawn at once); one whose peer's BIRD closed it first is left
  to graceful restart (BIRD's ``bfd graceful`` alone would keep a dead peer's routes 120 s).

Invariants: IPAM changes that cannot alter this node's config (other nodes' affinities and
blocks, unless they hold an address borrowed by this node) do not trigger a recompute; a
compute error (e.g. this Node has no address yet) is recorded in
:attr:`last_error` and retried on the next change, never raised out of the worker; only the
PID we started or adopted (verified by ``/proc/<pid>/cmdline``) is ever signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

from pycalico.bgp import (
    BirdManager,
    ProtocolRow,
    compute_bird_config,
    render_bird_config,
    secrets_from_resources,
)
from pycalico.bgp.bfdguard import BfdGuard
from pycalico.bgp.errors import BgpError
from pycalico.datastore import Datastore, EventType
from pycalico.datastore.hub import SyncerHub, SyncSource
from pycalico.datastore.syncer import Syncer, SyncStatus, SyncUpdate
from pycalico.model import ModelError
from pycalico.model.network import Block

log = logging.getLogger(__name__)

BGP_KINDS = (
    "BGPConfiguration",
    "Node",
    "BGPPeer",
    "BGPFilter",
    "IPPool",
    "BlockAffinity",
    "IPAMBlock",
    "Secret",  # BGPPeer passwords by secretKeyRef (stored like any other resource)
    "FelixConfiguration",  # programClusterRoutes (route ownership)
    "BFDConfiguration",  # BFD timers
)
COALESCE_S = 0.1


def borrowed_ips(blocks: Iterable[dict[str, Any]], node_name: str) -> list[str]:
    """Addresses held by ``node_name`` inside blocks affine to another host (the model's
    :attr:`Block.borrowed`, as Felix's route calc sees them; a block marked deleted has none,
    a malformed block is logged and skipped)."""
    out: list[str] = []
    for b in blocks:
        try:
            block = Block.from_resource(b)
        except ModelError as e:
            log.warning("ignoring invalid IPAMBlock: %s", e)
            continue
        if block is None or block.node == node_name:
            continue
        out.extend(str(addr) for addr, holder in block.borrowed if holder == node_name)
    return out


def _pid_is_our_bird(pid: int, config_path: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return False
    return bool(args) and os.path.basename(args[0]).startswith("bird") and config_path in args


class BgpComponent:
    """Supervised component (see :class:`pycalico.node.supervisor.Component`)."""

    name = "bgp"

    def __init__(
        self,
        ds: Datastore,
        node_name: str,
        state_dir: str,
        socket_path: str,
        *,
        bird_binary: str = "bird",
        coalesce: float = COALESCE_S,
        manager: BirdManager | None = None,
        graceful_stop: bool = True,
        hub: SyncerHub | None = None,
    ) -> None:
        self.ds = ds
        self.hub = hub
        self.node_name = node_name
        self.coalesce = coalesce
        self.graceful_stop = graceful_stop
        self.manager = manager or BirdManager(
            os.path.join(state_dir, "bird.cfg"),
            socket_path,
            os.path.join(state_dir, "bird.pid"),
            bird_binary=bird_binary,
            log_path=os.path.join(state_dir, "bird.log"),
        )
        self.last_error = ""
        self.applies = 0
        self.adopted_pid: int | None = None
        self._borrowed: dict[str, list[str]] = {}
        self.computes = 0
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._configured = threading.Event()
        self._syncer: SyncSource | None = None
        self._worker: threading.Thread | None = None
        self.bfd_guard = BfdGuard(self.manager.control)
        self._guard: threading.Thread | None = None

    # -- syncer callbacks ------------------------------------------------------------------
    def on_status(self, status: SyncStatus) -> None:
        if status is SyncStatus.IN_SYNC:
            self._synced.set()
            self._dirty.set()

    def on_updates(self, updates: list[SyncUpdate]) -> None:
        if any(self._relevant(u) for u in updates):
            self._dirty.set()

    def _relevant(self, u: SyncUpdate) -> bool:
        """IPAM churn elsewhere in the cluster does not change this node's BIRD config: only
        our own affinities and addresses we hold in others' blocks (borrowed) matter."""
        kind = u.obj.get("kind")
        if kind == "BlockAffinity":
            return (u.obj.get("spec") or {}).get("node") == self.node_name
        if kind == "IPAMBlock":
            new = [] if u.type is EventType.DELETED else borrowed_ips([u.obj], self.node_name)
            old = self._borrowed.pop(u.key, [])
            if new:
                self._borrowed[u.key] = new
            return new != old
        return True

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._adopt_existing()
        if self.hub is not None:
            self._syncer = self.hub.syncer_for(BGP_KINDS, self, name="bgp").start()
        else:
            self._syncer = Syncer.for_kinds(self.ds, BGP_KINDS, self, name="bgp-syncer").start()
        self._worker = threading.Thread(target=self._run, name="bgp-worker", daemon=True)
        self._worker.start()
        self._guard = threading.Thread(
            target=self.bfd_guard.run, args=(self._stop,), name="bgp-bfd-guard", daemon=True
        )
        self._guard.start()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._syncer is not None:
            self._syncer.stop()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(5)
        if self._guard is not None and self._guard is not threading.current_thread():
            self._guard.join(5)
        if self.graceful_stop and self.bird_running():
            # BIRD leaves without a Cease: peers keep our routes (stale) for the graceful
            # restart time, so traffic to this node's pods keeps flowing while we restart.
            try:
                self.manager.control.command("graceful restart")
            except BgpError as e:
                log.warning("BIRD graceful restart: %s", e)
        pid = self.adopted_pid
        self.manager.stop()
        if pid is not None:
            deadline = time.monotonic() + 5
            while _pid_is_our_bird(pid, self.manager.config_path) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_is_our_bird(pid, self.manager.config_path):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        self.adopted_pid = None

    def alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def in_sync(self) -> bool:
        return self._synced.is_set() and self._configured.is_set()

    # -- BIRD process ----------------------------------------------------------------------
    def _adopt_existing(self) -> None:
        try:
            with open(self.manager.pid_path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return
        if pid > 0 and _pid_is_our_bird(pid, self.manager.config_path):
            log.info("adopting running BIRD pid %d", pid)
            self.adopted_pid = pid

    def num_nodes(self) -> int:
        syncer = self._syncer
        if syncer is None:
            return 0
        return sum(1 for o in syncer.snapshot().values() if o.get("kind") == "Node")

    def bird_running(self) -> bool:
        if self.manager.running:
            return True
        pid = self.adopted_pid
        return pid is not None and _pid_is_our_bird(pid, self.manager.config_path)

    def protocols(self) -> list[ProtocolRow] | None:
        if not self.bird_running():
            return None
        try:
            return self.manager.protocols()
        except BgpError:
            return None

    def _ensure_bird(self, changed: bool) -> None:
        if self.adopted_pid is not None:
            if _pid_is_our_bird(self.adopted_pid, self.manager.config_path):
                if changed:
                    self.manager.reload()
                return
            log.warning("adopted BIRD pid %d is gone; starting a new one", self.adopted_pid)
            self.adopted_pid = None
        if not self.manager.running:
            self.manager.start()

    # -- worker ----------------------------------------------------------------------------
    def compute_text(self) -> str:
        syncer = self._syncer
        if syncer is None:
            raise BgpError("not started")
        self.computes += 1
        by_kind: dict[str, list[dict[str, Any]]] = {k: [] for k in BGP_KINDS}
        for obj in syncer.snapshot().values():
            kind = obj.get("kind", "")
            if kind in by_kind:
                by_kind[kind].append(obj)
        cfg = compute_bird_config(
            self.node_name,
            nodes=by_kind["Node"],
            bgp_configurations=by_kind["BGPConfiguration"],
            peers=by_kind["BGPPeer"],
            filters=by_kind["BGPFilter"],
            pools=by_kind["IPPool"],
            block_affinities=by_kind["BlockAffinity"],
            borrowed=borrowed_ips(by_kind["IPAMBlock"], self.node_name),
            felix_configurations=by_kind["FelixConfiguration"],
            bfd_configurations=by_kind["BFDConfiguration"],
            secrets=secrets_from_resources(by_kind["Secret"]),
        )
        for w in cfg.warnings:
            log.warning("BGP: %s", w)
        bfd_peers: dict[str, list[str]] = {}
        for fam in cfg.families:
            for p in fam.peers:
                if p.bfd:
                    bfd_peers.setdefault(p.ip, []).append(p.name)
        self.bfd_guard.set_peers(bfd_peers)
        return render_bird_config(cfg)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._dirty.wait(2.0):
                # Periodic check: an adopted BIRD is not supervised by BirdManager.
                if self._configured.is_set() and not self.bird_running():
                    self._dirty.set()
                continue
            if self._stop.is_set():
                return
            if not self._synced.is_set():
                continue
            time.sleep(self.coalesce)  # coalesce a burst of changes into one recompute
            self._dirty.clear()
            try:
                text = self.compute_text()
                changed = self.manager.write_config(text)
                self._ensure_bird(changed)
                if changed and self.manager.running and self.applies:
                    self.manager.reload()
                self.applies += 1
                self._configured.set()
                self.last_error = ""
            except Exception as e:
                if str(e) != self.last_error:
                    log.warning("BGP config not applied: %s", e)
                self.last_error = str(e)
                self._dirty.set()
                self._stop.wait(1.0)
