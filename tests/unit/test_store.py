"""The windowed store: bucketing, window edges, retention, departed nodes, histograms.

Time is always an argument; ``now`` values below are chosen against a 10 s bucket.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.aggregation import PAIR_KINDS, pair_cut
from prober.aggregation import encode_records as encode_keys
from prober.collector.store import SNAPSHOT_MAGIC, Store, StoreSettings, _snapshot_decoder
from prober.model import (
    LATENCY_BUCKETS_S,
    OUTCOME_INDEX,
    OUTCOMES,
    Outcome,
    ProbeResult,
    split_path,
)
from prober.records import encode_records
from prober.report import PassSchedule, Replay
from prober.stats import N_LAT_BINS, UNKNOWN, NlbProbes, PairTable, latency_bin
from tests.reference_aggregation import reference_table
from tests.unit.test_aggregation import NODES, as_dict, rec, records


def sent(t: PairTable, src: str, dst: str | None) -> int:
    d = UNKNOWN if dst is None else t.dsts.index(dst)
    m = (t.src == t.nodes.index(src)) & (t.dst == d)
    return int(t.sent[m].sum())


# -- the store agrees with the reference aggregator ----------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), max_size=60), st.lists(st.integers(1, 20), max_size=5))
def test_store_window_over_retention_matches_reference(rs: list[ProbeResult], cuts: list[int]) -> None:
    """However the records arrive (in batches, out of order), a full window sums them all."""
    store = Store(StoreSettings(bucket_s=10, retention_s=1200))
    start = 0
    for cut in [*cuts, len(rs)]:
        store.ingest(rs[start : start + cut], now=1000.0)
        start += cut
    store.ingest(rs[start:], now=1000.0)
    ours = store.table(now=1000.0, window_s=1200)
    assert as_dict(ours) == as_dict(reference_table(rs, nodes=NODES))


# -- queued batches ------------------------------------------------------------------------


def _twin_stores(**settings: Any) -> tuple[Store, Store]:
    return Store(StoreSettings(bucket_s=10, retention_s=1200, **settings)), Store(
        StoreSettings(bucket_s=10, retention_s=1200)
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(records(), min_size=1, max_size=8), max_size=12), st.booleans())
def test_queued_batches_are_what_each_batch_stored_at_once_is(
    batches: list[list[ProbeResult]], as_sent: bool
) -> None:
    """Every read stores what waits: the windows, the NLB probes and the raw lines are those
    of a store that took each batch at once, whatever the queue's bounds."""
    queued, direct = _twin_stores(queue_records=10_000, queue_s=1e9)
    seen: list[tuple[object, ...]] = []

    def observe(sk: Any, lat: Any, keys: Any) -> None:
        seen.extend(zip(sk.tolist(), lat.tolist(), strict=True))

    expected: list[tuple[object, ...]] = []

    def observe_direct(sk: Any, lat: Any, keys: Any) -> None:
        expected.extend(zip(sk.tolist(), lat.tolist(), strict=True))

    for i, b in enumerate(batches):
        jsonl = encode_records(b) if as_sent else None
        queued.queue(b, now=1000.0 + i, jsonl=jsonl, observe=observe)
        direct.ingest(b, now=1000.0 + i, jsonl=jsonl, observe=observe_direct)
    assert seen == []  # nothing stored yet
    now = 1000.0 + len(batches)
    assert as_dict(queued.table(now=now, window_s=1200)) == as_dict(direct.table(now=now, window_s=1200))
    assert sorted(seen) == sorted(expected)
    assert queued.recent_jsonl() == direct.recent_jsonl()
    assert as_rows(queued.nlb_probes(now=now, window_s=600)) == as_rows(
        direct.nlb_probes(now=now, window_s=600)
    )


def test_the_queue_stores_at_its_bound_of_results_or_of_time() -> None:
    store = Store(StoreSettings(queue_records=5, queue_s=1.0))
    ob: list[int] = []

    def observe(sk: Any, lat: Any, keys: Any) -> None:
        ob.append(int(sk.size))

    two = [rec("node-a", "node-b", ts=100.0), rec("node-b", "node-a", ts=100.0)]
    store.queue(two, now=100.0, observe=observe)
    store.queue(two, now=100.5, observe=observe)
    assert ob == []
    store.queue(two, now=100.6, observe=observe)  # 6 results waiting: stored, in one call
    assert ob == [6]
    store.queue(two, now=101.0, observe=observe)
    store.queue(two[:1], now=102.0, observe=observe)  # the first waited 1 s
    assert ob == [6, 3]
    store.queue(two, now=102.1, observe=observe)
    assert store.usage().entries > 0  # a read stores what waits
    assert ob == [6, 3, 2]


def test_queued_batches_with_other_observers_are_stored_one_by_one() -> None:
    store = Store()
    calls: list[tuple[str, int]] = []
    store.queue(
        [rec("node-a", "node-b", ts=1.0)], now=1.0, observe=lambda sk, lat, k: calls.append(("a", sk.size))
    )
    store.queue([rec("node-a", "node-c", ts=1.0)] * 2, now=1.0, observe=None)
    store.flush()
    assert calls == [("a", 1)]
    assert sent(store.table(now=1.0, window_s=60), "node-a", "node-c") == 2


def test_a_full_key_table_counts_the_queued_results_as_stored() -> None:
    store = Store()
    keys = store._keys  # the table's room is what is under test
    keys.max_names = len(keys.names) + 3
    store.queue([rec("node-a", "node-b", ts=1.0)], now=1.0)  # 2 names, waiting
    fit, full = store.admit([rec("node-c", "node-d", ts=1.0), rec("node-a", "node-b", ts=1.0)])
    # The waiting batch took its names first: one new name is left, node-c and node-d
    # need two; the record of known names fits.
    assert full == [0]
    assert [(r.src_node, r.dst_node) for r in fit] == [("node-a", "node-b")]


# -- bucketing and window edges -------------------------------------------------------------


def test_window_is_whole_buckets_ending_with_the_current_one() -> None:
    store = Store(StoreSettings(bucket_s=10, retention_s=900))
    for ts in (69.9, 70.0, 99.0, 125.0, 129.9):
        store.ingest([rec("node-a", "node-b", ts=ts)], now=125.0)
    # now=125 is in bucket [120, 130); a 60 s window is buckets [70, 130): 4 of the 5 records
    assert sent(store.table(now=125.0, window_s=60), "node-a", "node-b") == 4
    # a window that is not a multiple of the bucket rounds up to whole buckets
    assert sent(store.table(now=125.0, window_s=51), "node-a", "node-b") == 4
    assert sent(store.table(now=125.0, window_s=50), "node-a", "node-b") == 3
    # the smallest window is the current bucket
    assert sent(store.table(now=125.0, window_s=1), "node-a", "node-b") == 2
    # as time moves on, records leave the window without new ingest
    assert sent(store.table(now=170.0, window_s=60), "node-a", "node-b") == 2


@pytest.mark.parametrize(
    ("ts", "now", "stored"),
    [
        pytest.param(1000.0, 1000.0, 1, id="now"),
        pytest.param(1005.0, 1000.0, 1, id="future-clock-counts-now"),
        pytest.param(100.0, 1000.0, 0, id="older-than-retention"),
        pytest.param(110.0, 1000.0, 1, id="oldest-retained-bucket"),
        pytest.param(109.9, 1000.0, 0, id="just-beyond-retention"),
    ],
)
def test_ingest_keeps_what_retention_allows(ts: float, now: float, stored: int) -> None:
    store = Store(StoreSettings(bucket_s=10, retention_s=900))
    assert store.ingest([rec("node-a", "node-b", ts=ts)], now=now) == stored
    assert store.table(now=now, window_s=900).rows == stored


def test_future_records_count_in_the_current_bucket() -> None:
    store = Store(StoreSettings(bucket_s=10, retention_s=900))
    store.ingest([rec("node-a", "node-b", ts=2000.0)], now=1000.0)
    assert store.table(now=1000.0, window_s=10).rows == 1
    # ... and age out with it
    assert store.table(now=1010.0, window_s=10).rows == 0


def test_buckets_expire_after_retention() -> None:
    store = Store(StoreSettings(bucket_s=10, retention_s=60))
    store.ingest([rec("node-a", "node-b", ts=t) for t in range(0, 60, 5)], now=59.0)
    assert store.usage().buckets == 6
    assert sent(store.table(now=59.0, window_s=60), "node-a", "node-b") == 12
    # a longer window than retention is capped at retention
    assert sent(store.table(now=59.0, window_s=3600), "node-a", "node-b") == 12
    assert sent(store.table(now=79.0, window_s=60), "node-a", "node-b") == 8
    assert store.usage().buckets == 4
    store.table(now=200.0, window_s=60)
    assert store.usage().buckets == 0


def test_batches_spanning_buckets_split() -> None:
    store = Store(StoreSettings(bucket_s=10, retention_s=900))
    batch = [rec("node-a", "node-b", ts=t) for t in (91.0, 95.0, 101.0, 109.0, 111.0)]
    assert store.ingest(batch, now=115.0) == 5
    assert store.usage().buckets == 3
    assert sent(store.table(now=115.0, window_s=10), "node-a", "node-b") == 1
    assert sent(store.table(now=115.0, window_s=20), "node-a", "node-b") == 3


def test_repeated_keys_in_a_bucket_are_one_entry_per_outcome() -> None:
    """Memory grows with distinct (key, outcome or latency bin), not with probes."""
    store = Store(StoreSettings(bucket_s=10, retention_s=900))
    store.ingest([rec("node-a", "node-b", ts=1.0) for _ in range(500)], now=1.0)
    store.ingest([rec("node-a", "node-b", "timeout", ts=2.0) for _ in range(500)], now=2.0)
    store.table(now=2.0, window_s=10)
    usage = store.usage()
    assert usage.entries == 2
    t = store.table(now=2.0, window_s=10)
    assert t.counts[0, OUTCOME_INDEX[Outcome.OK]] == 500
    assert t.counts[0, OUTCOME_INDEX[Outcome.TIMEOUT]] == 500


# -- departed nodes ------------------------------------------------------------------------


def test_departed_nodes_drop_out_of_tables() -> None:
    store = Store(StoreSettings(bucket_s=10, retention_s=900))
    store.ingest(
        [
            rec("node-a", "node-b", ts=1.0),
            rec("node-a", "node-gone", ts=1.0),
            rec("node-gone", "node-a", ts=1.0),
            rec("node-a", None, "timeout", ts=1.0, path="pod-to-nlb", target="nlb/echo"),
            rec("node-a", None, "timeout", ts=1.0, path="host-to-external", target="external/web"),
        ],
        now=1.0,
    )
    store.set_nodes(["node-a", "node-b"])
    t = store.table(now=1.0, window_s=60)
    assert t.nodes == ("node-a", "node-b")
    assert "node-gone" not in t.dsts
    assert sent(t, "node-a", "node-b") == 1
    assert sent(t, "node-a", None) == 1  # an unanswered NLB probe is not a departed node
    assert sent(t, "node-a", "external/web") == 1
    assert t.rows == 3
    # nodes of the inventory with nothing sent are still the table's nodes, in order
    store.set_nodes(["node-c", "node-b", "node-a"])
    assert store.table(now=1.0, window_s=60).nodes == ("node-c", "node-b", "node-a")
    # without an inventory every node seen is kept
    store.set_nodes(None)
    assert set(store.table(now=1.0, window_s=60).nodes) == {"node-a", "node-b", "node-gone"}


def test_compaction_forgets_departed_names_and_keeps_the_rest_intact() -> None:
    """Churn (nodes leaving, pods getting new addresses) must not grow the store forever."""
    store = Store(StoreSettings(bucket_s=10, retention_s=100))
    old = [rec(f"old-{i}", "node-b", ts=5.0, target_ip=f"10.1.{i // 250}.{i % 250}") for i in range(5000)]
    store.ingest(old, now=5.0)
    kept = [
        rec("node-a", "node-b", ts=95.0, target_ip="10.0.0.2"),
        rec("node-a", "node-b", "refused", ts=96.0, target_ip="10.0.0.2"),
        rec("node-b", None, "timeout", ts=97.0, path="pod-to-nlb", target="nlb/echo"),
        rec("node-b", None, "timeout", ts=97.0, path="host-to-external", target="external/web"),
        rec("node-c", "node-a", ts=97.0, latency=1.05),
    ]
    store.ingest(kept, now=97.0)
    before = store.usage()
    assert before.names > 5000
    store.ingest([rec("node-c", "node-a", ts=115.0, latency=0.002)], now=115.0)  # bucket 0 expires
    after = store.usage()
    assert after.names == 4  # node-a, node-b, node-c, external/web
    assert after.tcombos == 4
    expected = as_dict(reference_table([*kept, rec("node-c", "node-a", ts=115.0, latency=0.002)]))
    assert as_dict(store.table(now=115.0, window_s=100)) == expected


# -- latency histograms --------------------------------------------------------------------


def test_latency_histograms_and_sums() -> None:
    store = Store(StoreSettings(bucket_s=10, retention_s=900))
    latencies = [0.0004, 0.0005, 0.002, 0.002, 1.02, 3.05, 20.0]
    store.ingest([rec("node-a", "node-b", ts=1.0, latency=x) for x in latencies], now=1.0)
    store.ingest([rec("node-a", "node-b", ts=11.0, latency=0.002)], now=11.0)
    t = store.table(now=11.0, window_s=20)
    assert t.rows == 1
    hist = t.hist[0]
    assert hist.sum() == 8
    assert hist[0] == 2  # upper bounds are inclusive: 0.0005 is in the first bin
    assert hist[latency_bin(0.002)] == 3
    assert LATENCY_BUCKETS_S[int(np.flatnonzero(hist)[2])] == 1.1  # one SYN retransmit
    assert hist[N_LAT_BINS - 1] == 1  # +Inf
    assert math.isclose(float(t.latency_sum_s[0]), sum(latencies) + 0.002)
    assert t.counts[0].tolist() == [8] + [0] * (len(OUTCOMES) - 1)


# -- raw-record rings ----------------------------------------------------------------------


def test_recent_records_ring_is_bounded_in_bytes_and_filters_by_time() -> None:
    one = len(encode_records([rec("node-a", "node-b", ts=1.0)]))
    store = Store(StoreSettings(recent_bytes=3 * one, recent_nlb_probes=2))
    # one batch larger than the ring: its newest lines that fit
    store.ingest([rec("node-a", "node-b", ts=float(t)) for t in range(5)], now=5.0)
    assert [r.ts for r in store.recent()] == [2.0, 3.0, 4.0]
    assert [r.ts for r in store.recent(since=2.0)] == [3.0, 4.0]
    assert [r.ts for r in store.recent(limit=1)] == [4.0]
    # batches: the oldest go first, whole, and the exported lines are the records as sent
    store.ingest([rec("node-a", "node-b", ts=5.0)], now=6.0)
    store.ingest([rec("node-a", "node-b", ts=6.0), rec("node-a", "node-b", ts=7.0)], now=7.0)
    assert [r.ts for r in store.recent()] == [5.0, 6.0, 7.0]
    newest = encode_records([rec("node-a", "node-b", ts=t) for t in (6.0, 7.0)])
    assert store.recent_jsonl(since=5.0) == newest
    assert store.recent_jsonl(limit=2) == store.recent_jsonl(since=5.0)
    assert store.usage().recent_bytes <= 3 * one
    assert store.usage().recent_records == 3
    assert Store(StoreSettings(recent_bytes=0)).recent() == []
    store.ingest(
        [rec("node-a", "node-b", ts=float(t), path="pod-to-nlb", target="nlb/echo") for t in (1, 8, 9)],
        now=9.0,
    )
    nlb = store.nlb_probes(now=9.0, window_s=60)
    assert nlb.size == 2
    assert nlb.ts.tolist() == [8.0, 9.0]
    assert store.nlb_probes(now=9.0, window_s=0.5).size == 1


def nlb_rec(src: str, dst: str, *, ts: float, outcome: str = "ok", port: int = 40000) -> ProbeResult:
    r = rec(src, dst, outcome, ts=ts, path="pod-to-nlb", target="nlb/echo", target_ip="10.0.0.9")
    return msgspec.structs.replace(
        r, src_ip=f"10.1.0.{src[-1]}", src_port=port, seen_src_ip=f"10.1.0.{src[-1]}"
    )


def as_rows(nb: NlbProbes) -> list[tuple[object, ...]]:
    return list(
        zip(
            nb.ts.tolist(), nb.src_node, nb.src_ip, nb.src_port.tolist(), nb.target_ip, nb.outcome.tolist(),
            nb.dst_node, nb.path, nb.late.tolist(), nb.seen_src_ip, strict=True,
        )
    )  # fmt: skip


def test_the_nlb_ring_keeps_the_newest_probes_within_its_age_and_count() -> None:
    """The NLB ring holds what the longest window reads (``nlb_keep_s``) and at most
    ``recent_nlb_probes``, trimming the oldest batch to its newest probes; a window reads
    the probes stamped within it, whatever batches they came in."""
    store = Store(StoreSettings(bucket_s=10, retention_s=900, recent_nlb_probes=5, nlb_keep_s=60))
    store.ingest([nlb_rec("node-a", "node-b", ts=t) for t in (10.0, 11.0, 12.0)], now=12.0)
    store.ingest([nlb_rec("node-b", "node-a", ts=t) for t in (20.0, 21.0)], now=21.0)
    assert store.usage().recent_nlb_probes == 5
    store.ingest([nlb_rec("node-c", "node-a", ts=30.0), rec("node-a", "node-b", ts=30.0)], now=30.0)
    nb = store.nlb_probes(now=30.0, window_s=900)
    assert nb.ts.tolist() == [11.0, 12.0, 20.0, 21.0, 30.0]  # the oldest went first
    assert store.nlb_probes(now=30.0, window_s=15).ts.tolist() == [20.0, 21.0, 30.0]
    # Age: a batch whose newest probe is older than nlb_keep_s is gone.
    store.ingest([nlb_rec("node-a", "node-c", ts=75.0)], now=75.0)
    assert store.nlb_probes(now=75.0, window_s=900).ts.tolist() == [20.0, 21.0, 30.0, 75.0]
    # One batch larger than the ring: its newest probes.
    store.ingest([nlb_rec("node-a", "node-b", ts=100.0 + t) for t in range(7)], now=107.0)
    assert store.nlb_probes(now=107.0, window_s=900).ts.tolist() == [102.0, 103.0, 104.0, 105.0, 106.0]
    # Labels are kept once, whichever batch they came in.
    assert nb.src_node[0] is store.nlb_probes(now=107.0, window_s=900).src_node[0]


def test_nlb_probes_in_columns_are_the_records_probes() -> None:
    rs = [nlb_rec("node-a", "node-b", ts=1.0), nlb_rec("node-b", "node-a", ts=2.0, outcome="timeout")]
    rs.append(rec("node-a", "node-b", ts=3.0))  # not an NLB probe
    whole = NlbProbes.from_records(rs)
    parts = NlbProbes.concat([NlbProbes.from_records(rs[:1]), NlbProbes.from_records(rs[1:])])
    assert as_rows(parts) == as_rows(whole)
    assert whole.size == 2
    assert as_rows(whole.since(2.0)) == as_rows(whole)[1:]
    assert NlbProbes.concat([]).size == 0


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="bucket_s"):
        StoreSettings(bucket_s=0)
    with pytest.raises(ValueError, match="retention_s"):
        StoreSettings(bucket_s=10, retention_s=5)


def test_answered_outside_targets_count_under_their_name_not_a_node() -> None:
    # An external prober echo answers with its own node name, which is not the cluster's:
    # the probe counts in the external target's column, inventory or not.
    store = Store(StoreSettings(bucket_s=10, retention_s=900))
    store.ingest(
        [
            rec("node-a", "external", ts=1.0, path="pod-to-external", target="external/web"),
            rec("node-b", None, "timeout", ts=1.0, path="pod-to-external", target="external/web"),
        ],
        now=1.0,
    )
    for nodes in (["node-a", "node-b"], None):
        store.set_nodes(nodes)
        t = store.table(now=1.0, window_s=60)
        assert "external" not in t.nodes
        assert sent(t, "node-a", "external/web") == 1
        assert sent(t, "node-b", "external/web") == 1


# -- snapshots ------------------------------------------------------------------------------


def snapshot_store() -> Store:
    store = Store(StoreSettings(bucket_s=10.0, retention_s=60.0))
    store.ingest(
        [rec("node-a", "node-b", ts=float(t)) for t in range(0, 50, 3)]
        + [rec("node-b", "node-a", "timeout", ts=42.0), rec("node-c", "node-a", ts=49.0, latency=0.3)]
        + [nlb_rec("node-a", "node-b", ts=44.0), nlb_rec("node-b", "node-c", ts=45.0)],
        now=50.0,
    )
    return store


def test_a_snapshot_restores_every_window() -> None:
    store = snapshot_store()
    data = store.dump(now=50.0)
    restored = Store(StoreSettings(bucket_s=10.0, retention_s=60.0))
    assert restored.load(data, now=55.0) == store.usage().buckets
    for window in (10.0, 30.0, 60.0):
        a, b = store.table(now=55.0, window_s=window), restored.table(now=55.0, window_s=window)
        assert (a.nodes, a.targets) == (b.nodes, b.targets)
        assert np.array_equal(a.counts, b.counts)
        assert np.array_equal(a.hist, b.hist)
        assert np.array_equal(a.slow, b.slow)
    # it goes on taking results, with the same labels
    restored.ingest([rec("node-a", "node-b", ts=56.0)], now=56.0)
    assert int(restored.table(now=56.0, window_s=10.0).sent.sum()) == 1 + int(
        store.table(now=56.0, window_s=10.0).sent.sum()
    )


def test_a_snapshot_taken_now_and_encoded_later_is_the_store_as_it_was() -> None:
    """The collector takes the references on its event loop and encodes them in a thread
    while ingest goes on: results into the same buckets and new ones, sealing, a pair
    budget dropping pair paths, the NLB ring moving on, the labels compacted after an
    inventory change. The snapshot is the store as it was when taken."""
    store = Store(StoreSettings(bucket_s=10.0, retention_s=60.0, pair_entries=0, pair_keep_s=10.0))
    store.ingest(
        [rec("node-a", "node-b", ts=float(t)) for t in range(0, 50, 3)]
        + [nlb_rec("node-a", "node-b", ts=44.0), nlb_rec("node-b", "node-c", ts=45.0)],
        now=50.0,
    )
    store.ingest([rec("node-b", "node-a", "timeout", ts=42.0), rec("node-c", "node-a", ts=49.0)], now=50.0)
    expected = store.dump(now=50.0)
    encode = store.dumper(now=50.0)
    store.ingest([rec("node-d", "node-a", ts=float(t)) for t in range(45, 120, 2)], now=119.0)
    store.ingest([nlb_rec("node-d", "node-a", ts=118.0)], now=119.0)
    store.set_nodes(["node-d", "node-a"])
    store._compact()
    store.snapshot(now=119.0, window_s=60.0).table()
    assert store.dump(now=119.0) != expected
    assert encode() == expected


def test_a_snapshot_keeps_the_nlb_probes_and_reads_the_format_before() -> None:
    store = Store(StoreSettings(bucket_s=10.0, retention_s=60.0))
    rs = [nlb_rec("node-a", "node-b", ts=t, port=40000 + int(t)) for t in (5.0, 30.0, 45.0)]
    rs.append(nlb_rec("node-b", "node-a", ts=46.0, outcome="timeout"))
    store.ingest(rs, now=50.0)
    before = as_rows(store.nlb_probes(now=50.0, window_s=60))
    restored = Store(StoreSettings(bucket_s=10.0, retention_s=60.0))
    restored.load(store.dump(now=50.0), now=50.0)
    assert as_rows(restored.nlb_probes(now=50.0, window_s=60)) == before
    # Restored later: what is past the ring's age is gone.
    later = Store(StoreSettings(bucket_s=10.0, retention_s=60.0))
    later.load(store.dump(now=50.0), now=80.0)
    assert later.nlb_probes(now=80.0, window_s=60).ts.tolist() == [30.0, 45.0, 46.0]
    # A snapshot of format 1 kept the probes as records: it is read as they were.
    doc = _snapshot_decoder.decode(store.dump(now=50.0)[len(SNAPSHOT_MAGIC) :])
    v1 = msgspec.structs.replace(doc, version=1, nlb=rs, nlb_columns=None)
    old = Store(StoreSettings(bucket_s=10.0, retention_s=60.0))
    assert old.load(SNAPSHOT_MAGIC + msgspec.msgpack.encode(v1), now=50.0) == store.usage().buckets
    assert as_rows(old.nlb_probes(now=50.0, window_s=60)) == before


def _bad_nlb_labels(data: bytes) -> bytes:
    doc = _snapshot_decoder.decode(data[len(SNAPSHOT_MAGIC) :])
    assert doc.nlb_columns is not None
    columns = msgspec.structs.replace(doc.nlb_columns, labels=doc.nlb_columns.labels[:1])
    return SNAPSHOT_MAGIC + msgspec.msgpack.encode(msgspec.structs.replace(doc, nlb_columns=columns))


def _short_nlb_column(data: bytes) -> bytes:
    doc = _snapshot_decoder.decode(data[len(SNAPSHOT_MAGIC) :])
    assert doc.nlb_columns is not None
    columns = msgspec.structs.replace(doc.nlb_columns, ts=doc.nlb_columns.ts[:8])
    return SNAPSHOT_MAGIC + msgspec.msgpack.encode(msgspec.structs.replace(doc, nlb_columns=columns))


def test_a_snapshot_older_than_retention_keeps_nothing() -> None:
    restored = Store(StoreSettings(bucket_s=10.0, retention_s=60.0))
    assert restored.load(snapshot_store().dump(now=50.0), now=500.0) == 0


def _corrupt(data: bytes) -> bytes:
    body = bytearray(data)
    i = body.index(b"node-a")
    body[i : i + 6] = b"node-b"  # two labels called node-b
    return bytes(body)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        pytest.param(lambda d: d[: len(d) // 2], "corrupt snapshot", id="truncated"),
        pytest.param(lambda d: b"{}" + d, "not a prober store snapshot", id="foreign-file"),
        pytest.param(lambda d: b"", "not a prober store snapshot", id="empty"),
        pytest.param(_corrupt, "listed twice", id="duplicate-label"),
        pytest.param(_bad_nlb_labels, "label the snapshot does not have", id="nlb-label"),
        pytest.param(_short_nlb_column, "different lengths", id="nlb-column"),
    ],
)
def test_a_corrupt_snapshot_is_refused_and_the_store_unchanged(damage: Any, fragment: str) -> None:
    store = Store(StoreSettings(bucket_s=10.0, retention_s=60.0))
    store.ingest([rec("node-a", "node-b", ts=1.0), nlb_rec("node-a", "node-b", ts=1.0)], now=1.0)
    before = store.usage()
    with pytest.raises(ValueError, match=fragment):
        store.load(damage(snapshot_store().dump(now=50.0)), now=50.0)
    assert store.usage() == before
    assert store.nlb_probes(now=1.0, window_s=60).size == 1


def test_a_snapshot_of_another_store_shape_is_refused() -> None:
    other = Store(StoreSettings(bucket_s=5.0, retention_s=60.0))
    with pytest.raises(ValueError, match="snapshot of another store"):
        other.load(snapshot_store().dump(now=50.0), now=50.0)


# -- a long window's bound: the store reads what the replay reads ----------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), min_size=20, max_size=200), st.integers(0, 150), st.integers(1, 30))
def test_a_bounded_long_window_is_the_replays_and_the_records_before_its_cut(
    rs: list[ProbeResult], budget: int, least: int
) -> None:
    """The long window (1,000 s of 10 s buckets) read within ``budget`` entries, the pair
    paths of its newest ``least`` buckets whatever they hold: the collector's store gives
    the table of the records without the pair paths' before the cut, and the replay of
    the same records (``prober diagnose``) the same table."""
    now = 1000.0
    store = Store(StoreSettings(bucket_s=10, retention_s=1000))
    store.set_nodes(NODES)
    store.ingest(rs, now=now)
    ours = store.snapshot(now=now, window_s=1000.0, entries=budget, pair_s=10.0 * least).table()
    encoded = encode_keys(rs)
    pair, other = encoded.pair_entries_by_bucket(since=10.0, until=now, bucket_s=10.0)
    assert sum(pair) + other == store.usage().entries  # the snapshot sealed every bucket
    cut = pair_cut(pair, other, budget=budget, least=least)
    assert other + sum(pair[cut:]) <= budget or cut == max(0, len(pair) - least)
    kept = [
        r
        for r in rs
        if r.ts >= 10.0 and (r.ts >= 10.0 * (cut + 1) or split_path(r.path)[1] not in PAIR_KINDS)
    ]
    assert as_dict(ours) == as_dict(reference_table(kept, nodes=NODES))
    schedule = PassSchedule(
        window_s=10.0 * least, bucket_s=10.0, long_window_factor=1000.0 / (10.0 * least),
        retention_s=1000.0, long_window_entries=budget,
    )  # fmt: skip
    replayed = Replay(rs, schedule=schedule, nodes=NODES).long_window(now).table
    assert as_dict(replayed) == as_dict(ours)


def test_an_unbounded_long_window_reads_every_entry() -> None:
    rs = [rec("node-a", "node-b", ts=float(t)) for t in range(0, 100, 3)]
    store = Store(StoreSettings(bucket_s=10, retention_s=100))
    store.ingest(rs, now=99.0)
    whole = store.snapshot(now=99.0, window_s=100.0, entries=None, pair_s=10.0).table()
    assert as_dict(whole) == as_dict(store.table(now=99.0, window_s=100.0))
    assert sent(whole, "node-a", "node-b") == len(rs)
    bounded = store.snapshot(now=99.0, window_s=100.0, entries=0, pair_s=20.0).table()
    assert sent(bounded, "node-a", "node-b") == sum(1 for r in rs if r.ts >= 80.0)


# -- the store keeps the pair paths a bounded long window reads, and no more -----------------


@settings(max_examples=100, deadline=None)
@given(
    st.lists(records(), min_size=20, max_size=200),
    st.lists(st.floats(0, 60), min_size=1, max_size=8),
    st.integers(0, 150),
    st.integers(1, 30),
    st.booleans(),
)
def test_a_store_within_a_pair_budget_gives_every_bounded_long_window_whole(
    rs: list[ProbeResult], lags: list[float], budget: int, least: int, pairs_only: bool
) -> None:
    """Results arrive in batches as time goes on, some of them late (stamped up to a
    minute before they arrive). After each batch, the store that keeps the pair paths
    within ``budget`` gives the long window read within that budget the table of the
    store that keeps everything; and it holds no more entries than that one. With pair
    paths alone (``pairs_only``) the long window's budget holds nothing else, and its cut
    comes as far back as the store's can: the edge of what the store must keep."""
    if pairs_only:
        rs = [r for r in rs if split_path(r.path)[1] in PAIR_KINDS] or rs
    rs = sorted(rs, key=lambda r: r.ts)
    budgeted = Store(
        StoreSettings(bucket_s=10, retention_s=1000, pair_entries=budget, pair_keep_s=10.0 * least)
    )
    whole = Store(StoreSettings(bucket_s=10, retention_s=1000))
    for store in (budgeted, whole):
        store.set_nodes(NODES)
    step = max(1, len(rs) // len(lags))
    now = 0.0
    for i, lag in zip(range(0, len(rs), step), lags * len(rs), strict=False):
        batch = rs[i : i + step]
        now = max(now, max(r.ts for r in batch) + lag)
        for store in (budgeted, whole):
            store.ingest(batch, now=now)
        ours, theirs = (
            s.snapshot(now=now, window_s=1000.0, entries=budget, pair_s=10.0 * least).table()
            for s in (budgeted, whole)
        )
        assert as_dict(ours) == as_dict(theirs)
        assert budgeted.usage().entries <= whole.usage().entries


@pytest.mark.parametrize(("budget", "kept"), [(6, 3), (5, 2), (0, 1), (None, 9)])
def test_a_store_within_a_pair_budget_drops_the_older_pair_entries_and_keeps_the_rest(
    budget: int | None, kept: int
) -> None:
    """Ten buckets of 10 s but the third, each with two peer probes (two pair entries)
    and one outside probe. As each bucket begins, the store keeps the pairs of the
    newest two buckets (the new one still empty) whatever they hold, and of older ones
    while the pair entries kept stay within the budget: within 6, buckets 7, 8 and 9 when
    bucket 10 begins; within 5, 8 and 9; within 0, 9 alone; without a budget, all nine.
    Every bucket keeps its outside probe. Late results of the third bucket, which the
    store has not seen yet, lose their pair paths when a budget dropped its neighbours'."""
    store = Store(StoreSettings(bucket_s=10, retention_s=200, pair_entries=budget, pair_keep_s=20.0))
    store.set_nodes(NODES)
    for b in (0, 1, 3, 4, 5, 6, 7, 8, 9):
        ts = 10.0 * b + 1
        store.ingest(
            [
                rec("node-a", "node-b", ts=ts),
                rec("node-b", "node-c", ts=ts),
                rec("node-a", None, ts=ts, path="host-to-external", target="external/one"),
            ],
            now=ts,
        )
    store.ingest([rec("node-c", "node-a", ts=100.0)], now=100.0)  # bucket 10 begins
    assert store.usage().entries == 9 + 2 * kept + 1
    table = store.table(now=100.0, window_s=200.0)
    assert sent(table, "node-a", "node-b") == sent(table, "node-b", "node-c") == kept
    assert sent(table, "node-a", "external/one") == 9
    # late probes into buckets past the budget, one seen and one not: their pairs are dropped
    late = [rec("node-a", "node-b", ts=ts) for ts in (5.0, 25.0)]
    store.ingest(
        [*late, rec("node-a", None, ts=25.0, path="host-to-external", target="external/one")], now=100.5
    )
    table = store.table(now=100.5, window_s=200.0)
    assert sent(table, "node-a", "node-b") == kept + (2 if budget is None else 0)
    assert sent(table, "node-a", "external/one") == 10


def test_the_collector_keeps_the_pair_paths_its_long_window_reads() -> None:
    from prober.collector.service import CollectorService
    from prober.collector.settings import CollectorSettings

    settings = CollectorSettings(inventory="x", window_s=60.0, long_window_entries=1234)
    store = CollectorService(settings, pinglists=None).store  # type: ignore[arg-type]
    assert (store.settings.pair_entries, store.settings.pair_keep_s) == (1234, 60.0)
