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
It does no I/O; the collector's ingest hands it the sort keys the store encoded
(:meth:`ZoneLatencyMetrics.observe_keys`): its work is NumPy and one step per label
combination of a batch, not one per record.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from prober.aggregation import Keys
from prober.arrays import FloatArray, IntArray
from prober.collector.matrix_metrics import NO_ZONE, UNANSWERED
from prober.model import LATENCY_BUCKETS_S, PATHS, ProbeResult
from prober.stats import N_LAT_BINS

NAME: Final = "prober_zone_probe_duration_seconds"
_LABELS: Final = ["path", "src_zone", "dst_zone"]
_EDGES: Final = [*(repr(float(b)) for b in LATENCY_BUCKETS_S), "+Inf"]


class ZoneLatencyMetrics(Collector):
    """The histogram, fed by :meth:`observe` (or :meth:`observe_keys`) and read at scrape time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._zones: Mapping[str, str] = {}
        self._outside: frozenset[str] = frozenset()
        # (path, src_zone, dst_zone) -> per-bucket counts (not cumulative) and the sum
        self._counts: dict[tuple[str, str, str], list[int]] = {}
        self._sums: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        #: Label values (zones, outside targets, the two stand-ins), and the label of each
        #: name id of the :class:`~prober.aggregation.Keys` last read (-1: not counted).
        self._labels: list[str] = [NO_ZONE, UNANSWERED]
        self._label_index: dict[str, int] = {NO_ZONE: 0, UNANSWERED: 1}
        self._name_labels: tuple[object, IntArray] | None = None
        registry.register(self)

    def set_topology(self, zones: Mapping[str, str], outside_targets: Iterable[str]) -> None:
        """The inventory's zone of each node, and the outside targets' names (``dns/x``...)."""
        with self._lock:
            self._zones = dict(zones)
            self._outside = frozenset(outside_targets)
            self._name_labels = None

    def observe(self, records: Iterable[ProbeResult]) -> None:
        """Count the successes among ``records``."""
        keys = Keys()
        sk, lat, _ = keys.encode(records)
        self.observe_keys(sk, lat, keys)

    def observe_keys(self, sk: IntArray, lat: FloatArray, keys: Keys) -> None:
        """Count the successes among records encoded as ``keys`` encodes them (sort keys and
        latencies: what the store ingests), per label combination, not per record."""
        path, src, dst, code = keys.columns(sk)
        with self._lock:
            name_label = self._labels_of(keys)
            src_label = name_label[src]
            dst_label = np.where(dst >= 0, name_label[np.maximum(dst, 0)], self._label_index[UNANSWERED])
            counted = (code < N_LAT_BINS) & ~np.isnan(lat) & (src_label >= 0) & (dst_label >= 0)
            n_labels = len(self._labels)
            combo = ((path * n_labels + src_label) * n_labels + dst_label) * N_LAT_BINS + code
            combos, at = np.unique(combo[counted], return_inverse=True)
            counts = np.bincount(at, minlength=combos.size)
            sums = np.bincount(at, weights=lat[counted], minlength=combos.size)
            for c, n, total in zip(combos.tolist(), counts.tolist(), sums.tolist(), strict=True):
                rest, b = divmod(c, N_LAT_BINS)
                rest, d = divmod(rest, n_labels)
                p, s = divmod(rest, n_labels)
                key = (PATHS[p], self._labels[s], self._labels[d])
                bucket_counts = self._counts.get(key)
                if bucket_counts is None:
                    bucket_counts = self._counts[key] = [0] * len(_EDGES)
                    self._sums[key] = 0.0
                bucket_counts[b] += n
                self._sums[key] += total

    def _labels_of(self, keys: Keys) -> IntArray:
        """Each name id's label: a node's zone (:data:`NO_ZONE` when it has none), an outside
        target's name when the inventory names it, else -1; kept while the names hold."""
        cached = self._name_labels
        stamp = (keys, keys.generation, len(keys.names))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        labels = np.fromiter(
            (
                self._label(self._zones.get(name) or NO_ZONE)
                if is_node
                else (self._label(name) if name in self._outside else -1)
                for name, is_node in zip(keys.names, keys.name_is_node, strict=True)
            ),
            dtype=np.int64,
            count=len(keys.names),
        )
        self._name_labels = (stamp, labels)
        return labels

    def _label(self, value: str) -> int:
        i = self._label_index.get(value)
        if i is None:
            i = self._label_index[value] = len(self._labels)
            self._labels.append(value)
        return i

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
