"""pod-network-isolated: a node's pods are cut off from the other nodes, while the node itself is fine.

Test: the probes *into* node X's pods from other nodes (pod-to-pod, host-to-pod) and
the probes *from* X's pod agent to other nodes' pods are both dead — ``dead_ratio``
or more, from and to at least ``min_sources`` peers — with ``min_samples`` probes
over both directions, significant against the background rate (exact binomial tail
over both, Bonferroni over the nodes); while X's host network works (host-to-host
into and out of X both seen, ``min_samples`` together, failing at ``healthy_ratio``
or less) and X's pods still reach their own node (same-node pod<->host probes not
dead). Both directions pooled: a 3-node cluster sends a pod only 4 pod probes a
round, and one round must do.

This is the signature of a missing route to the node's pod addresses (kubenet: the
VPC route to its pod CIDR; a CNI that lost its routes): the node's own address is
routed, its pod addresses are not. NodePort and NLB probes into X still work (they
arrive at the node's address and its echo pod is local), and what X's pods send
that X masquerades to its own address works too.

Runs after the node rules (a node dead on both networks is node-isolated) and
before pair-blocked: without it, the node's pod column and row read as a run of
blocked pairs plus an unexplained residue. Claims the crossing probes into X's pods,
everything X's pod agent sent off its node that failed (with its own NodePort, which
kube-proxy balances over every node's echo pod for pod callers), and, for Service
probes and own-NodePort probes of other nodes, the share of failures their balancer
sent to X's echo pod.
"""

from __future__ import annotations

import math

import numpy as np

from prober.arrays import BoolArray
from prober.diagnose.context import POD, Context, frac, kind_mask, pct, reaches
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.nodes import Direction, describe, traffic
from prober.diagnose.significance import bonferroni, log_binom_sf
from prober.model import Finding, FindingKind, TargetKind


def _dead_both_ways(ctx: Context, into: Direction, out: Direction, x: int) -> float | None:
    """Corrected log p-value that node ``x``'s pods are dead both ways, or None.

    Each direction fails at ``dead_ratio`` or more with ``min_sources`` dead peers;
    the sample size and the significance are those of both directions together, so a
    small cluster (few pod peers a round) is judged on a round of probes, not three.
    """
    pol = ctx.policy
    need = min(pol.min_sources, max(1, ctx.n_nodes - 1))
    for d in (into, out):
        if float(d.failed[x]) < pol.dead_ratio * float(d.sent[x]) or int(d.dead_peers[x]) < need:
            return None
    sent = float(into.sent[x] + out.sent[x])
    failed = float(into.failed[x] + out.failed[x])
    if sent < pol.min_samples:
        return None
    lp = bonferroni(log_binom_sf(math.floor(failed), sent, pol.background_failure_rate), ctx.n_nodes)
    return lp if lp <= math.log(pol.alpha) else None


def _could_be_dead(ctx: Context, to_pod: BoolArray, from_pod: BoolArray) -> bool:
    """Whether any node's pods could pass :func:`_dead_both_ways`'s first test (failures
    both ways, each direction at ``dead_ratio`` or more), from four sums a node over the
    rows (the cells add up their rows): a healthy window skips the three matrices of
    cells the rule sums per pass."""
    ratio = ctx.policy.dead_ratio
    dead = np.ones(ctx.n_nodes, dtype=np.bool_)
    for index, rows in ((ctx.ingress, ctx.crossing & to_pod), (ctx.src, ctx.crossing & to_pod & from_pod)):
        sent, failed = ctx.by_node(index, ctx.live, rows), ctx.by_node(index, ctx.residual, rows)
        dead &= (failed > 0) & reaches(failed, ratio, sent)
    return bool(dead.any())


def _fine(ctx: Context, into: Direction, out: Direction, x: int) -> bool:
    """Node ``x``'s own address works: host-to-host seen both ways, failing at ``healthy_ratio`` or less."""
    pol = ctx.policy
    sent = float(into.sent[x] + out.sent[x])
    failed = float(into.failed[x] + out.failed[x])
    seen = into.sent[x] > 0 and out.sent[x] > 0 and sent >= pol.min_samples
    return bool(seen) and failed <= pol.healthy_ratio * sent


def detect(ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    pol = ctx.policy
    to_pod = kind_mask(ctx.tkind, TargetKind.POD)
    host_to_host = kind_mask(ctx.tkind, TargetKind.HOST) & (ctx.src_kind != POD)
    from_pod = ctx.src_kind == POD
    services = kind_mask(ctx.tkind, TargetKind.SERVICE)
    if not _could_be_dead(ctx, to_pod, from_pod):
        return findings
    while True:
        pod_in, _ = traffic(ctx, to_pod)
        _, pod_out = traffic(ctx, to_pod & from_pod)
        host_in, host_out = traffic(ctx, host_to_host)
        best: tuple[float, int, float] | None = None
        for x in np.flatnonzero((pod_in.failed > 0) & (pod_out.failed > 0)).tolist():
            lp = _dead_both_ways(ctx, pod_in, pod_out, x)
            if lp is None:
                continue
            if not _fine(ctx, host_in, host_out, x):
                continue  # the host network is down too, or unseen: not this mode
            local = ctx.same_node & ctx.peer & (ctx.src == x)
            local_sent, local_failed = float(ctx.live[local].sum()), float(ctx.residual[local].sum())
            if local_sent > 0 and local_failed >= pol.dead_ratio * local_sent:
                continue  # its pods do not reach even their own node: the pod or its agent is down
            strength = float(pod_in.failed[x] + pod_out.failed[x])
            if best is None or strength > best[0]:
                best = (strength, x, lp)
        if best is None:
            return findings
        _, x, lp = best
        node = ctx.nodes[x]
        local = ctx.same_node & ctx.peer & (ctx.src == x)
        evidence = (
            f"{node}: its pods' network: {describe(pod_in, x, into=True)}; "
            f"{describe(pod_out, x, into=False)}. "
            f"Its host network: {describe(host_in, x, into=True)}; {describe(host_out, x, into=False)}. "
            f"Same-node pod<->host on {node}: "
            f"{frac(ctx.residual[local].sum(), ctx.live[local].sum())} failed "
            f"({pct(ctx.residual[local].sum(), ctx.live[local].sum())})"
        )
        into_pods = ctx.crossing & to_pod & (ctx.ingress == x)
        mine = from_pod & (ctx.src == x) & ~ctx.same_node
        sent_off = mine & (ctx.crossing | ctx.outside | ctx.unknown & ~ctx.local_service)
        # Its pods' own NodePort: kube-proxy sends pod callers to any endpoint, unmasqueraded.
        sent_off |= from_pod & (ctx.src == x) & ctx.own_nodeport & ctx.unknown
        # Balanced probes from elsewhere that picked its echo pod: a Service, or a node's own
        # NodePort (in-node callers go to any endpoint, across the fabric to its pod address).
        picked = (services | ctx.own_nodeport) & (ctx.src != x)
        paths = ctx.paths_in(into_pods | sent_off | picked & ctx.unknown)
        ctx.claim_all(into_pods)
        ctx.claim_all(sent_off)
        ctx.claim_expected(picked, ctx.share_of(x))
        findings.append(MODE.finding(ctx, nodes=[node], paths=paths, log_p=lp, evidence=evidence))


MODE = FailureMode(
    kind=FindingKind.POD_NETWORK_ISOLATED,
    detect=detect,
    severity="critical",
    summary="The pods on {node} reach no other node and no other node reaches them; {node} itself is fine.",
    remediation="The pods on {node} can reach no other node and no other node reaches them, while {node}'s "
    "own "
    "address works both ways and its pods still reach their own node: the network no longer routes "
    "{node}'s pod addresses. kubenet/kops: check the VPC route table for a route to the node's pod CIDR "
    "(the node's `spec.podCIDR`, `kubectl get node {node} -o yaml`) via its instance — a VPC route table "
    "holds 50 routes by default, so a kubenet cluster past 50 nodes loses routes (raise the quota or move "
    "to a CNI without per-node routes) — and that the instance's source/destination check is off. Other "
    "CNIs: check the CNI daemon on {node} (aws-node, calico-node, cilium, flannel) and its logs, the pod "
    "routes and rules it programs (`ip route`, `ip rule`), and security groups for pods "
    "(SecurityGroupPolicy) that may deny pod traffic. Cordon {node} until its pods are reachable again.",
    alert=AlertSpec(name="ProberPodNetworkIsolated", severity="critical"),
    replaceable=True,
    lab_fault=LabFault(
        usage="pod-network-isolated@NODE",
        arity=Arity.ONE_OR_MORE,
        what="the router's route to NODE's pod addresses replaced by a blackhole route (bridge CNI: its pod "
        "CIDR; VPC CNI: each pod address); NODE's own address stays routed",
        production="the VPC route table lost the node's pod CIDR route (kubenet's 50-route limit), or the "
        "CNI lost its pod routes",
    ),
)
