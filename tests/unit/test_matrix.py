"""The matrix: rows, columns, the no-answer cell, ratios and latency quantiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prober.aggregation import aggregate
from prober.matrix import FULL_MAX_NODES, ViewError, auto_view, build_matrix, histogram_quantile, matrix_view
from prober.model import (
    LATENCY_BUCKETS_S,
    Cell,
    Finding,
    FindingKind,
    Matrix,
    Outcome,
    PathMatrix,
    ProbeResult,
    Proto,
    SrcKind,
)
from prober.stats import N_LAT_BINS, PairTable, latency_bin

NODES = ["node-a", "node-b", "node-c"]


def rec(
    src: str,
    dst: str | None,
    outcome: str = "ok",
    *,
    path: str = "pod-to-pod",
    target: str = "",
    latency: float = 0.002,
) -> ProbeResult:
    kind = SrcKind(path.split("-to-", maxsplit=1)[0])
    return ProbeResult(
        ts=1.0, path=path, src_node=src, src_kind=kind, target=target or f"pod/{dst}", proto=Proto.HTTP,
        outcome=Outcome(outcome), latency_s=latency if outcome == "ok" else None, dst_node=dst,
    )  # fmt: skip


def matrix_of(records: list[ProbeResult], nodes: list[str] = NODES) -> Matrix:
    return build_matrix(aggregate(records, nodes=nodes), nodes=nodes, window_s=60.0, generated_at=100.0)


def path(m: Matrix, name: str) -> PathMatrix:
    return next(p for p in m.paths if p.path == name)


def cell(pm: PathMatrix, src: str, dst: str | None) -> Cell:
    return next(c for c in pm.cells if c.src == src and c.dst == dst)


def test_pod_to_pod_cells() -> None:
    records = [
        *[rec("node-a", "node-b") for _ in range(9)],
        rec("node-a", "node-b", "timeout"),
        *[rec("node-b", "node-a") for _ in range(4)],
        rec("node-c", "node-c", "refused"),
    ]
    m = matrix_of(records)
    assert m.window_s == 60.0
    assert m.generated_at == 100.0
    assert m.nodes == NODES
    pm = path(m, "pod-to-pod")
    assert pm.sources == NODES  # every node is a row, whether or not it sent
    assert pm.targets == NODES  # ... and a column, whether or not it was reached
    ab = cell(pm, "node-a", "node-b")
    assert (ab.sent, ab.ok, ab.ratio, ab.outcomes) == (10, 9, 0.9, {"timeout": 1})
    assert cell(pm, "node-b", "node-a").outcomes == {}
    cc = cell(pm, "node-c", "node-c")
    assert (cc.ratio, cc.outcomes, cc.latency_p50_s) == (0.0, {"refused": 1}, None)
    assert len(pm.cells) == 3  # only cells with probes
    assert (pm.sent, pm.ok) == (15, 13)


def test_unanswered_balanced_probes_get_a_no_destination_cell_last() -> None:
    def nlb(src: str, dst: str | None, outcome: str = "ok") -> ProbeResult:
        return rec(src, dst, outcome, path="pod-to-nlb", target="nlb/echo")

    records = [
        nlb("node-a", "node-b"),
        nlb("node-a", "node-c"),
        nlb("node-a", None, "timeout"),
        nlb("node-a", None, "timeout"),
        nlb("node-b", "node-a"),
    ]
    pm = path(matrix_of(records), "pod-to-nlb")
    a_cells = [c for c in pm.cells if c.src == "node-a"]
    assert [c.dst for c in a_cells] == ["node-b", "node-c", None]
    none = a_cells[-1]
    assert (none.sent, none.ok, none.ratio, none.outcomes) == (2, 0, 0.0, {"timeout": 2})
    assert None not in pm.targets
    assert pm.targets == NODES  # the empty diagonal is information (hairpin)


def test_outside_targets_are_columns_by_name() -> None:
    records = [
        rec("node-a", None, path="host-to-external", target="external/web"),
        rec("node-b", None, "timeout", path="host-to-external", target="external/web"),
        rec("node-b", None, path="host-to-external", target="external/api"),
    ]
    pm = path(matrix_of(records), "host-to-external")
    assert pm.targets == ["external/api", "external/web"]
    assert cell(pm, "node-b", "external/web").outcomes == {"timeout": 1}


def test_paths_in_contract_order_and_empty_paths_omitted() -> None:
    records = [rec("node-a", "node-b", path="host-to-host", target="host/node-b"), rec("node-a", "node-b")]
    m = matrix_of(records)
    assert [p.path for p in m.paths] == ["pod-to-pod", "host-to-host"]


def test_nodes_outside_the_given_list_are_appended() -> None:
    m = matrix_of([rec("node-x", "node-a"), rec("node-a", "node-y")], nodes=["node-a"])
    pm = path(m, "pod-to-pod")
    assert pm.sources == ["node-a", "node-x"]
    assert pm.targets == ["node-a", "node-y"]
    assert m.nodes == ["node-a", "node-x"]


def test_empty_table_is_an_empty_matrix() -> None:
    m = build_matrix(PairTable.empty(NODES), nodes=NODES, window_s=60.0, generated_at=0.0)
    assert m.paths == []
    assert m.nodes == NODES


def test_latency_quantiles_come_from_the_histogram() -> None:
    records = [rec("node-a", "node-b", latency=0.002) for _ in range(98)]
    records += [rec("node-a", "node-b", latency=1.05) for _ in range(2)]
    c = cell(path(matrix_of(records), "pod-to-pod"), "node-a", "node-b")
    assert c.latency_p50_s is not None
    assert c.latency_p99_s is not None
    assert 0.001 < c.latency_p50_s <= 0.0025
    assert 0.9 < c.latency_p99_s <= 1.1  # the SYN-retransmit bin


def test_a_cell_sums_narrow_histograms_without_wrapping() -> None:
    """A cell of many rows of one probe each (a row's histogram is one byte a bin) sums
    its rows' bins wider: 260 fast probes stay 260, not 260 - 256."""
    records = [rec("node-a", "node-b", target=f"pod/b-{i}", latency=0.0005) for i in range(260)]
    records += [rec("node-a", "node-b", target=f"pod/b-slow-{i}", latency=2.0) for i in range(40)]
    table = aggregate(records, nodes=NODES)
    assert table.hist.dtype == np.uint8
    assert table.rows == 300
    ab = cell(
        path(build_matrix(table, nodes=NODES, window_s=60.0, generated_at=100.0), "pod-to-pod"),
        "node-a",
        "node-b",
    )
    assert ab.sent == 300
    assert ab.latency_p50_s is not None
    assert ab.latency_p50_s <= 0.0005  # 150th of 300: a fast one (wrapped, 4 fast of 44)
    assert ab.latency_p99_s is not None
    assert ab.latency_p99_s > 1.0


@pytest.mark.parametrize(
    ("q", "bins", "expected"),
    [
        pytest.param(0.5, {0: 10}, 0.00025, id="first-bin-from-zero"),
        pytest.param(1.0, {0: 10}, 0.0005, id="top-of-bin"),
        pytest.param(0.5, {latency_bin(0.002): 4}, 0.00175, id="interpolated"),
        pytest.param(0.99, {N_LAT_BINS - 1: 1}, LATENCY_BUCKETS_S[-1], id="inf-bin-is-last-bound"),
        pytest.param(0.5, {}, math.nan, id="empty"),
    ],
)
def test_histogram_quantile(q: float, bins: dict[int, int], expected: float) -> None:
    hist = np.zeros((1, N_LAT_BINS), dtype=np.int64)
    for b, n in bins.items():
        hist[0, b] = n
    got = float(histogram_quantile(q, hist)[0])
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)


# -- views: what a person can look at in a large cluster ----------------------------------

ZONES = {"node-a": "zone-1", "node-b": "zone-1", "node-c": "zone-2", "node-d": "zone-2", "node-e": ""}
FIVE = ["node-a", "node-b", "node-c", "node-d", "node-e"]


def view_of(records: list[ProbeResult], view: str, **kw: object) -> Matrix:
    table = aggregate(records, nodes=FIVE)
    return matrix_view(table, view=view, nodes=FIVE, zones=ZONES, **kw)  # type: ignore[arg-type]


def mesh_records(*, failing: set[tuple[str, str]] = frozenset()) -> list[ProbeResult]:  # type: ignore[assignment]
    out = []
    for s in FIVE:
        for d in FIVE:
            if s != d:
                out += [rec(s, d) for _ in range(3)]
                if (s, d) in failing:
                    out += [rec(s, d, "timeout") for _ in range(2)]
    return out


def test_zone_view_sums_cells_by_zone_pair() -> None:
    records = [
        *mesh_records(failing={("node-a", "node-c")}),
        rec("node-a", None, "timeout", path="pod-to-service", target="service/echo"),
        rec("node-c", "external/example", path="pod-to-external", target="external/example"),
    ]
    m = view_of(records, "zones")
    assert m.view == "zones"
    assert m.nodes == ["(no zone)", "zone-1", "zone-2"]
    pm = path(m, "pod-to-pod")
    z12 = cell(pm, "zone-1", "zone-2")  # a,b -> c,d: 4 pairs x 3, plus a->c's 2 timeouts
    assert (z12.sent, z12.ok, z12.outcomes) == (14, 12, {"timeout": 2})
    assert cell(pm, "zone-1", "zone-1").sent == 6  # a<->b
    assert cell(pm, "zone-2", "(no zone)").sent == 6  # c,d -> e
    assert pm.sent == sum(c.sent for c in pm.cells) == 5 * 4 * 3 + 2
    assert cell(path(m, "pod-to-service"), "zone-1", None).outcomes == {"timeout": 1}
    assert path(m, "pod-to-external").targets == ["external/example"]


def test_failing_view_keeps_the_failing_rows_and_columns_worst_first() -> None:
    m = view_of(
        mesh_records(failing={("node-a", "node-c"), ("node-b", "node-c"), ("node-b", "node-d")}), "failing"
    )
    pm = path(m, "pod-to-pod")
    assert m.view == "failing"
    assert pm.sources == ["node-b", "node-a"]  # 4 failures, then 2
    assert pm.targets == ["node-c", "node-d"]
    assert {(c.src, c.dst) for c in pm.cells} == {(s, d) for s in pm.sources for d in pm.targets}
    assert (pm.hidden_sources, pm.hidden_targets) == (3, 3)
    assert (pm.sent, pm.ok) == (5 * 4 * 3 + 6, 5 * 4 * 3)  # the whole path's
    two = mesh_records(failing={("node-a", "node-c"), ("node-b", "node-c")})
    limited = path(view_of(two, "failing", limit=1), "pod-to-pod")
    assert (len(limited.sources), limited.targets) == (1, ["node-c"])
    healthy = path(view_of(mesh_records(), "failing"), "pod-to-pod")
    assert (healthy.sources, healthy.targets, healthy.cells, healthy.hidden_sources) == ([], [], [], 5)


def test_failing_view_picks_each_paths_rows_and_columns_from_that_path_alone() -> None:
    """A node failing on one path is not a failing row or column of another."""
    records = [
        *mesh_records(failing={("node-a", "node-c")}),
        *[rec(s, d, path="host-to-host") for s in FIVE for d in FIVE if s != d],
        *[rec("node-e", "node-b", "timeout", path="host-to-host") for _ in range(3)],
        rec("node-d", None, "timeout", path="pod-to-service", target="service/echo"),
        rec("node-d", "node-a", path="pod-to-service", target="service/echo"),
    ]
    m = view_of(records, "failing")
    pods, hosts, service = path(m, "pod-to-pod"), path(m, "host-to-host"), path(m, "pod-to-service")
    assert (pods.sources, pods.targets) == (["node-a"], ["node-c"])
    assert {(c.src, c.dst, c.sent, c.ok) for c in pods.cells} == {("node-a", "node-c", 5, 3)}
    assert (hosts.sources, hosts.targets) == (["node-e"], ["node-b"])
    assert {(c.src, c.dst, c.sent, c.ok) for c in hosts.cells} == {("node-e", "node-b", 4, 1)}
    assert (hosts.hidden_sources, hosts.hidden_targets, hosts.sent, hosts.ok) == (4, 4, 23, 20)
    # A failure no node answered: its source is a failing row; its cell is the unanswered one.
    assert (service.sources, service.targets) == (["node-d"], [])
    assert {(c.src, c.dst, c.sent) for c in service.cells} == {("node-d", None, 1)}
    assert (service.hidden_sources, service.hidden_targets, service.sent, service.ok) == (0, 1, 2, 1)


def test_node_view_is_one_row_and_one_column() -> None:
    m = view_of(mesh_records(failing={("node-c", "node-a")}), "node", node="node-a")
    pm = path(m, "pod-to-pod")
    assert m.view == "node"
    assert m.nodes == ["node-a"]
    assert {(c.src, c.dst) for c in pm.cells} == {("node-a", d) for d in FIVE[1:]} | {
        (s, "node-a") for s in FIVE[1:]
    }
    assert pm.sources[0] == "node-a"
    assert cell(pm, "node-c", "node-a").outcomes == {"timeout": 2}


@pytest.mark.parametrize(
    ("view", "kw", "message"),
    [
        pytest.param("sideways", {}, "view must be one of", id="unknown-view"),
        pytest.param("node", {}, "needs node=NAME", id="node-without-name"),
        pytest.param("node", {"node": "node-z"}, "needs node=NAME", id="unknown-node"),
    ],
)
def test_bad_views_are_refused_by_name(view: str, kw: dict[str, object], message: str) -> None:
    with pytest.raises(ViewError, match=message):
        view_of(mesh_records(), view, **kw)


def test_full_and_auto_depend_on_the_size() -> None:
    small = view_of(mesh_records(), "auto")
    assert small.view == "full"
    assert small == view_of(mesh_records(), "full")
    many = [f"node-{i:04d}" for i in range(FULL_MAX_NODES + 1)]
    table = aggregate([rec("node-0000", "node-0001")], nodes=many)
    # large and nothing names a node: the zone overview; a node's finding: its row and column
    assert matrix_view(table, view="auto", nodes=many, zones={}).view == "zones"
    lossy = finding(FindingKind.PACKET_LOSS, nodes=["node-0001"])
    assert matrix_view(table, view="auto", nodes=many, zones={}, findings=[lossy]).view == "failing"
    with pytest.raises(ViewError, match="ask for view=failing"):
        matrix_view(table, view="full", nodes=many, zones={})


def finding(kind: FindingKind, *, nodes: list[str] = [], zones: list[str] = []) -> Finding:  # noqa: B006
    return Finding(
        kind=kind, severity="critical", nodes=nodes, pairs=[], paths=["pod-to-pod"], confidence=1.0,
        evidence="", remediation="", zones=zones,
    )  # fmt: skip


CUT = finding(FindingKind.ZONE_PARTITION, zones=["z1", "z2"])
LOSSY_ZONE = finding(FindingKind.ZONE_DEGRADED, zones=["z1"])
DEAD_NODE = finding(FindingKind.NODE_UNREACHABLE, nodes=["n1"])


@pytest.mark.parametrize(
    ("n_nodes", "findings", "view"),
    [
        pytest.param(6, [], "full", id="small"),
        pytest.param(6, [CUT], "zones", id="small-partition"),
        pytest.param(6, [LOSSY_ZONE], "zones", id="small-degraded-zone"),
        pytest.param(150, [], "failing", id="mid"),
        pytest.param(150, [CUT], "zones", id="mid-partition"),
        pytest.param(1000, [], "zones", id="large-healthy"),
        pytest.param(1000, [DEAD_NODE], "failing", id="large-node-fault"),
        pytest.param(
            1000,
            [
                DEAD_NODE,
                LOSSY_ZONE,
            ],
            "zones",
            id="large-zone-and-node",
        ),
    ],
)
def test_auto_picks_the_zone_view_for_zone_findings_and_large_clusters(
    n_nodes: int, findings: list[Finding], view: str
) -> None:
    assert auto_view(n_nodes, findings) == view


def test_auto_with_a_zone_finding_gives_the_zone_matrix() -> None:
    records = mesh_records()
    nodes = sorted({r.src_node for r in records})
    table = aggregate(records, nodes=nodes)
    zones = {n: f"zone-{i % 2}" for i, n in enumerate(nodes)}
    cut = finding(FindingKind.ZONE_PARTITION, zones=["zone-0", "zone-1"])
    m = matrix_view(table, view="auto", nodes=nodes, zones=zones, findings=[cut])
    assert m == matrix_view(table, view="zones", nodes=nodes, zones=zones)
    assert m.nodes == ["zone-0", "zone-1"]
