"""Per-node inbound and outbound failure counts: the columns and rows of the matrix.

Shared by node-isolated and node-unreachable. Only probes whose destination node is
known before they are sent count (pod and host peers, a node's NodePort): a
balanced probe that failed has no serving node, so it cannot vote for a column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray
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
    n = ctx.n_nodes
    dead = (c.sent > 0) & (c.failed >= 0.5 * c.sent)

    def direction(node: IntArray) -> Direction:
        return Direction(
            sent=weighted_count(node, c.sent, n),
            failed=weighted_count(node, c.failed, n),
            peers=np.bincount(node, minlength=n),
            dead_peers=np.bincount(node[dead], minlength=n),
        )

    return direction(c.b), direction(c.a)


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
