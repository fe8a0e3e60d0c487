"""Probe latency as a Prometheus histogram by path and zone pair, from the ingested results.

An agent exporting a latency histogram per path costs ~21 series per path per agent
(18 buckets, ``+Inf``, sum, count): ~170 per agent, 1.7 million at 5,000 nodes. The
collector sees every result anyway, so it keeps one histogram per (path, source zone,
destination zone) instead: ``prober_zone_probe_duration_seconds``, successes only,
buckets :data:`~prober.model.LATENCY_BUCKETS_S` (edges at 0.9/1.1 s and 2.9/3.1 s
isolate SYN retransmits). Its series do not grow with the number of nodes: paths (at
most 16) x zones x (zones + outside targets + 1).

Labels stay bounded whatever an agent sends: a zone is the inventory's zone of the
node (``(no zone)`` for a node it does not know), an outside target counts only when
the inventory names it, and a success no node claimed goes to ``(unanswered)``. The
counts are cumulative from the collector's start, as a Prometheus histogram's are.
It does no I/O; the collector's ingest calls :meth:`ZoneLatencyMetrics.observe`.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from prober.collector.matrix_metrics import NO_ZONE, UNANSWERED
from prober.model import LATENCY_BUCKETS_S, OUTSIDE_KINDS, Outcome, ProbeResult

NAME: Final = "prober_zone_probe_duration_seconds"
_LABELS: Final = ["path", "src_zone", "dst_zone"]
_EDGES: Final = [*(repr(float(b)) for b in LATENCY_BUCKETS_S), "+Inf"]


class ZoneLatencyMetrics(Collector):
    """The histogram, fed by :meth:`observe` and read at scrape time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._zones: Mapping[str, str] = {}
        self._outside: frozenset[str] = frozenset()
        # (path, src_zone, dst_zone) -> per-bucket counts (not cumulative) and the sum
        self._counts: dict[tuple[str, str, str], list[int]] = {}
        self._sums: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def set_topology(self, zones: Mapping[str, str], outside_targets: Iterable[str]) -> None:
        """The inventory's zone of each node, and the outside targets' names (``dns/x``...)."""
        with self._lock:
            self._zones = dict(zones)
            self._outside = frozenset(outside_targets)

    def observe(self, records: Iterable[ProbeResult]) -> None:
        """Count the successes among ``records``."""
        zones, outside = self._zones, self._outside
        with self._lock:
            for r in records:
                if r.outcome is not Outcome.OK or r.latency_s is None:
                    continue
                if r.target_kind in OUTSIDE_KINDS:
                    if r.target not in outside:
                        continue
                    dst_zone = r.target
                elif r.dst_node is None:
                    dst_zone = UNANSWERED
                else:
                    dst_zone = zones.get(r.dst_node) or NO_ZONE
                key = (r.path, zones.get(r.src_node) or NO_ZONE, dst_zone)
                counts = self._counts.get(key)
                if counts is None:
                    counts = self._counts[key] = [0] * len(_EDGES)
                    self._sums[key] = 0.0
                counts[bisect.bisect_left(LATENCY_BUCKETS_S, r.latency_s)] += 1
                self._sums[key] += r.latency_s

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            NAME,
            "Latency of successful probes by path and zone pair, from every agent's results "
            "(the collector's count since it started). The 0.9-1.1 s and 2.9-3.1 s buckets "
            "isolate SYN retransmits.",
            labels=_LABELS,
        )
        with self._lock:
            items = [(key, list(counts), self._sums[key]) for key, counts in self._counts.items()]
        for key, counts, total in sorted(items):
            running = 0
            buckets = []
            for edge, n in zip(_EDGES, counts, strict=True):
                running += n
                buckets.append((edge, float(running)))
            family.add_metric(list(key), buckets, total)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(NAME, "", labels=_LABELS)
