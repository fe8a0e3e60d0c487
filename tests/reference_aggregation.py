"""The per-record aggregator that :mod:`prober.aggregation` replaced, kept as a test oracle.

It groups records by key its own way (labels and rows numbered by first
appearance, one NumPy factorization), independent of the sort-key encoding of
:mod:`prober.aggregation`; tests check that both build the same table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np

from prober.arrays import IntArray
from prober.model import (
    LATENCY_BUCKETS_S,
    OUTCOME_INDEX,
    OUTCOMES,
    OUTSIDE_KINDS,
    PATH_INDEX,
    PATHS,
    ProbeResult,
    split_path,
)
from prober.stats import N_LAT_BINS, OK, PROTO_INDEX, PROTOS, UNKNOWN, PairTable, slow_of


def reference_table(records: Iterable[ProbeResult], *, nodes: Sequence[str] = ()) -> PairTable:
    """Aggregate records into a table. ``nodes`` fixes the order of known nodes first."""
    return _Aggregator(nodes).build(records)


class _Interner:
    __slots__ = ("index", "labels")

    def __init__(self, initial: Iterable[str] = ()) -> None:
        self.labels: list[str] = []
        self.index: dict[str, int] = {}
        for label in initial:
            self.get(label)

    def get(self, label: str) -> int:
        i = self.index.get(label)
        if i is None:
            i = self.index[label] = len(self.labels)
            self.labels.append(label)
        return i


#: Paths whose target is outside the mesh: their matrix column is the target name.
_OUTSIDE_PATH: Final[dict[str, bool]] = {p: split_path(p)[1] in OUTSIDE_KINDS for p in PATHS}


def _first_seen_order(keys: IntArray) -> tuple[IntArray, IntArray]:
    """(row of each element, first element of each row), rows numbered by first appearance."""
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq), dtype=np.int64)
    return rank[inverse.reshape(-1)], first[order]


class _Aggregator:
    """Groups records by key: one pass per column, then numpy for the grouping.

    Labels (nodes, outside targets, targets, addresses) are numbered in order of first
    appearance, a record's serving node before its source; rows likewise, by the
    first record with their key.
    """

    def __init__(self, nodes: Sequence[str]) -> None:
        self.initial = tuple(nodes)

    def build(self, records: Iterable[ProbeResult]) -> PairTable:
        rs = records if isinstance(records, list) else list(records)
        node = _Interner(self.initial)
        outside = _Interner()
        get_node, get_outside, is_outside = node.get, outside.get, _OUTSIDE_PATH
        src_l: list[int] = []
        dst_l: list[int] = []
        for r in rs:
            d = r.dst_node
            if is_outside[r.path]:
                dst_l.append(-2 - get_outside(r.target))  # resolved once every node is known
            elif d is not None:
                dst_l.append(get_node(d))
            else:
                dst_l.append(UNKNOWN)
            src_l.append(get_node(r.src_node))
        if not rs:
            return PairTable.empty(node.labels)
        n_nodes = len(node.labels)
        dst = np.asarray(dst_l, dtype=np.int64)
        out = dst <= -2
        dst[out] = n_nodes + (-2 - dst[out])
        src = np.asarray(src_l, dtype=np.int64)
        targets, ips = _Interner(), _Interner()
        get_target, get_ip = targets.get, ips.get
        path = np.asarray([PATH_INDEX[r.path] for r in rs], dtype=np.int64)
        proto = np.asarray([PROTO_INDEX[r.proto] for r in rs], dtype=np.int64)
        target = np.asarray([get_target(r.target) for r in rs], dtype=np.int64)
        tip = np.asarray([UNKNOWN if (ip := r.target_ip) is None else get_ip(ip) for r in rs], dtype=np.int64)
        outcomes = np.asarray([OUTCOME_INDEX[r.outcome] for r in rs], dtype=np.int64)
        lat = np.asarray([-1.0 if (x := r.latency_s) is None else x for r in rs], dtype=np.float64)
        ts = np.asarray([r.ts for r in rs], dtype=np.float64)

        # Two factorizations keep the combined key inside int64 for any cluster size.
        n_dst = n_nodes + len(outside.labels) + 1
        left = ((path * len(PROTOS) + proto) * max(1, n_nodes) + src) * n_dst + (dst + 1)
        right = target * (len(ips.labels) + 1) + (tip + 1)
        _, left_i = np.unique(left, return_inverse=True)
        _, right_i = np.unique(right, return_inverse=True)
        rows, first = _first_seen_order(left_i.reshape(-1) * (int(right_i.max()) + 1) + right_i.reshape(-1))
        n_rows = len(first)
        n_out = len(OUTCOMES)
        counts = np.bincount(rows * n_out + outcomes, minlength=n_rows * n_out).reshape(n_rows, n_out)
        ok = outcomes == OK
        lat_sum = np.bincount(rows[ok], lat[ok], minlength=n_rows).astype(np.float64)
        bins = np.searchsorted(np.asarray(LATENCY_BUCKETS_S), lat[ok], side="left")
        hist = np.bincount(rows[ok] * N_LAT_BINS + bins, minlength=n_rows * N_LAT_BINS)
        return PairTable(
            nodes=tuple(node.labels),
            dsts=(*node.labels, *outside.labels),
            targets=tuple(targets.labels),
            target_ips=tuple(ips.labels),
            path=path[first],
            proto=proto[first],
            src=src[first],
            dst=dst[first],
            target=target[first],
            target_ip=tip[first],
            counts=counts.astype(np.int32),
            latency_sum_s=lat_sum,
            latency_hist=(full := hist.reshape(n_rows, N_LAT_BINS).astype(np.int32)),
            slow=slow_of(full),
            window_s=float(ts.max() - ts.min()),
            end_ts=float(ts.max()),
        )
