"""The Felix policy agent: datastore syncer -> calc graph -> rules renderer -> NftTable.

Owns one owner thread (:class:`Felix`) that drains the syncer's queue (coalescing bursts:
everything queued is applied to the graph before one flush/render/apply), renders, and
reconciles one ``calico`` table per family; plus a periodic resync
(``nftablesRefreshInterval``) that reads the tables back and repairs drift.

Invariants (DESIGN.md §4, principles 2, 3, 7):
- Only the owner thread touches the graph, the renderer and the tables; the syncer thread
  only enqueues.
- Nothing is programmed before the graph has seen the datastore's full state (its
  ``InSync`` message); until then a previous agent's table stays in place, and the first
  apply replaces it atomically.
- A failed apply is retried with back-off; the kernel is never left half-programmed (each
  apply is one nft transaction).

CLI: ``python -m pycalico.felix.agent --node NAME`` (datastore from ``DATASTORE_TYPE`` /
``CALICO_DATASTORE_PATH`` / ``ETCD_ENDPOINTS`` like every command); run it under
``ip netns exec NODE`` to police that namespace.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from pycalico.datastore import Datastore, EventType, prefix_for
from pycalico.datastore.syncer import QueueCallbacks, Syncer, SyncStatus, SyncUpdate
from pycalico.felix.calc import CalcGraph
from pycalico.felix.config import FelixSettings, resolve_settings
from pycalico.felix.dataplane import NftError, NftRunner, NftTable
from pycalico.felix.rules import TABLE, RuleRenderer

log = logging.getLogger(__name__)

#: Storage kinds Felix watches (policy model + its own configuration).
FELIX_KINDS = (
    "WorkloadEndpoint",
    "HostEndpoint",
    "Profile",
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "KubernetesNetworkPolicy",
    "Tier",
    "NetworkSet",
    "GlobalNetworkSet",
    "Namespace",
    "ServiceAccount",
    "FelixConfiguration",
)
_FELIX_CONFIG_PREFIX = prefix_for("FelixConfiguration")


class Felix:
    """See the module docstring. ``overrides`` use FelixConfiguration field names (e.g.
    ``{"nftablesRefreshInterval": 2}``) and win over the datastore and ``env``."""

    def __init__(
        self,
        node_name: str,
        datastore: Datastore,
        nft_runner: NftRunner,
        *,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        table: str = TABLE,
        retry_interval: float = 1.0,
        syncer_poll_interval: float = 0.5,
    ) -> None:
        self.node_name = node_name
        self.datastore = datastore
        self.runner = nft_runner
        self.table_name = table
        self._overrides = dict(overrides or {})
        self._env = dict(env or {})
        self._felix_configs: dict[str, Mapping[str, Any]] = {}
        self.settings: FelixSettings = resolve_settings(node_name, {}, self._env, self._overrides)
        self.graph = CalcGraph(node_name)
        self.renderer = RuleRenderer(self.settings.render_config(), self.settings.families(), table)
        self.tables = {f: NftTable(nft_runner, f, table) for f in self.settings.families()}
        self._callbacks = QueueCallbacks()
        self._syncer = Syncer.for_kinds(
            datastore,
            FELIX_KINDS,
            self._callbacks,
            poll_interval=syncer_poll_interval,
            name=f"felix-syncer-{node_name}",
        )
        self._retry_interval = retry_interval
        self._stop = threading.Event()
        self._in_sync = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"felix-{node_name}", daemon=True)
        self._next_refresh = 0.0
        self._retry_at: float | None = None
        self._lock = threading.Lock()
        self.counters: dict[str, float] = {
            "updates": 0,
            "batches": 0,
            "applies": 0,
            "apply_seconds_total": 0.0,
            "last_apply_seconds": 0.0,
            "resyncs": 0,
            "apply_failures": 0,
            "iterations": 0,
            "settled_updates": 0,
            "active_local_endpoints": 0,
            "active_local_policies": 0,
            "active_profiles": 0,
            "ipsets": 0,
        }
        self.error: BaseException | None = None

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> Felix:
        self._syncer.start()
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop syncing and the owner loop; the programmed tables stay in place."""
        self._stop.set()
        self._syncer.stop(timeout)
        self._callbacks.queue.put([])  # wake the owner loop
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def alive(self) -> bool:
        """The owner thread is running."""
        return self._thread.is_alive()

    def wait_in_sync(self, timeout: float | None = None) -> bool:
        """True once the dataplane was programmed from a complete datastore view."""
        return self._in_sync.wait(timeout)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (for metrics) plus per-table driver stats.

        Keys: ``updates``, ``batches``, ``applies``, ``apply_seconds_total``,
        ``last_apply_seconds``, ``resyncs``, ``apply_failures``, ``iterations``,
        ``settled_updates`` (updates whose effect is programmed), ``active_local_endpoints``,
        ``active_local_policies``, ``active_profiles``, ``ipsets``, ``in_sync``, and
        ``table_<family>`` (the NftTable's :class:`TableStats` as a dict).
        """
        with self._lock:
            out: dict[str, Any] = dict(self.counters)
        out["in_sync"] = self._in_sync.is_set()
        for fam, t in self.tables.items():
            out[f"table_{fam}"] = vars(t.stats).copy()
        return out

    # --- owner loop ---------------------------------------------------------------------
    def _run(self) -> None:
        q = self._callbacks.queue
        while not self._stop.is_set():
            timeout = self._wait_time()
            try:
                first = q.get(timeout=timeout)
                batch = [first]
                while True:
                    try:
                        batch.append(q.get_nowait())
                    except queue.Empty:
                        break
            except queue.Empty:
                batch = []
            if self._stop.is_set():
                return
            try:
                self._process(batch)
                self._maybe_apply()
            except Exception as e:  # keep the loop alive; retry later (fail safe: no flush)
                log.exception("felix %s: error in owner loop", self.node_name)
                self.error = e
                self._retry_at = time.monotonic() + self._retry_interval
            with self._lock:
                self.counters["iterations"] += 1
                # Updates whose effect is fully programmed (or that changed nothing).
                self.counters["settled_updates"] = self.counters["updates"]

    def _wait_time(self) -> float:
        now = time.monotonic()
        deadlines = [self._next_refresh] if self._in_sync.is_set() else []
        if self._retry_at is not None:
            deadlines.append(self._retry_at)
        if not deadlines:
            return 1.0
        return max(0.0, min(min(deadlines) - now, 1.0))

    def _process(self, batch: list[SyncStatus | list[SyncUpdate]]) -> None:
        n = 0
        config_changed = False
        for item in batch:
            if isinstance(item, SyncStatus):
                if item is SyncStatus.IN_SYNC:
                    self.graph.on_in_sync()
                continue
            for u in item:
                n += 1
                obj = None if u.type is EventType.DELETED else u.obj
                if u.key.startswith(_FELIX_CONFIG_PREFIX):
                    name = str(u.obj.get("metadata", {}).get("name", ""))
                    if obj is None:
                        self._felix_configs.pop(name, None)
                    else:
                        self._felix_configs[name] = dict(obj.get("spec") or {})
                    config_changed = True
                    continue
                self.graph.on_update(u.key, obj)
        if config_changed:
            self._reconfigure()
        if n or batch:
            msgs = self.graph.flush()
            if msgs:
                self.renderer.apply(msgs)
                if self.renderer.in_sync:
                    specs = self.renderer.tables()
                    for fam, t in self.tables.items():
                        t.set_desired(specs[fam])
        with self._lock:
            self.counters["updates"] += n
            self.counters["batches"] += 1 if n else 0
            self.counters.update(self.renderer.counts())

    def _reconfigure(self) -> None:
        s = resolve_settings(self.node_name, self._felix_configs, self._env, self._overrides)
        if s == self.settings:
            return
        if s.families() != self.settings.families():
            log.warning("felix %s: ipv6Support changes need a restart; ignored", self.node_name)
            s = FelixSettings(**{**vars(s), "ipv6_support": self.settings.ipv6_support})
        self.settings = s
        self.renderer.set_config(s.render_config())
        if self.renderer.in_sync:
            specs = self.renderer.tables()
            for fam, t in self.tables.items():
                t.set_desired(specs[fam])

    def _maybe_apply(self) -> None:
        if not self.renderer.in_sync:
            return
        now = time.monotonic()
        if self._in_sync.is_set() and now >= self._next_refresh:
            for t in self.tables.values():
                t.request_resync()
            with self._lock:
                self.counters["resyncs"] += 1
        if not any(t.dirty for t in self.tables.values()):
            return
        if self._retry_at is not None and now < self._retry_at:
            return
        t0 = time.monotonic()
        try:
            for t in self.tables.values():
                t.apply()
        except NftError as e:
            log.error("felix %s: programming nftables failed: %s", self.node_name, e)
            self.error = e
            self._retry_at = time.monotonic() + self._retry_interval
            with self._lock:
                self.counters["apply_failures"] += 1
            return
        self._retry_at = None
        dt = time.monotonic() - t0
        if not self._in_sync.is_set() or now >= self._next_refresh:
            self._next_refresh = time.monotonic() + self.settings.nftables_refresh_interval
        with self._lock:
            self.counters["applies"] += 1
            self.counters["apply_seconds_total"] += dt
            self.counters["last_apply_seconds"] = dt
        if not self._in_sync.is_set():
            log.info("felix %s: in sync; dataplane programmed in %.3fs", self.node_name, dt)
            self._in_sync.set()


def main(argv: list[str] | None = None) -> int:
    from pycalico.config import ConfigError, load_config
    from pycalico.datastore import open_datastore
    from pycalico.errors import CalicoError
    from pycalico.felix.dataplane import SubprocessNftRunner

    p = argparse.ArgumentParser(prog="python -m pycalico.felix.agent")
    p.add_argument("--node", default=os.environ.get("NODENAME", ""), help="this node's name")
    p.add_argument("--refresh-interval", type=float, default=None,
                   help="nftablesRefreshInterval override (seconds)")  # fmt: skip
    p.add_argument("--log-level", default=os.environ.get("FELIX_LOGSEVERITYSCREEN", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.node:
        print("error: --node (or NODENAME) is required", file=sys.stderr)
        return 2
    try:
        ds = open_datastore(load_config())
    except (ConfigError, CalicoError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    overrides: dict[str, Any] = {}
    if args.refresh_interval is not None:
        overrides["nftablesRefreshInterval"] = args.refresh_interval
    felix = Felix(args.node, ds, SubprocessNftRunner(), overrides=overrides, env=os.environ)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    felix.start()
    announced = False
    while not done.wait(0.2):
        if not announced and felix.wait_in_sync(0):
            print(f"felix {args.node}: in sync", file=sys.stderr, flush=True)
            announced = True
    felix.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
