"""The schedule: coverage, equal incoming load, fan-in, budget, jitter and the pinglist.

Each property of ``prober.schedule``'s module docstring is tested here on pinglists
built from real inventories and on the plans ``plan_round`` makes from them.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.inventory import (
    Agent,
    DnsServer,
    External,
    Inventory,
    Nlb,
    Node,
    NodePort,
    Service,
    ZoneAddress,
)
from prober.model import Proto, SrcKind, TargetKind, path_of
from prober.pinglist import (
    AgentPinglist,
    Mesh,
    PeerGroup,
    Pinglist,
    ProbeTarget,
    SharedGroup,
    SweepOrder,
    assemble,
    split,
)
from prober.schedule import (
    LAUNCH_AHEAD_S,
    USABLE_FRACTION,
    PinglistBuilder,
    PlannedProbe,
    SchedulePolicy,
    choose_peers_per_round,
    choose_repeat,
    fan_in_every,
    is_due,
    launch_offsets,
    plan_round,
    planned_count,
    ring_order,
    round_index,
    round_peer_indices,
    round_start,
    stagger_s,
    sticky_ranks,
    sweep_peer_indices,
    sweep_plan,
    sweep_rounds,
)
from tests.inventories import EksCluster

# A realistic round index (wall clock / 10 s), so modular arithmetic meets big numbers.
NOW_ROUND = 176_385_600


#: The EKS-like shape of every mesh below (two zones: an NLB with two zone addresses).
SHAPE = EksCluster(n_nodes=1, zones=2)


def node_name(i: int) -> str:
    return SHAPE.node_name(i)


def pod(i: int) -> str:
    """Node ``i``'s pod-network agent."""
    return SHAPE.agent_name(i, SrcKind.POD)


def host(i: int) -> str:
    """Node ``i``'s host-network agent."""
    return SHAPE.agent_name(i, SrcKind.HOST)


def mesh(
    n: int,
    *,
    extras: bool = False,
    kinds: Sequence[SrcKind] = (SrcKind.POD, SrcKind.HOST),
    nodes_not_ready: Sequence[int] = (),
    agents_not_ready: Sequence[tuple[int, SrcKind]] = (),
) -> Inventory:
    """``n`` nodes with one agent of each kind; ``extras`` adds every shared target type."""
    shape = dataclasses.replace(SHAPE, n_nodes=n, kinds=tuple(kinds), shared=extras)
    return shape.inventory(nodes_not_ready=nodes_not_ready, agents_not_ready=agents_not_ready)


def policy_for_k(k: int, **changes: float) -> SchedulePolicy:
    """A plain mesh's policy giving ``k`` peers per round: local is 2 probes, a group 4.

    Without the large-payload probe and without room for focused probes: these test the
    peer rotation (the large probe's own fairness is tested in
    test_diagnose_mtu_blackhole.py, the room in test_focus.py)."""
    return SchedulePolicy(
        budget_per_s=(2 + 4 * k) / 10.0,
        interval_s=10.0,
        cluster_budget_per_s=None,
        large_probe_bytes=0,
        focus_reserve=0,
        **changes,  # type: ignore[arg-type]
    )


def build_k(n: int, k: int) -> PinglistBuilder:
    b = PinglistBuilder(mesh(n), policy_for_k(k))
    assert b.peers_per_round == k
    return b


def all_targets(pl: Pinglist) -> list[ProbeTarget]:
    """Every target a pinglist names: same-node, every peer group's, every shared group's."""
    return [*pl.local, *(t for g in pl.peers for t in g.targets), *(t for g in pl.shared for t in g.targets)]


def pinglists(b: PinglistBuilder) -> dict[str, Pinglist]:
    out = {}
    for name in b.agents():
        pl = b.for_agent(name)
        assert pl is not None
        out[name] = pl
    return out


def peer_nodes_probed(pl: Pinglist, index: int) -> list[str]:
    """The peer nodes one round of ``pl`` probes (one entry per group, via its HTTP echo)."""
    plan = plan_round(pl, index, random.Random(index))
    return [
        t.dst_node
        for p in plan
        for t in p.targets
        if t.dst_node is not None
        and t.dst_node != pl.node
        and t.proto is Proto.HTTP
        and t.dst_kind is SrcKind.POD
    ]


# ------------------------------------------------------------------------- ring, time


def test_ring_order_is_pinned_across_processes_and_releases() -> None:
    # Python's hash() is salted per process; the ring must not be. A change here
    # reshuffles every cluster's peer rotation on upgrade: make it on purpose only.
    assert ring_order(["node-a", "node-b", "node-c", "node-d"]) == ["node-b", "node-d", "node-a", "node-c"]


@given(st.lists(st.text(min_size=1, max_size=20), max_size=50), st.randoms(use_true_random=False))
def test_ring_order_ignores_input_order_and_duplicates(names: list[str], rnd: random.Random) -> None:
    shuffled = names + names[:3]
    rnd.shuffle(shuffled)
    assert ring_order(shuffled) == ring_order(names)
    assert sorted(ring_order(names)) == sorted(set(names))


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=2, max_value=150), st.integers(min_value=0, max_value=10**6))
def test_adding_a_node_moves_few_pairs(n: int, salt: int) -> None:
    """The stated bound: adding node X keeps the others' relative order, moves every
    existing pair's ring distance by at most one, and for every d changes exactly d of
    the n*d pairs at ring distance <= d (those from X's d ring predecessors)."""
    old_nodes = [f"n{salt}-{i}" for i in range(n)]
    x = f"n{salt}-new"
    old = ring_order(old_nodes)
    new = ring_order([*old_nodes, x])
    assert [m for m in new if m != x] == old

    def distances(ring: list[str]) -> dict[tuple[str, str], int]:
        pos = {m: i for i, m in enumerate(ring)}
        return {(s, p): (pos[p] - pos[s]) % len(ring) for s in ring for p in ring if s != p}

    d_old, d_new = distances(old), distances(new)
    assert all(d_new[pair] - d_old[pair] in (0, 1) for pair in d_old)
    # A pair leaves the set "ring distance <= d" exactly when its distance was d and grew
    # by one; none joins it. So per d, the pairs that leave are those moved from d.
    moved_from = Counter(dist for pair, dist in d_old.items() if d_new[pair] > dist)
    assert moved_from == Counter({d: d for d in range(1, n)})


@given(st.floats(min_value=0, max_value=4e9), st.sampled_from([1.0, 2.5, 10.0, 30.0, 60.0]))
def test_round_index_and_start_agree(now: float, interval: float) -> None:
    r = round_index(now, interval)
    assert round_start(r, interval) <= now < round_start(r + 1, interval) + 1e-6


def test_stagger_is_spread_uniformly_over_the_interval() -> None:
    names = [f"prober-agent-{kind}-{i}" for kind in ("pod", "host") for i in range(500)]
    delays = [stagger_s(name, 10.0) for name in names]
    assert all(0.0 <= d < 10.0 for d in delays)
    assert delays == [stagger_s(name, 10.0) for name in names]
    buckets = Counter(int(d) for d in delays)
    # Chi-square over 10 buckets: 27.9 is the 0.1% critical value for 9 degrees of freedom.
    chi2 = sum((buckets[b] - 100) ** 2 / 100 for b in range(10))
    assert chi2 < 27.9, buckets


@given(st.text(max_size=30), st.sampled_from([1e-3, 1.0, 10.0, 3600.0]))
def test_stagger_stays_below_the_interval(name: str, interval: float) -> None:
    assert 0.0 <= stagger_s(name, interval) < interval


# --------------------------------------------------------------- rotation arithmetic


@settings(max_examples=400)
@given(st.data())
def test_rotation_covers_every_peer_within_ceil_n_over_k_rounds(data: st.DataObject) -> None:
    nodes = data.draw(st.integers(min_value=2, max_value=300), label="N")
    n = nodes - 1
    k = data.draw(st.integers(min_value=1, max_value=n), label="k")
    start = data.draw(st.integers(min_value=-(10**12), max_value=10**12), label="start")
    seen = {i for r in range(start, start + math.ceil(n / k)) for i in round_peer_indices(r, k, n)}
    assert seen == set(range(n))


@settings(max_examples=200)
@given(st.data())
def test_rotation_is_fair_over_n_rounds(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=299), label="peers")
    k = data.draw(st.integers(min_value=1, max_value=n), label="k")
    start = data.draw(st.integers(min_value=-(10**12), max_value=10**12), label="start")
    counts = Counter(i for r in range(start, start + n) for i in round_peer_indices(r, k, n))
    assert set(counts.values()) == {k}
    assert len(counts) == n


def test_rotation_edge_cases() -> None:
    assert round_peer_indices(5, 0, 10) == []
    assert round_peer_indices(5, 3, 0) == []
    assert round_peer_indices(5, 99, 4) == [0, 1, 2, 3]  # k above the peer count: all, once


# ------------------------------------------------------------ mesh-level properties


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_every_ordered_pair_is_covered_from_any_start(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=2, max_value=300), label="N")
    k = data.draw(st.integers(min_value=1, max_value=n - 1), label="k")
    start = data.draw(st.integers(min_value=0, max_value=10**9), label="start")
    b = build_k(n, k)
    names = b.agents()
    # Every agent of small meshes; a drawn sample of large ones (planning is per agent).
    sample = (
        names if len(names) <= 24 else data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=6))
    )
    for name in sample:
        pl = b.for_agent(name)
        assert pl is not None
        probed = {p for r in range(start, start + math.ceil((n - 1) / k)) for p in peer_nodes_probed(pl, r)}
        assert probed == set(b.ring) - {pl.node}, name


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_every_node_receives_exactly_k_probes_per_kind_each_round(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=2, max_value=40), label="N")
    k = data.draw(st.integers(min_value=1, max_value=n - 1), label="k")
    index = data.draw(st.integers(min_value=0, max_value=10**9), label="round")
    b = build_k(n, k)
    received: Counter[tuple[tuple[str, str, int, str], SrcKind]] = Counter()
    sources: dict[str, set[str]] = {}
    for pl in pinglists(b).values():
        for p in plan_round(pl, index, random.Random(0)):
            for t in p.targets:
                if t.dst_node is not None and t.dst_node != pl.node:
                    received[t.key, pl.kind] += 1
                    sources.setdefault(t.dst_node, set()).add(pl.node)
    peer_targets = [t.key for pl in pinglists(b).values() for g in pl.peers for t in g.targets]
    for key in set(peer_targets):
        for kind in SrcKind:
            assert received[key, kind] == k, (key, kind)
    assert all(len(s) == k for s in sources.values())  # k distinct source nodes each


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_every_pair_is_probed_equally_often_over_n_minus_1_rounds(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=2, max_value=24), label="N")
    k = data.draw(st.integers(min_value=1, max_value=n - 1), label="k")
    start = data.draw(st.integers(min_value=0, max_value=10**9), label="start")
    b = build_k(n, k)
    for pl in pinglists(b).values():
        counts = Counter(p for r in range(start, start + n - 1) for p in peer_nodes_probed(pl, r))
        assert set(counts.values()) == {k}
        assert len(counts) == n - 1


def test_every_agent_shares_one_ring_and_one_k() -> None:
    pls = pinglists(PinglistBuilder(mesh(30, extras=True), SchedulePolicy(budget_per_s=5)))
    ks = {pl.peers_per_round for pl in pls.values()}
    assert len(ks) == 1
    for pl in pls.values():
        ring = [g.node for g in pl.peers]
        assert pl.node not in ring
        assert len(ring) == 29
        # the same cyclic order, entered after the agent's own node
        reference = ring_order(node_name(i) for i in range(30))
        i = reference.index(pl.node)
        assert ring == reference[i + 1 :] + reference[:i]


# ---------------------------------------------------------------------------- fan-in


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=1, max_value=400),
    st.sampled_from([0.1, 0.5, 1.0, 2.0, 7.0, 20.0]),
    st.sampled_from([1.0, 5.0, 10.0]),
)
def test_fan_in_is_bounded_and_its_mean_follows_the_budget(
    n: int, shared_budget: float, interval: float
) -> None:
    """At most ceil(B*I) agents probe a shared target per round, with no slack: phases
    are ranks mod ``every``, so one round's probers are one residue class of ranks.
    Over ``every`` rounds each agent probes each target once, so the mean is A/every,
    never above the budget B*I and at least (every-1)/every of it."""
    policy = SchedulePolicy(shared_budget_per_s=shared_budget, interval_s=interval)
    b = PinglistBuilder(mesh(n, extras=True), policy)
    heads = [b.for_agent(name) for name in b.agents()]
    agents = len(heads)
    every = b.shared_every
    per_round = shared_budget * interval
    by_group: dict[str, Counter[int]] = {}
    for pl in heads:
        assert pl is not None
        for g in pl.shared:
            # the rounds r (mod g.every) in which this agent probes g: (r + phase) % every == 0
            by_group.setdefault(g.name, Counter())[-g.phase % g.every] += 1
    inv = mesh(n, extras=True)
    [nlb] = inv.nlbs
    nlb_per_round = policy.nlb_fan_in(n, len(nlb.addresses))
    shared = [g for pl in heads if pl for g in pl.shared]
    [nlb_stride] = {g.every for g in shared if g.name.startswith("nlb/") and not g.same_source_port}
    assert every % nlb_stride == 0  # an NLB's stride divides the shared one
    for name, probers in by_group.items():
        # An NLB's fan-in grows with the nodes behind it (policy.nlb_fan_in), never under
        # the shared budget. A same-source-port group every collision_every rounds (every
        # round where the agents probe each address more than once a round: it is one of
        # those probes).
        is_nlb = name.startswith("nlb/")
        together = name.endswith("/same-source-port") and b.repeat == 1
        stride = (nlb_stride if is_nlb else every) * (policy.collision_every if together else 1)
        budget = nlb_per_round if is_nlb else per_round
        assert sum(probers.values()) == agents  # each agent once per stride: mean A/stride
        assert max(probers.values()) <= math.ceil(agents / stride) <= math.ceil(budget)
        assert len(probers) == min(agents, stride)  # and the probers spread over all rounds
    if every == 1:
        assert agents <= per_round
    else:
        assert per_round * (every - 1) / every <= agents / every <= per_round


@pytest.mark.parametrize(("n", "shared_budget"), [(3, 20.0), (40, 0.7), (150, 2.3)])
def test_fan_in_counted_over_every_agents_plans(n: int, shared_budget: float) -> None:
    """The same bound, counted where it matters: the probes all agents' plans send to
    each shared address in each round (NLB same-source-port groups included)."""
    policy = SchedulePolicy(shared_budget_per_s=shared_budget, budget_per_s=0.1)
    inv = mesh(n, extras=True)
    b = PinglistBuilder(inv, policy)
    # Peers and same-node targets do not touch shared targets: plan the shared part only.
    pls = [msgspec.structs.replace(pl, peers=[], local=[]) for pl in pinglists(b).values()]
    period = b.shared_every * policy.collision_every
    [nlb] = inv.nlbs
    nlb_ips = {a.address for a in nlb.addresses}
    [nlb_every] = {g.every for g in pls[0].shared if g.name.startswith("nlb/") and not g.same_source_port}

    def budget(key: tuple[str, str, int, str]) -> int:
        """What one round may send a target: an NLB address's fan-in grows with the nodes."""
        if key[1] in nlb_ips:
            return math.ceil(policy.nlb_fan_in(n, len(nlb_ips)))
        return math.ceil(shared_budget * policy.interval_s)

    totals: Counter[tuple[str, str, int, str]] = Counter()
    for r in range(NOW_ROUND, NOW_ROUND + period):
        counts = Counter(t.key for pl in pls for p in plan_round(pl, r, random.Random(r)) for t in p.targets)
        assert all(c <= budget(key) for key, c in counts.items()), r
        totals.update(counts)
    # A/every per round on average (A/stride for an NLB address, its stride dividing every)
    for key, total in totals.items():
        times = b.shared_every // nlb_every if key[1] in nlb_ips else 1
        assert total == len(pls) * policy.collision_every * times, key


@pytest.mark.parametrize(
    ("n", "policy", "repeat"),
    [
        pytest.param(3, SchedulePolicy(), 3, id="small-mesh-at-the-cap"),
        # a budget with room for every peer, so the fan-in decides: 200 per round
        pytest.param(50, SchedulePolicy(budget_per_s=100.0), 2, id="fan-in-allows-two"),  # 100 agents
        pytest.param(70, SchedulePolicy(budget_per_s=100.0), 1, id="fan-in-allows-one"),  # 140 agents
        pytest.param(50, SchedulePolicy(), 1, id="peers-fill-the-budget"),
        pytest.param(1000, SchedulePolicy(), 1, id="large-mesh"),
        pytest.param(3, SchedulePolicy(budget_per_s=2.0), 1, id="budget-too-small"),
        pytest.param(3, SchedulePolicy(repeat_max=1), 1, id="repeats-off"),
    ],
)
def test_repeats_only_where_fan_in_and_budget_leave_room(n: int, policy: SchedulePolicy, repeat: int) -> None:
    """Small meshes probe each same-node and shared target several times per round (the
    rules' samples within two rounds); the fan-in bound and the agent's budget still
    hold, and peer coverage is what it is without repeats."""
    b = PinglistBuilder(mesh(n, extras=True), policy)
    assert b.repeat == repeat
    single = PinglistBuilder(mesh(n, extras=True), dataclasses.replace(policy, repeat_max=1))
    assert b.peers_per_round == single.peers_per_round
    pl = b.for_agent(b.agents()[0])
    assert pl is not None
    assert pl.repeat == repeat
    for r in range(NOW_ROUND, NOW_ROUND + 2 * b.shared_every * policy.collision_every):
        counts = Counter(t.key for p in plan_round(pl, r, random.Random(r)) for t in p.targets)
        for t in pl.local:
            if t.kind is TargetKind.SERVICE_LOCAL:  # at least local_service_min a round
                copies = math.ceil(policy.local_service_min / repeat)
                assert counts[t.key] == repeat * copies >= policy.local_service_min
            else:
                assert counts[t.key] == repeat
        for g in pl.shared:
            if is_due(g, r) and not g.same_source_port:
                assert all(counts[t.key] == repeat for t in g.targets)
    assert len(b.agents()) * repeat <= policy.shared_budget_per_s * policy.interval_s or repeat == 1


def test_repeat_formula() -> None:
    policy = SchedulePolicy(shared_budget_per_s=20.0, interval_s=10.0, repeat_max=4)

    def r(agents: int, budget: float, peer_probes: int = 10) -> int:
        return choose_repeat(
            agents=agents, policy=policy, round_budget=budget, local=4, shared=5, peer_probes=peer_probes
        )

    assert r(6, 200.0) == 4  # the cap
    assert r(66, 200.0) == 3  # fan-in: floor(200 / 66)
    assert r(6, 37.0) == 3  # budget: floor((37 - 10) / 9)
    assert r(6, 10.0) == 1  # never below one
    assert r(0, 200.0) == 4
    with pytest.raises(ValueError, match="repeat_max"):
        SchedulePolicy(repeat_max=0)


def test_fan_in_stride_formula() -> None:
    policy = SchedulePolicy(shared_budget_per_s=20.0, interval_s=10.0)
    assert [fan_in_every(a, policy) for a in (0, 1, 200, 201, 400, 10_000)] == [1, 1, 1, 2, 2, 50]


@pytest.mark.parametrize(
    ("n", "nlb_every"),
    [
        pytest.param(300, 3, id="300-the-shared-stride"),  # the shortest divisor of 3 that fits
        pytest.param(1000, 2, id="1000"),
        pytest.param(5000, 2, id="5000"),
    ],
)
def test_an_nlbs_fan_in_grows_with_the_nodes_behind_it_at_no_peers_cost(n: int, nlb_every: int) -> None:
    """The hairpin's test needs about 6 N NLB successes (the NLB picks a client's own
    node 1 time in N): an NLB address may receive ``nlb_budget_per_node`` per node behind
    it, at a stride that divides the shared one, in rounds where the agent has no other
    shared target due, so the worst round, and so ``k``, is what it is without it."""
    inv = mesh(n, extras=True)
    policy = SchedulePolicy()
    b = PinglistBuilder(inv, policy)
    flat = PinglistBuilder(inv, dataclasses.replace(policy, nlb_budget_per_node=0.0))
    assert (b.peers_per_round, b.round_max) == (flat.peers_per_round, flat.round_max)
    [nlb] = inv.nlbs
    agents = b.agents()
    per_address: Counter[tuple[int, str]] = Counter()
    for name in agents:
        pl = b.for_agent(name)
        assert pl is not None
        zones = [g for g in pl.shared if g.name.startswith("nlb/") and not g.same_source_port]
        assert {g.every for g in zones} == {nlb_every}
        for r in range(b.shared_every):
            due = [g for g in pl.shared if is_due(g, r) and not g.same_source_port]
            if any(g in zones for g in due):
                assert all(g in zones for g in due), (name, r)  # alone in its rounds
                per_address.update((r, t.ip) for g in due for t in g.targets)
    assert max(per_address.values()) <= policy.nlb_fan_in(n, len(nlb.addresses))
    per_round = len(agents) * len(nlb.addresses) / nlb_every
    assert per_round == sum(per_address.values()) / b.shared_every
    if n >= 1000:
        assert per_round >= 2 * n  # the hairpin's 6 N successes within three rounds


def test_shared_phases_spread_one_agents_targets_over_its_rounds() -> None:
    # Large cluster: every > number of shared slots, so no two slots fall due together
    # for one agent (except the NLB's zone addresses, which share a slot on purpose).
    b = PinglistBuilder(mesh(600, extras=True), SchedulePolicy())
    assert b.shared_every == 6
    pl = b.for_agent(pod(0))
    assert pl is not None
    for r in range(NOW_ROUND, NOW_ROUND + 6):
        due = [g.name for g in pl.shared if is_due(g, r) and not g.same_source_port]
        assert len(due) <= 2
        if len(due) == 2:
            assert all(name.startswith("nlb/prober-echo/") for name in due)


# ---------------------------------------------------------------------------- budget


def worst_shared_round(pl: Pinglist) -> int:
    """The most shared probes any round of ``pl`` plans (over a whole period of strides)."""
    shared_only = msgspec.structs.replace(pl, peers=[], local=[])
    period = math.lcm(*(max(1, g.every) for g in pl.shared)) if pl.shared else 1
    return max(planned_count(plan_round(shared_only, r, random.Random(0))) for r in range(period))


def check_budget(b: PinglistBuilder, names: Sequence[str], rounds: int) -> None:
    # The per-agent share in this mesh, less the room an agent's own budget keeps for
    # focused probes where that budget binds (test_focus.py).
    budget = min(b.budget_per_s * b.policy.interval_s, b.policy.round_budget - b.policy.focus_reserved)
    for name in names:
        pl = b.for_agent(name)
        assert pl is not None
        group_max = max(len(g.targets) for g in pl.peers)
        shared = worst_shared_round(pl)
        # The large-payload probe: one more a round, repeated like a same-node target.
        local = len(pl.local) + (1 if pl.large_probe_bytes > 0 else 0)
        feasible = budget + 1e-6 >= local + shared + group_max
        for r in range(NOW_ROUND, NOW_ROUND + rounds):
            plan = plan_round(pl, r, random.Random(r))
            if feasible:
                assert planned_count(plan) <= budget + 1e-6, (name, r)
            else:
                # Coverage wins: one peer group per round, whatever the budget says.
                assert pl.peers_per_round == 1
                peers = {t.dst_node for p in plan for t in p.targets if t.dst_node not in (None, pl.node)}
                assert len(peers) == 1
        if feasible and pl.peers_per_round < len(pl.peers):
            # ... and k is the largest number of groups that fits.
            assert local + shared + (pl.peers_per_round + 1) * group_max > budget


@pytest.mark.parametrize("n", [2, 3, 10, 100, 1000, 5000])
@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(SchedulePolicy(), id="default"),
        pytest.param(SchedulePolicy(budget_per_s=2.0), id="tight"),
        pytest.param(SchedulePolicy(budget_per_s=0.5), id="infeasible"),
        pytest.param(SchedulePolicy(budget_per_s=100.0, interval_s=5.0, udp=False), id="generous-no-udp"),
    ],
)
def test_planned_probes_stay_within_budget(n: int, policy: SchedulePolicy) -> None:
    b = PinglistBuilder(mesh(n, extras=True), policy)
    names = b.agents()
    check_budget(b, [*names[:3], *names[-3:], *random.Random(n).sample(names, min(4, len(names)))], rounds=12)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=2, max_value=300), st.floats(min_value=0.05, max_value=200.0))
def test_budget_holds_for_any_budget(n: int, budget: float) -> None:
    b = PinglistBuilder(mesh(n, extras=True), SchedulePolicy(budget_per_s=budget))
    check_budget(b, b.agents()[:4], rounds=6)


@pytest.mark.parametrize(
    ("n", "per_agent", "mesh_per_s"),
    [
        pytest.param(10, 20.0, 5_000, id="small-mesh-keeps-the-agent-budget"),
        pytest.param(600, 5_000 / 1_200, 5_000, id="600-nodes-share-5k"),
        pytest.param(1000, 2.5, 5_000, id="1000-nodes-share-5k"),
    ],
)
def test_the_cluster_budget_is_shared_out_so_the_collector_is_not_overrun(
    n: int, per_agent: float, mesh_per_s: float
) -> None:
    b = PinglistBuilder(mesh(n, extras=True), SchedulePolicy())
    assert b.budget_per_s == pytest.approx(per_agent)
    agents = b.agents()
    pl = b.for_agent(agents[0])
    assert pl is not None
    assert pl.budget_per_s == pytest.approx(per_agent)
    assert pl.peers_per_round >= SchedulePolicy().min_peers_per_round
    # Planned probes per round, summed over the mesh, stay within the cluster budget
    # (sampled agents stand for all: they all plan the same number of probes per round).
    assert _mesh_probes_per_s(b) <= mesh_per_s * 1.000001


def _mesh_probes_per_s(b: PinglistBuilder) -> float:
    agents = b.agents()
    sample = [b.for_agent(a) for a in random.Random(len(agents)).sample(agents, min(20, len(agents)))]
    worst = max(planned_count(plan_round(p, r, random.Random(r))) for p in sample if p for r in range(12))
    return worst * len(agents) / SchedulePolicy().interval_s


@pytest.mark.parametrize(
    ("n", "cluster_budget"),
    [
        pytest.param(2000, 5_000.0, id="2000-nodes-default"),
        pytest.param(5000, 5_000.0, id="5000-nodes-default"),
        pytest.param(1000, 500.0, id="1000-nodes-a-small-budget"),
    ],
)
def test_the_cluster_share_never_takes_an_agent_below_the_fewest_peers_a_round(
    n: int, cluster_budget: float
) -> None:
    """Past the size where the share plans fewer than ``min_peers_per_round`` peer groups,
    the floor sets the rate, and each agent's pinglist lets it send what its rounds plan."""
    policy = SchedulePolicy(cluster_budget_per_s=cluster_budget)
    b = PinglistBuilder(mesh(n, extras=True), policy)
    assert b.peers_per_round == policy.min_peers_per_round
    assert b.budget_per_s > cluster_budget / len(b.agents())
    assert b.budget_per_s == pytest.approx(b.round_max / policy.interval_s)
    for name in random.Random(n).sample(b.agents(), 20):
        pl = b.for_agent(name)
        assert pl is not None
        assert pl.peers_per_round == policy.min_peers_per_round
        most = max(planned_count(plan_round(pl, r, random.Random(r))) for r in range(12))
        assert most <= pl.budget_per_s * pl.interval_s
    assert _mesh_probes_per_s(b) > cluster_budget
    # Without the floor, the share alone: a single peer group a round.
    lone = PinglistBuilder(mesh(n, extras=True), dataclasses.replace(policy, min_peers_per_round=1))
    assert lone.peers_per_round < policy.min_peers_per_round


@pytest.mark.parametrize(
    ("n", "every_s"),
    [
        pytest.param(10, 2.0, id="small-mesh-every-2s"),
        pytest.param(1000, 2.0, id="1000-nodes-2000-agents-every-2s"),
        pytest.param(2000, 4.0, id="2000-nodes-every-4s"),
        pytest.param(5000, 10.0, id="5000-nodes-every-round"),
    ],
)
def test_a_large_mesh_posts_its_results_less_often(n: int, every_s: float) -> None:
    """The mesh tells every agent how often to post: at most ``report_requests_per_s``
    posts a second reach the collector, and each agent posts at least once a round."""
    b = PinglistBuilder(mesh(n), SchedulePolicy())
    pl = b.for_agent(b.agents()[0])
    assert pl is not None
    assert pl.report_interval_s == every_s
    assert len(b.agents()) / every_s <= SchedulePolicy().report_requests_per_s or every_s == pl.interval_s
    assert b.mesh().report_interval_s == every_s  # one value for all: in the shared document


def test_no_cluster_budget_means_the_agent_budget_alone() -> None:
    b = PinglistBuilder(mesh(1000), SchedulePolicy(cluster_budget_per_s=None))
    assert b.budget_per_s == 20.0
    with pytest.raises(ValueError, match=r"--cluster-budget must be greater than 0 probes/s, or none \(no"):
        SchedulePolicy(cluster_budget_per_s=0)


def test_infeasible_budget_keeps_one_peer_per_round() -> None:
    b = PinglistBuilder(mesh(50, extras=True), SchedulePolicy(budget_per_s=0.1))  # 1 probe per round
    pl = b.for_agent(host(7))
    assert pl is not None
    assert pl.peers_per_round == 1
    plan = plan_round(pl, NOW_ROUND, random.Random(0))
    # local (pod echo HTTP+UDP, own NodePort, the local Service local_service_min times), one
    # group of 5, the large-payload probe, shared due
    shared_due = sum(len(g.targets) for g in pl.shared if is_due(g, NOW_ROUND) and not g.same_source_port)
    assert planned_count(plan) == 3 + SchedulePolicy().local_service_min + 5 + 1 + shared_due


@pytest.mark.parametrize(
    ("case", "k"),
    [
        pytest.param((200.0, 4, 5, 5, 999), 38, id="default-budget"),
        pytest.param((200.0, 4, 5, 5, 10), 10, id="all-peers-fit"),
        pytest.param((14.0, 4, 5, 5, 10), 1, id="exactly-one"),
        pytest.param((13.0, 4, 5, 5, 10), 1, id="infeasible-still-one"),
        pytest.param((0.5, 40, 5, 5, 10), 1, id="locals-exceed-budget"),
        pytest.param((100.0, 2, 0, 4, 0), 0, id="no-peers"),
        pytest.param((0.29 * 100, 0, 0, 1, 100), 29, id="float-budget-not-rounded-down"),
    ],
)
def test_choose_peers_per_round(case: tuple[float, int, int, int, int], k: int) -> None:
    budget, local, shared, group, peers = case
    chosen = choose_peers_per_round(
        round_budget=budget, local=local, shared=shared, group_size=group, n_peers=peers
    )
    assert chosen == k


# --------------------------------------------------------------------- round planning


def test_plans_are_deterministic_given_the_seed() -> None:
    pl = PinglistBuilder(mesh(20, extras=True), SchedulePolicy()).for_agent(pod(3))
    assert pl is not None
    assert plan_round(pl, NOW_ROUND, random.Random(7)) == plan_round(pl, NOW_ROUND, random.Random(7))
    assert plan_round(pl, NOW_ROUND, random.Random(7)) != plan_round(pl, NOW_ROUND, random.Random(8))


def test_builders_are_deterministic_and_ignore_inventory_order() -> None:
    inv = mesh(25, extras=True)
    shuffled = msgspec.structs.replace(
        inv, nodes=list(reversed(inv.nodes)), agents=random.Random(1).sample(inv.agents, len(inv.agents))
    )
    a, b = PinglistBuilder(inv, SchedulePolicy()), PinglistBuilder(shuffled, SchedulePolicy())
    assert pinglists(a) == pinglists(b)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=400), st.integers(min_value=0, max_value=2**32))
def test_jitter_is_stratified_within_90_percent_of_the_interval(n: int, seed: int) -> None:
    pl = PinglistBuilder(mesh(min(n, 60), extras=True), SchedulePolicy()).for_agent(pod(0))
    assert pl is not None
    plan = plan_round(pl, seed, random.Random(seed))
    usable = pl.interval_s * USABLE_FRACTION
    offsets = [p.offset_s for p in plan]
    assert offsets == sorted(offsets)
    assert all(0.0 <= o < usable for o in offsets)
    width = usable / len(plan)
    assert all(i * width - 1e-9 <= o <= (i + 1) * width + 1e-9 for i, o in enumerate(offsets))


def test_first_target_of_a_round_varies() -> None:
    pl = PinglistBuilder(mesh(3, extras=True), SchedulePolicy()).for_agent(pod(0))
    assert pl is not None
    firsts = {plan_round(pl, NOW_ROUND, random.Random(seed))[0].targets for seed in range(40)}
    assert len(firsts) > 5


def test_agents_never_probe_themselves() -> None:
    inv = mesh(12, extras=True)
    b = PinglistBuilder(inv, SchedulePolicy())
    for name, pl in pinglists(b).items():
        me = inv.agent(name)
        assert me is not None
        own = {(me.address, me.http_port), (me.address, me.udp_port)}
        every_target = all_targets(pl)
        assert not [t for t in every_target if t.dst_node is not None and (t.ip, t.port) in own]
        assert me.node not in [g.node for g in pl.peers]


def test_not_ready_nodes_and_agents_are_left_out() -> None:
    not_ready = [(4, SrcKind.HOST), (5, SrcKind.POD), (5, SrcKind.HOST)]
    inv = mesh(6, extras=True, nodes_not_ready=[2], agents_not_ready=not_ready)
    inv = msgspec.structs.replace(inv, nodeports=[])  # node 5 has no ready agent and nothing else to probe
    b = PinglistBuilder(inv, SchedulePolicy())
    assert b.agents() == sorted([host(0), host(1), host(3), pod(0), pod(1), pod(3), pod(4)])
    for gone in (pod(2), host(2), host(4), pod(5), "nobody"):
        assert b.for_agent(gone) is None
        assert b.version_of(gone) is None
    assert set(b.ring) == {node_name(i) for i in (0, 1, 3, 4)}
    for pl in pinglists(b).values():
        targets = all_targets(pl)
        assert node_name(2) not in {t.dst_node for t in targets}
        assert ("host", node_name(4)) not in {(t.kind.value, t.dst_node) for t in targets}
    pod4 = b.for_agent(pod(4))
    assert pod4 is not None
    assert pod4.local == [pod4.local[0]]  # only the local Service: its host agent is not ready


def test_ready_node_without_ready_agents_is_probed_through_its_nodeport() -> None:
    inv = mesh(4, agents_not_ready=[(3, SrcKind.POD), (3, SrcKind.HOST)])
    inv = msgspec.structs.replace(inv, nodeports=[NodePort(name="prober-echo", port=30080)])
    b = PinglistBuilder(inv, SchedulePolicy())
    assert node_name(3) in b.ring
    pl = b.for_agent(pod(0))
    assert pl is not None
    [group] = [g for g in pl.peers if g.node == node_name(3)]
    assert [(t.target, t.port) for t in group.targets] == [("nodeport/prober-echo", 30080)]


def test_single_node_probes_only_its_own_node() -> None:
    b = PinglistBuilder(mesh(1, extras=True), SchedulePolicy())
    pl = b.for_agent(pod(0))
    assert pl is not None
    assert (pl.peers, pl.peers_per_round) == ([], 0)
    plan = plan_round(pl, NOW_ROUND, random.Random(0))
    assert {t.target for p in plan for t in p.targets} >= {
        f"host/{node_name(0)}",
        "service-local/prober-echo-local",
    }


# ------------------------------------------------------------------- same source port


def test_same_source_port_groups_only_for_nlbs_with_two_addresses() -> None:
    inv = mesh(3, extras=True)
    one_zone = Nlb(name="single", addresses=[ZoneAddress(zone="us-east-1a", address="10.0.31.200")])
    inv = msgspec.structs.replace(inv, nlbs=[*inv.nlbs, one_zone])
    pl = PinglistBuilder(inv, SchedulePolicy()).for_agent(pod(0))
    assert pl is not None
    together = [g for g in pl.shared if g.same_source_port]
    assert [g.name for g in together] == ["nlb/prober-echo/same-source-port"]
    assert [t.ip for t in together[0].targets] == [SHAPE.nlb_address(0), SHAPE.nlb_address(1)]
    never = PinglistBuilder(inv, SchedulePolicy(collision_every=0)).for_agent(pod(0))
    assert never is not None
    assert not [g for g in never.shared if g.same_source_port]


@pytest.mark.parametrize("n", [3, 300, 1200])
def test_same_source_port_pair_replaces_the_zone_probes_in_its_rounds(n: int) -> None:
    b = PinglistBuilder(mesh(n, extras=True), SchedulePolicy(collision_every=3))
    pl = b.for_agent(host(1))
    assert pl is not None
    [pair] = [g for g in pl.shared if g.same_source_port]
    zones = [g for g in pl.shared if g.name.startswith("nlb/") and not g.same_source_port]
    # Every third round; every round where the agent probes each address more than once a
    # round (repeat, small clusters): the group is one of those probes.
    assert pair.every == (1 if pl.repeat > 1 else 3) * zones[0].every
    assert b.shared_every % zones[0].every == 0
    pair_rounds = 0
    for r in range(NOW_ROUND, NOW_ROUND + pair.every):
        plan = plan_round(pl, r, random.Random(r))
        nlb = [p for p in plan if p.targets[0].kind is TargetKind.NLB]
        if is_due(pair, r):
            pair_rounds += 1
            assert all(is_due(z, r) for z in zones)
            # The pair is one of the round's ``repeat`` probes of each zone address.
            singles = [(False, 1)] * (2 * (pl.repeat - 1))
            assert sorted((p.same_source_port, len(p.targets)) for p in nlb) == [*singles, (True, 2)]
        elif is_due(zones[0], r):
            assert sorted((p.same_source_port, len(p.targets)) for p in nlb) == [(False, 1)] * (2 * pl.repeat)
        else:
            assert nlb == []
    assert pair_rounds == 1


# ---------------------------------------------------------------------------- sweeps


def order(*, round: int = 0, rounds: int = 1, spread_s: float = 10.0) -> SweepOrder:
    return SweepOrder(id="s1", round=round, rounds=rounds, timeout_s=1.0, spread_s=spread_s, until=1e9)


def test_a_small_cluster_sweep_probes_every_target_once_spread_over_its_time() -> None:
    pl = PinglistBuilder(mesh(7, extras=True), SchedulePolicy()).for_agent(pod(2))
    assert pl is not None
    assert pl.peers_per_round == len(pl.peers)  # small: one round holds every peer
    # a round in which the NLB same-source-port group is due (it is, every few rounds)
    due = next(r for r in range(10) if all(is_due(g, r) for g in pl.shared))
    plan = sweep_plan(pl, order(round=due, spread_s=4.0))
    keys = [t.key for p in plan for t in p.targets]
    assert len(keys) == len(set(keys))
    assert set(keys) == {t.key for t in all_targets(pl)}
    assert [len(p.targets) for p in plan if p.same_source_port] == [2]
    offsets = [p.offset_s for p in plan]
    assert offsets == sorted(offsets)
    assert offsets[0] == 0.0
    assert offsets[-1] < 4.0
    assert offsets[-1] == pytest.approx(4.0 * (len(plan) - 1) / len(plan))


@pytest.mark.parametrize("rounds", [pytest.param(1, id="one-round"), pytest.param(3, id="three-rounds")])
def test_a_large_cluster_sweep_loads_every_node_equally_and_stays_in_budget(rounds: int) -> None:
    """At 60 nodes and 3 probes/s a round holds a few peers: a sweep of ``rounds`` rounds
    probes ``rounds * k`` peers from every agent, and every node receives exactly that
    many source nodes of each kind; no agent plans more than its budget over the
    sweep's spread; a shared target receives what one round sends it."""
    policy = SchedulePolicy(budget_per_s=3.0, interval_s=10.0)
    inv = mesh(60, extras=True)
    pls = pinglists(PinglistBuilder(inv, policy))
    k = next(iter(pls.values())).peers_per_round
    assert 1 < k * rounds < 59
    o = order(round=17, rounds=rounds, spread_s=rounds * policy.interval_s)
    senders: dict[tuple[str, str], set[str]] = {}
    shared: Counter[str] = Counter()
    rounds_of_shared: Counter[str] = Counter()
    for pl in pls.values():
        plan = sweep_plan(pl, o)
        assert planned_count(plan) <= policy.budget_per_s * o.spread_s
        assert len(sweep_peer_indices(pl, o)) == k * rounds
        for p in plan:
            for t in p.targets:
                if t.kind in (TargetKind.POD, TargetKind.HOST) and t.dst_node != pl.node:
                    senders.setdefault((t.dst_node or "", pl.kind.value), set()).add(pl.node)
                elif t.kind in (TargetKind.SERVICE, TargetKind.NLB, TargetKind.DNS, TargetKind.EXTERNAL):
                    shared[t.key[0] + t.ip] += 1
        for p in plan_round(pl, o.round, random.Random(0)):
            for t in p.targets:
                if t.kind in (TargetKind.SERVICE, TargetKind.NLB, TargetKind.DNS, TargetKind.EXTERNAL):
                    rounds_of_shared[t.key[0] + t.ip] += 1
    assert {len(v) for v in senders.values()} == {k * rounds}
    assert len(senders) == 60 * 2
    # a shared target: no more than the schedule's own round sends it (repeat 1 here)
    assert shared
    assert all(shared[key] <= rounds_of_shared[key] for key in shared)


@pytest.mark.parametrize(
    ("spread_s", "interval_s", "rounds"),
    [
        pytest.param(0.0, 10.0, 1, id="no-time-one-round"),
        pytest.param(9.9, 10.0, 1, id="under-an-interval"),
        pytest.param(43.0, 10.0, 4, id="default-deadline"),
        pytest.param(3.0, 1.0, 3, id="lab"),
        pytest.param(0.3 * 10, 0.1, 30, id="float-edge"),
    ],
)
def test_sweep_rounds_is_what_fits_in_the_spread(spread_s: float, interval_s: float, rounds: int) -> None:
    assert sweep_rounds(spread_s=spread_s, interval_s=interval_s) == rounds


# -------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda inv: inv, id="same"),
        pytest.param(
            lambda inv: msgspec.structs.replace(
                inv, nodes=[msgspec.structs.replace(n, zone="z") for n in inv.nodes]
            ),
            id="zones-are-not-in-pinglists",
        ),
        pytest.param(
            lambda inv: msgspec.structs.replace(
                inv, agents=[msgspec.structs.replace(inv.agents[-1], http_port=9999), *inv.agents[:-1]]
            ),
            id="one-agent-port",
        ),
        pytest.param(
            lambda inv: msgspec.structs.replace(inv, nodes=inv.nodes[:-1], agents=inv.agents[:-2]),
            id="node-leaves",
        ),
        pytest.param(lambda inv: msgspec.structs.replace(inv, dns=[]), id="no-dns"),
        pytest.param(
            lambda inv: msgspec.structs.replace(
                inv, agents=[msgspec.structs.replace(inv.agents[0], ready=False), *inv.agents[1:]]
            ),
            id="agent-not-ready",
        ),
    ],
)
def test_versions_change_exactly_when_content_does(change: Callable[[Inventory], Inventory]) -> None:
    inv = mesh(10, extras=True)
    base = PinglistBuilder(inv, SchedulePolicy())
    other = PinglistBuilder(change(inv), SchedulePolicy())
    for name in base.agents():
        pl = base.for_agent(name)
        assert pl is not None
        assert base.version_of(name) == pl.version
        new = other.for_agent(name)
        if new is not None:
            same_content = new == msgspec.structs.replace(pl, version=new.version)
            assert (new.version == pl.version) == same_content, name


@settings(max_examples=60, deadline=None)
@given(
    st.sets(st.integers(0, 40), max_size=30),
    st.sets(st.integers(0, 40), max_size=30),
)
def test_sticky_ranks_stay_dense_and_move_only_whom_they_must(before: set[int], after: set[int]) -> None:
    """Ranks are always 0..A-1 (so every residue class is balanced); an agent that stays
    keeps its rank unless that rank is past the new end, and only as many agents move as
    left."""
    old = sticky_ranks([f"a{i}" for i in sorted(before)])
    new = sticky_ranks([f"a{i}" for i in sorted(after)], old)
    assert sorted(new.values()) == list(range(len(after)))
    stayed = {f"a{i}" for i in before & after}
    moved = {name for name in stayed if new[name] != old[name]}
    assert all(old[name] >= len(after) for name in moved)
    assert len(moved) <= len(before - after)


def test_one_node_joining_changes_the_mesh_and_the_newcomers_parts_only() -> None:
    """The point of the two documents: at 250 nodes (fan-in stride 3), a node joining
    changes the mesh and its own two agents' parts, even where the fan-in stride
    changes (it is in the mesh); a node leaving changes at most two other agents'
    parts (the ranks last, moving into the leavers' ranks)."""
    shape = dataclasses.replace(SHAPE, n_nodes=251, shared=True)
    base = PinglistBuilder(shape.inventory(nodes=range(250)), SchedulePolicy())
    assert base.shared_every == 3
    joined = PinglistBuilder(shape.inventory(), SchedulePolicy(), previous=base)
    assert joined.mesh().version != base.mesh().version
    changed = {n for n in joined.agents() if n not in base.agents() or joined.head(n) != base.head(n)}
    assert changed == {pod(250), host(250)}
    # 1,000 to 1,001 nodes: 2,000 to 2,002 agents, the stride goes from 10 to 11
    wide = dataclasses.replace(SHAPE, n_nodes=1001, shared=True)
    thousand = PinglistBuilder(wide.inventory(nodes=range(1000)), SchedulePolicy())
    more = PinglistBuilder(wide.inventory(), SchedulePolicy(), previous=thousand)
    assert (thousand.shared_every, more.shared_every) == (10, 11)
    assert all(more.head(n) == thousand.head(n) for n in thousand.agents())
    left = PinglistBuilder(shape.inventory(nodes=range(1, 250)), SchedulePolicy(), previous=base)
    moved = {n for n in left.agents() if left.head(n) != base.head(n)}
    assert len(moved) <= 2
    # without the previous builder, ranks follow the hash order and most parts change
    fresh = PinglistBuilder(shape.inventory(), SchedulePolicy())
    assert sum(fresh.head(n) != base.head(n) for n in base.agents()) > 100


def test_fan_in_stays_bounded_through_churn() -> None:
    """Sticky ranks through a series of joins and leaves keep every round's probers of a
    shared target within ceil(A / every), as a fresh build does."""
    shape = dataclasses.replace(SHAPE, n_nodes=260, shared=True)
    rng = random.Random(7)
    present = set(range(200))
    b = PinglistBuilder(shape.inventory(nodes=present), SchedulePolicy())
    for _ in range(12):
        gone = set(rng.sample(sorted(present), 5))
        present = (present - gone) | set(rng.sample(sorted(set(range(260)) - present), 8))
        b = PinglistBuilder(shape.inventory(nodes=present), SchedulePolicy(), previous=b)
        agents = len(b.agents())
        by_group: dict[str, Counter[int]] = {}
        for name in b.agents():
            pl = b.for_agent(name)
            assert pl is not None
            for g in pl.shared:
                by_group.setdefault(g.name, Counter())[-g.phase % g.every] += 1
        for probers in by_group.values():
            every = len(probers)
            assert max(probers.values()) <= math.ceil(agents / every)


def test_the_joined_pinglist_is_what_the_builder_gives() -> None:
    b = PinglistBuilder(mesh(12, extras=True), SchedulePolicy())
    for name in b.agents():
        head = b.head(name)
        expected = b.for_agent(name)
        assert head is not None
        assert expected is not None
        wire_head = msgspec.json.decode(msgspec.json.encode(head), type=AgentPinglist)
        wire_mesh = msgspec.json.decode(msgspec.json.encode(b.mesh()), type=Mesh)
        joined = assemble(wire_head, wire_mesh)
        assert joined == msgspec.structs.replace(expected, version=joined.version)
        assert joined.version == f"{head.version}.{b.mesh().version}"
        assert assemble(*split(joined), version=joined.version) == joined


def test_versions_differ_between_agents_and_policies() -> None:
    base = PinglistBuilder(mesh(10, extras=True), SchedulePolicy())
    assert len({base.version_of(n) for n in base.agents()}) == len(base.agents())
    slower = PinglistBuilder(mesh(10, extras=True), SchedulePolicy(timeout_s=2.0))
    assert slower.version_of(pod(0)) != base.version_of(pod(0))


def test_pinglists_round_trip_the_wire() -> None:
    pl = PinglistBuilder(mesh(5, extras=True), SchedulePolicy()).for_agent(host(3))
    assert pl is not None
    assert msgspec.json.decode(msgspec.json.encode(pl), type=Pinglist) == pl


def test_plan_round_tolerates_odd_pinglists_from_the_wire() -> None:
    target = ProbeTarget(
        target="pod/b", kind=TargetKind.POD, ip="127.0.0.2", port=1, proto=Proto.HTTP, dst_node="b"
    )
    svc = ProbeTarget(target="service/s", kind=TargetKind.SERVICE, ip="127.0.0.3", port=1, proto=Proto.HTTP)
    pl = Pinglist(
        version="x", agent="a", node="a", kind=SrcKind.POD, interval_s=10.0, timeout_s=1.0, budget_per_s=1.0,
        concurrency=1, peers=[PeerGroup(node="b", targets=[target])], peers_per_round=7, local=[],
        shared=[SharedGroup(name="service/s", targets=[svc], every=0, phase=3)],
    )  # fmt: skip
    plan = plan_round(pl, NOW_ROUND, random.Random(0))
    assert sorted(t.target for p in plan for t in p.targets) == ["pod/b", "service/s"]


# ---------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        pytest.param({"interval_s": 0.0}, "--interval must be at least 0.1 s, got 0", id="zero-interval"),
        pytest.param({"timeout_s": -1.0}, "--timeout must be from 0.01 to 60 s", id="negative-timeout"),
        pytest.param({"timeout_s": 61.0}, "--timeout must be from 0.01 to 60 s", id="long-timeout"),
        pytest.param({"budget_per_s": math.nan}, "--budget must be at least 0.01 probes/s, got nan",
                     id="nan-budget"),
        pytest.param({"budget_per_s": math.inf}, "--budget must be at least", id="infinite-budget"),
        pytest.param({"shared_budget_per_s": 0.0}, "--shared-budget must be greater than 0",
                     id="zero-fan-in"),
        pytest.param({"concurrency": 0}, "--concurrency must be at least 1", id="no-concurrency"),
        pytest.param({"concurrency": 2.5}, "--concurrency must be a whole number", id="fraction"),
        pytest.param({"collision_every": -1}, "collision_every must be 0", id="negative-collision"),
    ],
)  # fmt: skip
def test_policy_rejects_nonsense(changes: dict[str, float], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        SchedulePolicy(**changes)  # type: ignore[arg-type]


# ------------------------------------------------------------- a small cluster, exactly

THREE = Inventory(
    nodes=[
        Node(name="node-a", zone="zone-a", address="10.0.1.10"),
        Node(name="node-b", zone="zone-b", address="10.0.2.10"),
        Node(name="node-c", zone="zone-a", address="10.0.1.11"),
    ],
    agents=[
        Agent(name="pod-a", node="node-a", kind=SrcKind.POD, address="10.244.1.5"),
        Agent(name="host-a", node="node-a", kind=SrcKind.HOST, address="10.0.1.10"),
        Agent(name="pod-b", node="node-b", kind=SrcKind.POD, address="10.244.2.5"),
        Agent(name="host-b", node="node-b", kind=SrcKind.HOST, address="10.0.2.10"),
        Agent(name="pod-c", node="node-c", kind=SrcKind.POD, address="10.244.3.5"),
        Agent(name="host-c", node="node-c", kind=SrcKind.HOST, address="10.0.1.11"),
    ],
    services=[
        Service(name="prober-echo", address="10.96.0.20"),
        Service(name="prober-echo-local", address="10.96.0.21", local=True),
    ],
    nodeports=[NodePort(name="prober-echo", port=30080)],
    nlbs=[
        Nlb(
            name="prober-echo",
            addresses=[
                ZoneAddress(zone="zone-a", address="172.31.200.10"),
                ZoneAddress(zone="zone-b", address="172.31.200.11"),
            ],
        )
    ],
    dns=[DnsServer(name="kube-dns", address="10.96.0.10", query="kubernetes.default.svc.cluster.local")],
    externals=[External(name="example", address="192.0.2.10", port=443)],
)

# (where, path, target, ip, port, proto, dst_node, dst_kind, zone, query)
Row = tuple[str, str, str, str, int, str, str | None, str | None, str | None, str | None]
DNS_Q = "kubernetes.default.svc.cluster.local"
NLB_A = ("pod-to-nlb", "nlb/prober-echo", "172.31.200.10", 80, "http", None, None, "zone-a", None)
NLB_B = ("pod-to-nlb", "nlb/prober-echo", "172.31.200.11", 80, "http", None, None, "zone-b", None)
POD_A_ROWS: list[Row] = [
    ("local", "pod-to-host", "host/node-a", "10.0.1.10", 8080, "http", "node-a", "host", None, None),
    ("local", "pod-to-host", "host/node-a", "10.0.1.10", 8081, "udp", "node-a", "host", None, None),
    ("local", "pod-to-nodeport", "nodeport/prober-echo", "10.0.1.10", 30080, "http", None, None, None, None),
    ("local", "pod-to-service-local", "service-local/prober-echo-local", "10.96.0.21", 80, "http", None, None,
     None, None),
    ("peer:node-b", "pod-to-pod", "pod/node-b", "10.244.2.5", 8080, "http", "node-b", "pod", None, None),
    ("peer:node-b", "pod-to-pod", "pod/node-b", "10.244.2.5", 8081, "udp", "node-b", "pod", None, None),
    ("peer:node-b", "pod-to-host", "host/node-b", "10.0.2.10", 8080, "http", "node-b", "host", None, None),
    ("peer:node-b", "pod-to-host", "host/node-b", "10.0.2.10", 8081, "udp", "node-b", "host", None, None),
    ("peer:node-b", "pod-to-nodeport", "nodeport/prober-echo", "10.0.2.10", 30080, "http", None, None, None,
     None),
    ("peer:node-c", "pod-to-pod", "pod/node-c", "10.244.3.5", 8080, "http", "node-c", "pod", None, None),
    ("peer:node-c", "pod-to-pod", "pod/node-c", "10.244.3.5", 8081, "udp", "node-c", "pod", None, None),
    ("peer:node-c", "pod-to-host", "host/node-c", "10.0.1.11", 8080, "http", "node-c", "host", None, None),
    ("peer:node-c", "pod-to-host", "host/node-c", "10.0.1.11", 8081, "udp", "node-c", "host", None, None),
    ("peer:node-c", "pod-to-nodeport", "nodeport/prober-echo", "10.0.1.11", 30080, "http", None, None, None,
     None),
    ("shared:service/prober-echo", "pod-to-service", "service/prober-echo", "10.96.0.20", 80, "http", None,
     None, None, None),
    ("shared:nlb/prober-echo/zone-a", *NLB_A),
    ("shared:nlb/prober-echo/zone-b", *NLB_B),
    ("shared:nlb/prober-echo/same-source-port", *NLB_A),
    ("shared:nlb/prober-echo/same-source-port", *NLB_B),
    ("shared:dns/kube-dns", "pod-to-dns", "dns/kube-dns", "10.96.0.10", 53, "dns", None, None, None, DNS_Q),
    ("shared:external/example", "pod-to-external", "external/example", "192.0.2.10", 443, "tcp", None, None,
     None, None),
]  # fmt: skip


def rows_of(pl: Pinglist) -> list[Row]:
    def row(where: str, t: ProbeTarget) -> Row:
        dst_kind = t.dst_kind.value if t.dst_kind else None
        path = path_of(pl.kind, t.kind)
        return (where, path, t.target, t.ip, t.port, t.proto.value, t.dst_node, dst_kind, t.zone, t.query)

    rows = [row("local", t) for t in pl.local]
    rows += [row(f"peer:{g.node}", t) for g in pl.peers for t in g.targets]
    rows += [row(f"shared:{g.name}", t) for g in pl.shared for t in g.targets]
    return rows


@pytest.fixture(scope="module")
def pod_a() -> Pinglist:
    pl = PinglistBuilder(THREE, SchedulePolicy()).for_agent("pod-a")
    assert pl is not None
    return pl


@pytest.mark.parametrize(
    "row", [pytest.param(r, id=f"{r[0]}-{r[2]}-{r[5]}-{r[8] or ''}".rstrip("-")) for r in POD_A_ROWS]
)
def test_three_node_pod_agent_target(pod_a: Pinglist, row: Row) -> None:
    assert row in rows_of(pod_a)


def test_three_node_pod_agent_has_nothing_else(pod_a: Pinglist) -> None:
    assert sorted(rows_of(pod_a), key=repr) == sorted(POD_A_ROWS, key=repr)
    assert (pod_a.agent, pod_a.node, pod_a.kind) == ("pod-a", "node-a", SrcKind.POD)
    assert (pod_a.interval_s, pod_a.timeout_s, pod_a.budget_per_s, pod_a.concurrency) == (10.0, 5.0, 20.0, 64)
    assert pod_a.peers_per_round == 2  # both peers fit the default budget
    assert [g.node for g in pod_a.peers] == ["node-c", "node-b"]  # ring: b, a, c
    # 6 agents are far below the fan-in budget: every shared group every round...
    assert {(g.name, g.every) for g in pod_a.shared if not g.same_source_port} == {
        ("service/prober-echo", 1), ("nlb/prober-echo/zone-a", 1), ("nlb/prober-echo/zone-b", 1),
        ("dns/kube-dns", 1), ("external/example", 1),
    }  # fmt: skip
    # ... and the same-source-port group too: it is one of the three probes a round of each
    # zone address (repeat 3), so the collision test gets a group every round.
    assert [g.every for g in pod_a.shared if g.same_source_port] == [1]


def test_three_node_round_plan(pod_a: Pinglist) -> None:
    plans = [plan_round(pod_a, r, random.Random(r)) for r in range(NOW_ROUND, NOW_ROUND + 3)]
    for plan in plans:
        targets = [t for p in plan for t in p.targets]
        assert {t.dst_node for t in targets if t.kind is TargetKind.POD} == {"node-b", "node-c"}
        # a 3-node mesh has room for three probes of each shared and same-node target
        assert len([t for t in targets if t.kind is TargetKind.NLB]) == 2 * 3
        assert len([t for t in targets if t.kind is TargetKind.SERVICE_LOCAL]) == 3
    assert pod_a.repeat == 3
    assert [sum(1 for p in plan if p.same_source_port) for plan in plans] == [1, 1, 1]
    assert all(isinstance(p, PlannedProbe) for plan in plans for p in plan)


def test_a_sweep_probes_the_service_local_service_once_where_a_round_lists_it_thrice() -> None:
    """At 60 nodes and 3 probes/s ``repeat`` is 1, so the local Service is listed
    ``local_service_min`` (3) times in ``local``; a sweep probes each same-node target once."""
    pl = PinglistBuilder(mesh(60, extras=True), SchedulePolicy(budget_per_s=3.0)).for_agent(pod(2))
    assert pl is not None
    listed = [t for t in pl.local if t.kind is TargetKind.SERVICE_LOCAL]
    assert len(listed) == SchedulePolicy().local_service_min == 3
    plan = sweep_plan(pl, order(round=0, spread_s=10.0))
    swept = [t for p in plan for t in p.targets if t.kind is TargetKind.SERVICE_LOCAL]
    assert swept == listed[:1]


# ---- when the agent starts a round's probes -----------------------------------------------


def test_the_probes_due_within_the_launch_ahead_start_with_the_first_of_their_group() -> None:
    assert LAUNCH_AHEAD_S == 0.5
    assert launch_offsets([0.1, 0.3, 0.6, 0.61, 1.0, 1.2, 3.0]) == [0.1, 0.1, 0.1, 0.61, 0.61, 1.2, 3.0]
    assert launch_offsets([]) == []


@given(
    st.lists(st.floats(min_value=0.0, max_value=9.0), max_size=60), st.floats(min_value=0.0, max_value=2.0)
)
def test_a_probe_starts_at_most_the_launch_ahead_early_and_never_late(
    offsets: list[float], ahead: float
) -> None:
    offsets.sort()
    launch = launch_offsets(offsets, ahead)
    assert len(launch) == len(offsets)
    assert launch == sorted(launch)
    for planned, started in zip(offsets, launch, strict=True):
        assert planned - ahead <= started <= planned
    # A group starts at its first probe's own offset: one wake-up a distinct start.
    assert set(launch) <= set(offsets)


def test_at_the_production_rates_the_round_loop_wakes_for_fewer_groups_than_probes() -> None:
    """An agent's plan of a round at 2.5 and 12.5 probes/s (5,000 nodes, and 1,000 at a
    cluster budget of 25,000/s): the
    round loop wakes once a group."""
    for nodes, cluster, budget, most in ((5000, 5_000.0, 2.5, 0.7), (1000, 25_000.0, 12.5, 0.25)):
        policy = SchedulePolicy(cluster_budget_per_s=cluster)
        b = PinglistBuilder(EksCluster(n_nodes=nodes).inventory(), policy)
        pl = b.for_agent(b.agents()[0])
        assert pl is not None
        assert pl.budget_per_s == budget
        plan = plan_round(pl, NOW_ROUND, random.Random(3))
        wakes = len(set(launch_offsets([p.offset_s for p in plan])))
        assert 0 < wakes <= most * len(plan), (budget, wakes, len(plan))
