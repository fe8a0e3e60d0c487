"""The report pipeline: probe results (or a window's tables) in; evidence, findings, matrix out.

Every report prober makes goes this one way, whoever asks: the collector for its
windows, a sweep, ``prober diagnose`` for a recording, the lab for one fault set,
the benchmarks::

    records ─ aggregate ─► Window(table, NLB probes) ─┬─► Evidence (+ topology, recent)
                                                      │    └─ diagnose_windows ─► findings ─┐
                                                      └─ build_matrix ──────────► matrix ───┴─► Report

A :class:`Window` is one window's statistics however they were gathered: from
records here (:func:`window_from_records`), or from the collector's store, which
keeps its own buckets and hands out a table and the NLB probes of any window.
Several windows ending at the same time (shortest first) are diagnosed together
and merged by :func:`prober.diagnose.diagnose_windows`; one window is the same
call with one element. ``recent`` (the same statistics over the last few
intervals) goes with each window longer than it.

Pure: no I/O, no clock (the window's end is an argument or the newest record).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from prober.aggregation import encode_records
from prober.arrays import FloatArray
from prober.diagnose import NAMED_RULES, DiagnosisPolicy, Rule, RuleFailure, diagnose_windows
from prober.lifecycle import AgentStop, without_routine
from prober.matrix import build_matrix
from prober.model import Finding, Matrix, ProbeResult, Report
from prober.stats import Evidence, NlbProbes, PairTable, Topology


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """One window's probes, aggregated: what diagnosis and the matrix read.

    ``table.window_s`` and ``table.end_ts`` say which window it is; ``nlb_probes``
    (individual NLB probes) are needed only by the 5-tuple collision rule.
    """

    table: PairTable
    nlb_probes: NlbProbes | None = None


def evidence_for(
    windows: Sequence[Window], *, topology: Topology, recent: PairTable | None = None
) -> list[Evidence]:
    """The evidence of each window; ``recent`` goes with each window longer than it."""
    return [
        Evidence(
            table=w.table,
            nlb_probes=w.nlb_probes,
            topology=topology,
            recent=recent if recent is not None and w.table.window_s > recent.window_s else None,
        )
        for w in windows
    ]


def findings_for(
    windows: Sequence[Window],
    *,
    topology: Topology,
    recent: PairTable | None = None,
    policy: DiagnosisPolicy | None = None,
    rules: Sequence[tuple[str, Rule]] = NAMED_RULES,
    failures: list[RuleFailure] | None = None,
) -> list[Finding]:
    """The findings of one window, or of several ending together (shortest first), merged.

    With ``failures``, a rule that raises is isolated and listed there
    (:func:`~prober.diagnose.diagnose_windows`)."""
    return diagnose_windows(
        evidence_for(windows, topology=topology, recent=recent),
        policy=policy,
        rules=rules,
        failures=failures,
    )


def matrix_for(table: PairTable, *, nodes: Sequence[str]) -> Matrix:
    """The matrix of a window's table: ``nodes`` first, in order; it ends at ``table.end_ts``."""
    return build_matrix(table, nodes=nodes, window_s=table.window_s, generated_at=table.end_ts)


def build_report(
    windows: Sequence[Window],
    *,
    nodes: Sequence[str],
    topology: Topology,
    recent: PairTable | None = None,
    policy: DiagnosisPolicy | None = None,
) -> Report:
    """Matrix (of the first, shortest window) and findings (of all of them, merged)."""
    return Report(
        matrix=matrix_for(windows[0].table, nodes=nodes),
        findings=findings_for(windows, topology=topology, recent=recent, policy=policy),
    )


def window_from_records(
    records: Sequence[ProbeResult],
    *,
    nodes: Sequence[str] = (),
    window_s: float | None = None,
    end_ts: float | None = None,
    recent_s: float | None = None,
    stops: Sequence[AgentStop] = (),
) -> tuple[Window, PairTable | None]:
    """The window of exactly these records, and (with ``recent_s``) the table of its last
    ``recent_s`` seconds before ``end_ts``.

    ``nodes`` come first in the tables, in order; other nodes seen follow.
    ``window_s`` and ``end_ts`` say which window the records are (default: their
    span, ending with the newest); they are not cut to it. Probes of agents that
    had stopped on purpose (``stops``, see :mod:`prober.lifecycle`) are left out.
    """
    records, _ = without_routine(records, stops)
    encoded = encode_records(records)
    table = encoded.table(nodes=nodes, window_s=window_s, end_ts=end_ts)
    recent = None
    if recent_s is not None and table.rows:
        recent = encoded.table(
            nodes=table.nodes, window_s=recent_s, end_ts=table.end_ts, after=table.end_ts - recent_s
        )
    return Window(table=table, nlb_probes=NlbProbes.from_records(records)), recent


def evidence_from_records(
    records: Sequence[ProbeResult],
    *,
    nodes: Sequence[str] = (),
    topology: Topology | None = None,
    window_s: float | None = None,
    end_ts: float | None = None,
    recent_s: float | None = None,
    stops: Sequence[AgentStop] = (),
) -> Evidence:
    """The evidence of exactly these records (see :func:`window_from_records`)."""
    window, recent = window_from_records(
        records, nodes=nodes, window_s=window_s, end_ts=end_ts, recent_s=recent_s, stops=stops
    )
    [ev] = evidence_for([window], topology=topology or Topology(), recent=recent)
    return ev


def report_from_records(
    records: Sequence[ProbeResult],
    *,
    nodes: Sequence[str] = (),
    topology: Topology | None = None,
    policy: DiagnosisPolicy | None = None,
    window_s: float | None = None,
    end_ts: float | None = None,
    recent_s: float | None = None,
    stops: Sequence[AgentStop] = (),
) -> Report:
    """The report of exactly these records: a sweep's, a recording's, one lab fault set's.

    The matrix's rows and columns are ``nodes`` in order, then any other node seen;
    it covers ``window_s`` ending at ``end_ts`` (default: the records' span, ending
    with the newest). With ``recent_s``, the last ``recent_s`` seconds are also
    diagnosed alone, so a fault that began or ended inside the window is named by
    what it is at its end. Probes of agents that had stopped on purpose (``stops``)
    are left out.
    """
    window, recent = window_from_records(
        records, nodes=nodes, window_s=window_s, end_ts=end_ts, recent_s=recent_s, stops=stops
    )
    return build_report([window], nodes=nodes, topology=topology or Topology(), recent=recent, policy=policy)


#: How far a record may be stamped beyond the recording's end (or before its start)
#: and still count: two probe intervals, the batching delay of an agent's reports.
MAX_SKEW_S: Final[float] = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Recording:
    """The records of the last part of a recording, the time they span, and what was left out.

    ``future`` and ``past`` count the records stamped more than the skew bound after
    the recording's end or before its start (a source node's clock off, a replayed
    file): they are left out and never move the window. ``skewed`` names their
    source nodes.
    """

    records: Sequence[ProbeResult]
    first_ts: float
    last_ts: float
    future: int = 0
    past: int = 0
    skewed: tuple[str, ...] = ()

    @property
    def span_s(self) -> float:
        return self.last_ts - self.first_ts


def _robust_edge(ts: FloatArray, skew_s: float) -> float:
    """The newest of sorted ``ts`` once lone leading outliers are peeled off: a time more
    than ``skew_s`` past the next one is one record's clock, not the source's."""
    top = ts.size - 1
    while top > 0 and ts[top] - ts[top - 1] > skew_s:
        top -= 1
    return float(ts[top])


def recording_bounds(records: Sequence[ProbeResult], *, skew_s: float = MAX_SKEW_S) -> tuple[float, float]:
    """(start, end) of a recording as its sources see it, not as its most extreme record says.

    The end is the median over source nodes of each one's newest time (lone outliers
    peeled off): the time at least half of them reached, so a minority of skewed
    clocks cannot move it. The start likewise from each one's oldest.
    """
    ts = np.fromiter((r.ts for r in records), dtype=np.float64, count=len(records))
    names = [r.src_node for r in records]
    codes = {n: i for i, n in enumerate(sorted(set(names)))}
    src = np.fromiter((codes[n] for n in names), dtype=np.int64, count=len(records))
    order = np.lexsort((ts, src))
    ts_sorted, src_sorted = ts[order], src[order]
    cuts = np.flatnonzero(np.diff(src_sorted)) + 1
    ends, starts = [], []
    for run in np.split(ts_sorted, cuts):
        ends.append(_robust_edge(run, skew_s))
        starts.append(-_robust_edge(-run[::-1], skew_s))
    return float(np.median(starts)), float(np.median(ends))


def last_seconds(
    records: Sequence[ProbeResult], seconds: float | None, *, skew_s: float = MAX_SKEW_S
) -> Recording:
    """The records stamped in the last ``seconds`` before the recording's end (all, for None).

    The end (and start) are the sources' (:func:`recording_bounds`); records stamped
    more than ``skew_s`` beyond either are left out and counted, never the window's end.
    """
    if not records:
        return Recording(records=records, first_ts=0.0, last_ts=0.0)
    start, end = recording_bounds(records, skew_s=skew_s)
    ts = np.fromiter((r.ts for r in records), dtype=np.float64, count=len(records))
    future = ts > end + skew_s
    past = ts < start - skew_s
    keep = ~future & ~past
    if seconds is not None:
        keep &= ts >= end - seconds
    skewed = tuple(
        sorted({r.src_node for r, bad in zip(records, (future | past).tolist(), strict=True) if bad})
    )
    if not keep.all():
        records = [r for r, k in zip(records, keep.tolist(), strict=True) if k]
        ts = ts[keep]
    if not records:
        return Recording(
            records=records,
            first_ts=end,
            last_ts=end,
            future=int(future.sum()),
            past=int(past.sum()),
            skewed=skewed,
        )
    return Recording(
        records=records,
        first_ts=float(ts.min()),
        last_ts=float(ts.max()),
        future=int(future.sum()),
        past=int(past.sum()),
        skewed=skewed,
    )
