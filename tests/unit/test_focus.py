"""Focused probes: the pinglist entries that answer diagnosis' open questions, within every bound."""

from __future__ import annotations

import random
from collections import Counter

import msgspec
import pytest

from prober.model import SrcKind, TargetKind
from prober.pinglist import AgentPinglist, Question, assemble, split
from prober.schedule import (
    CATCH_UP_SPAN_S,
    USABLE_FRACTION,
    FocusedPinglists,
    FocusRules,
    PinglistBuilder,
    SchedulePolicy,
    focus_catch_up,
    plan_round,
    round_index,
    round_start,
)
from tests.synth import EXTERNAL, Cluster, simulate

#: 30 nodes whose agents get 10 probes/s of the cluster budget (their own --budget is 20/s):
#: room in every agent's budget, as in any cluster past about 600 nodes.
POLICY = SchedulePolicy(cluster_budget_per_s=600.0)
C = Cluster(n_nodes=30, policy=POLICY)
N = C.nodes
RULES = FocusRules.of(POLICY, per_agent=10, max_suspects=4, min_samples=6)


def agents_of(node: str) -> list[str]:
    return [C.shape.agent_name(C.index(node), kind) for kind in (SrcKind.POD, SrcKind.HOST)]


def pair(a: str, b: str) -> Question:
    return Question(kind="pair", node=a, peer=b, failed=1, sent=1)


def target(node: str, name: str = EXTERNAL) -> Question:
    return Question(kind="target", node=node, target=name, failed=1, sent=1)


def test_a_pair_gives_each_side_the_others_echoes_and_nothing_else_changes() -> None:
    b = C.builder
    focus = b.focus([pair(N[1], N[2])], RULES)
    assert focus.suspects == (pair(N[1], N[2]),)
    assert sorted(focus.heads) == sorted(agents_of(N[1]) + agents_of(N[2]))
    for a in agents_of(N[1]):
        assert {(t.dst_node, t.kind) for t in focus.heads[a].focus} == {
            (N[2], TargetKind.POD),
            (N[2], TargetKind.HOST),
        }
        assert len(focus.heads[a].focus) == 4  # pod and host echoes, HTTP and UDP
    served = FocusedPinglists(b, focus)
    assert served.mesh() is b.mesh()
    unchanged = [a for a in b.agents() if a not in focus.heads]
    assert all(served.head(a) == b.head(a) for a in unchanged)
    assert all(served.head(a).version != b.head(a).version for a in focus.heads)  # type: ignore[union-attr]
    assert focus.probes == 16


def test_an_outside_target_gets_repeats_from_the_node_and_one_probe_from_a_witness() -> None:
    focus = C.builder.focus([target(N[3])], RULES)
    mine = agents_of(N[3])
    witnesses = [a for a in focus.heads if a not in mine]
    assert len(witnesses) == 2
    assert {t.target for h in focus.heads.values() for t in h.focus} == {EXTERNAL}
    assert [len(focus.heads[a].focus) for a in mine] == [3, 3]  # ceil(min_samples / 2) each side
    assert [len(focus.heads[a].focus) for a in witnesses] == [1, 1]


@pytest.mark.parametrize(
    ("rules", "questions", "taken"),
    [
        pytest.param(RULES, [pair(N[1], N[2]), pair(N[1], N[3]), pair(N[1], N[4])], 2, id="per-agent-room"),
        pytest.param(
            FocusRules(per_agent=10, max_suspects=2, target_repeat=3, target_fan_in=100),
            [pair(N[1], N[2]), pair(N[3], N[4]), pair(N[5], N[6])],
            2,
            id="cluster-wide-bound",
        ),
        pytest.param(
            FocusRules(per_agent=10, max_suspects=8, target_repeat=3, target_fan_in=10),
            [target(N[1]), target(N[5]), target(N[9])],
            1,
            id="outside-target-fan-in",
        ),
        pytest.param(
            RULES, [pair(N[1], N[1]), pair(N[1], "gone"), target(N[1], "external/none")], 0, id="unanswerable"
        ),
    ],
)
def test_bounds(rules: FocusRules, questions: list[Question], taken: int) -> None:
    focus = C.builder.focus(questions, rules)
    assert len(focus.suspects) == taken
    assert all(len(h.focus) <= rules.per_agent for h in focus.heads.values())


def test_where_the_agents_own_budget_binds_the_schedule_leaves_room_for_focus() -> None:
    # 120 nodes: each agent's share of the cluster budget is its whole --budget (20/s).
    # The schedule keeps --focus-per-agent (10) probes a round of it free: 36 peers a round
    # of 5 probes, 190 probes, not 38 and 200; a pair question is answered.
    small = Cluster(n_nodes=120)
    b = small.builder
    assert (b.peers_per_round, b.round_max, b.focus_room) == (36, 190, 10)
    question = pair(small.nodes[0], small.nodes[1])
    assert b.focus([question], RULES).suspects == (question,)
    # Without a reserve (an agent with no collector) the schedule fills the budget:
    # no room, no focus.
    full = Cluster(n_nodes=120, policy=SchedulePolicy(focus_reserve=0)).builder
    assert (full.peers_per_round, full.focus_room) == (38, 0)
    assert full.focus([question], RULES).suspects == ()


def test_the_reserve_is_at_most_a_tenth_of_the_round_budget() -> None:
    assert SchedulePolicy().focus_reserved == 10
    assert SchedulePolicy(budget_per_s=2.0).focus_reserved == 2  # 20 probes a round
    assert SchedulePolicy(focus_reserve=0).focus_reserved == 0
    with pytest.raises(ValueError, match="focus_reserve"):
        SchedulePolicy(focus_reserve=-1)


def test_each_focused_entry_is_one_more_probe_a_round_within_the_budget() -> None:
    b = C.builder
    focus = b.focus([pair(N[1], N[2])], RULES)
    a = agents_of(N[1])[0]
    plain = b.for_agent(a)
    focused = FocusedPinglists(b, focus).for_agent(a)
    assert plain is not None
    assert focused is not None
    for r in range(5):
        before = plan_round(plain, r, random.Random(1))
        after = plan_round(focused, r, random.Random(1))
        assert len(after) == len(before) + 4
        assert len(after) <= focused.budget_per_s * focused.interval_s
    assert focused.budget_per_s == pytest.approx(plain.budget_per_s + 4 / plain.interval_s)


def test_the_wire_parts_carry_focus_and_an_older_answer_has_none() -> None:
    b = C.builder
    a = agents_of(N[1])[0]
    head = b.focus([pair(N[1], N[2])], RULES).heads[a]
    wire = msgspec.json.decode(msgspec.json.encode(head), type=AgentPinglist)
    assert wire.focus == head.focus
    joined = assemble(wire, b.mesh())
    assert joined.focus == head.focus
    back_head, back_mesh = split(joined)
    assert back_head.focus == head.focus
    assert back_mesh.budget_per_s == pytest.approx(b.mesh().budget_per_s)
    older = msgspec.json.encode({k: v for k, v in msgspec.to_builtins(b.head(a)).items() if k != "focus"})
    assert msgspec.json.decode(older, type=AgentPinglist).focus == []


def test_a_new_inventory_keeps_focus_to_agents_it_still_has() -> None:
    inv = C.inventory()
    fewer = msgspec.structs.replace(inv, nodes=[n for n in inv.nodes if n.name != N[2]])
    b = PinglistBuilder(fewer, POLICY, previous=C.builder)
    assert b.focus([pair(N[1], N[2])], RULES).suspects == ()


def test_entries_added_mid_round_start_in_that_round_within_a_second() -> None:
    """An agent that learns of a question mid-round probes the new entries at once: each
    entry the focus in force lacks (a repeat counts), none it already holds, spread over
    the next second, or over what is left of the round's usable 90% where that is less."""
    b = C.builder
    agent = agents_of(N[3])[0]
    asked = FocusedPinglists(b, b.focus([target(N[3])], RULES)).for_agent(agent)
    assert asked is not None
    before = FocusedPinglists(b, b.focus([pair(N[3], N[4])], RULES)).for_agent(agent)
    assert before is not None
    both = FocusedPinglists(b, b.focus([pair(N[3], N[4]), target(N[3])], RULES)).for_agent(agent)
    assert both is not None
    interval = asked.interval_s
    for elapsed in (0.0, 2.5, 7.0, 8.6):
        plan = focus_catch_up([], asked, elapsed_s=elapsed, rng=random.Random(1))
        assert sorted(t.key for p in plan for t in p.targets) == sorted(t.key for t in asked.focus)
        assert len(asked.focus) == 3  # ceil(min_samples / 2) repeats of the external target
        assert all(elapsed <= p.offset_s < USABLE_FRACTION * interval for p in plan)
        assert [p.offset_s for p in plan] == sorted(p.offset_s for p in plan)
        gaps = min(USABLE_FRACTION * interval - elapsed, CATCH_UP_SPAN_S) / len(plan)
        assert all(elapsed + i * gaps <= p.offset_s <= elapsed + (i + 1) * gaps for i, p in enumerate(plan))
    # What the round's plan already holds is not probed twice; what is new is.
    added = focus_catch_up(before.focus, both, elapsed_s=1.0, rng=random.Random(2))
    assert Counter(t.key for p in added for t in p.targets) == Counter(t.key for t in asked.focus)
    assert focus_catch_up(both.focus, both, elapsed_s=1.0, rng=random.Random(2)) == []
    # One repeat more than before: one probe.
    one_less = msgspec.structs.replace(asked, focus=asked.focus[:2])
    [extra] = focus_catch_up(one_less.focus, asked, elapsed_s=1.0, rng=random.Random(3))
    assert extra.targets == (asked.focus[2],)
    # In the round's last tenth: nothing now, the next round's plan holds them.
    assert focus_catch_up([], asked, elapsed_s=USABLE_FRACTION * interval, rng=random.Random(4)) == []


def test_the_simulated_agents_start_entries_learned_mid_round_as_agents_do() -> None:
    """``simulate(focus_from_s=...)``, which the collector's scale bench plays agents with:
    the entries learned 4 s into the round are probed once each within the next second."""
    agent = agents_of(N[3])[0]
    entries = C.builder.focus([target(N[3])], RULES).heads[agent].focus
    gen = simulate(C, rounds=1, focus={agent: entries}, focus_only=True, focus_from_s={agent: 4.0})
    start = round_start(round_index(gen.records[0].ts, C.interval_s), C.interval_s)
    assert len(gen.records) == len(entries) == 3
    assert all(start + 4.0 <= r.ts < start + 4.0 + CATCH_UP_SPAN_S for r in gen.records)
    assert {r.target for r in gen.records} == {EXTERNAL}
    with pytest.raises(ValueError, match="focus_only"):
        simulate(C, rounds=1, focus={agent: entries}, focus_from_s={agent: 4.0})
