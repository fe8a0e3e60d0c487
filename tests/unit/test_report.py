"""The report pipeline: records or window tables in, matrix and findings out, for every caller."""

from __future__ import annotations

import pytest

from prober.aggregation import aggregate
from prober.diagnose import diagnose, diagnose_windows
from prober.model import Finding, Outcome, ProbeResult, Proto, SrcKind
from prober.report import (
    Window,
    build_report,
    evidence_for,
    evidence_from_records,
    findings_for,
    last_seconds,
    report_from_records,
)
from prober.stats import NlbProbes, Topology
from tests.synth import Cluster, Fault, generate

C10 = Cluster(n_nodes=10)
N = C10.nodes


def probe(ts: float, src: str, dst: str, *, ok: bool = True) -> ProbeResult:
    return ProbeResult(
        ts=ts, path="pod-to-pod", src_node=src, src_kind=SrcKind.POD, target=f"pod/{dst}",
        outcome=Outcome.OK if ok else Outcome.TIMEOUT, proto=Proto.HTTP, dst_node=dst,
        latency_s=0.001 if ok else None,
    )  # fmt: skip


def found(findings: list[Finding]) -> list[tuple[str, list[str]]]:
    return [(f.kind, f.nodes) for f in findings]


@pytest.mark.parametrize(
    ("window_s", "end_ts", "expected"),
    [
        pytest.param(None, None, (9.0, 19.0), id="the-records-span"),
        pytest.param(30.0, 25.0, (30.0, 25.0), id="a-sweep-or-lab-window"),
    ],
)
def test_the_matrix_covers_the_window_it_is_given(
    window_s: float | None, end_ts: float | None, expected: tuple[float, float]
) -> None:
    records = [probe(10.0 + i, "a", "b") for i in range(10)]
    report = report_from_records(records, nodes=["a", "b"], window_s=window_s, end_ts=end_ts)
    assert (report.matrix.window_s, report.matrix.generated_at) == expected
    assert report.findings == []


def test_nodes_are_rows_and_columns_in_order_then_the_others_seen() -> None:
    records = [probe(1.0, "c", "a"), probe(1.0, "x", "b")]
    report = report_from_records(records, nodes=["b", "a", "c"])
    assert report.matrix.nodes == ["b", "a", "c", "x"]
    [pm] = report.matrix.paths
    assert pm.targets == ["b", "a", "c"]


def test_a_fault_that_began_at_the_end_is_named_by_what_it_is_now() -> None:
    fault = Fault(kind="node-isolated", nodes=(N[3],))
    records = generate(C10, rounds=6, faults=[fault], fault_rounds=(4, 6), seed=10)
    without = report_from_records(records, nodes=N, topology=C10.topology())
    assert "node-isolated" not in [f.kind for f in without.findings]
    recent = report_from_records(records, nodes=N, topology=C10.topology(), recent_s=2 * C10.interval_s)
    assert found(recent.findings) == [("node-isolated", [N[3]])]


def test_recent_goes_with_each_window_longer_than_it() -> None:
    records = generate(C10, rounds=6, seed=1)
    end = max(r.ts for r in records)
    short = Window(table=aggregate(records, window_s=10.0, end_ts=end))
    long = Window(table=aggregate(records, window_s=60.0, end_ts=end))
    recent = aggregate([r for r in records if r.ts > end - 20.0], window_s=20.0, end_ts=end)
    evs = evidence_for([short, long], topology=C10.topology(), recent=recent)
    assert [ev.recent is recent for ev in evs] == [False, True]
    assert all(ev.topology == C10.topology() for ev in evs)


def test_several_windows_are_merged_as_diagnose_windows_merges_them() -> None:
    x = N[4]
    records = generate(
        C10, rounds=30, faults=[Fault(kind="snat-asymmetric", nodes=(x,))], fault_rounds=(24, 30)
    )
    end = max(r.ts for r in records)

    def window(rounds: int) -> Window:
        rs = [r for r in records if r.ts > end - rounds * C10.interval_s]
        return Window(
            table=aggregate(rs, nodes=N, window_s=rounds * C10.interval_s, end_ts=end),
            nlb_probes=NlbProbes.from_records(rs),
        )

    windows = [window(6), window(30)]
    recent = aggregate([r for r in records if r.ts > end - 20.0], nodes=N, window_s=20.0, end_ts=end)
    merged = findings_for(windows, topology=C10.topology(), recent=recent)
    assert found(merged) == [("snat-asymmetric", [x])]
    evs = evidence_for(windows, topology=C10.topology(), recent=recent)
    assert merged == diagnose_windows(evs)
    report = build_report(windows, nodes=N, topology=C10.topology(), recent=recent)
    assert report.findings == merged
    assert report.matrix.window_s == 60.0  # the matrix is the shortest window's


def test_evidence_from_records_is_what_the_report_diagnoses() -> None:
    records = generate(C10, rounds=6, faults=[Fault(kind="node-unreachable", nodes=(N[2],))], seed=3)
    ev = evidence_from_records(records, nodes=N, topology=C10.topology(), recent_s=20.0)
    assert ev.recent is not None
    assert ev.nlb_probes is not None
    assert ev.nlb_probes.size == sum(r.path.endswith("-to-nlb") for r in records)
    report = report_from_records(records, nodes=N, topology=C10.topology(), recent_s=20.0)
    assert report.findings == diagnose(ev) == diagnose_windows([ev])
    assert found(report.findings) == [("node-unreachable", [N[2]])]


def test_no_records_is_an_empty_report() -> None:
    report = report_from_records([], nodes=["a", "b"], topology=Topology())
    assert report.findings == []
    assert report.matrix.paths == []
    assert report.matrix.nodes == ["a", "b"]


@pytest.mark.parametrize(
    ("seconds", "kept", "span"),
    [
        pytest.param(None, [0.0, 5.0, 10.0, 30.0], 30.0, id="all"),
        pytest.param(20.0, [10.0, 30.0], 20.0, id="last-20s-edge-included"),
        pytest.param(1.0, [30.0], 0.0, id="only-the-newest"),
    ],
)
def test_last_seconds_of_a_recording(seconds: float | None, kept: list[float], span: float) -> None:
    records = [probe(ts, "a", "b") for ts in (10.0, 0.0, 30.0, 5.0)]
    got = last_seconds(records, seconds)
    assert sorted(r.ts for r in got.records) == kept
    assert (got.span_s, got.last_ts) == (span, 30.0)


@pytest.mark.parametrize(
    ("extra", "seconds", "kept", "future", "past"),
    [
        # One record an hour ahead: the window stays on the sources' time.
        pytest.param([probe(3630.0, "a", "b")], 20.0, [10.0, 10.0, 30.0, 30.0], 1, 0, id="one-record-ahead"),
        # A node whose clock runs an hour ahead, one of three: the majority's time wins.
        pytest.param(
            [probe(3600.0 + t, "c", "a") for t in (0.0, 10.0, 30.0)],
            20.0,
            [10.0, 10.0, 30.0, 30.0],
            3,
            0,
            id="one-node-ahead",
        ),
        # A lone record from long ago, recording kept whole: left out, not stretching it.
        pytest.param(
            [probe(-3600.0, "b", "a")], None, [0.0, 0.0, 10.0, 10.0, 30.0, 30.0], 0, 1, id="far-past"
        ),
        pytest.param([], 20.0, [10.0, 10.0, 30.0, 30.0], 0, 0, id="none-skewed"),
    ],
)
def test_skewed_records_never_move_the_window(
    extra: list[ProbeResult], seconds: float | None, kept: list[float], future: int, past: int
) -> None:
    records = [probe(ts, src, dst) for ts in (0.0, 10.0, 30.0) for src, dst in (("a", "b"), ("b", "a"))]
    got = last_seconds([*records, *extra], seconds)
    assert sorted(r.ts for r in got.records) == kept
    assert (got.future, got.past, got.last_ts) == (future, past, 30.0)
    assert got.skewed == (tuple(sorted({r.src_node for r in extra})) if future or past else ())
