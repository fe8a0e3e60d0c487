"""pair-blocked: one cell of the matrix is dead — a security group, NACL or MTU between two nodes.

Test: a (source node, destination node) cell, over every peer path and protocol,
fails at ``dead_ratio`` or more with at least ``min_samples`` probes, significant
against the background rate (exact binomial tail, Bonferroni over every probed
cell). Runs after the node rules, on their residue: a dead column is one
node-unreachable, never N blocked pairs. Both nodes of a blocked pair must work with
the others, and their zones with each other: a node whose other cells fail at half the
dead ratio or more is failing as a whole, two zones whose other cells between them fail
so are cut off (a node or zone fault's onset), and those pairs are left to the node and
zone rules.

Blocked cells that share a node are one finding (one rule, one root cause: a
zone-to-zone NACL blocks a whole bipartite set of pairs); unrelated blocked pairs
are separate findings. Confidence is that of the weakest cell.

At N nodes with k peers probed per round a given pair is probed once every
ceil((N-1)/k) rounds: no statistic can see a pair faster than the schedule visits it.
Then a cell holds one visit, and the first peers to probe a node after it died read as
blocked pairs until more have: as a star of them (confirmation holds those back) where
a node gets :data:`STAR_PAIRS` visits or more in the time a pass takes to come round,
else as a pair or two. A finding with a node whose window holds fewer than half its
peers and fewer than twice that many visits a pass is marked unsettled
(:attr:`~prober.diagnose.context.Footprint.unsettled`) and confirmation holds it back
the same way, until the node's other peers have had their say; so is one whose nodes'
other probes fail significantly above the background (a zone cut off, in its first
seconds, where one peer group's probes started together and failed before the zone's
other cells had been probed since).
"""

from __future__ import annotations

import math
from typing import Final, Literal

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray, unique_keys
from prober.diagnose.context import Cells, Context, frac, join_limited, pct, weighted_count
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.significance import bonferroni, log_binom_sf
from prober.model import Finding, FindingKind, TargetKind


def _components(pairs: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        parent.setdefault(i, i)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, list[tuple[int, int]]] = {}
    for a, b in pairs:
        groups.setdefault(find(a), []).append((a, b))
    return list(groups.values())


def _part_of_wider(
    ctx: Context, c: Cells, blocked: dict[tuple[int, int], tuple[float, float, float]], tests: int
) -> set[tuple[int, int]]:
    """The blocked pairs that are part of a wider failure: a node of the pair whose other
    cells in one direction (to it, or from it), or the pair's two zones whose other
    cells between them, fail together at half the dead ratio or more, significantly
    against the background. Sums by node and by zone pair, then a lookup per pair."""
    pol = ctx.policy

    def failing(f: float, n: float) -> bool:
        if n < pol.min_samples or f < 0.5 * pol.dead_ratio * n:
            return False
        lp = bonferroni(log_binom_sf(math.floor(f), n, pol.background_failure_rate), tests)
        return lp <= math.log(pol.alpha)

    pairs = zip(c.a.tolist(), c.b.tolist(), strict=True)
    free = ~np.array([p in blocked for p in pairs], dtype=np.bool_)
    fa, fb = c.a[free], c.b[free]
    f_free, n_free = c.failed[free].astype(np.float64), c.sent[free].astype(np.float64)
    n = ctx.n_nodes
    by_node = [
        (np.bincount(side, weights=f_free, minlength=n), np.bincount(side, weights=n_free, minlength=n))
        for side in (fa, fb)
    ]
    zones = [ctx.evidence.topology.zone(x) for x in ctx.nodes]
    index = {z: i for i, z in enumerate(sorted(set(zones)))}
    zone: IntArray = np.array([index[z] for z in zones], dtype=np.int64)
    nz = len(index)
    za, zb = zone[fa], zone[fb]
    code = np.minimum(za, zb) * nz + np.maximum(za, zb)
    zf = np.bincount(code, weights=f_free, minlength=nz * nz)
    zn = np.bincount(code, weights=n_free, minlength=nz * nz)
    nodes = {x for pair in blocked for x in pair}
    whole = {x for x in nodes if any(failing(float(f[x]), float(s[x])) for f, s in by_node)}
    out: set[tuple[int, int]] = set()
    for a, b in blocked:
        if a in whole or b in whole:
            out.add((a, b))
        elif zones[a] and zones[b] and zones[a] != zones[b]:
            k = min(zone[a], zone[b]) * nz + max(zone[a], zone[b])
            if failing(float(zf[k]), float(zn[k])):
                out.add((a, b))
    return out


#: Blocked pairs with a common node from which confirmation takes them for a node fault's
#: onset (a star) and holds them back (:mod:`prober.diagnose.confirm`).
STAR_PAIRS: Final = 3
#: The collector's passes come this often (its ``refresh_s``): the first pass after a
#: node's fault began reads the visits of it in about this long.
_PASS_S: Final = 5.0

#: Which end of a row a node is, and the other end's column.
_Side = tuple[Literal["src", "ingress"], IntArray]


def _unsettled(ctx: Context, members: IntArray) -> bool:
    """Could this group be the onset of a fault of one of its nodes, ``members``? Where a
    node's cells hold one visit each (fewer than half its peers probed it, or were
    probed by it, in the window) and it gets fewer than twice :data:`STAR_PAIRS` visits
    a pass on average (the visits of one pass vary: from 6 on average a pass reads
    fewer than 3 one time in 16), the first peers to probe it after it died read as a
    pair or two, not a star."""
    peer = ctx.of_kind(TargetKind.POD, TargetKind.HOST) & ctx.crossing
    n = ctx.n_nodes
    per_pass = _PASS_S / max(ctx.table.window_s, _PASS_S)
    sides: tuple[_Side, ...] = (("ingress", ctx.src), ("src", ctx.ingress))
    for key, other in sides:
        r, k = ctx.rows_at(key, members)
        keep = peer[r]
        seen = unique_keys(k[keep] * n + other[r[keep]], members.size * n)[0] // n
        visitors = np.bincount(seen, minlength=members.size)
        if np.any((visitors < 0.5 * (n - 1)) & (visitors * per_pass < 2 * STAR_PAIRS)):
            return True
    return False


def hop_chances(ctx: Context, pa: IntArray, pb: IntArray) -> list[tuple[BoolArray, FloatArray]]:
    """Per row, the chance a load-balanced probe took a blocked hop ``pa[k] -> pb[k]``:
    (rows, chance) for the probes from A, those of a NodePort forwarded on at A, and the NLB's.

    From A: the balancer picking B, or (an NLB whose probes take two hops) the NLB
    entering A itself and A forwarding to B. A NodePort that forwards on
    (externalTrafficPolicy: Cluster) makes a third node's probe of A's NodePort take the
    hop A -> B as often as A picks B (never under Local): those failures are the pair's,
    not the third node's. Likewise an NLB that enters at A and is forwarded to B, as
    often as it picks A and A picks B (an NLB probe has no known entry node: its shares
    stand in). Each chance is summed over the pairs a row can cross, by lookups of the
    pairs' rows and per server group: a node blocked from hundreds of peers costs a pass
    over its own rows, not one over the table per pair.
    """
    rows = ctx.table.rows
    n = max(1, ctx.n_nodes)
    out: list[tuple[BoolArray, FloatArray]] = []

    def add(r: IntArray, p_fail: FloatArray) -> None:
        mask = np.zeros(rows, dtype=np.bool_)
        mask[r] = True
        out.append((mask, weighted_count(r, p_fail, rows)))

    r, k = ctx.rows_at("src", pa)
    a, b = pa[k], pb[k]
    hop = ctx.two_hop_nlb[r]
    first = ctx.shares_at(r, b, entry=True)
    first[hop] += ctx.shares_at(r[hop], a[hop], entry=True) * ctx.shares_at(r[hop], b[hop])
    add(r, first)

    forwarded = ctx.of_kind(TargetKind.NODEPORT) & ~ctx.own_nodeport
    r, k = ctx.rows_at("ingress", pa)
    keep = forwarded[r] & (ctx.src[r] != pa[k])
    add(r[keep], ctx.shares_at(r[keep], pb[k[keep]]))

    # NLB rows, per server group: the sum over pairs of P(enter A) x P(A picks B), less
    # the pairs whose A is the row's own source (counted with the probes from A).
    nlb = np.flatnonzero(ctx.of_kind(TargetKind.NLB) & (ctx.shares.group >= 0))
    groups = ctx.shares.group[nlb]
    p = np.zeros(nlb.size, dtype=np.float64)
    everyone = np.arange(n, dtype=np.int64)
    for g in np.unique(groups).tolist():
        at = np.flatnonzero(groups == g)
        enter = ctx.shares_at(np.full(n, nlb[at[0]], dtype=np.int64), everyone, entry=True)
        # Per A: P(A picks a B cut off).
        cut = np.bincount(pa, ctx.shares.share.at(np.full(pb.size, g), pb), minlength=n)
        src = ctx.src[nlb[at]]
        p[at] = float((enter * cut).sum()) - enter[src] * cut[src]
    add(nlb, np.maximum(p, 0.0))
    return out


def detect(ctx: Context) -> list[Finding]:
    pol = ctx.policy
    c = ctx.matrix_cells()
    tests = int((c.sent > 0).sum())
    candidates = np.flatnonzero((c.sent >= pol.min_samples) & (c.failed >= pol.dead_ratio * c.sent))
    blocked: dict[tuple[int, int], tuple[float, float, float]] = {}
    for i in candidates.tolist():
        lp = bonferroni(log_binom_sf(math.floor(c.failed[i]), c.sent[i], pol.background_failure_rate), tests)
        if lp <= math.log(pol.alpha):
            blocked[(int(c.a[i]), int(c.b[i]))] = (float(c.failed[i]), float(c.sent[i]), lp)
    if not blocked:
        return []

    # A blocked pair's nodes work with every other node. A node whose other cells fail
    # too (at half the dead ratio or more, significantly) is failing as a whole, and two
    # zones whose other cells between them fail are cut off: the onset of a node or zone
    # fault, seen in a tail whose first probes of some cells still succeeded. Those
    # pairs are not pair-blocked; the node and zone rules name the fault once the tail
    # holds only it.
    wider = _part_of_wider(ctx, c, blocked, tests)
    blocked = {p: v for p, v in blocked.items() if p not in wider}
    if not blocked:
        return []

    groups = _components(sorted(blocked))
    groups.sort(key=lambda g: sorted({ctx.nodes[x] for pair in g for x in pair}))
    findings: list[Finding] = []
    n = max(1, ctx.n_nodes)
    for group in groups:
        names = sorted({ctx.nodes[x] for pair in group for x in pair})
        members = np.array(sorted({x for pair in group for x in pair}), dtype=np.int64)
        pa = np.array([a for a, _ in group], dtype=np.int64)
        pb = np.array([b for _, b in group], dtype=np.int64)
        in_cells = ctx.crossing & np.isin(ctx.src * n + ctx.ingress, pa * n + pb)
        touching = ctx.crossing & (np.isin(ctx.src, members) | np.isin(ctx.ingress, members))
        others = touching & ~in_cells
        parts = []
        for a, b in sorted(group, key=lambda p: (ctx.nodes[p[0]], ctx.nodes[p[1]])):
            f, sent, _ = blocked[(a, b)]
            parts.append(f"{ctx.nodes[a]} -> {ctx.nodes[b]}: {frac(f, sent)} failed")
        rest_f, rest_n = float(ctx.residual[others].sum()), float(ctx.live[others].sum())
        # The nodes' other probes failing well above the background: something wider
        # than the pair at its nodes (a zone cut off at its onset, whose first probes
        # after it came as one peer group's burst), for the node and zone rules to name.
        troubled = rest_n > 0 and bonferroni(
            log_binom_sf(math.floor(rest_f), rest_n, pol.background_failure_rate), n
        ) <= math.log(pol.alpha)
        evidence = (
            f"{join_limited(parts)}; every other probe to or from {', '.join(names)}: "
            f"{frac(rest_f, rest_n)} failed ({pct(rest_f, rest_n)})"
        )
        lp = max(blocked[p][2] for p in group)
        paths = ctx.paths_in(in_cells)
        ctx.claim_all(in_cells)
        for mask, p_fail in hop_chances(ctx, pa, pb):
            ctx.claim_expected(mask, p_fail)
        findings.append(
            MODE.finding(
                ctx,
                nodes=names,
                pairs=sorted((ctx.nodes[a], ctx.nodes[b]) for a, b in group),
                paths=paths,
                log_p=lp,
                evidence=evidence,
                unsettled=troubled or _unsettled(ctx, members),
            )
        )
    return findings


MODE = FailureMode(
    kind=FindingKind.PAIR_BLOCKED,
    detect=detect,
    severity="critical",
    summary="Probes between one pair of nodes fail while both nodes work with every other node ({node}).",
    remediation="Only the finding's node pairs fail, in the directions it lists, on the pod and host "
    "network alike: something between exactly those nodes drops the traffic. Compare the two nodes' "
    "security groups and NACLs (rules that admit some subnets or zones but not the other's), "
    "NetworkPolicies and host firewall rules naming the peer's address, and check the path MTU between "
    "them (a PMTUD black hole drops only large packets: compare `ping -M do -s 1472` both ways, "
    "`-s 8972` with jumbo frames).",
    alert=AlertSpec(name="ProberPairBlocked", severity="warning"),
    replaceable=True,
    lab_fault=LabFault(
        usage="pair-blocked@NODE,NODE",
        arity=Arity.PAIR,
        what="traffic between the two nodes dropped both ways; each still reaches everyone else",
        production="a security group rule missing between two node groups, or an MTU black hole",
    ),
)
