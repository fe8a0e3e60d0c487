"""The matrix: per path, source node x destination, success ratio and latency per cell.

Built from a :class:`~prober.stats.PairTable` (any window: the collector's store, a
sweep, a recorded file). Rows are source nodes; columns are the node that served
the probe, or the target name for external and DNS targets. Probes that failed before
anyone answered (a Service or NLB probe that timed out: the balancer's choice is
unknown) cannot be placed in a column; each source gets one ``dst: null`` cell for
them, which renderers show apart.

A full matrix is N² cells per path: fine for a lab or a sweep of a small cluster, 130
MB of JSON at 5,000 nodes. So :func:`matrix_view` also gives what a person can look
at in a large cluster: ``zones`` (rows and columns are zones: Z² cells per path),
``failing`` (only the rows and the columns with failures, worst first, at most
``limit`` of each) and ``node`` (one node's row and column); ``full`` only up to
:data:`FULL_MAX_NODES` nodes.

Pure: no I/O, no clock (``generated_at`` is an argument).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from prober.arrays import FloatArray, IntArray
from prober.model import (
    LATENCY_BUCKETS_S,
    OUTCOMES,
    OUTSIDE_KINDS,
    PATHS,
    Cell,
    Finding,
    Matrix,
    PathMatrix,
    split_path,
)
from prober.stats import OK, UNKNOWN, PairTable, slow_of

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
    hist = table.hist[m]
    n_dsts = len(table.dsts)
    # one group per (source, destination); "no destination" sorts last within a source
    group = src * (n_dsts + 1) + np.where(dst == UNKNOWN, n_dsts, dst)
    order = np.argsort(group, kind="stable")
    group = group[order]
    starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    g_counts = np.add.reduceat(counts[order], starts, axis=0)
    g_hist = np.add.reduceat(hist[order], starts, axis=0, dtype=np.int64)
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


#: Views of the matrix (``GET /api/v1/matrix?view=``); ``auto`` picks one (:func:`auto_view`).
VIEWS: Final = ("auto", "full", "zones", "failing", "node")
#: ``auto`` shows every node up to this many (10,000 cells a path).
AUTO_FULL_MAX_NODES: Final = 100
#: ``full`` is refused above this many nodes (250,000 cells a path).
FULL_MAX_NODES: Final = 500
#: ``failing`` shows at most this many rows and columns per path unless told otherwise.
FAILING_LIMIT: Final = 100
#: The zone of a node the inventory gives none.
NO_ZONE: Final = "(no zone)"


def auto_view(n_nodes: int, findings: Sequence[Finding] = ()) -> str:
    """The view ``auto`` gives: ``zones`` while a finding names zones (a partition, a degraded
    zone: the zone pair stands out at a glance) or above :data:`FULL_MAX_NODES` nodes when no
    finding names a node; else ``full`` up to :data:`AUTO_FULL_MAX_NODES` nodes, ``failing``
    above."""
    if any(f.zones for f in findings):
        return "zones"
    if n_nodes <= AUTO_FULL_MAX_NODES:
        return "full"
    if n_nodes > FULL_MAX_NODES and not any(f.nodes for f in findings):
        return "zones"
    return "failing"


class ViewError(ValueError):
    """A view that cannot be given (unknown, too large, or an unknown node)."""


def _rows(table: PairTable, mask: npt.NDArray[np.bool_]) -> PairTable:
    return table.select(mask)


def _reduce_dense(table: PairTable, *, n_src: int, n_dst: int) -> PairTable:
    """One row per (path, src, dst) with the counts summed, by ``bincount`` over the dense
    key: no sort, a few passes over the columns (the matrix reads only path, src, dst
    and the sums). For small ``n_src`` and ``n_dst`` (zones)."""
    span = n_dst + 1  # the last one: no destination (UNKNOWN)
    size = len(PATHS) * n_src * span
    key = (table.path * n_src + table.src) * span + np.where(table.dst == UNKNOWN, n_dst, table.dst)

    def summed(column: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
        result: npt.NDArray[np.float64] = np.bincount(key, weights=column, minlength=size).astype(np.float64)
        return result

    counts = np.stack([summed(table.counts[:, j]) for j in range(table.counts.shape[1])], axis=1)
    hist = np.stack([summed(table.hist[:, j]) for j in range(table.hist.shape[1])], axis=1)
    present = np.flatnonzero(counts.sum(axis=1) > 0)
    dst = present % span
    zeros = np.zeros(len(present), dtype=np.int64)
    return replace(
        table,
        path=present // (n_src * span),
        src=(present // span) % n_src,
        dst=np.where(dst == n_dst, UNKNOWN, dst),
        proto=zeros,
        target=zeros,
        target_ip=zeros,
        counts=np.rint(counts[present]).astype(np.int32),
        latency_sum_s=summed(table.latency_sum_s)[present],
        latency_hist=(reduced := np.rint(hist[present]).astype(np.int32)),
        slow=slow_of(reduced),
    )


def _present_paths(table: PairTable) -> list[int]:
    return sorted(set(np.unique(table.path).tolist()))


def zone_matrix(
    table: PairTable, *, zones: Mapping[str, str], window_s: float, generated_at: float
) -> Matrix:
    """Rows and columns are zones (the zone of the source node and of the serving node);
    outside targets keep their own column, probes no node answered their ``null`` cell."""
    zone_of = [zones.get(n) or NO_ZONE for n in table.nodes]
    dst_zone = [zones.get(d) or (NO_ZONE if d in zones or d in table.nodes else d) for d in table.dsts]
    names = sorted(set(zone_of) | {z for z, d in zip(dst_zone, table.dsts, strict=True) if z != d})
    index = {z: i for i, z in enumerate(names)}
    outside = sorted({z for z in dst_zone if z not in index})
    columns = [*names, *outside]
    col_index = {z: i for i, z in enumerate(columns)}
    src_map = np.asarray([index[z] for z in zone_of] or [0], dtype=np.int64)
    dst_map = np.asarray([col_index[z] for z in dst_zone] or [0], dtype=np.int64)
    dst = np.where(table.dst == UNKNOWN, UNKNOWN, dst_map[np.maximum(table.dst, 0)])
    zoned = replace(table, nodes=tuple(names), dsts=tuple(columns), src=src_map[table.src], dst=dst)
    # one row per (path, source zone, destination zone) before the matrix: Z² rows a path
    zoned = _reduce_dense(zoned, n_src=len(names), n_dst=len(columns))
    paths = [_path_matrix(zoned, p, names) for p in _present_paths(zoned)]
    return Matrix(window_s=window_s, generated_at=generated_at, nodes=names, paths=paths, view="zones")


def _worst(per: FloatArray, limit: int) -> list[int]:
    """The indices of the ``limit`` largest positive values of ``per``, largest first (ties
    in index order)."""
    order = np.argsort(-per, kind="stable")
    return [int(i) for i in order[: np.count_nonzero(per > 0)][:limit]]


def failing_matrix(
    table: PairTable, *, nodes: Sequence[str], limit: int, window_s: float, generated_at: float
) -> Matrix:
    """Per path, only the sources and the targets with failed probes, the ``limit`` worst
    of each (most failures first), and the cells where they meet; ``hidden_sources`` and
    ``hidden_targets`` count the others (all ok, or past the limit). ``sent`` and ``ok``
    stay the whole path's.

    Every path's sums come from one pass over the window's rows (a path at a time was a
    pass over all of them per path), and the kept cells from one selection of rows."""
    n_paths, n_src, n_dst = len(PATHS), len(table.nodes), len(table.dsts)
    path, src, dst, ok = table.path, table.src, table.dst, table.ok
    sent = table.sent
    failed = sent - ok
    answered = dst != UNKNOWN
    src_key = path * n_src + src
    dst_key = (path * n_dst + dst)[answered]
    per_src = np.bincount(src_key, weights=failed, minlength=n_paths * n_src).reshape(n_paths, n_src)
    per_dst = np.bincount(dst_key, weights=failed[answered], minlength=n_paths * n_dst)
    per_dst = per_dst.reshape(n_paths, n_dst)
    path_rows = np.bincount(path, minlength=n_paths)
    path_sent = np.bincount(path, weights=sent, minlength=n_paths)
    path_ok = np.bincount(path, weights=ok, minlength=n_paths)
    seen_src = np.zeros(n_paths * n_src, dtype=np.bool_)
    seen_src[src_key] = True
    seen_dst = np.zeros(n_paths * n_dst, dtype=np.bool_)
    seen_dst[dst_key] = True
    all_sources = seen_src.reshape(n_paths, n_src).sum(axis=1)
    all_targets = seen_dst.reshape(n_paths, n_dst).sum(axis=1)

    present = np.flatnonzero(path_rows).tolist()
    row_on = np.zeros((n_paths, n_src), dtype=np.bool_)
    col_on = np.zeros((n_paths, n_dst + 1), dtype=np.bool_)  # the last one: UNKNOWN (-1)
    col_on[:, -1] = True
    worst: dict[int, tuple[list[int], list[int]]] = {}
    for p in present:
        rows, cols = worst[p] = _worst(per_src[p], limit), _worst(per_dst[p], limit)
        row_on[p, rows] = True
        col_on[p, cols] = True
    kept = table.select(row_on.reshape(-1)[src_key] & col_on[path, dst])
    kept_paths = np.bincount(kept.path, minlength=n_paths)
    paths = []
    for p in present:
        rows, cols = worst[p]
        whole = (
            _path_matrix(kept, p, [])
            if kept_paths[p]
            else PathMatrix(path=PATHS[p], sources=[], targets=[], cells=[], sent=0, ok=0)
        )
        paths.append(
            msgspec.structs.replace(
                whole,
                sources=[table.nodes[i] for i in rows],
                targets=[table.dsts[i] for i in cols],
                sent=int(path_sent[p]),
                ok=int(path_ok[p]),
                hidden_sources=int(all_sources[p]) - len(rows),
                hidden_targets=int(all_targets[p]) - len(cols),
            )
        )
    return Matrix(
        window_s=window_s, generated_at=generated_at, nodes=list(nodes), paths=paths, view="failing"
    )


def node_matrix(table: PairTable, *, node: str, window_s: float, generated_at: float) -> Matrix:
    """One node's row (what it probed) and column (who reached it), per path."""
    src_i = table.nodes.index(node) if node in table.nodes else -2
    dst_i = table.dsts.index(node) if node in table.dsts else -2
    m = (table.src == src_i) | (table.dst == dst_i)
    mine = _rows(table, m)
    paths = []
    for p in _present_paths(mine):
        pm = _path_matrix(mine, p, [])
        sources = [node, *sorted({c.src for c in pm.cells} - {node})]
        paths.append(msgspec.structs.replace(pm, sources=sources))
    return Matrix(window_s=window_s, generated_at=generated_at, nodes=[node], paths=paths, view="node")


def matrix_view(
    table: PairTable,
    *,
    view: str,
    nodes: Sequence[str],
    zones: Mapping[str, str],
    node: str | None = None,
    limit: int = FAILING_LIMIT,
    findings: Sequence[Finding] = (),
) -> Matrix:
    """The window's matrix as ``view`` (see the module docstring; ``auto`` reads the window's
    ``findings``, :func:`auto_view`); :class:`ViewError` for an unknown view, ``full`` of
    more than :data:`FULL_MAX_NODES` nodes, or ``node`` without a node the inventory knows."""
    at = {"window_s": table.window_s, "generated_at": table.end_ts}
    if view == "auto":
        view = auto_view(len(nodes), findings)
    if view == "full":
        if len(nodes) > FULL_MAX_NODES:
            raise ViewError(
                f"the full matrix of {len(nodes):,} nodes is {len(nodes) ** 2:,} cells a path; "
                "ask for view=failing, view=zones or view=node&node=NAME "
                f"(full: up to {FULL_MAX_NODES} nodes)"
            )
        return build_matrix(table, nodes=nodes, **at)
    if view == "zones":
        return zone_matrix(table, zones=zones, **at)
    if view == "failing":
        return failing_matrix(table, nodes=nodes, limit=limit, **at)
    if view == "node":
        if node is None or node not in set(nodes):
            raise ViewError(f"view=node needs node=NAME of a node in the inventory; got {node!r}")
        return node_matrix(table, node=node, **at)
    raise ViewError(f"view must be one of {', '.join(VIEWS)}; got {view!r}")
