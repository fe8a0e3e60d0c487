"""The localizer: which component best explains the failures no rule claimed.

In the spirit of Pingmesh, 007 and NetBouncer: every failed probe votes for the
components on its path, and components are picked greedily by how well they
explain the votes. Components:

* ``node-ingress/<node>`` — probes into the node (known destination);
* ``node-egress/<node>`` — everything the node sends across the network;
* ``pod-network/<node>`` — probes from or to the node's pod agent (its veth, IPAM,
  routes, the CNI on that node), including the echo behind its NodePort and its
  service-local backend;
* ``nlb-zone/<address>`` — one NLB zone address;
* ``service/<name>``, ``external/<name>``, ``dns/<name>`` — one shared target.

Each round picks the component with the largest binomial likelihood ratio of its
residual failure share against the background rate, requires it to be
significant (exact tail, Bonferroni over components) with at least
``min_loss_rate`` of its probes failing and more failures than three standard
deviations of the estimated claims made on its probes (a rule that claimed "about
40" Service failures leaves a few either way), then removes its failures and
repeats, up to ``max_suspects``. A suspect's score is the share of the unexplained failures it
explains. Any significant suspect makes one ``unexplained`` finding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray, sorted_unique
from prober.diagnose.context import POD, Context, frac, join_limited, kind_mask, pct
from prober.diagnose.mode import AlertSpec, FailureMode
from prober.diagnose.significance import bonferroni, log_binom_sf
from prober.model import PATHS, Finding, FindingKind, Suspect, TargetKind

#: Components with one member per node, in the order their ids are laid out.
_NODE_COMPONENTS: Final[tuple[str, ...]] = ("node-ingress", "node-egress", "pod-network")


@dataclass(frozen=True, slots=True, kw_only=True)
class RankedSuspect:
    component: str
    failed: float  # unexplained failures on its probes when it was picked
    sent: float
    score: float  # share of all unexplained failures it explains
    log_p: float  # corrected
    node: str | None  # the node, for node-level components


@dataclass(frozen=True, slots=True, kw_only=True)
class _Part:
    """Each row of ``mask`` passes component ``base + ids[row]``."""

    mask: BoolArray
    base: int
    ids: IntArray  # one per row of the table, read where ``mask``


@dataclass(frozen=True, slots=True, kw_only=True)
class Components:
    """Which components each probe row passes, as parts of the table's rows: a row
    passes one component of each part it is in. Never one array of (row, component)
    entries: a window of millions of rows passes several million components."""

    names: list[str]
    nodes: list[str | None]
    parts: list[_Part]

    def sums(self, weights: FloatArray, rows: IntArray | None = None) -> FloatArray:
        """Per component, the sum of ``weights`` over its rows (of ``rows`` only, when
        given: the failing ones, say)."""
        out = np.zeros(len(self.names), dtype=np.float64)
        for p in self.parts:
            at = np.flatnonzero(p.mask) if rows is None else rows[p.mask[rows]]
            out += np.bincount(p.ids[at] + p.base, weights[at], minlength=out.size)
        return out

    def rows_of(self, components: Sequence[int], rows: IntArray | None = None) -> IntArray:
        """The rows (of ``rows`` only, when given) that pass any of ``components``."""
        chosen = np.asarray(components, dtype=np.int64)
        found = []
        for p in self.parts:
            at = np.flatnonzero(p.mask) if rows is None else rows[p.mask[rows]]
            found.append(at[np.isin(p.ids[at] + p.base, chosen)])
        return sorted_unique(np.concatenate(found))


def components(ctx: Context) -> Components:
    """The window's components (worked out once a window: the rank and the finding
    read them)."""
    got = ctx.memo.get("localize")
    if isinstance(got, Components):
        return got
    t = ctx.table
    n = ctx.n_nodes
    base = ctx.crossing | ctx.outside | (ctx.balanced & ~ctx.same_node)
    names: list[str] = []
    nodes: list[str | None] = []
    for prefix in _NODE_COMPONENTS:
        names.extend(f"{prefix}/{x}" for x in ctx.nodes)
        nodes.extend(ctx.nodes)
    ingress, egress, pod_network = (i * n for i in range(len(_NODE_COMPONENTS)))
    target_base = len(names)
    names.extend(t.targets)
    nodes.extend([None] * len(t.targets))
    nlb_base = len(names)
    names.extend(f"nlb-zone/{ip}" for ip in t.target_ips)
    nodes.extend([None] * len(t.target_ips))

    pod_src = ctx.src_kind == POD
    # The pod agent serves its pod target and, as the echo behind them, its NodePort.
    pod_dst = ctx.crossing & kind_mask(ctx.tkind, TargetKind.POD, TargetKind.NODEPORT)
    shared = kind_mask(
        ctx.tkind, TargetKind.SERVICE, TargetKind.SERVICE_LOCAL, TargetKind.EXTERNAL, TargetKind.DNS
    )
    nlb = kind_mask(ctx.tkind, TargetKind.NLB) & (t.target_ip >= 0)
    parts = [
        _Part(mask=ctx.crossing, base=ingress, ids=ctx.ingress),
        _Part(mask=base, base=egress, ids=ctx.src),
        _Part(mask=pod_src, base=pod_network, ids=ctx.src),
        _Part(mask=pod_dst, base=pod_network, ids=ctx.ingress),
        # host -> own pod via service-local
        _Part(mask=ctx.local_service & ~pod_src, base=pod_network, ids=ctx.src),
        _Part(mask=shared, base=target_base, ids=t.target.astype(np.int64, copy=False)),
        _Part(mask=nlb, base=nlb_base, ids=t.target_ip.astype(np.int64, copy=False)),
    ]
    ctx.memo["localize"] = cs = Components(names=names, nodes=nodes, parts=parts)
    return cs


def rank(ctx: Context) -> list[RankedSuspect]:
    """Significant suspects for the residual failures, best first (empty when there are none)."""
    pol = ctx.policy
    residual = ctx.residual.copy()
    total = float(residual.sum())
    if total < 1 or ctx.table.rows == 0:
        return []
    cs = components(ctx)
    n_comp = len(cs.names)
    sent = cs.sums(ctx.live)
    # Failures next to estimated claims may be those estimates' counting noise.
    noise = 3.0 * np.sqrt(cs.sums(ctx.estimated, np.flatnonzero(ctx.estimated)))
    failing = np.flatnonzero(residual)  # only these rows' residual changes below
    p0 = pol.background_failure_rate
    ranked: list[RankedSuspect] = []
    for _ in range(pol.max_suspects):
        failed = cs.sums(residual, failing)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(sent > 0, failed / np.maximum(sent, 1e-300), 0.0)
        ok = (sent >= pol.min_samples) & (rate >= pol.min_loss_rate) & (failed >= 1) & (failed > noise)
        if not ok.any():
            break
        r = np.clip(rate, 1e-12, 1 - 1e-12)
        llr = np.where(ok, failed * np.log(r / p0) + (sent - failed) * np.log((1 - r) / (1 - p0)), -np.inf)
        best = int(np.argmax(llr))
        lp = bonferroni(log_binom_sf(math.floor(failed[best]), sent[best], p0), n_comp)
        if lp > math.log(pol.alpha):
            break
        ranked.append(
            RankedSuspect(
                component=cs.names[best],
                failed=float(failed[best]),
                sent=float(sent[best]),
                score=float(failed[best]) / total,
                log_p=lp,
                node=cs.nodes[best],
            )
        )
        residual[cs.rows_of([best], failing)] = 0.0
    return ranked


_ADVICE = {
    "node-ingress": "probes into {x} fail from many sources but not like a dead node (partial, or only "
    "some paths): check its firewall rules, its agents' health and restarts, kubelet and CNI logs",
    "node-egress": "probes sent by {x} fail to many targets: check its routes, egress security groups, "
    "SNAT/conntrack state (`conntrack -S`) and the CNI on that node",
    "pod-network": "the pod network of {x} fails while its host network works: check the CNI on that "
    "node (veth and bridge state, IPAM exhaustion, routes, CNI plugin logs) and the prober pod's events",
    "nlb-zone": "probes through NLB address {x} fail: check target health in that zone, the subnet's "
    "NACLs and route table, and the NLB's zone configuration",
    "service": "probes to {x} fail: check its endpoints (kubectl get endpointslices), kube-proxy on the "
    "affected nodes, and the backend pods",
    "external": "probes to {x} fail: check the egress path (NAT gateway, firewall, proxy) and the "
    "target itself",
    "dns": "queries to {x} fail: check the DNS pods, their Service and conntrack on the nodes",
    "service-local": "probes to {x} fail: check the backend pod on each affected node and kube-proxy",
}


def detect(ctx: Context) -> list[Finding]:
    """The ``unexplained`` rule: run last, on whatever no named failure mode claimed."""
    ranked = rank(ctx)
    if not ranked:
        return []
    top = ranked[0]
    total = float(ctx.residual.sum())
    all_sent = float(ctx.sent.sum())
    parts = [
        f"{s.component}: {frac(s.failed, s.sent)} of its probes failed ({pct(s.failed, s.sent)}), "
        f"{s.score:.0%} of the unexplained failures"
        for s in ranked
    ]
    evidence = (
        f"{frac(total, all_sent)} probes failed in a way no known failure mode explains; suspects: "
        f"{join_limited(parts)}"
    )
    failing = ctx.residual > 0
    path_counts = np.bincount(ctx.table.path[failing], ctx.residual[failing], minlength=len(PATHS))
    paths = sorted(PATHS[i] for i in np.flatnonzero(path_counts >= 0.05 * total).tolist())
    # The suspects take their probes: the finding's footprint, checked against recent probes.
    cs = components(ctx)
    names = {s.component for s in ranked}
    claimed = np.zeros(ctx.table.rows, dtype=np.bool_)
    claimed[cs.rows_of([i for i, name in enumerate(cs.names) if name in names])] = True
    ctx.claim_all(claimed)
    kind, _, what = top.component.partition("/")
    advice = _ADVICE.get(kind, "check {x}").format(x=what)
    return [
        MODE.finding(
            ctx,
            nodes=sorted({s.node for s in ranked if s.node is not None}),
            paths=paths,
            log_p=top.log_p,
            evidence=evidence,
            severity="critical" if top.failed >= 0.5 * top.sent else None,
            suspects=[Suspect(component=s.component, score=round(s.score, 4)) for s in ranked],
            suspect=advice,
        )
    ]


MODE = FailureMode(
    kind=FindingKind.UNEXPLAINED,
    detect=detect,
    severity="warning",  # critical when its first suspect fails at least half of its probes
    summary="Probes involving {node} fail in a pattern no known failure mode explains.",
    remediation="No known failure mode fits; the most likely place: {suspect}.",
    alert_fills={
        "suspect": "the first of the ranked suspects in the collector's findings (GET /api/v1/findings); "
        "the matrix (GET / on the collector) shows which component the failures share"
    },
    alert=AlertSpec(name="ProberUnexplainedFailures", severity="warning"),
    replaceable=True,
    provisional=True,
)
