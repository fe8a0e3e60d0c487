"""bridge-netfilter: on one node, pods cannot reach a Service backend on their own node.

Without ``br_netfilter`` (or with ``net.bridge.bridge-nf-call-iptables=0``) on a
bridge CNI node, a pod's SYN to a ClusterIP is DNATed to a pod on the same bridge,
whose reply never passes conntrack: the client sees the backend's address, resets,
and times out. Everything else works. The signature on node S:

* A. pod-to-service from S: successes are never served by S (Poisson, as for the
  hairpin: expected from S's share among every other node's successes) and the
  probes fail more than the background (binomial) — both, the weaker one counts;
* B. pod-to-service-local from S (always a backend on S) fails at ``dead_ratio`` or
  more (binomial tail);
* guards, each of which would point elsewhere: host-to-service-local from S works
  (S's echo is up), and pod-to-pod into and out of S works (S's pod network is up).

A and B are combined with Fisher's method when both have data (either alone is
enough when the other has none), Bonferroni over nodes. The samples the test rests on
(``min_samples``) are A's and B's probes and the host's probes of its local Service,
the comparison's healthy side (as snat-asymmetric counts its host side): at three
service-local probes a round, the 20 s recent sub-window holds only ~4 arrived
failures of a fresh fault. A finding per node. It also
explains S's pods' probes of S's own NodePort that kube-proxy sent to a backend on S
(in-node callers are balanced over every endpoint).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from prober.arrays import sorted_unique
from prober.diagnose.context import HOST, POD, Context, count, frac, kind_mask, weighted_count
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.significance import bonferroni, log_binom_sf, log_fisher, log_poisson_cdf
from prober.model import Finding, FindingKind, TargetKind


@dataclass(frozen=True, slots=True, kw_only=True)
class _Node:
    """What one node's pod agent saw, for the test and the evidence."""

    local: tuple[float, float]  # pod-to-service-local from S: failed, probes
    host_local: tuple[float, float]  # host-to-service-local from S
    service: tuple[float, float]  # pod-to-service from S (failures have no serving node)
    served_ok: float  # pod-to-service successes from S
    self_ok: float  # ... served by S
    expected: float  # ... expected to be served by S (its share among other nodes' successes)
    expected_sd: float
    pod_peers: tuple[float, float]  # pod-to-pod/host from S and pod targets into S


def _observe_all(ctx: Context) -> Callable[[int], _Node]:
    """Every node's counts at once (one pass over the rows); a view per node."""
    sh = ctx.shares
    n = ctx.n_nodes
    pod, host = ctx.src_kind == POD, ctx.src_kind == HOST
    svc = kind_mask(ctx.tkind, TargetKind.SERVICE) & pod
    served = svc & ctx.node_dst
    src, by = ctx.src, ctx.by_node
    # Successes per (server group, source): the expected self-served count of each source.
    # Only the Services' groups (of every node's NodePort and NLB too).
    groups = sorted_unique(sh.group[served])
    at = np.searchsorted(groups, sh.group[served])
    per_group = weighted_count(at * n + src[served], ctx.ok[served], groups.size * n).reshape(groups.size, n)
    q, q_var = sh.others_share(groups)
    expected = (per_group * q).sum(axis=0)
    variance = (per_group**2 * q_var).sum(axis=0)
    local, host_local = ctx.local_service & pod, ctx.local_service & host
    out, into = ctx.crossing & pod, ctx.crossing & kind_mask(ctx.tkind, TargetKind.POD)
    counts = {
        "local": (by(src, ctx.residual, local), by(src, ctx.live, local)),
        "host_local": (by(src, ctx.residual, host_local), by(src, ctx.live, host_local)),
        "service": (by(src, ctx.fail, svc), by(src, ctx.sent, svc)),  # raw, as for the hairpin
        "peers": (
            by(src, ctx.residual, out) + by(ctx.ingress, ctx.residual, into),
            by(src, ctx.live, out) + by(ctx.ingress, ctx.live, into),
        ),
    }
    served_ok = by(src, ctx.ok, served)
    self_ok = by(src, ctx.ok, served & (ctx.dst == src))

    def node(s: int) -> _Node:
        def pair(name: str) -> tuple[float, float]:
            f, m = counts[name]
            return float(f[s]), float(m[s])

        return _Node(
            local=pair("local"),
            host_local=pair("host_local"),
            service=pair("service"),
            served_ok=float(served_ok[s]),
            self_ok=float(self_ok[s]),
            expected=float(expected[s]),
            expected_sd=math.sqrt(float(variance[s])),
            pod_peers=pair("peers"),
        )

    return node


def _log_p(ctx: Context, o: _Node) -> float | None:
    """Corrected log p-value of the signature on this node, or None when it does not fit."""
    pol = ctx.policy
    (f_l, n_l), (f_hl, n_hl), (f_svc, n_svc) = o.local, o.host_local, o.service
    if f_l == 0 and f_svc == 0:
        return None
    # What the fault makes impossible: a working service-local, a success served by S.
    if n_l > 0 and f_l < pol.dead_ratio * n_l:
        return None
    if o.self_ok > 0.1 * o.expected:
        return None
    # Guards: S's echo answers its own host; S's pod network carries pod-to-pod.
    if n_hl > 0 and f_hl > pol.healthy_ratio * n_hl:
        return None
    if o.pod_peers[0] > 0.5 * o.pod_peers[1]:
        return None
    # The host's probes of the same local Service, healthy here, are the other side of the
    # comparison (as snat-asymmetric's host side is) and count towards the samples.
    if n_l + n_hl + n_svc < pol.min_samples:
        return None
    lps = []
    if n_l > 0:
        lps.append(log_binom_sf(math.floor(f_l), n_l, pol.background_failure_rate))
    if n_svc > 0 and o.expected > 0:
        lp_self = log_poisson_cdf(o.self_ok, max(0.0, o.expected - 2.0 * o.expected_sd))
        lp_fail = log_binom_sf(math.floor(f_svc), n_svc, pol.background_failure_rate)
        lps.append(max(lp_self, lp_fail))
    if not lps:
        return None
    lp = bonferroni(log_fisher(lps), ctx.n_nodes)
    return lp if lp <= math.log(pol.alpha) else None


def _evidence(node: str, o: _Node) -> str:
    (f_l, n_l), (f_hl, n_hl), (f_svc, n_svc) = o.local, o.host_local, o.service
    parts = []
    if n_l > 0:
        hl = f" (host-to-service-local from {node}: {frac(f_hl, n_hl)} failed)" if n_hl else ""
        parts.append(f"pod-to-service-local from {node}: {frac(f_l, n_l)} failed{hl}")
    if n_svc > 0:
        parts.append(
            f"pod-to-service from {node}: {frac(f_svc, n_svc)} failed, {count(o.self_ok)} of "
            f"{count(o.served_ok)} successes served by {node} (expected ~{count(o.expected)})"
        )
    parts.append(f"pod-to-pod from and to {node}: {frac(*o.pod_peers)} failed")
    return "; ".join(parts)


def detect(ctx: Context) -> list[Finding]:
    pod = ctx.src_kind == POD
    service = kind_mask(ctx.tkind, TargetKind.SERVICE) & pod
    local = ctx.local_service & pod
    nodeport = kind_mask(ctx.tkind, TargetKind.NODEPORT) & pod
    # Only nodes whose pods have unexplained Service failures can show the signature.
    candidates = np.unique(ctx.src[(service | local) & (ctx.residual > 0)])
    observe = _observe_all(ctx)
    findings: list[Finding] = []
    for s in candidates.tolist():
        o = observe(s)
        lp = _log_p(ctx, o)
        if lp is None:
            continue
        node = ctx.nodes[s]
        from_s = ctx.src == s
        # pod -> own NodePort breaks likewise whenever kube-proxy picks a backend on S.
        own_np = nodeport & from_s & ctx.own_nodeport
        paths = ctx.paths_in((service | local | own_np) & from_s)
        ctx.claim_all(local & from_s)
        ctx.claim_expected((service | own_np) & from_s, ctx.share_of(s))
        findings.append(
            MODE.finding(
                ctx, nodes=[node], pairs=[(node, node)], paths=paths, log_p=lp, evidence=_evidence(node, o)
            )
        )
    return findings


MODE = FailureMode(
    kind=FindingKind.BRIDGE_NETFILTER,
    detect=detect,
    severity="critical",
    summary="ClusterIP Services fail from {node} when the backend is on the same node (br_netfilter "
    "missing: same-bridge replies skip conntrack).",
    remediation="On {node}: `modprobe br_netfilter` and `sysctl -w net.bridge.bridge-nf-call-iptables=1`; "
    "persist both in the node image (/etc/modules-load.d/br_netfilter.conf, /etc/sysctl.d/) and make sure "
    "the module loads before kubelet and kube-proxy start (a systemd unit ordered before them).",
    alert=AlertSpec(name="ProberBridgeNetfilter", severity="warning"),
    lab_fault=LabFault(
        usage="bridge-netfilter@NODE",
        arity=Arity.ONE_OR_MORE,
        cni="bridge",
        what="net.bridge.bridge-nf-call-iptables=0 on NODE: same-bridge replies skip conntrack, "
        "so a pod's ClusterIP connection to a backend on its own node is never un-DNATed",
        production="br_netfilter not loaded (or bridge-nf-call-iptables=0) on a bridge CNI node "
        "(flannel, kubenet, kops)",
    ),
)
