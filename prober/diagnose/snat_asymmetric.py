"""snat-asymmetric: "cross-wired" — from one node the pod reaches a target and the host does not.

(Or the reverse: the host reaches it and the pod does not.)

VPC CNI SNAT (``AWS_VPC_K8S_CNI_EXTERNALSNAT=false``) with pods on secondary ENIs
and strict ``rp_filter``: replies to one of the two networks come back on an
interface the reverse-path check rejects. The target and the node are fine; only
one of the node's two networks cannot reach it. Compared per node and per target
outside the pod network (external targets, DNS, NLB, other nodes' NodePorts):

* one side (pod or host) of node S fails at ``dead_ratio`` or more — significant
  (exact binomial tail, Bonferroni over nodes x targets x sides) against the highest
  of the background; S's own failure rate, the higher of its two sides' on their
  peer probes (a lossy node's few probes of a target can all fail by chance, and loss
  at a node hits both its networks); for a target probed by one datagram (DNS, UDP),
  S's share of peer probes that lost their first exchange (failed, or through after
  a SYN retransmit): a lone datagram does not survive the loss a handshake retries
  through (at 20% loss each way a node fails ~5% of its TCP peer probes and ~35% of
  its DNS queries, and in a 15 s tail its few peer probes may none fail, 4/4 of one
  side's queries fail and 0/3 of the other's); and the same side's failure rate on
  the target from the other nodes where neither side is dead on it (DNS timing out 5%
  of queries for everyone fails all three of a node's pod queries in a window for one
  node side in 8,000, and a large cluster has thousands);
* the other side of S reaches the same target (failure share at most
  ``healthy_ratio``);
* some other node's pod and host both reach it (the target is up);
* S's pod and host networks otherwise work (peer probes from S are not dead).

One finding per node, listing every target it is cross-wired for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray, sorted_unique
from prober.diagnose.context import HOST, N_SRC_KINDS, POD, Context, frac, kind_mask, weighted_count
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.significance import bonferroni, log_binom_sf
from prober.model import Finding, FindingKind, Proto, TargetKind
from prober.stats import PROTO_INDEX

_SIDE = {POD: "pod", HOST: "host"}
#: Probes of one datagram, no retry (``prober/agent/probes.py``).
_DATAGRAM = np.array([PROTO_INDEX[Proto.UDP], PROTO_INDEX[Proto.DNS]], dtype=np.int64)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Sides:
    """Residual counts per (node, target, side): side 0 is the pod network, 1 the host.
    The targets are the few the rule reads (outside targets, NLBs, NodePorts), column
    ``c`` the table's target ``targets[c]``: never a column per peer."""

    targets: IntArray  # (targets,)
    sent: FloatArray  # (nodes, targets, 2)
    failed: FloatArray
    healthy: BoolArray
    dead: BoolArray
    peer_down: BoolArray  # (nodes,): the node's pod or host peer probes mostly fail
    peer_rate: FloatArray  # (nodes, 2): the failed share of each side's peer probes (0 without any)
    datagram: BoolArray  # (targets,): probed by one datagram (DNS, UDP)
    first_lost: FloatArray  # (nodes, 2): each side's peer probes' share failed or retransmitted
    tests: int

    def others_ok(self, s: int, c: int) -> list[int]:
        """Other nodes whose pod and host both reach target c."""
        return [y for y in np.flatnonzero(self.healthy[:, c].all(axis=1)).tolist() if y != s]

    def own_rate(self, s: int, c: int) -> float:
        """Node s's own failure rate that speaks for its probes of target c: the higher
        side's on its peer probes (loss at a node hits its two networks alike, and a
        side's few probes can miss it), and for a datagram target the higher side's
        share of them that lost their first exchange."""
        rate = float(self.peer_rate[s].max())
        return max(rate, float(self.first_lost[s].max())) if self.datagram[c] else rate

    def others(self, s: int, c: int) -> IntArray:
        """Other nodes with probes of target c and neither side dead on it: the nodes
        whose failures of it are the target's own rate (a cross-wired node's are not)."""
        keep = (self.sent[:, c].sum(axis=1) > 0) & ~self.dead[:, c].any(axis=1)
        keep[s] = False
        return np.flatnonzero(keep)

    def others_rate(self, s: int, c: int, side: int) -> float:
        """The failed share of ``side``'s probes of target c from :meth:`others` (0 without any)."""
        others = self.others(s, c)
        sent = float(self.sent[others, c, side].sum())
        return float(self.failed[others, c, side].sum()) / sent if sent > 0 else 0.0


def _sides(ctx: Context) -> _Sides | None:
    pol = ctx.policy
    t = ctx.table
    classes = kind_mask(ctx.tkind, TargetKind.EXTERNAL, TargetKind.DNS, TargetKind.NLB, TargetKind.NODEPORT)
    rows = classes & ~ctx.same_node
    if not rows.any():
        return None
    targets = sorted_unique(t.target[rows])
    n_nodes, n_t = ctx.n_nodes, targets.size
    column = np.searchsorted(targets, t.target[rows])
    key = (ctx.src[rows] * n_t + column) * N_SRC_KINDS + ctx.src_kind[rows]
    size = n_nodes * n_t * N_SRC_KINDS
    datagram = np.zeros(n_t, dtype=np.bool_)
    datagram[column[np.isin(t.proto[rows], _DATAGRAM)]] = True
    sent = weighted_count(key, ctx.live[rows], size).reshape(n_nodes, n_t, N_SRC_KINDS)
    failed = weighted_count(key, ctx.residual[rows], size).reshape(n_nodes, n_t, N_SRC_KINDS)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sent > 0, failed / np.maximum(sent, 1e-300), np.nan)
    cross = ctx.crossing
    side_key = ctx.src[cross] * N_SRC_KINDS + ctx.src_kind[cross]
    sides = (n_nodes, N_SRC_KINDS)
    peer_sent = np.bincount(side_key, ctx.live[cross], minlength=n_nodes * N_SRC_KINDS).reshape(sides)
    peer_fail = np.bincount(side_key, ctx.residual[cross], minlength=n_nodes * N_SRC_KINDS).reshape(sides)
    lost = ctx.residual[cross] + ctx.slow[cross]  # slow: TCP successes after a SYN retransmit
    peer_lost = np.bincount(side_key, lost, minlength=n_nodes * N_SRC_KINDS).reshape(sides)
    peer_lost = np.minimum(peer_lost, peer_sent)
    n_classes = int((sent.sum(axis=2) > 0).any(axis=0).sum())
    return _Sides(
        targets=targets,
        sent=sent,
        failed=failed,
        healthy=(sent > 0) & (ratio <= pol.healthy_ratio),
        dead=(sent > 0) & (ratio >= pol.dead_ratio),
        peer_down=np.asarray((peer_fail > 0.5 * peer_sent).any(axis=1), dtype=np.bool_),
        peer_rate=np.where(peer_sent > 0, peer_fail / np.maximum(peer_sent, 1e-300), 0.0),
        datagram=datagram,
        first_lost=np.where(peer_sent > 0, peer_lost / np.maximum(peer_sent, 1e-300), 0.0),
        tests=n_nodes * max(1, n_classes) * N_SRC_KINDS,
    )


def _hits(ctx: Context, sd: _Sides) -> dict[int, list[tuple[int, int, float]]]:
    """Per node: (target, failing side, corrected log p) of every cross-wired target."""
    pol = ctx.policy
    hits: dict[int, list[tuple[int, int, float]]] = {}
    for s_, c_, bad_ in zip(*np.nonzero(sd.dead), strict=True):
        s, c, bad = int(s_), int(c_), int(bad_)
        if not sd.healthy[s, c, 1 - bad] or sd.sent[s, c].sum() < pol.min_samples:
            continue
        if not sd.others_ok(s, c):
            continue  # no other node shows the target reachable from both networks
        if sd.peer_down[s]:
            continue  # S's pod or host network is down, not cross-wired
        null = max(pol.background_failure_rate, sd.own_rate(s, c), sd.others_rate(s, c, bad))
        lp = bonferroni(log_binom_sf(math.floor(sd.failed[s, c, bad]), sd.sent[s, c, bad], null), sd.tests)
        if lp <= math.log(pol.alpha):
            hits.setdefault(s, []).append((c, bad, lp))
    return hits


def detect(ctx: Context) -> list[Finding]:
    sd = _sides(ctx)
    if sd is None:
        return []
    hits = _hits(ctx, sd)
    sent, failed = sd.sent, sd.failed
    findings: list[Finding] = []
    for s in sorted(hits, key=lambda x: ctx.nodes[x]):
        node = ctx.nodes[s]
        parts: list[str] = []
        paths: set[str] = set()
        sides: set[int] = set()
        for c, bad, _ in sorted(hits[s], key=lambda h: ctx.target_label(int(sd.targets[h[0]]))):
            good, target = 1 - bad, int(sd.targets[c])
            others = sd.others(s, c)
            o_sent, o_fail = sent[others, c].sum(axis=0), failed[others, c].sum(axis=0)
            bad_frac = frac(failed[s, c, bad], sent[s, c, bad])
            parts.append(
                f"from {node} to {ctx.target_label(target)}: {_SIDE[bad]} {bad_frac} "
                f"failed, {_SIDE[good]} {frac(failed[s, c, good], sent[s, c, good])} failed; on "
                f"{len(others)} other nodes pod {frac(o_fail[POD], o_sent[POD])} and host "
                f"{frac(o_fail[HOST], o_sent[HOST])} failed"
            )
            rows = (ctx.src == s) & (ctx.table.target == target) & (ctx.src_kind == bad) & ~ctx.same_node
            paths.update(ctx.paths_in(rows))
            sides.add(bad)
            ctx.claim_all(rows)
        side = _SIDE[sides.pop()] if len(sides) == 1 else "pod and host"
        lp = max(h[2] for h in hits[s])
        findings.append(
            MODE.finding(
                ctx, nodes=[node], paths=sorted(paths), log_p=lp, evidence="; ".join(parts), side=side
            )
        )
    return findings


MODE = FailureMode(
    kind=FindingKind.SNAT_ASYMMETRIC,
    detect=detect,
    severity="critical",
    summary="Cross-wired reachability on {node}: its pods and its host network reach different targets "
    "(VPC CNI SNAT with strict rp_filter).",
    remediation="Replies to {side} traffic from {node} are dropped by the reverse-path filter (VPC CNI SNAT "
    "with pods on secondary ENIs): set AWS_VPC_K8S_CNI_EXTERNALSNAT=true on the aws-node DaemonSet (SNAT "
    "at a NAT gateway) or relax rp_filter to loose mode (net.ipv4.conf.all.rp_filter=2 and on the "
    "secondary ENIs); check `ip rule` and `ip route show table <n>` for the pod's ENI.",
    alert_fills={"side": "pod or host"},
    alert=AlertSpec(name="ProberSnatAsymmetric", severity="warning"),
    lab_fault=LabFault(
        usage="snat-asymmetric@NODE",
        arity=Arity.ONE_OR_MORE,
        cni="vpc",
        what="strict rp_filter on NODE's eth0 while the node SNATs pod traffic to eth0's address: "
        "replies for the secondary-ENI pod fail the reverse-path check (pod 0%, node 100%); "
        "so do NodePort requests for it (the lab's NodePort 30081, amazon-vpc-cni-k8s #75)",
        production="AWS VPC CNI AWS_VPC_K8S_CNI_EXTERNALSNAT=false with net.ipv4.conf.eth0.rp_filter=1 "
        "and pods on a secondary ENI (ip rule from <pod> lookup 2)",
    ),
)
