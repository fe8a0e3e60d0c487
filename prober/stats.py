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
import numpy.typing as npt

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

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def latency_bin(latency_s: float) -> int:
    """Index of the histogram bin ``latency_s`` falls in (upper bounds inclusive)."""
    return int(np.searchsorted(LATENCY_BUCKETS_S, latency_s, side="left"))


def dst_label(record: ProbeResult) -> str | None:
    """The matrix column of a record: the serving node, or the target name for outside targets."""
    if record.dst_node is not None:
        return record.dst_node
    if record.target_kind in OUTSIDE_KINDS:
        return record.target
    return None


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

    def path_mask(self, *paths: str) -> npt.NDArray[np.bool_]:
        """Rows whose path is one of ``paths``."""
        wanted = np.array([PATH_INDEX[p] for p in paths], dtype=np.int64)
        result: npt.NDArray[np.bool_] = np.isin(self.path, wanted)
        return result

    def node_index(self, name: str) -> int:
        return self.nodes.index(name)

    def dst_name(self, i: int) -> str | None:
        return None if i == UNKNOWN else self.dsts[i]

    def select(self, mask: npt.NDArray[np.bool_]) -> PairTable:
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
        return _Aggregator(nodes).add_all(records).table()


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


class _Aggregator:
    """Groups records by key in one pass; arrays are built once at the end."""

    def __init__(self, nodes: Sequence[str]) -> None:
        self.nodes = _Interner(nodes)
        self.extra_dsts = _Interner()
        self.targets = _Interner()
        self.target_ips = _Interner()
        self.keys: dict[tuple[int, int, int, int | str, int, int], int] = {}
        self.row_of: list[int] = []
        self.outcome: list[int] = []
        self.latency: list[float] = []
        self.min_ts = float("inf")
        self.max_ts = float("-inf")

    def add_all(self, records: Iterable[ProbeResult]) -> _Aggregator:
        keys = self.keys
        row_of, outcome, latency = self.row_of, self.outcome, self.latency
        node, target, target_ip = self.nodes, self.targets, self.target_ips
        for r in records:
            # dst: a node (by index), an outside target name (str, resolved later), or UNKNOWN
            label = dst_label(r)
            d: int | str
            if label is None:
                d = UNKNOWN
            elif r.dst_node is not None:
                d = node.get(label)
            else:
                d = label
            key = (
                PATH_INDEX[r.path],
                PROTO_INDEX[r.proto],
                node.get(r.src_node),
                d,
                target.get(r.target),
                UNKNOWN if r.target_ip is None else target_ip.get(r.target_ip),
            )
            row = keys.get(key)
            if row is None:
                row = keys[key] = len(keys)
            row_of.append(row)
            outcome.append(OUTCOME_INDEX[r.outcome])
            latency.append(r.latency_s if r.latency_s is not None else -1.0)
            self.min_ts = min(self.min_ts, r.ts)
            self.max_ts = max(self.max_ts, r.ts)
        return self

    def table(self) -> PairTable:
        n_nodes = len(self.nodes.labels)
        # Outside targets are interned after every node is known, so node indices in
        # dsts match node indices in nodes.
        for key in self.keys:
            if isinstance(key[3], str):
                self.extra_dsts.get(key[3])
        dsts = (*self.nodes.labels, *self.extra_dsts.labels)
        n_rows = len(self.keys)
        key_arr = np.empty((n_rows, 6), dtype=np.int64)
        for (p, pr, s, d, t, ti), row in self.keys.items():
            di = n_nodes + self.extra_dsts.index[d] if isinstance(d, str) else d
            key_arr[row] = (p, pr, s, di, t, ti)
        rows = np.asarray(self.row_of, dtype=np.int64)
        outcomes = np.asarray(self.outcome, dtype=np.int64)
        lat = np.asarray(self.latency, dtype=np.float64)
        counts = np.zeros((n_rows, len(OUTCOMES)), dtype=np.int64)
        np.add.at(counts, (rows, outcomes), 1)
        ok = outcomes == OK
        lat_sum = np.zeros(n_rows, dtype=np.float64)
        np.add.at(lat_sum, rows[ok], lat[ok])
        hist = np.zeros((n_rows, N_LAT_BINS), dtype=np.int64)
        bins = np.searchsorted(np.asarray(LATENCY_BUCKETS_S), lat[ok], side="left")
        np.add.at(hist, (rows[ok], bins), 1)
        window = self.max_ts - self.min_ts if rows.size else 0.0
        return PairTable(
            nodes=tuple(self.nodes.labels),
            dsts=dsts,
            targets=tuple(self.targets.labels),
            target_ips=tuple(self.target_ips.labels),
            path=key_arr[:, 0].copy(),
            proto=key_arr[:, 1].copy(),
            src=key_arr[:, 2].copy(),
            dst=key_arr[:, 3].copy(),
            target=key_arr[:, 4].copy(),
            target_ip=key_arr[:, 5].copy(),
            counts=counts,
            latency_sum_s=lat_sum,
            latency_hist=hist,
            window_s=window,
            end_ts=self.max_ts if rows.size else 0.0,
        )


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

    @property
    def size(self) -> int:
        return int(self.ts.shape[0])

    @staticmethod
    def from_records(records: Iterable[ProbeResult]) -> NlbProbes:
        rs = [r for r in records if r.path.endswith("-to-nlb")]
        return NlbProbes(
            ts=np.asarray([r.ts for r in rs], dtype=np.float64),
            src_node=tuple(r.src_node for r in rs),
            src_ip=tuple(r.src_ip for r in rs),
            src_port=np.asarray([-1 if r.src_port is None else r.src_port for r in rs], dtype=np.int64),
            target_ip=tuple(r.target_ip for r in rs),
            outcome=np.asarray([OUTCOME_INDEX[r.outcome] for r in rs], dtype=np.int64),
            dst_node=tuple(r.dst_node for r in rs),
            path=tuple(r.path for r in rs),
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
