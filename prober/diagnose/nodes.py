"""Per-node inbound and outbound failure counts: the columns and rows of the matrix.

Shared by node-isolated and node-unreachable. Only probes whose destination node is
known before they are sent count (pod and host peers, a node's NodePort): a
balanced probe that failed has no serving node, so it cannot vote for a column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray, sorted_unique
from prober.diagnose.context import Context, frac, pct, weighted_count
from prober.diagnose.significance import bonferroni, log_binom_sf


@dataclass(frozen=True, slots=True, kw_only=True)
class Direction:
    """One direction (into or out of each node), summed over its peers."""

    sent: FloatArray
    failed: FloatArray
    peers: IntArray  # peers with at least one probe
    dead_peers: IntArray  # peers whose probes mostly failed (at least half)


def traffic(ctx: Context, mask: BoolArray | None = None) -> tuple[Direction, Direction]:
    """(inbound, outbound) over the residual, per node: of every crossing probe, or of ``mask``'s."""
    c = ctx.matrix_cells() if mask is None else ctx.cells(ctx.src, ctx.ingress, ctx.crossing & mask)
    return _direction(c.b, c.sent, c.failed, ctx.n_nodes), _direction(c.a, c.sent, c.failed, ctx.n_nodes)


def _direction(node: IntArray, sent: FloatArray, failed: FloatArray, n: int) -> Direction:
    """Cells' sums per ``node`` (each cell's node on one side), ``n`` nodes."""
    dead = (sent > 0) & (failed >= 0.5 * sent)
    return Direction(
        sent=weighted_count(node, sent, n),
        failed=weighted_count(node, failed, n),
        peers=np.bincount(node, minlength=n),
        dead_peers=np.bincount(node[dead], minlength=n),
    )


class Traffic:
    """:func:`traffic` of every crossing probe, kept current as rules claim rows.

    A node rule claims one node's rows per finding; a zone of dead nodes is hundreds of
    findings. After each, the cells whose rows changed add their change to their two
    nodes' sums (as :class:`~prober.diagnose.context.LedgerSums` keeps the cells).
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        c = ctx.matrix_cells()
        n = max(1, ctx.n_nodes)
        self._cursor = ctx.log_cursor()
        self._a, self._b, self._sent, self._failed = c.a, c.b, c.sent, c.failed
        self.inbound = _direction(c.b, c.sent, c.failed, n)
        self.outbound = _direction(c.a, c.sent, c.failed, n)

    def current(self) -> tuple[Direction, Direction]:
        """(inbound, outbound) as :func:`traffic` would give them now."""
        ctx = self._ctx
        rows, self._cursor = ctx.changed_since(self._cursor)
        cells = ctx.matrix_cells_of(rows)
        cells = sorted_unique(cells[cells >= 0])
        if cells.size:
            sent, failed = ctx.matrix_cell_sums(cells)
            was_sent, was_failed = self._sent[cells], self._failed[cells]
            self._sent[cells], self._failed[cells] = sent, failed
            dead = ((sent > 0) & (failed >= 0.5 * sent)).astype(np.int64)
            was_dead = ((was_sent > 0) & (was_failed >= 0.5 * was_sent)).astype(np.int64)
            for d, node in ((self.inbound, self._b[cells]), (self.outbound, self._a[cells])):
                np.add.at(d.sent, node, sent - was_sent)
                np.add.at(d.failed, node, failed - was_failed)
                np.add.at(d.dead_peers, node, dead - was_dead)
                # Adding and taking away fractions of probes leaves rounding dust where a
                # sum is empty again: it is nothing.
                for total in (d.sent, d.failed):
                    total[np.abs(total) < 1e-9] = 0.0
        return self.inbound, self.outbound


def dead_candidates(ctx: Context, d: Direction, ratio: float | None = None) -> IntArray:
    """The nodes whose direction :func:`dead_log_p` may call dead: its counting tests, all
    nodes at once (the significance test runs for these only)."""
    pol = ctx.policy
    need = min(pol.min_sources, max(1, ctx.n_nodes - 1))
    r = pol.dead_ratio if ratio is None else ratio
    ok = (d.failed > 0) & (d.sent >= pol.min_samples) & (d.failed >= r * d.sent)
    result: IntArray = np.flatnonzero(ok & (d.dead_peers >= need))
    return result


def dead_log_p(ctx: Context, d: Direction, x: int, ratio: float | None = None) -> float | None:
    """Corrected log p-value that node ``x``'s direction is dead (fails at ``ratio``, by
    default ``dead_ratio``), or None if it is not."""
    pol = ctx.policy
    sent, failed = float(d.sent[x]), float(d.failed[x])
    need = min(pol.min_sources, max(1, ctx.n_nodes - 1))
    r = pol.dead_ratio if ratio is None else ratio
    if sent < pol.min_samples or failed < r * sent or int(d.dead_peers[x]) < need:
        return None
    lp = bonferroni(log_binom_sf(math.floor(failed), sent, pol.background_failure_rate), ctx.n_nodes)
    return lp if lp <= math.log(pol.alpha) else None


def describe(d: Direction, x: int, *, into: bool) -> str:
    peers = f"{'from' if into else 'to'} {int(d.dead_peers[x])} of {int(d.peers[x])} nodes"
    what = "inbound" if into else "outbound"
    return f"{what} {frac(d.failed[x], d.sent[x])} probes failed ({pct(d.failed[x], d.sent[x])}, {peers})"
