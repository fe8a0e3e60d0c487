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

import numpy as np

from prober.aggregation import encode_records
from prober.diagnose import NAMED_RULES, DiagnosisPolicy, Rule, RuleFailure, diagnose_windows
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
) -> tuple[Window, PairTable | None]:
    """The window of exactly these records, and (with ``recent_s``) the table of its last
    ``recent_s`` seconds before ``end_ts``.

    ``nodes`` come first in the tables, in order; other nodes seen follow.
    ``window_s`` and ``end_ts`` say which window the records are (default: their
    span, ending with the newest); they are not cut to it.
    """
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
) -> Evidence:
    """The evidence of exactly these records (see :func:`window_from_records`)."""
    window, recent = window_from_records(
        records, nodes=nodes, window_s=window_s, end_ts=end_ts, recent_s=recent_s
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
) -> Report:
    """The report of exactly these records: a sweep's, a recording's, one lab fault set's.

    The matrix's rows and columns are ``nodes`` in order, then any other node seen;
    it covers ``window_s`` ending at ``end_ts`` (default: the records' span, ending
    with the newest). With ``recent_s``, the last ``recent_s`` seconds are also
    diagnosed alone, so a fault that began or ended inside the window is named by
    what it is at its end.
    """
    window, recent = window_from_records(
        records, nodes=nodes, window_s=window_s, end_ts=end_ts, recent_s=recent_s
    )
    return build_report([window], nodes=nodes, topology=topology or Topology(), recent=recent, policy=policy)


@dataclass(frozen=True, slots=True, kw_only=True)
class Recording:
    """The records of the last part of a recording, and the time they span."""

    records: Sequence[ProbeResult]
    first_ts: float
    last_ts: float

    @property
    def span_s(self) -> float:
        return self.last_ts - self.first_ts


def last_seconds(records: Sequence[ProbeResult], seconds: float | None) -> Recording:
    """The records stamped in the last ``seconds`` before the newest one (all, for None)."""
    if not records:
        return Recording(records=records, first_ts=0.0, last_ts=0.0)
    ts = np.fromiter((r.ts for r in records), dtype=np.float64, count=len(records))
    end = float(ts.max())
    if seconds is not None:
        keep = ts >= end - seconds
        if not keep.all():
            records = [r for r, k in zip(records, keep.tolist(), strict=True) if k]
            ts = ts[keep]
    return Recording(records=records, first_ts=float(ts.min()), last_ts=end)
