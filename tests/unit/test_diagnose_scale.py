"""Diagnosis at 1,000 nodes with the production schedule: what two rounds of evidence name.

At 1,000 nodes the cluster budget (5,000 probes/s) gives each agent 2.5 probes a
second: k = 3 peers a round (as at 5,000 nodes, where the schedule's floor of peers
sets the rate), and each shared target (Service, NodePort, DNS,
external) gets its share of ``--shared-budget`` (an NLB address more, in proportion to
the nodes behind it), so an agent reaches it only every few rounds. One span of two
rounds with six faults at once, on distinct nodes, diagnosed as one window
(generation about 9 CPU-s, diagnosis about 2).
"""

from __future__ import annotations

import dataclasses
import functools

import pytest

from prober.diagnose import DiagnosisPolicy, diagnose, diagnose_window
from prober.diagnose.confirm import Confirmation, ConfirmPolicy
from prober.diagnose.pair_blocked import STAR_PAIRS
from prober.diagnose.recency import stream_stats
from prober.model import FindingKind
from prober.report import PassSchedule, Replay
from prober.schedule import SchedulePolicy
from tests.synth import START_TS, Cluster, Fault, evidence, expected_findings, named, simulate

C = Cluster(n_nodes=1000)
N = C.nodes
#: The same cluster at a budget of 25,000 probes/s: 12.5 probes/s an agent, k = 23 peers a
#: round, each peer probing a given node once in 44 rounds.
DENSE = Cluster(n_nodes=1000, policy=dataclasses.replace(SchedulePolicy(), cluster_budget_per_s=25_000.0))
NODE_FAULTS = (
    Fault(kind="node-unreachable", nodes=(N[10],)),
    Fault(kind="node-isolated", nodes=(N[400],)),
    Fault(kind="packet-loss", nodes=(N[555],), rate=0.05),
)


#: A blocked pair whose rotation comes round in the span: one visit is 8 probes each
#: way (pod and host agents, pod and host echoes, HTTP and UDP), past the rule's minimum.
PAIR_FAULTS = (Fault(kind="pair-blocked", nodes=(N[800], C.reached(N[800], 0))),)
SHARED_TARGET_FAULTS = (
    Fault(kind="bridge-netfilter", nodes=(N[700],)),
    Fault(kind="snat-asymmetric", nodes=(N[250],)),
)


@functools.cache
def two_rounds() -> set[tuple[str, frozenset[str]]]:
    faults = NODE_FAULTS + PAIR_FAULTS + SHARED_TARGET_FAULTS
    return named(diagnose(evidence(C, rounds=2, faults=faults, seed=3)))


def test_the_schedule_at_1000_nodes_is_the_production_one() -> None:
    assert (C.k, C.policy.interval_s, C.policy.cluster_budget_per_s) == (3, 10.0, 5_000.0)
    assert DENSE.k == 23


def test_node_faults_are_named_in_two_rounds_at_1000_nodes_and_nothing_else() -> None:
    found = two_rounds()
    assert found & expected_findings(C, NODE_FAULTS) == expected_findings(C, NODE_FAULTS)
    assert found - expected_findings(C, NODE_FAULTS + PAIR_FAULTS + SHARED_TARGET_FAULTS) == set()


def test_a_blocked_pair_is_named_in_the_round_its_rotation_reaches_it_at_1000_nodes() -> None:
    assert two_rounds() >= expected_findings(C, PAIR_FAULTS)


def test_bridge_netfilter_is_named_in_two_rounds_at_1000_nodes() -> None:
    """Each agent probes its node's service-local Service three times a round (the
    schedule's ``local_service_min``: no fan-in, its backend is the agent's own node), so
    two rounds hold the rule's six samples at any cluster size."""
    assert two_rounds() >= expected_findings(C, SHARED_TARGET_FAULTS[:1])


@pytest.mark.xfail(
    strict=True,
    reason=(
        "snat-asymmetric reads a node's probes of the outside targets (external, DNS). "
        "--shared-budget gives a shared target 20 probes/s from all agents together: over 2,000 "
        "agents each reaches it about once every 100 s (10 rounds), so two rounds hold no or one "
        "probe of it from the faulty node, under the rule's minimum of 6; it is not named (the goal "
        "is two rounds). Focused probes answer it in a few rounds (bench/detect_at_scale.py)."
    ),
)
def test_snat_asymmetric_is_named_in_two_rounds_at_1000_nodes() -> None:
    assert two_rounds() >= expected_findings(C, SHARED_TARGET_FAULTS[1:])


def test_a_node_that_died_a_round_ago_reads_as_a_star_of_blocked_pairs_that_is_never_shown() -> None:
    """At k = 23 each peer probes a node once every 44 rounds: 12 s after a node dies, its cells
    probed since fail every probe and the rest succeeded before, so a pass reads blocked
    pairs around it (the recent tail too). Confirmation holds such a star as a catch-all;
    a pass 18 s later names the node and the star is never shown."""
    dead = N[10]
    pol = ConfirmPolicy.of(recent_s=20.0, round_s=10.0, bucket_s=5.0, window_s=60.0)
    confirmation = Confirmation(pol)
    shown = []
    for at, died_s_ago in ((0.0, 12.0), (18.0, 30.0)):
        fault = Fault(kind="node-unreachable", nodes=(dead,), start_s=60.0 - died_s_ago)
        ev = evidence(DENSE, rounds=6, faults=[fault], seed=5, recent_rounds=2)
        found = diagnose_window(ev)
        assert ev.recent is not None
        recent = stream_stats(ev.recent)
        if at == 0.0:
            [star] = [f for f, _ in found if f.kind == FindingKind.PAIR_BLOCKED]
            assert len(star.pairs) >= STAR_PAIRS
            assert all(dead in pair for pair in star.pairs)
            confirmation.step(at - 5.0, [], recent, DiagnosisPolicy())  # the history began before
        shown.append(named(f for f, _ in confirmation.step(at, found, recent, DiagnosisPolicy())))
    assert shown == [set(), {("node-unreachable", frozenset({dead}))}]


@pytest.mark.parametrize(("cluster", "unsettled"), [(DENSE, False), (C, True)], ids=["k=23", "k=3"])
def test_a_blocked_pair_from_one_visit_is_unsettled_only_where_a_node_gets_few_visits_a_pass(
    cluster: Cluster, unsettled: bool
) -> None:
    """At k = 23 a node gets ~12 visits in a pass's 5 s: a node fault's onset reads as a
    star, and a single blocked pair is shown at once; at k = 3 it gets ~1.5, and the
    pair is held back (``Footprint.unsettled``)."""
    n = cluster.nodes
    fault = Fault(kind="pair-blocked", nodes=(n[800], cluster.reached(n[800], 1)))
    found = diagnose_window(evidence(cluster, rounds=2, faults=[fault], seed=3))
    assert [(f.kind, set(f.nodes), fp.unsettled) for f, fp in found] == [
        (FindingKind.PAIR_BLOCKED, set(fault.nodes), unsettled)
    ]


def test_a_dying_node_is_no_blocked_pair_where_the_schedule_visits_a_pair_once_in_333_rounds() -> None:
    """The collector's passes (every 5 s, confirmed) over a node that stops accepting
    connections and, from the same moment, a pair blocked whose rotation comes round a
    round later. The first peer to probe the dead node after it died reads as a blocked
    pair (and the next as a pair more); each is named from one visit, as the real pair
    is: both are held back, the node is named once its other peers have probed it, and
    the real pair is shown when its hold is over, 2 to 3 rounds after its visit."""
    assert C.k == 3
    n = C.nodes
    onset = 80.0
    pair = (n[800], C.reached(n[800], 9))
    faults = [
        Fault(kind="node-unreachable", nodes=(n[7],), start_s=onset, end_s=onset + 120.0),
        Fault(kind="pair-blocked", nodes=pair, start_s=onset, end_s=onset + 120.0),
    ]
    gen = simulate(C, duration_s=onset + 40.0, faults=faults, seed=1)
    replay = Replay(
        gen.records, schedule=PassSchedule(), nodes=gen.nodes, topology=gen.topology, stops=gen.stops
    )
    dead = ("node-unreachable", frozenset({n[7]}))
    blocked = ("pair-blocked", frozenset(pair))
    shown = {t: named(replay.at(START_TS + onset + t)) for t in (-17.5, -12.5, -7.5, -2.5, 2.5, 7.5, 12.5,
                                                                  17.5, 22.5, 27.5, 32.5, 37.5)}  # fmt: skip
    assert {t: s for t, s in shown.items() if s} == {
        **{t: {dead} for t in (12.5, 17.5, 22.5, 27.5, 32.5)},
        37.5: {dead, blocked},
    }


def test_a_lossy_node_among_a_hairpins_clients_is_shown_beside_it_at_1000_nodes() -> None:
    """A hairpin NLB names every node (its clients). Six rounds with the NLB at its
    production fan-in and one node losing 5% of its packets: both are named, and
    confirmed over passes both are shown, not the loss held back at the hairpin's place
    (the lossy node's own NLB probes are in both footprints, a few of its streams). The
    loss is settled by its node's retransmits, so it is shown from the first pass."""
    lossy = N[40]
    faults = [Fault(kind="packet-loss", nodes=(lossy,), rate=0.05), Fault(kind="nlb-hairpin")]
    ev = evidence(C, rounds=6, faults=faults, seed=1, recent_rounds=2)
    found = diagnose_window(ev)
    assert named([f for f, _ in found]) == expected_findings(C, faults)
    assert ev.recent is not None
    recent = stream_stats(ev.recent)
    confirmation = Confirmation(ConfirmPolicy.of(recent_s=20.0, round_s=10.0, bucket_s=5.0, window_s=60.0))
    confirmation.step(-5.0, [], recent, DiagnosisPolicy())
    shown = [confirmation.step(5.0 * i, found, recent, DiagnosisPolicy()) for i in range(8)]
    assert named([f for f, _ in shown[-1]]) == expected_findings(C, faults)
    assert [fp.settled for f, fp in found if f.kind == FindingKind.PACKET_LOSS] == [True]
    assert named([f for f, _ in shown[0]]) == expected_findings(C, faults)


def test_a_5tuple_collision_is_named_from_its_resets_and_the_groups_never_on_one_node_at_1000_nodes() -> None:
    """Every agent sends its NLB's same-source-port group every fourth round (the NLB's
    stride 2, ``collision_every`` 2): ~500 groups a round, of which 1 in ~330 lands two
    probes on one node (three zone addresses, 1,000 nodes behind each). Six rounds hold
    ~9 such groups, each reset, and none that succeeded; single probes reset about 1 in
    25,000, under the background failure rate that floored the reset test before (its
    ~18 expected resets hid the collision's few)."""
    fault = Fault(kind="nlb-5tuple-collision")
    found = diagnose(evidence(C, rounds=6, faults=[fault], seed=5))
    assert named(found) == expected_findings(C, [fault])
    [f] = found
    assert "a probe reset or refused" in f.evidence
