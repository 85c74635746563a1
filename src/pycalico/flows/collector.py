"""The flow-log collector: calico-node's component that turns NFLOG + conntrack into records.

Owns :class:`FlowCollector` (a supervisable component: ``start``/``stop``/``alive``/
``in_sync``), its reader thread (NFLOG groups 1 and 2 and conntrack events through
:mod:`pycalico.system.nfnetlink` and :mod:`pycalico.system.ctnetlink`), the
:class:`PeerResolver` (IP -> workload endpoint from the datastore, refreshed every few
seconds), the node's :class:`~pycalico.flows.store.
FlowStore` and the local HTTP API (:mod:`pycalico.flows.api`), and its Prometheus metrics
(:mod:`pycalico.flows.metrics`).

Settings come from the live Felix configuration (``settings()``): ``flowLogsFileEnabled``
switches the collector on and off without a restart (off: sockets closed, API answers 503
``disabled``); ``flowLogsFlushInterval`` is the bucket length; the store lives in
``flowLogsFileDirectory/flows.db``.

Cost: the reader makes at most one pass per ``_MIN_PASS_GAP`` (what queued meanwhile is
taken together: NFLOG batches, conntrack events, the due conntrack reads as one batched
GET), and runs as a SCHED_BATCH thread ``READER_NICE`` nicer than the process, so under
CPU pressure the workloads go first and the kernel's socket queues absorb the backlog.

Invariants: nothing here can affect forwarding (NFLOG is non-terminal; with no listener
the kernel discards the messages); a failure in the reader thread ends it (``alive()``
false: the supervisor restarts the collector, which logs what it lost: the open bucket's
records and the NFLOG/conntrack overruns); a collector that was killed is noticed by the next
one (``<flowLogsFileDirectory>/collector.running`` still there): it logs that the open
bucket since the marker's time was lost and reports it in ``/health`` (``lost``); the
records of a finished bucket are in the store before the next bucket starts (or counted as
lost).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pycalico.felix.rules.nflog import GROUP_ALLOWED, GROUP_DENIED, RuleRef
from pycalico.flows.aggregate import Aggregator, PendingEvaluator
from pycalico.flows.record import FlowRecord, Peer
from pycalico.flows.store import FlowFilter, FlowStore
from pycalico.model.felixconfig import FelixConfig
from pycalico.system.ctnetlink import ConntrackEvents
from pycalico.system.nfnetlink import (
    NflogPacket,
    NflogReorder,
    NflogSocket,
    parse_l3l4,
)

log = logging.getLogger(__name__)

_ACCT = "/proc/sys/net/netfilter/nf_conntrack_acct"
_MAX_BATCH = 512
# NFLOG batching: the kernel sends a group's queue at 64 messages or 20 ms after the first;
# the reader restores the logging order across groups (NflogReorder) before the aggregator
# joins a packet's messages (a Pass in group 1 with its deciding Deny in group 2).
_NFLOG_QTHRESH = 64
_NFLOG_FLUSH_CS = 2
_REORDER_MARGIN = 0.03
# Conntrack: DESTROY events only (UPDATE fires at every TCP state change); an allowed
# connection's entry is read this long after it settled (a closing one is closed there).
_POLL_AFTER = (0.5, 2.0, 5.0)
# At most one reader pass per this many seconds: under load each pass takes what queued
# meanwhile (NFLOG batches, conntrack events) and reads the due entries in one batch, so
# the per-pass cost is shared by many connections; an event on a quiet socket waits at most
# this long (the sockets' buffers hold 16 MB).
_MIN_PASS_GAP = 0.02
# The reader thread yields the CPU to the workloads whose traffic it records: SCHED_BATCH
# (its wakeups do not preempt a running task) and this much nicer than the process. When
# the machine is saturated it falls behind and the kernel's queues absorb it; what they
# cannot hold is counted (nflog/conntrack overruns), never taken from forwarding.
READER_NICE = 5


def _yield_to_workloads() -> None:
    """Lower the calling thread's scheduling priority (Linux: per thread; best effort)."""
    if not READER_NICE:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as e:
        log.debug("flow logs: SCHED_BATCH: %s", e)
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + READER_NICE)
    except OSError as e:
        log.debug("flow logs: nice: %s", e)


def _ip_len(payload: bytes) -> int:
    """The packet's length from its IPv4/IPv6 header (the copy may be cut short)."""
    if len(payload) >= 4 and payload[0] >> 4 == 4:
        return int.from_bytes(payload[2:4], "big")
    if len(payload) >= 6 and payload[0] >> 4 == 6:
        return 40 + int.from_bytes(payload[4:6], "big")
    return len(payload)


class PeerResolver:
    """IP -> :class:`Peer` from the WorkloadEndpoints in the datastore (``net`` when
    unknown), refreshed at most every ``refresh`` seconds and on a miss."""

    def __init__(self, ds: Any, refresh: float = 5.0) -> None:
        self.ds = ds
        self.refresh = refresh
        self._by_ip: dict[str, Peer] = {}
        self._loaded = -1e9
        self._lock = threading.Lock()

    def _load(self) -> None:
        by_ip: dict[str, Peer] = {}
        for wep in self.ds.list("WorkloadEndpoint").items:
            meta, spec = wep.get("metadata") or {}, wep.get("spec") or {}
            name = spec.get("workload") or spec.get("pod") or meta.get("name", "")
            labels = tuple(sorted((meta.get("labels") or {}).items()))
            for net in spec.get("ipNetworks") or ():
                ip = str(net).split("/")[0]
                by_ip[ip] = Peer("wep", ip, meta.get("namespace", ""), name, labels)
        self._by_ip = by_ip

    def __call__(self, ip: str) -> Peer:
        now = time.monotonic()
        peer = self._by_ip.get(ip)
        if peer is None or now - self._loaded > self.refresh:
            with self._lock:
                if now - self._loaded > min(self.refresh, 1.0):
                    try:
                        self._load()
                    except Exception as e:  # datastore outage: keep the last view
                        log.debug("flow logs: endpoint refresh failed: %s", e)
                    self._loaded = now
            peer = self._by_ip.get(ip)
        return peer if peer is not None else Peer("net", ip)


class FlowCollector:
    name = "flows"

    def __init__(
        self,
        node_name: str,
        settings: Callable[[], FelixConfig],
        attribution: Callable[[], Mapping[str, RuleRef]],
        resolve_peer: Callable[[str], Peer],
        *,
        pending: PendingEvaluator | None = None,
        api_host: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_name = node_name
        self.settings = settings
        self.attribution = attribution
        self.resolve_peer = resolve_peer
        self.pending = pending
        self.api_host = api_host
        self.clock = clock
        self.agg: Aggregator | None = None
        self.store: FlowStore | None = None
        self.api: Any = None
        self.enabled = False
        self.error = ""
        self.incarnations = 0
        self.lost: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.metrics: Any = None  # pycalico.flows.metrics.FlowMetrics, bound by the node
        self._metrics_at = 0.0
        self._marker = ""
        self._reorder = NflogReorder(0.0)
        self._last_pass = 0.0

    # --- component --------------------------------------------------------------------
    def start(self) -> None:
        self.incarnations += 1
        if self.incarnations > 1:
            log.warning("flow logs: collector restarted; lost before restart: %s", self.lost)
        self._stop.clear()
        cfg = self.settings()
        if self.api is None and cfg.flow_logs_api_port:
            self._serve_api(cfg)
        self._thread = threading.Thread(target=self._run, name="flow-collector", daemon=True)
        self._thread.start()

    def _serve_api(self, cfg: FelixConfig) -> None:
        """The flow API with the credentials of ``cfg`` (pycalico.flows.auth); problems
        are logged and never open it."""
        from pycalico.flows.api import FlowAPI
        from pycalico.flows.auth import bind_host, server_auth

        auth, problems = server_auth(cfg)
        host, why = bind_host(self.api_host or cfg.flow_logs_api_host, auth.tls is not None)
        for msg in [*problems, why]:
            if msg:
                log.warning("flow logs API: %s", msg)
        self.api = FlowAPI(self, auth)
        try:
            self.api.serve(host, cfg.flow_logs_api_port)
        except OSError as e:
            log.warning("flow logs API on %s port %s: %s", host, cfg.flow_logs_api_port, e)
            return
        log.info("flow logs API on %s://%s:%s (accepts %s)", self.api.scheme, host,
                 cfg.flow_logs_api_port, auth.describe())  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.api is not None:
            self.api.stop()
            self.api = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def in_sync(self) -> bool:
        return self.alive()

    # --- queries (the API) ------------------------------------------------------------
    def query(self, flt: FlowFilter, limit: int = 10000) -> list[FlowRecord]:
        """Stored records plus the open bucket's, oldest first."""
        out = self.store.query(flt, limit) if self.store is not None else []
        with self._lock:
            live = self.agg.snapshot(self.clock()) if self.agg is not None else []
        out += [r for r in live if flt.matches(r)]
        return out[-limit:]

    def health(self) -> dict[str, Any]:
        agg = self.agg
        return {
            "node": self.node_name,
            "enabled": self.enabled,
            "alive": self.alive(),
            "error": self.error,
            "restarts": max(self.incarnations - 1, 0),
            "lost": dict(self.lost),
            "aggregator": dict(agg.stats()) if agg is not None else {},
            "store": {
                "rows": self.store.count() if self.store is not None else 0,
                "lost": self.store.lost if self.store is not None else 0,
                "evicted": self.store.evicted if self.store is not None else 0,
            },
        }

    # --- the reader thread --------------------------------------------------------------
    def _open(self, cfg: FelixConfig) -> tuple[NflogSocket, ConntrackEvents]:
        try:
            with open(_ACCT, "w") as f:  # per-namespace byte/packet counters
                f.write("1")
        except OSError as e:
            log.warning("flow logs: cannot enable conntrack accounting: %s", e)
        nfl = NflogSocket(
            (GROUP_ALLOWED, GROUP_DENIED), qthresh=_NFLOG_QTHRESH, flush_cs=_NFLOG_FLUSH_CS
        )
        self._reorder = NflogReorder(nfl.flush_s + _REORDER_MARGIN)
        ct = ConntrackEvents(updates=False)  # entries are read after they settle instead
        if self.store is None:
            path = os.path.join(cfg.flow_logs_file_directory, "flows.db")
            self.store = FlowStore(
                path, cfg.flow_logs_file_max_file_size_mb << 20, cfg.flow_logs_retention
            )
        self._marker = os.path.join(cfg.flow_logs_file_directory, "collector.running")
        self._check_unclean()
        with self._lock:
            self.agg = Aggregator(
                self.node_name,
                self._resolve_ref,
                self.resolve_peer,
                interval=cfg.flow_logs_flush_interval,
                max_conns=cfg.flow_logs_max_flows,
                max_flows=cfg.flow_logs_max_flows,
                counters=ct.get_many,
                pending=self.pending,
                now=self.clock(),
                poll_after=_POLL_AFTER,
            )
        return nfl, ct

    def _check_unclean(self) -> None:
        """A marker left by a collector that did not stop cleanly (killed, crashed): its
        open bucket (records since the marker's time) is lost; say so, then re-mark."""
        try:
            with open(self._marker) as f:
                since = float(f.read().strip() or 0)
            self.lost["unclean_restarts"] = self.lost.get("unclean_restarts", 0) + 1
            self.lost["lost_since"] = int(since)
            log.warning(
                "flow logs: the previous collector did not stop cleanly; the records of its "
                "open bucket (from %s) are lost",
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)),
            )
        except (OSError, ValueError):
            pass
        self._mark()

    def _mark(self) -> None:
        agg = self.agg
        start = agg.bucket_start if agg is not None else self.clock()
        try:
            with open(self._marker, "w") as f:
                f.write(f"{start}\n")
        except OSError as e:
            log.debug("flow logs: marker %s: %s", self._marker, e)

    def _resolve_ref(self, prefix: str) -> RuleRef | None:
        return self.attribution().get(prefix)

    def _run(self) -> None:
        socks: tuple[NflogSocket, ConntrackEvents] | None = None
        _yield_to_workloads()
        try:
            while not self._stop.is_set():
                cfg = self.settings()
                if cfg.flow_logs_file_enabled != self.enabled or (socks is None and self.enabled):
                    if socks is not None:
                        self._finish(socks)
                        socks = None
                    self.enabled = cfg.flow_logs_file_enabled
                    if self.enabled:
                        socks = self._open(cfg)
                        log.info("flow logs: collecting (NFLOG groups 1, 2; conntrack)")
                if socks is None:
                    self._stop.wait(1.0)
                    continue
                self._poll(*socks)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            log.exception("flow logs: collector failed")
            raise
        finally:
            if socks is not None:
                self._finish(socks)

    def _poll(self, nfl: NflogSocket, ct: ConntrackEvents) -> None:
        gap = self._last_pass + _MIN_PASS_GAP - time.monotonic()
        if gap > 0:
            self._stop.wait(gap)
        due = self._reorder.next_due()
        wait = 0.1 if due is None else min(0.1, max(0.0, due - time.monotonic()))
        ready, _, _ = select.select([nfl, ct], [], [], wait)
        if ready:
            self._last_pass = time.monotonic()
        now = self.clock()
        with self._lock:
            agg = self.agg
            assert agg is not None
            for _ in range(_MAX_BATCH if nfl in ready else 0):
                pkts = nfl.read(0)
                if pkts is None:
                    break
                self._feed(agg, now, self._reorder.push(time.monotonic(), pkts))
            self._feed(agg, now, self._reorder.pop_ready(time.monotonic()))
            for _ in range(_MAX_BATCH if ct in ready else 0):
                evs = ct.read(0, keep=agg.conns.__contains__)  # only tracked connections
                if evs is None:
                    break
                for ev in evs:
                    agg.on_ct(now, ev)
            done = agg.tick(now)
        self.lost["nflog_overruns"] = nfl.overruns
        self.lost["conntrack_overruns"] = ct.overruns
        self.lost["nflog_malformed"] = nfl.malformed
        if done:
            if self.store is not None and not self.store.append(done):
                self.lost["records"] = self.lost.get("records", 0) + len(done)
            self._mark()  # the open bucket now starts later
        if self.metrics is not None and now - self._metrics_at >= 1.0:
            self._metrics_at = now
            self.metrics.update(self)

    @staticmethod
    def _feed(agg: Aggregator, now: float, pkts: list[NflogPacket]) -> None:
        for p in pkts:
            agg.on_nflog(now, p.prefix, parse_l3l4(p.payload), _ip_len(p.payload))

    def _finish(self, socks: tuple[NflogSocket, ConntrackEvents]) -> None:
        """Close the sockets; the open bucket goes to the store (best effort)."""
        for s in socks:
            s.close()
        with self._lock:
            agg, self.agg = self.agg, None
            if agg is not None:  # what the reorder buffer still holds, in logging order
                self._feed(agg, self.clock(), self._reorder.pop_ready(float("inf")))
        if agg is not None and self.store is not None:
            self.store.append(agg.snapshot(self.clock()))
        try:
            os.unlink(self._marker)
        except OSError:
            pass
