"""nlb-hairpin: an NLB with client-IP preservation never delivers a node's own probes back to it.

When the NLB picks the client's own node (instance targets, externalTrafficPolicy:
Cluster, preserve_client_ip.enabled=true), the reply short-cuts the NLB, the
client resets it, and the SYN times out. Seen from the mesh:

* successes from a node are **never** served by that node. Under the null (no
  hairpin) a node's successes land on itself at the share it has among every other
  node's successes, ``q``; the count of self-served successes over all nodes is then
  about Poisson with mean ``E = sum(successes x q)``. The test is
  ``P(X <= observed | E_lower)``, with ``E_lower`` two standard errors under ``E`` (the
  shares are estimated from the same window);
* and NLB probes fail more than the background (exact binomial tail, on the raw
  counts: a dead node's share of them may be claimed already, and the test above
  is what tells a hairpin apart).

Both must hold (the confidence is that of the weaker test, Bonferroni over NLBs),
except where the NLB picks a client's own node too seldom for the failures to stand out
from the background (1/N of the picks in a large cluster): then the failures need only
be as many as a hairpin makes, and the first test, over all clients, decides;
with self-served successes at most a tenth of the expectation; pod and host clients
alike. One finding per NLB; ``nodes`` are the clients whose successes were never
self-served, or significantly less often than expected (the same Poisson test per
client: a fault that ended inside the window leaves a few self-served successes).
No such client, no finding. Claims, per client, the failures expected from its own
share.

A hairpin that began inside the window leaves the successes through the client's own
node from before it, more than a tenth of the expectation in a large cluster until they
leave the window (300 s for the long one), where the picks of a client's own node are
1 in N. Then both tests read the NLB's probes sent after the last such success
(:class:`_Since`): under the null their successes are the geometric run the first test
prices, and choosing the cut among the window's such successes costs a Bonferroni factor.

Under externalTrafficPolicy: Cluster the node the NLB picks forwards the probe on to
any node's echo, masqueraded to its own address, so a client's successes *are* served
by its own node now and then (through another node), and the test above says
nothing. The node the NLB picked is then the entry node, named by the client address
the echo saw (``seen_src_ip`` read back through the inventory's node addresses and pod
ranges, :func:`~prober.diagnose.context.nlb_picks`): the same test runs with
"entered through the client's own node" in place of "served by it", and the claims
use the chance the NLB enters the client's node. A success served by the client's own
echo through another node is what a hairpin allows, not evidence against it. Counted
over all clients together, the test has its samples in a large cluster too, where
each client's own are few.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray
from prober.diagnose.context import Context, count, entry_shares, frac, join_limited, kind_mask, pct
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.significance import bonferroni, log_binom_sf, log_poisson_cdf
from prober.model import PATH_INDEX, PATHS, Finding, FindingKind, TargetKind
from prober.stats import OK


def detect(ctx: Context) -> list[Finding]:
    pol = ctx.policy
    sh = ctx.shares
    nlb = kind_mask(ctx.tkind, TargetKind.NLB)
    if not nlb.any():
        return []
    g = sh.group
    targets = sorted(set(ctx.table.target[nlb].tolist()), key=ctx.target_label)
    findings: list[Finding] = []
    for t in targets:
        rows = nlb & (ctx.table.target == t)
        entries = _entries(ctx, rows)
        if entries is not None:
            found = _detect_two_hop(ctx, t, rows, entries, len(targets))
            findings += [found] if found is not None else []
            continue
        groups = np.flatnonzero(sh.target == t)
        q, q_var = sh.others_share(groups)
        succ_by_src = sh.src_succ.rows(groups)  # (groups, nodes): successes of each client
        self_by_src = sh.self_succ.rows(groups).sum(axis=0)
        addresses = [ctx.table.target_ips[i] if i >= 0 else "" for i in sh.target_ip[groups].tolist()]
        test = _self_test(ctx, addresses, succ_by_src, self_by_src, q=q, q_var=q_var)
        if test is None:
            continue
        failed, sent, predicted = _failures(ctx, rows, groups, test.since)
        if sent < pol.min_samples:
            continue
        lp_fail = _failures_log_p(failed, sent, predicted, pol.background_failure_rate)
        if lp_fail is None:
            continue
        lp = bonferroni(max(test.log_p, lp_fail), len(targets))
        if lp > math.log(pol.alpha):
            continue

        clients = _hairpinned(test.succ_by_src, test.self_by_src, q, pol.alpha)
        if not clients:
            continue
        names = sorted(ctx.nodes[x] for x in clients)
        evidence = _evidence(ctx, t, rows, groups=groups, q=q, clients=clients)
        if test.since is not None:
            evidence += test.since.describe(ctx, test.expected, "served by")
        paths = ctx.paths_in(rows)

        mine = rows & np.isin(ctx.src, clients) & (g >= 0)  # every probe, for the expectation
        p_self = np.zeros(ctx.table.rows, dtype=np.float64)
        p_self[mine] = sh.share.at(g[mine], ctx.src[mine])
        ctx.claim_expected(mine, p_self)
        findings.append(
            MODE.finding(
                ctx,
                nodes=names,
                pairs=[(x, x) for x in names],
                paths=paths,
                log_p=lp,
                evidence=evidence,
                share_of=mine,
            )
        )
    return findings


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entries:
    """An NLB's successes under externalTrafficPolicy: Cluster, by the node each entered.

    One entry per success whose echo saw a node's address (``Topology.node_at``):
    ``group`` the NLB address (index into ``addresses``), ``src`` the client node,
    ``entry`` the node the NLB picked, ``path`` its path index.
    """

    addresses: list[str]
    group: IntArray
    src: IntArray
    entry: IntArray
    path: IntArray


def _entries(ctx: Context, rows: BoolArray) -> _Entries | None:
    """The NLB's successes by entry node when its probes take two hops (externalTrafficPolicy:
    Cluster, :func:`~prober.diagnose.context.nlb_picks`), else None (Local: the serving
    node is the one the NLB picked)."""
    t = ctx.table
    addresses = sorted({t.target_ips[i] for i in np.unique(t.target_ip[rows]).tolist() if i >= 0})
    picks = ctx.nlb_picks
    nb = ctx.evidence.nlb_probes
    if picks is None or nb is None or not picks.two_hop & set(addresses):
        return None
    where = {a: i for i, a in enumerate(addresses)}
    node_index = {x: i for i, x in enumerate(ctx.nodes)}
    ks = [
        k
        for k in np.flatnonzero(nb.outcome == OK).tolist()
        if nb.target_ip[k] in where and picks.node[k] in node_index and nb.src_node[k] in node_index
    ]
    return _Entries(
        addresses=addresses,
        group=np.array([where[nb.target_ip[k] or ""] for k in ks], dtype=np.int64),
        src=np.array([node_index[nb.src_node[k]] for k in ks], dtype=np.int64),
        entry=np.array([node_index[picks.node[k] or ""] for k in ks], dtype=np.int64),
        path=np.array([PATH_INDEX.get(nb.path[k], -1) for k in ks], dtype=np.int64),
    )


def _detect_two_hop(ctx: Context, t: int, rows: BoolArray, en: _Entries, n_targets: int) -> Finding | None:
    """The hairpin behind externalTrafficPolicy: Cluster: successes never *entered* through
    the client's own node (the test of the module docstring with the entry node, learned
    from the client address the echo saw, in place of the serving node, which is any)."""
    pol = ctx.policy
    n, g_count = ctx.n_nodes, len(en.addresses)
    size = g_count * n
    entered = np.bincount(en.group * n + en.entry, minlength=size).reshape(g_count, n).astype(np.float64)
    mine = en.entry == en.src
    self_entered = np.bincount(en.group[mine] * n + en.src[mine], minlength=size).reshape(g_count, n)
    succ_by_src = np.bincount(en.group * n + en.src, minlength=size).reshape(g_count, n)
    total = entered.sum(axis=1)
    denom = total[:, None] - succ_by_src
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.where(denom > 0, (entered - self_entered) / denom, 0.0), 0.0, 1.0)
        q_var = np.where(denom > 0, q * (1.0 - q) / denom, 0.0)
    test = _self_test(
        ctx, en.addresses, succ_by_src.astype(np.float64), self_entered.sum(axis=0), q=q, q_var=q_var
    )
    if test is None:
        return None
    since = test.since
    failed = float(ctx.fail[rows].sum())
    sent = float(ctx.sent[rows].sum())
    share = entry_shares(ctx, entered - self_entered, entered)
    t_ = ctx.table
    where = {a: i for i, a in enumerate(en.addresses)}
    row_group = np.array(
        [where.get(t_.target_ips[i], -1) if i >= 0 else -1 for i in range(len(t_.target_ips))] + [-1],
        dtype=np.int64,
    )[t_.target_ip]
    own = rows & (row_group >= 0)
    predicted = float((ctx.sent[own] * share[row_group[own], ctx.src[own]]).sum())
    if since is not None:
        failed, sent = since.failed, float(since.size)
        predicted = float(share[since.group, since.src].sum())
    if sent < pol.min_samples:
        return None
    lp_self = test.log_p
    lp_fail = _failures_log_p(failed, sent, predicted, pol.background_failure_rate)
    if lp_fail is None:
        return None
    lp = bonferroni(max(lp_self, lp_fail), n_targets)
    if lp > math.log(pol.alpha):
        return None
    clients = _hairpinned(test.succ_by_src, test.self_by_src, q, pol.alpha)
    if not clients:
        return None
    names = sorted(ctx.nodes[x] for x in clients)

    # Claims: a client's NLB failures, as many as the NLB picks its own node.
    claim = rows & np.isin(ctx.src, clients) & (row_group >= 0)
    p_self = np.zeros(t_.rows, dtype=np.float64)
    p_self[claim] = share[row_group[claim], ctx.src[claim]]
    ctx.claim_expected(claim, p_self)

    evidence = _two_hop_evidence(ctx, t, rows, en, q=q, clients=clients, self_entered=self_entered)
    if since is not None:
        evidence += since.describe(ctx, test.expected, "entered through")
    return MODE.finding(
        ctx,
        nodes=names,
        pairs=[(x, x) for x in names],
        paths=ctx.paths_in(rows),
        log_p=lp,
        evidence=evidence,
        share_of=claim,
    )


def _two_hop_evidence(
    ctx: Context,
    t: int,
    rows: BoolArray,
    en: _Entries,
    *,
    q: FloatArray,
    clients: list[int],
    self_entered: IntArray,
) -> str:
    """Per path: failures, and successes entered through the client's own node against the
    expectation; the worst client."""
    mine = en.entry == en.src
    by_src = self_entered.sum(axis=0)
    succ_by_src = np.bincount(en.src, minlength=ctx.n_nodes)
    names = sorted(ctx.nodes[x] for x in clients)
    parts = []
    for p in sorted(set(ctx.table.path[rows].tolist())):
        pr = rows & (ctx.table.path == p)
        on_p = en.path == p
        exp_p = float(q[en.group[on_p], en.src[on_p]].sum())
        self_p = int((on_p & mine).sum())
        f_p, n_p = float(ctx.fail[pr].sum()), float(ctx.sent[pr].sum())
        parts.append(
            f"{PATHS[p]}: {frac(f_p, n_p)} failed ({pct(f_p, n_p)}); {count(self_p)} of "
            f"{count(int(on_p.sum()))} successes entered through the client's own node "
            f"(expected ~{count(exp_p)})"
        )
    worst = _worst_client(ctx, rows, clients)
    wr = rows & (ctx.src == worst)
    w_exp = float(q[en.group[en.src == worst], worst].sum())
    parts.append(
        f"e.g. from {ctx.nodes[worst]}: {frac(ctx.fail[wr].sum(), ctx.sent[wr].sum())} failed, "
        f"{count(int(by_src[worst]))} of {count(int(succ_by_src[worst]))} successes entered "
        f"through {ctx.nodes[worst]} (expected ~{count(w_exp)})"
    )
    return (
        f"{ctx.target_label(t)} (externalTrafficPolicy: Cluster: the entry node from the client address "
        f"the echo saw) across {len(names)} client nodes: {join_limited(parts, 5)}"
    )


def _worst_client(ctx: Context, rows: BoolArray, clients: list[int]) -> int:
    """The client with the most failed probes among ``rows`` (the lowest on a tie), from one
    sum per source node: a pass over the rows per client is quadratic in the nodes (it was
    1.1 of a 1,000-node window's 3.2 CPU-s once a hairpin named every node)."""
    failed = np.bincount(ctx.src[rows], weights=ctx.fail[rows], minlength=len(ctx.nodes))
    return max(clients, key=lambda x: (float(failed[x]), -x))


def _evidence(
    ctx: Context, t: int, rows: BoolArray, *, groups: IntArray, q: FloatArray, clients: list[int]
) -> str:
    """Per path: failures, and self-served successes against the expectation; the worst
    client. ``q``: the others' shares of ``groups``, every server group of target ``t``."""
    at = np.full(ctx.shares.n_groups, -1, dtype=np.int64)
    at[groups] = np.arange(groups.size)
    g = np.where(ctx.shares.group >= 0, at[ctx.shares.group], -1)
    parts = []
    for p in sorted(set(ctx.table.path[rows].tolist())):
        pr = rows & (ctx.table.path == p)
        served = pr & ctx.node_dst & (g >= 0)
        ok = ctx.ok[served]
        exp_p = float((ok * q[g[served], ctx.src[served]]).sum())
        self_p = float(ok[ctx.dst[served] == ctx.src[served]].sum())
        f_p, n_p = float(ctx.fail[pr].sum()), float(ctx.sent[pr].sum())
        parts.append(
            f"{PATHS[p]}: {frac(f_p, n_p)} failed ({pct(f_p, n_p)}); {count(self_p)} of "
            f"{count(ok.sum())} successes served by the client's own node (expected ~{count(exp_p)})"
        )
    worst = _worst_client(ctx, rows, clients)
    wr = rows & (ctx.src == worst)
    ws = wr & ctx.node_dst & (g >= 0)
    w_self = float(ctx.ok[ws & (ctx.dst == worst)].sum())
    w_exp = float((ctx.ok[ws] * q[g[ws], worst]).sum())
    parts.append(
        f"e.g. from {ctx.nodes[worst]}: {frac(ctx.fail[wr].sum(), ctx.sent[wr].sum())} failed, "
        f"{count(w_self)} of {count(ctx.ok[wr].sum())} successes served by {ctx.nodes[worst]} "
        f"(expected ~{count(w_exp)})"
    )
    names = sorted(ctx.nodes[x] for x in clients)
    return f"{ctx.target_label(t)} across {len(names)} client nodes: {join_limited(parts, 5)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Since:
    """An NLB's probes sent after the last success that landed on its client's own node.

    A hairpin that began inside the window leaves the successes that landed on their
    client's own node before it: a few, in a large cluster, and as many as make the
    window's count unremarkable (0.1% of the picks at 1,000 nodes), until they leave
    the window. Under the null the successes since the last of them are geometric, as
    the 5-tuple collision rule reads its groups: P(none in successes of expectation
    ``E``) = exp(-E). The cut is one of ``cuts`` (each such success, or none), so the
    test pays Bonferroni for them.
    """

    cut: float  # when the last success that landed on its client's own node was sent
    cuts: int
    group: IntArray  # per probe after the cut: its address's position in the rule's list
    src: IntArray
    ok: BoolArray

    @property
    def size(self) -> int:
        return int(self.group.size)

    @property
    def failed(self) -> float:
        return float(self.size - int(self.ok.sum()))

    def successes(self, n_groups: int, n: int) -> FloatArray:
        """(address, client node): the successes after the cut."""
        key = self.group[self.ok] * n + self.src[self.ok]
        result: FloatArray = np.bincount(key, minlength=n_groups * n).reshape(n_groups, n).astype(np.float64)
        return result

    def describe(self, ctx: Context, expected: float, how: str) -> str:
        ago = ctx.table.end_ts - self.cut
        ok = int(self.ok.sum())
        return (
            f"; since the last success {how} its client's own node ({ago:.0f} s before the "
            f"window's end): none of {count(ok)} (expected ~{count(expected)})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _SelfTest:
    """The first test of the module docstring: successes that landed on their client's
    own node against the expectation, over the window or (``since``) after the last one."""

    succ_by_src: FloatArray  # (address, client node): the successes tested
    self_by_src: FloatArray  # per client node: of them, landed on its own node
    expected: float
    log_p: float
    since: _Since | None


def _self_test(
    ctx: Context,
    addresses: list[str],
    succ_by_src: FloatArray,
    self_by_src: FloatArray,
    *,
    q: FloatArray,
    q_var: FloatArray,
) -> _SelfTest | None:
    """The test over the window; where it holds more than a tenth of the expectation, over
    the successes since the last that landed on its client's own node (:class:`_Since`);
    None when neither can name a hairpin."""
    since = None
    observed = float(self_by_src.sum())
    expected = float((succ_by_src * q).sum())
    if expected > 0 and observed > 0.1 * expected:
        since = _since_last_self(ctx, addresses, expected)
        if since is None:
            return None
        succ_by_src = since.successes(len(addresses), ctx.n_nodes)
        self_by_src = np.zeros(ctx.n_nodes, dtype=np.float64)
        expected, observed = float((succ_by_src * q).sum()), 0.0
    if expected <= 0:
        return None
    sd = math.sqrt(float((succ_by_src**2 * q_var).sum()))
    log_p = log_poisson_cdf(observed, max(0.0, expected - 2.0 * sd))
    if since is not None:
        log_p = min(0.0, log_p + math.log(since.cuts))
    return _SelfTest(
        succ_by_src=succ_by_src, self_by_src=self_by_src, expected=expected, log_p=log_p, since=since
    )


def _failures(
    ctx: Context, rows: BoolArray, groups: IntArray, since: _Since | None
) -> tuple[float, float, float]:
    """(failed, sent, the failures a hairpin makes) of the NLB's probes: its rows of the
    window, or its probes after the cut."""
    sh = ctx.shares
    if since is not None:
        return since.failed, float(since.size), float(sh.share.at(groups[since.group], since.src).sum())
    g = sh.group
    own = rows & (g >= 0)
    predicted = float((ctx.sent[own] * sh.share.at(g[own], ctx.src[own])).sum())
    return float(ctx.fail[rows].sum()), float(ctx.sent[rows].sum()), predicted


def _since_last_self(ctx: Context, addresses: list[str], expected: float) -> _Since | None:
    """The probes of ``addresses`` after the last success that landed on its client's own
    node (:class:`_Since`), or None: no NLB probes, no such success, or too few
    successes in the window (``expected`` of them would land so) for any cut to decide."""
    nb, picks = ctx.evidence.nlb_probes, ctx.nlb_picks
    if nb is None or picks is None or expected < -math.log(ctx.policy.alpha):
        return None
    where = {a: i for i, a in enumerate(addresses)}
    node_index = {x: i for i, x in enumerate(ctx.nodes)}
    ks = [k for k in range(nb.size) if nb.target_ip[k] in where and nb.src_node[k] in node_index]
    idx = np.array(ks, dtype=np.int64)
    src = np.array([node_index[nb.src_node[k]] for k in ks], dtype=np.int64)
    landed = np.array([node_index.get(picks.node[k] or "", -1) for k in ks], dtype=np.int64)
    ok = nb.outcome[idx] == OK if idx.size else np.zeros(0, dtype=np.bool_)
    mine = ok & (landed == src)
    if not mine.any():
        return None
    ts = nb.ts[idx]
    cut = float(ts[mine].max())
    after = ts > cut
    group = np.array([where[nb.target_ip[k] or ""] for k in ks], dtype=np.int64)
    return _Since(cut=cut, cuts=int(mine.sum()) + 1, group=group[after], src=src[after], ok=ok[after])


def _failures_log_p(failed: float, sent: float, predicted: float, background: float) -> float | None:
    """The failures' half of the test; None when they are too few for a hairpin.

    ``predicted``: the failures a hairpin makes (every probe times the chance the NLB
    picks the client's own node). Where that clearly exceeds the background's (a small
    cluster), the failures must exceed the background: the binomial tail. Where it does
    not (a large cluster: the NLB picks a client's own node 1 time in N, at or under the
    background rate), no failure count can tell the two apart: the failures need only be
    as many as the hairpin makes (within two standard errors), and the count of
    successes never through the client's own node, over all clients together, decides.
    """
    if predicted >= 2.0 * background * sent:
        return log_binom_sf(math.floor(failed), sent, background)
    if failed >= predicted - 2.0 * math.sqrt(predicted):
        return -math.inf
    return None


def _hairpinned(
    succ_by_src: FloatArray | IntArray, self_by_src: FloatArray | IntArray, q: FloatArray, alpha: float
) -> list[int]:
    """The clients whose own node served none of their successes, or significantly fewer
    than expected (a fault that ended inside the window leaves a few self-served
    successes at its end): the Poisson test of the module docstring, per client."""
    exp_by_src = (succ_by_src * q).sum(axis=0)
    return [
        x
        for x in np.flatnonzero(succ_by_src.sum(axis=0) > 0).tolist()
        if self_by_src[x] == 0
        or (
            self_by_src[x] <= 0.5 * exp_by_src[x]
            and log_poisson_cdf(float(self_by_src[x]), float(exp_by_src[x])) <= math.log(alpha)
        )
    ]


MODE = FailureMode(
    kind=FindingKind.NLB_HAIRPIN,
    detect=detect,
    severity="critical",
    summary="Probes to the NLB from {node} time out when the NLB picks the caller's own node (NLB "
    "hairpin with client IP preservation).",
    remediation="Disable client IP preservation on the NLB's target group "
    "(preserve_client_ip.enabled=false), or use IP targets or externalTrafficPolicy: Local, or send "
    "in-cluster callers to the ClusterIP instead of the NLB.",
    alert=AlertSpec(name="ProberNlbHairpin", severity="warning"),
    slow=True,
    clients=True,
    lab_fault=LabFault(
        usage="nlb-hairpin",
        arity=Arity.NONE,
        what="the NLB forwards with the client's own address (no SNAT), each zone's NLB node to "
        "its own zone's nodes (cross-zone off, the NLB default); a client whose node the NLB picks "
        "gets the reply straight from its own node and never completes",
        production="NLB target group attribute preserve_client_ip.enabled=true (the default for "
        "instance targets) with in-cluster clients of the NLB",
    ),
)
