"""Who probes what, and when: pinglist construction and round planning.

The collector turns the inventory into one :class:`~prober.pinglist.Pinglist` per
agent (:class:`PinglistBuilder`); each agent turns its pinglist into the probes of one
round (:func:`plan_round`). Both halves are pure: no I/O, no clock, no global
randomness. Time enters as a round index (:func:`round_index` of a ``now`` the caller
read) and randomness as an ``rng`` argument, so every property below is a unit test.

The properties the rest of prober relies on:

* **Coverage.** Nodes sit on a hash ring (:func:`ring_order`); an agent's peers are the
  ring starting after its own node. Round ``r`` probes ``k`` consecutive peer groups
  from offset ``(r * k) mod len(peers)``, so every (source, peer) pair is probed within
  ``ceil(len(peers) / k)`` consecutive rounds from any start, and over ``len(peers)``
  rounds every pair exactly ``k`` times.
* **Equal incoming load.** ``k`` and the ring are the same for every agent and the
  round index is wall-clock based, so in every round each node is probed by exactly
  ``k`` source nodes, i.e. by ``k`` agents of each kind when every node runs one of
  each. No node is hammered because it sorts first.
* **Fan-in.** Shared targets (Services, NLB zone addresses, DNS, externals) are
  probed by each agent only every ``every`` rounds. Agents are ranked on a second
  hash ring and an agent's phase is its rank (plus the target's slot) mod ``every``,
  so each residue class, i.e. the set of agents probing one shared target in one
  round, holds at most ``ceil(agents / every) <= ceil(shared_budget_per_s *
  interval_s)`` agents. A phase taken straight from ``hash(name) mod every`` would
  only make that true on average. An NLB zone address's bound grows with the nodes
  behind it (:meth:`SchedulePolicy.nlb_fan_in`), at a stride that divides ``every``,
  in rounds kept free of the agent's other shared targets where there is room.
* **Locality.** An agent's own pinglist part holds only its same-node and shared
  targets; the peer ring and the schedule are one document every agent shares. With
  the previous builder, ranks are sticky (:func:`sticky_ranks`), so a node joining
  changes the shared document and the newcomers' parts, and no other agent's.
* **Budget.** ``k`` is the largest number of peer groups that fits the per-round
  budget after the worst-case same-node and shared load, so no round plans more than
  ``budget_per_s * interval_s`` probes when that is feasible at all (see
  :func:`choose_peers_per_round` for what happens when it is not). The cluster's share
  of ``cluster_budget_per_s`` never takes ``k`` below ``min_peers_per_round``; the
  pinglist's ``budget_per_s`` is then what the round plans.
* **No stampede.** Probes are spread over 90% of the round with stratified jitter,
  and an agent's first round waits :func:`stagger_s`, a per-name hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec

from prober import settings as declared
from prober.inventory import Agent, Inventory, Node
from prober.model import Proto, TargetKind
from prober.pinglist import (
    SWEEP_DELIVERY_MARGIN_S,
    AgentPinglist,
    Mesh,
    PeerGroup,
    Pinglist,
    ProbeTarget,
    Question,
    SharedGroup,
    SweepOrder,
    assemble,
    mesh_version,
)

#: Share of the interval that probes start in, so a round's probes (mostly) finish
#: before the next round's begin.
USABLE_FRACTION: Final = 0.9
#: Seconds over which an agent starts the focused entries it learns of mid-round (with
#: jitter, so the agents a question reaches at once do not start together): the question
#: came because a probe failed, and its answer waits for the last of them (a timed-out
#: probe reports ``timeout_s`` after it starts); a few probes an agent, bounded by
#: ``--focus-per-agent``, need no more spreading than that.
CATCH_UP_SPAN_S: Final = 1.0
#: An agent starts the probes due within this long after the one its round loop woke
#: for together with it (:func:`launch_offsets`): at the rates from ~200 nodes up (2.5 to 12.5
#: probes/s) a wake-up, on caches gone cold while the loop slept, costs more than the
#: probe it starts. Starting the probes due within half a second together took the
#: agent's CPU a TCP probe from 0.98 to 0.62 ms at 2.5/s and from 0.69 to 0.21 ms at
#: 12.5/s (``bench/agent_throughput.py``). The plan's spread keeps its jitter at this
#: scale; a probe starts at most this much before its offset.
LAUNCH_AHEAD_S: Final = 0.5

# Separate blake2b personalisations keep the node ring, the agent (phase) ring and the
# stagger independent of each other even where names coincide.
_RING: Final = b"prober-ring"
_PHASE: Final = b"prober-phase"
_STAGGER: Final = b"prober-stagger"

# Tolerance for budget arithmetic: 0.29 * 100 is 28.999999999999996 in binary floating
# point, and a budget of 29 probes per round should allow 29 probes.
_EPS: Final = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulePolicy:
    """How hard the mesh probes. One policy for the whole cluster (the collector's)."""

    interval_s: float = declared.INTERVAL.default
    timeout_s: float = declared.TIMEOUT.default
    budget_per_s: float = declared.BUDGET.default  # per agent
    concurrency: int = declared.CONCURRENCY.default
    #: Fan-in: probes/s one shared target receives from all agents together.
    shared_budget_per_s: float = declared.SHARED_BUDGET.default
    #: ...and an NLB's, per node behind it, where that is more: the hairpin and collision
    #: tests need NLB probes in proportion to the nodes (see :meth:`nlb_fan_in`).
    nlb_budget_per_node: float = declared.NLB_BUDGET.default
    udp: bool = True  # also probe each peer's UDP echo
    #: NLB same-source-port group every N rounds of that agent's NLB phase (0: never); every
    #: round where the agent probes each address more than once a round (``repeat``).
    #: The collision shows only in a group whose probes land on one node, about
    #: ``C(addresses, 2) / N`` of them, so the test wants groups in proportion to the nodes:
    #: at 1,000 nodes every second NLB round gives ~500 groups a round, ~1.5 of them
    #: colliding (every third gave ~333, too few within five rounds). The group replaces
    #: one probe of each address, so fan-in is unchanged; the single probes that are left
    #: are the test's baseline.
    collision_every: int = 2
    #: Probes/s of the whole mesh together: every result goes to one collector, whose
    #: cost grows with the results it takes. Large clusters get a lower per-agent
    #: budget (``cluster_budget_per_s / agents``) instead of an overloaded collector.
    #: ``None``: no cluster-wide limit.
    cluster_budget_per_s: float | None = declared.CLUSTER_BUDGET.default
    #: Peer groups a round that the cluster's share never takes an agent below (its own
    #: ``budget_per_s`` may): each node is probed by this many peers of each kind every
    #: round, what the node rules need to name a fault within two rounds. Past the size
    #: where ``cluster_budget_per_s / agents`` plans fewer (~1,000 nodes at the defaults),
    #: this sets the mesh's rate instead: ~2.5 probes/s an agent, 25,000/s at 5,000 nodes.
    min_peers_per_round: int = 3
    #: Result posts a second the mesh sends the collector at most, where each agent posting
    #: every ``report_min_s`` would send more: each agent then posts every
    #: ``agents / report_requests_per_s`` seconds, at most every round (``interval_s``).
    #: A post costs the collector ~0.26 ms beyond its results (``bench/collector_posts.py``):
    #: 1,000 a second at 1,000 nodes (every 2 s) and at 5,000 (every 10 s), ~0.26 core.
    report_requests_per_s: float = 1000.0
    report_min_s: float = 2.0
    #: The most probes per round of one same-node or shared target (see :func:`choose_repeat`).
    repeat_max: int = 3
    #: The fewest probes per round of each ``service-local`` Service from each agent. Its
    #: backend is the agent's own node, so it costs no fan-in. The target is listed
    #: ``ceil(local_service_min / repeat)`` times in ``local``. A timed-out probe's result
    #: arrives ~7 s after it starts (5 s timeout, 2 s delivery), so the collector's 20 s
    #: recent sub-window holds ~4 of a fault's failures at three a round; with the host
    #: agent's probes of the same Service (bridge-netfilter's healthy side) that is past
    #: the rules' six samples at any cluster size (``tests/unit/test_diagnose_arrival.py``).
    local_service_min: int = 3
    #: The large-payload (MTU) probe's answer size (see :func:`large_probe_targets`); 0: none.
    large_probe_bytes: int = declared.LARGE_PROBE_BYTES.default
    #: Probes a round each agent's schedule leaves unplanned within its own ``budget_per_s``
    #: for focused probes (the collector's ``--focus-per-agent``; at most a tenth of the
    #: round budget, :attr:`focus_reserved`). Where the agent's own budget binds (up to ~600
    #: nodes at the defaults) the schedule would otherwise fill it, and no question would
    #: get an answer. 0: none (a standalone agent has no collector to ask).
    focus_reserve: int = declared.FOCUS_PER_AGENT.default

    def __post_init__(self) -> None:
        # The flags' ranges (prober.settings.SCHEDULE); a SettingError is a ValueError.
        declared.check_fields(self, declared.SCHEDULE)
        if self.repeat_max < 1:
            raise ValueError(f"repeat_max must be at least 1, got {self.repeat_max!r}")
        if self.local_service_min < 1:
            raise ValueError(f"local_service_min must be at least 1, got {self.local_service_min!r}")
        if self.collision_every < 0:
            raise ValueError(f"collision_every must be 0 (never) or more, got {self.collision_every!r}")
        if self.min_peers_per_round < 1:
            raise ValueError(f"min_peers_per_round must be at least 1, got {self.min_peers_per_round!r}")
        if self.focus_reserve < 0:
            raise ValueError(f"focus_reserve must be 0 (none) or more, got {self.focus_reserve!r}")
        if not (self.report_requests_per_s > 0 and self.report_min_s > 0):
            raise ValueError("report_requests_per_s and report_min_s must be > 0")

    def report_interval(self, agents: int) -> float:
        """How often each of ``agents`` posts its results: every ``report_min_s``, or less
        often where the mesh would send more than ``report_requests_per_s`` posts a second,
        but at least once a round."""
        spread = agents / self.report_requests_per_s
        return max(self.report_min_s, min(self.interval_s, spread))

    @property
    def round_budget(self) -> float:
        """The most probes one agent may plan in one round (before any cluster-wide limit)."""
        return self.budget_per_s * self.interval_s

    @property
    def focus_reserved(self) -> int:
        """Probes a round the schedule keeps free for focused probes: :attr:`focus_reserve`,
        at most a tenth of :attr:`round_budget`."""
        return min(self.focus_reserve, math.floor(self.round_budget / 10 + _EPS))

    def nlb_fan_in(self, nodes: int, addresses: int) -> float:
        """Probes per round one NLB zone address may receive from all agents together:
        ``shared_budget_per_s``'s, or ``nlb_budget_per_node`` for each of the ``nodes``,
        spread over the NLB's ``addresses``, when that is more.

        The NLB picks a client's own node 1 time in N, and the hairpin's test counts
        those picks over all clients: it needs about 6 N successes (the expectation of
        a Poisson count that is 0 under a hairpin, :mod:`prober.diagnose.nlb_hairpin`),
        a number of NLB probes that grows with the nodes, as does a same-source-port
        pair's chance of one backend (1/N). Per backend node the load stays
        ``nlb_budget_per_node``.
        """
        shared = self.shared_budget_per_s * self.interval_s
        per_node = self.nlb_budget_per_node * self.interval_s * nodes / max(addresses, 1)
        return max(shared, per_node)

    def agent_budget(self, agents: int) -> float:
        """Probes/s one agent may send in a mesh of ``agents``: ``budget_per_s``, or its
        share of ``cluster_budget_per_s`` when that is smaller."""
        if self.cluster_budget_per_s is None or agents <= 0:
            return self.budget_per_s
        return min(self.budget_per_s, self.cluster_budget_per_s / agents)


# --------------------------------------------------------------------------- hashing


def _hash64(text: str, person: bytes) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "big")


_MOD128: Final = 1 << 128


def _digest128(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


def _hash_order(names: Iterable[str], person: bytes) -> list[str]:
    unique = dict.fromkeys(names)
    return sorted(unique, key=lambda n: (_hash64(n, person), n))


def ring_order(nodes: Iterable[str]) -> list[str]:
    """The nodes in hash-ring order (duplicates dropped).

    blake2b, not Python's ``hash()``: the order must be the same in every process and
    every release. A ring rather than a sort by name keeps neighbours unrelated (nodes
    named after their subnet or rack would otherwise always probe their own rack
    first). Adding a node only inserts it: the others keep their relative order, each
    existing pair's ring distance grows by at most one, and for every ``d`` exactly
    ``d`` of the pairs at ring distance ``<= d`` change (those from the new node's
    ``d`` predecessors).
    """
    return _hash_order(nodes, _RING)


def stagger_s(agent_name: str, interval_s: float) -> float:
    """First-run delay in ``[0, interval_s)``, spread uniformly by a hash of the name.

    A restarted DaemonSet then starts its first round over a whole interval instead of
    all at once.
    """
    fraction = (_hash64(agent_name, _STAGGER) >> 11) / float(1 << 53)  # in [0, 1)
    return min(fraction * interval_s, math.nextafter(interval_s, 0.0))


# ---------------------------------------------------------------------------- rounds


def round_index(now: float, interval_s: float) -> int:
    """``floor(now / interval_s)``: the same on every agent whose clock is in sync."""
    return math.floor(now / interval_s)


def round_start(index: int, interval_s: float) -> float:
    return index * interval_s


def round_peer_indices(index: int, k: int, n_peers: int) -> list[int]:
    """Positions in ``peers`` that round ``index`` probes.

    ``k`` consecutive positions from ``(index * k) mod n_peers``, wrapping. Consecutive
    rounds continue where the last one stopped, which gives coverage within
    ``ceil(n_peers / k)`` rounds and exact fairness over ``n_peers`` rounds.
    """
    if n_peers <= 0 or k <= 0:
        return []
    k = min(k, n_peers)
    start = (index * k) % n_peers
    return [(start + j) % n_peers for j in range(k)]


def is_due(group: SharedGroup, index: int) -> bool:
    """Whether this agent probes ``group`` in round ``index`` (fan-in stride)."""
    every = max(1, group.every)
    return (index + group.phase) % every == 0


@dataclass(frozen=True, slots=True)
class PlannedProbe:
    """One probe of a round: start it ``offset_s`` after the round's start."""

    offset_s: float
    #: Usually one; several for a same-source-port group, sent together from one port.
    targets: tuple[ProbeTarget, ...]
    same_source_port: bool = False


_Unplaced = tuple[tuple[ProbeTarget, ...], bool]


def _shared_probes(groups: Sequence[SharedGroup], repeat: int = 1) -> list[_Unplaced]:
    """Shared groups as probes, ``repeat`` of each target; a same-source-port group once.

    The NLB same-source-port group holds the NLB's zone addresses, and the builder
    aligns its rounds with theirs: in those rounds the pair *is* one of this agent's
    ``repeat`` probes of each address, so fan-in stays within budget.
    """
    together = {t.key for g in groups if g.same_source_port for t in g.targets}
    probes: list[_Unplaced] = []
    for g in groups:
        if g.same_source_port:
            probes.append((tuple(g.targets), True))
            continue
        for t in g.targets:
            probes.extend([((t,), False)] * (repeat - 1 if t.key in together else repeat))
    return probes


def large_probe_targets(pl: Pinglist, index: int) -> list[ProbeTarget]:
    """The large-payload (MTU) probes of round ``index``: ``repeat`` peers, each one's echo of
    this agent's network.

    Probe ``j`` goes to the group at position ``(index + j) mod k`` of the round's ``k``
    peer groups, so the peers rotate through the slice from round to round (and a small
    cluster's ``repeat`` of them are different peers within one round), and since every
    agent takes the same positions of its own slice of the one ring, every node receives
    exactly ``repeat`` large probes per round from each source kind (and sends as many).
    The target is the peer's HTTP echo of the agent's own kind (pod to pod, host to host:
    the paths an MTU black hole between nodes is on), with ``proto`` ``http-large``; the
    answer's size is ``pl.large_probe_bytes`` (none when 0).
    """
    slice_ = round_peer_indices(index, pl.peers_per_round, len(pl.peers))
    if pl.large_probe_bytes <= 0 or not slice_:
        return []
    kind = TargetKind(pl.kind.value)
    return [
        msgspec.structs.replace(t, proto=Proto.HTTP_LARGE)
        for j in range(max(1, pl.repeat))
        for t in pl.peers[slice_[(index + j) % len(slice_)]].targets
        if t.proto is Proto.HTTP and t.kind is kind
    ]


def _round_probes(pl: Pinglist, index: int) -> list[_Unplaced]:
    repeat = max(1, pl.repeat)
    probes: list[_Unplaced] = [((t,), False) for t in pl.local for _ in range(repeat)]
    for i in round_peer_indices(index, pl.peers_per_round, len(pl.peers)):
        probes.extend(((t,), False) for t in pl.peers[i].targets)
    probes.extend(((t,), False) for t in large_probe_targets(pl, index))
    probes.extend(_shared_probes([g for g in pl.shared if is_due(g, index)], repeat))
    probes.extend(((t,), False) for t in pl.focus)
    return probes


def plan_round(pl: Pinglist, index: int, rng: random.Random) -> list[PlannedProbe]:
    """The probes of round ``index``, sorted by start offset.

    Same-node targets every round, this round's ``peers_per_round`` peer groups, its
    large-payload probes (:func:`large_probe_targets`), the shared groups due this round,
    and one probe per focused entry. Stratified jitter: slot ``i`` of ``n`` starts at
    ``(i + u) * usable / n`` with ``u`` from ``rng`` and ``usable`` 90% of the
    interval, so probes are evenly spread yet never synchronised between agents; the
    order of targets over the slots is shuffled so no target always goes first.
    Deterministic given ``(pl, index)`` and the state of ``rng``.
    """
    probes = _round_probes(pl, index)
    n = len(probes)
    if n == 0:
        return []
    rng.shuffle(probes)
    usable = max(pl.interval_s, 0.0) * USABLE_FRACTION
    last = max(math.nextafter(usable, 0.0), 0.0)  # (n - 1 + u) / n can round up to 1
    planned = [
        PlannedProbe(offset_s=min((slot + rng.random()) * usable / n, last), targets=t, same_source_port=s)
        for slot, (t, s) in enumerate(probes)
    ]
    planned.sort(key=lambda p: p.offset_s)
    return planned


def launch_offsets(offsets: Sequence[float], ahead_s: float = LAUNCH_AHEAD_S) -> list[float]:
    """When an agent starts a round's probes planned at ``offsets`` (ascending): the
    first of a group at its own offset, and with it every one due within ``ahead_s``
    after it; the next one after that starts a group of its own. One wake-up of the
    agent's round loop a group (:data:`LAUNCH_AHEAD_S`). The records are stamped so."""
    out: list[float] = []
    group = -math.inf
    for offset in offsets:
        if offset > group + ahead_s:
            group = offset
        out.append(group)
    return out


def focus_added(before: Sequence[ProbeTarget], after: Sequence[ProbeTarget]) -> list[ProbeTarget]:
    """The focused entries of ``after`` that ``before`` lacks, in ``after``'s order; an entry
    listed twice counts twice."""
    held: dict[tuple[str, str, int, str], int] = {}
    for t in before:
        held[t.key] = held.get(t.key, 0) + 1
    added: list[ProbeTarget] = []
    for t in after:
        if held.get(t.key, 0) > 0:
            held[t.key] -= 1
        else:
            added.append(t)
    return added


def focus_catch_up(
    before: Sequence[ProbeTarget], after: Pinglist, *, elapsed_s: float, rng: random.Random
) -> list[PlannedProbe]:
    """The focused probes an agent starts in the round in progress when its pinglist
    changes ``elapsed_s`` into the round: the entries of ``after.focus`` that ``before``
    (the focus in force) lacks (:func:`focus_added`), spread with jitter over the next
    :data:`CATCH_UP_SPAN_S` (or what is left of the round's usable part, if less),
    offsets from the round's start.

    A question the collector asks mid-round is probed in that round, not the next
    (docs/contracts.md § Pinglist); the next round's plan holds the entries as usual.
    None once the usable part is over: the next round is less than a tenth away.
    """
    usable = max(after.interval_s, 0.0) * USABLE_FRACTION
    start = max(elapsed_s, 0.0)
    if start >= usable:
        return []
    new = focus_added(before, after.focus)
    rng.shuffle(new)
    step = min(usable - start, CATCH_UP_SPAN_S) / len(new) if new else 0.0
    last = max(math.nextafter(usable, 0.0), start)
    return [
        PlannedProbe(offset_s=min(start + (slot + rng.random()) * step, last), targets=(t,))
        for slot, t in enumerate(new)
    ]


def sweep_peer_indices(pl: Pinglist, order: SweepOrder) -> list[int]:
    """Positions in ``pl.peers`` a sweep probes: ``rounds * peers_per_round`` consecutive
    ring positions (at most all of them) from the position round ``order.round`` would start at.

    ``peers_per_round`` and the ring are the same on every agent, so every node is
    probed by exactly ``min(len(peers), rounds * peers_per_round)`` source nodes of each
    kind: the sweep's fan-in into a node is the schedule's for ``rounds`` rounds.
    """
    n, k = len(pl.peers), pl.peers_per_round
    if n == 0 or k <= 0:
        return []
    count = min(n, k * max(1, order.rounds))
    start = (order.round * k) % n
    return [(start + j) % n for j in range(count)]


def sweep_plan(pl: Pinglist, order: SweepOrder) -> list[PlannedProbe]:
    """The probes of one sweep, their offsets spread evenly over ``order.spread_s``.

    The same-node targets once (a ``service-local`` Service's copies too); the peer
    groups of :func:`sweep_peer_indices`; the shared groups due in round ``order.round``
    (their fan-in stride holds, so a shared target receives at most what one round sends
    it), NLB zone addresses as their same-source-port group when it is due. The collector
    picks ``rounds`` so that the plan fits the agent's budget over ``spread_s``
    (docs/contracts.md § Sweep); the agent's :class:`~prober.agent.budget.Budget` holds
    the rate whatever the plan says.
    """
    probes: list[_Unplaced] = [((t,), False) for t in {t.key: t for t in pl.local}.values()]
    for i in sweep_peer_indices(pl, order):
        probes.extend(((t,), False) for t in pl.peers[i].targets)
    probes.extend(_shared_probes([g for g in pl.shared if is_due(g, order.round)]))
    n = len(probes)
    step = max(order.spread_s, 0.0) / n if n else 0.0
    return [PlannedProbe(offset_s=i * step, targets=t, same_source_port=s) for i, (t, s) in enumerate(probes)]


def sweep_order(
    pl: Pinglist,
    *,
    sweep_id: str,
    now: float,
    deadline_s: float,
    timeout_s: float,
    agents: int = 1,
    max_results: int | None = None,
) -> SweepOrder:
    """The order of a sweep that must be delivered ``deadline_s`` after ``now``, for agents
    whose pinglists are like ``pl`` (same interval, budget and ``peers_per_round``).

    Agents learn of it within one pinglist fetch (an interval) and stop launching the
    probe timeout and :data:`~prober.pinglist.SWEEP_DELIVERY_MARGIN_S` before the end:
    the rounds whose peers they probe fit in what is left at their budget
    (:func:`sweep_rounds`), and the launches are spread over no longer than the plan
    takes at the budget. The ring slice starts right after the rounds the schedule
    itself probes meanwhile, so a sweep adds peers the rounds do not reach. With
    ``max_results``, fewer rounds (at least one) keep ``agents`` such plans within it:
    the collector holds a sweep's results in memory until its report is built.
    """
    room = max(0.0, deadline_s - pl.interval_s - timeout_s - SWEEP_DELIVERY_MARGIN_S)
    rounds = sweep_rounds(spread_s=room, interval_s=pl.interval_s)

    def at(rounds: int) -> SweepOrder:
        return SweepOrder(
            id=sweep_id,
            round=round_index(now, pl.interval_s) + rounds,
            rounds=rounds,
            timeout_s=timeout_s,
            spread_s=room,
            until=now + deadline_s,
        )

    order = at(rounds)
    while (
        max_results is not None
        and order.rounds > 1
        and agents * planned_count(sweep_plan(pl, order)) > max_results
    ):
        order = at(order.rounds - 1)
    needed = planned_count(sweep_plan(pl, order)) / pl.budget_per_s
    return msgspec.structs.replace(order, spread_s=min(room, needed))


def sweep_rounds(*, spread_s: float, interval_s: float) -> int:
    """How many rounds' peers a sweep spread over ``spread_s`` covers: the schedule sends
    one round's probes per interval within the budget, so a sweep may send
    ``floor(spread_s / interval_s)`` rounds' (at least one) within the same budget."""
    return max(1, math.floor(spread_s / interval_s + _EPS))


def planned_count(plan: Iterable[PlannedProbe]) -> int:
    """Probes in a plan: a same-source-port group counts one per target."""
    return sum(len(p.targets) for p in plan)


# ------------------------------------------------------------------- pinglist builder


def choose_peers_per_round(
    *, round_budget: float, local: int, shared: int, group_size: int, n_peers: int
) -> int:
    """How many peer groups each agent probes per round (``k``).

    ``floor((round_budget - local - shared) / group_size)``, clamped to
    ``[1, n_peers]``; 0 when there are no peers. Coverage wins over the budget: when
    even one group does not fit (a tiny budget, or more same-node and shared targets
    than the budget allows) ``k`` is still 1 and such a round plans
    ``local + shared + group_size`` probes, more than the budget. That keeps every pair
    covered within ``n_peers`` rounds; lowering the interval's load is then the
    operator's call (a larger budget or interval, fewer shared targets).
    """
    if n_peers <= 0:
        return 0
    remaining = round_budget - local - shared
    fits = math.floor(remaining / max(group_size, 1) + _EPS)
    return max(1, min(n_peers, fits))


def _peers_within_the_floor(
    policy: SchedulePolicy, *, round_budget: float, local: int, shared: int, group_size: int, n_peers: int
) -> int:
    """``k`` for the cluster's share of the budget (``round_budget``), but never fewer than
    ``policy.min_peers_per_round`` where the agent's own budget holds that many."""

    def fitting(budget: float) -> int:
        return choose_peers_per_round(
            round_budget=budget, local=local, shared=shared, group_size=group_size, n_peers=n_peers
        )

    own = policy.round_budget - policy.focus_reserved
    return max(fitting(round_budget), min(policy.min_peers_per_round, fitting(own)))


def choose_repeat(
    *,
    agents: int,
    policy: SchedulePolicy,
    round_budget: float,
    local: int,
    shared: int,
    peer_probes: int,
) -> int:
    """How many times per round an agent probes each same-node and each due shared target.

    The largest ``r <= policy.repeat_max`` such that the shared targets' fan-in stays
    within budget with every agent probing them every round ``r`` times
    (``agents * r <= shared_budget_per_s * interval_s``) and the round still fits the
    agent's budget with the peer probes it has at ``r = 1``
    (``r * (local + shared) + peer_probes <= round_budget``). Repeats never cost peer
    coverage; in clusters past a few dozen nodes ``r`` is 1.
    """
    fan_in = math.floor(policy.shared_budget_per_s * policy.interval_s / max(agents, 1) + _EPS)
    per_target = max(local + shared, 1)
    fits = math.floor((round_budget - peer_probes) / per_target + _EPS)
    return max(1, min(policy.repeat_max, fan_in, fits))


def fan_in_every(agents: int, policy: SchedulePolicy, per_round: float | None = None) -> int:
    """The stride of a shared target that may receive ``per_round`` probes a round (default:
    the shared budget's): ``max(1, ceil(agents / per_round))``."""
    if per_round is None:
        per_round = policy.shared_budget_per_s * policy.interval_s
    return max(1, math.ceil(agents / per_round - _EPS))


def _echo_targets(agent: Agent, policy: SchedulePolicy) -> list[ProbeTarget]:
    """An agent's HTTP echo and, with ``policy.udp``, its UDP echo."""
    kind = TargetKind(agent.kind.value)
    ports = [(agent.http_port, Proto.HTTP)] + ([(agent.udp_port, Proto.UDP)] if policy.udp else [])
    return [
        ProbeTarget(
            target=f"{kind.value}/{agent.node}",
            kind=kind,
            ip=agent.address,
            port=port,
            proto=proto,
            dst_node=agent.node,
            dst_kind=agent.kind,
        )
        for port, proto in ports
    ]


@dataclass(frozen=True, slots=True)
class _SharedTemplate:
    """A shared group before it gets one agent's phase."""

    slot: int  # phase offset, so an agent's shared groups spread over its rounds
    name: str
    targets: list[ProbeTarget]
    multiple: int = 1  # every = multiple * fan-in stride
    same_source_port: bool = False
    #: Probes a round the target may receive from all agents (``None``: the shared budget's).
    fan_in: float | None = None


def _shared_templates(inv: Inventory, policy: SchedulePolicy, nodes: int) -> list[_SharedTemplate]:
    templates: list[_SharedTemplate] = []
    slot = 0
    for svc in inv.services:
        if svc.local:
            continue
        target = ProbeTarget(
            target=f"service/{svc.name}",
            kind=TargetKind.SERVICE,
            ip=svc.address,
            port=svc.port,
            proto=Proto.HTTP,
        )
        templates.append(_SharedTemplate(slot=slot, name=f"service/{svc.name}", targets=[target]))
        slot += 1
    for nlb in inv.nlbs:
        zone_targets = [
            ProbeTarget(
                target=f"nlb/{nlb.name}",
                kind=TargetKind.NLB,
                ip=addr.address,
                port=nlb.port,
                proto=Proto.HTTP,
                zone=addr.zone or None,
            )
            for addr in nlb.addresses
        ]
        # All zone groups of one NLB share a slot and a stride (and so a phase): the
        # same-source-port pair below is due only in rounds where they are, and replaces
        # them there.
        fan_in = policy.nlb_fan_in(nodes, len(nlb.addresses))
        for addr, target in zip(nlb.addresses, zone_targets, strict=True):
            name = f"nlb/{nlb.name}/{addr.zone or addr.address}"
            templates.append(_SharedTemplate(slot=slot, name=name, targets=[target], fan_in=fan_in))
        if len(zone_targets) >= 2 and policy.collision_every > 0:
            templates.append(
                _SharedTemplate(
                    slot=slot,
                    name=f"nlb/{nlb.name}/same-source-port",
                    targets=zone_targets,
                    multiple=policy.collision_every,
                    same_source_port=True,
                    fan_in=fan_in,
                )
            )
        slot += 1
    for dns in inv.dns:
        target = ProbeTarget(
            target=f"dns/{dns.name}",
            kind=TargetKind.DNS,
            ip=dns.address,
            port=dns.port,
            proto=Proto.DNS,
            query=dns.query,
        )
        templates.append(_SharedTemplate(slot=slot, name=f"dns/{dns.name}", targets=[target]))
        slot += 1
    for ext in inv.externals:
        target = ProbeTarget(
            target=f"external/{ext.name}",
            kind=TargetKind.EXTERNAL,
            ip=ext.address,
            port=ext.port,
            proto=ext.proto,
        )
        templates.append(_SharedTemplate(slot=slot, name=f"external/{ext.name}", targets=[target]))
        slot += 1
    return templates


def _divisor_stride(least: int, every: int) -> int:
    """The shortest stride from ``least`` that divides the shared stride ``every``: a
    target of a larger fan-in (an NLB) is then due in a fixed set of the shared stride's
    rounds, which :func:`_place_slots` keeps apart from the other targets' where it can.
    ``every`` itself qualifies (``least <= every`` for any fan-in above the shared one)."""
    return next(d for d in range(max(1, least), every + 1) if every % d == 0) if least < every else every


def _place_slots(
    templates: Sequence[_SharedTemplate], strides: Mapping[str, int], every: int
) -> list[_SharedTemplate]:
    """The templates with slots that spread their due rounds over the shared stride.

    Templates that share a slot (one NLB's zone addresses and its same-source-port pair)
    keep sharing one. Every stride divides ``every``, so a template of stride ``e`` at
    slot ``s`` is due in the rounds ``x`` (mod ``every``) with ``(x + s) % e == 0``.
    The shortest strides are placed first (they take the most rounds), each at the slot
    whose rounds hold the fewest probes already: the worst round of an agent, which its
    budget must hold (:func:`_worst_shared_round`), grows only where the shared stride
    has no room left. With one stride this is the slots 0, 1, 2, ... in order.
    """
    by_slot: dict[int, list[_SharedTemplate]] = {}
    for t in templates:
        by_slot.setdefault(t.slot, []).append(t)

    def stride_of(members: list[_SharedTemplate]) -> int:
        return min(strides[t.name] for t in members)

    load = [0] * every
    placed: dict[int, int] = {}
    for old in sorted(by_slot, key=lambda k: (stride_of(by_slot[k]), k)):
        members = by_slot[old]
        stride = stride_of(members)
        n = sum(len(t.targets) for t in members if not t.same_source_port)
        # Slots a stride apart are due in the same rounds: the first stride's are the choices.
        best = min(range(stride), key=lambda s: (max(load[(-s) % stride :: stride]), s))
        for x in range((-best) % stride, every, stride):
            load[x] += n
        placed[old] = best
    return [dataclasses.replace(t, slot=placed[t.slot]) for t in templates]


def _worst_shared_round(templates: Sequence[_SharedTemplate], strides: Sequence[int]) -> int:
    """The most shared probes any round can hold for one agent, template ``i`` due every
    ``strides[i]`` rounds at its slot.

    A group is due in round ``x`` (the round index plus the agent's rank) when
    ``(x + slot) % stride == 0``, so the rounds repeat with the least common multiple of
    the strides (the shared stride, which they all divide): the worst is found in one
    such cycle. Same-source-port groups add nothing (they replace the zone probes they
    are due with).
    """
    due = [
        (t.slot, stride, len(t.targets))
        for t, stride in zip(templates, strides, strict=True)
        if not t.same_source_port
    ]
    if not due:
        return 0
    cycle = math.lcm(*(stride for _, stride, _ in due))
    return max(sum(n for slot, stride, n in due if (x + slot) % stride == 0) for x in range(cycle))


def sticky_ranks(names: Sequence[str], previous: dict[str, int] | None = None) -> dict[str, int]:
    """Each agent's rank on the phase ring: a permutation of ``0 .. len(names) - 1``.

    Without ``previous``, the hash order of the names. With the ranks of the inventory
    before, every agent keeps its rank where it can: a newcomer takes a rank left free
    (the end when nothing left), and when agents leave, only those whose rank is past
    the new end move into the gaps. So one agent joining changes no other agent's rank,
    and one leaving changes at most one, while the ranks stay dense: that is what keeps
    each residue class (one round's probers of a shared target) at most
    ``ceil(agents / every)`` for any stride.
    """
    if previous is None:
        return {name: i for i, name in enumerate(_hash_order(names, _PHASE))}
    size = len(set(names))
    kept = {n: previous[n] for n in dict.fromkeys(names) if n in previous and previous[n] < size}
    taken = set(kept.values())
    free = iter(r for r in range(size) if r not in taken)
    movers = sorted(
        (n for n in dict.fromkeys(names) if n in previous and n not in kept), key=previous.__getitem__
    )
    newcomers = _hash_order((n for n in names if n not in previous), _PHASE)
    ranks = dict(kept)
    for name in [*movers, *newcomers]:
        ranks[name] = next(free)
    return ranks


class PinglistBuilder:
    """Every agent's pinglist for one inventory version (built once, in the collector).

    Two parts go on the wire (:mod:`prober.pinglist`): the :class:`Mesh` every agent
    shares (the schedule and the peer ring, :meth:`mesh`) and each agent's own
    :class:`AgentPinglist` (:meth:`head`); :meth:`for_agent` joins them into the
    agent's :class:`Pinglist`. Given the builder of the inventory before
    (``previous``), agents keep their phase ranks (:func:`sticky_ranks`), so a node
    joining changes the mesh and the newcomers' own parts, nothing else of the others.

    Construction is O(N log N) in nodes and agents; :meth:`for_agent` is O(N) (the
    rotated peer list shares its groups between agents); :meth:`version_of` is O(1).

    Only ready agents on ready nodes get pinglists or are probed. A ready node with no
    ready agent is still a peer when it has NodePorts to probe.
    """

    def __init__(
        self, inv: Inventory, policy: SchedulePolicy, *, previous: PinglistBuilder | None = None
    ) -> None:
        self.policy = policy
        nodes: dict[str, Node] = {}
        for node in inv.nodes:
            if node.ready:
                nodes.setdefault(node.name, node)
        on_node: dict[str, list[Agent]] = {}
        seen: set[str] = set()
        for agent in inv.agents:
            if agent.ready and agent.node in nodes and agent.name not in seen:
                seen.add(agent.name)
                on_node.setdefault(agent.node, []).append(agent)
        for agents in on_node.values():
            agents.sort(key=lambda a: (a.kind.value, a.name))

        echoes = {a.name: _echo_targets(a, policy) for agents in on_node.values() for a in agents}
        groups: list[PeerGroup] = []
        for name in ring_order(nodes):
            targets = [t for a in on_node.get(name, []) for t in echoes[a.name]]
            targets += [self._nodeport(np.name, nodes[name].address, np.port) for np in inv.nodeports]
            if targets:
                groups.append(PeerGroup(node=name, targets=targets))
        self._groups = groups
        self._position = {g.node: i for i, g in enumerate(groups)}
        #: Node names in ring order (the nodes that are probed as peers).
        self.ring: tuple[str, ...] = tuple(g.node for g in groups)

        agents = [a for name in self.ring for a in on_node.get(name, [])]
        #: Each agent's rank on the phase ring (kept from ``previous`` where it can be).
        kept = None if previous is None else previous.ranks
        self.ranks: dict[str, int] = sticky_ranks([a.name for a in agents], kept)
        #: The fan-in stride of the shared targets (an NLB's may be shorter: a divisor of it).
        self.shared_every = fan_in_every(len(agents), policy)
        #: The per-agent budget in this mesh (the cluster-wide limit shared out).
        self.budget_per_s = policy.agent_budget(len(agents))
        templates = _shared_templates(inv, policy, len(groups))
        self._strides = {
            t.name: self.shared_every
            if t.fan_in is None
            else _divisor_stride(fan_in_every(len(agents), policy, t.fan_in), self.shared_every)
            for t in templates
        }
        templates = _place_slots(templates, self._strides, self.shared_every)
        local_services = [
            ProbeTarget(
                target=f"service-local/{svc.name}",
                kind=TargetKind.SERVICE_LOCAL,
                ip=svc.address,
                port=svc.port,
                proto=Proto.HTTP,
            )
            for svc in inv.services
            if svc.local
        ]

        def same_node(copies: int) -> dict[str, list[ProbeTarget]]:
            return {
                a.name: [t for b in on_node[a.node] if b.name != a.name for t in echoes[b.name]]
                + [self._nodeport(np.name, nodes[a.node].address, np.port) for np in inv.nodeports]
                + [t for t in local_services for _ in range(copies)]
                for a in agents
            }

        # Sized for the most copies of the service-local targets (repeat 1); fewer once the
        # repeat is known (each copy is probed ``repeat`` times).
        locals_of = same_node(policy.local_service_min)

        #: Peer groups every agent probes per round (the same for all, see module doc),
        #: within the cluster's share and what the agent's own budget leaves for focus.
        round_budget = min(self.budget_per_s * policy.interval_s, policy.round_budget - policy.focus_reserved)
        # The large-payload probe is one more per round, repeated like a same-node target.
        large = 1 if policy.large_probe_bytes > 0 and len(groups) > 1 else 0
        local = max((len(v) for v in locals_of.values()), default=0) + large
        shared = _worst_shared_round(templates, [self._strides[t.name] for t in templates])
        group_size = max((len(g.targets) for g in groups), default=1)
        self.peers_per_round = _peers_within_the_floor(
            policy, round_budget=round_budget, local=local, shared=shared, group_size=group_size,
            n_peers=len(groups) - 1,
        )  # fmt: skip
        #: Probes per round of each same-node and shared target (1 past small clusters).
        self.repeat = (
            choose_repeat(
                agents=len(agents),
                policy=policy,
                round_budget=round_budget,
                local=local,
                shared=shared,
                peer_probes=self.peers_per_round * group_size,
            )
            if self.shared_every == 1
            else 1
        )
        copies = math.ceil(policy.local_service_min / self.repeat)
        if copies != policy.local_service_min:
            locals_of = same_node(copies)
            local = max((len(v) for v in locals_of.values()), default=0) + large

        #: The most probes any agent's round plans, and the room its own budget
        #: (``policy.budget_per_s``, not the cluster share) leaves for focused probes.
        self.round_max = self.repeat * (local + shared) + self.peers_per_round * group_size
        # Where the floor of peers planned more than the share, the agent may send it.
        planned = self.round_max / policy.interval_s
        self.budget_per_s = max(self.budget_per_s, min(policy.budget_per_s, planned))
        self.focus_room = max(0, math.floor(policy.round_budget - self.round_max + _EPS))
        self._on_node = {node: [a.name for a in on] for node, on in on_node.items()}
        self._outside: dict[str, list[ProbeTarget]] = {}
        for t in templates:
            if not t.same_source_port:
                for target in t.targets:
                    self._outside.setdefault(target.target, []).append(target)

        self._build_documents(groups, agents, locals_of, templates)

    def _build_documents(
        self,
        groups: list[PeerGroup],
        agents: list[Agent],
        locals_of: dict[str, list[ProbeTarget]],
        templates: list[_SharedTemplate],
    ) -> None:
        """The mesh, each agent's own part, and each joined pinglist's version."""
        policy = self.policy
        mesh = Mesh(
            version="",
            interval_s=policy.interval_s,
            timeout_s=policy.timeout_s,
            budget_per_s=self.budget_per_s,
            concurrency=policy.concurrency,
            peers_per_round=self.peers_per_round,
            repeat=self.repeat,
            shared=[self._shared(t, 0) for t in templates],
            ring=[],
            large_probe_bytes=policy.large_probe_bytes,
            report_interval_s=policy.report_interval(len(agents)),
        )
        params = msgspec.json.encode(mesh)
        with_ring = msgspec.structs.replace(mesh, ring=groups)
        self._mesh = msgspec.structs.replace(with_ring, version=mesh_version(with_ring))

        # The joined pinglist's version without encoding N peer groups per agent. An
        # agent's peer list is the set of the other groups in ring order, and ring order
        # is a function of the set of node names, so (set of other groups, own node)
        # fixes it. A set hash (the sum of group digests mod 2**128) minus the agent's
        # own group's digest identifies that set in O(1). Equal pinglists get equal
        # versions, so an unchanged pinglist keeps its version across inventories.
        digests = [_digest128(msgspec.json.encode(g)) for g in groups]
        total = sum(digests) % _MOD128
        self._heads: dict[str, AgentPinglist] = {}
        self._versions: dict[str, str] = {}
        for a in agents:
            rank = self.ranks[a.name]
            head = AgentPinglist(
                version="", agent=a.name, node=a.node, kind=a.kind, rank=rank, local=locals_of[a.name]
            )
            self._heads[a.name] = msgspec.structs.replace(
                head, version=hashlib.blake2b(msgspec.json.encode(head), digest_size=8).hexdigest()
            )
            own = (a.name, a.node, a.kind, locals_of[a.name], [self._shared(t, rank) for t in templates])
            peer_set = (total - digests[self._position[a.node]]) % _MOD128
            h = hashlib.blake2b(peer_set.to_bytes(16, "big"), digest_size=8)
            h.update(params)
            h.update(msgspec.json.encode(own))
            self._versions[a.name] = h.hexdigest()

    @staticmethod
    def _nodeport(name: str, address: str, port: int) -> ProbeTarget:
        # No dst_node: whichever node serves the NodePort says so in its echo.
        return ProbeTarget(
            target=f"nodeport/{name}", kind=TargetKind.NODEPORT, ip=address, port=port, proto=Proto.HTTP
        )

    def _shared(self, t: _SharedTemplate, rank: int) -> SharedGroup:
        # Where an agent probes each address more than once a round (``repeat``, small
        # clusters), the same-source-port group is one of those probes every round: the
        # zone addresses keep their single probes, and the collision test gets a group
        # a round instead of one every ``collision_every``.
        multiple = 1 if t.same_source_port and self.repeat > 1 else t.multiple
        every = self._strides[t.name] * multiple
        # rank + slot, not a hash: each residue class of ranks is one round's probers.
        return SharedGroup(
            name=t.name,
            targets=t.targets,
            every=every,
            phase=(rank + t.slot) % every,
            same_source_port=t.same_source_port,
        )

    def focus(self, suspects: Sequence[Question], rules: FocusRules) -> Focus:
        """The focused probes that answer ``suspects``, in their order, within every bound.

        A ``pair`` suspect gives every agent of each node the other node's pod and host
        echoes (its peer group but the NodePorts, which another node may serve);
        a ``target`` suspect gives every agent of the node ``rules.target_repeat``
        probes of each address of the outside target, and every agent of a witness
        (the next node on the ring with a pod and a host agent) one. A suspect is taken whole or not
        at all: when any of its agents lacks the room (``rules.per_agent`` and what its
        own budget leaves, :attr:`focus_room`), when its target would receive more than
        ``rules.target_fan_in`` focused probes a round, or after ``rules.max_suspects``
        taken. Only the agents of the taken suspects get a new own part; the mesh is
        untouched.
        """
        room = min(rules.per_agent, self.focus_room)
        entries: dict[str, list[ProbeTarget]] = {}
        fan_in: dict[str, int] = {}
        taken: list[Question] = []
        for s in suspects:
            if len(taken) >= rules.max_suspects:
                break
            wanted = self._wanted(s, rules)
            if not wanted:
                continue
            extra_in: dict[str, int] = {}
            for targets in wanted.values():
                for t in targets:
                    extra_in[t.target] = extra_in.get(t.target, 0) + 1
            if any(len(entries.get(a, [])) + len(ts) > room for a, ts in wanted.items()) or any(
                fan_in.get(x, 0) + n > rules.target_fan_in for x, n in extra_in.items()
            ):
                continue
            for a, ts in wanted.items():
                entries.setdefault(a, []).extend(ts)
            for x, n in extra_in.items():
                fan_in[x] = fan_in.get(x, 0) + n
            taken.append(s)
        heads: dict[str, AgentPinglist] = {}
        for a, ts in entries.items():
            head = msgspec.structs.replace(self._heads[a], version="", focus=ts)
            digest = hashlib.blake2b(msgspec.json.encode(head), digest_size=8).hexdigest()
            heads[a] = msgspec.structs.replace(head, version=digest)
        return Focus(suspects=tuple(taken), heads=heads, probes=sum(len(v) for v in entries.values()))

    def _wanted(self, s: Question, rules: FocusRules) -> dict[str, list[ProbeTarget]]:
        """Each agent's focused entries for one suspect (empty: nothing here can answer it)."""
        wanted: dict[str, list[ProbeTarget]] = {}
        if s.kind == "pair" and s.peer is not None and s.peer != s.node:
            for here, there in ((s.node, s.peer), (s.peer, s.node)):
                i = self._position.get(there)
                if i is None:
                    return {}
                echoes = [t for t in self._groups[i].targets if t.dst_node is not None]
                for a in self._on_node.get(here, []):
                    wanted[a] = list(echoes)
        elif s.kind == "target" and s.target is not None:
            targets = self._outside.get(s.target, [])
            if not targets or not self._on_node.get(s.node):
                return {}
            for a in self._on_node[s.node]:
                wanted[a] = [t for t in targets for _ in range(rules.target_repeat)]
            # A witness: the next node on the ring probes it once from each network, so the
            # window shows the target reachable from both networks elsewhere (what tells a
            # node's cross-wiring from a target that is down).
            i = self._position.get(s.node, -1)
            for j in range(1, len(self._groups)):
                other = self._on_node.get(self._groups[(i + j) % len(self._groups)].node, [])
                if len(other) >= 2 and other[0] not in wanted:
                    for a in other:
                        wanted[a] = list(targets)
                    break
        return wanted

    def agents(self) -> list[str]:
        """Agents that get a pinglist (ready, on a ready node), sorted by name."""
        return sorted(self._heads)

    def mesh(self) -> Mesh:
        """The part every agent shares: the schedule and the peer ring."""
        return self._mesh

    def head(self, agent_name: str) -> AgentPinglist | None:
        """The agent's own part; ``None`` if unknown, not ready, or on a node not ready."""
        return self._heads.get(agent_name)

    def version_of(self, agent_name: str) -> str | None:
        """The version :meth:`for_agent` would return, in O(1)."""
        return self._versions.get(agent_name)

    def for_agent(self, agent_name: str) -> Pinglist | None:
        """The agent's pinglist; ``None`` if unknown, not ready, or on a node not ready."""
        head = self._heads.get(agent_name)
        if head is None:
            return None
        i = self._position[head.node]
        joined = assemble(
            head, msgspec.structs.replace(self._mesh, ring=[]), version=self._versions[agent_name]
        )
        return msgspec.structs.replace(joined, peers=self._groups[i + 1 :] + self._groups[:i])


@dataclass(frozen=True, slots=True, kw_only=True)
class FocusRules:
    """The bounds of focused probing (the collector's flags; docs/contracts.md § Pinglist)."""

    #: Focused probes one agent may get per round (``--focus-per-agent``).
    per_agent: int = declared.FOCUS_PER_AGENT.default
    #: Suspects the whole cluster may have focused at once (``--suspects-max``).
    max_suspects: int = declared.SUSPECTS_MAX.default
    #: Probes per round from each agent of a node of one outside target it is suspected of
    #: failing to reach: both networks get the rules' minimum samples in one round.
    target_repeat: int = 3
    #: Focused probes per round one outside target may receive from all agents together.
    target_fan_in: int = 100

    @classmethod
    def of(cls, policy: SchedulePolicy, *, per_agent: int, max_suspects: int, min_samples: int) -> FocusRules:
        """Bounds for ``policy``: an outside target gets at most half its fan-in budget
        again from focused probes; a node's agents ask ``ceil(min_samples / 2)`` each."""
        return cls(
            per_agent=per_agent,
            max_suspects=max_suspects,
            target_repeat=max(1, math.ceil(min_samples / 2)),
            target_fan_in=max(1, math.floor(policy.shared_budget_per_s * policy.interval_s / 2 + _EPS)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Focus:
    """The suspects taken and the own parts of the agents that probe them."""

    suspects: tuple[Question, ...] = ()
    heads: dict[str, AgentPinglist] = field(default_factory=dict)
    probes: int = 0  # focused probes per round, all agents together


class FocusedPinglists:
    """A builder's pinglists with a :class:`Focus`: the same mesh and the same own parts
    but for the focused agents' (what the collector serves)."""

    def __init__(self, builder: PinglistBuilder, focus: Focus) -> None:
        self.builder = builder
        self.focus = focus

    def agents(self) -> list[str]:
        return self.builder.agents()

    def mesh(self) -> Mesh:
        return self.builder.mesh()

    def head(self, agent_name: str) -> AgentPinglist | None:
        got = self.focus.heads.get(agent_name)
        return got if got is not None else self.builder.head(agent_name)

    def for_agent(self, agent_name: str) -> Pinglist | None:
        pl = self.builder.for_agent(agent_name)
        head = self.focus.heads.get(agent_name)
        if pl is None or head is None:
            return pl
        extra = len(head.focus) / pl.interval_s
        return msgspec.structs.replace(
            pl, version=f"{pl.version}.{head.version}", focus=head.focus, budget_per_s=pl.budget_per_s + extra
        )


def pinglist_factory(policy: SchedulePolicy) -> Callable[[Inventory, object], PinglistBuilder]:
    """Builds each inventory's pinglists with ``policy``, keeping ranks from the builder
    before when there is one (the collector's pinglist factory)."""

    def build(inv: Inventory, previous: object) -> PinglistBuilder:
        return PinglistBuilder(
            inv, policy, previous=previous if isinstance(previous, PinglistBuilder) else None
        )

    return build
