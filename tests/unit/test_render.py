"""Terminal rendering: the cells, the no-answer column, the findings, wide clusters summarized."""

from __future__ import annotations

import msgspec
import pytest
from rich.console import Console

from prober.aggregation import aggregate
from prober.matrix import build_matrix
from prober.model import Finding, FindingKind, Outcome, ProbeResult, Proto, Report, SrcKind, Suspect
from prober.render import common_suffix, format_ratio, render_report


def rec(src: str, dst: str | None, outcome: Outcome = Outcome.OK, *, path: str = "pod-to-pod") -> ProbeResult:
    kind = SrcKind(path.split("-to-", 1)[0])
    target = f"pod/{dst}" if path == "pod-to-pod" else "nlb/echo"
    return ProbeResult(
        ts=1.0, path=path, src_node=src, src_kind=kind, target=target, proto=Proto.HTTP, outcome=outcome,
        latency_s=0.001 if outcome is Outcome.OK else None, dst_node=dst,
    )  # fmt: skip


def report_of(records: list[ProbeResult], nodes: list[str], findings: list[Finding] = []) -> Report:  # noqa: B006
    table = aggregate(records, nodes=nodes)
    return Report(matrix=build_matrix(table, nodes=nodes, window_s=60, generated_at=1.0), findings=findings)


def text_of(report: Report, width: int = 120) -> str:
    console = Console(record=True, width=width, color_system=None)
    render_report(report, console, title="test report")
    return console.export_text()


HAIRPIN = Finding(
    kind=FindingKind.NLB_HAIRPIN,
    severity="critical",
    nodes=["node-a"],
    pairs=[("node-a", "node-a")],
    paths=["pod-to-nlb"],
    confidence=0.999,
    evidence="pod-to-nlb from node-a: 41/412 failed; 0 of 371 successes served by node-a",
    remediation="Disable client IP preservation on the target group",
    suspects=[Suspect(component="nlb-zone/zone-1", score=0.8)],
)


def test_three_nodes_show_every_cell() -> None:
    nodes = ["node-a", "node-b", "node-c"]
    records = [rec(s, d) for s in nodes for d in nodes if (s, d) != ("node-c", "node-b")]
    records += [rec("node-a", "node-b", Outcome.TIMEOUT)]
    records += [
        rec("node-a", "node-b", path="pod-to-nlb"),
        rec("node-a", None, Outcome.TIMEOUT, path="pod-to-nlb"),
    ]
    text = text_of(report_of(records, nodes))
    lines = text.splitlines()
    assert lines[0] == "test report"
    header = next(line for line in lines if line.startswith("pod on") and "no answer" not in line)
    assert header.split()[2:5] == ["node-a", "node-b", "node-c"]
    row_a = next(line for line in lines if line.startswith("node-a"))
    assert row_a.split()[1:4] == ["100", "50.0", "100"]
    row_c = next(line for line in lines if line.startswith("node-c"))
    assert row_c.split()[1:4] == ["100", "·", "100"]  # nothing sent from node-c to node-b
    nlb_header = next(line for line in lines if "no answer" in line)
    assert nlb_header.split()[-3:] == ["no", "answer", "total"]
    nlb_row = lines[lines.index(nlb_header) + 1]
    assert "✗1" in nlb_row
    assert "No findings" in text


def test_findings_are_listed_with_everything_a_user_needs() -> None:
    nodes = ["node-a", "node-b"]
    text = text_of(report_of([rec("node-a", "node-b")], nodes, [HAIRPIN]))
    assert "CRITICAL nlb-hairpin" in text
    assert "confidence 0.999" in text
    assert "nodes:       node-a" in text
    assert "pairs:       node-a→node-a" in text
    assert "paths:       pod-to-nlb" in text
    assert "evidence:    pod-to-nlb from node-a: 41/412 failed" in text
    assert "remediation: Disable client IP preservation" in text
    assert "suspects:    nlb-zone/zone-1 (80%)" in text
    assert "No findings" not in text


def test_a_zone_partition_shows_its_two_zones_and_survives_the_json_round_trip() -> None:
    partition = Finding(
        kind=FindingKind.ZONE_PARTITION, severity="critical", nodes=[], pairs=[], paths=["pod-to-pod"],
        confidence=1.0, evidence="zone-a <-> zone-b: 40/40 failed", remediation="Check the NACLs",
        zones=["zone-a", "zone-b"],
    )  # fmt: skip
    report = report_of([rec("node-a", "node-b")], ["node-a", "node-b"], [partition])
    text = text_of(report)
    assert "CRITICAL zone-partition" in text
    assert "zones:       zone-a ↔ zone-b" in text
    assert "nodes:" not in text
    # What `prober sweep --json` prints and `prober sweep` decodes: the field is on the wire.
    wire = msgspec.json.encode(report)
    assert b'"zones":["zone-a","zone-b"]' in wire
    assert msgspec.json.decode(wire, type=Report).findings == [partition]
    # A producer without the field: every reader sees no zones.
    old = wire.replace(b',"zones":["zone-a","zone-b"]', b"")
    assert msgspec.json.decode(old, type=Report).findings[0].zones == []


def test_long_finding_fields_wrap_under_themselves() -> None:
    long = msgspec.structs.replace(HAIRPIN, evidence="word " * 40)
    lines = text_of(report_of([rec("node-a", "node-b")], ["node-a", "node-b"], [long]), width=60).splitlines()
    start = next(i for i, line in enumerate(lines) if "evidence:" in line)
    indent = lines[start].index("word")
    assert lines[start + 1].startswith(" " * indent + "word")


def test_fifty_nodes_show_only_the_failing_rows_and_columns() -> None:
    nodes = [f"node-{i:02d}" for i in range(50)]
    records = [rec(s, d) for s in nodes for d in nodes]
    records += [rec(s, "node-07", Outcome.TIMEOUT) for s in nodes]  # node-07 unreachable-ish
    records += [rec("node-33", "node-12", Outcome.REFUSED)]
    text = text_of(report_of(records, nodes), width=100)
    header = next(line for line in text.splitlines() if line.startswith("pod on"))
    assert header.split()[2:4] == ["node-07", "node-12"]
    assert "48 of 50 targets had no failures and are hidden" in text
    assert "0 of 50 sources" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_a_clean_wide_matrix_is_one_line() -> None:
    nodes = [f"node-{i:02d}" for i in range(50)]
    text = text_of(report_of([rec(s, d) for s in nodes for d in nodes], nodes), width=100)
    assert "every cell ok (50 sources x 50 targets)" in text


def test_no_results_says_so() -> None:
    text = text_of(report_of([], ["node-a"]))
    assert "No probe results in this window." in text


def test_shared_domain_suffix_is_dropped_from_headers() -> None:
    nodes = ["ip-10-0-1-5.ec2.internal", "ip-10-0-2-9.ec2.internal"]
    text = text_of(report_of([rec(nodes[0], nodes[1])], nodes))
    assert "node names shown without '.ec2.internal'" in text
    assert "ip-10-0-2-9 " in text
    assert common_suffix(["a.x.y", "b.x.y"]) == ".x.y"
    assert common_suffix(["a.x", "b.y"]) == ""
    assert common_suffix([".x", "a.x"]) == ""  # never a whole name


@pytest.mark.parametrize(
    ("ratio", "shown"),
    [(1.0, "100"), (0.9996, "99.9"), (0.5, "50.0"), (0.0004, "0.0"), (0.0, "0")],
)
def test_ratios_never_round_a_failure_away(ratio: float, shown: str) -> None:
    assert format_ratio(ratio) == shown
