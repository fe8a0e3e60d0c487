"""Matrix series: every pair on small clusters, the worst failing pairs on large ones, zones always."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from prober.collector.matrix_metrics import (
    NO_ZONE,
    UNANSWERED,
    MatrixMetrics,
    PairSeriesPolicy,
    matrix_series,
    select_cells,
)
from prober.model import Cell, Matrix, PathMatrix


def cell(src: str, dst: str | None, sent: int, ok: int, p99: float | None = 0.002) -> Cell:
    failed = sent - ok
    return Cell(
        src=src, dst=dst, sent=sent, ok=ok, outcomes={"timeout": failed} if failed else {},
        ratio=ok / sent if sent else None, latency_p99_s=p99 if ok else None,
    )  # fmt: skip


def matrix(*paths: PathMatrix, nodes: list[str] | None = None) -> Matrix:
    return Matrix(window_s=60.0, generated_at=1000.0, nodes=nodes or ["a", "b", "c"], paths=list(paths))


def path_matrix(path: str, cells: list[Cell]) -> PathMatrix:
    return PathMatrix(
        path=path,
        sources=sorted({c.src for c in cells}),
        targets=sorted({c.dst for c in cells if c.dst}),
        cells=cells,
        sent=sum(c.sent for c in cells),
        ok=sum(c.ok for c in cells),
    )


ZONES = {"a": "z1", "b": "z1", "c": "z2"}


def full_mesh(n: int, *, failing: dict[tuple[int, int], int]) -> list[Cell]:
    return [
        cell(f"n{i}", f"n{j}", 100, 100 - failing.get((i, j), 0))
        for i, j in itertools.product(range(n), repeat=2)
    ]


def test_small_matrix_exports_every_pair() -> None:
    cells = [cell("a", "b", 10, 10), cell("a", "c", 10, 7), cell("b", "a", 10, 10)]
    s = matrix_series(matrix(path_matrix("pod-to-pod", cells)), zones=ZONES)
    assert {(p.src_node, p.dst_node) for p in s.pairs} == {("a", "b"), ("a", "c"), ("b", "a")}
    ac = next(p for p in s.pairs if p.dst_node == "c")
    assert (ac.src_zone, ac.dst_zone, ac.sent, ac.ok) == ("z1", "z2", 10, 7)
    assert s.omitted == {"pod-to-pod": 0}


def test_large_matrix_exports_only_the_worst_failing_pairs() -> None:
    failing = {(0, 1): 50, (2, 3): 5, (4, 5): 90, (6, 7): 5}
    cells = full_mesh(30, failing=failing)  # 900 cells > 400
    chosen, omitted = select_cells(cells, PairSeriesPolicy(full_max_cells=400, top_k=3))
    assert [(c.src, c.dst) for c in chosen] == [("n4", "n5"), ("n0", "n1"), ("n2", "n3")]
    assert omitted == 1


def test_worst_first_breaks_ratio_ties_by_failures() -> None:
    cells = [cell("a", "b", 10, 5), cell("a", "c", 1000, 500), cell("b", "c", 100, 99)]
    chosen, _ = select_cells(cells, PairSeriesPolicy(full_max_cells=0, top_k=2))
    assert [(c.src, c.dst) for c in chosen] == [("a", "c"), ("a", "b")]


@given(
    n=st.integers(min_value=1, max_value=40),
    failing=st.dictionaries(
        st.tuples(st.integers(0, 39), st.integers(0, 39)), st.integers(1, 100), max_size=60
    ),
    top_k=st.integers(min_value=0, max_value=50),
)
def test_pair_series_are_bounded_and_never_hide_a_failure_silently(
    n: int, failing: dict[tuple[int, int], int], top_k: int
) -> None:
    fails = {k: v for k, v in failing.items() if k[0] < n and k[1] < n}
    cells = full_mesh(n, failing=fails)
    policy = PairSeriesPolicy(full_max_cells=400, top_k=top_k)
    chosen, omitted = select_cells(cells, policy)
    if len(cells) <= 400:
        assert len(chosen) == len(cells)
        assert omitted == 0
    else:
        assert len(chosen) <= top_k
        assert all(c.ok < c.sent for c in chosen)
        assert len(chosen) + omitted == len(fails)
        worst_left_out = min((c.ok / c.sent for c in cells if c.ok < c.sent and c not in chosen), default=1.0)
        assert all(c.ok / c.sent <= worst_left_out for c in chosen)


def test_zones_aggregate_every_cell_even_when_pairs_are_capped() -> None:
    cells = [cell("a", "b", 10, 10), cell("a", "c", 10, 0), cell("c", "a", 20, 19), cell("c", None, 5, 0)]
    s = matrix_series(
        matrix(path_matrix("pod-to-service", cells)),
        zones=ZONES,
        policy=PairSeriesPolicy(full_max_cells=0, top_k=1),
    )
    assert len(s.pairs) == 1
    zones = {(z.src_zone, z.dst_zone): (z.sent, z.ok) for z in s.zones}
    assert zones == {
        ("z1", "z1"): (10, 10),
        ("z1", "z2"): (10, 0),
        ("z2", "z1"): (20, 19),
        ("z2", UNANSWERED): (5, 0),
    }


def test_outside_targets_and_unzoned_nodes_get_their_own_columns() -> None:
    cells = [cell("a", "external/web", 10, 9), cell("d", "a", 4, 4)]
    s = matrix_series(matrix(path_matrix("host-to-external", cells), nodes=["a", "b", "c", "d"]), zones=ZONES)
    web = next(p for p in s.pairs if p.dst_node == "external/web")
    assert web.dst_zone == "external/web"
    d = next(p for p in s.pairs if p.src_node == "d")
    assert (d.src_zone, d.dst_zone) == (NO_ZONE, "z1")


def test_unanswered_probes_are_a_column() -> None:
    s = matrix_series(matrix(path_matrix("pod-to-nlb", [cell("a", None, 6, 0)])), zones=ZONES)
    (p,) = s.pairs
    assert (p.dst_node, p.dst_zone, p.latency_p99_s) == (UNANSWERED, UNANSWERED, None)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_exporter_serves_the_latest_matrix_and_forgets_pairs_that_recovered() -> None:
    registry = CollectorRegistry()
    metrics = MatrixMetrics(registry=registry, policy=PairSeriesPolicy(full_max_cells=0, top_k=10))
    bad = path_matrix("pod-to-pod", [cell("a", "b", 10, 5, p99=0.004), cell("a", "c", 10, 10)])
    metrics.update(matrix(bad), zones=ZONES)
    ab = {"path": "pod-to-pod", "src_node": "a", "src_zone": "z1", "dst_node": "b", "dst_zone": "z1"}
    assert sample(registry, "prober_pair_success_ratio", **ab) == 0.5
    assert sample(registry, "prober_pair_probes", **ab) == 10
    assert sample(registry, "prober_pair_latency_p99_seconds", **ab) == 0.004
    assert sample(registry, "prober_pair_success_ratio", **{**ab, "dst_node": "c", "dst_zone": "z2"}) is None
    z = {"path": "pod-to-pod", "src_zone": "z1", "dst_zone": "z1"}
    assert sample(registry, "prober_zone_success_ratio", **z) == 0.5
    assert sample(registry, "prober_zone_success_ratio", **{**z, "dst_zone": "z2"}) == 1.0
    assert sample(registry, "prober_matrix_pairs_omitted", path="pod-to-pod") == 0
    assert sample(registry, "prober_matrix_window_seconds") == 60.0

    healed = path_matrix("pod-to-pod", [cell("a", "b", 10, 10), cell("a", "c", 10, 10)])
    metrics.update(matrix(healed), zones=ZONES)
    assert sample(registry, "prober_pair_success_ratio", **ab) is None
    assert sample(registry, "prober_zone_success_ratio", **z) == 1.0


def test_exporter_names_do_not_clash_with_other_metrics() -> None:
    registry = CollectorRegistry()
    MatrixMetrics(registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        MatrixMetrics(registry=registry)
