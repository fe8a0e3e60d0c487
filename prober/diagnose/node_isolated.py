"""node-isolated: a node that can neither receive nor send — its row and its column are dead.

Test: the node's inbound *and* outbound probes (to and from at least
``min_sources`` distinct peers) fail, one direction at ``dead_ratio`` or more and the
other at half that or more, each direction significant against the background rate
(exact binomial tail, Bonferroni over the nodes). Confidence is that of the weaker
direction. (A node that receives nothing and sends little is cut off both ways, or
becoming so: a tail that began just before the cut still holds some successes.)

Runs first: an isolated node would otherwise also read as unreachable, as a row of
blocked pairs, and as lossy neighbours. Greedy: the strongest node is claimed
first and the rest re-tested on the residue, so two isolated nodes in a small
cluster do not make a third look isolated.
"""

from __future__ import annotations

import numpy as np

from prober.arrays import sorted_unique
from prober.diagnose.context import Context
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.nodes import Traffic, dead_candidates, dead_log_p, describe
from prober.model import Finding, FindingKind


def detect(ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    now = Traffic(ctx)
    while True:
        inbound, outbound = now.current()
        found: tuple[int, float] | None = None
        # One direction dead, the other failing at half that or more: a node that receives
        # nothing and sends little is isolated (or becoming so: a tail that began just
        # before the cut holds some successes), not unreachable.
        half = 0.5 * ctx.policy.dead_ratio
        candidates = np.union1d(
            np.intersect1d(dead_candidates(ctx, inbound), dead_candidates(ctx, outbound, half)),
            np.intersect1d(dead_candidates(ctx, inbound, half), dead_candidates(ctx, outbound)),
        )
        # The strongest node (most failures both ways; the first of equals) that passes.
        strength = inbound.failed[candidates] + outbound.failed[candidates]
        for x in candidates[np.lexsort((candidates, -strength))].tolist():
            lp_in, lp_out = dead_log_p(ctx, inbound, x, half), dead_log_p(ctx, outbound, x, half)
            if lp_in is None or lp_out is None:
                continue
            if dead_log_p(ctx, inbound, x) is None and dead_log_p(ctx, outbound, x) is None:
                continue
            found = (x, max(lp_in, lp_out))
            break
        if found is None:
            return findings
        x, lp = found
        node = ctx.nodes[x]
        evidence = f"{node}: {describe(inbound, x, into=True)}; {describe(outbound, x, into=False)}"
        at = np.array([x])
        from_x, _ = ctx.rows_at("src", at)
        touching = sorted_unique(np.concatenate([from_x, ctx.rows_at("ingress", at)[0]]))
        touching = touching[ctx.crossing[touching]]
        # Its outside targets fail with it: their paths are named too, so that nothing
        # (a focused probe, a suspect) asks about them again.
        outside = from_x[ctx.outside[from_x]]
        paths = ctx.paths_in(np.concatenate([touching, outside]))
        ctx.claim_all(touching)
        ctx.claim_all(outside)
        ctx.claim_all(from_x[ctx.unknown[from_x] & ~ctx.local_service[from_x]])
        rows, share = ctx.node_shares(x)
        others = ctx.src[rows] != x
        ctx.claim_expected_at(rows[others], share[others])
        findings.append(MODE.finding(ctx, nodes=[node], paths=paths, log_p=lp, evidence=evidence))


MODE = FailureMode(
    kind=FindingKind.NODE_ISOLATED,
    detect=detect,
    severity="critical",
    summary="Nothing gets into or out of {node}: no other node reaches it and it reaches no other node.",
    remediation="Nothing reaches {node} and nothing leaves it, on the pod and the host network alike, while "
    "same-node probes work: the node's uplink is cut. Check its primary interface/ENI attachment, routes "
    "and default gateway (`ip route`, `ip rule`), its security groups and NACLs in both directions, host "
    "firewall rules (iptables/nftables default-drop), its CNI pod, and whether it is NotReady; cordon and "
    "drain it until it is fixed.",
    alert=AlertSpec(name="ProberNodeIsolated", severity="critical"),
    replaceable=True,
    lab_fault=LabFault(
        usage="node-isolated@NODE",
        arity=Arity.ONE_OR_MORE,
        what="everything to and from NODE dropped at the fabric (the collector stays reachable)",
        production="a node cut off: ENI detached, route table or NACL denying both ways",
    ),
)
