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

The collector diagnoses its windows in passes (:class:`PassSchedule`) and shows
what :class:`~prober.diagnose.confirm.Confirmation` confirms over them
(:func:`confirmed_pass`); :func:`replay_passes` replays the passes the collector
would have made over recorded results, so ``prober diagnose`` and sweeps show what
the collector would have shown at the recording's end.

Pure: no I/O, no clock (the window's end is an argument or the newest record).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from prober.aggregation import EncodedRecords, encode_records, pair_cut
from prober.arrays import FloatArray
from prober.diagnose import (
    NAMED_RULES,
    DiagnosisPolicy,
    Footprint,
    Rule,
    RuleFailure,
    diagnose_window,
    diagnose_windows,
    longer_window_rules,
    merge_windows_found,
)
from prober.diagnose.confirm import PROVISIONAL, Confirmation, ConfirmPolicy
from prober.diagnose.recency import stream_stats
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
    windows: Sequence[Window],
    *,
    topology: Topology,
    recent: PairTable | None = None,
    latest: PairTable | None = None,
) -> list[Evidence]:
    """The evidence of each window; ``recent`` goes with each window longer than it, and
    ``latest`` with the recent it is shorter than."""
    if recent is None or latest is None or latest.window_s >= recent.window_s:
        latest = None
    return [
        Evidence(table=w.table, nlb_probes=w.nlb_probes, topology=topology, recent=recent, latest=latest)
        if recent is not None and w.table.window_s > recent.window_s
        else Evidence(table=w.table, nlb_probes=w.nlb_probes, topology=topology)
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


@dataclass(frozen=True, slots=True, kw_only=True)
class PassSchedule:
    """How the collector diagnoses one window, pass after pass (its settings' defaults).

    Each pass at ``now`` reads the window (whole ``bucket_s`` buckets, the current one
    included: ``window_s`` rounded up), its last ``recent_s`` as ``recent`` evidence and
    ``latest_s`` as ``latest``, and
    the long window's last findings (``long_window_s``; none when not longer than the
    window), recomputed when older than ``long_refresh_s``. Passes come every
    ``refresh_s``; what they show is confirmed as :class:`ConfirmPolicy` says.
    """

    window_s: float = 60.0
    bucket_s: float = 5.0
    #: The agents' round (``--interval``).
    round_s: float = 10.0
    long_window_factor: float = 5.0
    refresh_s: float = 5.0
    long_refresh_s: float = 10.0
    retention_s: float = 900.0
    #: The long window's bound, in entries (distinct key and outcome a bucket): it reads its
    #: outside and NLB targets whole, and the pair paths of as many of its newest buckets
    #: as fit, never fewer than the window's (:func:`prober.aggregation.pair_cut`). ``None``:
    #: no bound.
    long_window_entries: int | None = 2_000_000

    @property
    def latest_s(self) -> float:
        """The latest sub-window: whole buckets covering one round besides the bucket in
        progress, so it always holds a whole round of probes and, as soon as a round has
        passed since a fault began, nothing from before it (15 s at 10 s rounds and 5 s
        buckets: a fault is named by what it is now within a round and a half)."""
        return (math.ceil(self.round_s / self.bucket_s - 1e-9) + 1) * self.bucket_s

    @property
    def recent_s(self) -> float:
        """The recent sub-window: a bucket more than the latest (20 s at the production
        schedule), for the rules that need more than a round's probes of a rare path
        (bridge-netfilter reads a node's probes of its own Service backend)."""
        return self.latest_s + self.bucket_s

    @property
    def long_window_s(self) -> float:
        """The long window (within retention); not longer than the window: none."""
        return min(self.retention_s, self.window_s * self.long_window_factor)

    def covering(self, span_s: float) -> PassSchedule:
        """This schedule with a window that covers ``span_s`` seconds of records however
        they fall on bucket boundaries (a sweep, a whole recording)."""
        window_s = (math.ceil(max(span_s, 0.0) / self.bucket_s) + 1) * self.bucket_s
        return replace(self, window_s=window_s, retention_s=max(self.retention_s, window_s))

    @property
    def confirm(self) -> ConfirmPolicy:
        return ConfirmPolicy.of(
            recent_s=self.recent_s, round_s=self.round_s, bucket_s=self.bucket_s, window_s=self.window_s
        )

    def buckets(self, now: float, window_s: float) -> tuple[float, float]:
        """(first second, last second) of the buckets a window ending at ``now`` covers."""
        current = math.floor(now / self.bucket_s)
        n_max = max(1, math.ceil(self.retention_s / self.bucket_s))
        span = min(n_max, max(1, math.ceil(window_s / self.bucket_s - 1e-9)))
        return (current - span + 1) * self.bucket_s, now


def confirmed_pass(
    confirmation: Confirmation,
    now: float,
    per_window: Sequence[Sequence[tuple[Finding, Footprint]]],
    *,
    main: PairTable,
    recent: PairTable | None,
    policy: DiagnosisPolicy | None = None,
) -> list[Finding]:
    """What a pass at ``now`` shows: its windows' findings (shortest first) merged, then
    confirmed over the passes before (:mod:`prober.diagnose.confirm`). The one place the
    collector and :func:`replay_passes` decide what is shown."""
    pol = policy or DiagnosisPolicy()
    merged = merge_windows_found(per_window, shortest=main if len(per_window) > 1 else None, policy=pol)
    stats = stream_stats(recent) if recent is not None and recent.rows else None
    return [f for f, _ in confirmation.step(now, merged, stats, pol)]


#: The most passes :func:`replay_passes` replays: with the default schedule, every pass
#: that decides what a window of up to 125 s shows.
MAX_REPLAYED_PASSES: Final = 40


def replay_passes(
    records: Sequence[ProbeResult],
    *,
    end_ts: float,
    schedule: PassSchedule,
    nodes: Sequence[str] = (),
    topology: Topology | None = None,
    policy: DiagnosisPolicy | None = None,
    rules: Sequence[tuple[str, Rule]] = NAMED_RULES,
    stops: Sequence[AgentStop] = (),
) -> list[Finding]:
    """The findings the collector would show at ``end_ts`` had it received these records
    as they were stamped and made its passes every ``refresh_s`` up to ``end_ts``.

    Only the passes that decide what is shown are replayed (those of the last
    ``ConfirmPolicy.history_s``, none before the first record, at most
    :data:`MAX_REPLAYED_PASSES`), each over the records stamped by then: the window,
    its recent buckets, and the long window at its own cadence. When the passes of
    the last ``grace_s`` (and one more) name no catch-all, they alone decide what is
    shown (a specific finding is shown while named, and kept ``grace_s`` after), so
    only they are replayed; ``since`` then counts from the first of them.
    """
    replay = Replay(records, schedule=schedule, nodes=nodes, topology=topology, policy=policy,
                    rules=rules, stops=stops)  # fmt: skip
    first_ts = replay.first_ts if replay.first_ts is not None else end_ts
    before = min(schedule.confirm.history_s, max(end_ts - first_ts, 0.0) + schedule.refresh_s)
    passes = min(math.ceil(before / schedule.refresh_s), MAX_REPLAYED_PASSES - 1)
    # As many passes as cover the grace, of the full replay's parity (the long window's
    # cadence is every other pass).
    quick = math.ceil(schedule.confirm.grace_s / schedule.refresh_s) + 1
    quick += (passes - quick) % 2
    shown: list[Finding] = []
    if quick < passes:
        for k in range(quick, -1, -1):
            shown = replay.at(end_ts - k * schedule.refresh_s)
        if not replay.named_provisional:
            return shown
        replay.restart()
    for k in range(passes, -1, -1):
        shown = replay.at(end_ts - k * schedule.refresh_s)
    return shown


class Replay:
    """The collector's passes over recorded results: :meth:`at` is one pass (in time
    order), what it shows once confirmed; each reads the records stamped by then.

    With ``arrival`` (when the collector had a record: its probe's end and the agent's
    delivery), each pass reads only the records that had arrived by then, as the
    collector's pass did: a timed-out probe's result comes a timeout after its
    stamp, a success at once.
    """

    def __init__(
        self,
        records: Sequence[ProbeResult],
        *,
        schedule: PassSchedule,
        nodes: Sequence[str] = (),
        topology: Topology | None = None,
        policy: DiagnosisPolicy | None = None,
        rules: Sequence[tuple[str, Rule]] = NAMED_RULES,
        stops: Sequence[AgentStop] = (),
        arrival: Callable[[ProbeResult], float] | None = None,
    ) -> None:
        self.schedule = schedule
        self._nodes = nodes
        self._topology = topology or Topology()
        self._policy = policy or DiagnosisPolicy()
        self._rules = rules
        records, _ = without_routine(records, stops)
        self._all = encode_records(records)
        self._encoded = self._all
        self._arrival = (
            None
            if arrival is None
            else np.fromiter((arrival(r) for r in records), dtype=np.float64, count=len(records))
        )
        self._nlb_index = [i for i, r in enumerate(records) if r.path.endswith("-to-nlb")]
        self._records = records
        self._nlb = [records[i] for i in self._nlb_index]
        self._nlb_ts = np.fromiter((r.ts for r in self._nlb), dtype=np.float64, count=len(self._nlb))
        self.first_ts = float(self._encoded.ts.min()) if self._encoded.ts.size else None
        self.restart()

    def _arrived_by(self, now: float) -> None:
        """Read only the records the collector had at ``now`` (with ``arrival``)."""
        if self._arrival is None:
            return
        had = self._arrival <= now
        a = self._all
        self._encoded = EncodedRecords(a.keys, a.sk[had], a.lat[had], a.ts[had])
        self._nlb = [self._records[i] for i in self._nlb_index if had[i]]
        self._nlb_ts = np.fromiter((r.ts for r in self._nlb), dtype=np.float64, count=len(self._nlb))

    def restart(self) -> None:
        """Forget the passes made: the next :meth:`at` is a first pass."""
        self.confirmation = Confirmation(self.schedule.confirm)
        self._long: tuple[float, list[tuple[Finding, Footprint]]] | None = None
        #: Whether a pass so far named a catch-all (before confirmation).
        self.named_provisional = False

    def window(self, now: float, window_s: float) -> Window:
        """The window ending at ``now``, as the collector's store gives it."""
        return Window(
            table=_bucket_table(self._encoded, self.schedule, now, window_s, self._nodes),
            nlb_probes=_nlb_within(self._nlb, self._nlb_ts, now - window_s, now),
        )

    def long_window(self, now: float) -> Window:
        """The long window ending at ``now`` within its bound, as the collector reads it
        (:attr:`PassSchedule.long_window_entries`)."""
        sched = self.schedule
        since, until = sched.buckets(now, sched.long_window_s)
        pair, other = self._encoded.pair_entries_by_bucket(since=since, until=until, bucket_s=sched.bucket_s)
        main_since, _ = sched.buckets(now, sched.window_s)
        least = math.floor(now / sched.bucket_s) - round(main_since / sched.bucket_s) + 1
        cut = pair_cut(pair, other, budget=sched.long_window_entries, least=least)
        table = self._encoded.table(
            nodes=self._nodes,
            window_s=sched.long_window_s,
            end_ts=now,
            since=since,
            until=until,
            pair_since=since + cut * sched.bucket_s if cut else None,
        )
        return Window(
            table=table, nlb_probes=_nlb_within(self._nlb, self._nlb_ts, now - sched.long_window_s, now)
        )

    def _older_than_window(self, now: float) -> bool:
        """Does the long window hold records (or NLB probes) the window does not?"""
        sched = self.schedule
        since, _ = sched.buckets(now, sched.long_window_s)
        main_since, _ = sched.buckets(now, sched.window_s)
        ts, nlb = self._encoded.ts, self._nlb_ts
        return bool(
            np.any((ts >= since) & (ts < main_since))
            or np.any((nlb >= now - sched.long_window_s) & (nlb < now - sched.window_s))
        )

    def at(self, now: float) -> list[Finding]:
        sched, pol = self.schedule, self._policy
        self._arrived_by(now)
        recent = _bucket_table(self._encoded, sched, now, sched.recent_s, self._nodes)
        latest = _bucket_table(self._encoded, sched, now, sched.latest_s, self._nodes)
        main = self.window(now, sched.window_s)
        [ev] = evidence_for([main], topology=self._topology, recent=recent, latest=latest)
        per_window = [diagnose_window(ev, policy=pol, rules=self._rules)]
        if sched.long_window_s > sched.window_s:
            if self._long is None or now - self._long[0] >= sched.long_refresh_s:
                if self._older_than_window(now):
                    [lev] = evidence_for(
                        [self.long_window(now)],
                        topology=self._topology,
                        recent=recent,
                        latest=latest,
                    )
                    longer = longer_window_rules(self._rules)
                    self._long = (now, diagnose_window(lev, policy=pol, rules=longer))
                else:
                    # The same records as the window: the rules read counts, not the
                    # window's length, so the long window's findings are the window's.
                    self._long = (now, per_window[0])
            per_window.append(self._long[1])
        self.named_provisional |= any(f.kind in PROVISIONAL for found in per_window for f, _ in found)
        return confirmed_pass(self.confirmation, now, per_window, main=main.table, recent=latest, policy=pol)


def _bucket_table(
    encoded: EncodedRecords, schedule: PassSchedule, now: float, window_s: float, nodes: Sequence[str]
) -> PairTable:
    since, until = schedule.buckets(now, window_s)
    return encoded.table(nodes=nodes, window_s=window_s, end_ts=now, since=since, until=until)


def _nlb_within(records: Sequence[ProbeResult], ts: FloatArray, since: float, until: float) -> NlbProbes:
    keep = np.flatnonzero((ts >= since) & (ts <= until))
    return NlbProbes.from_records(records[i] for i in keep.tolist())


def replayed_report(
    records: Sequence[ProbeResult],
    *,
    schedule: PassSchedule,
    history: Sequence[ProbeResult] | None = None,
    window_s: float | None = None,
    end_ts: float | None = None,
    nodes: Sequence[str] = (),
    topology: Topology | None = None,
    policy: DiagnosisPolicy | None = None,
    stops: Sequence[AgentStop] = (),
) -> Report:
    """The report of a window's records as the collector would show it at its end: the
    matrix of exactly these records (see :func:`window_from_records`), the findings of
    :func:`replay_passes` over ``history`` (default: the records; a recording's records
    before the window too, which the passes before its end read). Without
    ``window_s`` the window covers the records' span (:meth:`PassSchedule.covering`);
    with it, ``schedule`` takes it as its window."""
    window, _ = window_from_records(records, nodes=nodes, window_s=window_s, end_ts=end_ts, stops=stops)
    table = window.table
    sched = (
        schedule.covering(table.window_s)
        if window_s is None
        else replace(schedule, window_s=window_s, retention_s=max(schedule.retention_s, window_s))
    )
    findings = replay_passes(
        records if history is None else history,
        end_ts=table.end_ts,
        schedule=sched,
        nodes=table.nodes,
        topology=topology,
        policy=policy,
        stops=stops,
    )
    return Report(matrix=matrix_for(table, nodes=nodes), findings=findings)
