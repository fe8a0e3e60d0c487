"""The collector's Prometheus metrics, on a registry of its own.

Label sets stay bounded: paths and outcomes are fixed enums, finding kinds are a
fixed list, nodes come from the inventory, HTTP handlers are route templates. No IP
address or URL is ever a label value. Finding series are removed when the finding
clears, so a healed node stops showing up.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from prober.collector.store import StoreUsage
from prober.model import Finding, FindingKind, ProbeResult

#: How often the collector samples its event loop's lag (:meth:`CollectorService.watch_loop`).
LOOP_LAG_EVERY_S: Final = 0.25
#: Its histogram's buckets: from what no reader notices to a loop held for seconds.
LOOP_LAG_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_PATH = attrgetter("path")
_OUTCOME = attrgetter("outcome")


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # No ``*_created`` sample beside every counter: it doubles the series for nothing
        # a rate() needs (process-wide; the agent does the same).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.ingested = Counter(
            "prober_ingested_probes",
            "Probe results accepted by the collector, by path and outcome.",
            ["path", "outcome"],
            registry=registry,
        )
        self.rejected = Counter(
            "prober_ingest_rejected_records",
            "Result lines the collector rejected (not valid probe results).",
            registry=registry,
        )
        self.routine_probes = Counter(
            "prober_routine_probes",
            "Probe results of agents that had stopped on purpose (a rollout, a drain), "
            "left out of diagnosis and the matrix.",
            registry=registry,
        )
        self.quota_rejected = Counter(
            "prober_ingest_quota_rejected_records",
            "Result lines rejected because their source node sent more than its quota (also counted "
            "in prober_ingest_rejected_records_total).",
            registry=registry,
        )
        self.refused_batches = Counter(
            "prober_ingest_refused_batches",
            "Result batches refused whole, by reason: too many bad lines, too large, too slow, busy, "
            "no credential.",
            ["reason"],
            registry=registry,
        )
        self.refused_connections = Counter(
            "prober_http_refused_connections",
            "Connections closed at once because the collector had --max-connections open.",
            registry=registry,
        )
        self.diagnosis_errors = Counter(
            "prober_diagnosis_errors",
            "Diagnosis failures, by rule (a failure-mode rule that raised; its findings are missing "
            'from that evaluation) or rule="pipeline" (the evaluation failed as a whole).',
            ["rule"],
            registry=registry,
        )
        self.last_diagnosis = Gauge(
            "prober_last_diagnosis_timestamp_seconds",
            "Unix time of the last diagnosis of the default window that completed without error; "
            "0 until the first.",
            registry=registry,
        )
        self.state_saved = Gauge(
            "prober_state_saved_timestamp_seconds",
            "Unix time the windows' snapshot was last written to --state-dir; 0 until the first.",
            registry=registry,
        )
        self.finding = Gauge(
            "prober_finding",
            "1 while diagnosis reports a finding of this kind involving this node "
            '(node="" for findings without nodes); the series is removed when it clears.',
            ["kind", "node"],
            registry=registry,
        )
        self.inventory_nodes = Gauge(
            "prober_inventory_nodes", "Nodes in the collector's current inventory.", registry=registry
        )
        self.inventory_agents = Gauge(
            "prober_inventory_agents", "Agents in the collector's current inventory.", registry=registry
        )
        self.inventory_up = Gauge(
            "prober_inventory_source_up",
            "1 while the inventory source delivers; 0 after it failed (the last good inventory stays).",
            registry=registry,
        )
        self.http_requests = Counter(
            "prober_http_requests",
            "HTTP requests the collector answered, by route, method and status code.",
            ["handler", "method", "code"],
            registry=registry,
        )
        self.sweeps = Counter(
            "prober_sweeps", "On-demand sweeps finished, by result.", ["result"], registry=registry
        )
        self.store_bytes = Gauge(
            "prober_store_bytes", "Memory held by the windowed store's buckets.", registry=registry
        )
        self.store_entries = Gauge(
            "prober_store_entries", "(key, outcome) entries held by the windowed store.", registry=registry
        )
        self.diagnosis_seconds = Gauge(
            "prober_diagnosis_duration_seconds",
            "Time the last refresh took to build the window's table and diagnose it.",
            registry=registry,
        )
        self.diagnosis_cpu_seconds = Gauge(
            "prober_diagnosis_cpu_seconds",
            "CPU time the last refresh spent building the windows' tables and diagnosing them "
            "(its threads' time, without waiting).",
            registry=registry,
        )
        self.loop_lag = Histogram(
            "prober_collector_event_loop_lag_seconds",
            "How late the collector's event loop ran a timer it had set, sampled every "
            f"{LOOP_LAG_EVERY_S:g} s: how long any request or post may have waited for the loop then.",
            buckets=LOOP_LAG_BUCKETS,
            registry=registry,
        )
        self._active: set[tuple[FindingKind, str]] = set()  # (kind, node) of each active series

    def count_ingested(self, records: Sequence[ProbeResult], rejected: int) -> None:
        tally = Tally(zip(map(_PATH, records), map(_OUTCOME, records), strict=True))
        for (path, outcome), n in tally.items():
            self.ingested.labels(path, outcome.value).inc(n)
        if rejected:
            self.rejected.inc(rejected)

    def set_findings(self, findings: Iterable[Finding]) -> None:
        """Mark the active findings; remove the series of those that cleared."""
        active = {(f.kind, node) for f in findings for node in (f.nodes or [""])}
        for kind, node in self._active - active:
            self.finding.remove(kind, node)
        for kind, node in active:
            self.finding.labels(kind, node).set(1)
        self._active = active

    def set_store(self, usage: StoreUsage) -> None:
        self.store_bytes.set(usage.bytes)
        self.store_entries.set(usage.entries)
