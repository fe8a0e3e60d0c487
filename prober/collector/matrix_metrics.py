"""The matrix as Prometheus series: per pair where it is affordable, per zone pair always.

A full source x target matrix is N² series per path: 1,000,000 for pod-to-pod alone
at 1,000 nodes, far past what a Prometheus should hold for one exporter. So:

- **zone level, always**: ``prober_zone_success_ratio{path,src_zone,dst_zone}`` and
  ``prober_zone_probes``: Z² series per path (Z zones, plus one column per outside
  target and one for unanswered probes).
- **pair level, bounded**: for a path whose matrix has at most
  :attr:`PairSeriesPolicy.full_max_cells` cells (400: a 20-node cluster), every
  cell; above that, only the cells that failed in the window, worst first, at most
  :attr:`PairSeriesPolicy.top_k` (100) per path. ``prober_matrix_pairs_omitted{path}``
  counts the failing cells left out, so a dashboard can say the list is cut.
  Pair series carry ``src_zone`` and ``dst_zone`` too (functions of the node: no
  extra series) so dashboards can filter nodes by zone without a join.

Series are recomputed from each new matrix and exported by a custom collector, so a
pair that stops failing, or a node that left, simply stops being exported: nothing
is left behind to remove. Building the series is a pure function
(:func:`matrix_series`); only :class:`MatrixMetrics` touches prometheus_client.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from prober.model import Cell, Matrix

#: ``dst_node``/``dst_zone`` of probes that failed before any node answered (a
#: Service or NLB probe that timed out: the balancer's choice is unknown). Not a
#: valid node name, so it cannot collide with one.
UNANSWERED: Final[str] = "(unanswered)"
#: ``src_zone``/``dst_zone`` of a node the inventory gives no zone.
NO_ZONE: Final[str] = "(no zone)"

_PAIR_LABELS: Final = ("path", "src_node", "src_zone", "dst_node", "dst_zone")
_ZONE_LABELS: Final = ("path", "src_zone", "dst_zone")


@dataclass(frozen=True, slots=True, kw_only=True)
class PairSeriesPolicy:
    """How many pair-level series a path may export (see the module docstring)."""

    #: Export every cell of a path whose matrix has at most this many cells.
    full_max_cells: int = 400
    #: Otherwise export at most this many failing cells of the path, worst first.
    top_k: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class PairSample:
    path: str
    src_node: str
    src_zone: str
    dst_node: str
    dst_zone: str
    sent: int
    ok: int
    latency_p99_s: float | None

    @property
    def labels(self) -> tuple[str, str, str, str, str]:
        return (self.path, self.src_node, self.src_zone, self.dst_node, self.dst_zone)


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneSample:
    path: str
    src_zone: str
    dst_zone: str
    sent: int
    ok: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MatrixSeries:
    """Everything :class:`MatrixMetrics` exports for one matrix."""

    window_s: float = 0.0
    pairs: tuple[PairSample, ...] = ()
    zones: tuple[ZoneSample, ...] = ()
    omitted: Mapping[str, int] = field(default_factory=dict)  # path -> failing cells left out


def _badness(cell: Cell) -> tuple[float, int, str, str]:
    # Worst first: lowest success ratio, then most failures; names break ties so the
    # choice is stable from one computation to the next.
    failed = cell.sent - cell.ok
    return (cell.ok / cell.sent, -failed, cell.src, cell.dst or "")


def select_cells(cells: list[Cell], policy: PairSeriesPolicy) -> tuple[list[Cell], int]:
    """The cells of one path to export as pair series, and how many failing ones were left out."""
    if len(cells) <= policy.full_max_cells:
        return [c for c in cells if c.sent > 0], 0
    failing = [c for c in cells if c.ok < c.sent]
    return heapq.nsmallest(policy.top_k, failing, key=_badness), max(0, len(failing) - policy.top_k)


def matrix_series(
    matrix: Matrix, *, zones: Mapping[str, str], policy: PairSeriesPolicy | None = None
) -> MatrixSeries:
    """The series to export for ``matrix``; ``zones`` maps node name to zone ("" if unknown)."""
    pol = policy or PairSeriesPolicy()
    # Zone of every label a cell can carry, looked up once: the loop below runs once
    # per cell, a million times a window on a large cluster.
    zone_of: dict[str | None, str] = {n: zones.get(n) or NO_ZONE for n in (*matrix.nodes, *zones)}
    zone_of[None] = UNANSWERED

    def zone(dst: str | None) -> str:
        z = zone_of.get(dst)
        if z is None:  # an outside target (external, DNS): its own column
            z = zone_of[dst] = dst or UNANSWERED
        return z

    pairs: list[PairSample] = []
    zone_counts: dict[tuple[str, str, str], list[int]] = {}
    omitted: dict[str, int] = {}
    for pm in matrix.paths:
        path = pm.path
        for src in pm.sources:  # a source is a node, zoned or not, never an outside target
            zone_of.setdefault(src, NO_ZONE)
        # (src zone, dst zone) -> [sent, ok]
        per_path: dict[tuple[str, str], list[int]] = {}
        for c in pm.cells:
            if c.sent <= 0:
                continue
            key = (zone(c.src), zone(c.dst))
            acc = per_path.get(key)
            if acc is None:
                per_path[key] = [c.sent, c.ok]
            else:
                acc[0] += c.sent
                acc[1] += c.ok
        for (sz, dz), acc in per_path.items():
            zone_counts[(path, sz, dz)] = acc
        chosen, left_out = select_cells(pm.cells, pol)
        omitted[path] = left_out
        pairs.extend(
            PairSample(
                path=path,
                src_node=c.src,
                src_zone=zone(c.src),
                dst_node=UNANSWERED if c.dst is None else c.dst,
                dst_zone=zone(c.dst),
                sent=c.sent,
                ok=c.ok,
                latency_p99_s=c.latency_p99_s,
            )
            for c in chosen
        )
    return MatrixSeries(
        window_s=matrix.window_s,
        pairs=tuple(pairs),
        zones=tuple(
            ZoneSample(path=p, src_zone=s, dst_zone=d, sent=sent, ok=ok)
            for (p, s, d), (sent, ok) in sorted(zone_counts.items())
        ),
        omitted=omitted,
    )


class MatrixMetrics(Collector):
    """Exports the latest :class:`MatrixSeries`; call :meth:`update` with each new matrix."""

    def __init__(self, *, registry: CollectorRegistry, policy: PairSeriesPolicy | None = None) -> None:
        self.policy = policy or PairSeriesPolicy()
        self._series = MatrixSeries()
        registry.register(self)

    @property
    def series(self) -> MatrixSeries:
        return self._series

    def update(self, matrix: Matrix, *, zones: Mapping[str, str]) -> None:
        # One reference assignment: a scrape sees the old series or the new, never a mix.
        self._series = matrix_series(matrix, zones=zones, policy=self.policy)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return self._families(MatrixSeries())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return self._families(self._series)

    @staticmethod
    def _families(s: MatrixSeries) -> Iterator[GaugeMetricFamily]:
        window = GaugeMetricFamily(
            "prober_matrix_window_seconds", "The window the matrix series below are computed over."
        )
        window.add_metric([], s.window_s)
        yield window
        ratio = GaugeMetricFamily(
            "prober_pair_success_ratio",
            "Share of probes from src_node served by (or sent to) dst_node that succeeded, over the "
            "matrix window. Every pair on small clusters; only the worst failing pairs on large ones.",
            labels=_PAIR_LABELS,
        )
        probes = GaugeMetricFamily(
            "prober_pair_probes",
            "Probes behind prober_pair_success_ratio over the matrix window.",
            labels=_PAIR_LABELS,
        )
        p99 = GaugeMetricFamily(
            "prober_pair_latency_p99_seconds",
            "99th percentile latency of the pair's successful probes over the matrix window.",
            labels=_PAIR_LABELS,
        )
        for p in s.pairs:
            labels = list(p.labels)
            ratio.add_metric(labels, p.ok / p.sent)
            probes.add_metric(labels, p.sent)
            if p.latency_p99_s is not None:
                p99.add_metric(labels, p.latency_p99_s)
        yield ratio
        yield probes
        yield p99
        zone_ratio = GaugeMetricFamily(
            "prober_zone_success_ratio",
            "Share of probes from nodes in src_zone served in dst_zone that succeeded, over the matrix "
            "window.",
            labels=_ZONE_LABELS,
        )
        zone_probes = GaugeMetricFamily(
            "prober_zone_probes",
            "Probes behind prober_zone_success_ratio over the matrix window.",
            labels=_ZONE_LABELS,
        )
        for z in s.zones:
            zone_ratio.add_metric([z.path, z.src_zone, z.dst_zone], z.ok / z.sent)
            zone_probes.add_metric([z.path, z.src_zone, z.dst_zone], z.sent)
        yield zone_ratio
        yield zone_probes
        omitted = GaugeMetricFamily(
            "prober_matrix_pairs_omitted",
            "Failing pairs of the path not exported as prober_pair_* series because of the per-path cap.",
            labels=("path",),
        )
        for path, n in sorted(s.omitted.items()):
            omitted.add_metric([path], n)
        yield omitted
