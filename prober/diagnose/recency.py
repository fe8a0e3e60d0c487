"""Faults that start or end inside the window: merging the window's diagnosis with its last intervals'.

A window's counts have no time axis: a node that died two rounds before the end
of a six-round window shows a third of its probes failing, which reads as
packet-loss; a node that recovered two rounds in still shows the same third. When
the evidence carries ``recent`` (the same statistics over the window's last
intervals), diagnosis runs on both and merges:

* a finding of the window is **resolved** (dropped) when the recent probes of the
  streams it explains fail significantly less than it says: at least
  ``min_samples`` recent probes, and the binomial lower tail
  ``P(X <= recent impaired | recent probes, the finding's rate)`` below
  ``1 - min_confidence``;
* a recent finding (any kind but ``unexplained``: a short window's residue is
  mostly missing data) that names a node that a window finding of a *partial*
  kind (:data:`REPLACEABLE`: the modes marked ``replaceable``, such as packet-loss
  or node-unreachable) also names, with another kind, replaces it: it is what the
  node does now. When one of the two names no node, a common probe stream is the
  common place; two findings naming different nodes are both kept, whatever
  streams they share;
* findings of one kind naming the same nodes (or both none) are reported once,
  the window's (more evidence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from prober.diagnose.catalogue import MODES
from prober.diagnose.context import Footprint, StreamKey, stream_key
from prober.diagnose.policy import DiagnosisPolicy
from prober.diagnose.significance import log_binom_cdf
from prober.model import Finding, FindingKind, Proto
from prober.stats import OK, PROTO_INDEX, RETRANSMIT_BINS, PairTable

#: Window kinds that a fault's onset (or a change of it) inside the window can pass for.
REPLACEABLE: Final[frozenset[FindingKind]] = frozenset(m.kind for m in MODES if m.replaceable)


def stream_stats(table: PairTable) -> dict[StreamKey, tuple[float, float]]:
    """Per probe stream: (probes, impaired probes) — failed, or TCP successes after a retransmit."""
    tcp = {PROTO_INDEX[Proto.HTTP], PROTO_INDEX[Proto.TCP]}
    sent = table.counts.sum(axis=1)
    failed = sent - table.counts[:, OK]
    slow = table.latency_hist[:, RETRANSMIT_BINS[0]] + table.latency_hist[:, RETRANSMIT_BINS[1]]
    out: dict[StreamKey, tuple[float, float]] = {}
    for row in range(table.rows):
        key = stream_key(table, row)
        imp = float(failed[row]) + (float(slow[row]) if int(table.proto[row]) in tcp else 0.0)
        n0, i0 = out.get(key, (0.0, 0.0))
        out[key] = (n0 + float(sent[row]), i0 + imp)
    return out


def resolved(fp: Footprint, recent: dict[StreamKey, tuple[float, float]], policy: DiagnosisPolicy) -> bool:
    """True when the recent probes of the finding's streams contradict it."""
    if fp.probes <= 0 or fp.rate <= 0:
        return False
    n = i = 0.0
    for key in fp.streams:
        got = recent.get(key)
        if got is not None:
            n += got[0]
            i += got[1]
    if n < policy.min_samples:
        return False
    return log_binom_cdf(math.floor(i), n, fp.rate) <= math.log(policy.alpha)


def _same_place(a: tuple[Finding, Footprint], b: tuple[Finding, Footprint]) -> bool:
    """Do two findings name a common node, or (when one names none) explain a common probe stream?

    Two findings that name nodes, different ones, are two places even when they share
    a probe stream (a pod-network fault at one node and a dead node in its zone both
    explain the probes between them): both are kept.
    """
    (fa, pa), (fb, pb) = a, b
    if set(fa.nodes) & set(fb.nodes):
        return True
    return (not fa.nodes or not fb.nodes) and bool(set(pa.streams) & set(pb.streams))


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
        if w[0].kind in REPLACEABLE and any(r[0].kind != w[0].kind and _same_place(w, r) for r in fresh):
            continue
        kept.append(w)
    out = list(kept)
    for r in fresh:
        same_kind = [w for w in kept if w[0].kind == r[0].kind]
        if not any(_same_place(w, r) or (not w[0].nodes and not r[0].nodes) for w in same_kind):
            out.append(r)
    return out
