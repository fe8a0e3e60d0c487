"""The collector's windowed statistics: probe results in, a :class:`PairTable` for any window out.

Results land in time buckets (default 10 s) kept for a retention period (default
15 min). A bucket holds no objects: each probe becomes a sort key of
:mod:`prober.aggregation` (its key and its latency bin or failure outcome, in
64 bits). A sealed bucket is a sorted, deduplicated run of sort keys with a count
and a latency sum per entry (sparse columns, COO). A window's table concatenates
its buckets' runs, merges them with one stable sort (the runs are already sorted)
and scatters them into the dense columns of a :class:`PairTable`
(:meth:`~prober.aggregation.Keys.table`, the same code as every one-off table).

Memory: 20 bytes per distinct (key, code) per bucket (8 sort key + 4 count + 8
latency sum). In a large cluster nearly every probe in a 10 s bucket has its own key
(a pair is probed once every few rounds), so a bucket costs about 20 bytes per probe;
in a small one, keys repeat and a bucket costs 20 bytes per key and outcome. The
interners cost about 200 bytes per node name and per target combination
(path, proto, target, target address), and are compacted when they outgrow what the
retained buckets reference, so departed nodes and restarted pods do not leak.

Pair paths: with a pair budget (:attr:`StoreSettings.pair_entries`; the collector's is
its long window's, ``long_window_entries``) a bucket keeps its pair paths' entries
(peers, Services, NodePorts: N² keys a path) only while the newest buckets' stay within
it, and its outside and NLB targets for the whole retention. No window the collector
diagnoses reads more, and a large cluster's retention no longer costs one entry a probe:
at 1,000 nodes (``bench/collector_store.py``'s load over 900 s) 1.95 million pair entries,
the newest 95 s, where 15 minutes of them were 19.4 million; the store 69 MiB, where it
was 402. A window longer than the budget covers reads the pair paths of the
newest buckets that keep them.

Departed nodes (not in the inventory given to :meth:`Store.set_nodes`) drop out of
every table; their buckets age out with retention.

Snapshots: :meth:`Store.dump` and :meth:`Store.load` turn the store into bytes and
back (a versioned format this module owns), so a restarted collector keeps its
windows; the collector's service writes and reads the file.

Pure: time is an argument (``now``); no I/O, no clock.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Final, NamedTuple

import msgspec
import numpy as np

from prober.aggregation import U32, Keys, pair_cut, reduce_entries
from prober.arrays import FloatArray, IntArray
from prober.model import OUTCOMES, PATHS, ProbeResult
from prober.stats import PROTOS, NlbProbes, PairTable

_NLB_PATHS: Final[frozenset[str]] = frozenset(p for p in PATHS if p.endswith("-to-nlb"))
#: Bytes a sealed bucket spends per distinct (key, code): sort key, count, latency sum.
ENTRY_BYTES: Final = 8 + 4 + 8

_PATH: Final = operator.attrgetter("path")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSettings:
    """How finely and how long the store keeps results."""

    #: Width of a time bucket: the resolution of windows.
    bucket_s: float = 10.0
    #: How long buckets are kept: the longest window a query can ask for.
    retention_s: float = 900.0
    #: Bytes of raw records (as JSONL) kept for ``GET /api/v1/records``: a ring, the oldest
    #: batches go first.
    recent_bytes: int = 32 * 2**20
    #: Single NLB probes kept for the NLB rules (:class:`NlbRing`): at most this many, the
    #: newest, ~80 bytes each. A 5,000-node cluster at the default schedule sends ~15,000
    #: a round: 450,000 in the 300 s long window.
    recent_nlb_probes: int = 500_000
    #: ... and none older than this (``None``: retention): the longest window a pass reads.
    nlb_keep_s: float | None = None
    #: The pair paths' entries kept (:data:`~prober.aggregation.PAIR_KINDS`: peers,
    #: Services, NodePorts, up to N² keys a path): those of the newest buckets covering
    #: ``pair_keep_s``, and of older ones, newest first, while the pair entries kept stay
    #: within this many (``None``: every bucket's, for retention). Older buckets keep
    #: their outside and NLB targets. A long window bounded by this budget and
    #: ``pair_keep_s`` (:func:`~prober.aggregation.pair_cut`) reads no more; without it
    #: a 1,000-node cluster's 15 minutes of pair probes (19.4 million entries, ~370 MB)
    #: were kept for windows nothing diagnoses.
    pair_entries: int | None = None
    pair_keep_s: float = 0.0
    #: Batches :meth:`Store.queue` holds before it stores them together: at most this many
    #: results, ...
    queue_records: int = 4096
    #: ... none waiting longer than this (checked as the next batch arrives); every read
    #: stores what waits first. One post of an agent at 2.5 probes/s holds ~5 results,
    #: and storing each post on its own cost ~0.17 ms a post beyond its results
    #: (``bench/collector_posts.py``: 0.60 ms a post, 0.43 queued).
    queue_s: float = 0.25

    def __post_init__(self) -> None:
        if not self.bucket_s > 0:
            raise ValueError(f"bucket_s must be > 0, got {self.bucket_s}")
        if not self.retention_s >= self.bucket_s:
            raise ValueError(f"retention_s ({self.retention_s}) must be >= bucket_s ({self.bucket_s})")
        if self.recent_bytes < 0 or self.recent_nlb_probes < 0:
            raise ValueError("ring sizes must be >= 0")
        if self.nlb_keep_s is not None and not self.nlb_keep_s > 0:
            raise ValueError(f"nlb_keep_s must be > 0, got {self.nlb_keep_s}")
        if self.pair_entries is not None and self.pair_entries < 0:
            raise ValueError(f"pair_entries must be >= 0, got {self.pair_entries}")
        if not 0 <= self.pair_keep_s <= self.retention_s:
            raise ValueError(f"pair_keep_s must be within 0 and retention, got {self.pair_keep_s}")
        if self.queue_records < 0 or not self.queue_s >= 0:
            raise ValueError("queue_records and queue_s must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreUsage:
    """What the store holds, for metrics and capacity planning."""

    buckets: int
    entries: int  # (key, code) entries over all buckets, pending ones included
    bytes: int  # bucket arrays only
    names: int
    tcombos: int
    recent_records: int
    recent_bytes: int
    recent_nlb_probes: int


#: The first bytes of a snapshot file, and the version of what follows.
SNAPSHOT_MAGIC: Final = b"prober-store\n"
SNAPSHOT_VERSION: Final = 2
#: Snapshot formats this store reads.
_READS: Final = frozenset({1, SNAPSHOT_VERSION})


class _SnapshotBucket(msgspec.Struct, frozen=True, array_like=True):
    index: int
    sk: bytes  # int64 sort keys, native byte order
    n: bytes  # uint32 counts
    lat: bytes  # float64 latency sums


class _SnapshotNlb(msgspec.Struct, frozen=True, kw_only=True):
    """The NLB ring's probes as columns: numbers in native byte order, labels as int32
    codes into ``labels`` (-1: none)."""

    labels: list[str]
    ts: bytes  # float64
    src_port: bytes  # int64
    outcome: bytes  # int64
    late: bytes  # bool
    src_node: bytes
    src_ip: bytes
    target_ip: bytes
    dst_node: bytes
    path: bytes
    seen_src_ip: bytes


class _Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A store on disk (format :data:`SNAPSHOT_VERSION`; its owner is this module).
    Format 1 kept the NLB probes as records (``nlb``); 2 keeps them as columns
    (``nlb_columns``). Both are read."""

    version: int
    bucket_s: float
    retention_s: float
    saved_at: float
    names: list[str]
    name_is_node: list[bool]
    tc_path: list[int]
    tc_proto: list[int]
    tc_target: list[str]
    tc_target_ip: list[str | None]
    buckets: list[_SnapshotBucket]
    nlb: list[ProbeResult] = []
    nlb_columns: _SnapshotNlb | None = None


_snapshot_encoder = msgspec.msgpack.Encoder()
_record_encoder = msgspec.json.Encoder()
_record_list_decoder = msgspec.json.Decoder(ProbeResult)
_snapshot_decoder = msgspec.msgpack.Decoder(_Snapshot)


def _keys_of(doc: _Snapshot) -> Keys:
    """The labels of a snapshot, checked: every column as long as its index."""
    if len(doc.names) != len(doc.name_is_node) or not (
        len(doc.tc_path) == len(doc.tc_proto) == len(doc.tc_target) == len(doc.tc_target_ip)
    ):
        raise ValueError("corrupt snapshot: label columns of different lengths")
    if len(set(zip(doc.names, doc.name_is_node, strict=True))) != len(doc.names):
        raise ValueError("corrupt snapshot: a label is listed twice")
    if any(not 0 <= p < len(PATHS) for p in doc.tc_path) or any(
        not 0 <= p < len(PROTOS) for p in doc.tc_proto
    ):
        raise ValueError("corrupt snapshot: an unknown path or protocol")
    keys = Keys()
    if not keys.room_for(len(doc.names), len(doc.tc_path)):
        raise ValueError("corrupt snapshot: more labels than the key layout holds")
    keys.names = list(doc.names)
    keys.name_is_node = list(doc.name_is_node)
    keys.name_index = {n: i for i, n in enumerate(keys.names) if keys.name_is_node[i]}
    keys.outside_index = {n: i for i, n in enumerate(keys.names) if not keys.name_is_node[i]}
    keys.tc_path = list(doc.tc_path)
    keys.tc_proto = list(doc.tc_proto)
    keys.tc_target = list(doc.tc_target)
    keys.tc_target_ip = list(doc.tc_target_ip)
    keys.tcombo_index = {
        (PATHS[p], PROTOS[pr], t, ti): i
        for i, (p, pr, t, ti) in enumerate(
            zip(keys.tc_path, keys.tc_proto, keys.tc_target, keys.tc_target_ip, strict=True)
        )
    }
    if len(keys.tcombo_index) != len(keys.tc_path):
        raise ValueError("corrupt snapshot: a target combination is listed twice")
    return keys


class _Bucket:
    """One time bucket: a sealed sorted run plus raw chunks not yet merged into it.

    ``pairs``: how many of the sealed run's entries are of pair paths (``None``: not
    counted since it was last sealed).
    """

    __slots__ = ("lat", "n", "pairs", "pending", "sk")

    def __init__(self) -> None:
        self.sk: IntArray = np.zeros(0, dtype=np.int64)
        self.n: U32 = np.zeros(0, dtype=np.uint32)
        self.lat: FloatArray = np.zeros(0, dtype=np.float64)
        self.pending: list[tuple[IntArray, FloatArray]] = []
        self.pairs: int | None = 0

    def add(self, sk: IntArray, lat: FloatArray) -> None:
        self.pending.append((sk, lat))

    def seal(self) -> None:
        if not self.pending:
            return
        sk = np.concatenate([self.sk, *(p[0] for p in self.pending)])
        lat = np.concatenate([self.lat, *(p[1] for p in self.pending)])
        n = np.concatenate([self.n, *(np.ones(p[0].size, dtype=np.uint32) for p in self.pending)])
        self.pending = []
        self.sk, self.n, self.lat = reduce_entries(sk, n, lat)
        self.pairs = None

    def pair_count(self, keys: Keys) -> int:
        """The sealed run's entries of pair paths."""
        if self.pairs is None:
            self.pairs = int(np.count_nonzero(keys.pair_entries(self.sk)))
        return self.pairs

    def drop_pairs(self, keys: Keys) -> None:
        """Drop the sealed run's entries of pair paths."""
        if self.pair_count(keys):
            keep = ~keys.pair_entries(self.sk)
            self.sk, self.n, self.lat = self.sk[keep], self.n[keep], self.lat[keep]
        self.pairs = 0

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

    runs: list[tuple[IntArray, U32, FloatArray]]
    keys: Keys
    nodes: tuple[str, ...] | None
    window_s: float
    end_ts: float
    #: Each run's bucket, counted from the window's oldest; the window's buckets.
    places: tuple[int, ...] = ()
    span: int = 0
    #: A long window's bound on its entries: (budget, the newest buckets whose pair paths
    #: it reads whatever they hold), as :func:`prober.aggregation.pair_cut` reads it;
    #: ``None``: every entry.
    bound: tuple[int | None, int] | None = None

    def table(self, *, histogram: bool = True) -> PairTable:
        """The window's table; without ``histogram``, one for diagnosis alone (no latency
        histogram: :meth:`prober.aggregation.Keys.table`)."""
        runs = self.runs if self.bound is None else self._bounded()
        if len(runs) == 1:
            sk, n, lat = runs[0]
        elif runs:
            sk, n, lat = reduce_entries(
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
            histogram=histogram,
        )

    def _bounded(self) -> list[tuple[IntArray, U32, FloatArray]]:
        """The runs within :attr:`bound`: the pair paths' entries of the buckets before the
        cut left out."""
        assert self.bound is not None
        budget, least = self.bound
        pair_masks = [self.keys.pair_entries(r[0]) for r in self.runs]
        pair = [0] * self.span
        for place, m in zip(self.places, pair_masks, strict=True):
            pair[place] = int(np.count_nonzero(m))
        other = sum(r[0].size for r in self.runs) - sum(pair)
        cut = pair_cut(pair, other, budget=budget, least=least)
        return [
            run if place >= cut else (run[0][~m], run[1][~m], run[2][~m])
            for run, place, m in zip(self.runs, self.places, pair_masks, strict=True)
        ]


def _lines_of(records: Sequence[ProbeResult], jsonl: bytes | None) -> tuple[bytes, IntArray]:
    """(the records as JSONL, each line's end): ``jsonl`` as it is when it holds one line a
    record (a last newline added if missing), else the records encoded."""
    if jsonl:
        data = jsonl if jsonl.endswith(b"\n") else jsonl + b"\n"
        ends: IntArray = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n")) + 1
        if ends.size == len(records):
            return data, ends
    lines = [_record_encoder.encode(r) for r in records]
    ends = np.cumsum(np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))) + np.arange(
        1, len(lines) + 1
    )
    return b"\n".join(lines) + b"\n", ends


class RecordRing:
    """Raw records as JSONL, bounded in bytes: whole batches in, the oldest batches out.

    Each batch is kept as its encoded lines and the lines' timestamps, so an export
    slices bytes and never builds a record object. A batch larger than the whole
    ring keeps only its newest lines that fit.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._chunks: deque[tuple[bytes, IntArray, FloatArray]] = deque()  # (jsonl, line ends, ts)
        self.nbytes = 0
        self.records = 0

    def extend(self, records: Sequence[ProbeResult], *, jsonl: bytes | None = None) -> None:
        """Keep ``records``; ``jsonl``: the same records as they arrived, one line each in
        order (kept as they are, not encoded again), or ``None``."""
        if not records or self.max_bytes <= 0:
            return
        ts = np.fromiter((r.ts for r in records), dtype=np.float64, count=len(records))
        data, ends = _lines_of(records, jsonl)
        if int(ends[-1]) > self.max_bytes:  # only the newest lines that fit
            first = int(np.searchsorted(ends, int(ends[-1]) - self.max_bytes, side="left")) + 1
            if first >= len(records):
                return
            data = data[int(ends[first - 1]) :]
            ends = ends[first:] - ends[first - 1]
            ts = ts[first:]
        self._chunks.append((data, ends, ts))
        self.nbytes += len(data)
        self.records += len(ts)
        while self.nbytes > self.max_bytes:
            old, _, old_ts = self._chunks.popleft()
            self.nbytes -= len(old)
            self.records -= len(old_ts)

    def jsonl(self, *, since: float = -math.inf, limit: int | None = None) -> bytes:
        """The lines of records stamped after ``since``, oldest batch first, at most ``limit``
        (the newest)."""
        parts: list[bytes] = []
        left = math.inf if limit is None else limit
        for data, ends, ts in reversed(self._chunks):
            if left <= 0:
                break
            keep = np.flatnonzero(ts > since)
            if keep.size > left:
                keep = keep[keep.size - int(left) :]
            left -= keep.size
            if keep.size == ts.size:
                parts.append(data)
                continue
            starts = np.concatenate(([0], ends[:-1]))
            spans = zip(starts[keep].tolist(), ends[keep].tolist(), strict=True)
            parts.append(b"".join(data[a:b] for a, b in spans))
        return b"".join(reversed(parts))

    def clear(self) -> None:
        self._chunks.clear()
        self.nbytes = self.records = 0


#: A chunk of the NLB ring: (its oldest stamp, its newest, its probes).
NlbChunk = tuple[float, float, NlbProbes]
#: Labels the NLB ring keeps before it starts a new table (nodes and addresses come and go).
_MAX_LABELS: Final = 200_000


class NlbRing:
    """Single probes to NLB addresses, for the rules that read them one by one (the
    5-tuple collision's groups, the hairpin's entry nodes): one chunk of columns
    (:class:`~prober.stats.NlbProbes`) per batch, bounded in probes (the oldest go first)
    and in age (``keep_s``: the longest window a pass reads). Labels are kept once each,
    so a probe costs ~80 bytes: 450,000 probes, a 5,000-node cluster's 300 s, ~40 MB."""

    def __init__(self, max_probes: int, keep_s: float) -> None:
        self.max_probes, self.keep_s = max_probes, keep_s
        self._chunks: deque[NlbChunk] = deque()
        self.probes = 0
        self._labels: dict[str, str] = {}

    def extend(self, records: Iterable[ProbeResult], *, now: float) -> None:
        if self.max_probes <= 0:
            return
        if len(self._labels) > _MAX_LABELS:
            self._labels = {}
        self.add(NlbProbes.from_records(records, labels=self._labels), now=now)

    def add(self, probes: NlbProbes, *, now: float) -> None:
        """Keep ``probes`` (one chunk), then drop what is past the bounds."""
        if probes.size and self.max_probes > 0:
            if probes.size > self.max_probes:  # only its newest that fit
                probes = probes.take(np.arange(probes.size - self.max_probes, probes.size))
            self._chunks.append((float(probes.ts.min()), float(probes.ts.max()), probes))
            self.probes += probes.size
        while self._chunks and self._chunks[0][1] < now - self.keep_s:
            self.probes -= self._chunks.popleft()[2].size
        while self.probes > self.max_probes:
            _, hi, oldest = self._chunks[0]
            excess = self.probes - self.max_probes
            if excess >= oldest.size:
                self._chunks.popleft()
                self.probes -= oldest.size
                continue
            rest = oldest.take(np.arange(excess, oldest.size))
            self._chunks[0] = (float(rest.ts.min()), hi, rest)
            self.probes -= excess

    def chunks(self) -> list[NlbChunk]:
        """The chunks, oldest first: a cheap copy, safe to read on another thread (chunks
        are never modified)."""
        return list(self._chunks)

    def clear(self) -> None:
        self._chunks.clear()
        self.probes = 0


def nlb_probes_within(chunks: Sequence[NlbChunk], *, now: float, window_s: float) -> NlbProbes:
    """The NLB probes of ``chunks`` (:meth:`NlbRing.chunks`) stamped within the window
    ending at ``now``."""
    since = now - window_s
    parts = [c if lo >= since else c.since(since) for lo, hi, c in chunks if hi >= since]
    return NlbProbes.concat([c for c in parts if c.size])


def _nlb_columns(probes: NlbProbes) -> _SnapshotNlb:
    labels: dict[str, int] = {}

    def codes(column: Sequence[str | None]) -> bytes:
        return np.fromiter(
            (-1 if x is None else labels.setdefault(x, len(labels)) for x in column),
            dtype=np.int32,
            count=len(column),
        ).tobytes()

    seen = probes.seen_src_ip if len(probes.seen_src_ip) == probes.size else (None,) * probes.size
    columns = {
        name: codes(column)
        for name, column in (
            ("src_node", probes.src_node),
            ("src_ip", probes.src_ip),
            ("target_ip", probes.target_ip),
            ("dst_node", probes.dst_node),
            ("path", probes.path),
            ("seen_src_ip", seen),
        )
    }
    return _SnapshotNlb(
        labels=list(labels),
        ts=probes.ts.astype(np.float64).tobytes(),
        src_port=probes.src_port.astype(np.int64).tobytes(),
        outcome=probes.outcome.astype(np.int64).tobytes(),
        late=probes.late.astype(np.bool_).tobytes(),
        **columns,
    )


def _nlb_probes_of(doc: _SnapshotNlb) -> NlbProbes:
    """The probes of a snapshot's NLB columns, checked: ``ValueError`` for columns of other
    lengths, codes past the labels, outcomes or paths this version does not know."""
    try:
        ts = np.frombuffer(doc.ts, dtype=np.float64).copy()
        numbers = {
            "src_port": np.frombuffer(doc.src_port, dtype=np.int64).copy(),
            "outcome": np.frombuffer(doc.outcome, dtype=np.int64).copy(),
        }
        late = np.frombuffer(doc.late, dtype=np.bool_).copy()
        raw = {
            name: np.frombuffer(getattr(doc, name), dtype=np.int32)
            for name in ("src_node", "src_ip", "target_ip", "dst_node", "path", "seen_src_ip")
        }
    except ValueError as exc:
        raise ValueError(f"corrupt snapshot: NLB probes: {exc}") from None
    n = ts.size
    if any(c.size != n for c in (*numbers.values(), late, *raw.values())):
        raise ValueError("corrupt snapshot: NLB probe columns of different lengths")
    if any(c.size and (int(c.min()) < -1 or int(c.max()) >= len(doc.labels)) for c in raw.values()):
        raise ValueError("corrupt snapshot: an NLB probe names a label the snapshot does not have")
    if n and (int(numbers["outcome"].min()) < 0 or int(numbers["outcome"].max()) >= len(OUTCOMES)):
        raise ValueError("corrupt snapshot: an NLB probe with an unknown outcome")
    labels: list[str | None] = [*doc.labels, None]  # code -1 is the last: none

    def column(name: str) -> tuple[str | None, ...]:
        return tuple(labels[i] for i in raw[name].tolist())

    src_node, path = column("src_node"), column("path")
    if any(x is None for x in src_node) or any(x not in _NLB_PATHS for x in path):
        raise ValueError("corrupt snapshot: an NLB probe without a source node or on another path")
    return NlbProbes(
        ts=ts,
        src_node=tuple(x or "" for x in src_node),
        src_ip=column("src_ip"),
        src_port=numbers["src_port"],
        target_ip=column("target_ip"),
        outcome=numbers["outcome"],
        dst_node=column("dst_node"),
        path=tuple(x or "" for x in path),
        late=late,
        seen_src_ip=column("seen_src_ip"),
    )


class _Queued(NamedTuple):
    """A batch :meth:`Store.queue` holds: :meth:`Store.ingest`'s arguments."""

    records: Sequence[ProbeResult]
    now: float
    jsonl: bytes | None
    observe: Callable[[IntArray, FloatArray, Keys], None] | None


class Store:
    """Windowed per-key statistics over the retention period. Not thread-safe."""

    def __init__(self, settings: StoreSettings | None = None) -> None:
        self.settings = settings or StoreSettings()
        self._keys = Keys()
        self._buckets: dict[int, _Bucket] = {}
        self._nodes: tuple[str, ...] | None = None
        self._recent = RecordRing(self.settings.recent_bytes)
        self._nlb = NlbRing(
            self.settings.recent_nlb_probes, self.settings.nlb_keep_s or self.settings.retention_s
        )
        self._compact_at = 4096  # interner size that triggers the next compaction
        self._n_buckets = max(1, math.ceil(self.settings.retention_s / self.settings.bucket_s))
        self._trimmed_at: int | None = None  # the current bucket when pair paths were last trimmed
        self._pair_cut: int | None = None  # buckets before it hold no pair paths' entries
        self._queued: list[_Queued] = []  # batches of :meth:`queue` not stored yet
        self._queued_records = 0
        self._queued_since = math.inf  # the ``now`` of the oldest queued batch

    def set_nodes(self, nodes: Sequence[str] | None) -> None:
        """The inventory's nodes, in matrix order; ``None`` keeps every node seen."""
        self._nodes = None if nodes is None else tuple(nodes)

    @property
    def nodes(self) -> tuple[str, ...] | None:
        return self._nodes

    def _bucket_of(self, ts: float) -> int:
        return math.floor(ts / self.settings.bucket_s)

    def ingest(
        self,
        records: Sequence[ProbeResult],
        *,
        now: float,
        jsonl: bytes | None = None,
        observe: Callable[[IntArray, FloatArray, Keys], None] | None = None,
    ) -> int:
        """Add records; returns how many fell within retention and were counted.

        A record stamped in the future (agent clock ahead) counts in the current
        bucket; one older than retention is dropped from the statistics (it still
        enters the raw-record rings). ``jsonl``: the records as they arrived, one line
        each in order, which the raw-record ring keeps as they are. ``observe`` is
        handed every record's sort key and latency as the store's labels encode them
        (the collector's latency histograms read them: one Python pass a record, not two).
        """
        if not records:
            return 0
        current = self._bucket_of(now)
        oldest = current - self._n_buckets + 1
        self._expire(oldest)
        self._trim_pairs(current)
        self._recent.extend(records, jsonl=jsonl)
        self._nlb.extend(compress(records, map(_NLB_PATHS.__contains__, map(_PATH, records))), now=now)
        sk, lat, ts = self._keys.encode(records)
        if observe is not None:
            observe(sk, lat, self._keys)
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

    def queue(
        self,
        records: Sequence[ProbeResult],
        *,
        now: float,
        jsonl: bytes | None = None,
        observe: Callable[[IntArray, FloatArray, Keys], None] | None = None,
    ) -> None:
        """:meth:`ingest`, for many small batches: held until ``queue_records`` results or
        ``queue_s`` seconds wait, then stored in one call, which costs what one batch's
        does beyond its results. Every read (windows, NLB probes, raw records, usage,
        snapshots) stores what waits first, so no reader misses a queued result."""
        if not records:
            return
        self._queued.append(_Queued(records, now, jsonl, observe))
        self._queued_records += len(records)
        self._queued_since = min(self._queued_since, now)
        settings = self.settings
        if self._queued_records >= settings.queue_records or now - self._queued_since >= settings.queue_s:
            self.flush()

    def flush(self) -> None:
        """Store the queued batches (:meth:`queue`): one :meth:`ingest` for all of them at
        the newest batch's ``now``, or one a batch where they were given different
        ``observe`` functions."""
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        self._queued_records, self._queued_since = 0, math.inf
        if len({q.observe for q in queued}) > 1:
            for q in queued:
                self.ingest(q.records, now=q.now, jsonl=q.jsonl, observe=q.observe)
            return
        records = [r for q in queued for r in q.records]
        # Each batch's lines as they arrived, if every batch has them; ingest checks that
        # they are one a record and encodes the records where they are not.
        lines = [q.jsonl for q in queued if q.jsonl]
        whole = len(lines) == len(queued)
        jsonl = b"".join(j if j.endswith(b"\n") else j + b"\n" for j in lines) if whole else None
        self.ingest(records, now=max(q.now for q in queued), jsonl=jsonl, observe=queued[0].observe)

    def admit(self, records: Sequence[ProbeResult]) -> tuple[list[ProbeResult], list[int]]:
        """(the records whose labels fit the key tables, indices of those that would overflow them).

        A full table rejects only the records that would add a label; the others,
        and every later batch of known labels, are stored as usual. Queued batches
        count as stored."""
        waiting = self._queued_records
        if self._keys.room_for(3 * (len(records) + waiting), len(records) + waiting):
            return list(records), []
        self.flush()
        return self._keys.admit(records)

    def _bucket(self, b: int) -> _Bucket:
        bucket = self._buckets.get(b)
        if bucket is None:
            bucket = self._buckets[b] = _Bucket()
        return bucket

    def _sealed(self, b: int) -> _Bucket:
        """Bucket ``b`` with its pending results sealed in; one before the pair cut
        (:meth:`_trim_pairs`) without its pair paths' entries, late results' too."""
        bucket = self._buckets[b]
        bucket.seal()
        if self._pair_cut is not None and b < self._pair_cut:
            bucket.drop_pairs(self._keys)
        return bucket

    def _expire(self, oldest: int) -> None:
        stale = [b for b in self._buckets if b < oldest]
        for b in stale:
            del self._buckets[b]
        keys = self._keys
        if stale and max(len(keys.names), len(keys.tc_path)) >= self._compact_at:
            self._compact()

    def _trim_pairs(self, current: int) -> None:
        """Drop the pair paths' entries of the buckets past the pair budget
        (:attr:`StoreSettings.pair_entries`), once a bucket: what
        :func:`~prober.aggregation.pair_cut` keeps of every bucket with no other entries.

        A long window read later within the same budget, at least ``pair_keep_s`` of
        pair paths, cuts no older: its newer buckets, and late results, only add entries,
        and it counts its other entries too. So every table it gives is the one of the
        whole store.
        """
        budget = self.settings.pair_entries
        if budget is None or current == self._trimmed_at:
            return
        self._trimmed_at = current
        keys = self._keys
        least = self._span(self.settings.pair_keep_s)
        previous = self._pair_cut
        kept = 0
        dropping = False
        for b in sorted(self._buckets, reverse=True):
            if previous is not None and b < previous:
                break  # dropped already; their late results are dropped as they are sealed
            bucket = self._sealed(b)
            if not dropping:
                pairs = bucket.pair_count(keys)
                if b > current - least or kept + pairs <= budget:
                    kept += pairs
                    continue
                dropping = True
                self._pair_cut = b + 1
            bucket.drop_pairs(keys)

    def _compact(self) -> None:
        """Forget labels no retained bucket references (departed nodes, replaced pod IPs)."""
        keys = self._keys
        for index in self._buckets:
            self._sealed(index)
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
        span = self._span(window_s)
        return range(current - span + 1, current + 1)

    def _span(self, window_s: float) -> int:
        """How many buckets a window covers (:meth:`_window`)."""
        # - 1e-9: a window that is a whole number of buckets must not round up to one more
        return min(self._n_buckets, max(1, math.ceil(window_s / self.settings.bucket_s - 1e-9)))

    def table(self, *, now: float, window_s: float) -> PairTable:
        """Outcome counts and latency histograms per key over the window ending at ``now``."""
        return self.snapshot(now=now, window_s=window_s).table()

    def snapshot(
        self, *, now: float, window_s: float, entries: int | None = None, pair_s: float | None = None
    ) -> WindowSnapshot:
        """The window's sealed runs and a copy of the labels: cheap, and safe to aggregate on
        another thread while ingest goes on (sealed runs are replaced, never modified).

        With ``pair_s`` (a long window's): its table reads the pair paths' entries of the
        newest buckets that cover ``pair_s`` (the default window), and of older ones only
        while it holds at most ``entries`` (:func:`prober.aggregation.pair_cut`)."""
        self.flush()
        window = self._window(now, window_s)
        self._expire(self._bucket_of(now) - self._n_buckets + 1)
        self._trim_pairs(self._bucket_of(now))
        parts = [(i, self._sealed(b)) for i, b in enumerate(window) if b in self._buckets]
        parts = [(i, p) for i, p in parts if p.sk.size]
        return WindowSnapshot(
            runs=[(p.sk, p.n, p.lat) for _, p in parts],
            keys=self._keys.frozen(),
            nodes=self._nodes,
            window_s=window_s,
            end_ts=now,
            places=tuple(i for i, _ in parts),
            span=len(window),
            bound=None if pair_s is None else (entries, len(self._window(now, pair_s))),
        )

    def nlb_probes(self, *, now: float, window_s: float) -> NlbProbes:
        """The recent NLB probes within the window (from the bounded ring)."""
        return nlb_probes_within(self.nlb_chunks(), now=now, window_s=window_s)

    def nlb_chunks(self) -> list[NlbChunk]:
        """The NLB ring's chunks, oldest first (:func:`nlb_probes_within` reads them): cheap,
        and safe to read on another thread."""
        self.flush()
        return self._nlb.chunks()

    def recent(self, *, since: float = -math.inf, limit: int | None = None) -> list[ProbeResult]:
        """Raw records stamped after ``since``, oldest first (at most what the ring holds)."""
        return _record_list_decoder.decode_lines(self.recent_jsonl(since=since, limit=limit))

    def recent_jsonl(self, *, since: float = -math.inf, limit: int | None = None) -> bytes:
        """:meth:`recent` as the JSONL lines they arrived as (``GET /api/v1/records``)."""
        self.flush()
        return self._recent.jsonl(since=since, limit=limit)

    # -- snapshots: the windows across a restart -------------------------------------------

    def dump(self, *, now: float) -> bytes:
        """The store as a snapshot (:data:`SNAPSHOT_MAGIC`, then a versioned msgpack document):
        every retained bucket, the labels they use, the recent NLB probes. Not the raw
        record ring (``GET /api/v1/records``), which starts empty after a restart."""
        return bytes(self.dumper(now=now)())

    def dumper(self, *, now: float) -> Callable[[], bytearray]:
        """:meth:`dump` in two steps: what must not run beside ingest (expiry, sealing, a
        copy of the labels, references to the sealed runs and the NLB ring's chunks) now,
        and the encoding (~0.5 CPU-s for a 1,000-node cluster's 90 MB), safe on another
        thread while ingest goes on (sealed runs and chunks are replaced, never
        modified), in the function it returns."""
        self.flush()
        self._expire(self._bucket_of(now) - self._n_buckets + 1)
        for index in self._buckets:
            self._sealed(index)
        labels = self._keys.frozen()
        runs = [(i, b.sk, b.n, b.lat) for i, b in sorted(self._buckets.items())]
        chunks = self._nlb.chunks()
        bucket_s, retention_s = self.settings.bucket_s, self.settings.retention_s

        def encode() -> bytearray:
            doc = _Snapshot(
                version=SNAPSHOT_VERSION,
                bucket_s=bucket_s,
                retention_s=retention_s,
                saved_at=now,
                names=labels.names,
                name_is_node=labels.name_is_node,
                tc_path=labels.tc_path,
                tc_proto=labels.tc_proto,
                tc_target=labels.tc_target,
                tc_target_ip=labels.tc_target_ip,
                buckets=[
                    _SnapshotBucket(index=i, sk=sk.tobytes(), n=n.tobytes(), lat=lat.tobytes())
                    for i, sk, n, lat in runs
                ],
                nlb_columns=_nlb_columns(NlbProbes.concat([c for _, _, c in chunks])),
            )
            # Encoded after the magic in one buffer: no second copy of the ~100 MB.
            out = bytearray(SNAPSHOT_MAGIC)
            _snapshot_encoder.encode_into(doc, out, len(SNAPSHOT_MAGIC))
            return out

        return encode

    def load(self, data: bytes, *, now: float) -> int:
        """Replace the store's buckets and labels with a snapshot's; returns the buckets kept
        (those still within retention). Raises ``ValueError`` for a snapshot that is not
        one (corrupt, truncated, another format version, another bucket width or
        retention, labels its buckets do not match): the store is then unchanged."""
        if not data.startswith(SNAPSHOT_MAGIC):
            raise ValueError("not a prober store snapshot")
        try:
            doc = _snapshot_decoder.decode(memoryview(data)[len(SNAPSHOT_MAGIC) :])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"corrupt snapshot: {exc}") from None
        if doc.version not in _READS:
            raise ValueError(
                f"snapshot format {doc.version}, this collector reads {', '.join(map(str, sorted(_READS)))}"
            )
        if (doc.bucket_s, doc.retention_s) != (self.settings.bucket_s, self.settings.retention_s):
            raise ValueError(
                f"snapshot of another store: {doc.bucket_s:g} s buckets and {doc.retention_s:g} s "
                f"retention, this one {self.settings.bucket_s:g} s and {self.settings.retention_s:g} s"
            )
        keys = _keys_of(doc)
        oldest = self._bucket_of(now) - self._n_buckets + 1
        buckets: dict[int, _Bucket] = {}
        for sb in doc.buckets:
            if sb.index < oldest:
                continue
            bucket = _Bucket()
            try:
                bucket.sk = np.frombuffer(sb.sk, dtype=np.int64).copy()
                bucket.n = np.frombuffer(sb.n, dtype=np.uint32).copy()
                bucket.lat = np.frombuffer(sb.lat, dtype=np.float64).copy()
                bucket.pairs = None
            except ValueError as exc:
                raise ValueError(f"corrupt snapshot: bucket {sb.index}: {exc}") from None
            if not bucket.sk.size == bucket.n.size == bucket.lat.size:
                raise ValueError(f"corrupt snapshot: bucket {sb.index} has columns of different lengths")
            if bucket.sk.size and not keys.holds(bucket.sk):
                raise ValueError(f"corrupt snapshot: bucket {sb.index} uses labels it does not have")
            if bucket.sk.size > 1 and not bool(np.all(bucket.sk[1:] > bucket.sk[:-1])):
                raise ValueError(f"corrupt snapshot: bucket {sb.index} is not a sorted run")
            buckets[sb.index] = bucket
        if doc.nlb_columns is not None:
            nlb = _nlb_probes_of(doc.nlb_columns)
        else:
            nlb = NlbProbes.from_records(doc.nlb)
        self._keys = keys
        self._buckets = buckets
        self._trimmed_at = self._pair_cut = None
        self._nlb.clear()
        self._nlb.add(nlb.since(now - self._nlb.keep_s), now=now)
        self._compact_at = max(4096, 2 * max(len(keys.names), len(keys.tc_path)))
        return len(buckets)

    def usage(self) -> StoreUsage:
        self.flush()
        return StoreUsage(
            buckets=len(self._buckets),
            entries=sum(b.entries for b in self._buckets.values()),
            bytes=sum(b.nbytes for b in self._buckets.values()),
            names=len(self._keys.names),
            tcombos=len(self._keys.tc_path),
            recent_records=self._recent.records,
            recent_bytes=self._recent.nbytes,
            recent_nlb_probes=self._nlb.probes,
        )
