"""The collector's windowed statistics: probe results in, a :class:`PairTable` for any window out.

Results land in time buckets (default 10 s) kept for a retention period (default
15 min). A bucket holds no objects: each probe becomes one 64-bit *sort key* that
packs its key (target combination, source node, destination) and a 5-bit *code*
(the latency bin of a success, or the failure outcome). A sealed bucket is a sorted,
deduplicated run of sort keys with a count and a latency sum per entry (sparse
columns, COO). A window's table concatenates its buckets' runs, merges them with one
stable sort (the runs are already sorted) and scatters them into the dense columns
of a :class:`PairTable`. Per probe, one Python pass interns its labels; everything
after that is NumPy.

Memory: 20 bytes per distinct (key, code) per bucket (8 sort key + 4 count + 8
latency sum). In a large cluster nearly every probe in a 10 s bucket has its own key
(a pair is probed once every few rounds), so a bucket costs about 20 bytes per probe;
in a small one, keys repeat and a bucket costs 20 bytes per key and outcome. The
interners cost about 200 bytes per node name and per target combination
(path, proto, target, target address), and are compacted when they outgrow what the
retained buckets reference, so departed nodes and restarted pods do not leak.

Departed nodes (not in the inventory given to :meth:`Store.set_nodes`) drop out of
every table; their buckets age out with retention.

Pure: time is an argument (``now``); no I/O, no clock.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress
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
    ProbeResult,
    Proto,
    split_path,
)
from prober.stats import N_LAT_BINS, OK, PROTO_INDEX, PROTOS, UNKNOWN, NlbProbes, PairTable

# Sort key layout, high to low: target combination | source name | destination name + 1 | code.
_CODE_BITS: Final = (N_LAT_BINS + len(OUTCOMES) - 1).bit_length()  # room for every code below
_NAME_BITS: Final = 20
_TCOMBO_BITS: Final = 18
_NAME_MASK: Final = (1 << _NAME_BITS) - 1
_CODE_MASK: Final = (1 << _CODE_BITS) - 1
_SRC_SHIFT: Final = _NAME_BITS
_TCOMBO_SHIFT: Final = 2 * _NAME_BITS
#: Interner capacities the key layout allows (a destination stores name + 1; 0 is "none").
MAX_NAMES: Final = _NAME_MASK
MAX_TCOMBOS: Final = 1 << _TCOMBO_BITS
#: Codes 0..N_LAT_BINS-1 are successes by latency bin; N_LAT_BINS + outcome index is a failure.
N_CODES: Final = N_LAT_BINS + len(OUTCOMES)
assert N_CODES <= 1 << _CODE_BITS
assert _TCOMBO_BITS + 2 * _NAME_BITS + _CODE_BITS <= 63

_BOUNDS: Final = np.asarray(LATENCY_BUCKETS_S, dtype=np.float64)
_OUTSIDE_PATHS: Final[frozenset[str]] = frozenset(p for p in PATHS if split_path(p)[1] in OUTSIDE_KINDS)
_NLB_PATHS: Final[frozenset[str]] = frozenset(p for p in PATHS if p.endswith("-to-nlb"))
#: Bytes a sealed bucket spends per distinct (key, code): sort key, count, latency sum.
ENTRY_BYTES: Final = 8 + 4 + 8

_PATH: Final = operator.attrgetter("path")

I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSettings:
    """How finely and how long the store keeps results."""

    #: Width of a time bucket: the resolution of windows.
    bucket_s: float = 10.0
    #: How long buckets are kept: the longest window a query can ask for.
    retention_s: float = 900.0
    #: Raw records kept for ``GET /api/v1/records`` (a ring: the oldest go first).
    recent_records: int = 50_000
    #: Raw NLB probes kept for the 5-tuple collision rule (a ring).
    recent_nlb_probes: int = 50_000

    def __post_init__(self) -> None:
        if not self.bucket_s > 0:
            raise ValueError(f"bucket_s must be > 0, got {self.bucket_s}")
        if not self.retention_s >= self.bucket_s:
            raise ValueError(f"retention_s ({self.retention_s}) must be >= bucket_s ({self.bucket_s})")
        if self.recent_records < 0 or self.recent_nlb_probes < 0:
            raise ValueError("ring sizes must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreUsage:
    """What the store holds, for metrics and capacity planning."""

    buckets: int
    entries: int  # (key, code) entries over all buckets, pending ones included
    bytes: int  # bucket arrays only
    names: int
    tcombos: int
    recent_records: int
    recent_nlb_probes: int


class _Keys:
    """Interns labels and turns records into sort keys; shared by the store and one-off tables."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.name_index: dict[str, int] = {}
        self.name_is_node: list[bool] = []
        # (path, proto, target, target_ip) -> id, and its columns
        self.tcombo_index: dict[tuple[str, Proto, str, str | None], int] = {}
        self.tc_path: list[int] = []
        self.tc_proto: list[int] = []
        self.tc_target: list[str] = []
        self.tc_target_ip: list[str | None] = []

    def _name(self, label: str, *, node: bool) -> int:
        """Intern a name; whether it is a node or an outside target is fixed by its first use
        (outside targets are ``kind/name`` strings, which no node name can be)."""
        i = self.name_index.get(label)
        if i is None:
            i = len(self.names)
            if i >= MAX_NAMES:
                raise OverflowError(f"more than {MAX_NAMES} distinct node and target names")
            self.name_index[label] = i
            self.names.append(label)
            self.name_is_node.append(node)
        return i

    def _tcombo(self, key: tuple[str, Proto, str, str | None]) -> int:
        i = len(self.tc_path)
        if i >= MAX_TCOMBOS:
            raise OverflowError(f"more than {MAX_TCOMBOS} distinct (path, proto, target, address) keys")
        self.tcombo_index[key] = i
        self.tc_path.append(PATH_INDEX[key[0]])
        self.tc_proto.append(PROTO_INDEX[key[1]])
        self.tc_target.append(key[2])
        self.tc_target_ip.append(key[3])
        return i

    def encode(self, records: Iterable[ProbeResult]) -> tuple[I64, F64, F64]:
        """(sort keys, latencies (0 for failures), timestamps), one entry per record.

        One tight pass over the records (each is touched once, which matters more
        than anything else at a million records), then NumPy.
        """
        tco = self.tcombo_index
        names = self.name_index
        outcome_index = OUTCOME_INDEX
        outside = _OUTSIDE_PATHS
        keys: list[int] = []
        outcomes: list[int] = []
        latencies: list[float | None] = []
        stamps: list[float] = []
        add_key, add_outcome, add_latency, add_ts = (
            keys.append,
            outcomes.append,
            latencies.append,
            stamps.append,
        )
        for r in records:
            path = r.path
            tk = (path, r.proto, r.target, r.target_ip)
            t = tco.get(tk)
            if t is None:
                t = self._tcombo(tk)
            s = names.get(r.src_node)
            if s is None:
                s = self._name(r.src_node, node=True)
            dn = r.dst_node
            if path in outside:  # the column of an outside target is its name, whoever answers
                d = self._name(r.target, node=False) + 1
            elif dn is not None:
                known = names.get(dn)
                d = (self._name(dn, node=True) if known is None else known) + 1
            else:  # nobody answered: no column
                d = 0
            add_key((t << _TCOMBO_SHIFT) | (s << _SRC_SHIFT) | d)
            add_outcome(outcome_index[r.outcome])
            add_latency(r.latency_s)
            add_ts(r.ts)
        key = np.asarray(keys, dtype=np.int64)
        out = np.asarray(outcomes, dtype=np.int64)
        lat = np.asarray(latencies, dtype=np.float64)  # None -> NaN
        ok = out == OK
        code = np.where(ok, np.searchsorted(_BOUNDS, lat, side="left"), N_LAT_BINS + out)
        lat[~ok] = 0.0
        sk: I64 = (key << _CODE_BITS) | code
        return sk, lat, np.asarray(stamps, dtype=np.float64)

    def frozen(self) -> _Keys:
        """A copy of the labels that table building reads (not the lookup indexes it does not)."""
        copy = _Keys()
        copy.names = self.names[:]
        copy.name_index = self.name_index.copy()
        copy.name_is_node = self.name_is_node[:]
        copy.tc_path = self.tc_path[:]
        copy.tc_proto = self.tc_proto[:]
        copy.tc_target = self.tc_target[:]
        copy.tc_target_ip = self.tc_target_ip[:]
        return copy

    def remap(self, sk: I64, tc_map: I64, name_map: I64) -> I64:
        """Sort keys under new interner ids (maps are monotonic, so sorted runs stay sorted)."""
        code = sk & _CODE_MASK
        key = sk >> _CODE_BITS
        d1 = key & _NAME_MASK
        s = (key >> _SRC_SHIFT) & _NAME_MASK
        t = key >> _TCOMBO_SHIFT
        d1_new = np.where(d1 == 0, 0, name_map[np.maximum(d1 - 1, 0)] + 1)
        out: I64 = (
            ((tc_map[t] << _TCOMBO_SHIFT) | (name_map[s] << _SRC_SHIFT) | d1_new) << _CODE_BITS
        ) | code
        return out

    def compact(self, live_tc: Mask, live_names: Mask) -> tuple[I64, I64]:
        """Drop unreferenced labels; returns (tcombo map, name map) from old ids to new."""
        tc_map = np.cumsum(live_tc, dtype=np.int64) - 1
        name_map = np.cumsum(live_names, dtype=np.int64) - 1
        keep_tc = np.flatnonzero(live_tc).tolist()
        self.tc_path = [self.tc_path[i] for i in keep_tc]
        self.tc_proto = [self.tc_proto[i] for i in keep_tc]
        self.tc_target = [self.tc_target[i] for i in keep_tc]
        self.tc_target_ip = [self.tc_target_ip[i] for i in keep_tc]
        self.tcombo_index = {
            (PATHS[p], PROTOS[pr], t, ti): i
            for i, (p, pr, t, ti) in enumerate(
                zip(self.tc_path, self.tc_proto, self.tc_target, self.tc_target_ip, strict=True)
            )
        }
        keep_names = np.flatnonzero(live_names).tolist()
        self.names = [self.names[i] for i in keep_names]
        self.name_is_node = [self.name_is_node[i] for i in keep_names]
        self.name_index = {n: i for i, n in enumerate(self.names)}
        return tc_map, name_map

    def referenced(self, sks: Iterable[I64]) -> tuple[Mask, Mask]:
        """Which tcombo ids and name ids the given sort keys use."""
        live_tc = np.zeros(len(self.tc_path), dtype=np.bool_)
        live_names = np.zeros(len(self.names) + 1, dtype=np.bool_)  # index 0 is "no destination"
        for sk in sks:
            key = sk >> _CODE_BITS
            live_tc[key >> _TCOMBO_SHIFT] = True
            live_names[((key >> _SRC_SHIFT) & _NAME_MASK) + 1] = True
            live_names[key & _NAME_MASK] = True
        return live_tc, live_names[1:]

    def table(
        self,
        sk: I64,
        n: U32,
        lat: F64,
        *,
        nodes: Sequence[str] = (),
        only_nodes: bool = False,
        window_s: float,
        end_ts: float,
    ) -> PairTable:
        """Scatter sorted, deduplicated (key, code) entries into a :class:`PairTable`.

        The table's nodes are ``nodes`` in order, then any other node seen in order of
        first appearance; with ``only_nodes``, rows whose source or destination node
        is not among ``nodes`` are dropped instead (departed nodes).
        """
        n_names = len(self.names)
        is_node = np.asarray(self.name_is_node, dtype=np.bool_).reshape(n_names)
        node_pos = np.full(n_names, UNKNOWN, dtype=np.int64)
        node_list = list(nodes)
        for i, name in enumerate(node_list):
            j = self.name_index.get(name)
            if j is not None and is_node[j]:
                node_pos[j] = i
        if only_nodes:
            allowed = ~is_node | (node_pos != UNKNOWN)
            key = sk >> _CODE_BITS
            keep = (
                allowed[(key >> _SRC_SHIFT) & _NAME_MASK]
                & np.concatenate(([True], allowed))[key & _NAME_MASK]
            )
            if not keep.all():
                sk, n, lat = sk[keep], n[keep], lat[keep]
        code = sk & _CODE_MASK
        key = sk >> _CODE_BITS
        new_row = np.concatenate(([True], key[1:] != key[:-1])) if key.size else np.zeros(0, np.bool_)
        starts = np.flatnonzero(new_row)
        row = np.cumsum(new_row) - 1
        n_rows = int(starts.size)
        row_key = key[starts]
        r_tc = row_key >> _TCOMBO_SHIFT
        r_src = (row_key >> _SRC_SHIFT) & _NAME_MASK
        r_d1 = row_key & _NAME_MASK

        node_list, dst_pos, dsts = self._place_names(node_list, node_pos, is_node, r_src, r_d1)
        targets, target_ips, tc_target, tc_ip = self._target_labels(r_tc)
        tc_path = np.asarray(self.tc_path, dtype=np.int64)
        tc_proto = np.asarray(self.tc_proto, dtype=np.int64)

        counts = np.zeros((n_rows, len(OUTCOMES)), dtype=np.int64)
        hist = np.zeros((n_rows, N_LAT_BINS), dtype=np.int64)
        ok = code < N_LAT_BINS
        # (row, code) pairs are unique after deduplication: plain assignment, no accumulation.
        hist[row[ok], code[ok]] = n[ok]
        counts[row[~ok], code[~ok] - N_LAT_BINS] = n[~ok]
        counts[:, OK] = hist.sum(axis=1)
        lat_sum = np.bincount(row[ok], weights=lat[ok], minlength=n_rows).astype(np.float64)
        return PairTable(
            nodes=tuple(node_list),
            dsts=dsts,
            targets=tuple(targets),
            target_ips=tuple(target_ips),
            path=tc_path[r_tc],
            proto=tc_proto[r_tc],
            src=dst_pos[r_src],
            dst=np.where(r_d1 == 0, UNKNOWN, dst_pos[np.maximum(r_d1 - 1, 0)]) if n_rows else r_d1,
            target=tc_target[r_tc],
            target_ip=tc_ip[r_tc],
            counts=counts,
            latency_sum_s=lat_sum,
            latency_hist=hist,
            window_s=window_s,
            end_ts=end_ts,
        )

    def _place_names(
        self, node_list: list[str], node_pos: I64, is_node: Mask, r_src: I64, r_d1: I64
    ) -> tuple[list[str], I64, tuple[str, ...]]:
        """Column positions of every referenced name: (nodes, name id -> dsts index, dsts).

        Nodes not placed yet (no inventory, or not in it) are appended in interner
        order; outside targets follow the nodes, as in :class:`PairTable`.
        """
        used = np.zeros(len(self.names) + 1, dtype=np.bool_)
        used[r_src + 1] = True
        used[r_d1] = True
        used_names = used[1:]
        extra = np.flatnonzero(used_names & is_node & (node_pos == UNKNOWN))
        node_pos[extra] = len(node_list) + np.arange(extra.size)
        node_list.extend(self.names[i] for i in extra.tolist())
        outside = np.flatnonzero(used_names & ~is_node)
        dst_pos = node_pos.copy()
        dst_pos[outside] = len(node_list) + np.arange(outside.size)
        return node_list, dst_pos, (*node_list, *(self.names[i] for i in outside.tolist()))

    def _target_labels(self, r_tc: I64) -> tuple[list[str], list[str], I64, I64]:
        """(target labels, target address labels, tcombo -> target index, tcombo -> address index)."""
        used_tc = np.unique(r_tc).tolist()
        targets = sorted({self.tc_target[i] for i in used_tc})
        target_pos = {t: i for i, t in enumerate(targets)}
        target_ips = sorted({ip for i in used_tc if (ip := self.tc_target_ip[i]) is not None})
        ip_pos = {t: i for i, t in enumerate(target_ips)}
        tc_target = np.full(len(self.tc_path), UNKNOWN, dtype=np.int64)
        tc_ip = np.full(len(self.tc_path), UNKNOWN, dtype=np.int64)
        for i in used_tc:
            tc_target[i] = target_pos[self.tc_target[i]]
            ip = self.tc_target_ip[i]
            tc_ip[i] = UNKNOWN if ip is None else ip_pos[ip]
        return targets, target_ips, tc_target, tc_ip


def _reduce(sk: I64, n: U32, lat: F64, *, presorted: bool = False) -> tuple[I64, U32, F64]:
    """Sort by key and merge duplicates, summing counts and latencies.

    A stable sort: NumPy's timsort merges already-sorted runs (sealed buckets) in
    near-linear time.
    """
    if sk.size == 0:
        return sk, n, lat
    if not presorted:
        order = np.argsort(sk, kind="stable")
        sk, n, lat = sk[order], n[order], lat[order]
    starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
    if starts.size == sk.size:
        return sk, n, lat
    return sk[starts], np.add.reduceat(n, starts).astype(np.uint32), np.add.reduceat(lat, starts)


class _Bucket:
    """One time bucket: a sealed sorted run plus raw chunks not yet merged into it."""

    __slots__ = ("lat", "n", "pending", "sk")

    def __init__(self) -> None:
        self.sk: I64 = np.zeros(0, dtype=np.int64)
        self.n: U32 = np.zeros(0, dtype=np.uint32)
        self.lat: F64 = np.zeros(0, dtype=np.float64)
        self.pending: list[tuple[I64, F64]] = []

    def add(self, sk: I64, lat: F64) -> None:
        self.pending.append((sk, lat))

    def seal(self) -> None:
        if not self.pending:
            return
        sk = np.concatenate([self.sk, *(p[0] for p in self.pending)])
        lat = np.concatenate([self.lat, *(p[1] for p in self.pending)])
        n = np.concatenate([self.n, *(np.ones(p[0].size, dtype=np.uint32) for p in self.pending)])
        self.pending = []
        self.sk, self.n, self.lat = _reduce(sk, n, lat)

    @property
    def entries(self) -> int:
        return int(self.sk.size) + sum(int(p[0].size) for p in self.pending)

    @property
    def nbytes(self) -> int:
        return (
            self.sk.nbytes
            + self.n.nbytes
            + self.lat.nbytes
            + sum(p[0].nbytes + p[1].nbytes for p in self.pending)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowSnapshot:
    """One window of the store, detached from it: :meth:`table` does the heavy work."""

    runs: list[tuple[I64, U32, F64]]
    keys: _Keys
    nodes: tuple[str, ...] | None
    window_s: float
    end_ts: float

    def table(self) -> PairTable:
        runs = self.runs
        if len(runs) == 1:
            sk, n, lat = runs[0]
        elif runs:
            sk, n, lat = _reduce(
                np.concatenate([r[0] for r in runs]),
                np.concatenate([r[1] for r in runs]),
                np.concatenate([r[2] for r in runs]),
            )
        else:
            sk, n, lat = np.zeros(0, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float64)
        return self.keys.table(
            sk,
            n,
            lat,
            nodes=self.nodes or (),
            only_nodes=self.nodes is not None,
            window_s=self.window_s,
            end_ts=self.end_ts,
        )


class Store:
    """Windowed per-key statistics over the retention period. Not thread-safe."""

    def __init__(self, settings: StoreSettings | None = None) -> None:
        self.settings = settings or StoreSettings()
        self._keys = _Keys()
        self._buckets: dict[int, _Bucket] = {}
        self._nodes: tuple[str, ...] | None = None
        self._recent: deque[ProbeResult] = deque(maxlen=self.settings.recent_records)
        self._nlb: deque[ProbeResult] = deque(maxlen=self.settings.recent_nlb_probes)
        self._compact_at = 4096  # interner size that triggers the next compaction
        self._n_buckets = max(1, math.ceil(self.settings.retention_s / self.settings.bucket_s))

    def set_nodes(self, nodes: Sequence[str] | None) -> None:
        """The inventory's nodes, in matrix order; ``None`` keeps every node seen."""
        self._nodes = None if nodes is None else tuple(nodes)

    @property
    def nodes(self) -> tuple[str, ...] | None:
        return self._nodes

    def _bucket_of(self, ts: float) -> int:
        return math.floor(ts / self.settings.bucket_s)

    def ingest(self, records: Sequence[ProbeResult], *, now: float) -> int:
        """Add records; returns how many fell within retention and were counted.

        A record stamped in the future (agent clock ahead) counts in the current
        bucket; one older than retention is dropped from the statistics (it still
        enters the raw-record rings).
        """
        if not records:
            return 0
        current = self._bucket_of(now)
        oldest = current - self._n_buckets + 1
        self._expire(oldest)
        self._recent.extend(records)
        self._nlb.extend(compress(records, map(_NLB_PATHS.__contains__, map(_PATH, records))))
        sk, lat, ts = self._keys.encode(records)
        bucket = np.minimum(np.floor(ts / self.settings.bucket_s).astype(np.int64), current)
        first = int(bucket.min())
        if first == int(bucket.max()):
            if first < oldest:
                return 0
            self._bucket(first).add(sk, lat)
            return len(records)
        stored = 0
        for b in np.unique(bucket).tolist():
            if b < oldest:
                continue
            m = bucket == b
            self._bucket(b).add(sk[m], lat[m])
            stored += int(m.sum())
        return stored

    def _bucket(self, b: int) -> _Bucket:
        bucket = self._buckets.get(b)
        if bucket is None:
            bucket = self._buckets[b] = _Bucket()
        return bucket

    def _expire(self, oldest: int) -> None:
        stale = [b for b in self._buckets if b < oldest]
        for b in stale:
            del self._buckets[b]
        keys = self._keys
        if stale and max(len(keys.names), len(keys.tc_path)) >= self._compact_at:
            self._compact()

    def _compact(self) -> None:
        """Forget labels no retained bucket references (departed nodes, replaced pod IPs)."""
        keys = self._keys
        for b in self._buckets.values():
            b.seal()
        live_tc, live_names = keys.referenced(b.sk for b in self._buckets.values())
        tc_map, name_map = keys.compact(live_tc, live_names)
        for b in self._buckets.values():
            b.sk = keys.remap(b.sk, tc_map, name_map)
        self._compact_at = max(4096, 2 * max(len(keys.names), len(keys.tc_path)))

    def _window(self, now: float, window_s: float) -> range:
        """Bucket indices of a window: the ceil(window / bucket) latest, the current one included.

        The window therefore covers between ``window_s - bucket_s`` and ``window_s``
        seconds of results, never more than retention.
        """
        current = self._bucket_of(now)
        # - 1e-9: a window that is a whole number of buckets must not round up to one more
        span = min(self._n_buckets, max(1, math.ceil(window_s / self.settings.bucket_s - 1e-9)))
        return range(current - span + 1, current + 1)

    def table(self, *, now: float, window_s: float) -> PairTable:
        """Outcome counts and latency histograms per key over the window ending at ``now``."""
        return self.snapshot(now=now, window_s=window_s).table()

    def snapshot(self, *, now: float, window_s: float) -> WindowSnapshot:
        """The window's sealed runs and a copy of the labels: cheap, and safe to aggregate on
        another thread while ingest goes on (sealed runs are replaced, never modified)."""
        window = self._window(now, window_s)
        self._expire(self._bucket_of(now) - self._n_buckets + 1)
        parts = [self._buckets[b] for b in window if b in self._buckets]
        for p in parts:
            p.seal()
        return WindowSnapshot(
            runs=[(p.sk, p.n, p.lat) for p in parts if p.sk.size],
            keys=self._keys.frozen(),
            nodes=self._nodes,
            window_s=window_s,
            end_ts=now,
        )

    def nlb_probes(self, *, now: float, window_s: float) -> NlbProbes:
        """The recent NLB probes within the window (from the bounded ring)."""
        since = now - window_s
        return NlbProbes.from_records(r for r in self._nlb if r.ts >= since)

    def recent(self, *, since: float = -math.inf, limit: int | None = None) -> list[ProbeResult]:
        """Raw records stamped after ``since``, oldest first (at most the ring's size)."""
        out = [r for r in self._recent if r.ts > since]
        if limit is not None and len(out) > limit:
            out = out[-limit:]
        return out

    def usage(self) -> StoreUsage:
        return StoreUsage(
            buckets=len(self._buckets),
            entries=sum(b.entries for b in self._buckets.values()),
            bytes=sum(b.nbytes for b in self._buckets.values()),
            names=len(self._keys.names),
            tcombos=len(self._keys.tc_path),
            recent_records=len(self._recent),
            recent_nlb_probes=len(self._nlb),
        )


def aggregate(
    records: Iterable[ProbeResult],
    *,
    nodes: Sequence[str] = (),
    window_s: float | None = None,
    end_ts: float | None = None,
) -> PairTable:
    """A :class:`PairTable` from records regardless of time: sweeps and offline diagnosis.

    The vectorized counterpart of :meth:`PairTable.from_records`, with the same
    meaning of ``nodes`` (their order first; other nodes seen are kept). ``window_s``
    and ``end_ts`` default to the span of the records' timestamps.
    """
    keys = _Keys()
    sk, lat, ts = keys.encode(records)
    sk, n, lat = _reduce(sk, np.ones(sk.size, dtype=np.uint32), lat)
    if ts.size:
        lo, hi = float(ts.min()), float(ts.max())
    else:
        lo = hi = 0.0
    return keys.table(
        sk,
        n,
        lat,
        nodes=nodes,
        window_s=hi - lo if window_s is None else window_s,
        end_ts=hi if end_ts is None else end_ts,
    )
