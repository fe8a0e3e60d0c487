"""nlb-hairpin: an NLB with client-IP preservation never delivers a node's own probes back to it.

When the NLB picks the client's own node (instance targets, externalTrafficPolicy:
Cluster, preserve_client_ip.enabled=true), the reply short-cuts the NLB, the
client resets it, and the SYN times out. Seen from the mesh:

* successes from a node are **never** served by that node. Under the null (no
  hairpin) a node's successes land on itself at the share it has among every other
  node's successes, ``q``; the count of self-served successes over all nodes is then
  about Poisson with mean ``E = sum(successes x q)``. The test is
  ``P(X <= observed | E_lower)``, with ``E_lower`` two standard errors under ``E`` (the
  shares are estimated from the same window);
* and NLB probes fail more than the background (exact binomial tail, on the raw
  counts: a dead node's share of them may be claimed already, and the test above
  is what tells a hairpin apart).

Both must hold (the confidence is that of the weaker test, Bonferroni over NLBs),
with self-served successes at most a tenth of the expectation; pod and host clients
alike. One finding per NLB; ``nodes`` are the clients whose successes were never
self-served, or significantly less often than expected (the same Poisson test per
client: a fault that ended inside the window leaves a few self-served successes).
No such client, no finding. Claims, per client, the failures expected from its own
share.
"""

from __future__ import annotations

import math

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray
from prober.diagnose.context import Context, count, frac, join_limited, kind_mask, pct
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.significance import bonferroni, log_binom_sf, log_poisson_cdf
from prober.model import PATHS, Finding, FindingKind, TargetKind


def detect(ctx: Context) -> list[Finding]:
    pol = ctx.policy
    sh = ctx.shares
    nlb = kind_mask(ctx.tkind, TargetKind.NLB)
    if not nlb.any():
        return []
    q = sh.others_share()
    q_var = sh.others_share_var()
    g = sh.group
    targets = sorted(set(ctx.table.target[nlb].tolist()), key=ctx.target_label)
    findings: list[Finding] = []
    for t in targets:
        rows = nlb & (ctx.table.target == t)
        groups = np.flatnonzero(sh.target == t)
        succ_by_src = sh.src_succ[groups]  # (groups, nodes): successes of each client
        self_by_src = sh.self_succ[groups].sum(axis=0)
        expected = float((succ_by_src * q[groups]).sum())
        sd = math.sqrt(float((succ_by_src**2 * q_var[groups]).sum()))
        observed = float(self_by_src.sum())
        if expected <= 0 or observed > 0.1 * expected:
            continue
        lp_self = log_poisson_cdf(observed, max(0.0, expected - 2.0 * sd))
        failed = float(ctx.fail[rows].sum())
        sent = float(ctx.sent[rows].sum())
        if sent < pol.min_samples:
            continue
        lp_fail = log_binom_sf(math.floor(failed), sent, pol.background_failure_rate)
        lp = bonferroni(max(lp_self, lp_fail), len(targets))
        if lp > math.log(pol.alpha):
            continue

        clients = _hairpinned(succ_by_src, self_by_src, q[groups], pol.alpha)
        if not clients:
            continue
        names = sorted(ctx.nodes[x] for x in clients)
        evidence = _evidence(ctx, t, rows, q, clients)
        paths = ctx.paths_in(rows)

        mine = rows & np.isin(ctx.src, clients) & (g >= 0)  # every probe, for the expectation
        p_self = np.zeros(ctx.table.rows, dtype=np.float64)
        p_self[mine] = sh.share[g[mine], ctx.src[mine]]
        ctx.claim_expected(mine, p_self)
        findings.append(
            MODE.finding(
                ctx, nodes=names, pairs=[(x, x) for x in names], paths=paths, log_p=lp, evidence=evidence
            )
        )
    return findings


def _evidence(ctx: Context, t: int, rows: BoolArray, q: FloatArray, clients: list[int]) -> str:
    """Per path: failures, and self-served successes against the expectation; the worst client."""
    g = ctx.shares.group
    parts = []
    for p in sorted(set(ctx.table.path[rows].tolist())):
        pr = rows & (ctx.table.path == p)
        served = pr & ctx.node_dst
        ok = ctx.ok[served]
        exp_p = float((ok * q[g[served], ctx.src[served]]).sum())
        self_p = float(ok[ctx.dst[served] == ctx.src[served]].sum())
        f_p, n_p = float(ctx.fail[pr].sum()), float(ctx.sent[pr].sum())
        parts.append(
            f"{PATHS[p]}: {frac(f_p, n_p)} failed ({pct(f_p, n_p)}); {count(self_p)} of "
            f"{count(ok.sum())} successes served by the client's own node (expected ~{count(exp_p)})"
        )
    worst = max(clients, key=lambda x: (float(ctx.fail[rows & (ctx.src == x)].sum()), -x))
    wr = rows & (ctx.src == worst)
    ws = wr & ctx.node_dst
    w_self = float(ctx.ok[ws & (ctx.dst == worst)].sum())
    w_exp = float((ctx.ok[ws] * q[g[ws], worst]).sum())
    parts.append(
        f"e.g. from {ctx.nodes[worst]}: {frac(ctx.fail[wr].sum(), ctx.sent[wr].sum())} failed, "
        f"{count(w_self)} of {count(ctx.ok[wr].sum())} successes served by {ctx.nodes[worst]} "
        f"(expected ~{count(w_exp)})"
    )
    names = sorted(ctx.nodes[x] for x in clients)
    return f"{ctx.target_label(t)} across {len(names)} client nodes: {join_limited(parts, 5)}"


def _hairpinned(succ_by_src: IntArray, self_by_src: IntArray, q: FloatArray, alpha: float) -> list[int]:
    """The clients whose own node served none of their successes, or significantly fewer
    than expected (a fault that ended inside the window leaves a few self-served
    successes at its end): the Poisson test of the module docstring, per client."""
    exp_by_src = (succ_by_src * q).sum(axis=0)
    return [
        x
        for x in np.flatnonzero(succ_by_src.sum(axis=0) > 0).tolist()
        if self_by_src[x] == 0
        or (
            self_by_src[x] <= 0.5 * exp_by_src[x]
            and log_poisson_cdf(float(self_by_src[x]), float(exp_by_src[x])) <= math.log(alpha)
        )
    ]


MODE = FailureMode(
    kind=FindingKind.NLB_HAIRPIN,
    detect=detect,
    severity="critical",
    summary="Probes to the NLB from {node} time out when the NLB picks the caller's own node (NLB "
    "hairpin with client IP preservation).",
    remediation="Disable client IP preservation on the NLB's target group "
    "(preserve_client_ip.enabled=false), or use IP targets or externalTrafficPolicy: Local, or send "
    "in-cluster callers to the ClusterIP instead of the NLB.",
    alert=AlertSpec(name="ProberNlbHairpin", severity="warning"),
    slow=True,
    lab_fault=LabFault(
        usage="nlb-hairpin",
        arity=Arity.NONE,
        what="the NLB forwards with the client's own address (no SNAT), each zone's NLB node to "
        "its own zone's nodes (cross-zone off, the NLB default); a client whose node the NLB picks "
        "gets the reply straight from its own node and never completes",
        production="NLB target group attribute preserve_client_ip.enabled=true (the default for "
        "instance targets) with in-cluster clients of the NLB",
    ),
)
