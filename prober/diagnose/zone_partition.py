"""zone-partition: two availability zones cannot reach each other, while each is healthy inside.

Test, per pair of zones (A, B) that each hold at least two nodes: the crossing probes
from A's nodes to B's and from B's to A's both fail at ``dead_ratio`` or more, from
at least ``min_sources`` nodes of each zone (or all of them), ``min_samples`` probes
in all, significant against the background rate (exact binomial tail over both
directions, Bonferroni over the zone pairs); and A and B each work inside: at least
``min_samples`` probes between their own nodes, and at most half of those node
pairs dead (a dead node inside a zone is that node's finding, not a reason to miss
the partition; a zone whose nodes are all dead is no partition). A zone of one node
is a node, not a zone: the node rules speak for it.

Runs first: a partition would otherwise read as a blocked pair for every node pair
across it and as packet loss on every node whose balanced probes sometimes cross
it. It claims every crossing probe between the zones, and of the load-balanced
probes with no serving node (Services, NodePorts probed from their own node, NLB
addresses) the expected share that the balancer sent across the partition: for a
ClusterIP the share of the far zone's nodes; for an NLB zone address, which the
data places on one side when every probe to it from the other side failed, all of
that side's probes, and for everyone else the share of the other side's nodes
behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray
from prober.diagnose.context import Context, count, frac, kind_mask, pct, weighted_count
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.significance import bonferroni, log_binom_sf
from prober.model import Finding, FindingKind, TargetKind


@dataclass(frozen=True, slots=True, kw_only=True)
class _Side:
    sent: float
    failed: float
    dead_sources: int  # nodes of the zone whose probes across mostly failed


def _zone_index(ctx: Context) -> tuple[list[str], IntArray]:
    names = sorted({ctx.evidence.topology.zone(x) for x in ctx.nodes} - {""})
    zone: IntArray = np.array(
        [names.index(z) if (z := ctx.evidence.topology.zone(x)) else -1 for x in ctx.nodes], dtype=np.int64
    )
    return names, zone


def _side(sent: FloatArray, failed: FloatArray, src: IntArray) -> _Side:
    """One direction across: its cells' sums and how many source nodes it is dead from."""
    per_src_sent = np.bincount(src, sent)
    per_src_failed = np.bincount(src, failed, minlength=per_src_sent.size)
    dead = int(((per_src_sent > 0) & (per_src_failed >= 0.5 * per_src_sent)).sum())
    return _Side(sent=float(sent.sum()), failed=float(failed.sum()), dead_sources=dead)


def detect(ctx: Context) -> list[Finding]:
    pol = ctx.policy
    names, zone = _zone_index(ctx)
    if len(names) < 2:
        return []
    size = np.bincount(zone[zone >= 0], minlength=len(names))
    c = ctx.cells(ctx.src, ctx.ingress, ctx.crossing)
    za, zb = zone[c.a], zone[c.b]
    inside = (za == zb) & (za >= 0)
    inside_sent = weighted_count(za[inside], c.sent[inside], len(names))
    inside_failed = weighted_count(za[inside], c.failed[inside], len(names))
    probed = inside & (c.sent > 0)
    inside_cells = np.bincount(za[probed], minlength=len(names))
    inside_dead = np.bincount(za[probed & (c.failed >= 0.5 * c.sent)], minlength=len(names))
    tests = len(names) * (len(names) - 1) // 2
    found: list[tuple[float, int, int, float, _Side, _Side]] = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            if size[a] < 2 or size[b] < 2:
                continue
            ab, ba = (za == a) & (zb == b), (za == b) & (zb == a)
            sides = [_side(c.sent[m], c.failed[m], c.a[m]) for m in (ab, ba)]
            need = [min(pol.min_sources, int(size[z])) for z in (a, b)]
            if any(s.failed < pol.dead_ratio * s.sent or s.sent <= 0 for s in sides):
                continue
            if sides[0].dead_sources < need[0] or sides[1].dead_sources < need[1]:
                continue
            sent, failed = sides[0].sent + sides[1].sent, sides[0].failed + sides[1].failed
            if sent < pol.min_samples:
                continue
            healthy = all(
                inside_sent[z] >= pol.min_samples and inside_dead[z] <= 0.5 * inside_cells[z] for z in (a, b)
            )
            if not healthy:
                continue
            lp = bonferroni(log_binom_sf(math.floor(failed), sent, pol.background_failure_rate), tests)
            if lp <= math.log(pol.alpha):
                found.append((failed, a, b, lp, sides[0], sides[1]))
    findings: list[Finding] = []
    for _, a, b, lp, ab_side, ba_side in sorted(found, key=lambda t: -t[0]):
        findings.append(_claim(ctx, names, zone, a, b, lp, ab_side, ba_side, inside_sent, inside_failed))
    return findings


def _claim(  # noqa: PLR0917 - one finding's parts, computed by detect
    ctx: Context,
    names: list[str],
    zone: IntArray,
    a: int,
    b: int,
    lp: float,
    ab: _Side,
    ba: _Side,
    inside_sent: FloatArray,
    inside_failed: FloatArray,
) -> Finding:
    za, zb = names[a], names[b]
    evidence = (
        f"{za} <-> {zb}: {frac(ab.failed + ba.failed, ab.sent + ba.sent)} probes across failed "
        f"({pct(ab.failed + ba.failed, ab.sent + ba.sent)}; {za} -> {zb} {frac(ab.failed, ab.sent)} from "
        f"{ab.dead_sources} nodes, {zb} -> {za} {frac(ba.failed, ba.sent)} from {ba.dead_sources} nodes); "
        f"inside {za} {frac(inside_failed[a], inside_sent[a])} failed, inside {zb} "
        f"{frac(inside_failed[b], inside_sent[b])} failed"
    )
    src_zone = zone[ctx.src]
    ing_zone = np.where(ctx.ingress >= 0, zone[np.maximum(ctx.ingress, 0)], -1)
    across = ctx.crossing & (((src_zone == a) & (ing_zone == b)) | ((src_zone == b) & (ing_zone == a)))
    paths = set(ctx.paths_in(across))
    p_fail = _balanced_p_fail(ctx, zone, a, b)
    balanced = ctx.unknown & (p_fail > 0)
    paths |= set(ctx.paths_in(balanced))
    claimed = ctx.claim_all(across)
    claimed += ctx.claim_expected(balanced, p_fail)
    evidence += f"; {count(claimed)} failures explained"
    return MODE.finding(ctx, paths=sorted(paths), log_p=lp, evidence=evidence, zones=[za, zb])


def _balanced_p_fail(ctx: Context, zone: IntArray, a: int, b: int) -> FloatArray:
    """Per row: the chance a load-balanced probe crossed the partition (see the module docstring)."""
    sh = ctx.shares
    p = np.zeros(ctx.table.rows, dtype=np.float64)
    if sh.n_groups == 0:
        return p
    in_a: BoolArray = zone == a
    in_b: BoolArray = zone == b
    share_a = sh.share.within(in_a)
    share_b = sh.share.within(in_b)
    g = sh.group
    rows = g >= 0
    src_zone = zone[ctx.src]
    # An NLB zone address sits on one side: every probe to it from the other side failed.
    nlb = kind_mask(sh.tkind, TargetKind.NLB)
    side = np.full(sh.n_groups, -1, dtype=np.int64)
    grouped = np.flatnonzero(rows)
    for z, other in ((a, b), (b, a)):
        from_z = grouped[src_zone[grouped] == z]
        sent = np.bincount(g[from_z], ctx.sent[from_z], minlength=sh.n_groups)
        ok = np.bincount(g[from_z], ctx.ok[from_z], minlength=sh.n_groups)
        side[nlb & (sent >= 1) & (ok == 0) & (side < 0)] = other
    gi = g[rows]
    zs = src_zone[rows]
    sg = side[gi]
    far = np.where(zs == a, share_b[gi], np.where(zs == b, share_a[gi], 0.0))
    # Through an address on side S: callers on the other side never get there; everyone
    # else gets there and fails when it forwards to a node on the other side.
    beyond = np.where(sg == a, share_b[gi], share_a[gi])
    other_side = ((sg == a) & (zs == b)) | ((sg == b) & (zs == a))
    p[rows] = np.where(sg >= 0, np.where(other_side, 1.0, beyond), far)
    return p


MODE = FailureMode(
    kind=FindingKind.ZONE_PARTITION,
    detect=detect,
    severity="critical",
    summary="Two availability zones cannot reach each other; each works inside.",
    remediation="Every path between the two zones in the finding's `zones` fails, while each zone works "
    "inside and with the other zones: the network between those zones is cut, not any node. Check what "
    "joins the zones' subnets: the subnets' network ACLs (a deny on the other zone's CIDR, or a missing "
    "return rule for ephemeral ports), the route tables of both subnets, a transit gateway or peering "
    "attachment and its route propagation, security groups that allow only their own zone's CIDR, and the "
    "provider's status page for an availability-zone network event. Until it is fixed, keep traffic "
    "inside zones (topology-aware routing) or cordon one side.",
    alert=AlertSpec(name="ProberZonePartition", severity="critical"),
    lab_fault=LabFault(
        usage="zone-partition@ZONE,ZONE",
        arity=Arity.ZONE_PAIR,
        what="the router drops every packet between the two zones' nodes (both ENIs) and between each "
        "zone's NLB node and the other zone's nodes; DNS and the external server stay reachable",
        production="a network ACL, route table or transit/peering change between two zones' subnets, or an "
        "availability-zone network event",
    ),
)
