"""The matrix: per path, source node x destination, success ratio and latency per cell.

Built from a :class:`~prober.stats.PairTable` (any window: the collector's store, a
sweep, a recorded file). Rows are source nodes; columns are the node that served
the probe, or the target name for external and DNS targets. Probes that failed before
anyone answered (a Service or NLB probe that timed out: the balancer's choice is
unknown) cannot be placed in a column; each source gets one ``dst: null`` cell for
them, which renderers show apart.

Pure: no I/O, no clock (``generated_at`` is an argument).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np

from prober.arrays import FloatArray, IntArray
from prober.model import (
    LATENCY_BUCKETS_S,
    OUTCOMES,
    OUTSIDE_KINDS,
    PATHS,
    Cell,
    Matrix,
    PathMatrix,
    split_path,
)
from prober.stats import OK, UNKNOWN, PairTable

_BOUNDS: Final = np.asarray(LATENCY_BUCKETS_S, dtype=np.float64)
_FAILED: Final = tuple((i, o.value) for i, o in enumerate(OUTCOMES) if i != OK)


def histogram_quantile(q: float, hist: IntArray) -> FloatArray:
    """The ``q`` quantile of each row of a latency histogram, as Prometheus computes it.

    Linear interpolation inside the bin the quantile falls in (the first bin starts
    at 0); a quantile in the +Inf bin is the largest finite bound. NaN for an empty row.
    """
    hist = np.atleast_2d(hist)
    total = hist.sum(axis=1)
    cum = np.cumsum(hist, axis=1)
    rank = q * total
    idx = np.minimum((cum < rank[:, None]).sum(axis=1), hist.shape[1] - 1)
    rows = np.arange(hist.shape[0])
    upper_b = np.concatenate((_BOUNDS, _BOUNDS[-1:]))
    lower_b = np.concatenate(([0.0], _BOUNDS))
    in_bin = hist[rows, idx].astype(np.float64)
    below = (cum[rows, idx] - hist[rows, idx]).astype(np.float64)
    frac = np.divide(rank - below, in_bin, out=np.ones_like(rank, dtype=np.float64), where=in_bin > 0)
    value = lower_b[idx] + (upper_b[idx] - lower_b[idx]) * np.clip(frac, 0.0, 1.0)
    value = np.where(idx >= len(LATENCY_BUCKETS_S), _BOUNDS[-1], value)
    result: FloatArray = np.where(total > 0, value, np.nan)
    return result


def _path_matrix(table: PairTable, path_index: int, nodes: Sequence[str]) -> PathMatrix:
    path = PATHS[path_index]
    m = table.path == path_index
    src = table.src[m]
    dst = table.dst[m]
    counts = table.counts[m]
    hist = table.latency_hist[m]
    n_dsts = len(table.dsts)
    # one group per (source, destination); "no destination" sorts last within a source
    group = src * (n_dsts + 1) + np.where(dst == UNKNOWN, n_dsts, dst)
    order = np.argsort(group, kind="stable")
    group = group[order]
    starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    g_counts = np.add.reduceat(counts[order], starts, axis=0)
    g_hist = np.add.reduceat(hist[order], starts, axis=0)
    g_src = src[order][starts]
    g_dst = dst[order][starts]
    g_sent = g_counts.sum(axis=1)
    g_ok = g_counts[:, OK]
    p50 = histogram_quantile(0.5, g_hist)
    p99 = histogram_quantile(0.99, g_hist)

    # Python lists once, then one Cell per group: per-element NumPy access is slow.
    names = table.nodes
    dst_names: list[str | None] = [*table.dsts, None]  # UNKNOWN (-1) picks the None
    counts_l = g_counts.tolist()
    failed = _FAILED
    cells = [
        Cell(
            src=names[s],
            dst=dst_names[d],
            sent=sent,
            ok=ok,
            outcomes={name: c[j] for j, name in failed if c[j]} if ok < sent else {},
            ratio=ok / sent,
            latency_p50_s=None if math.isnan(q50) else q50,  # NaN: no successes
            latency_p99_s=None if math.isnan(q99) else q99,
        )
        for s, d, sent, ok, c, q50, q99 in zip(
            g_src.tolist(),
            g_dst.tolist(),
            g_sent.tolist(),
            g_ok.tolist(),
            counts_l,
            np.round(p50, 6).tolist(),
            np.round(p99, 6).tolist(),
            strict=True,
        )
    ]

    sources = list(nodes)
    known = set(sources)
    sources += [n for n in dict.fromkeys(c.src for c in cells) if n not in known]
    seen_dsts = {c.dst for c in cells if c.dst is not None}
    if split_path(path)[1] in OUTSIDE_KINDS:
        targets = sorted(seen_dsts)
    else:
        targets = list(nodes)
        known = set(targets)
        targets += [d for d in table.dsts if d in seen_dsts and d not in known]
    return PathMatrix(
        path=path,
        sources=sources,
        targets=targets,
        cells=cells,
        sent=int(g_sent.sum()),
        ok=int(g_ok.sum()),
    )


def build_matrix(table: PairTable, *, nodes: Sequence[str], window_s: float, generated_at: float) -> Matrix:
    """The matrix of every path with at least one probe, in :data:`~prober.model.PATHS` order.

    ``nodes`` are the rows and (for in-mesh targets) the columns of every path, in
    order, whether or not they sent or served anything: an empty row is an agent
    that said nothing, an empty column a node nobody reached. Nodes the table has
    beyond ``nodes`` are appended.
    """
    present = sorted(set(np.unique(table.path).tolist()))
    paths = [_path_matrix(table, p, nodes) for p in present]
    all_nodes = list(nodes)
    known = set(all_nodes)
    for pm in paths:
        for n in pm.sources:
            if n not in known:
                known.add(n)
                all_nodes.append(n)
    return Matrix(window_s=window_s, generated_at=generated_at, nodes=all_nodes, paths=paths)
