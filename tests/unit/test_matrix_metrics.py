"""Matrix series: every pair on small clusters, the worst failing pairs on large ones, zones always."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from prober.collector.matrix_metrics import (
    NO_ZONE,
    UNANSWERED,
    MatrixMetrics,
    PairSeriesPolicy,
    matrix_series,
    select_pairs,
    zone_finding_cells,
)
from prober.matrix import build_matrix
from prober.model import Finding, FindingKind, Outcome, ProbeResult, Proto, SrcKind
from prober.stats import PairTable, Topology

ZONES = Topology(zones={"a": "z1", "b": "z1", "c": "z2"})


def rec(src: str, dst: str | None, outcome: str = "ok", *, path: str = "pod-to-pod", target: str = "",
        latency: float = 0.002) -> ProbeResult:  # fmt: skip
    kind = SrcKind(path.split("-to-", maxsplit=1)[0])
    return ProbeResult(
        ts=0.0, path=path, src_node=src, src_kind=kind, target=target or f"pod/{dst}", proto=Proto.HTTP,
        outcome=Outcome(outcome), latency_s=latency if outcome == "ok" else None, dst_node=dst,
    )  # fmt: skip


def records(src: str, dst: str | None, sent: int, ok: int, **kw: str) -> list[ProbeResult]:
    return [rec(src, dst, "ok" if i < ok else "timeout", **kw) for i in range(sent)]  # type: ignore[arg-type]


def table(*groups: list[ProbeResult], nodes: tuple[str, ...] = ("a", "b", "c")) -> PairTable:
    return PairTable.from_records([r for g in groups for r in g], nodes=nodes)


def test_rows_without_probes_change_nothing() -> None:
    """A table row with no probes (a store may keep one) adds no pair, and the others keep
    their counts and their latency (read from the rows that have probes)."""
    t = table([rec("a", "b", latency=0.02)] * 10, records("a", "c", 10, 7), records("b", "a", 4, 4))
    empty = (t.src == t.nodes.index("a")) & (t.dst == t.nodes.index("c"))
    assert empty.sum() == 1
    counts, hist = t.counts.copy(), t.hist.copy()
    counts[empty], hist[empty] = 0, 0
    holed = replace(t, counts=counts, latency_hist=hist, latency_sum_s=np.where(empty, 0.0, t.latency_sum_s))
    s = matrix_series(holed, topology=ZONES)
    assert s == matrix_series(t.select(~empty), topology=ZONES)
    assert {(p.src_node, p.dst_node, p.sent) for p in s.pairs} == {("a", "b", 10), ("b", "a", 4)}
    ab = next(p for p in s.pairs if p.dst_node == "b")
    assert ab.latency_p99_s is not None
    assert ab.latency_p99_s > 0.01  # its own 0.02 s probes


def test_small_matrix_exports_every_pair() -> None:
    t = table(records("a", "b", 10, 10), records("a", "c", 10, 7), records("b", "a", 10, 10))
    s = matrix_series(t, topology=ZONES)
    assert {(p.src_node, p.dst_node) for p in s.pairs} == {("a", "b"), ("a", "c"), ("b", "a")}
    ac = next(p for p in s.pairs if p.dst_node == "c")
    assert (ac.src_zone, ac.dst_zone, ac.sent, ac.ok) == ("z1", "z2", 10, 7)
    assert ac.latency_p99_s is not None
    assert 0.001 < ac.latency_p99_s <= 0.0025  # the 0.001..0.0025 bucket, interpolated
    assert s.omitted == {"pod-to-pod": 0}


def test_pairs_match_the_matrix_cells() -> None:
    t = table(
        records("a", "b", 10, 9),
        records("a", "b", 5, 5, target="pod/b-udp"),  # same pair, another target: one cell
        records("c", None, 4, 0, path="pod-to-service", target="service/echo"),
        records("c", "a", 6, 6, path="pod-to-service", target="service/echo"),
    )
    s = matrix_series(t, topology=ZONES)
    m = build_matrix(t, nodes=t.nodes, window_s=60, generated_at=0)
    cells = {
        (pm.path, c.src, UNANSWERED if c.dst is None else c.dst): (c.sent, c.ok, c.latency_p99_s)
        for pm in m.paths
        for c in pm.cells
        if c.sent
    }
    ours = {
        (p.path, p.src_node, p.dst_node): (
            p.sent,
            p.ok,
            None if p.latency_p99_s is None else round(p.latency_p99_s, 6),
        )
        for p in s.pairs
    }
    assert ours == cells


def test_large_matrix_exports_only_the_worst_failing_pairs() -> None:
    sent = np.full(900, 100, dtype=np.int64)
    ok = sent.copy()
    ok[[1, 23, 45, 67]] = [50, 95, 10, 95]
    keys = np.arange(900, dtype=np.int64)
    chosen, omitted = select_pairs(sent, ok, keys, PairSeriesPolicy(top_k=3), full=False)
    assert chosen.tolist() == [45, 1, 23]
    assert omitted == 1


def test_worst_first_breaks_ratio_ties_by_failures() -> None:
    sent = np.asarray([10, 1000, 100], dtype=np.int64)
    ok = np.asarray([5, 500, 99], dtype=np.int64)
    chosen, _ = select_pairs(
        sent, ok, np.arange(3, dtype=np.int64), PairSeriesPolicy(full_max_cells=0, top_k=2), full=False
    )
    assert chosen.tolist() == [1, 0]


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=30),
    failing=st.dictionaries(
        st.tuples(st.integers(0, 29), st.integers(0, 29)), st.integers(1, 4), max_size=40
    ),
    top_k=st.integers(min_value=0, max_value=20),
)
def test_pair_series_are_bounded_and_never_hide_a_failure_silently(
    n: int, failing: dict[tuple[int, int], int], top_k: int
) -> None:
    nodes = tuple(f"n{i}" for i in range(n))
    fails = {k: v for k, v in failing.items() if k[0] < n and k[1] < n}
    pairs = itertools.product(range(n), repeat=2)
    t = table(*(records(nodes[i], nodes[j], 4, 4 - fails.get((i, j), 0)) for i, j in pairs), nodes=nodes)
    s = matrix_series(t, topology=Topology(), policy=PairSeriesPolicy(full_max_cells=100, top_k=top_k))
    if n * n <= 100:
        assert len(s.pairs) == n * n
        assert s.omitted == {"pod-to-pod": 0}
    else:
        assert len(s.pairs) <= top_k
        assert all(p.ok < p.sent for p in s.pairs)
        assert len(s.pairs) + s.omitted["pod-to-pod"] == len(fails)
        shown = {(p.src_node, p.dst_node) for p in s.pairs}
        hidden = [(4 - f) / 4 for (i, j), f in fails.items() if (nodes[i], nodes[j]) not in shown]
        assert all(p.ok / p.sent <= min(hidden, default=1.0) for p in s.pairs)
    assert sum(z.sent for z in s.zones) == 4 * n * n


def test_a_path_with_few_cells_in_a_large_cluster_exports_only_its_failing_ones() -> None:
    """30 nodes (900 cells, over the 400 of a full matrix): the external target's path
    has 30 cells in the window, every one healthy but one. Only the failing one is a
    series: the bound is per path at any window, not per cells present."""
    nodes = tuple(f"n{i}" for i in range(30))
    peers = (records(nodes[i], nodes[(i + 1) % 30], 4, 4) for i in range(30))
    outside = (
        records(nodes[i], None, 4, 3 if i == 7 else 4, path="pod-to-external", target="external/example")
        for i in range(30)
    )
    s = matrix_series(table(*peers, *outside, nodes=nodes), topology=Topology(), policy=PairSeriesPolicy())
    assert [(p.path, p.src_node) for p in s.pairs] == [("pod-to-external", "n7")]
    assert s.omitted == {"pod-to-pod": 0, "pod-to-external": 0}


def test_zones_aggregate_every_cell_even_when_pairs_are_capped() -> None:
    t = table(
        records("a", "b", 10, 10),
        records("a", "c", 10, 0),
        records("c", "a", 20, 19),
        records("c", None, 5, 0, path="pod-to-service", target="service/echo"),
    )
    s = matrix_series(t, topology=ZONES, policy=PairSeriesPolicy(full_max_cells=0, top_k=1))
    assert len(s.pairs) == 2  # one per path
    zones = {(z.path, z.src_zone, z.dst_zone): (z.sent, z.ok) for z in s.zones}
    assert zones == {
        ("pod-to-pod", "z1", "z1"): (10, 10),
        ("pod-to-pod", "z1", "z2"): (10, 0),
        ("pod-to-pod", "z2", "z1"): (20, 19),
        ("pod-to-service", "z2", UNANSWERED): (5, 0),
    }


def test_outside_targets_and_unzoned_nodes_get_their_own_columns() -> None:
    t = table(
        records("a", None, 10, 9, path="host-to-external", target="external/web"),
        records("d", "a", 4, 4),
        nodes=("a", "b", "c", "d"),
    )
    s = matrix_series(t, topology=ZONES)
    web = next(p for p in s.pairs if p.dst_node == "external/web")
    assert web.dst_zone == "external/web"
    d = next(p for p in s.pairs if p.src_node == "d")
    assert (d.src_zone, d.dst_zone) == (NO_ZONE, "z1")


def test_unanswered_probes_are_a_column() -> None:
    s = matrix_series(table(records("a", None, 6, 0, path="pod-to-nlb", target="nlb/echo")), topology=ZONES)
    (p,) = s.pairs
    assert (p.dst_node, p.dst_zone, p.latency_p99_s) == (UNANSWERED, UNANSWERED, None)


def test_empty_table() -> None:
    s = matrix_series(PairTable.empty(("a", "b")), topology=ZONES)
    assert (s.pairs, s.zones, dict(s.omitted)) == ((), (), {})


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_exporter_serves_the_latest_window_and_forgets_pairs_that_recovered() -> None:
    registry = CollectorRegistry()
    metrics = MatrixMetrics(registry=registry, policy=PairSeriesPolicy(full_max_cells=0, top_k=10))
    metrics.update(table(records("a", "b", 10, 5), records("a", "c", 10, 10)), topology=ZONES, window_s=60)
    ab = {"path": "pod-to-pod", "src_node": "a", "src_zone": "z1", "dst_node": "b", "dst_zone": "z1"}
    assert sample(registry, "prober_pair_success_ratio", **ab) == 0.5
    assert sample(registry, "prober_pair_probes", **ab) == 10
    assert sample(registry, "prober_pair_latency_p99_seconds", **ab) is not None
    assert sample(registry, "prober_pair_success_ratio", **{**ab, "dst_node": "c", "dst_zone": "z2"}) is None
    z = {"path": "pod-to-pod", "src_zone": "z1", "dst_zone": "z1"}
    assert sample(registry, "prober_zone_success_ratio", **z) == 0.5
    assert sample(registry, "prober_zone_success_ratio", **{**z, "dst_zone": "z2"}) == 1.0
    assert sample(registry, "prober_matrix_pairs_omitted", path="pod-to-pod") == 0
    assert sample(registry, "prober_matrix_window_seconds") == 60.0

    metrics.update(table(records("a", "b", 10, 10), records("a", "c", 10, 10)), topology=ZONES, window_s=60)
    assert sample(registry, "prober_pair_success_ratio", **ab) is None
    assert sample(registry, "prober_zone_success_ratio", **z) == 1.0


def test_exporter_names_do_not_clash_with_other_metrics() -> None:
    registry = CollectorRegistry()
    MatrixMetrics(registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        MatrixMetrics(registry=registry)


def zone_finding(kind: FindingKind, zones: list[str], nodes: tuple[str, ...] = ()) -> Finding:
    return Finding(
        kind=kind, severity="critical", nodes=list(nodes), pairs=[], paths=["pod-to-pod"], confidence=1.0,
        evidence="", remediation="", zones=zones,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("findings", "cells"),
    [
        pytest.param([], (), id="none"),
        pytest.param([zone_finding(FindingKind.NODE_UNREACHABLE, [], ("a",))], (), id="a-node-finding"),
        pytest.param(
            [zone_finding(FindingKind.ZONE_PARTITION, ["z1", "z3"])],
            (("zone-partition", "z1", "z3"), ("zone-partition", "z3", "z1")),
            id="partition-both-ways",
        ),
        pytest.param(
            [zone_finding(FindingKind.ZONE_DEGRADED, ["z2"])],
            tuple(sorted({("zone-degraded", "z2", z) for z in ("z1", "z2", "z3")}
                         | {("zone-degraded", z, "z2") for z in ("z1", "z2", "z3")})),
            id="degraded-row-and-column",
        ),
    ],
)  # fmt: skip
def test_zone_findings_mark_their_zone_pairs(
    findings: list[Finding], cells: tuple[tuple[str, str, str]]
) -> None:
    assert zone_finding_cells(findings, ["z1", "z2", "z3", "z1", ""]) == cells


def test_exporter_marks_a_partition_on_its_zone_pairs_and_forgets_it() -> None:
    registry = CollectorRegistry()
    metrics = MatrixMetrics(registry=registry)
    cut = zone_finding(FindingKind.ZONE_PARTITION, ["z1", "z2"])
    metrics.update(table(records("a", "c", 10, 0)), topology=ZONES, window_s=60, findings=[cut])
    for src, dst in (("z1", "z2"), ("z2", "z1")):
        assert sample(registry, "prober_zone_finding", kind="zone-partition", src_zone=src, dst_zone=dst) == 1
    assert (
        sample(registry, "prober_zone_finding", kind="zone-partition", src_zone="z1", dst_zone="z1") is None
    )
    metrics.update(table(records("a", "c", 10, 10)), topology=ZONES, window_s=60)
    assert (
        sample(registry, "prober_zone_finding", kind="zone-partition", src_zone="z1", dst_zone="z2") is None
    )
