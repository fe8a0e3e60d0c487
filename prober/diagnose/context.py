"""One window's pair table seen the way rules need it, and the ledger of explained failures.

Rules read derived per-row arrays (the node a probe had to enter, whether it stayed
on its node, the serving-node shares of every load-balanced address) and the
*residual* failure counts: what no earlier rule has explained. A rule that names a
failure mode **claims** the failures it explains, so the rules after it see only
the residue ("explaining away": one root cause, one finding):

* rows whose every probe the fault explains (a dead node's column) are claimed
  whole (:meth:`Context.claim_all`);
* failures with no serving node (a Service probe that timed out) are claimed as an
  expected count, ``probes x P(the balancer picked the faulty node)``, per server
  group and source: all of them when they are within the Poisson bound of that
  count, else only the count, so a second fault on the same rows still shows
  through (:meth:`Context.claim_expected`).

The ledger is the one mutable thing in diagnosis; it lives for one ``diagnose`` call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from prober.arrays import (
    BoolArray,
    FloatArray,
    Int8Array,
    Int32Array,
    IntArray,
    sorted_unique,
    stable_order,
    unique_inverse,
    unique_keys,
)
from prober.diagnose.policy import DiagnosisPolicy
from prober.diagnose.significance import poisson_upper
from prober.model import (
    OUTCOME_INDEX,
    PATHS,
    Finding,
    Outcome,
    Proto,
    SrcKind,
    TargetKind,
    split_path,
)
from prober.stats import (
    OK,
    PROTO_INDEX,
    PROTOS,
    TCP_PROTO_CODES,
    UNKNOWN,
    Evidence,
    PairTable,
    probes_per_row,
)

TARGET_KINDS: Final[tuple[TargetKind, ...]] = tuple(TargetKind)
TK: Final[dict[TargetKind, int]] = {k: i for i, k in enumerate(TARGET_KINDS)}
#: Source-kind codes of ``Context.src_kind``: the position in ``SrcKind``.
SRC_KIND_CODE: Final[dict[SrcKind, int]] = {k: i for i, k in enumerate(SrcKind)}
N_SRC_KINDS: Final[int] = len(SRC_KIND_CODE)
POD: Final[int] = SRC_KIND_CODE[SrcKind.POD]
HOST: Final[int] = SRC_KIND_CODE[SrcKind.HOST]

# One byte a row: the kind masks compare millions of these per pass.
_PATH_SRC_KIND = np.array([SRC_KIND_CODE[split_path(p)[0]] for p in PATHS], dtype=np.int8)
_PATH_TKIND = np.array([TK[split_path(p)[1]] for p in PATHS], dtype=np.int8)
_TIMEOUT = OUTCOME_INDEX[Outcome.TIMEOUT]
_STALLED = OUTCOME_INDEX[Outcome.STALLED]


def weighted_count(index: IntArray, weights: FloatArray, size: int) -> FloatArray:
    """``np.bincount`` with weights, typed as the float array it is."""
    result: FloatArray = np.asarray(np.bincount(index, weights, minlength=size), dtype=np.float64)
    return result


#: Rounding dust in sums of the ledger: far below a fraction of a probe, far above the
#: error of summing the same rows in another order.
DUST: Final = 1e-6


def reaches(part: FloatArray, share: float, whole: FloatArray | float) -> BoolArray:
    """Where ``part`` is at least ``share`` of ``whole``, allowing for rounding dust: what a
    screen asks of sums of the rows when a rule asks the same of its own sums of them
    (summed in another order), so that the screen never rules out what the rule would not."""
    result: BoolArray = np.asarray(part + DUST >= share * np.asarray(whole) * (1 - 1e-9), dtype=np.bool_)
    return result


def kind_mask(tkind: Int8Array, *kinds: TargetKind) -> BoolArray:
    """The rows of any of ``kinds``: a comparison a kind (``np.isin`` builds a lookup
    table and an index array the size of the rows)."""
    result: BoolArray = np.zeros(tkind.shape, dtype=np.bool_)
    for k in kinds:
        result |= tkind == TK[k]
    return result


#: Successes of one address from which its zone restriction (all in one zone) is trusted.
_SURE_SUCCESSES: Final[int] = 8


def _zones(ctx: Context) -> IntArray:
    names = sorted({ctx.evidence.topology.zone(x) for x in ctx.nodes} - {""})
    result: IntArray = np.array(
        [names.index(z) if (z := ctx.evidence.topology.zone(x)) else -1 for x in ctx.nodes], dtype=np.int64
    )
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class Spread:
    """Per server group: the chance its balancer picks each node.

    The balancers prober probes spread evenly over their backends (kube-proxy's
    random choice, the NLB's flow hash), and prober's echo runs on every node, so
    the chance is even over the nodes, whatever the successes show: a fault changes
    which picks *succeed*, not which are made. Two exceptions, read from the
    successes that some node other than the prober served (``others``, :meth:`of`):

    * an address that belongs to one node (its NodePort) and shows no server but
      that node in any success (``served``, the caller's own node included: a NodePort
      that forwards on, externalTrafficPolicy: Cluster, shows it) is that node's
      (externalTrafficPolicy: Local for callers from elsewhere; a node's own callers
      may be sent anywhere, see ``own_nodeport``);
    * an NLB address whose ``min_sure`` or more successes all came from one zone (an
      NLB without cross-zone load balancing) spreads over that zone's nodes only —
      but only while every zone has a node serving something somewhere: when the
      only nodes of a zone are dead, the other zones serving alone says nothing about
      cross-zone balancing. kube-proxy balances Services and NodePorts over the whole
      cluster, so their successes never restrict them to a zone.

    So a group's share is all on one node (``owner``), or even over one zone's nodes
    (``zone``) or over every node, ``size`` of them: three numbers a group, not a row
    of nodes (every node's NodePort is a group: 3 N² cells at N nodes, 75 million at
    5,000).
    """

    owner: IntArray  # the node that takes it all, or -1
    zone: IntArray  # else the zone it spreads over, or -1: every node
    size: FloatArray  # over how many nodes
    zone_of: IntArray  # each node's zone (-1: none)

    @classmethod
    def of(
        cls,
        counts: Counts,
        others: FloatArray,
        owner: IntArray,
        zone_of: IntArray,
        nlb: BoolArray,
        *,
        min_sure: int = _SURE_SUCCESSES,
    ) -> Spread:
        """From the successes per (group, node) of ``counts`` (``served``) and ``others``
        at its entries, the owner of each group's address (-1: none) and whether it is
        an NLB's."""
        g_count, n = counts.n_groups, zone_of.size
        sg, sn = counts.group, counts.node
        # A node's address is its own when no success shows another server.
        elsewhere = np.bincount(sg, (counts.values > 0) & (sn != owner[sg]), minlength=g_count)
        owns = (owner >= 0) & (elsewhere == 0)
        serving = others > 0
        total = np.bincount(sg, others, minlength=g_count)
        zoned = zone_of >= 0
        served_zones = zone_of[sn[serving]]
        every_zone_serves = set(zone_of[zoned].tolist()) <= set(served_zones[served_zones >= 0].tolist())
        nz = int(zone_of.max()) + 2 if n else 1
        gz = np.unique(sg[serving] * nz + served_zones + 1)  # (group, zone + 1) pairs that serve
        zones_of_group = np.bincount(gz // nz, minlength=g_count)
        one_zone = np.full(g_count, -1, dtype=np.int64)
        one_zone[gz // nz] = gz % nz - 1  # where a group has one zone, that zone (-1: none)
        one = nlb & every_zone_serves & (total >= min_sure) & (zones_of_group == 1) & (one_zone >= 0)
        zone = np.where(one & ~owns, one_zone, -1)
        per_zone = np.bincount(zone_of[zoned], minlength=max(1, nz - 1)).astype(np.float64)
        size = np.where(owns, 1.0, np.where(zone >= 0, per_zone[np.maximum(zone, 0)], float(max(1, n))))
        return cls(owner=np.where(owns, owner, -1), zone=zone, size=np.maximum(size, 1.0), zone_of=zone_of)

    def at(self, groups: IntArray, nodes: IntArray) -> FloatArray:
        """Element by element: the chance the balancer of ``groups[i]`` picks ``nodes[i]``."""
        owner, zone = self.owner[groups], self.zone[groups]
        anywhere = np.ones(groups.size, dtype=np.bool_)
        picks = np.where(
            owner >= 0, nodes == owner, np.where(zone >= 0, self.zone_of[nodes] == zone, anywhere)
        )
        result: FloatArray = picks / self.size[groups]
        return result

    def rows(self, groups: IntArray) -> FloatArray:
        """Dense (len(groups), nodes): each group's share of every node."""
        n = self.zone_of.size
        at = self.at(np.repeat(groups, n), np.tile(np.arange(n), groups.size))
        result: FloatArray = at.reshape(groups.size, n)
        return result

    def within(self, nodes: BoolArray) -> FloatArray:
        """Per group: its share of the nodes where ``nodes`` holds, together."""
        z = self.zone_of
        per_zone = np.bincount(z[nodes & (z >= 0)], minlength=max(1, int(z.max()) + 1 if z.size else 1))
        count = np.where(
            self.owner >= 0,
            nodes[np.maximum(self.owner, 0)],
            np.where(self.zone >= 0, per_zone[np.maximum(self.zone, 0)], nodes.sum()),
        )
        result: FloatArray = count / self.size
        return result


@dataclass(frozen=True, slots=True, kw_only=True)
class NlbPicks:
    """Per probe of :class:`~prober.stats.NlbProbes`: the node the NLB forwarded it to.

    Under externalTrafficPolicy: Local that node serves it (``dst_node``). Under Cluster
    it forwards the probe to any node's echo, masqueraded to its own address: the
    client address the echo saw names it (``Topology.node_at``). ``two_hop``: the
    addresses taken as Cluster: the inventory's word, or where it says nothing, those
    with a success whose echo saw a node that is neither the client's nor its own (only
    a forwarding node shows so).
    """

    node: tuple[str | None, ...]
    two_hop: frozenset[str]


def nlb_picks(evidence: Evidence) -> NlbPicks | None:
    nb = evidence.nlb_probes
    if nb is None:
        return None
    topo = evidence.topology
    seen = topo.nodes_at(nb.seen_src_ip) if len(nb.seen_src_ip) == nb.size else [None] * nb.size
    addresses = {a for a in nb.target_ip if a is not None}
    two_hop = {a for a in addresses if topo.nlb_policies.get(a) == "Cluster"}
    unsaid = addresses - set(topo.nlb_policies)
    if unsaid:
        for k in np.flatnonzero(nb.outcome == OK).tolist():
            a, e = nb.target_ip[k], seen[k]
            if a in unsaid and e is not None and e != nb.src_node[k] and e != nb.dst_node[k]:
                two_hop.add(a)
    node = tuple(seen[k] if nb.target_ip[k] in two_hop else nb.dst_node[k] for k in range(nb.size))
    return NlbPicks(node=node, two_hop=frozenset(two_hop))


def entry_shares(ctx: Context, others: FloatArray, entered: FloatArray) -> FloatArray:
    """Per (NLB address, node): the chance the NLB forwards to the node, from the nodes
    successes entered through (``entered``; ``others``: those of other clients), under
    externalTrafficPolicy: Cluster, where the serving node says nothing of the NLB's pick.
    Even over the nodes, or over one zone's without cross-zone load balancing
    (:class:`Spread`)."""
    g_count, n = others.shape
    g, x = np.nonzero(entered)
    counts = Counts(g, x, entered[g, x], g_count, n)
    g, x = counts.group, counts.node
    no_owner = np.full(g_count, -1, dtype=np.int64)
    spread = Spread.of(counts, others[g, x], no_owner, _zones(ctx), np.ones(g_count, dtype=np.bool_))
    return spread.rows(np.arange(g_count))


class Counts:
    """Success counts per (server group, node), kept sparse: only the pairs with a probe.
    Dense rows for a few groups on demand (:meth:`rows`)."""

    def __init__(self, groups: IntArray, nodes: IntArray, values: FloatArray, n_groups: int, n: int) -> None:
        self.n_groups, self.n = n_groups, n
        keys, inverse = unique_keys(groups * n + nodes, n_groups * n)
        self.keys: IntArray = keys
        self.values: FloatArray = np.bincount(inverse, values, minlength=keys.size).astype(np.float64)

    @property
    def group(self) -> IntArray:
        result: IntArray = self.keys // self.n
        return result

    @property
    def node(self) -> IntArray:
        result: IntArray = self.keys % self.n
        return result

    def at(self, keys: IntArray) -> FloatArray:
        """The counts at ``keys`` (group * n + node), 0 where none."""
        i = np.minimum(np.searchsorted(self.keys, keys), max(0, self.keys.size - 1))
        hit = self.keys[i] == keys if self.keys.size else np.zeros(keys.size, dtype=np.bool_)
        return np.where(hit, self.values[i] if self.keys.size else 0.0, 0.0)

    def rows(self, groups: IntArray) -> FloatArray:
        """Dense (len(groups), n): the counts of each of ``groups``."""
        uniq, back = np.unique(groups, return_inverse=True)
        pos = np.full(self.n_groups, -1, dtype=np.int64)
        pos[uniq] = np.arange(uniq.size)
        g = self.group
        sel = pos[g] >= 0
        out = np.zeros((uniq.size, self.n), dtype=np.float64)
        out[pos[g[sel]], self.node[sel]] = self.values[sel]
        result: FloatArray = out[back.reshape(-1)]
        return result


class ShareModel:
    """Which node serves a load-balanced address, and how often.

    Grouped by *server group* (target name, target address): one Service ClusterIP,
    one NLB zone address, one node's NodePort. Success counts (only a success names
    its serving node) feed the hairpin and bridge tests; :attr:`share` is the chance
    the balancer picks each node (a :class:`Spread`), which claims use. Both sparse:
    every node's NodePort is a group, so a dense groups-by-nodes table is 3 N² cells
    (75 million at 5,000 nodes).
    """

    def __init__(self, ctx: Context) -> None:
        t = ctx.table
        n = ctx.n_nodes
        n_ips = len(t.target_ips)
        rows = ctx.balanced & ~ctx.local_service
        # A node's own NodePort probed from the node is a group of its own, per source
        # kind: kube-proxy may send those callers anywhere (see Context.own_nodeport).
        own = np.where(ctx.own_nodeport, 1 + ctx.src_kind, 0)
        key = np.where(rows, (t.target * (n_ips + 1) + t.target_ip + 1) * (1 + N_SRC_KINDS) + own, -1)
        uniq, inverse = unique_inverse(key[rows])
        self.group = np.full(t.rows, -1, dtype=np.int64)
        self.group[rows] = inverse
        g_count = len(uniq)
        self.n_groups = g_count
        #: representative row of each group (for its target and address labels)
        first = np.full(g_count, -1, dtype=np.int64)
        idx = np.flatnonzero(rows)
        first[inverse[::-1]] = idx[::-1]
        self.target = t.target[first] if g_count else np.zeros(0, dtype=np.int64)
        self.target_ip = t.target_ip[first] if g_count else np.zeros(0, dtype=np.int64)
        self.tkind = ctx.tkind[first] if g_count else np.zeros(0, dtype=np.int8)

        served = rows & ctx.node_dst
        g, d, s = self.group[served], t.dst[served], t.src[served]
        ok = ctx.ok[served]
        mine = d == s
        #: Successes per (group, serving node), of them served by the source's own node,
        #: and per (group, source node).
        self.succ = Counts(g, d, ok, g_count, n)
        self.self_succ = Counts(g[mine], d[mine], ok[mine], g_count, n)
        self.src_succ = Counts(self.group[rows], t.src[rows], ctx.ok[rows], g_count, n)
        self.total: FloatArray = np.bincount(g, ok, minlength=g_count).astype(np.float64)

        owner = np.where(self.target_ip >= 0, ctx.owner_of_ip[np.maximum(self.target_ip, 0)], -1)
        others = self.succ.values - self.self_succ.at(self.succ.keys)
        nlb = self.tkind == TK[TargetKind.NLB]
        #: Each group's share of each node (:meth:`Spread.at`).
        self.share = Spread.of(self.succ, others, owner, _zones(ctx), nlb)
        #: Rows whose group only the source's own node ever served (an own NodePort
        #: whose in-node callers kube-proxy keeps on the node).
        self.owner_only = np.zeros(t.rows, dtype=np.bool_)
        grouped = self.group >= 0
        self.owner_only[grouped] = self.share.at(self.group[grouped], t.src[grouped]) >= 1.0

    def others_share(self, groups: IntArray) -> tuple[FloatArray, FloatArray]:
        """Per group of ``groups`` and node X: X's share among the successes of every
        *other* source node, and its sampling variance (binomial): dense rows of the
        groups asked for only.
        """
        succ = self.succ.rows(groups)
        denom = self.total[groups, None] - self.src_succ.rows(groups)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(denom > 0, (succ - self.self_succ.rows(groups)) / denom, 0.0)
            np.clip(q, 0.0, 1.0, out=q)
            var: FloatArray = np.where(denom > 0, q * (1.0 - q) / denom, 0.0)
        share: FloatArray = q
        return share, var


class Context:
    """Per-row views of one window plus the residual ledger (see the module docstring)."""

    def __init__(self, evidence: Evidence, policy: DiagnosisPolicy) -> None:
        t: PairTable = evidence.table
        self.evidence = evidence
        self.policy = policy
        self.table = t
        self.nodes = t.nodes
        self.n_nodes = len(t.nodes)
        self.src = t.src
        self.dst = t.dst
        self.src_kind = _PATH_SRC_KIND[t.path]
        self.tkind = _PATH_TKIND[t.path]
        counts = t.counts
        self.sent: FloatArray = probes_per_row(counts)
        self.ok: FloatArray = counts[:, OK].astype(np.float64)
        self.fail: FloatArray = self.sent - self.ok
        #: The large-payload (MTU) probes: their stalls are mtu-blackhole's evidence,
        #: not loss; the small probes' stalls (an answer lost after the handshake) are.
        self.large: BoolArray = t.proto == PROTO_INDEX[Proto.HTTP_LARGE]
        self.stalled: FloatArray = counts[:, _STALLED].astype(np.float64)
        self.timeouts: FloatArray = (counts[:, _TIMEOUT] + np.where(self.large, 0, self.stalled)).astype(
            np.float64
        )
        #: The probes over TCP: those a SYN retransmit can make slow (:attr:`slow`).
        self.tcp: BoolArray = np.isin(t.proto, TCP_PROTO_CODES)
        tcp = self.tcp
        self.dns_slow: FloatArray = np.where(t.proto == PROTO_INDEX[Proto.DNS], t.slow[:, 1], 0).astype(
            np.float64
        )

        self.node_dst: BoolArray = (t.dst >= 0) & (t.dst < self.n_nodes)
        self.unknown: BoolArray = t.dst == UNKNOWN
        self.peer = kind_mask(self.tkind, TargetKind.POD, TargetKind.HOST)
        self.balanced = kind_mask(
            self.tkind, TargetKind.SERVICE, TargetKind.SERVICE_LOCAL, TargetKind.NODEPORT, TargetKind.NLB
        )
        self.outside = kind_mask(self.tkind, TargetKind.EXTERNAL, TargetKind.DNS)
        self.local_service = kind_mask(self.tkind, TargetKind.SERVICE_LOCAL)

        self._pairs: tuple[IntArray, IntArray, BoolArray, IntArray, IntArray] | None = None
        self._locate()
        self._stream, self._stream_row = self._streams()
        self.shares = ShareModel(self)
        # An own-NodePort probe stays on its node only if nothing but the node ever served it.
        self.same_node |= self.own_nodeport & self.shares.owner_only

        #: Failures no rule has explained yet.
        self.residual: FloatArray = self.fail.copy()
        #: Successes after a TCP SYN retransmit no rule has explained yet.
        self.slow: FloatArray = np.where(tcp, t.slow[:, 0], 0).astype(np.float64)
        #: Probes no rule has explained yet: the denominator of every later test.
        self.live: FloatArray = self.sent.copy()
        #: Failures claimed as an expected count rather than one by one: the residue
        #: around them carries the counting noise of those estimates.
        self.estimated: FloatArray = np.zeros(t.rows, dtype=np.float64)
        #: Findings so far, each with the probe streams it explains.
        self.found_list: list[tuple[Finding, Footprint]] = []
        #: The rows changed since the previous finding, each with its ledger entries
        #: (residual, slow, live) as they were before the change, and what was set aside
        #: from them since: a finding's footprint is worked out over those rows only (a
        #: zone of dead nodes is hundreds of findings, each of a few rows out of
        #: millions), and no copy of the whole ledger is kept for it (24 bytes a row).
        self._touched: list[IntArray] = []
        self._before: list[tuple[FloatArray, FloatArray, FloatArray]] = []
        self._aside: list[tuple[IntArray, FloatArray]] = []
        #: Every row change of the ledger, in order (:meth:`changed_since`): what the sums
        #: kept current (:class:`LedgerSums`, :meth:`matrix_cells`) catch up from.
        self._log: list[IntArray] = []
        self._changed: tuple[int, int, IntArray] | None = None  # the last changed_since's answer
        #: Values rules work out once per window and keep current (keyed by the rule).
        self.memo: dict[str, object] = {}
        #: The matrix cells' sums of live, residual and slow, kept current (:meth:`matrix_cells`).
        self._matrix_sums: tuple[LedgerSums, ...] | None = None
        n_streams = int(self._stream.max()) + 1 if self._stream.size else 0
        #: Per stream: the probes of the previous finding's ledger not yet explained.
        self._stream_live_mark = weighted_count(self._stream, self.live, n_streams)
        self._matrix_index: tuple[IntArray, IntArray] | None = None
        self._cell_of: IntArray = np.zeros(0, dtype=np.int64)  # per row, its matrix cell (-1: none)
        #: Per stream: its probes not yet explained, kept current (claims ask for a few streams').
        self._stream_live = LedgerSums(self, {"stream": (self._stream, n_streams)}, self._live_at)
        self._kind_masks: dict[tuple[TargetKind, ...], BoolArray] = {}
        self._row_index: dict[str, tuple[IntArray, IntArray]] = {}

    def close(self) -> list[tuple[Finding, Footprint]]:
        """The findings, and the context emptied: its kept-current sums and their readers
        refer back to it, a cycle that would keep every per-row array (gigabytes at 1,000
        nodes) until the next full garbage collection, which counts objects, not bytes."""
        found = self.found_list
        self.__dict__.clear()
        return found

    def _locate(self) -> None:
        """Where each probe had to go: node addresses, ingress nodes, same-node probes."""
        t = self.table
        # A node's address: what host agents listen on and NodePorts are probed at.
        owner_of_ip = np.full(max(1, len(t.target_ips)), -1, dtype=np.int64)
        hosts = kind_mask(self.tkind, TargetKind.HOST) & self.node_dst & (t.target_ip >= 0)
        owner_of_ip[t.target_ip[hosts]] = t.dst[hosts]
        self.owner_of_ip = owner_of_ip
        owner = np.where(t.target_ip >= 0, owner_of_ip[np.maximum(t.target_ip, 0)], -1)

        #: The node a probe had to enter, when known before it was sent: the peer for
        #: pod/host targets, the addressed node for NodePorts; -1 otherwise.
        ingress = np.full(t.rows, -1, dtype=np.int64)
        ingress[self.peer & self.node_dst] = t.dst[self.peer & self.node_dst]
        nodeport = kind_mask(self.tkind, TargetKind.NODEPORT)
        np_ingress = np.where(owner >= 0, owner, np.where(self.node_dst, t.dst, -1))
        #: A node's own NodePort probed from the node itself. kube-proxy sends in-node
        #: callers (the node, and pods its local detector matches) to any endpoint of
        #: the Service whatever the externalTrafficPolicy, so where such a probe goes is
        #: not known in advance: these rows are load-balanced, and the successes tell
        #: whether they ever leave the node (ShareModel.owner_only).
        self.own_nodeport: BoolArray = nodeport & (np_ingress == t.src)
        ingress[nodeport & ~self.own_nodeport] = np_ingress[nodeport & ~self.own_nodeport]
        self.ingress = ingress
        #: Probes that never left their node (same-node agent, service-local, own NodePort).
        self.same_node: BoolArray = ((ingress >= 0) & (ingress == t.src)) | self.local_service
        #: Probes across the network to a node known in advance: the matrix proper.
        self.crossing: BoolArray = (ingress >= 0) & ~self.same_node

    def _streams(self) -> tuple[IntArray, IntArray]:
        """Rows that are one probe stream: (path, proto, source, target, address) -> (id, first row).

        A table whose streams are runs of rows (:attr:`PairTable.stream_runs`) numbers them
        in row order, without a sort; any other in the order of their keys."""
        t = self.table
        n_ips = len(t.target_ips) + 1
        key = (
            ((t.path * len(PROTOS) + t.proto) * max(1, self.n_nodes) + t.src) * max(1, len(t.targets))
            + t.target
        ) * n_ips + (t.target_ip + 1)
        if t.stream_runs:
            new = np.empty(key.size, dtype=np.bool_)
            new[:1] = True
            np.not_equal(key[1:], key[:-1], out=new[1:])
            first = np.flatnonzero(new)
            return np.cumsum(new, dtype=np.int64) - 1, first.astype(np.int64)
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
        return inv.reshape(-1).astype(np.int64), first.astype(np.int64)

    # ---- views ------------------------------------------------------------------

    @functools.cached_property
    def nlb_picks(self) -> NlbPicks | None:
        """Which node the NLB picked for each of the window's NLB probes (:func:`nlb_picks`)."""
        return nlb_picks(self.evidence)

    def of_kind(self, *kinds: TargetKind) -> BoolArray:
        """Rows whose target is of one of ``kinds``: worked out once per window (read only)."""
        mask = self._kind_masks.get(kinds)
        if mask is None:
            mask = self._kind_masks[kinds] = kind_mask(self.tkind, *kinds)
            mask.setflags(write=False)
        return mask

    @functools.cached_property
    def crossing_pairs(self) -> tuple[IntArray, IntArray]:
        """The crossing probes' (node, peer) pairs both ways round: (sorted pair keys
        ``node * n + peer``, each of the 2 x crossing rows' position among them), the
        crossing rows' pairs first (source, ingress), then the same rows reversed."""
        n = max(1, self.n_nodes)
        a, b = self.src[self.crossing], self.ingress[self.crossing]
        return unique_keys(np.concatenate([a * n + b, b * n + a]), n * n)

    def share_of(self, node: int) -> FloatArray:
        """Per row: the chance the balancer behind the row's address picked ``node``."""
        share = np.zeros(self.table.rows, dtype=np.float64)
        rows, at = self.node_shares(node)
        share[rows] = at
        return share

    @functools.cached_property
    def _nlb_entry(self) -> tuple[BoolArray, IntArray, FloatArray]:
        """Rows of NLB addresses whose probes take two hops (externalTrafficPolicy: Cluster);
        each target address's place among those addresses (-1: not one); and per (such an
        address, node) the chance the NLB enters the node there (:meth:`_entry_at`)."""
        t = self.table
        slot = np.full(len(t.target_ips) + 1, -1, dtype=np.int64)
        picks = self.nlb_picks
        nb = self.evidence.nlb_probes
        rows = np.zeros(t.rows, dtype=np.bool_)
        if picks is None or nb is None or not picks.two_hop:
            return rows, slot, np.zeros((0, max(1, self.n_nodes)), dtype=np.float64)
        ip_index = {a: i for i, a in enumerate(t.target_ips)}
        node_index = {x: i for i, x in enumerate(self.nodes)}
        hops = sorted(ip_index[a] for a in picks.two_hop if a in ip_index)
        slot[hops] = np.arange(len(hops))
        entered = np.zeros((len(hops), max(1, self.n_nodes)), dtype=np.float64)
        mine = np.zeros_like(entered)
        at = {ip: k for k, ip in enumerate(hops)}
        for k in np.flatnonzero(nb.outcome == OK).tolist():
            ip, node, src = ip_index.get(nb.target_ip[k] or ""), picks.node[k], nb.src_node[k]
            if ip in at and node in node_index:
                entered[at[ip], node_index[node]] += 1
                if node == src:
                    mine[at[ip], node_index[node]] += 1
        entry = entry_shares(self, entered - mine, entered) if hops else entered
        rows = kind_mask(self.tkind, TargetKind.NLB) & np.isin(t.target_ip, hops)
        return rows, slot, entry

    def _entry_at(self, rows: BoolArray | IntArray, nodes: IntArray | int) -> FloatArray:
        """At two-hop rows (of :attr:`two_hop_nlb`): the chance the NLB enters ``nodes``."""
        _, slot, entry = self._nlb_entry
        result: FloatArray = entry[slot[self.table.target_ip[rows]], nodes]
        return result

    @property
    def two_hop_nlb(self) -> BoolArray:
        """Rows of NLB addresses whose probes take two hops (externalTrafficPolicy: Cluster)."""
        return self._nlb_entry[0]

    def entry_share_of(self, node: int) -> FloatArray:
        """Per row: the chance the probe enters ``node`` first: :meth:`share_of`, but for an NLB
        whose probes take two hops the chance the NLB picks ``node`` (not the echo's node)."""
        share = self.share_of(node)
        rows = self._nlb_entry[0]
        share[rows] = self._entry_at(rows, node)
        return share

    def through_share_of(self, node: int, served: FloatArray | None = None) -> FloatArray:
        """Per row: the chance the probe passes through ``node`` on either hop (entry or echo);
        ``served``: :meth:`share_of` ``node``, when the caller has it already (not changed)."""
        served = self.share_of(node) if served is None else served.copy()
        rows = self._nlb_entry[0]
        e = self._entry_at(rows, node)
        served[rows] = e + (1.0 - e) * served[rows]
        return served

    @functools.cached_property
    def balanced_rows(self) -> IntArray:
        """The rows a balancer's pick decides (Services, NodePorts, NLB addresses): the only
        rows :meth:`share_of` can give a chance above 0 (read only)."""
        rows: IntArray = np.flatnonzero(self.balanced | (self.shares.group >= 0))
        rows.setflags(write=False)
        return rows

    @functools.cached_property
    def _balanced_columns(self) -> tuple[IntArray, IntArray, BoolArray, BoolArray, BoolArray]:
        """At :attr:`balanced_rows`: the source, the server group (0 where none), whether the
        row has one (the service-local rows have none: their share is the source's), whether
        it is service-local, and whether it is a two-hop NLB row."""
        rows = self.balanced_rows
        group = self.shares.group[rows]
        local = self.local_service[rows]
        has = (group >= 0) & ~local
        return self.src[rows], np.where(has, group, 0), has, local, self._nlb_entry[0][rows]

    def node_shares(self, node: int, *, through: bool = False) -> tuple[IntArray, FloatArray]:
        """(:attr:`balanced_rows`, :meth:`share_of` ``node`` at those rows; ``through``:
        :meth:`through_share_of`): a node's shares without a pass over the whole window."""
        rows = self.balanced_rows
        src, group, has, local, hop = self._balanced_columns
        sh = self.shares
        # One entry per group (none when the window has no server group).
        column = (
            sh.share.at(np.arange(sh.n_groups), np.full(sh.n_groups, node)) if sh.n_groups else np.zeros(1)
        )
        share: FloatArray = column[group]
        share[~has] = 0.0
        share[local] = src[local] == node
        if through and hop.any():
            e = self._entry_at(rows[hop], node)
            share[hop] = e + (1.0 - e) * share[hop]
        return rows, share

    def _live_at(self, rows: IntArray | None) -> FloatArray:
        """The ledger's unexplained probes of ``rows`` (``None``: every row, as a new array)."""
        result: FloatArray = self.live.copy() if rows is None else self.live[rows]
        return result

    def shares_at(self, rows: IntArray, nodes: IntArray, *, entry: bool = False) -> FloatArray:
        """Row by row: the chance the balancer behind ``rows[i]`` picks ``nodes[i]``
        (:meth:`share_of` of one node, at some rows; ``entry``: :meth:`entry_share_of`)."""
        g = self.shares.group[rows]
        out: FloatArray = np.zeros(rows.size, dtype=np.float64)
        has = g >= 0  # none when the window has no load-balanced probe
        out[has] = self.shares.share.at(g[has], nodes[has])
        local = self.local_service[rows]
        out[local] = self.src[rows[local]] == nodes[local]
        if entry:
            hop = self._nlb_entry[0][rows]
            out[hop] = self._entry_at(rows[hop], nodes[hop])
        return out

    def rows_at(self, key: Literal["src", "ingress"], nodes: IntArray) -> tuple[IntArray, IntArray]:
        """Every row whose :attr:`src` (or :attr:`ingress`) is one of ``nodes``, once per
        time that node is listed: (rows, the position in ``nodes`` each came from). A
        node's rows are found by a lookup, not a pass over the table."""
        index = self._row_index.get(key)
        if index is None:
            by = self.src if key == "src" else self.ingress
            order = stable_order(by)  # node numbers: one 16-bit digit, sorted by radix
            bounds = np.searchsorted(by[order], np.arange(max(1, self.n_nodes) + 1))
            index = self._row_index[key] = (order, bounds)
        order, bounds = index
        start, size = bounds[nodes], bounds[nodes + 1] - bounds[nodes]
        which = np.repeat(np.arange(len(nodes)), size)
        offset = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
        return order[start[which] + offset], which

    def paths_in(self, rows: BoolArray | IntArray, *, failing_only: bool = True) -> list[str]:
        """Path names of ``rows`` (a mask or row numbers; with raw failures, unless told otherwise)."""
        idx = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
        if failing_only:
            idx = idx[self.fail[idx] > 0]
        return sorted({PATHS[i] for i in np.unique(self.table.path[idx]).tolist()})

    def target_label(self, i: int) -> str:
        return self.table.targets[i]

    def found(
        self,
        finding: Finding,
        *,
        unsettled: bool = False,
        settled: bool = False,
        share_of: BoolArray | None = None,
    ) -> Finding:
        """Record ``finding`` with what it claimed since the previous one (its footprint):
        every stream of which it explained at least half the probes still unexplained;
        ``unsettled``, ``settled``: see :class:`Footprint`. A finding that explains a share
        of its streams' probes, as a hairpin explains 1 in N of its clients' NLB probes,
        gives its rows (``share_of``): its footprint is every stream of them, with what it
        claimed among all their probes (so their successes do not read as its end)."""
        dirty, (res, slow, live) = self._marked()
        d_live = live - self.live[dirty]
        d_imp = (res - self.residual[dirty]) + (slow - self.slow[dirty])
        streams, inv = np.unique(self._stream[dirty], return_inverse=True)
        took = np.bincount(inv.reshape(-1), d_live, minlength=len(streams))
        imp = np.bincount(inv.reshape(-1), d_imp, minlength=len(streams))
        before = self._stream_live_mark[streams]
        owned = (took > 0) & (took >= 0.5 * before)
        if share_of is None:
            footprint = Footprint(
                streams=self.stream_keys(streams[owned]),
                impaired=float(imp[owned].sum()),
                probes=float(took[owned].sum()),
                unsettled=unsettled,
                settled=settled,
            )
        else:
            rows = np.flatnonzero(share_of)
            footprint = Footprint(
                streams=self.stream_keys(sorted_unique(self._stream[rows])),
                impaired=float(d_imp.sum()),
                probes=float(self.sent[rows].sum()),
                unsettled=unsettled,
                settled=settled,
            )
        self.found_list.append((finding, footprint))
        self._touched, self._before, self._aside = [], [], []
        self._stream_live_mark[streams] -= took
        return finding

    def _marked(self) -> tuple[IntArray, tuple[FloatArray, FloatArray, FloatArray]]:
        """The rows changed since the previous finding, sorted, and their ledger entries
        (residual, slow, live) as that finding left them: each row's entries before its
        first change since, less what :meth:`set_aside` took from it."""
        if not self._touched:
            empty = np.zeros(0, dtype=np.float64)
            return np.zeros(0, dtype=np.int64), (empty, empty, empty)
        rows = np.concatenate(self._touched)
        dirty, first = np.unique(rows, return_index=True)
        res, slow, live = (np.concatenate([b[k] for b in self._before])[first] for k in range(3))
        for idx, took in self._aside:
            at = np.searchsorted(dirty, idx)
            res[at] -= took
            live[at] -= took
        return dirty, (res, slow, live)

    def _touch(self, rows: BoolArray | IntArray) -> None:
        """Note rows whose ledger entries are about to change (a mask or row numbers), and
        their entries before the change."""
        idx = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows.astype(np.int64)
        self._note(idx, (self.residual[idx], self.slow[idx], self.live[idx]))

    def _note(self, idx: IntArray, before: tuple[FloatArray, FloatArray, FloatArray]) -> None:
        """Record changed rows with their ledger entries (residual, slow, live) before the change."""
        self._touched.append(idx)
        self._before.append(before)
        self._log.append(idx)

    def log_cursor(self) -> int:
        """The position in the change log now: :meth:`changed_since` it gives what changes next."""
        return len(self._log)

    def changed_since(self, cursor: int) -> tuple[IntArray, int]:
        """The rows whose ledger entries changed since ``cursor`` (a position in the change
        log, 0: the start), each once, and the position to pass next time."""
        end = len(self._log)
        if cursor >= end:
            return np.zeros(0, dtype=np.int64), end
        # The sums kept current catch up one after another from the same position.
        last = self._changed
        if last is not None and last[0] == cursor and last[1] == end:
            return last[2], end
        rows = sorted_unique(np.concatenate(self._log[cursor:end]))
        rows.setflags(write=False)
        self._changed = (cursor, end, rows)
        return rows, end

    def stream_keys(self, streams: IntArray) -> list[StreamKey]:
        """:meth:`stream_key` of each of ``streams``, the labels looked up column by column."""
        t, rows = self.table, self._stream_row[streams]
        nodes, targets, ips = t.nodes, t.targets, t.target_ips
        return list(
            zip(
                t.path[rows].tolist(),
                t.proto[rows].tolist(),
                [nodes[i] for i in t.src[rows].tolist()],
                [targets[i] for i in t.target[rows].tolist()],
                [ips[i] if i >= 0 else "" for i in t.target_ip[rows].tolist()],
                strict=True,
            )
        )

    def stream_key(self, stream: int) -> StreamKey:
        row = int(self._stream_row[stream])
        return stream_key(self.table, row)

    def claim_all(self, mask: BoolArray | IntArray) -> float:
        """Explain every residual failure (and slow success) of the rows in ``mask`` (a mask or
        row numbers, each once)."""
        claimed = float(self.residual[mask].sum())
        self._touch(mask)
        self.residual[mask] = 0.0
        self.slow[mask] = 0.0
        self.live[mask] = 0.0
        return claimed

    def claim_expected(self, mask: BoolArray, p_fail: FloatArray) -> float:
        """Explain failures of no-serving-node rows that a fault makes with chance ``p_fail``.

        ``mask`` and ``p_fail`` cover every probe the fault applies to (successes too):
        the expected count, ``probes x p_fail``, is taken over all of them and judged
        per server group and source (:meth:`claim_expected_at`).
        """
        rows = np.flatnonzero(mask & (p_fail > 0))
        return self.claim_expected_at(rows, p_fail[rows])

    def claim_expected_at(self, rows: IntArray, p_fail: FloatArray) -> float:
        """:meth:`claim_expected` of ``rows`` (row numbers, each once), ``p_fail`` theirs: a
        fault that touches a few Services' rows pays for those, not for the window."""
        p = np.clip(p_fail, 0.0, 1.0)
        applies = p > 0
        rows, p = rows[applies], p[applies]
        hit = self.unknown[rows] & (self.residual[rows] > 0)
        if not hit.any():
            return 0.0
        idx = rows[hit]
        expected = self._stream_live.read_at("stream", self._stream[idx]) * p[hit]
        residual = self.residual[idx]
        # Per server group (one Service, one NLB address) and source node: failures
        # consistent with the expectation (within its Poisson bound) are all
        # explained, noise included; a source holding more keeps the excess (another
        # fault's evidence) and gives up only the expected count, filled row by row.
        n = max(1, self.n_nodes)
        group = self.shares.group[rows]
        unit = group * n + self.src[rows]
        uniq, inv = np.unique(unit[hit], return_inverse=True)
        inv = inv.reshape(-1)
        # The expectation covers every probe the fault applies to, not only the
        # streams that happened to fail.
        every = group >= 0
        pos = np.minimum(np.searchsorted(uniq, unit[every]), len(uniq) - 1)
        same = uniq[pos] == unit[every]
        exp_g = np.bincount(pos[same], (self.live[rows[every]] * p[every])[same], minlength=len(uniq))
        res_g = np.bincount(inv, residual, minlength=len(uniq))
        consistent = np.array(
            [r <= poisson_upper(m) for r, m in zip(res_g.tolist(), exp_g.tolist(), strict=True)],
            dtype=np.bool_,
        )
        base = np.minimum(residual, expected)
        room = residual - base
        slack = np.maximum(exp_g - np.bincount(inv, base, minlength=len(uniq)), 0.0)
        room_g = np.bincount(inv, room, minlength=len(uniq))
        with np.errstate(divide="ignore", invalid="ignore"):
            fill = np.where(room_g > 0, np.minimum(1.0, slack / np.maximum(room_g, 1e-300)), 0.0)
        take = np.where(consistent[inv], residual, base + room * fill[inv])
        self._touch(idx)
        self.estimated[idx] += take
        self.residual[idx] -= take
        self.live[idx] -= take
        return float(take.sum())

    def claim_part(self, mask: BoolArray, amount: FloatArray) -> float:
        """Explain ``amount`` (at most the residue) of the failures of each row in ``mask``."""
        take = np.minimum(self.residual[mask], np.maximum(amount[mask], 0.0))
        self._touch(mask)
        self.residual[mask] -= take
        self.live[mask] -= take
        return float(take.sum())

    def set_aside(self, mask: BoolArray, amount: FloatArray) -> float:
        """Take ``amount`` (at most the residue) of the failures of each row in ``mask`` out of
        the residue without a finding: failures whose one explanation is a rule's, too few yet
        for it to name, that no later rule may take for another pattern. No finding's
        footprint holds them."""
        idx = np.flatnonzero(mask)
        before = self.residual[idx].copy()
        taken = self.claim_part(mask, amount)
        took = before - self.residual[idx]
        self._aside.append((idx, took))
        self._stream_live_mark -= np.bincount(self._stream[idx], took, minlength=len(self._stream_live_mark))
        return taken

    def claim_count(self, rows: Iterable[int], count: float) -> float:
        """Explain up to ``count`` residual failures spread over ``rows`` in order."""
        left = count
        touched: list[int] = []
        before: list[tuple[float, float, float]] = []
        for r in rows:
            if left <= 0:
                break
            touched.append(r)
            before.append((float(self.residual[r]), float(self.slow[r]), float(self.live[r])))
            take = min(left, float(self.residual[r]))
            self.residual[r] -= take
            self.live[r] -= take
            left -= take
        values = np.array(before, dtype=np.float64).reshape(-1, 3)
        self._note(np.array(touched, dtype=np.int64), (values[:, 0], values[:, 1], values[:, 2]))
        return count - left

    # ---- aggregation helpers ----------------------------------------------------

    def by_node(self, index: IntArray, values: FloatArray, mask: BoolArray) -> FloatArray:
        """Sum ``values`` over ``mask`` grouped by node ``index``."""
        result: FloatArray = np.bincount(index[mask], values[mask], minlength=self.n_nodes).astype(np.float64)
        return result

    def cells(self, a: IntArray, b: IntArray, mask: BoolArray) -> Cells:
        """Sent, residual failures and slow successes per (a, b) node pair present in ``mask``.

        The pairs of the last (a, b, mask) are kept: rules ask for the same pairs over a
        residual that changes, and grouping the rows (a sort) is the expensive part.
        """
        n = max(1, self.n_nodes)
        last = self._pairs
        if last is not None and last[0] is a and last[1] is b and last[2] is mask:
            uniq, inv = last[3], last[4]
        else:
            uniq, inv = unique_keys(a[mask] * n + b[mask], n * n)
            self._pairs = (a, b, mask, uniq, inv)
        return self._cells(uniq, inv, mask)

    def matrix_cells(self) -> Cells:
        """:meth:`cells` of the matrix proper, (source, ingress) over the crossing probes.

        The node rules ask for it again after each finding (the ledger changed, the cells
        did not): which row is which cell is worked out once, and each later call adds
        what the rows claimed since then changed.
        """
        n = max(1, self.n_nodes)
        uniq, ledger = self._matrix_ledger()
        sent, failed, slow = (sums.read("cell") for sums in ledger)
        return Cells(a=uniq // n, b=uniq % n, sent=sent, failed=failed, slow=slow)

    def matrix_cell_sums(self, cells: IntArray) -> tuple[FloatArray, FloatArray]:
        """(sent, failed) now of some of :meth:`matrix_cells`' cells (by position): the same
        sums, read for a few cells rather than copied for all."""
        live, residual, _ = self._matrix_ledger()[1]
        return live.read_at("cell", cells), residual.read_at("cell", cells)

    def matrix_cells_of(self, rows: IntArray) -> IntArray:
        """The :meth:`matrix_cells` cell (by position) of each of ``rows``; -1: not crossing."""
        self._matrix_ledger()
        cells: IntArray = self._cell_of[rows]
        return cells

    def _matrix_ledger(self) -> tuple[IntArray, tuple[LedgerSums, ...]]:
        """The matrix cells' keys (``source * n + ingress``, sorted) and their sums of live,
        residual and slow, kept current."""
        n = max(1, self.n_nodes)
        if self._matrix_index is None:
            m = self.crossing
            self._matrix_index = unique_keys(self.src[m] * n + self.ingress[m], n * n)
        uniq, inv = self._matrix_index
        if self._matrix_sums is None:
            cell_of = self._cell_of = np.full(self.table.rows, -1, dtype=np.int64)
            cell_of[self.crossing] = inv
            cells = {"cell": (cell_of, len(uniq))}

            def reader(values: FloatArray) -> Callable[[IntArray | None], FloatArray]:
                return lambda rows: values.copy() if rows is None else values[rows]

            self._matrix_sums = tuple(
                LedgerSums(self, cells, reader(v)) for v in (self.live, self.residual, self.slow)
            )
        return uniq, self._matrix_sums

    def _cells(self, uniq: IntArray, inv: IntArray, mask: BoolArray) -> Cells:
        n = max(1, self.n_nodes)
        return Cells(
            a=uniq // n,
            b=uniq % n,
            sent=weighted_count(inv, self.live[mask], len(uniq)),
            failed=weighted_count(inv, self.residual[mask], len(uniq)),
            slow=weighted_count(inv, self.slow[mask], len(uniq)),
        )


class LedgerSums:
    """Sums of one value read from the ledger over fixed groupings of rows, kept current.

    ``groups`` names each grouping: (each row's group, -1: in none; the number of
    groups). ``value`` gives the value of the given rows now (``None``: every row, as a
    new array). The first sums cover every row; each read adds what the rows changed
    since the previous read (:meth:`Context.changed_since`) changed, in every grouping
    at once, so a rule that re-reads its sums after every finding pays for the rows it
    claimed, not for the window. One copy of the value is kept however many groupings
    (a window of millions of rows).
    """

    def __init__(
        self,
        ctx: Context,
        groups: Mapping[str, tuple[IntArray | Int32Array, int]],
        value: Callable[[IntArray | None], FloatArray],
    ) -> None:
        self._ctx, self._groups, self._value = ctx, dict(groups), value
        self._seen = value(None)
        # A value that is 0 on most rows (failures: a few in a thousand) is summed over the
        # others only: one index of them instead of a pass over every row per grouping.
        # (Counted first: listing the rows of a dense value would cost 8 bytes a row for nothing.)
        sparse = np.count_nonzero(self._seen) < self._seen.size // 4
        rows = np.flatnonzero(self._seen) if sparse else None
        weights = self._seen if rows is None else self._seen[rows]
        self._sums = {}
        for name, (g, size) in self._groups.items():
            at = g if rows is None else g[rows]
            self._sums[name] = weighted_count(np.where(at >= 0, at, size), weights, size + 1)[:size].copy()
        self._cursor = ctx.log_cursor()

    def read(self, name: str) -> FloatArray:
        self._catch_up()
        return self._sums[name].copy()

    def read_at(self, name: str, groups: IntArray) -> FloatArray:
        """The sums of ``groups`` only (of grouping ``name``)."""
        self._catch_up()
        result: FloatArray = self._sums[name][groups]
        return result

    def _catch_up(self) -> None:
        rows, self._cursor = self._ctx.changed_since(self._cursor)
        if rows.size:
            now = self._value(rows)
            delta = now - self._seen[rows]
            self._seen[rows] = now
            for key, (group, size) in self._groups.items():
                g = group[rows].astype(np.int64)
                mine = g >= 0
                total = self._sums[key]
                np.add(total, weighted_count(g[mine], delta[mine], size), out=total)
                # Adding and taking away fractions of probes leaves rounding dust where a
                # sum is empty again: it is nothing (a sum of probes is 0 or at least a fraction).
                total[np.abs(total) < 1e-9] = 0.0


#: A probe stream by its labels: (path, proto, source node, target, target address).
StreamKey = tuple[int, int, str, str, str]


def stream_key(table: PairTable, row: int) -> StreamKey:
    tip = int(table.target_ip[row])
    return (
        int(table.path[row]),
        int(table.proto[row]),
        table.nodes[int(table.src[row])],
        table.targets[int(table.target[row])],
        table.target_ips[tip] if tip >= 0 else "",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Footprint:
    """The probe streams a finding explains (at least half of each), and how they fared.

    Diagnosis compares it with the recent probes of the same streams: a finding whose
    streams now succeed far more often than it says has been resolved.
    """

    streams: list[StreamKey]
    impaired: float  # failed or retransmitted probes it explained on those streams
    probes: float  # probes it explained on those streams
    #: Named from what cannot yet be told from the onset of another fault: a blocked pair
    #: whose nodes the window holds few other peers' probes of (the schedule visits each
    #: pair rarely). Confirmation holds it back a while (:mod:`prober.diagnose.confirm`).
    unsettled: bool = False
    #: Named from what no onset of another fault gives: a catch-all whose own probes show
    #: the partial loss it names (successes after a TCP SYN retransmit, which a fault that
    #: drops every packet never lets through). Confirmation shows it without holding it
    #: back (:mod:`prober.diagnose.confirm`).
    settled: bool = False

    @property
    def rate(self) -> float:
        return self.impaired / self.probes if self.probes > 0 else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Cells:
    """Sparse per-pair sums: only pairs that were probed have an entry."""

    a: IntArray
    b: IntArray
    sent: FloatArray
    failed: FloatArray
    slow: FloatArray


def count(x: float) -> str:
    """A (possibly fractional, after claims) count for evidence text."""
    return f"{round(x):,}"


def frac(f: float, n: float) -> str:
    return f"{count(f)}/{count(n)}"


def pct(f: float, n: float) -> str:
    if n <= 0:
        return "n/a"
    r = 100.0 * f / n
    return f"{r:.2g}%" if r < 10 else f"{r:.0f}%"


def join_limited(items: list[str], limit: int = 4) -> str:
    if len(items) <= limit:
        return "; ".join(items)
    return "; ".join(items[:limit]) + f"; and {len(items) - limit} more"
