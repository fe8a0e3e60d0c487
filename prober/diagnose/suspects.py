"""Open questions: where the evidence points without the samples to decide.

At scale the schedule visits a given pair of nodes once every ``ceil((N - 1) / k)``
rounds and an outside target from a given node once every fan-in stride: a window
may hold one failed probe of a pair or one timed-out probe of the external target
from a node, which no rule can call (every rule wants ``min_samples``), and which
the next visit, hours later at 5,000 nodes, cannot follow up. This module turns
such evidence into a short ranked list of :class:`~prober.pinglist.Question`
questions; the collector adds focused probes for them to the next pinglists
(:meth:`prober.schedule.PinglistBuilder.focus`) until they are settled.

* **pair** ``(a, b)``: a peer cell ``a -> b`` or ``b -> a`` (pod and host echoes)
  with a failure and fewer than ``min_samples`` probes, or with two failures or more
  whose failed share lies between ``healthy_ratio`` and ``dead_ratio`` on fewer than
  ``3 * min_samples`` probes; or a pair a ``pair-blocked`` finding names (its probes keep the finding
  current while the fault lasts, and clear it once it heals);
* **target** ``(node, target)``: a node's pod or host network failed an outside
  target (external, DNS) with fewer than ``ceil(min_samples / 2)`` probes on that
  side, or the other side has none, or a share neither healthy nor dead on fewer
  than three times that, from the first failure (a fresh fault's first failed probe
  comes after the side's older successes: one of three is not the background's); or
  a node an ``snat-asymmetric`` finding names, for each outside target it fails.

Not asked: a pair at a node, or an outside target from a node, that a finding of
another kind already explains (it names the node and the paths: a dead node's, an
isolated pod network's or a lossy node's peers, one failure each, would otherwise
fill the list and leave no room for the questions nothing answers yet); nor an
outside target of a kind a finding that names no node explains (DNS timeouts
across the cluster). An ``unexplained`` finding explains nothing.

Settled means: enough samples and a failed share outside the undecided band (the
rules decide it either way), or asked ``max_rounds`` passes without that. Ranked by
failures (strongest evidence first), at most ``max_suspects``.

Pure: counts in, questions out; no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from prober.arrays import unique_keys
from prober.model import Finding, FindingKind, SrcKind, TargetKind, split_path
from prober.pinglist import Question
from prober.settings import SUSPECT_ROUNDS, SUSPECTS_MAX
from prober.stats import OK, UNKNOWN, PairTable

_N_TARGET_KINDS = len(TargetKind)
_TARGET_KINDS = tuple(TargetKind)
_PEER = np.array([_TARGET_KINDS.index(TargetKind.POD), _TARGET_KINDS.index(TargetKind.HOST)], dtype=np.int64)
_OUTSIDE = np.array(
    [_TARGET_KINDS.index(TargetKind.EXTERNAL), _TARGET_KINDS.index(TargetKind.DNS)], dtype=np.int64
)
_HOST = tuple(SrcKind).index(SrcKind.HOST)
_PEER_KINDS = frozenset({TargetKind.POD, TargetKind.HOST})
_OUTSIDE_KINDS = frozenset({TargetKind.EXTERNAL, TargetKind.DNS})


@dataclass(frozen=True, slots=True, kw_only=True)
class SuspectPolicy:
    """When a question is open, and how many the cluster keeps."""

    min_samples: int = 6
    healthy_ratio: float = 0.2
    dead_ratio: float = 0.9
    max_suspects: int = SUSPECTS_MAX.default
    max_rounds: int = SUSPECT_ROUNDS.default


def suspects(
    table: PairTable,
    findings: Iterable[Finding] = (),
    *,
    previous: Sequence[Question] = (),
    policy: SuspectPolicy | None = None,
) -> list[Question]:
    """The open questions of one window, strongest evidence first, at most ``policy.max_suspects``.

    ``previous``: the last pass's list; a question asked again counts one more pass.
    """
    pol = policy or SuspectPolicy()
    if pol.max_suspects <= 0 or table.rows == 0:
        return []
    found = list(findings)
    asked = {s.key: s.asked for s in previous}
    out = _pairs(table, found, pol) + _targets(table, found, pol)
    kept: list[Question] = []
    for s in out:
        n = asked.get(s.key, 0) + 1
        if n > pol.max_rounds and not s.named:
            continue  # the focused probes could not settle it: given up
        kept.append(Question(kind=s.kind, node=s.node, peer=s.peer, target=s.target, failed=s.failed,
                            sent=s.sent, asked=n, named=s.named))  # fmt: skip
    kept.sort(key=lambda s: (-s.failed, -s.failed / max(1, s.sent), s.key))
    return kept[: pol.max_suspects]


def _explaining(found: list[Finding], own: FindingKind, kinds: frozenset[TargetKind]) -> list[Finding]:
    """The findings, other than ``own`` (the kind that keeps its own questions) and
    ``unexplained``, that explain probes of ``kinds`` of target: their paths say so."""
    return [
        f
        for f in found
        if f.kind not in (own, FindingKind.UNEXPLAINED) and any(split_path(p)[1] in kinds for p in f.paths)
    ]


def _undecided(failed: int, sent: int, pol: SuspectPolicy) -> bool:
    if failed <= 0:
        return False
    if sent < pol.min_samples:
        return True
    return _band(failed, sent, 3 * pol.min_samples, pol)


def _band(failed: int, sent: int, enough: int, pol: SuspectPolicy, *, least: int = 2) -> bool:
    """``least`` failures or more, neither healthy nor dead, on fewer than ``enough`` probes
    (one failure among enough samples is the background's)."""
    share = failed / max(1, sent)
    return failed >= least and sent < enough and pol.healthy_ratio < share < pol.dead_ratio


def _pairs(table: PairTable, found: list[Finding], pol: SuspectPolicy) -> list[Question]:
    node_of = {name: i for i, name in enumerate(table.nodes)}
    dst_node = np.array([node_of.get(d, -1) for d in table.dsts] + [-1], dtype=np.int64)
    dst = dst_node[np.where(table.dst == UNKNOWN, len(table.dsts), table.dst)]
    rows = np.isin(table.path % _N_TARGET_KINDS, _PEER) & (dst >= 0) & (dst != table.src)
    n = max(1, len(table.nodes))
    sent = table.sent
    failed = sent - table.counts[:, OK]
    a, b = table.src[rows], dst[rows]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keys, inv = unique_keys(lo * n + hi, n * n)
    # Per unordered pair, each direction's counts: a question is open if either is.
    forward = a < b
    sent_r, failed_r = sent[rows], failed[rows]
    # sent, failed lo->hi; sent, failed hi->lo: whole counts, summed exactly in float64 by
    # np.bincount (np.add.at made this function 92 ms where it is 77 on a 1,000-node minute)
    cells = np.stack(
        [
            np.bincount(inv, np.where(mask, values, 0), minlength=keys.size)
            for mask in (forward, ~forward)
            for values in (sent_r, failed_r)
        ],
        axis=1,
    ).astype(np.int64)
    named = {tuple(sorted(p)) for f in found if f.kind == FindingKind.PAIR_BLOCKED for p in f.pairs}
    out: list[Question] = []
    named_keys = {
        min(node_of[x], node_of[y]) * n + max(node_of[x], node_of[y])
        for x, y in named
        if x in node_of and y in node_of
    }
    explained = {x for f in _explaining(found, FindingKind.PAIR_BLOCKED, _PEER_KINDS) for x in f.nodes}
    # Only pairs with a failure (or a finding) can be open: a Python loop over those alone.
    failing = (cells[:, 1] > 0) | (cells[:, 3] > 0) | np.isin(keys, list(named_keys))
    for k, (s1, f1, s2, f2) in zip(keys[failing].tolist(), cells[failing].tolist(), strict=True):
        x, y = sorted((table.nodes[k // n], table.nodes[k % n]))
        is_named = (x, y) in named
        if not is_named and (x in explained or y in explained):
            continue
        if is_named or _undecided(f1, s1, pol) or _undecided(f2, s2, pol):
            out.append(Question(kind="pair", node=x, peer=y, failed=f1 + f2, sent=s1 + s2, named=is_named))
    seen = {s.key for s in out}
    for x, y in sorted(named):  # named, but no probe of it in this window: keep asking
        if ("pair", x, y) not in seen and x in node_of and y in node_of:
            out.append(Question(kind="pair", node=x, peer=y, named=True))
    return out


def _targets(table: PairTable, found: list[Finding], pol: SuspectPolicy) -> list[Question]:
    rows = np.isin(table.path % _N_TARGET_KINDS, _OUTSIDE)
    if not rows.any():
        return []
    named = {x for f in found if f.kind == FindingKind.SNAT_ASYMMETRIC for x in f.nodes}
    explaining = _explaining(found, FindingKind.SNAT_ASYMMETRIC, _OUTSIDE_KINDS)
    explained = {x for f in explaining for x in f.nodes} - named
    # A finding that names no node (DNS timeouts) explains its kind of target everywhere.
    everywhere = {split_path(p)[1] for f in explaining if not f.nodes for p in f.paths}
    side = (table.path[rows] // _N_TARGET_KINDS == _HOST).astype(np.int64)
    # The outside targets alone, numbered afresh: the table's labels name every peer too
    # (two a node), and a node x label x side grid of them is 100 million cells at 5,000 nodes.
    labels, target = np.unique(table.target[rows], return_inverse=True)
    n_t = labels.size
    key = (table.src[rows] * n_t + target) * 2 + side
    size = len(table.nodes) * n_t * 2
    sent = np.bincount(key, table.sent[rows], minlength=size).reshape(-1, n_t, 2).astype(np.int64)
    ok = np.bincount(key, table.counts[rows, OK], minlength=size).reshape(-1, n_t, 2).astype(np.int64)
    failed = sent - ok
    t_kind = np.zeros(n_t, dtype=np.int64)
    t_kind[target] = table.path[rows] % _N_TARGET_KINDS
    need = max(1, math.ceil(pol.min_samples / 2))
    out: list[Question] = []
    for s_, t_ in zip(*np.nonzero(failed.sum(axis=2) > 0), strict=True):
        s, t = int(s_), int(t_)
        node = table.nodes[s]
        if node in explained or (node not in named and _TARGET_KINDS[t_kind[t]] in everywhere):
            continue
        sides = [(int(sent[s, t, k]), int(failed[s, t, k])) for k in (0, 1)]
        is_named = node in named
        open_ = any(
            f > 0 and (n < need or sides[1 - k][0] == 0 or _band(f, n, 3 * need, pol, least=1))
            for k, (n, f) in enumerate(sides)
        )
        if is_named or open_:
            out.append(Question(kind="target", node=node, target=table.targets[int(labels[t])],
                               failed=sides[0][1] + sides[1][1], sent=sides[0][0] + sides[1][0],
                               named=is_named))  # fmt: skip
    return out
