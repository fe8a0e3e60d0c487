"""Columnar probe statistics: the one currency between the collector, the matrix and diagnosis.

A :class:`PairTable` holds, per key ``(path, proto, source node, destination, target,
target address)``, the count of each outcome and a latency histogram of the
successes over some window. The collector's windowed store produces one for any
window; :meth:`PairTable.from_records` builds one from recorded results for offline
diagnosis. Diagnosis reads nothing else (plus :class:`NlbProbes` for the one rule
that needs individual probes, and :class:`Topology`).

Pure: no I/O, no clock. Arrays, not objects, so a 5,000-node cluster's window fits
in memory and aggregates in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray
from prober.model import (
    LATENCY_BUCKETS_S,
    OUTCOME_INDEX,
    OUTCOMES,
    OUTSIDE_KINDS,
    PATH_INDEX,
    PATHS,
    Outcome,
    ProbeResult,
    Proto,
    split_path,
)

N_LAT_BINS: Final[int] = len(LATENCY_BUCKETS_S) + 1  # the last bin is +Inf
PROTOS: Final[tuple[Proto, ...]] = tuple(Proto)
PROTO_INDEX: Final[dict[Proto, int]] = {p: i for i, p in enumerate(PROTOS)}
OK: Final[int] = OUTCOME_INDEX[Outcome.OK]
UNKNOWN: Final[int] = -1  # index value for "no destination" (failed before anyone answered)


def latency_bin(latency_s: float) -> int:
    """Index of the histogram bin ``latency_s`` falls in (upper bounds inclusive)."""
    return int(np.searchsorted(LATENCY_BUCKETS_S, latency_s, side="left"))


def dst_label(record: ProbeResult) -> str | None:
    """The matrix column of a record: the serving node, or the target name for outside targets.

    An outside target's column is its name even when its answer names a node (an
    external prober echo does): that name is not one of the cluster's nodes.
    """
    if record.target_kind in OUTSIDE_KINDS:
        return record.target
    return record.dst_node


@dataclass(frozen=True, slots=True, kw_only=True)
class Topology:
    """What the inventory says about nodes: their zones. Diagnosis uses it to expect, not to count."""

    zones: Mapping[str, str] = field(default_factory=dict)  # node -> zone ("" if unknown)

    def zone(self, node: str) -> str:
        return self.zones.get(node, "")


@dataclass(frozen=True, slots=True, kw_only=True)
class PairTable:
    """Outcome counts per key over one window. Row ``i`` is one key; columns are arrays.

    ``src`` indexes :attr:`nodes`; ``dst`` indexes :attr:`dsts` (node names and outside
    target names) or is :data:`UNKNOWN`; ``target`` and ``target_ip`` index their
    label tuples (``target_ip`` may be :data:`UNKNOWN`).
    """

    nodes: tuple[str, ...]
    dsts: tuple[str, ...]
    targets: tuple[str, ...]
    target_ips: tuple[str, ...]
    path: IntArray
    proto: IntArray
    src: IntArray
    dst: IntArray
    target: IntArray
    target_ip: IntArray
    counts: IntArray  # (rows, len(OUTCOMES))
    latency_sum_s: FloatArray  # (rows,) sum over successes
    latency_hist: IntArray  # (rows, N_LAT_BINS) successes only
    window_s: float = 0.0
    end_ts: float = 0.0

    @property
    def rows(self) -> int:
        return int(self.path.shape[0])

    @property
    def sent(self) -> IntArray:
        result: IntArray = self.counts.sum(axis=1)
        return result

    @property
    def ok(self) -> IntArray:
        result: IntArray = self.counts[:, OK]
        return result

    def path_mask(self, *paths: str) -> BoolArray:
        """Rows whose path is one of ``paths``."""
        wanted = np.array([PATH_INDEX[p] for p in paths], dtype=np.int64)
        result: BoolArray = np.isin(self.path, wanted)
        return result

    def node_index(self, name: str) -> int:
        return self.nodes.index(name)

    def dst_name(self, i: int) -> str | None:
        return None if i == UNKNOWN else self.dsts[i]

    def select(self, mask: BoolArray) -> PairTable:
        """The rows where ``mask`` holds, label tuples unchanged."""
        return PairTable(
            nodes=self.nodes,
            dsts=self.dsts,
            targets=self.targets,
            target_ips=self.target_ips,
            path=self.path[mask],
            proto=self.proto[mask],
            src=self.src[mask],
            dst=self.dst[mask],
            target=self.target[mask],
            target_ip=self.target_ip[mask],
            counts=self.counts[mask],
            latency_sum_s=self.latency_sum_s[mask],
            latency_hist=self.latency_hist[mask],
            window_s=self.window_s,
            end_ts=self.end_ts,
        )

    @staticmethod
    def empty(nodes: Sequence[str] = ()) -> PairTable:
        z = np.zeros(0, dtype=np.int64)
        return PairTable(
            nodes=tuple(nodes),
            dsts=tuple(nodes),
            targets=(),
            target_ips=(),
            path=z,
            proto=z,
            src=z,
            dst=z,
            target=z,
            target_ip=z,
            counts=np.zeros((0, len(OUTCOMES)), dtype=np.int64),
            latency_sum_s=np.zeros(0, dtype=np.float64),
            latency_hist=np.zeros((0, N_LAT_BINS), dtype=np.int64),
        )

    @staticmethod
    def from_records(records: Iterable[ProbeResult], *, nodes: Sequence[str] = ()) -> PairTable:
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
            counts=counts.astype(np.int64),
            latency_sum_s=lat_sum,
            latency_hist=hist.reshape(n_rows, N_LAT_BINS).astype(np.int64),
            window_s=float(ts.max() - ts.min()),
            end_ts=float(ts.max()),
        )


#: Histogram bins (0.9, 1.1] and (2.9, 3.1]: a TCP success that needed the first or
#: second SYN retransmit, i.e. a lost SYN or SYN-ACK.
RETRANSMIT_BINS: Final[tuple[int, int]] = (LATENCY_BUCKETS_S.index(1.1), LATENCY_BUCKETS_S.index(3.1))
_TCP_PROTOS: Final[frozenset[Proto]] = frozenset({Proto.TCP, Proto.HTTP})


@dataclass(frozen=True, slots=True, kw_only=True)
class NlbProbes:
    """Individual recent probes to NLB addresses, for the 5-tuple collision rule.

    The collision signature is in single probes, not in counts: two probes from the
    same source address and port, to different NLB addresses, at the same time.
    """

    ts: FloatArray
    src_node: tuple[str, ...]
    src_ip: tuple[str | None, ...]
    src_port: IntArray  # -1 when unknown
    target_ip: tuple[str | None, ...]
    outcome: IntArray  # OUTCOME_INDEX
    dst_node: tuple[str | None, ...]
    path: tuple[str, ...]
    #: A TCP or HTTP success that needed a SYN retransmit (latency in a retransmit bin):
    #: how a colliding connection ends when the probe timeout outlasts the retransmit.
    retransmitted: BoolArray

    @property
    def size(self) -> int:
        return int(self.ts.shape[0])

    @staticmethod
    def from_records(records: Iterable[ProbeResult]) -> NlbProbes:
        rs = [r for r in records if r.path.endswith("-to-nlb")]
        outcome = np.asarray([OUTCOME_INDEX[r.outcome] for r in rs], dtype=np.int64)
        latency = np.asarray([r.latency_s for r in rs], dtype=np.float64)  # None -> NaN
        tcp = np.asarray([r.proto in _TCP_PROTOS for r in rs], dtype=np.bool_)
        bins = np.searchsorted(LATENCY_BUCKETS_S, np.nan_to_num(latency), side="left")
        return NlbProbes(
            ts=np.asarray([r.ts for r in rs], dtype=np.float64),
            src_node=tuple(r.src_node for r in rs),
            src_ip=tuple(r.src_ip for r in rs),
            src_port=np.asarray([-1 if r.src_port is None else r.src_port for r in rs], dtype=np.int64),
            target_ip=tuple(r.target_ip for r in rs),
            outcome=outcome,
            dst_node=tuple(r.dst_node for r in rs),
            path=tuple(r.path for r in rs),
            retransmitted=(outcome == OK) & tcp & ~np.isnan(latency) & np.isin(bins, RETRANSMIT_BINS),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """Everything diagnosis looks at for one window.

    ``recent`` (optional) is the same statistics over the window's last few probe
    intervals (e.g. the last two). With it, diagnosis names a fault that started
    inside the window by what it is now (a node that just died is unreachable, not
    lossy) and drops a finding the recent probes contradict (a node that recovered).
    """

    table: PairTable
    nlb_probes: NlbProbes | None = None
    topology: Topology = field(default_factory=Topology)
    recent: PairTable | None = None

    @staticmethod
    def from_records(
        records: Sequence[ProbeResult],
        *,
        topology: Topology | None = None,
        nodes: Sequence[str] = (),
        recent_s: float | None = None,
    ) -> Evidence:
        """Evidence over all ``records``; with ``recent_s``, also over the last ``recent_s`` seconds."""
        table = PairTable.from_records(records, nodes=nodes)
        recent = None
        if recent_s is not None and table.rows:
            since = table.end_ts - recent_s
            recent = PairTable.from_records((r for r in records if r.ts > since), nodes=table.nodes)
        return Evidence(
            table=table,
            nlb_probes=NlbProbes.from_records(records),
            topology=topology or Topology(),
            recent=recent,
        )


def source_kind_of(path_index: int) -> str:
    return split_path(PATHS[path_index])[0].value
