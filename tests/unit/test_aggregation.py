"""Aggregation (records -> PairTable by sort keys) against the per-record reference aggregator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.aggregation import Keys, aggregate, encode_records, hist_dtype, pair_cut
from prober.model import PATHS, Outcome, ProbeResult, Proto, SrcKind
from prober.stats import N_LAT_BINS, OK, PROTOS, RETRANSMIT_BINS, UNKNOWN, PairTable, slow_of
from tests.reference_aggregation import reference_table

Row = tuple[str, str, str, str | None, str, str | None]


def rec(
    src: str,
    dst: str | None,
    outcome: str = "ok",
    *,
    ts: float = 0.0,
    path: str = "pod-to-pod",
    target: str = "",
    latency: float = 0.001,
    target_ip: str | None = None,
    proto: Proto = Proto.HTTP,
) -> ProbeResult:
    kind = SrcKind(path.split("-to-", maxsplit=1)[0])
    return ProbeResult(
        ts=ts, path=path, src_node=src, src_kind=kind, target=target or f"pod/{dst}", proto=proto,
        outcome=Outcome(outcome), latency_s=latency if outcome == "ok" else None, dst_node=dst,
        target_ip=target_ip,
    )  # fmt: skip


def as_dict(t: PairTable) -> dict[Row, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], float]]:
    """A table as {(path, proto, src, dst, target, target_ip): (counts, hist, latency sum)}."""
    out = {}
    for i in range(t.rows):
        key = (
            PATHS[int(t.path[i])],
            PROTOS[int(t.proto[i])].value,
            t.nodes[int(t.src[i])],
            t.dst_name(int(t.dst[i])),
            t.targets[int(t.target[i])],
            None if t.target_ip[i] == UNKNOWN else t.target_ips[int(t.target_ip[i])],
        )
        assert key not in out, f"duplicate row {key}"
        out[key] = (
            tuple(t.counts[i].tolist()),
            tuple(t.hist[i].tolist()),
            tuple(t.slow[i].tolist()),
            round(float(t.latency_sum_s[i]), 9),
        )
    return out


# -- aggregation agrees with the reference aggregator --------------------------------------

NODES = ["node-a", "node-b", "node-c"]
PATH_CHOICES = [
    "pod-to-pod", "host-to-host", "pod-to-nlb", "pod-to-service", "host-to-external", "pod-to-dns",
]  # fmt: skip


@st.composite
def records(draw: st.DrawFn) -> ProbeResult:
    path = draw(st.sampled_from(PATH_CHOICES))
    src = draw(st.sampled_from(NODES))
    outcome = draw(st.sampled_from(list(Outcome)))
    kind = path.split("-to-", maxsplit=1)[1]
    if kind in ("pod", "host"):
        dst: str | None = draw(st.sampled_from(NODES))
        target = f"{kind}/{dst}"
    elif kind in ("external", "dns"):
        dst = None
        target = draw(st.sampled_from([f"{kind}/one", f"{kind}/two"]))
    else:
        answered = NODES if outcome is Outcome.OK else [None, *NODES]
        dst = draw(st.sampled_from(answered))
        target = f"{kind}/echo"
    return rec(
        src, dst, outcome.value, path=path, target=target,
        ts=draw(st.floats(0, 1000)), latency=draw(st.floats(0, 12)),
        target_ip=draw(st.sampled_from([None, "10.0.0.1", "10.0.0.2"])),
        proto=draw(st.sampled_from(list(Proto))),
    )  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), max_size=60))
def test_aggregate_matches_reference(rs: list[ProbeResult]) -> None:
    ours = aggregate(rs, nodes=NODES)
    ref = reference_table(rs, nodes=NODES)
    assert ours.nodes[:3] == tuple(NODES)
    assert set(ours.nodes) == set(ref.nodes)
    assert as_dict(ours) == as_dict(ref)


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), max_size=60), st.floats(0, 1000))
def test_tables_after_a_time_match_reference(rs: list[ProbeResult], after: float) -> None:
    """One encoding serves a window and its last seconds (the "recent" table)."""
    encoded = encode_records(rs)
    whole = encoded.table(nodes=NODES)
    late = encoded.table(nodes=whole.nodes, after=after)
    assert as_dict(whole) == as_dict(reference_table(rs, nodes=NODES))
    assert as_dict(late) == as_dict(reference_table([r for r in rs if r.ts > after], nodes=NODES))
    assert late.nodes == whole.nodes


@settings(max_examples=50, deadline=None)
@given(st.lists(records(), max_size=30))
def test_pair_table_from_records_is_aggregate(rs: list[ProbeResult]) -> None:
    assert as_dict(PairTable.from_records(rs, nodes=NODES)) == as_dict(reference_table(rs, nodes=NODES))


@pytest.mark.parametrize(
    ("window_s", "end_ts", "expected"),
    [
        pytest.param(None, None, (60.0, 70.0), id="span-of-the-records"),
        pytest.param(300.0, 100.0, (300.0, 100.0), id="as-given"),
    ],
)
def test_window_defaults_to_the_span_of_the_records(
    window_s: float | None, end_ts: float | None, expected: tuple[float, float]
) -> None:
    t = aggregate([rec("a", "b", ts=10.0), rec("b", "a", ts=70.0)], window_s=window_s, end_ts=end_ts)
    assert (t.window_s, t.end_ts) == expected


def test_nodes_come_first_in_order_then_the_others_seen() -> None:
    t = aggregate([rec("x", "b"), rec("a", "y")], nodes=["b", "a", "idle"])
    assert t.nodes == ("b", "a", "idle", "x", "y")
    assert t.dsts[: len(t.nodes)] == t.nodes


def test_no_records_is_an_empty_table_of_the_nodes() -> None:
    t = aggregate([], nodes=["a", "b"])
    assert (t.rows, t.nodes, t.dsts, t.window_s, t.end_ts) == (0, ("a", "b"), ("a", "b"), 0.0, 0.0)


# -- a long window's bound ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pair", "other", "budget", "least", "cut"),
    [
        pytest.param([5, 5, 5, 5], 3, None, 1, 0, id="no-bound-reads-every-bucket"),
        pytest.param([5, 5, 5, 5], 3, 23, 1, 0, id="all-within-the-bound"),
        pytest.param([5, 5, 5, 5], 3, 22, 1, 1, id="the-oldest-left-out"),
        pytest.param([5, 5, 5, 5], 3, 13, 1, 2, id="newest-first-while-they-fit"),
        pytest.param([5, 5, 5, 5], 3, 0, 2, 2, id="the-windows-buckets-whatever-they-hold"),
        pytest.param([9, 0, 0, 5], 3, 10, 1, 1, id="empty-buckets-fit"),
        pytest.param([1, 9, 1, 5], 3, 17, 1, 2, id="stops-at-the-first-that-does-not-fit"),
        pytest.param([5, 5], 3, 0, 4, 0, id="fewer-buckets-than-the-window"),
    ],
)
def test_a_long_window_reads_its_newest_pair_buckets_within_its_bound(
    pair: list[int], other: int, budget: int | None, least: int, cut: int
) -> None:
    assert pair_cut(pair, other, budget=budget, least=least) == cut


def test_pair_paths_are_the_ones_keyed_by_two_nodes() -> None:
    encoded = encode_records(
        [
            rec("node-a", "node-b", path=path, target=target)
            for path, target in (
                ("pod-to-pod", "pod/node-b"),
                ("host-to-host", "host/node-b"),
                ("pod-to-service", "service/echo"),
                ("host-to-nodeport", "nodeport/echo"),
                ("pod-to-nlb", "nlb/echo"),
            )
        ]
        + [rec("node-a", None, path="pod-to-dns", target="dns/one")]
    )
    assert encoded.keys.pair_entries(encoded.sk).tolist() == [True, True, True, True, False, False]


def test_pair_entries_by_bucket_count_each_key_and_outcome_once_a_bucket() -> None:
    rs = [
        rec("node-a", "node-b", ts=11.0),
        rec("node-a", "node-b", ts=12.0),  # the same entry in the same bucket
        rec("node-a", "node-b", "timeout", ts=13.0),  # another outcome
        rec("node-a", "node-b", ts=21.0),  # the same entry in the next bucket
        rec("node-a", None, ts=22.0, path="pod-to-dns", target="dns/one"),
        rec("node-a", None, ts=23.0, path="pod-to-dns", target="dns/one"),
        rec("node-a", "node-c", ts=5.0),  # before the window
        rec("node-a", "node-c", ts=31.0),  # after it
    ]
    pair, other = encode_records(rs).pair_entries_by_bucket(since=10.0, until=29.0, bucket_s=10.0)
    assert (pair, other) == ([2, 1], 1)


def test_each_target_combinations_path_is_kept_as_labels_come_and_go() -> None:
    keys = Keys()
    keys.encode([rec("node-a", "node-b", path="pod-to-pod", target="pod/node-b")])
    assert keys.tc_path_array().tolist() == keys.tc_path
    keys.encode([rec("node-a", "node-b", path="host-to-host", target="host/node-b")])
    assert (
        keys.tc_path_array().tolist()
        == keys.tc_path
        == [PATHS.index("pod-to-pod"), PATHS.index("host-to-host")]
    )
    # compacted to the second, then a third: as many as before, each where it now is
    keys.compact(np.array([False, True]), np.ones(len(keys.names), dtype=np.bool_))
    keys.encode([rec("node-a", None, path="pod-to-dns", target="dns/one")])
    assert (
        keys.tc_path_array().tolist()
        == keys.tc_path
        == [PATHS.index("host-to-host"), PATHS.index("pod-to-dns")]
    )


@pytest.mark.parametrize(
    ("top", "dtype"),
    [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65_535, np.uint16), (65_536, np.int32)],
)
def test_a_histogram_is_as_narrow_as_its_largest_cell(top: int, dtype: type) -> None:
    assert hist_dtype(np.asarray([1, top], dtype=np.uint32)) is dtype


def test_a_tables_histogram_holds_its_counts_in_the_narrowest_dtype() -> None:
    one_each = aggregate([rec("a", "b", target=f"pod/b-{i}") for i in range(3)], nodes=["a", "b"])
    assert one_each.hist.dtype == np.uint8
    many = aggregate([rec("a", "b") for _ in range(300)], nodes=["a", "b"])
    assert many.hist.dtype == np.uint16
    assert int(many.hist.sum()) == 300
    assert int(many.hist.max()) == 300
    assert (many.counts[:, OK] == 300).all()


def test_slow_counts_of_a_narrow_histogram_do_not_wrap() -> None:
    hist = np.zeros((1, N_LAT_BINS), dtype=np.uint8)
    hist[0, list(RETRANSMIT_BINS)] = 200
    assert slow_of(hist)[0, 0] == 400
