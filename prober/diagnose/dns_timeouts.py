"""dns-timeouts: a low rate of DNS queries time out while other UDP gets through.

The classic cause is a conntrack insertion race: two UDP queries (A and AAAA) leave
one socket at once, one loses the race in conntrack and is dropped, and the
resolver retries only after 5 s. The mesh sees DNS probes that time out (or answer
after more than 5 s) at a low rate, while UDP echo probes between the same nodes
do not get lost — so it is not a lossy path.

Test per DNS target: impaired DNS probes (timeouts, answers after > 5 s) must
exceed both the background rate (exact binomial tail) and the residual loss of UDP
echo probes between nodes (one-sided Fisher exact test); the weaker p-value
counts, Bonferroni over DNS targets. The share must lie between
``min_dns_timeout_rate`` and ``max_dns_timeout_rate`` (above it DNS is down: an
outage, left to the localizer). Nodes are named only when the timeouts
concentrate on them (each node against the others, Fisher exact, Bonferroni over
nodes, at a hundredth of the usual p-value); spread timeouts are a cluster-wide
finding with no node.
"""

from __future__ import annotations

import math

import numpy as np

from prober.diagnose.context import Context, count, frac, kind_mask, pct
from prober.diagnose.mode import AlertSpec, FailureMode
from prober.diagnose.significance import bonferroni, log_binom_sf, log_excess
from prober.model import Finding, FindingKind, Proto, TargetKind
from prober.stats import PROTO_INDEX

#: Naming a node for a mode that is cluster-wide by default takes a hundred times the
#: evidence: with low counts, one node out of many often looks a little worse.
_NODE_EVIDENCE = 0.01


def detect(ctx: Context) -> list[Finding]:
    pol = ctx.policy
    t = ctx.table
    dns = kind_mask(ctx.tkind, TargetKind.DNS)
    if not dns.any():
        return []
    udp = ctx.crossing & ctx.peer & (t.proto == PROTO_INDEX[Proto.UDP])
    udp_f, udp_n = float(ctx.residual[udp].sum()), float(ctx.live[udp].sum())
    targets = sorted(set(t.target[dns].tolist()), key=ctx.target_label)
    findings: list[Finding] = []
    for target in targets:
        rows = dns & (t.target == target)
        lost = np.minimum(ctx.residual, ctx.timeouts) + ctx.dns_slow
        f, n = float(lost[rows].sum()), float(ctx.live[rows].sum())
        if n < pol.min_samples or not pol.min_dns_timeout_rate <= f / n <= pol.max_dns_timeout_rate:
            continue
        # Above the background, and above the UDP echo loss between the same nodes.
        lp_bg = log_binom_sf(math.floor(f), n, pol.background_failure_rate)
        lp_udp = log_excess(f, n, udp_f, udp_n) if udp_n > 0 else 0.0
        lp = bonferroni(max(lp_bg, lp_udp), len(targets))
        if lp > math.log(pol.alpha):
            continue
        f_node = ctx.by_node(ctx.src, lost, rows)
        n_node = ctx.by_node(ctx.src, ctx.live, rows)
        concentrated = []
        for y in np.flatnonzero(f_node > 0).tolist():
            rest_f, rest_n = f - f_node[y], n - n_node[y]
            lp_y = bonferroni(log_excess(f_node[y], n_node[y], rest_f, rest_n), ctx.n_nodes)
            if lp_y <= math.log(pol.alpha * _NODE_EVIDENCE):
                concentrated.append(ctx.nodes[y])
        slow = float(ctx.dns_slow[rows].sum())
        hit = int((f_node > 0).sum())
        evidence = (
            f"{ctx.target_label(target)}: {frac(f, n)} queries timed out or answered after > 5 s "
            f"({pct(f, n)}, {count(slow)} of them slow answers) from {hit} of "
            f"{int((n_node > 0).sum())} nodes; UDP echo between nodes: {frac(udp_f, udp_n)} lost "
            f"({pct(udp_f, udp_n)})"
        )
        if concentrated:
            evidence += f"; concentrated on {', '.join(sorted(concentrated))}"
        paths = ctx.paths_in(rows)
        ctx.claim_part(rows, ctx.timeouts)
        findings.append(
            MODE.finding(ctx, nodes=sorted(concentrated), paths=paths, log_p=lp, evidence=evidence)
        )
    return findings


MODE = FailureMode(
    kind=FindingKind.DNS_TIMEOUTS,
    detect=detect,
    severity="warning",
    summary="DNS queries from {node} time out at a low rate (~5 s stalls: conntrack races on UDP DNS).",
    remediation="UDP DNS queries are lost in conntrack insertion races: add `options single-request-reopen` "
    "(glibc; or `use-vc` for TCP) to the pods' dnsConfig, deploy NodeLocal DNSCache so queries stay on the "
    "node, or move to a kernel with the conntrack race fixes (5.0+); `conntrack -S` shows insert_failed "
    "growing on affected nodes.",
    alert=AlertSpec(name="ProberDnsTimeouts", severity="warning"),
    slow=True,
)
