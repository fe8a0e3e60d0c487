"""SLO objectives and rule generation: parsing, completeness, one place per objective."""

from __future__ import annotations

import re

import pytest

from prober.model import PATHS
from prober.slo import (
    BURN_RATE_ALERTS,
    DEFAULT_OBJECTIVES,
    WINDOWS,
    duration_s,
    objectives_with,
    parse_objective,
    recorded_series,
    rule_groups,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("pod-to-nlb=0.999", ("pod-to-nlb", 0.999), id="ratio"),
        pytest.param("pod-to-nlb=99.9%", ("pod-to-nlb", 0.999), id="percent"),
        pytest.param(" host-to-dns = 99.99% ", ("host-to-dns", 0.9999), id="spaces"),
    ],
)
def test_parse_objective(text: str, expected: tuple[str, float]) -> None:
    path, ratio = parse_objective(text)
    assert path == expected[0]
    assert ratio == pytest.approx(expected[1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("pod-to-nlb", "expected PATH=RATIO", id="no-value"),
        pytest.param("pod-to-moon=0.99", "unknown path", id="unknown-path"),
        pytest.param("pod-to-nlb=high", "not a number", id="not-a-number"),
        pytest.param("pod-to-nlb=1", "between 0 and 1", id="one"),
        pytest.param("pod-to-nlb=100%", "between 0 and 1", id="hundred-percent"),
        pytest.param("pod-to-nlb=0", "between 0 and 1", id="zero"),
    ],
)
def test_parse_objective_names_the_mistake(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_objective(text)


def test_every_path_has_a_default_objective() -> None:
    assert set(DEFAULT_OBJECTIVES) == set(PATHS)
    assert all(0.9 <= v < 1 for v in DEFAULT_OBJECTIVES.values())


def test_an_override_changes_exactly_one_rule() -> None:
    default = rule_groups()
    changed = rule_groups(objectives_with(["pod-to-nlb=99.9%"]))
    diffs = [
        (a, b)
        for ga, gb in zip(default, changed, strict=True)
        for a, b in zip(ga["rules"], gb["rules"], strict=True)
        if a != b
    ]
    assert len(diffs) == 1
    before, after = diffs[0]
    assert before["labels"] == {"path": "pod-to-nlb"}
    assert (before["expr"], after["expr"]) == ("vector(0.995)", "vector(0.999)")


def test_rule_groups_refuse_incomplete_objectives() -> None:
    partial = dict(DEFAULT_OBJECTIVES)
    del partial["pod-to-dns"]
    with pytest.raises(ValueError, match="no objective for paths: pod-to-dns"):
        rule_groups(partial)
    with pytest.raises(ValueError, match="unknown paths: pod-to-moon"):
        rule_groups({**DEFAULT_OBJECTIVES, "pod-to-moon": 0.9})


def test_every_alert_window_is_recorded() -> None:
    recorded = set(recorded_series(rule_groups()))
    for a in BURN_RATE_ALERTS:
        assert duration_s(a.short_window) < duration_s(a.long_window)
        for w in (a.long_window, a.short_window):
            assert w in WINDOWS
            assert f"prober:slo_burn_rate:rate{w}" in recorded


def test_burn_rate_alerts_page_fast_and_ticket_slow() -> None:
    pages = [a for a in BURN_RATE_ALERTS if a.severity == "critical"]
    tickets = [a for a in BURN_RATE_ALERTS if a.severity == "warning"]
    assert {(a.long_window, a.short_window, a.factor) for a in pages} == {
        ("1h", "5m", 14.4),
        ("6h", "30m", 6.0),
    }
    assert min(a.factor for a in pages) > max(a.factor for a in tickets)


@pytest.mark.parametrize(("text", "seconds"), [("5m", 300), ("1h", 3600), ("3d", 259200), ("30d", 2592000)])
def test_duration_s(text: str, seconds: int) -> None:
    assert duration_s(text) == seconds


def test_a_zone_findings_alert_names_zones_not_an_empty_node() -> None:
    rules = {r["alert"]: r for g in rule_groups() for r in g["rules"] if "alert" in r}
    for kind, zones in (("zone-partition", True), ("zone-degraded", True), ("node-unreachable", False)):
        [rule] = [r for r in rules.values() if f'kind="{kind}"' in r["expr"]]
        description = rule["annotations"]["description"]
        assert ("for node {{ $labels.node }}" in description) is not zones, description
        assert (f'prober_zone_finding{{kind="{kind}"}} names them' in description) is zones, description


#: An aggregation (``sum``, ``max``, ... with or without ``by``) and a join's ``on (...)``.
_AGGREGATION = re.compile(r"\b(sum|max|min|count|avg|topk|bottomk|quantile)\s*(?:by\s*\(([^)]*)\))?\s*\(")
_JOIN = re.compile(r"\bon\s*\(([^)]*)\)")


def test_every_rule_keeps_the_cluster_label() -> None:
    """One Prometheus holding several clusters' series: an aggregation without
    ``cluster`` in its ``by`` merges the clusters (a stale collector in one hidden by a
    fresh one in another), a join without it matches across them. The objectives'
    series carry no cluster and are joined by path alone, on purpose."""
    objectives = {r["record"] for r in rule_groups()[0]["rules"]}
    for group in rule_groups():
        for rule in group["rules"]:
            name, expr = rule.get("alert") or rule["record"], rule["expr"]
            for op, by in _AGGREGATION.findall(expr):
                assert "cluster" in by.replace(" ", "").split(","), f"{name}: {op} drops the cluster: {expr}"
            for on in _JOIN.findall(expr):
                joins_objective = any(o in expr.split(f"on ({on})", 1)[1] for o in objectives)
                assert "cluster" in on or joins_objective, f"{name}: on ({on}) joins across clusters: {expr}"
