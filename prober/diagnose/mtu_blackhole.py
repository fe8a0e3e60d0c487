"""mtu-blackhole: small probes get through, large answers connect and then stall.

An MTU black hole is a hop whose MTU is smaller than the endpoints' (a 9,001-byte
jumbo-frame VPC across a 1,500-byte transit gateway, VPN or peering link; an overlay
whose MTU was not lowered for its encapsulation) while the ICMP "fragmentation
needed" it sends back is filtered (a security group, NACL or iptables rule without
ICMP type 3 code 4). TCP sets DF and trusts path MTU discovery, so the handshake and
small exchanges pass and every segment larger than the hop's MTU vanishes: the
connection opens, then the transfer hangs. Only the large-payload probes
(``http-large``, docs/contracts.md § Probe result) see it, as ``stalled``.

Test, per node first: the large probes into node X or out of it (either direction:
which one a hop drops depends on where it sits) stall at ``dead_ratio`` or more, with
``min_sources`` peers, over ``min_samples`` large probes touching X (both directions
pooled, so a round of probes at the production schedule is judged together),
significant against the background rate (binomial tail, Bonferroni over the nodes);
and the *small* probes touching X are healthy (raw failure share at most
``healthy_ratio``, claims or not): small probes failing is some other fault (a dead
node, a blocked pair), never an MTU black hole. Then, of what is left, the pairs
whose large probes stall while their small ones pass and whose two nodes each
completed large transfers with some other node (else it may be a node's link seen
from one peer so far): one finding naming them, pooled over the pairs (Bonferroni
over the pairs with large probes).

Runs after pair-blocked (a blocked pair's large probes time out with its small ones
and are claimed there; they are ``timeout``, not ``stalled``) and before packet-loss.
Claims the stalled large probes it explains; the small probes of the same paths were
fine and are not touched. Stalls of large probes whose small ones pass that are too
few yet to name (a fault that began in the window's last round, one peer so far) are
set aside without a finding: an MTU black hole is their one explanation, and the
localizer would only call them unexplained until the rounds to come name them.
"""

from __future__ import annotations

import math

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray, unique_inverse
from prober.diagnose.context import Context, frac, join_limited, pct, weighted_count
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.significance import bonferroni, log_binom_sf
from prober.model import Finding, FindingKind


def _stalls(ctx: Context, large: BoolArray) -> FloatArray:
    """Per row: the stalls no rule has explained (large rows only)."""
    result: FloatArray = np.where(large, np.minimum(ctx.residual, ctx.stalled), 0.0)
    return result


class _Directions:
    """Large probes per node, into it and out of it: sent, stalled, peers, stalled peers."""

    def __init__(self, ctx: Context, large: BoolArray) -> None:
        n = max(1, ctx.n_nodes)
        stalls = _stalls(ctx, large)
        key = ctx.src[large] * n + ctx.ingress[large]
        uniq, inv = unique_inverse(key)
        self.a: IntArray = uniq // n
        self.b: IntArray = uniq % n
        self.sent: FloatArray = weighted_count(inv, ctx.live[large], len(uniq))
        self.stalled: FloatArray = weighted_count(inv, stalls[large], len(uniq))
        stalled_cell = (self.sent > 0) & (self.stalled >= 0.5 * self.sent)
        self.into = self._per_node(self.b, stalled_cell, ctx.n_nodes)
        self.out = self._per_node(self.a, stalled_cell, ctx.n_nodes)

    def _per_node(self, node: IntArray, stalled_cell: BoolArray, n: int) -> tuple[FloatArray, ...]:
        return (
            weighted_count(node, self.sent, n),
            weighted_count(node, self.stalled, n),
            np.bincount(node, minlength=n).astype(np.float64),
            np.bincount(node[stalled_cell], minlength=n).astype(np.float64),
        )


def _small_health(ctx: Context, small: BoolArray, index: IntArray, x: int) -> tuple[float, float]:
    """(sent, failed) of the small probes whose ``index`` node is ``x``, before any claim."""
    rows = small & (index == x)
    return float(ctx.sent[rows].sum()), float(ctx.fail[rows].sum())


def _node_log_p(ctx: Context, d: _Directions, x: int) -> float | None:
    """Corrected log p-value that node ``x``'s link black-holes large transfers, or None."""
    pol = ctx.policy
    need = min(pol.min_sources, max(1, ctx.n_nodes - 1))
    dead = False
    for sent, stalled, _, stalled_peers in (d.into, d.out):
        if sent[x] > 0 and stalled[x] >= pol.dead_ratio * sent[x] and stalled_peers[x] >= need:
            dead = True
    sent_all = float(d.into[0][x] + d.out[0][x])
    stalled_all = float(d.into[1][x] + d.out[1][x])
    if not dead or sent_all < pol.min_samples:
        return None
    lp = bonferroni(log_binom_sf(math.floor(stalled_all), sent_all, pol.background_failure_rate), ctx.n_nodes)
    return lp if lp <= math.log(pol.alpha) else None


def _describe(d: _Directions, x: int) -> str:
    parts = []
    for (sent, stalled, peers, stalled_peers), what, way in (
        (d.into, "into", "from"),
        (d.out, "out of", "to"),
    ):
        parts.append(
            f"{what} it {frac(stalled[x], sent[x])} stalled ({pct(stalled[x], sent[x])}, "
            f"{way} {int(stalled_peers[x])} of {int(peers[x])} nodes)"
        )
    return "; ".join(parts)


def _healthy(sent: float, failed: float, ratio: float) -> bool:
    return sent > 0 and failed <= ratio * sent


def detect(ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    pol = ctx.policy
    large = ctx.large & ctx.crossing
    if not (large & (ctx.stalled > 0)).any():
        return findings
    small = ctx.crossing & ~ctx.large
    while True:
        d = _Directions(ctx, large)
        best: tuple[float, int, float] | None = None
        candidates = np.flatnonzero((d.into[1] > 0) | (d.out[1] > 0)).tolist()
        for x in candidates:
            lp = _node_log_p(ctx, d, x)
            if lp is None:
                continue
            s_in, f_in = _small_health(ctx, small, ctx.ingress, x)
            s_out, f_out = _small_health(ctx, small, ctx.src, x)
            if not _healthy(s_in + s_out, f_in + f_out, pol.healthy_ratio):
                continue  # small probes fail too: not an MTU black hole
            strength = float(d.into[1][x] + d.out[1][x])
            if best is None or strength > best[0]:
                best = (strength, x, lp)
        if best is None:
            break
        _, x, lp = best
        node = ctx.nodes[x]
        s_in, f_in = _small_health(ctx, small, ctx.ingress, x)
        s_out, f_out = _small_health(ctx, small, ctx.src, x)
        evidence = (
            f"{node}: large-payload probes {_describe(d, x)}; small probes into and out of {node}: "
            f"{frac(f_in + f_out, s_in + s_out)} failed ({pct(f_in + f_out, s_in + s_out)})"
        )
        mine = large & ((ctx.src == x) | (ctx.ingress == x))
        paths = ctx.paths_in(mine)
        ctx.claim_part(mine, ctx.stalled)
        findings.append(MODE.finding(ctx, nodes=[node], paths=paths, log_p=lp, evidence=evidence))
    pairs = _pairs(ctx, large, small)
    if pairs is not None:
        findings.append(pairs)
    _set_aside_weak(ctx, large, small)
    return findings


def _set_aside_weak(ctx: Context, large: BoolArray, small: BoolArray) -> None:
    """Stalls of large probes on cells whose small probes pass, too few yet to name (a fault's
    first round, one peer so far): an MTU black hole is their one explanation, so they are set
    aside for the next rounds to decide, not left for the localizer to call unexplained."""
    pol = ctx.policy
    n = max(1, ctx.n_nodes)
    key = ctx.src * n + ctx.ingress
    cells = np.unique(key[large & (np.minimum(ctx.residual, ctx.stalled) > 0)])
    if cells.size == 0:
        return
    healthy = [
        int(c)
        for c in cells.tolist()
        if _healthy(
            float(ctx.sent[small & (key == c)].sum()),
            float(ctx.fail[small & (key == c)].sum()),
            pol.healthy_ratio,
        )
    ]
    ctx.set_aside(large & np.isin(key, healthy), ctx.stalled)


def _large_ok_elsewhere(ctx: Context, large: BoolArray, x: int, other: int) -> bool:
    """Whether node ``x`` completed a large transfer with a node other than ``other``."""
    touching = large & ((ctx.src == x) | (ctx.ingress == x)) & (ctx.src != other) & (ctx.ingress != other)
    return bool(ctx.ok[touching].sum() > 0)


def _pairs(ctx: Context, large: BoolArray, small: BoolArray) -> Finding | None:
    """One finding for the pairs whose large probes stall while their small ones pass."""
    pol = ctx.policy
    d = _Directions(ctx, large)
    stalled_cells = (d.sent > 0) & (d.stalled > 0) & (d.stalled >= pol.dead_ratio * d.sent)
    if not stalled_cells.any():
        return None
    n = max(1, ctx.n_nodes)
    small_key = ctx.src[small] * n + ctx.ingress[small]
    keep: list[int] = []
    for i in np.flatnonzero(stalled_cells).tolist():
        a, b = int(d.a[i]), int(d.b[i])
        rows = small_key == a * n + b
        if not _healthy(
            float(ctx.sent[small][rows].sum()), float(ctx.fail[small][rows].sum()), pol.healthy_ratio
        ):
            continue
        # A pair, not a node: each of its nodes completed large transfers with some other
        # node. A node seen stalling with one peer only (a fault's first round) may be the
        # node's own link: that waits for the next round's peers.
        if _large_ok_elsewhere(ctx, large, a, b) and _large_ok_elsewhere(ctx, large, b, a):
            keep.append(i)
    if not keep:
        return None
    sent = float(d.sent[keep].sum())
    stalled = float(d.stalled[keep].sum())
    if sent < pol.min_samples:
        return None
    lp = bonferroni(log_binom_sf(math.floor(stalled), sent, pol.background_failure_rate), max(1, len(d.sent)))
    if lp > math.log(pol.alpha):
        return None
    pairs = sorted((ctx.nodes[int(d.a[i])], ctx.nodes[int(d.b[i])]) for i in keep)
    nodes = sorted({x for p in pairs for x in p})
    chosen = np.zeros(large.size, dtype=np.bool_)
    key = ctx.src * n + ctx.ingress
    chosen[large] = np.isin(key[large], [int(d.a[i]) * n + int(d.b[i]) for i in keep])
    paths = ctx.paths_in(chosen)
    ctx.claim_part(chosen, ctx.stalled)
    listed = join_limited([f"{a} -> {b}" for a, b in pairs], limit=6)
    evidence = (
        f"{len(pairs)} node pairs: their large-payload probes {frac(stalled, sent)} stalled "
        f"({pct(stalled, sent)}) while their small probes passed: {listed}"
    )
    return MODE.finding(ctx, nodes=nodes, pairs=pairs, paths=paths, log_p=lp, evidence=evidence)


MODE = FailureMode(
    kind=FindingKind.MTU_BLACKHOLE,
    detect=detect,
    severity="critical",
    summary="Large transfers on some paths connect, then stall, while small probes pass: an MTU black hole.",
    remediation="Connections open and small requests work, but answers larger than a hop's MTU never "
    "arrive: a link on these paths has a smaller MTU than the nodes' interfaces and the ICMP "
    "'fragmentation needed' (type 3, code 4) that would lower the path MTU is dropped. Find the hop "
    "(`tracepath` or `ping -M do -s 8972` toward the peer; `ip link` for each interface's MTU) and either "
    "make the MTU consistent — the nodes' and the overlay's MTU at most the smallest on the path "
    "(VPC jumbo frames are 9001, but transit gateways take 8500 and VPN, peering across regions and the "
    "internet 1500; an overlay (VXLAN, Geneve, IPIP, WireGuard) needs its encapsulation subtracted, e.g. "
    "the CNI's MTU setting) — or let path MTU discovery work: allow ICMP type 3 code 4 in security groups, "
    "network ACLs and iptables/nftables on the way, and clamp TCP MSS where the MTU drops "
    "(`iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu`). "
    "net.ipv4.tcp_mtu_probing=1 on the nodes lets TCP recover without ICMP, slowly.",
    alert=AlertSpec(name="ProberMtuBlackhole", severity="warning"),
    lab_fault=LabFault(
        usage="mtu-blackhole@NODE[:MTU]",
        arity=Arity.ONE_OR_MORE,
        takes_mtu=True,
        what="the router's side of the link toward NODE gets MTU MTU (default 1500; the lab's links are "
        "9001, jumbo frames) and the router drops ICMP fragmentation-needed (iptables -p icmp --icmp-type "
        "fragmentation-needed -j DROP), so path MTU discovery fails",
        production="a hop with a smaller MTU (transit gateway, VPN, peering, an overlay) while security "
        "groups, NACLs or iptables drop ICMP type 3 code 4",
    ),
)
