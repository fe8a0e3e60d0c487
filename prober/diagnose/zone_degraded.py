"""zone-degraded: loss concentrated in one availability zone — many of its nodes, inside it and across.

A zone's network losing packets (an AZ event that degrades rather than cuts, a zone's
transit or NAT path, a node group's instance type hitting its ENA allowances) reads
node by node as packet loss on most of the zone's nodes: one finding per node, where
there is one fault. This rule names the zone instead, and only when the data says so
cleanly. For each zone Z with at least ``zone_min_nodes`` nodes, over the residue
(after the deterministic rules):

* *touching Z*: every probe out of one of Z's nodes with a known path through it
  (peers, outside targets, balanced) and every probe into one of Z's nodes across the
  fabric; *the rest*: probes with a known far end that touch no node of Z;
* Z's impaired share (timed out, or a TCP SYN retransmit: packet-loss's reading) is at
  least ``loss_ratio`` times the larger of the background expected of those probes
  (the rest's rate on each path, pulled toward ``background_failure_rate`` by
  ``background_prior_probes`` pseudo-probes, weighted by Z's probes on each path) and
  the rest's share, and at least ``min_loss_floor``;
* inside Z (both ends in Z) and across (one end in Z) each lose above that threshold,
  and inside significantly above the background and at half the rate across at least
  (an inside probe crosses two of the zone's links): loss in the zone, not on the way
  between two zones (a partition's residue or onset) nor at what Z's nodes probe
  outside;
* spread: without its lossiest ``zone_spread_drop`` share of nodes (half; at least one), the
  zone still loses above the threshold and at half its overall rate at least,
  significantly above the background — one lossy node, or a few, or fewer than half of
  the zone, are packet-loss's;
* significant above the background (exact binomial tail) and above the rest
  (one-sided Fisher exact test), the weaker counting, Bonferroni over zones.

Greedy like packet-loss: the zone with the largest likelihood ratio is named and
every probe touching it claimed (with the load-balanced probes its nodes served, and
the expected share of no-serving-node failures the balancer sent into it), then the
rest re-tested. Runs just before packet-loss, so the node findings it explains are
never made; a zone partition has claimed its crossing probes before and leaves
nothing here. Loss only: latency concentrated in a zone is not named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prober.arrays import BoolArray, FloatArray, Int16Array, IntArray
from prober.diagnose.context import DUST, Context, count, frac, pct, reaches, weighted_count
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.significance import bonferroni, log_binom_sf, log_excess
from prober.model import PATHS, Finding, FindingKind


@dataclass(frozen=True, slots=True, kw_only=True)
class _Zone:
    """One zone's reading, for its finding."""

    index: int
    log_p: float
    llr: float
    n: float
    i: float
    rest_n: float
    rest_i: float
    inside: tuple[float, float]  # (probes, impaired)
    across: tuple[float, float]
    left: tuple[float, float]  # without the lossiest nodes
    dropped: int
    touching: BoolArray


def _zone_index(ctx: Context) -> tuple[list[str], IntArray]:
    names = sorted({ctx.evidence.topology.zone(x) for x in ctx.nodes} - {""})
    zone: IntArray = np.array(
        [names.index(z) if (z := ctx.evidence.topology.zone(x)) else -1 for x in ctx.nodes] or [-1],
        dtype=np.int64,
    )
    return names, zone


def _impaired(ctx: Context) -> FloatArray:
    """Residual probes lost the way loss loses them (see packet-loss): timed out, or a SYN retransmit."""
    result: FloatArray = np.minimum(ctx.residual, ctx.timeouts) + ctx.slow
    return result


def _llr(k: float, n: float, p: float) -> float:
    r = min(max(k / n, 1e-12), 1 - 1e-12)
    return k * math.log(r / p) + (n - k) * math.log((1 - r) / (1 - p))


def _rate(i: float, n: float) -> float:
    return i / n if n > 0 else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Rows:
    """What every zone's test reads of the rows, worked out once a pass."""

    zone: IntArray  # each node's zone; -1: none
    base: BoolArray  # probes that cross the network (or leave the node for a balancer)
    src_zone: Int16Array  # the source's zone
    ing_zone: Int16Array  # the ingress node's zone; -1: none known

    @staticmethod
    def of(ctx: Context, zone: IntArray) -> _Rows:
        # Zones are few: two bytes a row, not eight.
        z16 = zone.astype(np.int16)
        ing = np.where(ctx.ingress >= 0, z16[np.maximum(ctx.ingress, 0)], np.int16(-1))
        return _Rows(
            zone=zone,
            base=ctx.crossing | ctx.outside | (ctx.balanced & ~ctx.same_node),
            src_zone=z16[ctx.src],
            ing_zone=ing.astype(np.int16, copy=False),
        )


def _total(values: FloatArray, where: BoolArray) -> float:
    """``values[where].sum()`` without copying the values."""
    return float(np.sum(values, where=where))


def _could_lose(ctx: Context, rows: _Rows, imp: FloatArray, zones: int) -> BoolArray:
    """Per zone: whether :func:`_test` could get past its first two checks, from two sums a
    zone over every row rather than a dozen passes over the rows per zone.

    Its probes touching the zone are those out of it and those into it: the zone's
    impaired probes are at most the two sums of ``imp`` added, its probes at least the
    larger and at most the sum of the two sums of ``live``. A zone below ``min_samples``
    at most, or below ``min_loss_floor`` at most (the least of the test's first
    threshold), is not tested."""
    pol, live = ctx.policy, ctx.live
    out_at = np.where(rows.base & (rows.src_zone >= 0), rows.src_zone, zones)
    in_at = np.where(ctx.crossing & (rows.ing_zone >= 0), rows.ing_zone, zones)
    n_out, n_in, i_out, i_in = (
        weighted_count(at, values, zones + 1)[:zones]
        for at, values in ((out_at, live), (in_at, live), (out_at, imp), (in_at, imp))
    )
    enough = reaches(n_out + n_in, 1.0, pol.min_samples)
    result: BoolArray = enough & reaches(i_out + i_in, pol.min_loss_floor, np.maximum(n_out, n_in) - DUST)
    return result


def _test(ctx: Context, rows: _Rows, z: int, imp: FloatArray) -> _Zone | None:
    pol = ctx.policy
    live, path, base, zone = ctx.live, ctx.table.path, rows.base, rows.zone
    src_in = rows.src_zone == z
    ing_in = rows.ing_zone == z
    into = ctx.crossing & ing_in
    touching = (base & src_in) | into
    n = _total(live, touching)
    if n < pol.min_samples:
        return None
    i = _total(imp, touching)
    rest = (ctx.crossing & ~src_in & ~ing_in) | (ctx.outside & ~src_in)
    rest_n, rest_i = _total(live, rest), _total(imp, rest)
    # The threshold below is at least this much: a zone losing less (every healthy one)
    # costs no per-path background.
    if i / n < max(pol.loss_ratio * _rate(rest_i, rest_n), pol.min_loss_floor):
        return None
    inside = ctx.crossing & src_in & ing_in
    across = touching & ~inside
    size = len(PATHS)
    prior = pol.background_prior_probes
    rate_p = (weighted_count(path[rest], imp[rest], size) + prior * pol.background_failure_rate) / (
        weighted_count(path[rest], live[rest], size) + prior
    )
    p_bg = float((weighted_count(path[touching], live[touching], size) * rate_p).sum()) / n
    p_ref = max(p_bg, _rate(rest_i, rest_n))
    threshold = max(pol.loss_ratio * p_ref, pol.min_loss_floor)
    rate = i / n
    if rate < threshold:
        return None
    n_in, i_in = _total(live, inside), _total(imp, inside)
    n_ac, i_ac = _total(live, across), _total(imp, across)
    if n_in < pol.min_samples or _rate(i_in, n_in) < threshold or _rate(i_ac, n_ac) < threshold:
        return None
    # Inside must lose significantly too, and at half the rate across at least (a probe
    # inside crosses two of the zone's links, one across crosses one): failures across
    # with a few inside are a partition's onset or residue, not loss in the zone.
    if i_in < 0.5 * _rate(i_ac, n_ac) * n_in or log_binom_sf(math.floor(i_in), n_in, p_bg) > math.log(0.05):
        return None
    # Spread: without its lossiest nodes the zone must still lose as a zone does.
    members = np.flatnonzero(zone[: ctx.n_nodes] == z)
    node_n = ctx.by_node(ctx.src, live, base & src_in) + ctx.by_node(ctx.ingress, live, into)
    node_i = ctx.by_node(ctx.src, imp, base & src_in) + ctx.by_node(ctx.ingress, imp, into)
    node_rate = np.where(node_n[members] > 0, node_i[members] / np.maximum(node_n[members], 1e-300), 0.0)
    dropped = max(1, math.ceil(pol.zone_spread_drop * members.size))
    worst = members[np.argsort(-node_rate, kind="stable")[:dropped]]
    left = touching & ~np.isin(ctx.src, worst) & ~(ctx.crossing & np.isin(ctx.ingress, worst))
    n_left, i_left = float(live[left].sum()), float(imp[left].sum())
    if n_left < pol.min_samples or i_left < max(threshold, 0.5 * rate) * n_left:
        return None
    if log_binom_sf(math.floor(i_left), n_left, p_bg) > math.log(0.05):
        return None
    lp_bg = log_binom_sf(math.floor(i), n, p_bg)
    lp_rest = log_excess(i, n, rest_i, rest_n) if rest_n > 0 else 0.0
    lp = bonferroni(max(lp_bg, lp_rest), int(zone.max()) + 1)
    if lp > math.log(pol.alpha):
        return None
    return _Zone(
        index=z, log_p=lp, llr=_llr(i, n, p_ref), n=n, i=i, rest_n=rest_n, rest_i=rest_i,
        inside=(n_in, i_in), across=(n_ac, i_ac), left=(n_left, i_left), dropped=dropped, touching=touching,
    )  # fmt: skip


def _zone_share(ctx: Context, zone: IntArray, z: int) -> FloatArray:
    """Per row: the chance the balancer behind the row's address picked a node of zone ``z``."""
    sh = ctx.shares
    share = np.zeros(ctx.table.rows, dtype=np.float64)
    g = sh.group
    has = g >= 0
    if sh.n_groups:
        per_group = sh.share.within(zone[: ctx.n_nodes] == z)
        share[has] = per_group[g[has]]
    local = ctx.local_service
    share[local] = (zone[ctx.src[local]] == z).astype(np.float64)
    return share


def detect(ctx: Context) -> list[Finding]:
    pol = ctx.policy
    names, zone = _zone_index(ctx)
    if len(names) < 2:  # one zone is the whole cluster: nothing to compare it with
        return []
    size = np.bincount(zone[zone >= 0], minlength=len(names))
    findings: list[Finding] = []
    named: set[int] = set()
    rows = _Rows.of(ctx, zone)
    for _ in range(len(names)):
        imp = _impaired(ctx)
        could = _could_lose(ctx, rows, imp, len(names))
        candidates = [
            z for z in range(len(names)) if size[z] >= pol.zone_min_nodes and z not in named and could[z]
        ]
        tested = [_test(ctx, rows, z, imp) for z in candidates]
        found = [t for t in tested if t is not None]
        if not found:
            break
        best = max(found, key=lambda t: t.llr)
        named.add(best.index)
        findings.append(_claim(ctx, names, zone, best, int(size[best.index])))
    return findings


def _claim(ctx: Context, names: list[str], zone: IntArray, t: _Zone, members: int) -> Finding:
    name = names[t.index]
    z = t.index
    into = ctx.crossing & (ctx.ingress >= 0) & (zone[np.maximum(ctx.ingress, 0)] == z)
    in_f = float(ctx.residual[into].sum())
    in_n = float(ctx.live[into].sum())
    retrans = float(ctx.slow[t.touching].sum())
    evidence = (
        f"probes touching the {members} nodes of {name}: {frac(t.i, t.n)} timed out or needed a TCP SYN "
        f"retransmit ({pct(t.i, t.n)}; rest of the cluster {pct(t.rest_i, t.rest_n)}); inside {name} "
        f"{frac(t.inside[1], t.inside[0])} ({pct(t.inside[1], t.inside[0])}), to and from the other zones "
        f"{frac(t.across[1], t.across[0])} ({pct(t.across[1], t.across[0])}); without its {t.dropped} "
        f"lossiest nodes {pct(t.left[1], t.left[0])}; {count(retrans)} of the impaired probes succeeded "
        "after a retransmit"
    )
    served = ctx.balanced & ctx.node_dst & (zone[np.clip(ctx.dst, 0, max(0, ctx.n_nodes - 1))] == z)
    paths = ctx.paths_in(t.touching)
    phi_in = in_f / in_n if in_n else 0.0
    claimed = ctx.claim_all(t.touching | served)
    claimed += ctx.claim_expected(zone[ctx.src] != z, _zone_share(ctx, zone, z) * phi_in)
    evidence += f"; {count(claimed)} failures explained"
    rate = t.i / t.n
    return MODE.finding(
        ctx,
        paths=paths,
        log_p=t.log_p,
        evidence=evidence,
        zones=[name],
        severity="critical" if rate >= 0.2 else None,
    )


MODE = FailureMode(
    kind=FindingKind.ZONE_DEGRADED,
    detect=detect,
    severity="warning",  # critical from a fifth of the probes impaired
    summary="Packets are lost on many nodes of one availability zone, inside it and to and from the others.",
    remediation="The zone in the finding's `zones` loses packets on most of its nodes, between its own "
    "nodes as well as to and from the other zones, while the rest of the cluster is clean: something the "
    "zone's nodes share, not one node. Check the provider's status page for that availability zone, what "
    "the zone's traffic shares (its NAT gateway, transit gateway or peering attachment, a network appliance "
    "in its subnets), the ENA allowance counters of its nodes (`ethtool -S`: *_allowance_exceeded; an "
    "instance type or node group that only that zone runs), and recent changes rolled to that zone's node "
    "group (CNI or kube-proxy version, MTU, network ACLs). Until it is fixed, keep traffic away from the "
    "zone (topology-aware routing, cordon and drain its nodes).",
    alert=AlertSpec(name="ProberZoneDegraded", severity="warning"),
    slow=True,
    lab_fault=LabFault(
        usage="zone-degraded@ZONE[:RATE]",
        arity=Arity.ONE_ZONE,
        takes_rate=True,
        default_rate=0.1,
        what="each packet to or from any node of ZONE dropped with probability RATE (default 10%) at the "
        "fabric, on every one of the zone's interfaces (iptables statistic, as packet-loss: this machine's "
        "kernel has no sch_netem)",
        production="an availability zone whose network degrades without failing (an AZ event, its NAT or "
        "transit path), or a node group of that zone past its ENA allowances",
    ),
)
