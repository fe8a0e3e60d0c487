"""Columnar probe statistics: the one currency between the collector, the matrix and diagnosis.

A :class:`PairTable` holds, per key ``(path, proto, source node, destination, target,
target address)``, the count of each outcome and a latency histogram of the
successes over some window. :mod:`prober.aggregation` builds every one (the
collector's windowed store for any window, :meth:`PairTable.from_records` and
:mod:`prober.report` from recorded results). Diagnosis reads nothing else (plus
:class:`NlbProbes` for the one rule that needs individual probes, and
:class:`Topology`).

Pure: no I/O, no clock. Arrays, not objects, so a 5,000-node cluster's window fits
in memory and aggregates in milliseconds.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Final

import numpy as np

from prober.arrays import BoolArray, CountArray, FloatArray, HistArray, IntArray
from prober.inventory import Inventory, TrafficPolicy
from prober.model import (
    LATENCY_BUCKETS_S,
    OUTCOME_INDEX,
    OUTCOMES,
    OUTSIDE_KINDS,
    PATH_INDEX,
    PATHS,
    TCP_PROTOS,
    Outcome,
    ProbeResult,
    Proto,
    split_path,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
N_LAT_BINS: Final[int] = len(LATENCY_BUCKETS_S) + 1  # the last bin is +Inf
PROTOS: Final[tuple[Proto, ...]] = tuple(Proto)
PROTO_INDEX: Final[dict[Proto, int]] = {p: i for i, p in enumerate(PROTOS)}
#: The codes of the protocols that open a TCP connection (a success after a SYN retransmit shows).
TCP_PROTO_CODES: Final[tuple[int, ...]] = tuple(PROTO_INDEX[p] for p in PROTOS if p in TCP_PROTOS)
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
    """What the inventory says about nodes and balancers. Diagnosis uses it to expect, not to count.

    ``zones``: node -> zone. ``nlb_policies``: an NLB zone address -> the
    externalTrafficPolicy of the Service behind it (absent: not said). ``node_addresses``
    and ``pod_cidrs``: the addresses a node shows as a client when it forwards a probe
    on (externalTrafficPolicy: Cluster masquerades to the address it leaves by: its own,
    or its bridge's in its pod range), read back to the node by :meth:`node_at`.
    """

    zones: Mapping[str, str] = field(default_factory=dict)  # node -> zone ("" if unknown)
    nlb_policies: Mapping[str, TrafficPolicy] = field(default_factory=dict)
    node_addresses: Mapping[str, str] = field(default_factory=dict)  # address -> node
    pod_cidrs: Sequence[tuple[str, str]] = ()  # (CIDR, node)

    def zone(self, node: str) -> str:
        return self.zones.get(node, "")

    def node_at(self, address: str | None) -> str | None:
        """The node that owns ``address`` (its own address or one in its pod range), if any."""
        if address is None:
            return None
        node = self.node_addresses.get(address)
        if node is not None or not self.pod_cidrs:
            return node
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        for cidr, owner in self._networks():
            if ip in cidr:
                return owner
        return None

    def nodes_at(self, addresses: Iterable[str | None]) -> list[str | None]:
        """:meth:`node_at` of each address (each distinct one looked up once)."""
        seen: dict[str | None, str | None] = {}
        return [seen[a] if a in seen else seen.setdefault(a, self.node_at(a)) for a in addresses]

    def _networks(self) -> list[tuple[IPNetwork, str]]:
        return [(ipaddress.ip_network(c, strict=False), n) for c, n in self.pod_cidrs]

    @staticmethod
    def of(inventory: Inventory) -> Topology:
        return Topology(
            zones={n.name: n.zone for n in inventory.nodes},
            nlb_policies={
                a.address: nlb.external_traffic_policy
                for nlb in inventory.nlbs
                if nlb.external_traffic_policy is not None
                for a in nlb.addresses
            },
            node_addresses={n.address: n.name for n in inventory.nodes},
            pod_cidrs=tuple((n.pod_cidr, n.name) for n in inventory.nodes if n.pod_cidr),
        )


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
    counts: CountArray  # (rows, len(OUTCOMES))
    latency_sum_s: FloatArray  # (rows,) sum over successes
    #: (rows, N_LAT_BINS), successes only; None in a table built for diagnosis alone, which
    #: needs only :attr:`slow` (the histogram is 19 of a row's ~35 numbers).
    latency_hist: HistArray | None
    #: (rows, 2): successes in :data:`RETRANSMIT_BINS` (a SYN retransmit) and in the bins
    #: from :data:`DNS_RETRY_FIRST_BIN` on (a DNS retry); :func:`slow_of` a histogram.
    slow: CountArray
    window_s: float = 0.0
    end_ts: float = 0.0
    #: The rows of one probe stream (path, proto, source, target, address) are adjacent, as
    #: :meth:`prober.aggregation.Keys.table` orders them: a stream is a run of rows.
    stream_runs: bool = False
    #: :attr:`sent`, made at its first read.
    _sent: IntArray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def rows(self) -> int:
        return int(self.path.shape[0])

    @property
    def sent(self) -> IntArray:
        """Each row's probes: the sum of its outcome counts. Made once (``einsum``: ~20 ms
        over a window's 1.4 million rows, where ``sum(axis=1)`` took ~45 ms at each of a
        pass's several reads) and read-only."""
        if self._sent is None:
            sent: IntArray = np.einsum("ij->i", self.counts, dtype=np.int64)
            sent.flags.writeable = False
            object.__setattr__(self, "_sent", sent)  # a cache: the table stays as it was made
            return sent
        return self._sent

    @property
    def ok(self) -> CountArray:
        result: CountArray = self.counts[:, OK]
        return result

    @property
    def hist(self) -> HistArray:
        """:attr:`latency_hist`; ``ValueError`` for a table built without it."""
        if self.latency_hist is None:
            raise ValueError("this table was built for diagnosis alone, without latency histograms")
        return self.latency_hist

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
            latency_hist=None if self.latency_hist is None else self.latency_hist[mask],
            slow=self.slow[mask],
            window_s=self.window_s,
            end_ts=self.end_ts,
            stream_runs=self.stream_runs,
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
            counts=np.zeros((0, len(OUTCOMES)), dtype=np.int32),
            latency_sum_s=np.zeros(0, dtype=np.float64),
            latency_hist=np.zeros((0, N_LAT_BINS), dtype=np.int32),
            slow=np.zeros((0, 2), dtype=np.int32),
        )

    @staticmethod
    def from_records(records: Iterable[ProbeResult], *, nodes: Sequence[str] = ()) -> PairTable:
        """Aggregate records into a table (:func:`prober.aggregation.aggregate`). ``nodes``
        fixes the order of known nodes first."""
        # prober.aggregation builds on this module: imported here, not at the top (a cycle).
        from prober.aggregation import aggregate  # noqa: PLC0415

        return aggregate(records, nodes=nodes)


#: Histogram bins (0.9, 1.1] and (2.9, 3.1]: a TCP success that needed the first or
#: second SYN retransmit, i.e. a lost SYN or SYN-ACK.
RETRANSMIT_BINS: Final[tuple[int, int]] = (LATENCY_BUCKETS_S.index(1.1), LATENCY_BUCKETS_S.index(3.1))
_TCP_PROTOS: Final[frozenset[Proto]] = TCP_PROTOS
#: Bins above 5 s: a DNS answer that came only after the resolver's 5 s retry.
DNS_RETRY_FIRST_BIN: Final[int] = LATENCY_BUCKETS_S.index(7.5)


def probes_per_row(counts: CountArray) -> FloatArray:
    """Each row's probes (the sum of its outcome counts) as floats: ``einsum`` sums the few
    columns of each row in one pass, where ``sum(axis=1)`` then ``astype`` took twice as
    long over a window's million rows."""
    result: FloatArray = np.einsum("ij->i", counts, dtype=np.float64)
    return result


def slow_of(hist: HistArray) -> CountArray:
    """:attr:`PairTable.slow` of a (rows, N_LAT_BINS) histogram."""
    slow = np.empty((hist.shape[0], 2), dtype=np.int32)
    slow[:, 0] = hist[:, RETRANSMIT_BINS].sum(axis=1)  # widened: a narrow histogram's sum would wrap
    slow[:, 1] = hist[:, DNS_RETRY_FIRST_BIN:].sum(axis=1)
    return slow


#: The earliest a success that needed a SYN retransmit can take: the lower edge of its bin.
_FIRST_RETRANSMIT_S: Final[float] = LATENCY_BUCKETS_S[RETRANSMIT_BINS[0] - 1]


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
    #: A TCP or HTTP success slower than a first SYN retransmit can be (over 0.9 s): it
    #: needed one, or stalled as long. How a colliding connection ends when the probe
    #: timeout outlasts the retransmit (1 s late, or 2 s when the retransmit meets the
    #: other connection's remains).
    late: BoolArray
    #: The client address the echo saw (on success): under externalTrafficPolicy:
    #: Cluster the node the NLB picked (``Topology.node_at``).
    seen_src_ip: tuple[str | None, ...] = ()

    @property
    def size(self) -> int:
        return int(self.ts.shape[0])

    def since(self, ts: float) -> NlbProbes:
        """The probes stamped at ``ts`` or later."""
        return self.take(np.flatnonzero(self.ts >= ts))

    def take(self, keep: IntArray) -> NlbProbes:
        """The probes at positions ``keep``, in that order."""
        idx = keep.tolist()

        def pick(column: tuple[str | None, ...]) -> tuple[str | None, ...]:
            return tuple(column[i] for i in idx)

        return NlbProbes(
            ts=self.ts[keep],
            src_node=tuple(self.src_node[i] for i in idx),
            src_ip=pick(self.src_ip),
            src_port=self.src_port[keep],
            target_ip=pick(self.target_ip),
            outcome=self.outcome[keep],
            dst_node=pick(self.dst_node),
            path=tuple(self.path[i] for i in idx),
            late=self.late[keep],
            seen_src_ip=pick(self.seen_src_ip) if self.seen_src_ip else (),
        )

    @staticmethod
    def concat(parts: Sequence[NlbProbes]) -> NlbProbes:
        """The probes of ``parts``, one after another."""
        if not parts:
            return NlbProbes.from_records(())
        if len(parts) == 1:
            return parts[0]
        flat = chain.from_iterable

        def join(column: Iterable[IntArray]) -> IntArray:
            result: IntArray = np.concatenate(list(column))
            return result

        return NlbProbes(
            ts=np.concatenate([p.ts for p in parts]),
            src_node=tuple(flat(p.src_node for p in parts)),
            src_ip=tuple(flat(p.src_ip for p in parts)),
            src_port=join(p.src_port for p in parts),
            target_ip=tuple(flat(p.target_ip for p in parts)),
            outcome=join(p.outcome for p in parts),
            dst_node=tuple(flat(p.dst_node for p in parts)),
            path=tuple(flat(p.path for p in parts)),
            late=np.concatenate([p.late for p in parts]),
            seen_src_ip=(
                tuple(flat(p.seen_src_ip for p in parts))
                if all(len(p.seen_src_ip) == p.size for p in parts)
                else ()
            ),
        )

    @staticmethod
    def from_records(records: Iterable[ProbeResult], *, labels: dict[str, str] | None = None) -> NlbProbes:
        """The NLB probes of ``records``. ``labels``: node names, addresses and paths seen
        before, each kept once (a ring of hundreds of thousands of probes holds one string
        per node and address, not one per probe); new ones are added to it."""
        rs = [r for r in records if r.path.endswith("-to-nlb")]
        outcome = np.asarray([OUTCOME_INDEX[r.outcome] for r in rs], dtype=np.int64)
        latency = np.asarray([r.latency_s for r in rs], dtype=np.float64)  # None -> NaN
        tcp = np.asarray([r.proto in _TCP_PROTOS for r in rs], dtype=np.bool_)
        known: dict[str, str] = {} if labels is None else labels

        def name(x: str) -> str:
            return known.setdefault(x, x)

        def either(x: str | None) -> str | None:
            return None if x is None else known.setdefault(x, x)

        return NlbProbes(
            ts=np.asarray([r.ts for r in rs], dtype=np.float64),
            src_node=tuple(name(r.src_node) for r in rs),
            src_ip=tuple(either(r.src_ip) for r in rs),
            src_port=np.asarray([-1 if r.src_port is None else r.src_port for r in rs], dtype=np.int64),
            target_ip=tuple(either(r.target_ip) for r in rs),
            outcome=outcome,
            dst_node=tuple(either(r.dst_node) for r in rs),
            path=tuple(name(r.path) for r in rs),
            late=(outcome == OK) & tcp & (np.nan_to_num(latency) > _FIRST_RETRANSMIT_S),
            seen_src_ip=tuple(either(r.seen_src_ip) for r in rs),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """Everything diagnosis looks at for one window.

    ``recent`` (optional) is the same statistics over the window's last few probe
    intervals (e.g. the last two). With it, diagnosis names a fault that started
    inside the window by what it is now (a node that just died is unreachable, not
    lossy) and drops a finding the recent probes contradict (a node that recovered).
    ``latest`` (optional, with ``recent``) is a shorter tail still, diagnosed within
    the recent run the same way: the collector's recent is a round and a half and
    latest a round, so a fault whose rule needs more than a round's probes is named
    from recent and the others a bucket sooner from latest.
    :func:`prober.report.evidence_from_records` builds one from recorded results.
    """

    table: PairTable
    nlb_probes: NlbProbes | None = None
    topology: Topology = field(default_factory=Topology)
    recent: PairTable | None = None
    latest: PairTable | None = None


def source_kind_of(path_index: int) -> str:
    return split_path(PATHS[path_index])[0].value
