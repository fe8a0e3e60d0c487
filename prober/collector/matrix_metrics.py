"""The matrix as Prometheus series: per pair where it is affordable, per zone pair always.

A full source x target matrix is N² series per path: 1,000,000 for pod-to-pod alone
at 1,000 nodes, far past what a Prometheus should hold for one exporter. So:

- **zone level, always**: ``prober_zone_success_ratio{path,src_zone,dst_zone}`` and
  ``prober_zone_probes``: Z² series per path (Z zones, plus one column per outside
  target and one for unanswered probes).
- **pair level, bounded**: while the node x node matrix has at most
  :attr:`PairSeriesPolicy.full_max_cells` cells (400: up to 20 nodes), every cell of
  every path; in a larger cluster, only the cells that failed in the window, worst
  first, at most :attr:`PairSeriesPolicy.top_k` (100) per path, on every path alike
  (a path whose window holds few cells, as the outside targets' of a short window,
  is no exception). ``prober_matrix_pairs_omitted{path}`` counts the failing cells
  left out, so a dashboard can say the list is cut.
  Pair series carry ``src_zone`` and ``dst_zone`` too (functions of the node: no
  extra series) so dashboards can filter nodes by zone without a join.
- **zone findings**: ``prober_zone_finding{kind,src_zone,dst_zone}`` is 1 on the zone
  pairs an active finding naming zones is about (a partition: its two zones, both
  ways; a degraded zone: its row and column), so the zone x zone view shows the
  finding on its cells: at most 2Z - 1 series a finding, none when no finding names a
  zone.

Series are recomputed from each window's :class:`~prober.stats.PairTable` (the
collector's periodic refresh) and exported by a custom collector, so a pair that
stops failing, or a node that left, simply stops being exported: nothing is left
behind to remove. Building the series is a pure function (:func:`matrix_series`,
numpy over the table's columns: no per-cell Python objects, so a million-cell window
costs little); only :class:`MatrixMetrics` touches prometheus_client.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from prober.arrays import FloatArray, IntArray, unique_inverse
from prober.matrix import histogram_quantile
from prober.model import PATHS, Finding
from prober.stats import UNKNOWN, PairTable, Topology

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

    #: Export every cell of every path while the node x node matrix (nodes squared) has at
    #: most this many cells.
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
    #: (kind, src_zone, dst_zone) of every zone pair an active zone finding is about.
    zone_findings: tuple[tuple[str, str, str], ...] = ()


def zone_finding_cells(findings: Iterable[Finding], zones: Iterable[str]) -> tuple[tuple[str, str, str], ...]:
    """The zone pairs each finding naming zones is about, as (kind, src_zone, dst_zone), sorted:
    for two zones (a partition) both directions between them; for one zone (a degraded zone)
    its row and its column over ``zones`` (the inventory's zones)."""
    names = sorted(set(zones) - {""})
    cells: set[tuple[str, str, str]] = set()
    for f in findings:
        kind = f.kind.value
        if len(f.zones) == 2:
            a, b = f.zones
            cells |= {(kind, a, b), (kind, b, a)}
        elif len(f.zones) == 1:
            z = f.zones[0]
            cells |= {(kind, z, o) for o in names} | {(kind, o, z) for o in names}
    return tuple(sorted(cells))


def select_pairs(
    sent: npt.NDArray[np.int64],
    ok: npt.NDArray[np.int64],
    key: npt.NDArray[np.int64],
    policy: PairSeriesPolicy,
    *,
    full: bool,
) -> tuple[npt.NDArray[np.int64], int]:
    """Which of one path's pairs to export (indices into the arrays), and how many failing ones
    were left out: every one with probes when ``full`` (a small cluster), else the failing
    ones, worst first: lowest success ratio, then most failures, then ``key`` so the choice
    is stable from one computation to the next."""
    if full:
        return np.flatnonzero(sent > 0), 0
    failing = np.flatnonzero(ok < sent)
    ratio = ok[failing] / sent[failing]
    order = np.lexsort((key[failing], ok[failing] - sent[failing], ratio))
    chosen = failing[order[: policy.top_k]]
    return chosen, int(failing.size - chosen.size)


def _latency_p99(
    table: PairTable, live: IntArray | None, chosen: IntArray, inv: IntArray, n_cells: int
) -> FloatArray:
    """The 99th percentile latency of each ``chosen`` cell (``inv``: each row's cell, over
    the table's rows or only its ``live`` ones). Only the exported cells' rows are read:
    summing, or even copying, every row's histogram would cost more than all the rest of
    :func:`matrix_series` on a large cluster."""
    slot = np.full(n_cells, -1, dtype=np.int64)
    slot[chosen] = np.arange(chosen.size)
    row_slot = slot[inv]
    picked = np.flatnonzero(row_slot >= 0)
    hist = np.zeros((chosen.size, table.hist.shape[1]), dtype=np.int64)
    np.add.at(hist, row_slot[picked], table.hist[picked if live is None else live[picked]])
    result: FloatArray = histogram_quantile(0.99, hist) if chosen.size else np.zeros(0)
    return result


def matrix_series(
    table: PairTable, *, topology: Topology, policy: PairSeriesPolicy | None = None
) -> MatrixSeries:
    """The series to export for one window's table (the matrix's cells, grouped as
    :func:`prober.matrix.build_matrix` groups them: per path, source and serving node)."""
    pol = policy or PairSeriesPolicy()
    n_nodes, n_dsts = len(table.nodes), len(table.dsts)
    # Column labels: every dst (nodes first, then outside targets), then "nobody answered".
    dst_names = (*table.dsts, UNANSWERED)
    col_zone = [topology.zone(d) or NO_ZONE for d in table.nodes]
    col_zone += list(table.dsts[n_nodes:])  # an outside target is its own zone column
    col_zone.append(UNANSWERED)
    zone_labels = sorted(set(col_zone))
    zone_index = {z: i for i, z in enumerate(zone_labels)}
    col_z = np.asarray([zone_index[z] for z in col_zone], dtype=np.int64)
    n_z = len(zone_labels)

    col = np.where(table.dst == UNKNOWN, n_dsts, table.dst)
    path, src, sent_rows, ok_rows = table.path, table.src, table.sent, table.ok
    # The rows with probes (a window's table rarely has others: copies only when it does).
    live: IntArray | None = None
    if not sent_rows.all():
        live = np.flatnonzero(sent_rows)
        path, src, col, sent_rows, ok_rows = path[live], src[live], col[live], sent_rows[live], ok_rows[live]

    # zone x zone, every row: few enough groups for a dense count (no sort)
    zgroup = (path * n_z + col_z[src]) * n_z + col_z[col]
    size = len(PATHS) * n_z * n_z
    zsent = np.bincount(zgroup, weights=sent_rows, minlength=size)
    zok = np.bincount(zgroup, weights=ok_rows, minlength=size)
    zones = []
    for k in np.flatnonzero(zsent).tolist():
        p, rest = divmod(k, n_z * n_z)
        sz, dz = divmod(rest, n_z)
        zones.append(
            ZoneSample(
                path=PATHS[p],
                src_zone=zone_labels[sz],
                dst_zone=zone_labels[dz],
                sent=int(zsent[k]),
                ok=int(zok[k]),
            )
        )

    # pairs: one cell per (path, source, column)
    width = n_dsts + 1
    pkey = (path * max(n_nodes, 1) + src) * width + col
    keys, inv = unique_inverse(pkey)
    psent = np.bincount(inv, weights=sent_rows, minlength=keys.size).astype(np.int64)
    pok = np.bincount(inv, weights=ok_rows, minlength=keys.size).astype(np.int64)
    ppath = keys // (max(n_nodes, 1) * width)
    bounds = np.searchsorted(ppath, np.arange(len(PATHS) + 1))  # keys are sorted: paths are contiguous
    chosen_parts: list[npt.NDArray[np.int64]] = []
    omitted: dict[str, int] = {}
    for p in np.flatnonzero(np.diff(bounds)).tolist():
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        idx, left_out = select_pairs(
            psent[lo:hi], pok[lo:hi], keys[lo:hi], pol, full=n_nodes * n_nodes <= pol.full_max_cells
        )
        chosen_parts.append(idx + lo)
        omitted[PATHS[p]] = left_out
    chosen = np.concatenate(chosen_parts) if chosen_parts else np.zeros(0, dtype=np.int64)
    p99 = _latency_p99(table, live, chosen, inv, keys.size)

    pairs = []
    for j, i in enumerate(chosen.tolist()):
        rest = int(keys[i] % (max(n_nodes, 1) * width))
        s_i, c_i = divmod(rest, width)
        lat = float(p99[j])
        pairs.append(
            PairSample(
                path=PATHS[int(ppath[i])],
                src_node=table.nodes[s_i],
                src_zone=topology.zone(table.nodes[s_i]) or NO_ZONE,
                dst_node=dst_names[c_i],
                dst_zone=col_zone[c_i],
                sent=int(psent[i]),
                ok=int(pok[i]),
                latency_p99_s=None if math.isnan(lat) else lat,
            )
        )
    return MatrixSeries(window_s=table.window_s, pairs=tuple(pairs), zones=tuple(zones), omitted=omitted)


class MatrixMetrics(Collector):
    """Exports the latest :class:`MatrixSeries`; call :meth:`update` with each new matrix."""

    def __init__(self, *, registry: CollectorRegistry, policy: PairSeriesPolicy | None = None) -> None:
        self.policy = policy or PairSeriesPolicy()
        self._series = MatrixSeries()
        registry.register(self)

    @property
    def series(self) -> MatrixSeries:
        return self._series

    def update(
        self, table: PairTable, *, topology: Topology, window_s: float, findings: Sequence[Finding] = ()
    ) -> None:
        """Export the matrix of ``table`` (one window of the store) and the zone pairs of the
        window's ``findings`` in place of the last ones."""
        series = matrix_series(table, topology=topology, policy=self.policy)
        cells = zone_finding_cells(findings, topology.zones.values())
        # One reference assignment: a scrape sees the old series or the new, never a mix.
        self._series = replace(series, window_s=window_s, zone_findings=cells)

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
        zone_finding = GaugeMetricFamily(
            "prober_zone_finding",
            "1 on each zone pair an active finding naming zones is about (zone-partition: between its "
            "two zones, both ways; zone-degraded: the zone's row and column).",
            labels=("kind", "src_zone", "dst_zone"),
        )
        for cell in s.zone_findings:
            zone_finding.add_metric(list(cell), 1)
        yield zone_finding
