"""Aggregation: probe results in, a :class:`~prober.stats.PairTable` out, vectorized.

The one way records become a table, for the collector's windowed store and for
recorded results alike (sweeps, ``prober diagnose``, the lab, tests). Each probe
becomes one 64-bit *sort key* that packs its key (target combination, source
node, destination) and a 5-bit *code* (the latency bin of a success, or the
failure outcome). Sorting the keys groups a window's probes; a sorted,
deduplicated run of keys with a count and a latency sum per entry (sparse
columns, COO) is what the store keeps per time bucket, and :meth:`Keys.table`
scatters such a run into the dense columns of a :class:`~prober.stats.PairTable`.
Per probe, one Python pass interns its labels; everything after that is NumPy.

:class:`Keys` interns the labels (node names and outside targets; target
combinations of path, proto, target and target address). Its ids are stable
while labels are added, so runs encoded at different times merge; the store
compacts it (:meth:`Keys.compact`, :meth:`Keys.remap`) when labels fall out of
retention.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from prober.arrays import BoolArray, CountArray, FloatArray, HistArray, IntArray, sorted_unique
from prober.model import (
    LATENCY_BUCKETS_S,
    OUTCOME_INDEX,
    OUTCOMES,
    OUTSIDE_KINDS,
    PATH_INDEX,
    PATHS,
    PEER_KINDS,
    ProbeResult,
    Proto,
    TargetKind,
    split_path,
)
from prober.stats import (
    DNS_RETRY_FIRST_BIN,
    N_LAT_BINS,
    OK,
    PROTO_INDEX,
    PROTOS,
    RETRANSMIT_BINS,
    UNKNOWN,
    PairTable,
)

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

#: Counts per entry (a sealed run's third column).
U32 = npt.NDArray[np.uint32]


def hist_dtype(cells: npt.NDArray[np.integer[Any]]) -> type[np.integer[Any]]:
    """The dtype of a latency histogram whose largest cell is the largest of ``cells``: the
    narrowest unsigned one that holds it, or int32 (:data:`prober.arrays.HistArray`)."""
    top = int(cells.max()) if cells.size else 0
    if top <= np.iinfo(np.uint8).max:
        return np.uint8
    if top <= np.iinfo(np.uint16).max:
        return np.uint16
    return np.int32


#: Targets a node probes among many in the cluster (peers, Services, NodePorts): a probe's
#: key holds the pair of nodes that sent and answered it, so a window holds up to N² keys
#: of each such path, against N per target of the others (outside targets, NLBs).
PAIR_KINDS: Final[frozenset[TargetKind]] = PEER_KINDS | {
    TargetKind.SERVICE,
    TargetKind.SERVICE_LOCAL,
    TargetKind.NODEPORT,
}
#: Per path index: is it a path of :data:`PAIR_KINDS`?
_PAIR_PATH: Final = np.array([split_path(p)[1] in PAIR_KINDS for p in PATHS], dtype=np.bool_)


class Keys:
    """Interns labels and turns records into sort keys; the store keeps one, a one-off table its own."""

    def __init__(self, *, max_names: int = MAX_NAMES, max_tcombos: int = MAX_TCOMBOS) -> None:
        #: Capacities: at most what the key layout allows (smaller ones are for tests).
        self.max_names = min(max_names, MAX_NAMES)
        self.max_tcombos = min(max_tcombos, MAX_TCOMBOS)
        self.names: list[str] = []
        # Node names and outside targets are interned apart: a record may name a node
        # the same as an outside target, and each keeps its own id (and kind).
        self.name_index: dict[str, int] = {}
        self.outside_index: dict[str, int] = {}
        self.name_is_node: list[bool] = []
        # (path, proto, target, target_ip) -> id, and its columns
        self.tcombo_index: dict[tuple[str, Proto, str, str | None], int] = {}
        self.tc_path: list[int] = []
        self.tc_proto: list[int] = []
        self.tc_target: list[str] = []
        self.tc_target_ip: list[str | None] = []
        #: Counts the compactions: a name's id holds until the next one.
        self.generation = 0
        self._tc_path_array: tuple[IntArray, int] = (np.zeros(0, dtype=np.int64), 0)

    def _name(self, label: str, *, node: bool) -> int:
        """Intern a node name or an outside target, each in its own index."""
        index = self.name_index if node else self.outside_index
        i = index.get(label)
        if i is None:
            i = len(self.names)
            if i >= self.max_names:
                raise OverflowError(f"more than {self.max_names} distinct node and target names")
            index[label] = i
            self.names.append(label)
            self.name_is_node.append(node)
        return i

    def room_for(self, names: int, tcombos: int) -> bool:
        """Whether that many new names and target combinations still fit the key layout."""
        return len(self.names) + names <= self.max_names and len(self.tc_path) + tcombos <= self.max_tcombos

    def _tcombo(self, key: tuple[str, Proto, str, str | None]) -> int:
        i = len(self.tc_path)
        if i >= self.max_tcombos:
            raise OverflowError(f"more than {self.max_tcombos} distinct (path, proto, target, address) keys")
        self.tcombo_index[key] = i
        self.tc_path.append(PATH_INDEX[key[0]])
        self.tc_proto.append(PROTO_INDEX[key[1]])
        self.tc_target.append(key[2])
        self.tc_target_ip.append(key[3])
        return i

    def encode(self, records: Iterable[ProbeResult]) -> tuple[IntArray, FloatArray, FloatArray]:
        """(sort keys, latencies (0 for failures), timestamps), one entry per record.

        One tight pass over the records (each is touched once, which matters more
        than anything else at a million records), then NumPy. Raises
        ``OverflowError`` when the labels outgrow the key layout (:meth:`admit` first
        keeps only the records that fit).
        """
        tco = self.tcombo_index
        names = self.name_index
        outside_names = self.outside_index
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
                known = outside_names.get(r.target)
                d = (self._name(r.target, node=False) if known is None else known) + 1
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
        sk: IntArray = (key << _CODE_BITS) | code
        return sk, lat, np.asarray(stamps, dtype=np.float64)

    def admit(self, records: Sequence[ProbeResult]) -> tuple[list[ProbeResult], list[int]]:
        """(records whose labels fit the key layout, indices of those that do not).

        A full table costs only the records that would add a label, never the ones
        whose labels are already known. Interns nothing.
        """
        tco = self.tcombo_index
        nodes = self.name_index
        outside = self.outside_index
        new_tc: set[tuple[str, Proto, str, str | None]] = set()
        new_names: set[tuple[bool, str]] = set()
        kept: list[ProbeResult] = []
        refused: list[int] = []
        for i, r in enumerate(records):
            tk = (r.path, r.proto, r.target, r.target_ip)
            want_tc = {tk} if tk not in tco and tk not in new_tc else set()
            want: set[tuple[bool, str]] = set()
            if r.src_node not in nodes:
                want.add((True, r.src_node))
            if r.path in _OUTSIDE_PATHS:
                if r.target not in outside:
                    want.add((False, r.target))
            elif r.dst_node is not None and r.dst_node not in nodes:
                want.add((True, r.dst_node))
            want -= new_names
            if (want or want_tc) and not self.room_for(len(new_names | want), len(new_tc | want_tc)):
                refused.append(i)
                continue
            new_tc |= want_tc
            new_names |= want
            kept.append(r)
        return kept, refused

    def frozen(self) -> Keys:
        """A copy of the labels that table building reads (not the lookup indexes it does not)."""
        copy = Keys(max_names=self.max_names, max_tcombos=self.max_tcombos)
        copy.names = self.names[:]
        copy.name_index = self.name_index.copy()
        copy.outside_index = self.outside_index.copy()
        copy.name_is_node = self.name_is_node[:]
        copy.tc_path = self.tc_path[:]
        copy.tc_proto = self.tc_proto[:]
        copy.tc_target = self.tc_target[:]
        copy.tc_target_ip = self.tc_target_ip[:]
        return copy

    def remap(self, sk: IntArray, tc_map: IntArray, name_map: IntArray) -> IntArray:
        """Sort keys under new interner ids (maps are monotonic, so sorted runs stay sorted)."""
        code = sk & _CODE_MASK
        key = sk >> _CODE_BITS
        d1 = key & _NAME_MASK
        s = (key >> _SRC_SHIFT) & _NAME_MASK
        t = key >> _TCOMBO_SHIFT
        d1_new = np.where(d1 == 0, 0, name_map[np.maximum(d1 - 1, 0)] + 1)
        out: IntArray = (
            ((tc_map[t] << _TCOMBO_SHIFT) | (name_map[s] << _SRC_SHIFT) | d1_new) << _CODE_BITS
        ) | code
        return out

    def compact(self, live_tc: BoolArray, live_names: BoolArray) -> tuple[IntArray, IntArray]:
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
        self.generation += 1
        self.names = [self.names[i] for i in keep_names]
        self.name_is_node = [self.name_is_node[i] for i in keep_names]
        self.name_index = {n: i for i, n in enumerate(self.names) if self.name_is_node[i]}
        self.outside_index = {n: i for i, n in enumerate(self.names) if not self.name_is_node[i]}
        return tc_map, name_map

    def holds(self, sk: IntArray) -> bool:
        """Whether every label the sort keys use is one of these (a snapshot's check)."""
        key = sk >> _CODE_BITS
        return bool(
            int((key >> _TCOMBO_SHIFT).max()) < len(self.tc_path)
            and int(((key >> _SRC_SHIFT) & _NAME_MASK).max()) < len(self.names)
            and int((key & _NAME_MASK).max()) <= len(self.names)
            and int((sk & _CODE_MASK).max()) < N_CODES
            and int(sk.min()) >= 0
        )

    def columns(self, sk: IntArray) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """Of each sort key: (its path's index in :data:`~prober.model.PATHS`, its source's
        name id, its destination's name id or -1 for none, its code: a success's latency
        bin below ``N_LAT_BINS``, else ``N_LAT_BINS`` + its outcome's index)."""
        key = sk >> _CODE_BITS
        path = self.tc_path_array()[key >> _TCOMBO_SHIFT]
        return path, (key >> _SRC_SHIFT) & _NAME_MASK, (key & _NAME_MASK) - 1, sk & _CODE_MASK

    def tc_path_array(self) -> IntArray:
        """:attr:`tc_path` as an array, kept as labels are added (a 5,000-node cluster has
        ~100,000 target combinations: made afresh for every batch, it cost more than the
        batch)."""
        arr, generation = self._tc_path_array
        n = len(self.tc_path)
        if generation != self.generation or arr.size > n:
            arr = np.asarray(self.tc_path, dtype=np.int64)
        elif arr.size < n:
            arr = np.concatenate((arr, np.asarray(self.tc_path[arr.size :], dtype=np.int64)))
        self._tc_path_array = (arr, self.generation)
        return arr

    def pair_entries(self, sk: IntArray) -> BoolArray:
        """Which of these sort keys are of a path of :data:`PAIR_KINDS`."""
        tc_pair = _PAIR_PATH[self.tc_path_array()]
        result: BoolArray = tc_pair[sk >> (_TCOMBO_SHIFT + _CODE_BITS)]
        return result

    def referenced(self, sks: Iterable[IntArray]) -> tuple[BoolArray, BoolArray]:
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
        sk: IntArray,
        n: U32,
        lat: FloatArray,
        *,
        nodes: Sequence[str] = (),
        only_nodes: bool = False,
        window_s: float,
        end_ts: float,
        histogram: bool = True,
    ) -> PairTable:
        """Scatter sorted, deduplicated (key, code) entries into a :class:`PairTable`.

        The table's nodes are ``nodes`` in order, then any other node seen in order of
        first appearance; with ``only_nodes``, rows whose source or destination node
        is not among ``nodes`` are dropped instead (departed nodes). Without
        ``histogram`` the table has no latency histogram (diagnosis reads only
        :attr:`PairTable.slow`): about half the bytes a row.
        """
        n_names = len(self.names)
        is_node = np.asarray(self.name_is_node, dtype=np.bool_).reshape(n_names)
        node_pos = np.full(n_names, UNKNOWN, dtype=np.int64)
        node_list = list(nodes)
        for i, name in enumerate(node_list):
            j = self.name_index.get(name)
            if j is not None:
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

        n_out = len(OUTCOMES)
        counts: CountArray = np.zeros((n_rows, n_out), dtype=np.int32)
        ok = code < N_LAT_BINS
        fail = ~ok
        ok_row, ok_n, ok_code = row[ok], n[ok], code[ok]
        # (row, code) pairs are unique after deduplication: plain assignment into the flat
        # arrays, no accumulation; successes per row summed over the entries, not the bins.
        hist: HistArray | None = None
        if histogram:
            hist = np.zeros((n_rows, N_LAT_BINS), dtype=hist_dtype(ok_n))
            hist.reshape(-1)[ok_row * N_LAT_BINS + ok_code] = ok_n
        slow: CountArray = np.zeros((n_rows, 2), dtype=np.int32)
        retried = (ok_code == RETRANSMIT_BINS[0]) | (ok_code == RETRANSMIT_BINS[1])
        for j, late in enumerate((retried, ok_code >= DNS_RETRY_FIRST_BIN)):
            np.add.at(slow[:, j], ok_row[late], ok_n[late])
        counts.reshape(-1)[row[fail] * n_out + (code[fail] - N_LAT_BINS)] = n[fail]
        counts[:, OK] = np.bincount(ok_row, weights=ok_n, minlength=n_rows)
        lat_sum = np.bincount(ok_row, weights=lat[ok], minlength=n_rows).astype(np.float64)
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
            slow=slow,
            window_s=window_s,
            end_ts=end_ts,
            # Rows sorted by (target combination, source, ...): a combination is a stream's
            # (path, proto, target, address), so a stream's rows are adjacent.
            stream_runs=True,
        )

    def _place_names(
        self, node_list: list[str], node_pos: IntArray, is_node: BoolArray, r_src: IntArray, r_d1: IntArray
    ) -> tuple[list[str], IntArray, tuple[str, ...]]:
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

    def _target_labels(self, r_tc: IntArray) -> tuple[list[str], list[str], IntArray, IntArray]:
        """(target labels, target address labels, tcombo -> target index, tcombo -> address index)."""
        used_tc = sorted_unique(r_tc).tolist()
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


def reduce_entries(
    sk: IntArray, n: U32, lat: FloatArray, *, presorted: bool = False
) -> tuple[IntArray, U32, FloatArray]:
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


def pair_cut(pair: Sequence[int], other: int, *, budget: int | None, least: int) -> int:
    """Of a long window's buckets, oldest first, the first whose entries of pair paths
    (:data:`PAIR_KINDS`) the window reads: the window reads every bucket's other entries
    (``other`` in all), the pair paths' entries of its newest ``least`` buckets, and of
    older ones, newest first, as long as what it reads stays within ``budget`` entries
    (``None``: no bound, every bucket).

    ``pair``: the pair paths' entries (distinct key and outcome) in each bucket, an
    empty bucket's 0 included. The bound is what makes a long window's table and
    diagnosis cost what the cluster's outside targets cost, not its N² pairs: in a large
    cluster a node's pair-path probes of the newest buckets are already many, and a
    pair's own are too few in any window to decide on (docs/architecture.md § Data flow).
    The collector's store and the replay (:mod:`prober.report`) both decide with this.
    """
    cut = max(0, len(pair) - least)
    if budget is None:
        return 0
    kept = other + sum(pair[cut:])
    while cut > 0 and kept + pair[cut - 1] <= budget:
        cut -= 1
        kept += pair[cut]
    return cut


@dataclass(frozen=True, slots=True)
class EncodedRecords:
    """Records encoded once (sort keys, latencies, timestamps over one :class:`Keys`): any
    number of tables over them, e.g. a window and its last seconds, cost one Python pass."""

    keys: Keys
    sk: IntArray
    lat: FloatArray
    ts: FloatArray

    def table(
        self,
        *,
        nodes: Sequence[str] = (),
        window_s: float | None = None,
        end_ts: float | None = None,
        after: float | None = None,
        since: float | None = None,
        until: float | None = None,
        pair_since: float | None = None,
    ) -> PairTable:
        """The table of the records (with ``after``: of those stamped after it; with
        ``since``/``until``: of those stamped within them, both included; with
        ``pair_since``: of the pair paths' (:data:`PAIR_KINDS`), only those stamped from
        it on).

        ``nodes`` come first, in order; other nodes seen follow in order of first
        appearance. ``window_s`` and ``end_ts`` default to the span of the records'
        timestamps.
        """
        sk, lat, ts = self.sk, self.lat, self.ts
        if after is not None or since is not None or until is not None or pair_since is not None:
            keep = np.ones(ts.size, dtype=np.bool_)
            if after is not None:
                keep &= ts > after
            if since is not None:
                keep &= ts >= since
            if until is not None:
                keep &= ts <= until
            if pair_since is not None:
                keep &= (ts >= pair_since) | ~self.keys.pair_entries(sk)
            sk, lat, ts = sk[keep], lat[keep], ts[keep]
        sk, n, lat = reduce_entries(sk, np.ones(sk.size, dtype=np.uint32), lat)
        if ts.size:
            lo, hi = float(ts.min()), float(ts.max())
        else:
            lo = hi = 0.0
        return self.keys.table(
            sk,
            n,
            lat,
            nodes=nodes,
            window_s=hi - lo if window_s is None else window_s,
            end_ts=hi if end_ts is None else end_ts,
        )

    def pair_entries_by_bucket(self, *, since: float, until: float, bucket_s: float) -> tuple[list[int], int]:
        """Of the records stamped within ``since``..``until`` (both included; ``since`` a
        bucket's start), as the collector's store holds them in buckets of ``bucket_s``
        (a bucket's entries are its distinct key and outcome): (per bucket, oldest first,
        its entries of pair paths; the other paths' entries of all of them). What
        :func:`pair_cut` reads."""
        first, last = math.floor(since / bucket_s), math.floor(until / bucket_s)
        keep = (self.ts >= since) & (self.ts <= until)
        sk = self.sk[keep]
        bucket = np.clip(np.floor(self.ts[keep] / bucket_s).astype(np.int64) - first, 0, last - first)
        order = np.lexsort((sk, bucket))
        sk, bucket = sk[order], bucket[order]
        distinct = np.ones(sk.size, dtype=np.bool_)
        distinct[1:] = (sk[1:] != sk[:-1]) | (bucket[1:] != bucket[:-1])
        pair = self.keys.pair_entries(sk) & distinct
        per_bucket = np.bincount(bucket[pair], minlength=last - first + 1)
        return [int(c) for c in per_bucket], int((distinct & ~pair).sum())


def encode_records(records: Iterable[ProbeResult]) -> EncodedRecords:
    keys = Keys()
    sk, lat, ts = keys.encode(records)
    return EncodedRecords(keys, sk, lat, ts)


def aggregate(
    records: Iterable[ProbeResult],
    *,
    nodes: Sequence[str] = (),
    window_s: float | None = None,
    end_ts: float | None = None,
) -> PairTable:
    """A :class:`PairTable` from records regardless of time: sweeps, offline diagnosis, the lab.

    ``nodes`` come first, in order; other nodes seen follow. ``window_s`` and
    ``end_ts`` default to the span of the records' timestamps.
    """
    return encode_records(records).table(nodes=nodes, window_s=window_s, end_ts=end_ts)
