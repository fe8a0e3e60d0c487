"""The synthetic cluster follows prober's real schedule and the faults' semantics (what rule tests rely on).

Schedule: the records are the plans ``plan_round`` makes from ``PinglistBuilder``'s
pinglists (replayed here with the same random sources), so every node receives
exactly ``k`` peer probes from each network per round, shared targets stay within
their fan-in budget, and timeouts are the policy's. Faults: each one's footprint on
the records, as the lab's kernel knobs make it. Lifecycle: restarts, drains and new
nodes change the inventory, and agents follow at their next pinglist fetch.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections import Counter, defaultdict

import pytest

from prober.model import Outcome, ProbeResult, Proto, SrcKind
from prober.pinglist import Question
from prober.schedule import FocusRules, SchedulePolicy, launch_offsets, plan_round, round_index
from tests.synth import (
    DNS,
    EXTERNAL,
    KINDS,
    MODELLED,
    NLB,
    NODEPORT,
    SERVICE,
    UNNAMED_KINDS,
    AddNode,
    Cluster,
    DrainNode,
    Fault,
    RollingRestart,
    agent_rng,
    generate,
    simulate,
)

START = 1_763_856_000.0  # the generator's default span start, a round boundary


def quiet(cluster: Cluster) -> Cluster:
    """The cluster without background failures: every failure is the fault's."""
    return dataclasses.replace(cluster, noise=0.0, refused_noise=0.0, reset_noise=0.0)


def round_of(r: ProbeResult, interval_s: float = 10.0) -> int:
    return int((r.ts - START) // interval_s)


def failed(r: ProbeResult) -> bool:
    return r.outcome is not Outcome.OK


# ---- the schedule ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 10, 60, 240])
def test_every_node_receives_exactly_k_peer_probes_from_each_network_per_round(n: int) -> None:
    c = Cluster(n_nodes=n)
    rounds = 2 if n > 100 else 3
    records = generate(c, rounds=rounds, seed=1)
    visits: Counter[tuple[int, str, str, str, Proto]] = Counter()
    large: Counter[tuple[int, str, str, str]] = Counter()
    for r in records:
        if r.path.endswith(("-to-pod", "-to-host")) and r.src_node != r.dst_node:
            if r.proto is Proto.HTTP_LARGE:
                large[(round_of(r), r.src_kind.value, r.path, r.dst_node or "")] += 1
            else:
                visits[(round_of(r), r.src_kind.value, r.path, r.dst_node or "", r.proto)] += 1
    assert set(visits.values()) == {c.k}
    # every node, every round, both networks, HTTP and UDP
    assert len(visits) == rounds * 4 * n * 2
    # and the large-payload probes: ``repeat`` a round into every node from each network
    pl = c.builder.for_agent(c.inventory().agents[0].name)
    assert pl is not None
    assert set(large.values()) == {max(1, pl.repeat)}
    assert len(large) == rounds * 2 * n
    assert c.k == min(n - 1, c.builder.peers_per_round)


def test_every_pair_is_covered_within_the_rotation() -> None:
    # Without the large-payload probe, and with the room kept for focused probes, k = 35:
    # every pair within ceil(79 / 35) = 3 rounds.
    c = Cluster(n_nodes=80, policy=SchedulePolicy(large_probe_bytes=0))
    assert c.k == 35
    records = generate(c, rounds=3, seed=2)
    pairs = {(r.src_node, r.dst_node) for r in records if r.path == "pod-to-pod"}
    assert len(pairs) == 80 * 79


def test_records_are_the_agents_round_plans() -> None:
    """Replay two agents' rounds with the real planning code: same targets, and the start
    times the agent's round loop gives them (those due close together start at once)."""
    c = Cluster(n_nodes=12)
    seed = 3
    records = generate(c, rounds=2, seed=seed)
    r0 = round_index(START, c.interval_s)
    for agent in c.inventory().agents[:2]:
        pl = c.builder.for_agent(agent.name)
        assert pl is not None
        rng = agent_rng(seed, agent.name)
        plans = [plan_round(pl, r0 + i, rng) for i in range(2)]
        planned = sorted(
            (round((r0 + i) * c.interval_s + at, 9), t.target, t.ip, t.port, t.proto.value)
            for i, plan in enumerate(plans)
            for p, at in zip(plan, launch_offsets([p.offset_s for p in plan]), strict=True)
            for t in p.targets
        )
        # Some start together: fewer wake-ups than planned probes.
        assert any(len(set(launch_offsets([p.offset_s for p in plan]))) < len(plan) for plan in plans)
        got = sorted(
            (round(r.ts, 9), r.target, r.target_ip, r.target_port, r.proto.value)
            for r in records
            if r.src_ip == agent.address and r.src_kind is agent.kind
        )
        assert got == planned


@pytest.mark.parametrize(
    ("n", "policy"),
    [
        pytest.param(10, SchedulePolicy(), id="10-every-round"),
        pytest.param(150, SchedulePolicy(), id="150-every-2nd"),
        pytest.param(40, SchedulePolicy(shared_budget_per_s=2.0), id="40-every-4th"),
    ],
)
def test_shared_targets_stay_within_their_fan_in_budget(n: int, policy: SchedulePolicy) -> None:
    c = Cluster(n_nodes=n, policy=policy)
    records = generate(c, rounds=c.every * 2, seed=4)
    per_round: Counter[tuple[int, str | None]] = Counter()
    per_agent: Counter[tuple[str, SrcKind, str | None]] = Counter()
    for r in records:
        if r.target in (SERVICE, NLB, DNS, EXTERNAL):
            per_round[(round_of(r), r.target_ip)] += 1
            per_agent[(r.src_node, r.src_kind, r.target_ip)] += 1
    # An NLB address may receive more: its fan-in grows with the nodes behind it.
    nlb_ips = {c.nlb_ip(z) for z in range(3)}
    shared_budget = c.policy.shared_budget_per_s * c.interval_s
    nlb_budget = c.policy.nlb_fan_in(n, 3)
    for (_, ip), probes in per_round.items():
        assert probes <= (nlb_budget if ip in nlb_ips else shared_budget), ip
    # each agent probes each shared address once every `every` rounds (`repeat` times),
    # an NLB address once every stride of its own, which divides `every`
    zones = [g for g in c.builder.mesh().shared if g.name.startswith("nlb/") and not g.same_source_port]
    [nlb_every] = {g.every for g in zones}
    assert c.every % nlb_every == 0
    others = {probes for (_, _, ip), probes in per_agent.items() if ip not in nlb_ips}
    nlbs = {probes for (_, _, ip), probes in per_agent.items() if ip in nlb_ips}
    assert (others, nlbs) == ({2 * c.repeat}, {2 * c.repeat * c.every // nlb_every})
    assert len(per_agent) == 2 * n * (3 + 3)  # two agents a node; Service, 3 NLB addresses, DNS, external


def test_production_schedule_at_a_thousand_nodes() -> None:
    """The numbers the policy gives a 1,000-node mesh (the scale the benchmarks run at)."""
    c = Cluster(n_nodes=1000)
    b = c.builder
    assert (b.budget_per_s, c.k, c.every, c.repeat) == (2.5, 3, 10, 1)


def test_same_source_port_groups_hold_every_nlb_address_at_once() -> None:
    c = Cluster(n_nodes=5)
    records = generate(c, rounds=6, seed=5)
    groups: defaultdict[tuple[str, str, int | None, float], list[ProbeResult]] = defaultdict(list)
    for r in records:
        if r.target == NLB:
            groups[(r.src_node, r.path, r.src_port, r.ts)].append(r)
    together = [g for g in groups.values() if len(g) > 1]
    # every agent, every `collision_every` rounds; every round where it probes each
    # address more than once a round (`repeat`: 5 nodes are well below the fan-in budget)
    assert c.builder.repeat > 1
    assert len(together) == 10 * 6
    for g in together:
        assert sorted(r.target_ip or "" for r in g) == sorted(c.nlb_ip(z) for z in range(3))


def test_focus_only_gives_the_focused_probes_alone_through_the_faults() -> None:
    """What a live run adds once the collector asks: each focused entry probed once a
    round by its agent, nothing of the schedule, and the faults acting on them."""
    c = quiet(Cluster(n_nodes=20))
    x, y, z = c.nodes[4], c.nodes[9], c.nodes[13]
    questions = [
        Question(kind="target", node=x, target=EXTERNAL, failed=1, sent=1),
        Question(kind="pair", node=y, peer=z, failed=1, sent=1),
    ]
    chosen = c.builder.focus(
        questions, FocusRules.of(SchedulePolicy(), per_agent=10, max_suspects=4, min_samples=6)
    )
    assert [(q.kind, q.node) for q in chosen.suspects] == [("target", x), ("pair", y)]
    focus = {a: list(h.focus) for a, h in chosen.heads.items()}
    agents = {a.name: (a.node, a.kind) for a in c.inventory().agents}
    faults = [Fault(kind="snat-asymmetric", nodes=(x,)), Fault(kind="pair-blocked", nodes=(y, z))]
    gen = simulate(c, rounds=2, focus=focus, focus_only=True, faults=faults)

    want = Counter(
        (*agents[a], t.target, t.proto.value, r) for a, ts in focus.items() for t in ts for r in range(2)
    )
    got = Counter((r.src_node, r.src_kind, r.target, r.proto.value, round_of(r)) for r in gen.records)
    assert got == want
    assert {(r.src_node, r.path) for r in gen.records if failed(r)} == {
        (x, "pod-to-external"), (y, "pod-to-pod"), (y, "host-to-host"), (y, "pod-to-host"),
        (y, "host-to-pod"), (z, "pod-to-pod"), (z, "host-to-host"), (z, "pod-to-host"), (z, "host-to-pod"),
    }  # fmt: skip


def test_timeouts_are_the_policys() -> None:
    # With 30% loss each way through one node, handshakes need the SYN retransmits at 1 s
    # and 3 s; nothing succeeds after the 5 s timeout.
    c = quiet(Cluster(n_nodes=6))
    x = c.nodes[0]
    records = generate(c, rounds=10, faults=[Fault(kind="packet-loss", nodes=(x,), rate=0.3)], seed=6)
    lat = [r.latency_s for r in records if r.latency_s is not None and r.proto is Proto.HTTP]
    assert max(lat) < c.timeout_s
    assert any(0.9 < x <= 1.1 for x in lat)
    assert any(2.9 < x <= 3.1 for x in lat)
    # a 2 s timeout never sees the second retransmit
    short = quiet(Cluster(n_nodes=6, policy=SchedulePolicy(timeout_s=2.0)))
    records = generate(short, rounds=10, faults=[Fault(kind="packet-loss", nodes=(x,), rate=0.3)], seed=6)
    lat = [r.latency_s for r in records if r.latency_s is not None]
    assert max(lat) < 2.0
    assert any(0.9 < x <= 1.1 for x in lat)


# ---- production shape ------------------------------------------------------------------


def test_records_carry_production_names_and_addresses() -> None:
    c = Cluster(n_nodes=9)
    inv = c.inventory()
    records = generate(c, rounds=1, seed=7)
    assert all(re.fullmatch(r"ip-10-0-\d+-\d+\.ec2\.internal", r.src_node) for r in records)
    agents = {(a.node, a.kind): a for a in inv.agents}
    for r in records:
        agent = agents[(r.src_node, r.src_kind)]
        assert r.src_ip == agent.address
        assert r.src_port is not None
        assert 32768 <= r.src_port <= 60999
    host_ports = {r.target_port for r in records if r.path.endswith("-to-host")}
    assert host_ports == {18080, 18081}
    assert {r.target_port for r in records if r.path.endswith("-to-pod")} == {8080, 8081}


def test_latency_is_sub_millisecond_in_a_zone_and_about_a_millisecond_across() -> None:
    c = Cluster(n_nodes=12)
    records = generate(c, rounds=3, seed=8)
    same: list[float] = []
    cross: list[float] = []
    for r in records:
        if r.path == "host-to-host" and r.proto is Proto.UDP and r.latency_s is not None and r.dst_node:
            (same if c.zone(r.src_node) == c.zone(r.dst_node) else cross).append(r.latency_s)
    assert 0.0001 < statistics.median(same) < 0.001
    assert 0.0007 < statistics.median(cross) < 0.002


def test_background_failures_are_rare_and_settable_per_path() -> None:
    c = Cluster(n_nodes=30, noise=0.01, path_noise=(("pod-to-dns", 0.2),))
    records = generate(c, rounds=10, seed=9)
    outcomes = Counter(r.outcome for r in records if not r.path.endswith("-to-dns"))
    total = sum(outcomes.values())
    assert 0.007 < outcomes[Outcome.TIMEOUT] / total < 0.013
    dns = [r for r in records if r.path == "pod-to-dns"]
    assert 0.1 < sum(map(failed, dns)) / len(dns) < 0.3
    healthy = generate(Cluster(n_nodes=30), rounds=10, seed=9)
    assert sum(map(failed, healthy)) / len(healthy) < 0.002


# ---- fault semantics -------------------------------------------------------------------


def test_hairpin_never_shows_a_self_served_success_and_fails_about_one_in_n() -> None:
    c = quiet(Cluster(n_nodes=5))
    records = [
        r for r in generate(c, rounds=30, faults=[Fault(kind="nlb-hairpin")], seed=10) if r.target == NLB
    ]
    assert not any(r.outcome is Outcome.OK and r.dst_node == r.src_node for r in records)
    assert 0.12 < sum(map(failed, records)) / len(records) < 0.28
    # client-IP preservation: the echo sees the client
    assert all(r.seen_src_ip == r.src_ip for r in records if r.outcome is Outcome.OK)


def test_without_preservation_the_echo_sees_the_nlb() -> None:
    c = quiet(Cluster(n_nodes=5))
    records = [r for r in generate(c, rounds=2, seed=10) if r.target == NLB]
    assert all(r.seen_src_ip == r.target_ip for r in records)
    assert {r.dst_node for r in records} == set(c.nodes)  # cross-zone: any node


def test_zone_restricted_nlb_forwards_to_its_zones_nodes() -> None:
    c = quiet(Cluster(n_nodes=9, cross_zone=False))
    records = [r for r in generate(c, rounds=3, seed=11) if r.target == NLB]
    for r in records:
        z = next(z for z in range(3) if c.nlb_ip(z) == r.target_ip)
        assert c.zone(r.dst_node or "") == c.shape.zone(z)


def test_bridge_netfilter_breaks_only_the_nodes_pods_reaching_its_own_backends() -> None:
    c = quiet(Cluster(n_nodes=4))
    x = c.nodes[1]
    records = generate(c, rounds=20, faults=[Fault(kind="bridge-netfilter", nodes=(x,))], seed=12)
    broken = Counter((r.src_node, r.path) for r in records if failed(r))
    assert set(broken) == {(x, "pod-to-service-local"), (x, "pod-to-service"), (x, "pod-to-nodeport")}
    assert not any(r.src_node == x and r.path == "pod-to-service" and r.dst_node == x for r in records)
    own = [
        r for r in records if r.src_node == x and r.path == "pod-to-nodeport" and r.target_ip == c.node_ip(x)
    ]
    assert {r.dst_node for r in own if r.outcome is Outcome.OK} == set(c.nodes) - {x}  # sent elsewhere, works


def test_failed_balanced_probes_have_no_serving_node_and_peers_keep_theirs() -> None:
    c = quiet(Cluster(n_nodes=4))
    x = c.nodes[2]
    records = generate(c, rounds=4, faults=[Fault(kind="node-isolated", nodes=(x,))], seed=13)
    assert any(failed(r) for r in records)
    for r in records:
        if r.outcome is Outcome.OK:
            continue
        assert (r.dst_node is not None) == r.path.endswith(("-to-pod", "-to-host"))
        assert r.latency_s is None
        assert r.seen_src_ip is None


def test_isolated_node_loses_every_crossing_probe_and_keeps_its_own() -> None:
    c = quiet(Cluster(n_nodes=5))
    x = c.nodes[3]
    records = generate(c, rounds=3, faults=[Fault(kind="node-isolated", nodes=(x,))], seed=14)
    for r in records:
        peer = r.path.endswith(("-to-pod", "-to-host"))
        if peer and (r.src_node == x) != (r.dst_node == x):
            assert r.outcome is Outcome.TIMEOUT
        if r.src_node == x and r.path.endswith("-to-service-local"):
            assert r.outcome is Outcome.OK  # never leaves the node
        if r.src_node == x and r.target in (DNS, EXTERNAL):
            assert r.outcome is Outcome.TIMEOUT
        if r.src_node != x and r.target in (DNS, EXTERNAL):
            assert r.outcome is Outcome.OK


def test_unreachable_node_drops_inbound_and_still_sends() -> None:
    c = quiet(Cluster(n_nodes=5))
    x = c.nodes[0]
    records = generate(c, rounds=3, faults=[Fault(kind="node-unreachable", nodes=(x,))], seed=15)
    peers = [r for r in records if r.path.endswith(("-to-pod", "-to-host")) and r.src_node != r.dst_node]
    assert all(failed(r) for r in peers if r.dst_node == x)
    assert not any(failed(r) for r in peers if r.src_node == x)
    assert not any(failed(r) for r in records if r.src_node == x and r.target in (DNS, EXTERNAL))
    nlb = [r for r in records if r.target == NLB]
    assert not any(r.outcome is Outcome.OK and r.dst_node == x for r in nlb)  # the NLB cannot get in either
    nodeport = [r for r in records if r.target == NODEPORT and r.src_node != x]
    assert all(failed(r) for r in nodeport if r.target_ip == c.node_ip(x))


@pytest.mark.parametrize("one_way", [False, True], ids=["both-ways", "one-way"])
def test_blocked_pair_fails_only_between_its_nodes(one_way: bool) -> None:
    c = quiet(Cluster(n_nodes=5))
    a, b = c.nodes[1], c.nodes[3]
    fault = Fault(kind="pair-blocked", nodes=(a, b), one_way=one_way)
    records = generate(c, rounds=3, faults=[fault], seed=16)
    bad = {
        (r.src_node, r.dst_node) for r in records if failed(r) and r.path.endswith(("-to-pod", "-to-host"))
    }
    assert bad == ({(a, b)} if one_way else {(a, b), (b, a)})
    # the NLB and outside targets go another way; a Service probe goes straight to its backend
    assert all(r.outcome is Outcome.OK for r in records if r.target in (NLB, DNS, EXTERNAL))
    service = [r for r in records if r.target == SERVICE and {r.src_node, r.dst_node} != {a, b}]
    assert {r.src_node for r in service if failed(r)} <= {a} if one_way else {a, b}


def test_packet_loss_fails_a_share_per_direction_and_udp_gets_no_retry() -> None:
    c = quiet(Cluster(n_nodes=6))
    x = c.nodes[0]
    records = generate(c, rounds=60, faults=[Fault(kind="packet-loss", nodes=(x,), rate=0.1)], seed=17)
    udp = [r for r in records if r.proto is Proto.UDP and r.dst_node == x and r.src_node != x]
    # a datagram and its answer both cross x: 1 - 0.9**2 = 19% lost
    assert 0.15 < sum(map(failed, udp)) / len(udp) < 0.23
    http = [r for r in records if r.proto is Proto.HTTP and r.dst_node == x and r.src_node != x]
    slow = [r for r in http if r.latency_s is not None and 0.9 < r.latency_s <= 1.1]
    assert 0.1 < len(slow) / len(http) < 0.25  # one lost handshake, then through
    assert 0.0 < sum(map(failed, http)) / len(http) < 0.02  # three handshakes lost in a row: 0.7%
    others = [
        r for r in records if x not in (r.src_node, r.dst_node) and r.target not in (NLB, SERVICE, NODEPORT)
    ]
    assert not any(failed(r) or (r.latency_s or 0) > 0.5 for r in others)


@pytest.mark.parametrize(
    ("variant", "path"),
    [("pod", "pod-to-external"), ("host", "host-to-external"), ("nodeport", "pod-to-nodeport")],
)
def test_snat_asymmetric_fails_one_network_of_the_node(variant: str, path: str) -> None:
    c = quiet(Cluster(n_nodes=5))
    x = c.nodes[2]
    records = generate(
        c, rounds=3, faults=[Fault(kind="snat-asymmetric", nodes=(x,), variant=variant)], seed=18
    )
    bad = {(r.src_node, r.path) for r in records if failed(r)}
    assert bad == {(x, path)}
    if variant == "nodeport":  # other nodes' NodePorts only
        assert not any(failed(r) for r in records if r.path == path and r.target_ip == c.node_ip(x))


@pytest.mark.parametrize("variant", ["", "retransmit"])
def test_collision_hits_a_group_probe_that_reaches_an_earlier_ones_target(variant: str) -> None:
    c = quiet(Cluster(n_nodes=4))
    records = generate(c, rounds=30, faults=[Fault(kind="nlb-5tuple-collision", variant=variant)], seed=19)
    groups: defaultdict[tuple[str, str, int | None, float], list[ProbeResult]] = defaultdict(list)
    for r in records:
        if r.target == NLB:
            groups[(r.src_node, r.path, r.src_port, r.ts)].append(r)
    hit = 0
    for g in groups.values():
        if len(g) == 1:
            assert g[0].outcome is Outcome.OK
            continue
        if variant == "retransmit":
            assert all(r.outcome is Outcome.OK for r in g)
            late = [r for r in g if (r.latency_s or 0) > 0.9]
            hit += bool(late)
            assert len({r.dst_node for r in g}) + len(late) == len(g)  # one on time per target
        else:
            reset = [r for r in g if r.outcome is Outcome.RESET]
            hit += bool(reset)
            assert len({r.dst_node for r in g if r.outcome is Outcome.OK}) == len(g) - len(reset)
    assert hit > 10


def test_dns_timeouts_at_their_rate_and_nothing_else() -> None:
    c = quiet(Cluster(n_nodes=10))
    records = generate(c, rounds=30, faults=[Fault(kind="dns-timeouts", rate=0.1)], seed=20)
    dns = [r for r in records if r.target == DNS]
    assert 0.07 < sum(map(failed, dns)) / len(dns) < 0.13
    assert not any(failed(r) for r in records if r.target != DNS)


def test_pod_agent_down_sends_nothing_and_refuses() -> None:
    c = quiet(Cluster(n_nodes=5))
    x = c.nodes[1]
    records = generate(c, rounds=3, faults=[Fault(kind="pod-agent-down", nodes=(x,))], seed=21)
    assert not any(r.src_node == x and r.src_kind is SrcKind.POD for r in records)
    to_pod = [r for r in records if r.path.endswith("-to-pod") and r.dst_node == x]
    assert to_pod
    assert {r.outcome for r in to_pod} == {Outcome.REFUSED}
    assert not any(failed(r) for r in records if not r.path.endswith("-to-pod"))  # the echo pods still serve


@pytest.mark.parametrize(
    ("fault", "target"),
    [(Fault(kind="service-down"), SERVICE), (Fault(kind="nlb-address-down", zone=1), NLB)],
    ids=["service", "nlb-address"],
)
def test_black_holed_shared_targets(fault: Fault, target: str) -> None:
    c = quiet(Cluster(n_nodes=5))
    records = generate(c, rounds=2, faults=[fault], seed=22)
    bad = {(r.target, r.target_ip) for r in records if failed(r)}
    address = c.shape.service_address if target == SERVICE else c.nlb_ip(1)
    assert bad == {(target, address)}


def test_a_fault_acts_only_inside_its_window() -> None:
    c = quiet(Cluster(n_nodes=5))
    x = c.nodes[4]
    fault = Fault(kind="node-isolated", nodes=(x,), start_s=20.0, end_s=40.0)
    records = generate(c, rounds=6, faults=[fault], seed=23)
    windows = {round_of(r) for r in records if failed(r)}
    assert windows == {2, 3}
    same = generate(
        c, rounds=6, faults=[Fault(kind="node-isolated", nodes=(x,))], fault_rounds=(2, 4), seed=23
    )
    assert same == records


# ---- externalTrafficPolicy: Cluster --------------------------------------------------


def test_cluster_traffic_policy_forwards_from_the_entry_node_snatted() -> None:
    c = quiet(Cluster(n_nodes=6, external_traffic_policy="Cluster"))
    records = generate(c, rounds=3, seed=24)
    address = {c.node_ip(n): n for n in c.nodes}
    remote = [r for r in records if r.target == NODEPORT and address[r.target_ip or ""] != r.src_node]
    assert {r.dst_node for r in remote} == set(c.nodes)  # any echo, not the entry node's
    for r in remote:
        if r.dst_node != address[r.target_ip or ""]:
            assert r.seen_src_ip == r.target_ip  # SNAT to the node the probe entered
    # a node unreachable: its NodePort and everything forwarded to it fail
    x = c.nodes[0]
    records = generate(c, rounds=3, faults=[Fault(kind="node-unreachable", nodes=(x,))], seed=24)
    forwarded = [r for r in records if r.target == NODEPORT and r.target_ip != c.node_ip(x)]
    assert any(failed(r) for r in forwarded)
    assert not any(r.outcome is Outcome.OK and r.dst_node == x for r in forwarded if r.src_node != x)


# ---- lifecycle ---------------------------------------------------------------------------


def test_rolling_restart_takes_each_agent_pod_down_in_turn() -> None:
    c = quiet(Cluster(n_nodes=10))  # 10%: one pod at a time, 20 s each
    gen = simulate(c, rounds=24, events=[RollingRestart(kind=SrcKind.POD, start_s=10.0)], seed=25)
    records = gen.records
    pods = [a for a in gen.agents if a.kind is SrcKind.POD]
    old = [a for a in pods if a.running_from == -math.inf]
    new = {a.node: a for a in pods if a.running_from > -math.inf}
    stops = sorted(a.stop_at for a in old if a.stop_at < gen.end_ts)
    assert stops == [START + 10.0 + 20.0 * i for i in range(10)]
    lag = c.settle_s + 2 * c.interval_s  # publish, the peers' next fetch, their next round
    for a in old:
        b = new[a.node]
        assert b.running_from == a.stop_at + 20.0
        assert b.address != a.address
        assert b.name != a.name
        sent = [r for r in records if r.src_node == a.node and r.src_kind is SrcKind.POD]
        assert all(r.ts < a.stop_at for r in sent if r.src_ip == a.address)
        # the new pod probes only once the collector gives it a pinglist (after its warm-up)
        assert b.joined_at > b.running_from + c.warmup_s
        assert all(r.ts >= b.joined_at for r in sent if r.src_ip == b.address)
        # probes to the old pod: answered a second, refused two, then silent; none after the lag
        for r in (r for r in records if r.target_ip == a.address and r.ts >= a.stop_at):
            assert r.ts < a.stop_at + lag
            if r.ts < a.stop_at + 1.0:
                assert r.outcome is Outcome.OK
            elif r.ts < a.stop_at + 3.0:
                assert r.outcome is Outcome.REFUSED
            else:
                assert r.outcome is Outcome.TIMEOUT
        # the new pod is probed only after its warm-up
        assert all(r.ts > b.running_from + c.warmup_s for r in records if r.target_ip == b.address)
    lost = Counter(r.outcome for r in records if failed(r))
    assert lost[Outcome.REFUSED] > 0
    assert lost[Outcome.TIMEOUT] > 0
    assert not any(failed(r) for r in records if not r.path.endswith("-to-pod"))


def test_host_agent_restart_refuses_on_the_nodes_address() -> None:
    c = quiet(Cluster(n_nodes=4))
    records = generate(c, rounds=8, events=[RollingRestart(kind=SrcKind.HOST, start_s=0.0)], seed=26)
    to_host = [r for r in records if r.path.endswith("-to-host") and r.src_node != r.dst_node]
    assert {r.outcome for r in to_host if failed(r)} == {Outcome.REFUSED}
    assert not any(failed(r) for r in records if not r.path.endswith("-to-host"))


def test_drained_node_leaves_the_pinglists_and_then_the_cluster() -> None:
    c = quiet(Cluster(n_nodes=8))
    x = c.nodes[5]
    gen = simulate(c, rounds=10, events=[DrainNode(node=x, at_s=20.0, terminate_after_s=30.0)], seed=27)
    records = gen.records
    taint, gone = START + 20.0, START + 50.0
    probed = [r.ts for r in records if r.dst_node == x and r.src_node != x and r.path.endswith("-to-pod")]
    # the collector publishes, every peer fetches within an interval and uses it from its next round
    assert max(probed) < taint + c.settle_s + 2 * c.interval_s
    sent = [r.ts for r in records if r.src_node == x]
    assert taint + 20.0 < max(sent) < gone  # its own agents keep their last pinglist until the end
    assert not any(failed(r) for r in records)  # drained before it went: nothing lost
    assert x in gen.nodes
    # a peer's k after the drain is the 7-node mesh's
    settled = math.ceil((taint + c.settle_s + 2 * c.interval_s - START) / c.interval_s)  # whole rounds
    late = [r for r in records if round_of(r) >= settled and r.path == "pod-to-pod" and r.proto is Proto.HTTP]
    assert set(Counter((round_of(r), r.dst_node) for r in late).values()) == {6}


def test_added_node_is_probed_after_its_warm_up() -> None:
    c = quiet(Cluster(n_nodes=6))
    new = c.added_node(0)
    gen = simulate(c, rounds=12, events=[AddNode(at_s=10.0)], seed=28)
    records = gen.records
    ready = START + 10.0
    assert new in gen.nodes
    assert new not in c.nodes
    nodeport = [r.ts for r in records if r.target == NODEPORT and r.dst_node == new]
    assert ready < min(nodeport) < ready + c.settle_s + c.interval_s + 10.0  # a ready node is a peer at once
    peer = [r.ts for r in records if r.path.endswith("-to-pod") and r.dst_node == new and r.src_node != new]
    assert min(peer) > ready + c.warmup_s  # its agents only after their warm-up
    sent = [r.ts for r in records if r.src_node == new]
    assert min(sent) > ready + c.warmup_s
    assert not any(failed(r) for r in records)
    # once everyone has the 7-node pinglists, every node gets k = 6 a round again
    tail = [r for r in records if r.ts >= START + 100.0 and r.path == "host-to-host" and r.proto is Proto.UDP]
    assert set(Counter((round_of(r), r.dst_node) for r in tail).values()) == {6}
    assert len({r.dst_node for r in tail}) == 7


def test_a_round_fills_the_agents_budget() -> None:
    """A round of the production schedule: every agent spends its budget (peers, same node, shared)."""
    c = Cluster(n_nodes=100)
    per_round = len(generate(c, rounds=1, seed=0))
    # 200 agents, each 20 probes/s less what the budget leaves unused
    assert 0.9 * 200 * 200 < per_round <= 200 * 200
    assert math.isclose(per_round, 200 * (4 + 6 + c.k * 5), rel_tol=0.02)


def test_every_catalogue_mode_has_a_network_model() -> None:
    assert set(KINDS) | set(UNNAMED_KINDS) <= MODELLED
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault(kind="cosmic-rays")
