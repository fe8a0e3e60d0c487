"""Faults that start or end inside the window: merging the window's diagnosis with its last intervals'.

A window's counts have no time axis: a node that died two rounds before the end
of a six-round window shows a third of its probes failing, which reads as
packet-loss; a node that recovered two rounds in still shows the same third. When
the evidence carries ``recent`` (the same statistics over the window's last
intervals), diagnosis runs on both and merges:

* a finding of the window is **resolved** (dropped) when the recent probes of the
  streams it explains fail significantly less than the probes it explained: at
  least ``min_samples`` recent probes, and the one-sided Fisher exact test of the
  finding's impaired probes against the recent ones below ``1 - min_confidence``;
* a recent finding (any kind but ``unexplained``: a short window's residue is
  mostly missing data) that names a node that a window finding of a *partial*
  kind (:data:`REPLACEABLE`: the modes marked ``replaceable``, such as packet-loss
  or node-unreachable) also names, with another kind, replaces it: it is what the
  node does now. When one of the two names no node, a common probe stream is the
  common place; two findings naming different nodes are both kept, whatever
  streams they share; a finding naming the clients of a shared target (an NLB
  hairpin: every node the NLB serves) shares a place with another kind's only where
  that one explains mostly its probe streams (:func:`same_place`);
* findings of one kind naming the same nodes (or both none) are reported once,
  the window's (more evidence).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np

from prober.arrays import FloatArray, IntArray, unique_inverse
from prober.diagnose.catalogue import MODES
from prober.diagnose.context import Footprint, StreamKey
from prober.diagnose.policy import DiagnosisPolicy
from prober.diagnose.significance import log_excess
from prober.model import PATHS, Finding, FindingKind
from prober.stats import OK, PROTOS, TCP_PROTO_CODES, PairTable, probes_per_row

#: Window kinds that a fault's onset (or a change of it) inside the window can pass for.
REPLACEABLE: Final[frozenset[FindingKind]] = frozenset(m.kind for m in MODES if m.replaceable)
#: Kinds whose nodes are the clients of a shared target (an NLB hairpin names every node
#: the NLB serves): their place is their probe streams.
CLIENT_KINDS: Final[frozenset[FindingKind]] = frozenset(m.kind for m in MODES if m.clients)


class StreamStats:
    """Per probe stream: probes and impaired probes (failed, or TCP successes after a
    retransmit), summed over the table's rows with NumPy and looked up by :data:`StreamKey`.

    A stream is (path, proto, source node, target, target address); rows of one stream
    differ only by the node that answered. Only the streams a finding names are ever
    looked up, so the labels are mapped to codes per lookup, not per row, and the sums
    are made at the first lookup: a pass without findings makes none.
    """

    def __init__(self, table: PairTable) -> None:
        self._table = table
        # Mixed-radix code of the five columns (the target address shifted by one: -1 is none).
        self._radix = (len(PATHS), len(PROTOS), len(table.targets) + 1, len(table.target_ips) + 1,
                       len(table.nodes) + 1)  # fmt: skip
        if math.prod(self._radix) >= 2**62:
            raise OverflowError("too many distinct stream labels for a 64-bit stream code")
        self._sums: tuple[IntArray, FloatArray, FloatArray] | None = None
        self._positions: tuple[dict[str, int], dict[str, int], dict[str, int]] | None = None

    def _labels(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Each node's, target's and target address's position in the table."""
        if self._positions is None:
            t = self._table
            self._positions = (_position(t.nodes), _position(t.targets), _position(t.target_ips))
        return self._positions

    def _encode(
        self, path: IntArray, proto: IntArray, src: IntArray, target: IntArray, ip1: IntArray
    ) -> IntArray:
        r = self._radix
        out: IntArray = (((path * r[1] + proto) * r[2] + target) * r[3] + ip1) * r[4] + src
        return out

    def _streams(self) -> tuple[IntArray, FloatArray, FloatArray]:
        """(the streams' codes, sorted; their probes; their impaired probes)."""
        if self._sums is None:
            t = self._table
            tcp = np.isin(t.proto, TCP_PROTO_CODES)
            sent = probes_per_row(t.counts)
            impaired = sent - t.counts[:, OK] + np.where(tcp, t.slow[:, 0], 0)
            codes, inverse = unique_inverse(self._encode(t.path, t.proto, t.src, t.target, t.target_ip + 1))
            probes: FloatArray = np.bincount(inverse, weights=sent, minlength=codes.size).astype(np.float64)
            imp: FloatArray = np.bincount(inverse, weights=impaired, minlength=codes.size).astype(np.float64)
            self._sums = (codes, probes, imp)
        return self._sums

    def __len__(self) -> int:
        return int(self._streams()[0].size)

    def totals(self, keys: Iterable[StreamKey]) -> tuple[float, float]:
        """(probes, impaired probes) over the given streams (streams not in the table add 0)."""
        nodes, targets, ips = self._labels()
        rows: list[tuple[int, int, int, int, int]] = []
        for path, proto, src, target, ip in keys:
            s = nodes.get(src)
            t = targets.get(target)
            i = ips.get(ip, -1) if ip else -1
            if s is None or t is None or (ip and i < 0):
                continue
            rows.append((path, proto, s, t, i + 1))
        if not rows:
            return 0.0, 0.0
        codes, probes, impaired = self._streams()
        cols = np.asarray(rows, dtype=np.int64).T
        code = self._encode(cols[0], cols[1], cols[2], cols[3], cols[4])
        at = np.searchsorted(codes, code)
        found = at < codes.size
        found[found] = codes[at[found]] == code[found]
        return float(probes[at[found]].sum()), float(impaired[at[found]].sum())


def _position(labels: Sequence[str]) -> dict[str, int]:
    return {label: i for i, label in enumerate(labels)}


def stream_stats(table: PairTable) -> StreamStats:
    """Per probe stream of the table: probes and impaired probes (see :class:`StreamStats`)."""
    return StreamStats(table)


def resolved(fp: Footprint, recent: StreamStats | None, policy: DiagnosisPolicy) -> bool:
    """True when the recent probes of the finding's streams contradict it: they fail
    significantly less than the probes the finding explained (one-sided Fisher exact
    test, :func:`~prober.diagnose.significance.log_excess`). A finding named from a
    handful of probes (a rare path in the recent sub-window) is not contradicted by a
    handful of successes it never claimed to exclude; one named from many is by few."""
    if recent is None or fp.probes <= 0 or fp.rate <= 0:
        return False
    n, i = recent.totals(fp.streams)
    if n < policy.min_samples:
        return False
    return log_excess(fp.impaired, fp.probes, i, n) <= math.log(policy.alpha)


def same_place(a: tuple[Finding, Footprint], b: tuple[Finding, Footprint]) -> bool:
    """Do two findings name a common node, or (when one names none) explain a common probe stream?

    Two findings that name nodes, different ones, are two places even when they share
    a probe stream (a pod-network fault at one node and a dead node in its zone both
    explain the probes between them): both are kept. A finding whose nodes are the
    clients of a shared target (:data:`CLIENT_KINDS`: a hairpin NLB's, every node it
    serves) says nothing of their other paths: a finding of another kind is at its
    place only when most of the streams it explains are the client finding's
    (:func:`within_clients`), so a lossy node among them is still named.
    """
    (fa, pa), (fb, pb) = a, b
    if of_clients(fa, fb):
        return within_clients(a, b)
    if set(fa.nodes) & set(fb.nodes):
        return True
    return (not fa.nodes or not fb.nodes) and bool(set(pa.streams) & set(pb.streams))


def of_clients(a: Finding, b: Finding) -> bool:
    """Are two findings of different kinds, one naming the clients of a shared target
    (:data:`CLIENT_KINDS`)? Then a common node is no common place (:func:`within_clients`)."""
    return a.kind != b.kind and (a.kind in CLIENT_KINDS or b.kind in CLIENT_KINDS)


def within_clients(a: tuple[Finding, Footprint], b: tuple[Finding, Footprint]) -> bool:
    """Of two findings, one naming the clients of a shared target: does the other explain
    mostly that one's probe streams (its residue: failures on the hairpin NLB's streams)?
    A lossy client shares a few streams with it (its own probes of the NLB) among its
    many others, and is a place of its own."""
    clients, other = (a, b) if a[0].kind in CLIENT_KINDS else (b, a)
    theirs, mine = set(clients[1].streams), set(other[1].streams)
    return 2 * len(mine & theirs) > len(mine)


def merge(
    window: Sequence[tuple[Finding, Footprint]],
    recent: Sequence[tuple[Finding, Footprint]],
    recent_table: PairTable,
    policy: DiagnosisPolicy,
) -> list[tuple[Finding, Footprint]]:
    """The window's findings that still hold, with the recent findings folded in."""
    stats = stream_stats(recent_table)
    fresh = [r for r in recent if r[0].kind != FindingKind.UNEXPLAINED]
    kept: list[tuple[Finding, Footprint]] = []
    for w in window:
        if resolved(w[1], stats, policy):
            continue
        if w[0].kind in REPLACEABLE and any(r[0].kind != w[0].kind and same_place(w, r) for r in fresh):
            continue
        kept.append(w)
    out = list(kept)
    for r in fresh:
        same_kind = [w for w in kept if w[0].kind == r[0].kind]
        if not any(same_place(w, r) or (not w[0].nodes and not r[0].nodes) for w in same_kind):
            out.append(r)
    return out
