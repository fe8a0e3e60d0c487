"""node-unreachable: nothing gets into a node, while it still sends — a dead column.

Test: the node's inbound probes (from at least ``min_sources`` distinct peers) fail
at ``dead_ratio`` or more, significant against the background rate (exact binomial
tail, Bonferroni over the nodes), while its outbound probes work (fail at under half
``dead_ratio``; more is node-isolated's). A node
with no outbound data at all (agents down, node off) is reported here too, and the
evidence says so.

Claims the column and, for load-balanced probes with no serving node, the share
of failures the balancer sent to this node — so a dead node is one finding, not
N blocked pairs plus loss on every Service.
"""

from __future__ import annotations

import numpy as np

from prober.diagnose.context import Context
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.nodes import Traffic, dead_candidates, dead_log_p, describe
from prober.model import Finding, FindingKind, TargetKind


def detect(ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    pol = ctx.policy
    nlb = ctx.of_kind(TargetKind.NLB)
    # Another node's NodePort that forwards on (externalTrafficPolicy: Cluster) may send
    # the node's own probe back into it; its share says how often (none under Local).
    forwarded = ctx.of_kind(TargetKind.NODEPORT) & ~ctx.own_nodeport
    balanced = ctx.balanced_rows
    source, via_outside = ctx.src[balanced], nlb[balanced] | forwarded[balanced]
    now = Traffic(ctx)
    while True:
        inbound, outbound = now.current()
        found: tuple[int, float] | None = None
        # The strongest node (most inbound failures; the first of equals) that passes.
        candidates = dead_candidates(ctx, inbound)
        for x in candidates[np.lexsort((candidates, -inbound.failed[candidates]))].tolist():
            lp = dead_log_p(ctx, inbound, x)
            if lp is None:
                continue
            if outbound.sent[x] > 0 and outbound.failed[x] >= 0.5 * pol.dead_ratio * outbound.sent[x]:
                continue  # failing both ways: node-isolated's, or not significant as that
            found = (x, lp)
            break
        if found is None:
            return findings
        x, lp = found
        node = ctx.nodes[x]
        if outbound.sent[x] > 0:
            out = describe(outbound, x, into=False)
        else:
            out = f"no probes from {node} in this window (its agents may be down, or the node is off)"
        evidence = f"{node}: {describe(inbound, x, into=True)}; {out}"
        into_x, _ = ctx.rows_at("ingress", np.array([x]))
        into_x = into_x[ctx.crossing[into_x]]
        paths = ctx.paths_in(into_x)
        # An NLB whose picks forward on (externalTrafficPolicy: Cluster) fails its probe when
        # it enters the node or forwards to the node's echo.
        rows, share = ctx.node_shares(x, through=True)
        mine = source == x
        back = mine & via_outside  # back in from outside
        ctx.claim_all(into_x)
        ctx.claim_expected_at(rows[~mine], share[~mine])
        ctx.claim_expected_at(rows[back], share[back])
        findings.append(MODE.finding(ctx, nodes=[node], paths=paths, log_p=lp, evidence=evidence))


MODE = FailureMode(
    kind=FindingKind.NODE_UNREACHABLE,
    detect=detect,
    severity="critical",
    summary="No node can reach {node} (its ingress is down).",
    remediation="New connections into {node} are dropped on every path while it can still send: look at "
    "what filters its inbound traffic — security group / NACL ingress rules for the node and pod "
    "addresses, host firewall (iptables INPUT/FORWARD, nftables), its CNI and kube-proxy pods and the "
    "prober agents on it (kubectl get pods -o wide); if it sends nothing either, it may be down or "
    "NotReady. Cordon and drain it if it does not recover.",
    alert=AlertSpec(name="ProberNodeUnreachable", severity="critical"),
    replaceable=True,
    lab_fault=LabFault(
        usage="node-unreachable@NODE",
        arity=Arity.ONE_OR_MORE,
        what="new inbound connections to NODE dropped at the fabric; its own outbound traffic and "
        "replies still flow",
        production="a stateful security group or NACL without the inbound rule",
    ),
)
