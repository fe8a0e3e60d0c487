"""packet-loss: a node that loses a share of the packets through it — partial rates on everything touching it.

A probe is *impaired* when it timed out or when its TCP handshake needed a SYN
retransmit (the 1 s and 3 s latency bins): a lossy link turns many losses into
slow successes rather than failures. (Refused or reset probes reached a host that
answered: not loss.) For each node X the impaired share of every
probe into or out of X is compared with the rest of the cluster:

* the rest of the cluster: probes not touching X whose far end is known (peers,
  outside targets; a failed Service probe might have gone to X);
* the background is estimated from the window, per path: the rest of the
  cluster's impaired rate on each path X probes (pulled toward the policy's
  ``background_failure_rate`` while the window is small), weighted by X's probes on
  it;
* X's impaired share is at least ``loss_ratio`` times the larger of that background
  and the rest's share, and at least ``min_loss_floor``; spread over at least
  ``min_sources`` peers and still lossy without its most impaired peer (a single
  lossy pair is not a lossy node), into it as well as out of it, and over both of
  its networks (probes into its pod agent and into its host agent);
* significant above the background (exact binomial tail) and above the rest
  (one-sided Fisher exact test), the weaker counting, Bonferroni over nodes. So the
  threshold follows the sample size: few probes need heavy loss, many name 1%.

Greedy, like 007/NetBouncer's voting: the node with the largest likelihood ratio is
named and its probes claimed, then the rest re-tested — the peers of a lossy node,
whose probes to it fail too, are explained away instead of named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from prober.arrays import BoolArray, FloatArray, Int32Array, IntArray
from prober.diagnose.context import Context, LedgerSums, count, frac, pct, reaches
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.significance import bonferroni, log_binom_sf, log_excess
from prober.model import PATHS, Finding, FindingKind, TargetKind


def _llr(k: float, n: float, p: float) -> float:
    r = min(max(k / n, 1e-12), 1 - 1e-12)
    return k * math.log(r / p) + (n - k) * math.log((1 - r) / (1 - p))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Touching:
    """Impaired and live probes into and out of every node, over the residue."""

    in_n: FloatArray
    in_i: FloatArray
    out_n: FloatArray
    out_i: FloatArray
    known_n: FloatArray  # per node: its probes with a known far end (peers, outside targets)
    known_i: FloatArray
    all_n: float  # every probe with a known far end
    all_i: float
    peers: IntArray  # peers each node exchanged probes with
    impaired_peers: IntArray  # ... of which some were impaired
    top_peer_n: FloatArray  # probes with the node's most impaired peer, both ways
    top_peer_i: FloatArray

    @property
    def n(self) -> FloatArray:
        result: FloatArray = self.in_n + self.out_n
        return result

    @property
    def i(self) -> FloatArray:
        result: FloatArray = self.in_i + self.out_i
        return result


def _base(ctx: Context) -> BoolArray:
    """Probes with a known path through their source: peers, outside targets, balanced."""
    result: BoolArray = ctx.crossing | ctx.outside | (ctx.balanced & ~ctx.same_node)
    return result


def _impaired(ctx: Context) -> FloatArray:
    """Per row: residual probes lost the way loss loses them — timed out, or slow after a SYN retransmit.

    A refused or reset probe reached a host that answered: that is not a lost packet.
    """
    result: FloatArray = np.minimum(ctx.residual, ctx.timeouts) + ctx.slow
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class _Sums:
    """The rule's per-node, per-pair and per-path sums of live and impaired probes, kept
    current as findings claim probes (:class:`LedgerSums`): the rule reads them after
    each finding, and summing the window's rows each time was most of its cost when
    many nodes lose packets."""

    live: LedgerSums
    imp: LedgerSums
    pair_keys: IntArray
    n: int  # nodes
    size: int  # paths

    def read(self, name: str) -> tuple[FloatArray, FloatArray]:
        derived = _DERIVED.get(name)
        if derived is None:
            return self.live.read(name), self.imp.read(name)
        finer, axis = derived
        live, imp = (
            np.asarray(v.reshape(self.n, self.size).sum(axis=axis), dtype=np.float64).reshape(-1)
            for v in (self.live.read(finer), self.imp.read(finer))
        )
        return live, imp


#: Sums read from a finer grouping over the same rows (per node and path): per node
#: (axis 1), per path (axis 0) or in all (None). Not kept apart: each grouping kept
#: is a pass over the window's rows, and again for the rows each finding claims.
_DERIVED: Final[dict[str, tuple[str, int | None]]] = {
    "in": ("path_in", 1),
    "out": ("path_out", 1),
    "known_out": ("path_known_out", 1),
    "path": ("path_known_out", 0),
    "all": ("path_known_out", None),
}


def _sums(ctx: Context) -> _Sums:
    got = ctx.memo.get("packet-loss")
    if isinstance(got, _Sums):
        return got
    n, size = max(1, ctx.n_nodes), len(PATHS)
    base, cross = _base(ctx), ctx.crossing
    known = cross | ctx.outside
    path = ctx.table.path
    pair_keys, inv = ctx.crossing_pairs
    m = int(cross.sum())
    fwd = np.full(ctx.table.rows, -1, dtype=np.int32)
    rev = np.full(ctx.table.rows, -1, dtype=np.int32)
    fwd[cross], rev[cross] = inv[:m], inv[m:]
    peer_kind = np.where(ctx.of_kind(TargetKind.POD), 0, np.where(ctx.of_kind(TargetKind.HOST), 1, -1))

    # Each grouping is a column of the window's rows, in int32 (every index is far below
    # 2**31), made one at a time: six int64 columns would be ~50 bytes a row at once.
    def col(where: BoolArray, group: IntArray | int) -> Int32Array:
        result: Int32Array = np.where(where, group, -1).astype(np.int32)
        return result

    groups: dict[str, tuple[Int32Array, int]] = {  # and those of _DERIVED
        "pair_fwd": (fwd, len(pair_keys)),
        "pair_rev": (rev, len(pair_keys)),
        "path_known_out": (col(known, ctx.src * size + path), n * size),
        "path_in": (col(cross, ctx.ingress * size + path), n * size),
        "path_out": (col(base, ctx.src * size + path), n * size),
        "in_by_network": (col(cross & (peer_kind >= 0), ctx.ingress * 2 + peer_kind), 2 * n),
    }

    def live(rows: IntArray | None) -> FloatArray:
        return ctx.live.copy() if rows is None else ctx.live[rows]

    def imp(rows: IntArray | None) -> FloatArray:
        if rows is None:
            return _impaired(ctx)
        result: FloatArray = np.minimum(ctx.residual[rows], ctx.timeouts[rows]) + ctx.slow[rows]
        return result

    sums = _Sums(
        live=LedgerSums(ctx, groups, live),
        imp=LedgerSums(ctx, groups, imp),
        pair_keys=pair_keys,
        n=n,
        size=size,
    )
    ctx.memo["packet-loss"] = sums
    return sums


def _both_networks(ctx: Context, x: int, by_network: tuple[FloatArray, FloatArray]) -> bool:
    """Loss at a node hits its pod and host networks alike; one network alone is not the node."""
    live, imp = by_network
    rates = []
    for k in (0, 1):  # pod, host targets
        n = float(live[2 * x + k])
        if n >= ctx.policy.min_samples:
            rates.append(float(imp[2 * x + k]) / n)
    return len(rates) < 2 or min(rates) >= 0.25 * max(rates)


def _touching(ctx: Context) -> _Touching:
    sums = _sums(ctx)
    # Per (node, peer), both directions: probes and impaired probes between them.
    n = max(1, ctx.n_nodes)
    pair_keys = sums.pair_keys
    fwd_n, fwd_i = sums.read("pair_fwd")
    rev_n, rev_i = sums.read("pair_rev")
    pair_n, pair_i = fwd_n + rev_n, fwd_i + rev_i
    node = pair_keys // n
    top = np.zeros(ctx.n_nodes, dtype=np.int64) - 1
    order = np.lexsort((pair_i, node))  # per node, the most impaired peer last
    runs = node[order]
    last = np.flatnonzero(np.r_[runs[1:] != runs[:-1], True]) if runs.size else runs
    top[runs[last]] = order[last]
    has = top >= 0
    if pair_keys.size:
        top_i = np.where(has, pair_i[np.maximum(top, 0)], 0.0)
        top_n = np.where(has, pair_n[np.maximum(top, 0)], 0.0)
    else:  # no probe crossed between nodes (e.g. only same-node Service probes so far)
        top_i = top_n = np.zeros(ctx.n_nodes, dtype=np.float64)
    in_n, in_i = sums.read("in")
    out_n, out_i = sums.read("out")
    known_out_n, known_out_i = sums.read("known_out")
    all_n, all_i = sums.read("all")
    return _Touching(
        in_n=in_n,
        in_i=in_i,
        out_n=out_n,
        out_i=out_i,
        known_n=known_out_n + in_n,
        known_i=known_out_i + in_i,
        all_n=float(all_n.sum()),
        all_i=float(all_i.sum()),
        peers=np.bincount(node, minlength=ctx.n_nodes),
        impaired_peers=np.bincount(node[pair_i > 0], minlength=ctx.n_nodes),
        top_peer_n=top_n,
        top_peer_i=top_i,
    )


def _backgrounds(ctx: Context) -> FloatArray:
    """Per node: the impaired share expected of the probes touching it were it healthy.

    Per path, the rate of the rest of the cluster's probes with a known far end (every
    one but the node's own), pulled toward the policy's ``background_failure_rate`` by
    ``background_prior_probes`` pseudo-probes (a small window says little), weighted by
    how many probes of each path touch the node: DNS or outside targets fail more often
    than a pod next door, and a node's mix of paths is its own.
    """
    pol = ctx.policy
    n, size = max(1, ctx.n_nodes), len(PATHS)
    sums = _sums(ctx)
    known_out_n, known_out_i = sums.read("path_known_out")
    in_n, in_i = sums.read("path_in")
    # A node's known probes: those it sent (to peers or outside) and those into it.
    own_n = (known_out_n + in_n).reshape(n, size)
    own_i = (known_out_i + in_i).reshape(n, size)
    total_n, total_i = sums.read("path")
    prior = pol.background_prior_probes
    rate = (total_i[None, :] - own_i + prior * pol.background_failure_rate) / (
        np.maximum(total_n[None, :] - own_n, 0.0) + prior
    )
    mine = (sums.live.read("path_out") + in_n).reshape(n, size)
    weight = mine.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        result: FloatArray = np.where(
            weight > 0, (mine * rate).sum(axis=1) / np.maximum(weight, 1e-300), pol.background_failure_rate
        )
    return result


def _strongest(ctx: Context, t: _Touching) -> tuple[int, float, float] | None:
    """(node, corrected log p, reference rate) of the lossiest significant node, or None."""
    pol = ctx.policy
    n, imp = t.n, t.i
    backgrounds = _backgrounds(ctx)
    by_network = _sums(ctx).read("in_by_network")
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(n > 0, imp / np.maximum(n, 1e-300), 0.0)
    best: tuple[float, int, float, float] | None = None
    for x in np.flatnonzero((n >= pol.min_samples) & (rate >= pol.min_loss_floor)).tolist():
        rest_n, rest_i = t.all_n - t.known_n[x], t.all_i - t.known_i[x]
        p_bg = float(backgrounds[x])
        p_ref = max(p_bg, rest_i / rest_n if rest_n > 0 else 0.0)
        threshold = max(pol.loss_ratio * p_ref, pol.min_loss_floor)
        if rate[x] < threshold:
            continue
        if int(t.impaired_peers[x]) < max(1, min(pol.min_sources, int(t.peers[x]))):
            continue  # one lossy pair is not a lossy node
        # ... nor is one bad pair with a little noise elsewhere: without its most impaired
        # peer the node must still lose above the threshold, significantly above background.
        # (at half its overall rate at least: a lossy node loses alike on every path).
        left_n, left_i = n[x] - t.top_peer_n[x], imp[x] - t.top_peer_i[x]
        if left_n <= 0 or left_i < max(threshold, 0.5 * rate[x]) * left_n:
            continue
        # Loss through a node impairs the probes into it as well as those out of it (a
        # handshake, an echo, needs both directions): failures of its outbound probes
        # alone are a fault of what it probes.
        if t.in_i[x] < 0.25 * rate[x] * t.in_n[x]:
            continue
        if log_binom_sf(math.floor(left_i), left_n, p_bg) > math.log(0.05):
            continue
        if not _both_networks(ctx, x, by_network):
            continue
        # Above the background, and above the rest of the cluster (one-sided Fisher exact).
        lp_bg = log_binom_sf(math.floor(imp[x]), n[x], p_bg)
        lp_rest = log_excess(imp[x], n[x], rest_i, rest_n) if rest_n > 0 else 0.0
        lp = bonferroni(max(lp_bg, lp_rest), ctx.n_nodes)
        if lp > math.log(pol.alpha):
            continue
        llr = _llr(float(imp[x]), float(n[x]), p_ref)
        if best is None or llr > best[0]:
            best = (llr, x, lp, p_ref)
    return None if best is None else best[1:]


def _loss_itself(ctx: Context, touching: BoolArray, retrans: float) -> bool:
    """Whether the node's own probes show partial loss rather than the onset of a fault
    that drops everything: its successes after a TCP SYN retransmit are significantly
    more than the rest of the cluster's share of them (and the background) gives,
    Bonferroni over nodes.

    Over a window that still holds a node's healthy probes from before, the first
    seconds of a node's, a pair's or a path's fault read as partial loss; they time out
    and never retry through. Loss drops some of a handshake's packets and lets its
    retries (at 1 s and 3 s) through: such a finding is settled
    (:attr:`~prober.diagnose.context.Footprint.settled`), shown without the catch-alls'
    hold (:mod:`prober.diagnose.confirm`).
    """
    pol = ctx.policy
    tcp = ctx.tcp & _base(ctx)  # the probes with a known path (``touching`` is of them)
    n_x = float(ctx.live[touching & tcp].sum())
    rest = tcp & ~touching
    rest_n, rest_slow = float(ctx.live[rest].sum()), float(ctx.slow[rest].sum())
    p = max(pol.background_failure_rate, rest_slow / rest_n if rest_n > 0 else 0.0)
    return n_x > 0 and bonferroni(log_binom_sf(retrans, n_x, p), ctx.n_nodes) <= math.log(pol.alpha)


def detect(ctx: Context) -> list[Finding]:
    try:
        return _detect(ctx)
    finally:
        # The rule's sums are its own: about 125 bytes a row, dropped before the next rule.
        ctx.memo.pop("packet-loss", None)


def _could_lose(ctx: Context) -> bool:
    """Whether any node could be a candidate of :func:`_strongest` (at least ``min_samples``
    probes touching it, ``min_loss_floor`` of them impaired), from four sums a node over
    every row: a healthy window (most of them) skips the rule's per-pair and per-path sums,
    a dozen passes over the rows."""
    pol, base, cross = ctx.policy, _base(ctx), ctx.crossing
    live, imp = ctx.live, _impaired(ctx)
    probes = ctx.by_node(ctx.src, live, base) + ctx.by_node(ctx.ingress, live, cross)
    impaired = ctx.by_node(ctx.src, imp, base) + ctx.by_node(ctx.ingress, imp, cross)
    return bool((reaches(probes, 1.0, pol.min_samples) & reaches(impaired, pol.min_loss_floor, probes)).any())


def _detect(ctx: Context) -> list[Finding]:
    pol = ctx.policy
    base, cross = _base(ctx), ctx.crossing
    findings: list[Finding] = []
    if not _could_lose(ctx):
        return findings
    for _ in range(ctx.n_nodes):
        t = _touching(ctx)
        pick = _strongest(ctx, t)
        if pick is None:
            break
        x, lp, _ = pick
        name = ctx.nodes[x]
        n_x, i_x = float(t.n[x]), float(t.i[x])
        rest_n, rest_i = t.all_n - t.known_n[x], t.all_i - t.known_i[x]
        touching = (base & (ctx.src == x)) | (cross & (ctx.ingress == x))
        retrans = float(ctx.slow[touching].sum())
        in_f = float(ctx.residual[cross & (ctx.ingress == x)].sum())
        r_in = t.in_i[x] / t.in_n[x] if t.in_n[x] else 0.0
        r_out = t.out_i[x] / t.out_n[x] if t.out_n[x] else 0.0
        if r_in >= pol.min_loss_rate and r_out >= pol.min_loss_rate:
            direction = "inbound and outbound"
        else:
            direction = "inbound" if r_in >= r_out else "outbound"
        evidence = (
            f"probes touching {name}: {frac(i_x, n_x)} timed out or needed a TCP SYN retransmit "
            f"({pct(i_x, n_x)}; rest of the cluster {pct(rest_i, rest_n)}); inbound "
            f"{frac(t.in_i[x], t.in_n[x])} ({pct(t.in_i[x], t.in_n[x])}) from {int(t.impaired_peers[x])} "
            f"of {int(t.peers[x])} peers, outbound {frac(t.out_i[x], t.out_n[x])} "
            f"({pct(t.out_i[x], t.out_n[x])}); {count(retrans)} of the impaired probes succeeded "
            "after a retransmit"
        )
        served_by_x = ctx.balanced & ctx.node_dst & (ctx.dst == x)
        paths = ctx.paths_in(touching)
        settled = _loss_itself(ctx, touching, retrans)
        phi_in = in_f / t.in_n[x] if t.in_n[x] else 0.0
        ctx.claim_all(touching | served_by_x)
        ctx.claim_expected(ctx.src != x, ctx.share_of(x) * phi_in)
        rate = i_x / n_x
        findings.append(
            MODE.finding(
                ctx,
                nodes=[name],
                paths=paths,
                log_p=lp,
                evidence=evidence,
                severity="critical" if rate >= 0.2 else None,
                settled=settled,
                direction=direction,
            )
        )
    return findings


MODE = FailureMode(
    kind=FindingKind.PACKET_LOSS,
    detect=detect,
    severity="warning",  # critical from a fifth of the probes impaired
    summary="A share of probes involving {node} is lost (partial, not total, failure).",
    remediation="Packets through {node} are being lost ({direction}). Check its interface error and drop "
    "counters (`ip -s link`; `ethtool -S`: drops, *_allowance_exceeded on ENA), `nstat`/`netstat -s` for "
    "retransmits, conntrack table pressure (`nf_conntrack: table full` in dmesg, `conntrack -S`, "
    "nf_conntrack_max), CPU softirq saturation, and MTU mismatches on its path; cordon and drain the "
    "node if it persists.",
    alert_fills={"direction": "in one or both directions"},
    alert=AlertSpec(name="ProberPacketLoss", severity="warning"),
    slow=True,
    replaceable=True,
    provisional=True,
    lab_fault=LabFault(
        usage="packet-loss@NODE:RATE",
        arity=Arity.ONE_OR_MORE,
        takes_rate=True,
        what="each packet to or from NODE dropped with probability RATE (0.1 or 10%) at the fabric "
        "(iptables statistic: this lab needs no netem)",
        production="a lossy link, a failing NIC or an overloaded conntrack/NAT device",
    ),
)
