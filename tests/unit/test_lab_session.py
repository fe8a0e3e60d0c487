"""The pure parts of ``prober lab run`` and ``demo``: the exact-window report, verdicts, scenes."""

from __future__ import annotations

import json

import pytest

from prober.model import Finding, FindingKind, Outcome, ProbeResult, Proto, SrcKind
from prober_lab.plan import LabSpec, build_plan
from prober_lab.session import (
    EVERY_NODE,
    SCENES,
    delivery_lag_s,
    failing_paths_only,
    lab_report,
    report_json,
    scenes_for,
    verdict,
)

PLAN = build_plan(LabSpec(nodes=3))


def probe(ts: float, src: str, dst: str, *, ok: bool = True, path: str = "pod-to-pod") -> ProbeResult:
    return ProbeResult(
        ts=ts,
        path=path,
        src_node=src,
        src_kind=SrcKind.POD,
        target=f"pod/{dst}",
        outcome=Outcome.OK if ok else Outcome.TIMEOUT,
        proto=Proto.HTTP,
        dst_node=dst,
        dst_kind=SrcKind.POD,
        latency_s=0.001 if ok else None,
    )


def finding(kind: str, nodes: list[str]) -> Finding:
    return Finding(
        kind=FindingKind(kind), severity="critical", nodes=nodes, pairs=[], paths=[], confidence=1.0,
        evidence="e", remediation="r",
    )  # fmt: skip


def test_the_report_covers_exactly_the_window_it_is_given() -> None:
    records = [probe(100.0 + i / 10, "node-a", "node-b") for i in range(50)]
    records += [probe(100.0 + i / 10, "node-b", "node-c", ok=i % 2 == 0) for i in range(50)]
    report = lab_report(PLAN, records, since=100.0, until=105.0)
    m = report.matrix
    assert m.nodes == ["node-a", "node-b", "node-c"]
    assert m.window_s == 5.0
    assert m.generated_at == 105.0
    [pm] = m.paths
    assert (pm.path, pm.sent, pm.ok) == ("pod-to-pod", 100, 75)
    assert set(json.loads(report_json(report))) == {"matrix", "findings"}


def test_failing_paths_only_keeps_the_paths_with_a_failure() -> None:
    records = [probe(1.0, "node-a", "node-b"), probe(1.5, "node-a", "node-c", ok=False, path="pod-to-host")]
    matrix, hidden = failing_paths_only(lab_report(PLAN, records, since=1.0, until=2.0).matrix)
    assert [pm.path for pm in matrix.paths] == ["pod-to-host"]
    assert hidden == 1


@pytest.mark.parametrize(
    ("found", "ok", "fragment"),
    [
        pytest.param([], True, "diagnosis: nothing, as expected", id="clean"),
        pytest.param([finding("packet-loss", ["node-c"])], False, "expected nothing", id="false-alarm"),
    ],
)
def test_verdict_on_a_clean_scene(found: list[Finding], ok: bool, fragment: str) -> None:
    got, line = verdict(found, {})
    assert got is ok
    assert fragment in line


def test_verdict_wants_exactly_the_expected_kinds_and_nodes() -> None:
    want = {"bridge-netfilter": ("node-b",)}
    assert verdict([finding("bridge-netfilter", ["node-b"])], want)[0]
    assert not verdict([finding("bridge-netfilter", ["node-c"])], want)[0]
    assert not verdict([finding("bridge-netfilter", ["node-b"]), finding("unexplained", [])], want)[0]
    assert not verdict([], want)[0]
    ok, line = verdict([finding("nlb-5tuple-collision", [])], {"nlb-5tuple-collision": ()})
    assert ok
    assert line == "diagnosis: nlb-5tuple-collision, as expected"


def test_scenes_name_every_node_of_the_lab_they_run_in() -> None:
    assert any(v == EVERY_NODE for s in SCENES for v in s.expect.values())
    for s in scenes_for(4):
        for nodes in s.expect.values():
            assert nodes != EVERY_NODE
    hairpin = next(s for s in scenes_for(4) if s.faults == ("nlb-hairpin",))
    assert hairpin.expect == {"nlb-hairpin": ("node-a", "node-b", "node-c", "node-d")}
    # a clean baseline first, then the failure modes of docs/incidents.md and a node-level one
    assert SCENES[0].faults == ()
    kinds = {f.split("@")[0] for s in SCENES for f in s.faults}
    assert {"bridge-netfilter", "nlb-hairpin", "snat-asymmetric", "nlb-5tuple-collision"} <= kinds
    assert kinds & {"node-unreachable", "node-isolated", "pair-blocked", "packet-loss"}


def test_results_are_waited_for_a_flush_and_a_timeout() -> None:
    assert delivery_lag_s(0.9) > 2.0 + 0.9
