"""The diagnosis context's kept-current bookkeeping equals the same sums worked out afresh.

Rules claim probes one finding at a time and re-read their sums after each: the
context keeps the matrix cells, :class:`LedgerSums` and each finding's footprint
current from the rows claimed since, instead of re-summing the window. After any
sequence of claims, each must equal what a pass over every row gives.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from prober.diagnose import DiagnosisPolicy
from prober.diagnose.context import Context, LedgerSums, weighted_count
from prober.model import Finding, FindingKind
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
        np.where(ctx.crossing, ctx.src, -1),
        n,
        lambda r: ctx.residual.copy() if r is None else ctx.residual[r],
    )
    ctx.matrix_cells()  # the matrix sums start here, before any claim
    claims: list[Callable[[], float]] = [
        lambda: ctx.claim_all(ctx.crossing & (ctx.ingress == 3)),
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
        np.testing.assert_allclose(by_src.read(), fresh, atol=1e-9)
        cells = ctx.matrix_cells()
        key = ctx.src[ctx.crossing] * n + ctx.ingress[ctx.crossing]
        uniq, inv = np.unique(key, return_inverse=True)
        assert np.array_equal(cells.a * n + cells.b, uniq)
        for got, values in ((cells.sent, ctx.live), (cells.failed, ctx.residual), (cells.slow, ctx.slow)):
            np.testing.assert_allclose(
                got, weighted_count(inv.reshape(-1), values[ctx.crossing], len(uniq)), atol=1e-9
            )
        ctx.found(_finding(k))


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


def test_stream_keys_are_stream_key_of_each() -> None:
    ctx = _context()
    streams = np.arange(int(ctx._stream.max()) + 1)
    assert ctx.stream_keys(streams) == [ctx.stream_key(int(i)) for i in streams]
