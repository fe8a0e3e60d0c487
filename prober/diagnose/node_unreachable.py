"""node-unreachable: nothing gets into a node, while it still sends — a dead column.

Test: the node's inbound probes (from at least ``min_sources`` distinct peers) fail
at ``dead_ratio`` or more, significant against the background rate (exact binomial
tail, Bonferroni over the nodes), while its outbound probes are not dead. A node
with no outbound data at all (agents down, node off) is reported here too, and the
evidence says so.

Claims the column and, for load-balanced probes with no serving node, the share
of failures the balancer sent to this node — so a dead node is one finding, not
N blocked pairs plus loss on every Service.
"""

from __future__ import annotations

import numpy as np

from prober.diagnose.context import Context, kind_mask
from prober.diagnose.nodes import dead_log_p, describe, traffic
from prober.diagnose.significance import confidence
from prober.model import Finding, TargetKind

REMEDIATION = (
    "New connections into {node} are dropped on every path while it can still send: look at what "
    "filters its inbound traffic — security group / NACL ingress rules for the node and pod "
    "addresses, host firewall (iptables INPUT/FORWARD, nftables), and the agents on the node "
    "(kubectl get pods -o wide); if the node sends nothing either, it may be down."
)


def detect(ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    pol = ctx.policy
    while True:
        inbound, outbound = traffic(ctx)
        best: tuple[float, int, float] | None = None
        for x in np.flatnonzero(inbound.failed > 0).tolist():
            lp = dead_log_p(ctx, inbound, x)
            if lp is None:
                continue
            if outbound.sent[x] > 0 and outbound.failed[x] >= pol.dead_ratio * outbound.sent[x]:
                continue  # dead both ways but not significant as isolation: say nothing
            strength = float(inbound.failed[x])
            if best is None or strength > best[0]:
                best = (strength, x, lp)
        if best is None:
            return findings
        _, x, lp = best
        node = ctx.nodes[x]
        if outbound.sent[x] > 0:
            out = describe(outbound, x, into=False)
        else:
            out = f"no probes from {node} in this window (its agents may be down, or the node is off)"
        evidence = f"{node}: {describe(inbound, x, into=True)}; {out}"
        into_x = ctx.crossing & (ctx.ingress == x)
        paths = ctx.paths_in(into_x)
        share = ctx.share_of(x)
        nlb = kind_mask(ctx.tkind, TargetKind.NLB)
        ctx.claim_all(into_x)
        ctx.claim_expected(ctx.src != x, share)
        ctx.claim_expected((ctx.src == x) & nlb, share)  # NLB -> own node comes back in from outside
        findings.append(
            ctx.found(
                Finding(
                    kind="node-unreachable",
                    severity="critical",
                    nodes=[node],
                    pairs=[],
                    paths=paths,
                    confidence=round(confidence(lp), 6),
                    evidence=evidence,
                    remediation=REMEDIATION.format(node=node),
                )
            )
        )
