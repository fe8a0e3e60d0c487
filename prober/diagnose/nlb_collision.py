"""nlb-5tuple-collision: two NLB zone addresses forward one client port to the same target.

With cross-zone load balancing and client-IP preservation, a client that reaches
two NLB addresses from one source IP:port at once can be forwarded to the same
target through two NLB nodes: the target sees one 5-tuple twice and resets one.
Agents send such pairs on purpose every few rounds (``same_source_port``). The
colliding connection stalls: with a probe timeout under a second it times out,
with a longer one it often succeeds on a SYN retransmit once the other flow is gone
(about 1 s late). Both count as *impaired*. The signature, from the individual
probes in :class:`~prober.stats.NlbProbes`:

* a pair has an impaired probe more often than two single NLB probes from the same
  node would (``1 - (1 - p_node)^2``, ``p_node`` the impaired share of the node's
  unpaired probes shrunk toward the pooled rate; the expected count is raised by
  two standard errors), so hairpin, loss or a dead node does not count;
* pairs whose two probes both succeeded at once **never** landed on one target
  node (Poisson: 0 observed, ``sum P(same target)`` expected from each address's
  serving-node shares).

The target is the node the NLB forwarded to: the serving node under
externalTrafficPolicy: Local; under Cluster the node it entered, which forwards on to
any echo, masqueraded to its own address, so the client address the echo saw names it
(:func:`~prober.diagnose.context.nlb_picks`). Both policies collide alike.

Both tests must point the same way (more failed pairs than expected, fewer
same-target pairs); their p-values are combined with Fisher's method, so strong
evidence in one carries a weak other (a dead node already fails many pairs). One
finding per window: the NLB's configuration, not a node, is at fault.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray
from prober.diagnose.context import Context, count, frac, pct
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.policy import DiagnosisPolicy
from prober.diagnose.significance import log_binom_sf, log_fisher, log_poisson_cdf
from prober.model import PATH_INDEX, Finding, FindingKind
from prober.stats import OK, NlbProbes

_SHRINK = 5.0  # pseudo-probes at the pooled rate added to each node's single-probe count


def _pairs(nb: NlbProbes, window_s: float) -> list[tuple[int, int]]:
    """Non-overlapping (i, j): same source node, address and port, different NLB address, close in time."""
    codes: dict[str | None, int] = {}
    node = np.array([codes.setdefault(x, len(codes)) for x in nb.src_node], dtype=np.int64)
    ip = np.array([codes.setdefault(x, len(codes)) for x in nb.src_ip], dtype=np.int64)
    tip = np.array([codes.setdefault(x, len(codes)) for x in nb.target_ip], dtype=np.int64)
    order = np.lexsort((nb.ts, nb.src_port, ip, node))
    a, b = order[:-1], order[1:]
    close = (
        (node[a] == node[b])
        & (ip[a] == ip[b])
        & (nb.src_port[a] == nb.src_port[b])
        & (nb.src_port[a] >= 0)
        & (tip[a] != tip[b])
        & (np.abs(nb.ts[b] - nb.ts[a]) <= window_s)
    )
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    for k in np.flatnonzero(close).tolist():
        i, j = int(a[k]), int(b[k])
        if i in used or j in used:
            continue
        used.update((i, j))
        pairs.append((i, j))
    return pairs


@dataclass(frozen=True, slots=True, kw_only=True)
class _PairStats:
    pairs: int
    failed_pairs: int
    expected_failed: float  # under the null, from each node's single-probe failure rate
    expected_failed_upper: float  # ... plus two standard errors
    both_ok: int  # pairs whose two probes succeeded without a retransmit
    same: int  # ... on one target node
    expected_same: float
    single_failed: int  # single probes impaired
    single: int
    failed_probes: list[int]  # failed (not merely retransmitted) paired probes, to claim


def _single_rates(
    nb: NlbProbes, good: BoolArray, paired: BoolArray
) -> tuple[IntArray, FloatArray, FloatArray]:
    """Per source node: how often its single (unpaired) probes are impaired, shrunk to the pooled rate.

    A node whose every probe fails (isolated, unreachable) thereby explains its own
    failed pairs. Returns (node code of each probe, rate per node, its variance).
    """
    codes: dict[str, int] = {}
    node = np.array([codes.setdefault(x, len(codes)) for x in nb.src_node], dtype=np.int64)
    n_single = np.bincount(node[~paired], minlength=len(codes)).astype(np.float64)
    f_single = np.bincount(node[~paired & ~good], minlength=len(codes)).astype(np.float64)
    pooled = float(f_single.sum() / max(1.0, n_single.sum()))
    rate = (f_single + _SHRINK * pooled) / (n_single + _SHRINK)
    return node, rate, rate * (1.0 - rate) / (n_single + _SHRINK)


def _same_target_chance(
    nb: NlbProbes, ok: BoolArray, landed: tuple[str | None, ...]
) -> Callable[[str | None, str | None], float]:
    """P(two probes to these NLB addresses land on one node), from the node every success landed on."""
    by_ip: dict[str | None, Counter[str]] = {}
    for k in np.flatnonzero(ok).tolist():
        d = landed[k]
        if d is not None:
            by_ip.setdefault(nb.target_ip[k], Counter())[d] += 1

    cache: dict[tuple[str | None, str | None], float] = {}

    def chance(ip1: str | None, ip2: str | None) -> float:
        got = cache.get((ip1, ip2))
        if got is None:
            c1, c2 = by_ip.get(ip1), by_ip.get(ip2)
            got = 0.0
            if c1 and c2:
                got = sum(c1[x] * c2[x] for x in c1.keys() & c2.keys()) / (c1.total() * c2.total())
            cache[(ip1, ip2)] = got
        return got

    return chance


def _stats(
    nb: NlbProbes, landed: tuple[str | None, ...], pairs: list[tuple[int, int]], policy: DiagnosisPolicy
) -> _PairStats:
    ok = nb.outcome == OK
    good = ok & ~nb.retransmitted
    paired = np.zeros(nb.size, dtype=np.bool_)
    for i, j in pairs:
        paired[i] = paired[j] = True
    node, rate, var = _single_rates(nb, good, paired)
    chance = _same_target_chance(nb, ok, landed)
    failed_pairs = both_ok = same = 0
    expected_failed = expected_same = 0.0
    slope = np.zeros(rate.shape[0], dtype=np.float64)
    failed_probes: list[int] = []
    for i, j in pairs:
        p = float(rate[node[i]])
        expected_failed += max(1.0 - (1.0 - p) ** 2, 2.0 * policy.background_failure_rate)
        slope[node[i]] += 2.0 * (1.0 - p)
        if good[i] and good[j]:
            both_ok += 1
            expected_same += chance(nb.target_ip[i], nb.target_ip[j])
            same += int(landed[i] is not None and landed[i] == landed[j])
        else:
            failed_pairs += 1
            failed_probes.extend(k for k in (i, j) if not ok[k])
    return _PairStats(
        pairs=len(pairs),
        failed_pairs=failed_pairs,
        expected_failed=expected_failed,
        expected_failed_upper=expected_failed + 2.0 * math.sqrt(float((slope**2 * var).sum())),
        both_ok=both_ok,
        same=same,
        expected_same=expected_same,
        single_failed=int((~paired & ~good).sum()),
        single=int((~paired).sum()),
        failed_probes=failed_probes,
    )


def _claim(ctx: Context, nb: NlbProbes, probes: list[int]) -> list[str]:
    """Claim the failed paired probes from the rows that counted them; their paths."""
    t = ctx.table
    ip_index = {ip: i for i, ip in enumerate(t.target_ips)}
    node_index = {x: i for i, x in enumerate(t.nodes)}
    rows_of: dict[tuple[int, int, int], list[int]] = {}
    for r in np.flatnonzero(ctx.unknown & (ctx.residual > 0)).tolist():
        rows_of.setdefault((int(t.path[r]), int(t.src[r]), int(t.target_ip[r])), []).append(r)
    paths: set[str] = set()
    for k in probes:
        paths.add(nb.path[k])
        key = (
            PATH_INDEX.get(nb.path[k], -1),
            node_index.get(nb.src_node[k], -1),
            ip_index.get(nb.target_ip[k] or "", -1),
        )
        ctx.claim_count(rows_of.get(key, []), 1.0)
    return sorted(paths)


def detect(ctx: Context) -> list[Finding]:
    pol = ctx.policy
    nb = ctx.evidence.nlb_probes
    if nb is None or nb.size < 2:
        return []
    pairs = _pairs(nb, pol.pair_window_s)
    if len(pairs) < pol.min_samples:
        return []
    # Where each probe landed: the node the NLB picked (under externalTrafficPolicy:
    # Cluster the entry node, which the echo's view of the client names; the serving
    # node is any). The 5-tuple collides there.
    picks = ctx.nlb_picks
    landed = picks.node if picks is not None else nb.dst_node
    st = _stats(nb, landed, pairs, pol)
    if st.single == 0 or st.failed_pairs <= st.expected_failed or st.same > 0.2 * st.expected_same:
        return []  # the two tests must point the same way
    lp_fail = log_binom_sf(st.failed_pairs, st.pairs, min(1.0, st.expected_failed_upper / st.pairs))
    lp_same = log_poisson_cdf(st.same, st.expected_same)
    if lp_same > math.log(0.5):
        return []
    lp = log_fisher([lp_fail, lp_same])
    if lp > math.log(pol.alpha):
        return []
    evidence = (
        f"same-source-port NLB probe pairs: {count(st.failed_pairs)} of {count(st.pairs)} had a failed or "
        f"SYN-retransmitted probe ({pct(st.failed_pairs, st.pairs)}; ~{count(st.expected_failed)} expected "
        f"from how single probes fare: {frac(st.single_failed, st.single)}); {count(st.same)} of "
        f"{count(st.both_ok)} pairs that both succeeded at once landed on one target node "
        f"(expected ~{count(st.expected_same)})"
    )
    paths = _claim(ctx, nb, st.failed_probes)
    return [MODE.finding(ctx, paths=paths, log_p=lp, evidence=evidence)]


MODE = FailureMode(
    kind=FindingKind.NLB_5TUPLE_COLLISION,
    detect=detect,
    severity="warning",
    summary="NLB probes fail when one source port reaches the same target through two NLB zones "
    "(cross-zone 5-tuple collision).",
    remediation="Turn off client IP preservation (preserve_client_ip.enabled=false) or cross-zone load "
    "balancing (load_balancing.cross_zone.enabled=false) on the NLB's target group; with instance targets "
    "behind externalTrafficPolicy: Cluster both may be needed, and IP targets avoid it too. Clients that "
    "reach several NLB addresses at once from one source port (connection pools, DNS round robin) hit it "
    "most: keeping each client on one NLB address avoids it as well.",
    alert=AlertSpec(name="ProberNlb5TupleCollision", severity="warning"),
    slow=True,
    lab_fault=LabFault(
        usage="nlb-5tuple-collision[@NODE]",
        arity=Arity.OPTIONAL_ONE,
        what="client-IP preservation on with cross-zone load balancing: one client port through two "
        "zones' NLB nodes to the same target arrives there as one 5-tuple twice. In-cluster clients "
        "also hairpin in this configuration (diagnosis names both). With @NODE every NLB node "
        "forwards to NODE only, so every same-port pair collides",
        production="NLB cross-zone load balancing on plus preserve_client_ip.enabled=true "
        "(docs/incidents.md#istio-nlb-cross-zone)",
    ),
)
