"""pair-blocked: one cell of the matrix is dead — a security group, NACL or MTU between two nodes.

Test: a (source node, destination node) cell, over every peer path and protocol,
fails at ``dead_ratio`` or more with at least ``min_samples`` probes, significant
against the background rate (exact binomial tail, Bonferroni over every probed
cell). Runs after the node rules, on their residue: a dead column is one
node-unreachable, never N blocked pairs.

Blocked cells that share a node are one finding (one rule, one root cause: a
zone-to-zone NACL blocks a whole bipartite set of pairs); unrelated blocked pairs
are separate findings. Confidence is that of the weakest cell.

At N nodes with k peers probed per round a given pair is probed once every
ceil((N-1)/k) rounds: no statistic can see a pair faster than the schedule visits it.
"""

from __future__ import annotations

import math

import numpy as np

from prober.diagnose.context import Context, frac, join_limited, pct
from prober.diagnose.significance import bonferroni, confidence, log_binom_sf
from prober.model import Finding

REMEDIATION = (
    "Only these node pairs fail, in the listed directions, on the pod and host network alike: "
    "something between exactly these nodes drops the traffic. Check the security groups and NACLs "
    "of the two nodes (rules that admit some subnets or zones but not the other's), host firewall "
    "rules naming the peer's address, and the path MTU between them (a PMTUD black hole drops only "
    "large packets: compare `ping -M do -s 1472` both ways)."
)


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


def detect(ctx: Context) -> list[Finding]:
    pol = ctx.policy
    c = ctx.cells(ctx.src, ctx.ingress, ctx.crossing)
    tests = int((c.sent > 0).sum())
    candidates = np.flatnonzero((c.sent >= pol.min_samples) & (c.failed >= pol.dead_ratio * c.sent))
    blocked: dict[tuple[int, int], tuple[float, float, float]] = {}
    for i in candidates.tolist():
        lp = bonferroni(log_binom_sf(math.floor(c.failed[i]), c.sent[i], pol.background_failure_rate), tests)
        if lp <= math.log(pol.alpha):
            blocked[(int(c.a[i]), int(c.b[i]))] = (float(c.failed[i]), float(c.sent[i]), lp)
    if not blocked:
        return []

    groups = _components(sorted(blocked))
    groups.sort(key=lambda g: sorted({ctx.nodes[x] for pair in g for x in pair}))
    findings: list[Finding] = []
    for group in groups:
        names = sorted({ctx.nodes[x] for pair in group for x in pair})
        members = {x for pair in group for x in pair}
        in_cells = np.zeros(ctx.table.rows, dtype=np.bool_)
        for a, b in group:
            in_cells |= ctx.crossing & (ctx.src == a) & (ctx.ingress == b)
        touching = ctx.crossing & (np.isin(ctx.src, list(members)) | np.isin(ctx.ingress, list(members)))
        others = touching & ~in_cells
        parts = []
        for a, b in sorted(group, key=lambda p: (ctx.nodes[p[0]], ctx.nodes[p[1]])):
            f, n, _ = blocked[(a, b)]
            parts.append(f"{ctx.nodes[a]} -> {ctx.nodes[b]}: {frac(f, n)} failed")
        rest_f, rest_n = float(ctx.residual[others].sum()), float(ctx.live[others].sum())
        evidence = (
            f"{join_limited(parts)}; every other probe to or from {', '.join(names)}: "
            f"{frac(rest_f, rest_n)} failed ({pct(rest_f, rest_n)})"
        )
        lp = max(blocked[p][2] for p in group)
        paths = ctx.paths_in(in_cells)
        ctx.claim_all(in_cells)
        for a, b in group:
            ctx.claim_expected(ctx.src == a, ctx.share_of(b))
        findings.append(
            ctx.found(
                Finding(
                    kind="pair-blocked",
                    severity="critical",
                    nodes=names,
                    pairs=sorted((ctx.nodes[a], ctx.nodes[b]) for a, b in group),
                    paths=paths,
                    confidence=round(confidence(lp), 6),
                    evidence=evidence,
                    remediation=REMEDIATION,
                )
            )
        )
    return findings
