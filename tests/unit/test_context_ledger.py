"""The diagnosis context's kept-current bookkeeping equals the same sums worked out afresh.

Rules claim probes one finding at a time and re-read their sums after each: the
context keeps the matrix cells, :class:`LedgerSums` and each finding's footprint
current from the rows claimed since, instead of re-summing the window. After any
sequence of claims, each must equal what a pass over every row gives.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable

import numpy as np
import pytest

from prober.arrays import BoolArray, FloatArray, IntArray
from prober.diagnose import DiagnosisPolicy, diagnose_window
from prober.diagnose.context import (
    Context,
    Counts,
    LedgerSums,
    Spread,
    StreamKey,
    kind_mask,
    stream_key,
    weighted_count,
)
from prober.diagnose.nodes import Direction, Traffic, traffic
from prober.diagnose.pair_blocked import hop_chances
from prober.model import Finding, FindingKind, TargetKind
from tests.synth import Cluster, Fault, evidence

C12 = Cluster(n_nodes=12)


def _context() -> Context:
    faults = [
        Fault(kind="packet-loss", nodes=(C12.nodes[2],), rate=0.2),
        Fault(kind="node-unreachable", nodes=(C12.nodes[7],)),
    ]
    return Context(evidence(C12, rounds=6, faults=faults, seed=4), DiagnosisPolicy())


def _finding(n: int) -> Finding:
    return Finding(
        kind=FindingKind.PACKET_LOSS, nodes=[f"n{n}"], pairs=[], paths=[], severity="warning", confidence=1.0,
        evidence="", remediation="",
    )  # fmt: skip


def test_kept_sums_equal_fresh_ones_after_every_kind_of_claim() -> None:
    ctx = _context()
    rng = np.random.default_rng(1)
    n = ctx.n_nodes
    by_src = LedgerSums(
        ctx,
        {
            "src": (np.where(ctx.crossing, ctx.src, -1), n),
            "src_kind": (np.where(ctx.crossing, ctx.src_kind, -1), 2),
        },
        lambda r: ctx.residual.copy() if r is None else ctx.residual[r],
    )
    ctx.matrix_cells()  # the matrix sums start here, before any claim
    kept = Traffic(ctx)
    from_4 = np.flatnonzero(ctx.src == 4)
    claims: list[Callable[[], float]] = [
        lambda: ctx.claim_all(ctx.crossing & (ctx.ingress == 3)),
        lambda: ctx.claim_all(from_4[ctx.crossing[from_4]]),  # row numbers, not a mask
        lambda: ctx.claim_part(ctx.src == 5, rng.random(ctx.table.rows)),
        lambda: ctx.claim_expected(ctx.src != 7, ctx.share_of(7)),
        lambda: ctx.set_aside(ctx.outside, np.full(ctx.table.rows, 0.5)),
        lambda: ctx.claim_count(np.flatnonzero(ctx.fail > 0)[:40].tolist(), 17.0),
    ]
    for k, claim in enumerate(claims):
        live_before = ctx.live.copy()
        claim()
        assert not np.array_equal(live_before, ctx.live) or k == 3  # each claim changed the ledger
        fresh = weighted_count(ctx.src[ctx.crossing], ctx.residual[ctx.crossing], n)
        np.testing.assert_allclose(by_src.read("src"), fresh, atol=1e-9)
        by_kind = weighted_count(ctx.src_kind[ctx.crossing].astype(np.int64), ctx.residual[ctx.crossing], 2)
        np.testing.assert_allclose(by_src.read("src_kind"), by_kind, atol=1e-9)
        cells = ctx.matrix_cells()
        key = ctx.src[ctx.crossing] * n + ctx.ingress[ctx.crossing]
        uniq, inv = np.unique(key, return_inverse=True)
        assert np.array_equal(cells.a * n + cells.b, uniq)
        for got, values in ((cells.sent, ctx.live), (cells.failed, ctx.residual), (cells.slow, ctx.slow)):
            np.testing.assert_allclose(
                got, weighted_count(inv.reshape(-1), values[ctx.crossing], len(uniq)), atol=1e-9
            )
        _assert_same_traffic(kept.current(), traffic(ctx))
        ctx.found(_finding(k))


def _assert_same_traffic(got: tuple[Direction, Direction], want: tuple[Direction, Direction]) -> None:
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.sent, w.sent, atol=1e-9)
        np.testing.assert_allclose(g.failed, w.failed, atol=1e-9)
        assert np.array_equal(g.peers, w.peers)
        assert np.array_equal(g.dead_peers, w.dead_peers)


def test_a_footprint_holds_the_streams_a_finding_explained_at_least_half_of() -> None:
    ctx = _context()
    into = ctx.crossing & (ctx.ingress == 7)
    streams_into = set(ctx.stream_keys(np.unique(ctx._stream[into & (ctx.live > 0)])))
    ctx.claim_all(into)
    ctx.found(_finding(0))
    _, fp = ctx.found_list[-1]
    assert set(fp.streams) == streams_into
    assert fp.probes == float(ctx.sent[into].sum())
    # A second finding holds only what was claimed after the first.
    ctx.claim_all(ctx.crossing & (ctx.ingress == 7))  # nothing left there
    ctx.found(_finding(1))
    assert ctx.found_list[-1][1].streams == []


def test_footprints_over_several_claims_equal_those_of_whole_ledger_copies() -> None:
    """Between two findings rows are claimed more than once and some set aside: each
    footprint equals what the ledgers before and after it, copied whole, give."""
    ctx = _context()
    rng = np.random.default_rng(2)
    from_4 = ctx.src == 4
    steps: list[list[Callable[[], float]]] = [
        [
            lambda: ctx.claim_part(from_4, rng.random(ctx.table.rows)),
            lambda: ctx.claim_part(from_4 | (ctx.src == 5), rng.random(ctx.table.rows)),  # again, and more
            lambda: ctx.claim_count(np.flatnonzero(from_4 & (ctx.residual > 0))[:30].tolist(), 9.0),
        ],
        [
            lambda: ctx.set_aside(ctx.outside, np.full(ctx.table.rows, 0.5)),
            lambda: ctx.claim_all(ctx.outside | (ctx.crossing & (ctx.ingress == 7))),
        ],
        [lambda: ctx.claim_all(ctx.crossing & (ctx.ingress == 3))],
        [],
    ]
    n_streams = int(ctx._stream.max()) + 1
    stream_live = weighted_count(ctx._stream, ctx.live, n_streams)
    for k, claims in enumerate(steps):
        res, slow, live = ctx.residual.copy(), ctx.slow.copy(), ctx.live.copy()
        aside = np.zeros(ctx.table.rows)
        for claim in claims:
            before = ctx.residual.copy()
            claim()
            if claim is steps[1][0]:
                aside = before - ctx.residual  # not the finding's: no footprint holds it
        res, live = res - aside, live - aside
        stream_live -= weighted_count(ctx._stream, aside, n_streams)
        took = weighted_count(ctx._stream, live - ctx.live, n_streams)
        imp = weighted_count(ctx._stream, (res - ctx.residual) + (slow - ctx.slow), n_streams)
        owned = (took > 0) & (took >= 0.5 * stream_live)
        ctx.found(_finding(k))
        fp = ctx.found_list[-1][1]
        assert fp.streams == ctx.stream_keys(np.flatnonzero(owned))
        assert fp.probes == pytest.approx(float(took[owned].sum()), abs=1e-9)
        assert fp.impaired == pytest.approx(float(imp[owned].sum()), abs=1e-9)
        assert (k == 3) == (not fp.streams)  # every step but the last claimed something
        stream_live -= took


def test_stream_keys_are_stream_key_of_each() -> None:
    ctx = _context()
    streams = np.arange(int(ctx._stream.max()) + 1)
    assert ctx.stream_keys(streams) == [ctx.stream_key(int(i)) for i in streams]


@pytest.mark.parametrize("value", ["residual", "live"])
def test_first_sums_equal_fresh_ones_for_a_sparse_and_a_dense_value(value: str) -> None:
    # residual (failures) is 0 on most rows and summed over the others only; live is not.
    ctx = _context()
    values: FloatArray = getattr(ctx, value)
    assert (np.count_nonzero(values) < values.size // 4) == (value == "residual")
    n = ctx.n_nodes
    group = np.where(ctx.crossing, ctx.ingress, -1)
    sums = LedgerSums(ctx, {"in": (group, n)}, lambda r: values.copy() if r is None else values[r])
    fresh = weighted_count(ctx.ingress[ctx.crossing], values[ctx.crossing], n)
    assert fresh.sum() > 0
    np.testing.assert_array_equal(sums.read("in"), fresh)


def _streams_by_key(ctx: Context) -> None:
    """Rows share a stream id exactly when they share a stream key; an id's row is its first."""
    keys = [stream_key(ctx.table, row) for row in range(ctx.table.rows)]
    first: dict[StreamKey, int] = {}
    id_of: dict[StreamKey, int] = {}
    for row, (key, sid) in enumerate(zip(keys, ctx._stream.tolist(), strict=True)):
        first.setdefault(key, row)
        assert id_of.setdefault(key, sid) == sid
    assert len(set(id_of.values())) == len(id_of) == len(ctx._stream_row)
    for key, sid in id_of.items():
        assert ctx._stream_row[sid] == first[key]


def test_streams_are_runs_of_a_stores_table_and_found_by_key_in_any_other() -> None:
    ev = evidence(C12, rounds=6, faults=[], seed=4)
    table = ev.table
    assert table.stream_runs  # as Keys.table orders the rows
    _streams_by_key(Context(ev, DiagnosisPolicy()))
    # The same rows in another order: a stream is no longer a run, and is still one stream.
    order = np.random.default_rng(3).permutation(table.rows)
    columns = ("path", "proto", "src", "dst", "target", "target_ip", "counts", "latency_sum_s", "slow")
    shuffled = dataclasses.replace(
        table, stream_runs=False, latency_hist=None, **{c: getattr(table, c)[order] for c in columns}
    )
    ctx = Context(dataclasses.replace(ev, table=shuffled), DiagnosisPolicy())
    _streams_by_key(ctx)


def _old_hop_chances(ctx: Context, pairs: list[tuple[int, int]]) -> list[tuple[BoolArray, FloatArray]]:
    """The same chances worked out the plain way: a pass over every row per pair."""
    rows = ctx.table.rows
    sums = [(np.zeros(rows, dtype=np.bool_), np.zeros(rows)) for _ in range(3)]
    forwarded = kind_mask(ctx.tkind, TargetKind.NODEPORT) & ~ctx.own_nodeport
    nlb = kind_mask(ctx.tkind, TargetKind.NLB)
    for a, b in pairs:
        two = np.where(ctx.two_hop_nlb, ctx.entry_share_of(a) * ctx.share_of(b), 0.0)
        kinds = (
            (ctx.src == a, ctx.entry_share_of(b) + two),
            (forwarded & (ctx.ingress == a) & (ctx.src != a), ctx.share_of(b)),
            (nlb & (ctx.src != a) & (ctx.shares.group >= 0), ctx.entry_share_of(a) * ctx.share_of(b)),
        )
        for k, (m, q) in enumerate(kinds):
            sums[k][0][m] = True
            sums[k][1][m] += q[m]
    return sums


@pytest.mark.parametrize("traffic_policy", ["Local", "Cluster"])
def test_pair_blocked_hop_chances_equal_the_sum_over_pairs_row_by_row(traffic_policy: str) -> None:
    """pair-blocked claims a blocked group's balanced probes in one pass per kind of row,
    from per-node row lookups and per-group sums: the chances equal those of each pair on
    every row, added up (a star of pairs around one node, both ways, and a lone pair)."""
    cluster = Cluster(n_nodes=12, external_traffic_policy=traffic_policy)
    ctx = Context(evidence(cluster, rounds=4, seed=9), DiagnosisPolicy())
    pairs = [(0, x) for x in range(1, 9)] + [(x, 0) for x in (2, 5)] + [(10, 11)]
    pa = np.array([a for a, _ in pairs], dtype=np.int64)
    pb = np.array([b for _, b in pairs], dtype=np.int64)
    got = hop_chances(ctx, pa, pb)
    want = _old_hop_chances(ctx, pairs)
    assert ctx.two_hop_nlb.any() == (traffic_policy == "Cluster")
    for k, ((mask, p), (want_mask, want_p)) in enumerate(zip(got, want, strict=True)):
        # A NodePort forwards on only under Cluster (the second kind of row).
        assert (p > 0).any() == (k != 1 or traffic_policy == "Cluster")
        np.testing.assert_allclose(p, want_p, atol=1e-12)
        assert not (want_mask & ~mask & (want_p > 0)).any()


def test_rows_at_lists_each_nodes_rows_once_per_mention() -> None:
    ctx = _context()
    nodes = np.array([3, 0, 3, 11], dtype=np.int64)
    for rows, which, by in (
        (*ctx.rows_at("src", nodes), ctx.src),
        (*ctx.rows_at("ingress", nodes), ctx.ingress),
    ):
        for k, x in enumerate(nodes.tolist()):
            assert sorted(rows[which == k].tolist()) == np.flatnonzero(by == x).tolist()


@pytest.mark.parametrize("traffic_policy", ["Local", "Cluster"])
def test_node_shares_are_share_of_at_the_balanced_rows_and_nothing_elsewhere(traffic_policy: str) -> None:
    """A node's shares read at the rows a balancer decides (no pass over the window) are
    :meth:`Context.share_of` and :meth:`Context.through_share_of` there, and those are 0
    at every other row."""
    cluster = Cluster(n_nodes=12, external_traffic_policy=traffic_policy)
    ctx = Context(evidence(cluster, rounds=4, seed=9), DiagnosisPolicy())
    other = np.ones(ctx.table.rows, dtype=np.bool_)
    other[ctx.balanced_rows] = False
    assert other.any()
    assert not other.all()
    assert ctx.two_hop_nlb.any() == (traffic_policy == "Cluster")
    for x in (0, 5, 11):
        rows, share = ctx.node_shares(x)
        assert np.array_equal(share, ctx.share_of(x)[rows])
        assert (share > 0).any()
        assert not ctx.share_of(x)[other].any()
        rows, through = ctx.node_shares(x, through=True)
        np.testing.assert_allclose(through, ctx.through_share_of(x)[rows], atol=1e-15)
        assert not ctx.through_share_of(x)[other].any()


def test_claim_expected_at_row_numbers_is_claim_expected_of_the_mask() -> None:
    """The same expected-count claim, given as a mask over the window or as row numbers
    and their chances, leaves the same ledger."""
    by_mask, by_rows = _context(), _context()
    for x in (7, 2):
        share = by_mask.share_of(x)
        by_mask.claim_expected(by_mask.src != x, share)
        rows, at = by_rows.node_shares(x)
        others = by_rows.src[rows] != x
        by_rows.claim_expected_at(rows[others], at[others])
    assert by_mask.estimated.sum() > 0
    for name in ("residual", "live", "estimated", "slow"):
        np.testing.assert_allclose(getattr(by_rows, name), getattr(by_mask, name), atol=1e-12)


def test_a_diagnosis_leaves_no_reference_cycle_holding_its_per_row_arrays() -> None:
    """A context's kept-current sums refer back to it: the cycle would hold every per-row
    array until a full garbage collection, which counts objects, not bytes (gigabytes at
    1,000 nodes). Diagnosis empties the context when its rules are done."""
    c = Cluster(n_nodes=20)
    ev = evidence(
        c, rounds=6, faults=[Fault(kind="node-unreachable", nodes=(c.nodes[3],))], seed=1, recent_rounds=2
    )
    gc.collect()
    gc.disable()
    try:
        found = diagnose_window(ev)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, (Context, LedgerSums, np.ndarray))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert [(f.kind, f.nodes) for f, _ in found] == [(FindingKind.NODE_UNREACHABLE, [c.nodes[3]])]
    assert left == []


def _dense_shares(
    others: FloatArray,
    served: FloatArray,
    owner: IntArray,
    zone_of: IntArray,
    nlb: BoolArray,
    *,
    min_sure: int,
) -> FloatArray:
    """The rules of :class:`Spread`, group by group on dense rows: the reference."""
    g_count, n = others.shape
    zoned = zone_of >= 0
    every_zone_serves = set(zone_of[zoned].tolist()) <= set(
        zone_of[(others > 0).any(axis=0) & zoned].tolist()
    )
    share = np.zeros((g_count, n))
    for g in range(g_count):
        if owner[g] >= 0 and not ((served[g] > 0) & (np.arange(n) != owner[g])).any():
            share[g, owner[g]] = 1.0
            continue
        eligible = np.ones(n, dtype=np.bool_)
        zones = set(zone_of[others[g] > 0].tolist())
        if (
            nlb[g]
            and every_zone_serves
            and others[g].sum() >= min_sure
            and len(zones) == 1
            and -1 not in zones
        ):
            eligible = zone_of == zones.pop()
        share[g] = eligible / max(1, int(eligible.sum()))
    return share


@pytest.mark.parametrize("seed", range(40))
def test_a_spread_holds_each_groups_share_as_the_dense_rules_give_it(seed: int) -> None:
    """Random success counts over 4 zones (some nodes without one, some zones without a
    server), owners and NLB groups: three numbers a group give every (group, node) share."""
    rng = np.random.default_rng(seed)
    g_count, n = 12, 30
    zone_of = rng.integers(-1, 4, size=n)
    served = rng.integers(0, 4, size=(g_count, n)) * (rng.random((g_count, n)) < rng.random((g_count, 1)))
    restricted = rng.random(g_count) < 0.5  # successes from one zone only, as without cross-zone balancing
    served[restricted] *= zone_of == rng.integers(-1, 4, size=(int(restricted.sum()), 1))
    others = served - served * (rng.random((g_count, n)) < 0.2)
    owner = np.where(rng.random(g_count) < 0.4, rng.integers(0, n, size=g_count), -1)
    owner[owner >= 0] = np.where(rng.random(int((owner >= 0).sum())) < 0.5, owner[owner >= 0], -1)
    nlb = rng.random(g_count) < 0.6
    g, x = np.nonzero(served)
    counts = Counts(g, x, served[g, x].astype(float), g_count, n)
    spread = Spread.of(
        counts, others[counts.group, counts.node].astype(float), owner, zone_of, nlb, min_sure=3
    )
    want = _dense_shares(others.astype(float), served.astype(float), owner, zone_of, nlb, min_sure=3)
    assert np.allclose(spread.rows(np.arange(g_count)), want)
    picks = rng.integers(0, n, size=50), rng.integers(0, g_count, size=50)
    assert np.allclose(spread.at(picks[1], picks[0]), want[picks[1], picks[0]])
    for z in range(-1, 4):
        assert np.allclose(spread.within(zone_of == z), want[:, zone_of == z].sum(axis=1))
    assert np.allclose(counts.rows(np.array([3, 1, 3])), served[[3, 1, 3]])
