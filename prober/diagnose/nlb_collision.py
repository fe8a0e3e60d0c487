"""nlb-5tuple-collision: two NLB zone addresses forward one client port to the same target.

With cross-zone load balancing and client-IP preservation, a client that reaches
two NLB addresses from one source IP:port at once can be forwarded to the same
target through two NLB nodes: the target sees one 5-tuple twice and resets one.
Agents send such groups on purpose every few rounds (``same_source_port``: one probe
to every zone address of the NLB, from one port). The colliding connection stalls:
with a probe timeout under a second it times out, with a longer one it often succeeds
on a SYN retransmit once the other flow is gone (about 1 s late, or 2 s when the
retransmit meets that flow's remains: any success slower than 0.9 s is *late*). Both
count as *impaired*. The signature, from the individual probes in
:class:`~prober.stats.NlbProbes`, over whole groups (of two or more probes):

* a group has an impaired probe more often than single NLB probes from the same node
  to the same addresses would (``1 - prod(1 - p)`` over its probes, ``p`` the impaired
  share of the node's ungrouped probes of that address, shrunk toward the node's and
  the pooled rate; the expected count is raised by two standard errors), so hairpin,
  loss, a dead node or a zone cut off from the node's does not count. The same test
  of resets alone (refused or reset: the target answering a 5-tuple it already has,
  the seed's RSTs) is not diluted by a hairpin or loss beside the collision, which
  time out; its floor is the single probes' pooled reset rate pulled toward the
  background by ``background_prior_probes``, not the background itself (resets are a
  small share of a healthy path's failures; at 1,000 nodes one group in ~330 collides,
  and a floor of the background's 0.2% a probe expected more resets than the
  collisions made). The stronger of the two, doubled, is the test's p-value;
* groups whose probes all succeeded at once **never** had two land on one target
  node (Poisson: 0 observed, ``sum P(two the same)`` expected from each address's
  serving-node shares, exact over the set partitions of the group's picks); or, where
  the collision ends in a SYN retransmit, groups whose probes all succeeded with two
  on one node were late more often than the single probes that landed on those nodes
  say (the first test's form, per landing node: a node that drops SYNs makes what it
  serves late however it was sent), a signature on its own. The stronger of the two
  readings (the first test combined with the second's Poisson, or the late groups'),
  doubled, is the rule's p-value.

The target is the node the NLB forwarded to: the serving node under
externalTrafficPolicy: Local; under Cluster the node it entered, which forwards on to
any echo, masqueraded to its own address, so the client address the echo saw names it
(:func:`~prober.diagnose.context.nlb_picks`). Both policies collide alike.

A collision that began inside the window follows groups that landed on one node
before it, which would veto the second test for the whole window: both tests count
the groups (and single probes) sent after the last such group only. Without a
collision the all-successful groups since the last same-node one are geometric
(``P(k or more) = (1 - c)^k``), so the test stays exact.

Both tests must point the same way (more failed groups than expected, fewer
same-target groups); the first reading combines their p-values with Fisher's method,
so strong evidence in one carries a weak other (a dead node already fails many
groups). One finding per window: the NLB's configuration, not a node, is at fault.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prober.arrays import BoolArray, FloatArray, IntArray
from prober.diagnose.context import Context, count, frac, pct
from prober.diagnose.mode import AlertSpec, Arity, FailureMode, LabFault
from prober.diagnose.policy import DiagnosisPolicy
from prober.diagnose.significance import log_binom_sf, log_fisher, log_poisson_cdf
from prober.model import OUTCOME_INDEX, PATH_INDEX, Finding, FindingKind, Outcome
from prober.stats import OK, NlbProbes

_SHRINK = 5.0  # pseudo-probes at the pooled rate added to each node's single-probe count
_OWN_SUCCESSES = 8  # a source node's successes of an address from which their spread is its own
_OWN_NODES_MAX = 64  # ... where the NLB's successes land on at most this many nodes
_RESET = [OUTCOME_INDEX[Outcome.REFUSED], OUTCOME_INDEX[Outcome.RESET]]


def _groups(nb: NlbProbes, codes: _Codes, window_s: float) -> IntArray:
    """The same-source-port groups: probes from one node, address and port to different NLB
    addresses, each close in time to the one before (the pinglist sends one to every zone
    address of the NLB at once). A row each (:func:`_pad`): its probes' positions, two or
    more."""
    node, src_ip, tip = codes.src, codes.src_ip, codes.ip
    order = np.lexsort((nb.ts, nb.src_port, src_ip, node))
    a, b = order[:-1], order[1:]
    close = (
        (node[a] == node[b])
        & (src_ip[a] == src_ip[b])
        & (nb.src_port[a] == nb.src_port[b])
        & (nb.src_port[a] >= 0)
        & (np.abs(nb.ts[b] - nb.ts[a]) <= window_s)
    )
    # A run of close probes is one group; a run that reaches one address twice (a port
    # reused within the window) is two groups or more, split where an address repeats.
    starts = np.flatnonzero(np.r_[True, ~close])
    lengths = np.diff(np.r_[starts, order.size])
    run_of = np.repeat(np.arange(starts.size), lengths)
    by_address = np.lexsort((tip[order], run_of))
    repeats = (run_of[by_address][1:] == run_of[by_address][:-1]) & (
        tip[order][by_address][1:] == tip[order][by_address][:-1]
    )
    split = np.zeros(starts.size, dtype=np.bool_)
    split[run_of[by_address][1:][repeats]] = True
    whole = np.flatnonzero(~split & (lengths >= 2))
    pieces: list[IntArray] = []
    keys = [whole]
    for r in np.flatnonzero(split).tolist():  # rare: a source port reused within the window
        run = order[starts[r] : starts[r] + lengths[r]]
        seen: set[int] = set()
        cut, before = 0, len(pieces)
        for k, t in enumerate(tip[run].tolist()):
            if t in seen:
                if k - cut >= 2:
                    pieces.append(run[cut:k])
                seen, cut = set(), k
            seen.add(t)
        if len(run) - cut >= 2:
            pieces.append(run[cut:])
        keys.append(np.full(len(pieces) - before, r))
    width = max([2, int(lengths[whole].max(initial=2)), *(p.size for p in pieces)])
    rows = np.full((whole.size, width), -1, dtype=np.int64)
    at = np.arange(width)
    inside = at[np.newaxis, :] < lengths[whole][:, np.newaxis]
    rows[inside] = order[(starts[whole][:, np.newaxis] + at[np.newaxis, :])[inside]]
    if not pieces:
        return rows
    # In the order of their runs, as the probes were sorted.
    return np.concatenate([rows, _pad(pieces, width)])[np.argsort(np.concatenate(keys), kind="stable")]


def _distinct_of(chances: FloatArray) -> float:
    """P(independent picks land on pairwise different nodes), each pick a row of chances
    over the same nodes: the sum over the set partitions of the picks of the Möbius
    weight times, per block, the chance that all of the block's picks are one node."""
    together: dict[tuple[int, ...], float] = {}
    total = 0.0
    for part, weight in _partitions(chances.shape[0]):
        term = weight
        for block in part:
            if block not in together:
                together[block] = float(chances[list(block)].prod(axis=0).sum())
            term *= together[block]
        total += term
    return min(1.0, max(0.0, total))


@functools.cache
def _partitions(k: int) -> tuple[tuple[tuple[tuple[int, ...], ...], float], ...]:
    """The set partitions of ``range(k)``, each with its Möbius weight, as the blocks of
    more than one pick (a single pick's chance of being one node is 1)."""

    def partitions(items: list[int]) -> list[list[tuple[int, ...]]]:
        if not items:
            return [[]]
        first, rest = items[0], items[1:]
        out: list[list[tuple[int, ...]]] = []
        for p in partitions(rest):
            out.append([(first,), *p])
            for i, block in enumerate(p):
                out.append([*p[:i], (first, *block), *p[i + 1 :]])
        return out

    result = []
    for part in partitions(list(range(k))):
        weight = 1.0
        for block in part:
            weight *= (-1) ** (len(block) - 1) * math.factorial(len(block) - 1)
        result.append((tuple(b for b in part if len(b) > 1), weight))
    return tuple(result)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Excess:
    """Groups with a probe impaired in one way, against how single probes fare."""

    failed_groups: int
    expected_failed: float  # under the null, from each node's single-probe rate
    expected_failed_upper: float  # ... plus two standard errors
    single_failed: int  # single probes impaired that way
    singles: int  # ... of these single probes

    def log_p(self, groups: int) -> float:
        """log P(this many failed groups or more) at the upper expectation."""
        if groups == 0 or self.failed_groups <= self.expected_failed:
            return 0.0
        return log_binom_sf(self.failed_groups, groups, min(1.0, self.expected_failed_upper / groups))


@dataclass(frozen=True, slots=True, kw_only=True)
class _GroupStats:
    groups: int
    impaired: _Excess  # a probe failed or was late (a SYN retransmit, or as slow)
    #: A probe reset (refused or reset): how the target answers the second connection of
    #: a 5-tuple it already has, where a hairpin or loss times out.
    reset: _Excess
    all_ok: int  # groups whose probes all succeeded, none late
    same: int  # ... two of them on one target node
    expected_same: float
    #: Groups whose probes all succeeded (late or not) with two on one target node (and
    #: their probes), and how many of them had a late probe against the single probes
    #: that landed there.
    together: int
    together_probes: int
    late: _Excess
    single: int
    failed_probes: list[int]  # failed (not merely late) grouped probes, to claim


def _single_rates(
    codes: _Codes, good: BoolArray, single: BoolArray
) -> tuple[IntArray, FloatArray, FloatArray]:
    """Per (source node, NLB address): how often its ``single`` (ungrouped) probes are
    impaired, shrunk to the node's rate, itself shrunk to the pooled rate.

    A node whose every probe fails (isolated, unreachable) thereby explains its own
    failed groups, and an address a node cannot reach at all (a zone cut off from the
    node's, which holds that zone's NLB address) the groups that hold it. Returns (the
    (node, address) code of each probe, rate per code, its variance).
    """
    node, n_nodes = codes.src, len(codes.srcs)
    n_addresses = len(codes.ips) + 1  # and none
    addr = np.where(codes.ip >= 0, codes.ip, len(codes.ips))
    key = node * n_addresses + addr
    size = n_nodes * n_addresses
    n_node = np.bincount(node[single], minlength=n_nodes).astype(np.float64)
    f_node = np.bincount(node[single & ~good], minlength=n_nodes).astype(np.float64)
    pooled = float(f_node.sum() / max(1.0, n_node.sum()))
    node_rate = (f_node + _SHRINK * pooled) / (n_node + _SHRINK)
    n_key = np.bincount(key[single], minlength=size).astype(np.float64)
    f_key = np.bincount(key[single & ~good], minlength=size).astype(np.float64)
    prior = np.repeat(node_rate, n_addresses)
    rate = (f_key + _SHRINK * prior) / (n_key + _SHRINK)
    return key, rate, rate * (1.0 - rate) / (n_key + _SHRINK)


def _landing_rates(
    codes: _Codes, bad: BoolArray, single: BoolArray
) -> tuple[IntArray, FloatArray, FloatArray]:
    """Per node a probe landed on: how often the ``single`` probes that landed there are
    ``bad``, shrunk to the pooled rate (a node that drops SYNs makes every probe it
    serves late, grouped or not). Returns (each probe's node code, the last for none;
    rate per code, its variance)."""
    size = len(codes.landed_at) + 1
    key = np.where(codes.landed >= 0, codes.landed, size - 1)
    n = np.bincount(key[single], minlength=size).astype(np.float64)
    f = np.bincount(key[single & bad], minlength=size).astype(np.float64)
    pooled = float(f[:-1].sum() / max(1.0, n[:-1].sum()))
    rate = (f + _SHRINK * pooled) / (n + _SHRINK)
    return key, rate, rate * (1.0 - rate) / (n + _SHRINK)


def _codes(values: Sequence[str | None]) -> tuple[IntArray, list[str]]:
    """Each value's code (-1 for None) and the values by code, in the order they first come."""
    names = [v for v in dict.fromkeys(values) if v is not None]
    index: dict[str | None, int] = {v: k for k, v in enumerate(names)}
    index[None] = -1
    return np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values)), names


@dataclass(frozen=True, slots=True)
class _Codes:
    """The NLB probes' labels as codes (-1: none), worked out once a pass: the source node,
    the source address, the NLB address, and the node each probe landed on."""

    src: IntArray
    srcs: list[str]
    src_ip: IntArray
    ip: IntArray
    ips: list[str]
    landed: IntArray
    landed_at: list[str]

    @classmethod
    def of(cls, nb: NlbProbes, landed: Sequence[str | None]) -> _Codes:
        src, srcs = _codes(nb.src_node)
        ip, ips = _codes(nb.target_ip)
        dst, dsts = _codes(landed)
        return cls(
            src=src, srcs=srcs, src_ip=_codes(nb.src_ip)[0], ip=ip, ips=ips, landed=dst, landed_at=dsts
        )


class _Chance:
    """P(two of one source node's probes to these NLB addresses land on one node), from the
    node each of its successes landed on (an all-successful group's picks are independent
    draws of where that node's successes land), or, where the node has fewer than
    :data:`_OWN_SUCCESSES` successes of an address, where every node's did.

    The node's own successes matter in a small cluster: a client that hairpins never
    lands on its own node, so its successful picks spread over one node fewer (1 in 2
    the same on three nodes, against 1 in 3 over all clients' successes). Where the
    NLB's successes land on more than :data:`_OWN_NODES_MAX` nodes, one node fewer moves
    the chance by under 1/:data:`_OWN_NODES_MAX` of itself, and a node's own few
    successes would only add noise: every node's spread serves (``per_source`` False).
    """

    def __init__(self, nb: NlbProbes, codes: _Codes, ok: BoolArray) -> None:
        dst, ip = codes.landed, codes.ip
        self._ip = {x: k for k, x in enumerate(codes.ips)}
        n_ip, n_dst = max(1, len(codes.ips)), max(1, len(codes.landed_at))
        keep = ok & (dst >= 0) & (ip >= 0)
        #: Successes per (address, landing node).
        self._by_ip = np.bincount(ip[keep] * n_dst + dst[keep], minlength=n_ip * n_dst).reshape(n_ip, n_dst)
        self.per_source = int(((self._by_ip > 0).sum(axis=1)).max(initial=0)) <= _OWN_NODES_MAX
        self._by_source: dict[tuple[str | None, int], IntArray] = {}
        if self.per_source:
            for k in np.flatnonzero(keep).tolist():
                row = self._by_source.setdefault(
                    (nb.src_node[k], int(ip[k])), np.zeros(n_dst, dtype=np.int64)
                )
                row[dst[k]] += 1
        self._cache: dict[tuple[str | None, tuple[str | None, ...]], float] = {}

    def _landing(self, src: str | None, ip: str | None) -> IntArray | None:
        at = self._ip.get(ip) if ip is not None else None
        if at is None:
            return None
        own = self._by_source.get((src, at))
        return own if own is not None and own.sum() >= _OWN_SUCCESSES else self._by_ip[at]

    def __call__(self, src: str | None, ips: tuple[str | None, ...]) -> float:
        key = (src if self.per_source else None, tuple(sorted(ips, key=str)))
        got = self._cache.get(key)
        if got is None:
            counts = [self._landing(key[0], ip) for ip in key[1]]
            if len(counts) < 2 or any(c is None or not c.any() for c in counts):
                got = 0.0
            else:
                rows = np.stack([c / c.sum() for c in counts if c is not None])
                got = 1.0 - _distinct_of(rows)
            self._cache[key] = got
        return got


def _pad(groups: list[IntArray], width: int = 2) -> IntArray:
    """The groups as one array, a row each: its probes' positions, -1 past its last (at
    least ``width`` columns)."""
    width = max(width, *(g.size for g in groups)) if groups else width
    out = np.full((len(groups), width), -1, dtype=np.int64)
    for r, g in enumerate(groups):
        out[r, : g.size] = g
    return out


@dataclass(frozen=True, slots=True)
class _Rows:
    """Padded groups (:func:`_pad`) and what their probes say, a row each."""

    pad: IntArray
    valid: BoolArray
    safe: IntArray  # pad with 0 for the padding: index with it, mask with ``valid``
    node: IntArray  # the node each probe landed on, distinct negatives where none

    @classmethod
    def of(cls, pad: IntArray, landed_code: IntArray) -> _Rows:
        valid = pad >= 0
        safe = np.where(valid, pad, 0)
        node = landed_code[safe]
        fill = -1 - np.arange(pad.shape[1], dtype=np.int64)  # never equal to each other
        node = np.where(valid & (node >= 0), node, fill[np.newaxis, :])
        return cls(pad=pad, valid=valid, safe=safe, node=node)

    def all(self, mask: BoolArray) -> BoolArray:
        """Each group: every probe in ``mask``."""
        return np.asarray((mask[self.safe] | ~self.valid).all(axis=1), dtype=np.bool_)

    def any(self, mask: BoolArray) -> BoolArray:
        return np.asarray((mask[self.safe] & self.valid).any(axis=1), dtype=np.bool_)

    def two_on_one_node(self) -> BoolArray:
        """Each group: two of its probes that landed somewhere landed on the same node."""
        out = np.zeros(self.pad.shape[0], dtype=np.bool_)
        width = self.pad.shape[1]
        for a in range(width):
            for b in range(a + 1, width):
                out |= self.node[:, a] == self.node[:, b]
        return out

    def first_ts(self, nb: NlbProbes) -> FloatArray:
        """When each group's first probe was sent."""
        first: FloatArray = np.where(self.valid, nb.ts[self.safe], np.inf).min(axis=1)
        return first

    def take(self, rows: BoolArray) -> _Rows:
        return _Rows(pad=self.pad[rows], valid=self.valid[rows], safe=self.safe[rows], node=self.node[rows])


def _last_same(nb: NlbProbes, codes: _Codes, groups: IntArray) -> float | None:
    """When the last group that all succeeded with two probes on one node was sent, if any."""
    good = (nb.outcome == OK) & ~nb.late
    rows = _Rows.of(groups, codes.landed)
    hit = rows.all(good) & rows.two_on_one_node()
    if not hit.any():
        return None
    return float(rows.first_ts(nb)[hit].max())


def _stats(
    nb: NlbProbes,
    codes: _Codes,
    groups: IntArray,
    policy: DiagnosisPolicy,
    *,
    since: float = -math.inf,
) -> _GroupStats:
    """The two tests' counts over the groups (and single probes) sent after ``since``."""
    ok = nb.outcome == OK
    good = ok & ~nb.late
    grouped = np.zeros(nb.size, dtype=np.bool_)
    grouped[groups[groups >= 0]] = True
    landed_code = codes.landed
    every = _Rows.of(groups, landed_code)
    rows = every.take(every.first_ts(nb) > since)
    single = ~grouped & (nb.ts > since)
    impaired = _excess(codes, rows, ~good, single, policy)
    # Resets are a small share of a healthy path's failures: where single probes show
    # none, their floor is the singles' reset rate pulled toward the background by its
    # prior pseudo-probes, not the background itself (which hid a collision's resets at
    # scale, where 1 group in N collides).
    is_reset = np.isin(nb.outcome, _RESET)
    prior = policy.background_prior_probes
    floor = (float((single & is_reset).sum()) + prior * policy.background_failure_rate) / (
        float(single.sum()) + prior
    )
    reset = _excess(codes, rows, is_reset, single, policy, floor=floor)
    # Where successes land over the same span: a fault that began inside the window
    # (a zone cut) changes where they can.
    chance = _Chance(nb, codes, ok & (nb.ts > since))
    all_good = rows.all(good)
    on_one = rows.two_on_one_node()
    expected_same = _expected_same(codes, rows.take(all_good), chance)
    not_ok = ~ok[rows.safe] & rows.valid & ~all_good[:, np.newaxis]
    failed_probes = rows.pad[not_ok].tolist()
    together = rows.take(rows.all(ok) & on_one & rows.all(landed_code >= 0))
    late = _excess(
        codes, together, nb.late, single & ok, policy, rates=_landing_rates(codes, nb.late, single & ok)
    )
    return _GroupStats(
        groups=int(rows.pad.shape[0]),
        impaired=impaired,
        reset=reset,
        all_ok=int(all_good.sum()),
        same=int((all_good & on_one).sum()),
        expected_same=expected_same,
        together=int(together.pad.shape[0]),
        together_probes=int(together.valid.sum()),
        late=late,
        single=int(single.sum()),
        failed_probes=failed_probes,
    )


def _expected_same(codes: _Codes, rows: _Rows, chance: _Chance) -> float:
    """The sum over ``rows``' groups of the chance that two of their probes land on one
    node, computed once per source (where it matters) and set of addresses."""
    if rows.pad.shape[0] == 0:
        return 0.0
    ip, ips = codes.ip, codes.ips
    ip_rows = np.sort(np.where(rows.valid, ip[rows.safe], -2), axis=1)  # -1: no address, -2: none
    src, srcs = codes.src, codes.srcs
    first = src[rows.safe[:, 0]] if chance.per_source else np.full(rows.pad.shape[0], -1, dtype=np.int64)
    keys, inverse = np.unique(np.c_[first, ip_rows], axis=0, return_inverse=True)
    per_key = np.array(
        [
            chance(
                None if k[0] < 0 else srcs[k[0]], tuple(None if c < 0 else ips[c] for c in k[1:] if c != -2)
            )
            for k in keys.tolist()
        ]
    )
    return float(per_key[inverse.reshape(-1)].sum())


def _excess(
    codes: _Codes,
    rows: _Rows,
    bad: BoolArray,
    single: BoolArray,
    policy: DiagnosisPolicy,
    *,
    rates: tuple[IntArray, FloatArray, FloatArray] | None = None,
    floor: float | None = None,
) -> _Excess:
    """How many groups (``rows``) hold a ``bad`` probe, and how many would if each probe
    fared as the ``single`` probes of its node and address do (``1 - prod(1 - p)``, at
    least ``floor`` a probe, the background failure rate by default; ``rates``: each
    probe's key, and the rate and its variance per key, if not those)."""
    floor = policy.background_failure_rate if floor is None else floor
    key, rate, var = _single_rates(codes, ~bad, single) if rates is None else rates
    n_groups = rows.pad.shape[0]
    if n_groups == 0:
        return _Excess(
            failed_groups=0,
            expected_failed=0.0,
            expected_failed_upper=0.0,
            single_failed=int((single & bad).sum()),
            singles=int(single.sum()),
        )
    keys = key[rows.safe]
    fine = np.where(rows.valid, 1.0 - rate[keys], 1.0)
    ones = np.ones((n_groups, 1))
    before = np.cumprod(np.c_[ones, fine[:, :-1]], axis=1)  # the product of the probes before each
    after = np.cumprod(np.c_[ones, fine[:, :0:-1]], axis=1)[:, ::-1]  # ... and after it
    expected = np.maximum(1.0 - fine.prod(axis=1), rows.valid.sum(axis=1) * floor).sum()
    # d(1 - prod)/dp_i: the product of the group's other probes
    slope = np.bincount(keys[rows.valid], (before * after)[rows.valid], minlength=rate.shape[0])
    return _Excess(
        failed_groups=int(rows.any(bad).sum()),
        expected_failed=float(expected),
        expected_failed_upper=float(expected) + 2.0 * math.sqrt(float((slope**2 * var).sum())),
        single_failed=int((single & bad).sum()),
        singles=int(single.sum()),
    )


def _claim(ctx: Context, nb: NlbProbes, probes: list[int]) -> list[str]:
    """Claim the failed grouped probes from the rows that counted them; their paths."""
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
    # Where each probe landed: the node the NLB picked (under externalTrafficPolicy:
    # Cluster the entry node, which the echo's view of the client names; the serving
    # node is any). The 5-tuple collides there.
    picks = ctx.nlb_picks
    codes = _Codes.of(nb, picks.node if picks is not None else nb.dst_node)
    groups = _groups(nb, codes, pol.pair_window_s)
    if groups.shape[0] < pol.min_samples:
        return []
    # A collision that began inside the window follows groups that landed on one node
    # before it: test the groups sent after the last of those. Under no collision the
    # all-successful groups since the last same-node one are geometric, P(k or more) =
    # (1 - c)^k, which is the Poisson test below; the excess of failed groups is counted
    # over the same span.
    cut = _last_same(nb, codes, groups)
    st = _stats(nb, codes, groups, pol, since=-math.inf if cut is None else cut)
    if st.groups < pol.min_samples or st.single == 0:
        return []
    excess = any(x.failed_groups > x.expected_failed for x in (st.impaired, st.reset))
    if not excess or st.same > 0.2 * st.expected_same:
        return []  # the tests must point the same way
    # Failed groups in excess (of any impairment, or of resets alone, which a hairpin or
    # loss beside the collision does not dilute) with all-good groups never on one node;
    # or, where a collision ends in a SYN retransmit, groups on one node late more often
    # than the single probes landing there, a signature on its own. The strongest
    # reading, corrected for taking it.
    lp_impaired, lp_reset = st.impaired.log_p(st.groups), st.reset.log_p(st.groups)
    lp_fail = min(0.0, min(lp_impaired, lp_reset) + math.log(2.0))
    lp_same = log_poisson_cdf(st.same, st.expected_same)
    # Like every test, the late reading rests on at least min_samples probes.
    lp_late = st.late.log_p(st.together) if st.together_probes >= pol.min_samples else 0.0
    both = log_fisher([lp_fail, lp_same]) if lp_fail < 0.0 and lp_same <= math.log(0.5) else 0.0
    lp = min(0.0, min(both, lp_late) + math.log(2.0))
    if lp > math.log(pol.alpha):
        return []
    i, r = st.impaired, st.reset
    late = (
        f"; of the groups that all succeeded with two probes on one node, {count(st.late.failed_groups)} of "
        f"{count(st.together)} had one late (a SYN retransmit; ~{count(st.late.expected_failed)} expected "
        f"from the single probes that landed there: {frac(st.late.single_failed, st.late.singles)} late)"
        if lp_late < both
        else ""
    )
    reset = (
        f", {count(r.failed_groups)} a probe reset or refused (~{count(r.expected_failed)} expected: "
        f"{frac(r.single_failed, r.singles)} single probes)"
        if lp_reset < lp_impaired
        else ""
    )
    evidence = (
        f"same-source-port NLB probe groups: {count(i.failed_groups)} of {count(st.groups)} had a failed "
        f"or SYN-retransmitted probe ({pct(i.failed_groups, st.groups)}; ~{count(i.expected_failed)} "
        f"expected from how single probes fare: {frac(i.single_failed, i.singles)}){reset}; "
        f"{count(st.same)} of {count(st.all_ok)} groups that all succeeded at once had two probes land on "
        f"one target node (expected ~{count(st.expected_same)}){late}"
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
        "forwards to NODE only, so every same-port group collides",
        production="NLB cross-zone load balancing on plus preserve_client_ip.enabled=true "
        "(docs/incidents.md#istio-nlb-cross-zone)",
    ),
)
