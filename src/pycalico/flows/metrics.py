"""Prometheus metrics of the flow-log collector, on calico-node's metrics registry.

Names follow Cilium's ``cilium_policy_verdict_total`` and Calico's ``calico_denied_packets``
/ ``calico_denied_bytes`` where they exist:

- ``calico_policy_verdict_total{tier,policy,rule,direction,action}`` — policy evaluations
  (first packets of connections) that ended at a rule (``rule`` "" = end of tier /
  no-profile-match);
- ``calico_denied_packets_total{policy}`` — denied first packets, ``policy`` in Calico's
  ``tier|name|rule|action`` form;
- collector health: ``calico_flowlogs_collector_up``, ``calico_flowlogs_nflog_messages_total``,
  ``calico_flowlogs_dropped_total{reason}`` (unknown_prefix, malformed_packet, conns, flows,
  nflog_overruns, conntrack_overruns, records), ``calico_flowlogs_store_rows``,
  ``calico_flowlogs_tracked_connections``, ``calico_flowlogs_collector_restarts``.

Invariant: counters only move forward (they are set from the collector's monotonic totals
by delta; a new aggregator after a restart continues from the exported values).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge


class FlowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.verdicts = Counter(
            "calico_policy_verdict",
            "Policy evaluations of new connections, by the rule that ended them.",
            ["tier", "policy", "rule", "direction", "action"],
            registry=registry,
        )
        self.denied = Counter(
            "calico_denied_packets",
            "First packets of connections denied by policy (tier|name|rule|action).",
            ["policy"],
            registry=registry,
        )
        self.up = Gauge(
            "calico_flowlogs_collector_up", "1 when the flow-log collector runs.",
            registry=registry,
        )  # fmt: skip
        self.messages = Counter(
            "calico_flowlogs_nflog_messages", "NFLOG messages read.", registry=registry
        )
        self.dropped = Counter(
            "calico_flowlogs_dropped", "What the collector lost or refused, by reason.",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.rows = Gauge("calico_flowlogs_store_rows", "Rows in the local store.",
                          registry=registry)  # fmt: skip
        self.conns = Gauge(
            "calico_flowlogs_tracked_connections", "Connections being joined.", registry=registry
        )
        self.restarts = Gauge(
            "calico_flowlogs_collector_restarts", "Collector restarts.", registry=registry
        )
        self._seen: dict[Any, float] = {}

    def _inc(self, key: Any, counter: Any, total: float) -> None:
        prev = self._seen.get(key, 0.0)
        if total > prev:
            counter.inc(total - prev)
        self._seen[key] = max(total, prev) if total >= prev else total

    def update(self, collector: Any) -> None:
        agg = collector.agg
        self.up.set(1 if collector.alive() and collector.enabled else 0)
        self.restarts.set(max(collector.incarnations - 1, 0))
        if agg is None:
            return
        gen = id(agg)
        for (tier, pol, rule, direction, action), n in list(agg.verdicts.items()):
            labels = dict(tier=tier, policy=pol, rule=rule, direction=direction, action=action)
            self._inc((gen, "v", tier, pol, rule, direction, action),
                      self.verdicts.labels(**labels), n)  # fmt: skip
            if action == "deny":
                name = f"{tier}|{pol or 'end-of-tier'}|{rule}|deny"
                self._inc((gen, "d", name, direction), self.denied.labels(policy=name), n)
        self._inc((gen, "m"), self.messages, agg.nflog_messages)
        for reason, n in list(agg.dropped.items()):
            self._inc((gen, "x", reason), self.dropped.labels(reason=reason), n)
        for reason, n in list(collector.lost.items()):
            self._inc(("lost", reason), self.dropped.labels(reason=reason), n)
        self.conns.set(len(agg.conns))
        if collector.store is not None:
            self.rows.set(collector.store.count())
