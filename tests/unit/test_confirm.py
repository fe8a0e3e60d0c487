"""Confirmed findings, pass by pass, on synthetic results at the production schedule.

Each timeline is replayed as the collector makes its passes (every 5 s, 60 s window,
its last 20 s recent and 15 s latest, the long window every 10 s), and every pass's
shown findings are checked: only the faults' own findings, each within its goal of
rounds after the fault began, shown without a gap while it lasts, and gone within
two rounds after it ended; nothing else, ever (no catch-all before the right one,
none after, none from an old fault's residue when a new one comes within a minute).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import pytest

from prober.diagnose import DiagnosisPolicy, diagnose_window
from prober.diagnose.confirm import PROVISIONAL, Confirmation, ConfirmPolicy
from prober.diagnose.context import Footprint, StreamKey
from prober.diagnose.recency import stream_stats
from prober.model import PATH_INDEX, Finding, FindingKind
from prober.report import PassSchedule, Replay
from prober.stats import PairTable
from tests.synth import START_TS, Cluster, Fault, evidence, expected_findings, simulate

C = Cluster(n_nodes=5)
N = C.nodes
ROUND = C.interval_s
#: Rounds to detect, the goal per kind.
GOAL_ROUNDS = {"nlb-hairpin": 3, "nlb-5tuple-collision": 6}
#: Rounds after the fault ended within which its finding is gone.
CLEAR_ROUNDS = 2
SPAN_S = 330.0


Shown = dict[tuple[str, frozenset[str]], float | None]


def _timeline(faults: Sequence[Fault], *, cluster: Cluster = C, seed: int = 3) -> list[tuple[float, Shown]]:
    """(seconds into the span, what the pass shows: (kind, nodes) -> ``since``, in seconds
    into the span) for every pass once the window is full."""
    gen = simulate(cluster, duration_s=SPAN_S, faults=faults, seed=seed)
    replay = Replay(
        gen.records, schedule=PassSchedule(), nodes=gen.nodes, topology=gen.topology, stops=gen.stops
    )
    out = []
    for k in range(math.floor(SPAN_S / 5) + 1):
        t = 5.0 * k
        shown = replay.at(START_TS + t)
        if t >= 60.0:
            out.append((
                t,
                {(f.kind.value, frozenset(f.nodes)): None if f.since is None else f.since - START_TS
                 for f in shown},
            ))  # fmt: skip
    return out


TWO_IN_A_ROW = [
    pytest.param(
        (
            Fault(kind="pair-blocked", nodes=(N[0], N[1]), start_s=70, end_s=150),
            Fault(kind="node-unreachable", nodes=(N[2],), start_s=180, end_s=260),
        ),
        id="pair-blocked-then-node-unreachable",
    ),
    pytest.param(
        (
            Fault(kind="bridge-netfilter", nodes=(N[1],), start_s=70, end_s=150),
            Fault(kind="snat-asymmetric", nodes=(N[2],), start_s=180, end_s=260),
        ),
        id="bridge-netfilter-then-snat-asymmetric",
    ),
    pytest.param(
        (
            Fault(kind="node-isolated", nodes=(N[2],), start_s=70, end_s=150),
            Fault(kind="nlb-hairpin", start_s=180, end_s=260),
        ),
        id="node-isolated-then-nlb-hairpin",
    ),
]


@pytest.mark.parametrize("faults", TWO_IN_A_ROW)
def test_two_faults_in_a_row_show_their_findings_and_nothing_else(faults: tuple[Fault, ...]) -> None:
    timeline = _timeline(faults)
    expected = {f: next(iter(expected_findings(C, [f]))) for f in faults}
    for t, shown in timeline:
        allowed = {expected[f] for f in faults if f.start_s <= t <= f.end_s + CLEAR_ROUNDS * ROUND}
        assert set(shown) <= allowed, f"at {t:g} s: shown {sorted(shown)}, only {sorted(allowed)} may be"
    for f in faults:
        on = [t for t, shown in timeline if expected[f] in shown]
        assert on, f"{f.kind} never shown"
        goal = GOAL_ROUNDS.get(f.kind, 2) * ROUND
        assert on[0] - f.start_s <= goal, f"{f.kind} shown {on[0] - f.start_s:g} s after it began"
        # Shown at every pass from then until the fault ended: no flicker.
        gaps = [t for t, shown in timeline if on[0] <= t <= f.end_s and expected[f] not in shown]
        assert not gaps, f"{f.kind} not shown at {gaps} while on"
        late = on[-1] - f.end_s
        assert late <= CLEAR_ROUNDS * ROUND, f"{f.kind} shown {late:g} s after it ended"
        # Each pass says since when it has been shown: the first pass that showed it.
        assert {shown[expected[f]] for t, shown in timeline if expected[f] in shown} == {on[0]}


def test_a_lossy_node_whose_handshakes_retry_through_is_named_without_the_hold() -> None:
    """packet-loss is a catch-all, but a node whose probes succeed after SYN retransmits
    loses packets (a fault that drops every packet lets no retry through): it is shown
    from the first pass that names it, within a round, and kept while the loss lasts."""
    lossy = Fault(kind="packet-loss", nodes=(N[3],), rate=0.2, start_s=70)
    timeline = _timeline([lossy])
    want = ("packet-loss", frozenset({N[3]}))
    on = [t for t, shown in timeline if want in shown]
    assert on, "packet-loss never shown"
    assert on[0] - lossy.start_s < ConfirmPolicy().hold_s
    assert on[0] - lossy.start_s <= ROUND
    assert all(set(shown) == {want} for t, shown in timeline if t >= on[0])
    assert all(not shown for t, shown in timeline if t < on[0])


THREE = Cluster(n_nodes=3)


@pytest.mark.parametrize(("node", "rate", "seed"), [(2, 0.1, 2), (2, 0.1, 1), (0, 0.2, 1), (0, 0.2, 4)])
def test_a_lossy_node_of_three_is_loss_and_never_cross_wired(node: int, rate: float, seed: int) -> None:
    """A lossy node loses a lone DNS datagram where a TCP handshake retries through, so its
    few queries from one side can all fail while the other side's get through (4/4 failed
    against 0/3 in a 15 s tail where no peer probe failed): against the node's peer failure
    rate that read as cross-wired. The node's own rate for a datagram target is the share of its peer
    probes that lost their first exchange, which their SYN retransmits show. At 3 nodes, as
    in the lab, every pass shows the loss alone."""
    lossy = Fault(kind="packet-loss", nodes=(THREE.nodes[node],), rate=rate, start_s=70)
    timeline = _timeline([lossy], cluster=THREE, seed=seed)
    want = ("packet-loss", frozenset(lossy.nodes))
    wrong = {t: sorted(shown) for t, shown in timeline if set(shown) - {want}}
    assert not wrong, f"shown beside the loss: {wrong}"
    on = [t for t, shown in timeline if want in shown]
    assert on, "packet-loss never shown"
    assert on[0] - lossy.start_s <= 2 * ROUND


@pytest.mark.parametrize("rate", [0.1, 0.2])
def test_a_loss_that_ended_clears_and_its_residue_is_not_shown_again(rate: float) -> None:
    """Once a loss is over, its retransmits stay in the window for a minute: a pass that
    names the node again from them is the loss's residue, held as any catch-all (and
    shown only while the recent probes support it), not a settled loss shown anew."""
    lossy = Fault(kind="packet-loss", nodes=(N[3],), rate=rate, start_s=70, end_s=150)
    timeline = _timeline([lossy])
    want = ("packet-loss", frozenset({N[3]}))
    on = [t for t, shown in timeline if want in shown]
    assert on, "packet-loss never shown"
    assert on[0] - lossy.start_s <= ROUND
    assert all(set(shown) <= {want} for _, shown in timeline)
    late = [t for t in on if t > lossy.end_s + CLEAR_ROUNDS * ROUND]
    assert not late, f"shown at {late}, the loss ended at {lossy.end_s:g}"
    assert not [t for t, shown in timeline if on[0] <= t <= lossy.end_s and want not in shown]


def test_a_catch_all_is_held_unless_settled_and_a_settled_one_too_at_a_recent_findings_place() -> None:
    """A settled catch-all (its node's handshakes retry through) is shown from the pass
    that names it; one that is not waits ``hold_s``; a settled one at the place of a
    finding shown within ``memory_s`` (here a specific one) waits too: the probes in
    flight when a fault ends retry through it."""
    pol = ConfirmPolicy.of(recent_s=20.0, round_s=10.0, bucket_s=5.0, window_s=60.0)
    diag = DiagnosisPolicy()
    a = N[3]
    f, fp = _lossy(a)
    settled = (f, replace(fp, settled=True))
    assert (pol.hold_for(fp), pol.hold_for(settled[1]), pol.hold_for(settled[1], residue=True)) == (
        pol.hold_s,
        0.0,
        pol.hold_s,
    )
    for found, shown in (((f, fp), []), (settled, [("packet-loss", [a])])):
        c = Confirmation(pol)
        c.step(95.0, [], None, diag)  # a history: what comes next is an onset
        assert shown_as(c.step(100.0, [found], None, diag)) == shown
    # Loss at a node whose node-unreachable was shown a pass ago (as a fault's end retries
    # through): the pass's own packet-loss, settled, with recent probes that support it.
    lossy = Fault(kind="packet-loss", nodes=(a,), rate=0.2)
    ev = evidence(C, rounds=6, faults=[lossy], seed=3, recent_rounds=2)
    [(loss, loss_fp)] = diagnose_window(ev)
    assert loss.kind == FindingKind.PACKET_LOSS
    assert loss_fp.settled
    assert ev.recent is not None
    recent = stream_stats(ev.recent)
    ended = Confirmation(pol)
    ended.step(95.0, [], recent, diag)
    assert shown_as(ended.step(100.0, [_dead(a)], recent, diag)) == [("node-unreachable", [a])]
    after = [shown_as(ended.step(105.0 + 5 * i, [(loss, loss_fp)], recent, diag)) for i in range(5)]
    # node-unreachable kept for its grace; packet-loss held as any catch-all, then shown.
    assert after == [[("node-unreachable", [a])]] * 2 + [[]] * 2 + [[("packet-loss", [a])]]


def test_the_catch_alls_are_packet_loss_and_unexplained() -> None:
    assert {FindingKind.PACKET_LOSS, FindingKind.UNEXPLAINED} == PROVISIONAL


def test_the_replayed_schedule_is_the_collectors() -> None:
    from prober.collector.settings import CollectorSettings

    assert CollectorSettings(inventory="inventory.yaml").passes() == PassSchedule()


#: Onsets inside the collector's 5 s buckets (seconds into the span): just after a
#: boundary (the latest onset to shed), mid-bucket, and just before one.
ONSETS = (71.0, 75.5, 78.0)


#: The nodes each kind's fault takes.
FAULT_NODES: dict[str, tuple[str, ...]] = {"pair-blocked": (N[0], N[1]), "nlb-hairpin": ()}


def _first_named(cluster: Cluster, fault: Fault, want: tuple[str, frozenset[str]]) -> float:
    """Seconds from the fault's onset to the first pass that shows ``want``, passing at the
    collector's phase (2.5 s past each 5 s bucket boundary) for 38 s; every pass before
    it shows nothing of another kind, and from it on every pass shows exactly ``want``."""
    onset = fault.start_s
    gen = simulate(cluster, duration_s=onset + 40.0, faults=[fault], seed=3)
    replay = Replay(
        gen.records, schedule=PassSchedule(), nodes=gen.nodes, topology=gen.topology, stops=gen.stops
    )
    first: float | None = None
    for k in range(math.floor((onset + 38.0) / 5.0)):
        t = 5.0 * k + 2.5
        shown = {(f.kind.value, frozenset(f.nodes)) for f in replay.at(START_TS + t)}
        first = t - onset if first is None and want in shown else first
        if first is not None:
            assert shown == {want}, f"at {t:g} s ({t - onset:+.1f} s): shown {sorted(shown)}"
        else:
            kinds = {kind for kind, _ in shown}
            assert kinds <= {want[0]}, f"at {t:g} s ({t - onset:+.1f} s): shown {sorted(kinds)}"
    if first is None:
        pytest.fail(f"{want[0]} not named within 38 s")
    return first


@pytest.mark.parametrize("onset", ONSETS)
@pytest.mark.parametrize(
    "kind",
    ["node-unreachable", "node-isolated", "pair-blocked", "bridge-netfilter", "snat-asymmetric",
     "pod-network-isolated", "nlb-hairpin"],
)  # fmt: skip
def test_a_fault_is_named_within_its_goal_from_any_onset_and_nothing_else_first(
    kind: str, onset: float
) -> None:
    """The latest tail sheds the onset within a round and a bucket, the recent one a bucket
    later, and until then no other kind is shown (a node's onset is not a blocked pair)."""
    fault = Fault(kind=kind, nodes=FAULT_NODES.get(kind, (N[2],)), start_s=onset, end_s=onset + 60.0)
    want = next(iter(expected_findings(C, [fault])))
    assert _first_named(C, fault, want) <= GOAL_ROUNDS.get(kind, 2) * ROUND


@pytest.mark.parametrize("onset", [*ONSETS, 73.0])
def test_a_zone_partition_is_named_from_any_onset_and_nothing_else_first(onset: float) -> None:
    """At a partition's onset some crossing pairs have only failed yet, and the zones' other
    crossing cells fail in part: not blocked pairs, not a degraded zone."""
    fault = Fault(kind="zone-partition", zones=(0, 1), start_s=onset, end_s=onset + 60.0)
    assert _first_named(Cluster(n_nodes=12), fault, ("zone-partition", frozenset())) <= 2 * ROUND


@pytest.mark.parametrize("onset", ONSETS)
def test_a_degraded_zone_is_named_from_any_onset_and_its_lossy_nodes_never_first(onset: float) -> None:
    """Its nodes lose packets and retry through, so a node of it named packet-loss would
    be settled (shown without the hold): the zone's finding, on the zone's pooled probes,
    comes first, and none of its nodes is shown before it or beside it."""
    cluster = Cluster(n_nodes=12)
    fault = Fault(kind="zone-degraded", zones=(0,), rate=0.1, start_s=onset, end_s=onset + 60.0)
    want = next(iter(expected_findings(cluster, [fault])))
    assert _first_named(cluster, fault, want) <= 2 * ROUND


def test_a_cluster_wide_finding_is_one_finding_from_pass_to_pass() -> None:
    """An NLB collision names no node, and its footprint may hold no whole stream (it
    claims a few failed probes of many): each pass's collision continues the last one,
    never shown beside it."""

    def collision(evidence: str) -> tuple[Finding, Footprint]:
        f = Finding(
            kind=FindingKind.NLB_5TUPLE_COLLISION, severity="warning", nodes=[], pairs=[],
            paths=["pod-to-nlb"], confidence=1.0, evidence=evidence, remediation="",
        )  # fmt: skip
        return f, Footprint(streams=[], impaired=3.0, probes=3.0)

    c = Confirmation(ConfirmPolicy.of(recent_s=20.0, round_s=10.0, bucket_s=5.0, window_s=60.0))
    shown = [c.step(100.0 + 5 * i, [collision(f"pass {i}")], None, DiagnosisPolicy()) for i in range(4)]
    assert [[f.evidence for f, _ in s] for s in shown] == [["pass 0"], ["pass 1"], ["pass 2"], ["pass 3"]]
    assert {f.since for s in shown for f, _ in s} == {100.0}


def _blocked(*pairs: tuple[str, str]) -> tuple[Finding, Footprint]:
    f = Finding(
        kind=FindingKind.PAIR_BLOCKED, severity="critical", nodes=sorted({x for p in pairs for x in p}),
        pairs=list(pairs), paths=["pod-to-pod"], confidence=1.0, evidence="", remediation="",
    )  # fmt: skip
    return f, Footprint(streams=[], impaired=8.0 * len(pairs), probes=8.0 * len(pairs))


def _at_node(
    kind: FindingKind, node: str, *, impaired: float = 400.0, probes: float = 400.0
) -> tuple[Finding, Footprint]:
    f = Finding(
        kind=kind, severity="warning" if kind in PROVISIONAL else "critical", nodes=[node], pairs=[],
        paths=["pod-to-pod"], confidence=1.0, evidence="", remediation="",
    )  # fmt: skip
    return f, Footprint(streams=[], impaired=impaired, probes=probes)


def _dead(node: str) -> tuple[Finding, Footprint]:
    return _at_node(FindingKind.NODE_UNREACHABLE, node)


def _isolated(node: str) -> tuple[Finding, Footprint]:
    return _at_node(FindingKind.NODE_ISOLATED, node)


def _lossy(node: str) -> tuple[Finding, Footprint]:
    return _at_node(FindingKind.PACKET_LOSS, node, impaired=20.0, probes=200.0)


def test_a_pair_blocked_beside_a_catch_all_at_one_of_its_nodes_is_held_back() -> None:
    """In a node fault's first seconds a pass can read one blocked pair at the node (the
    cells probed since the onset) beside a catch-all naming the node (its other probes
    failing too): held back as a catch-all is, and the node's finding replaces it. Such a
    pair that holds is shown; a pair beside a catch-all elsewhere is shown at once."""
    pol = ConfirmPolicy.of(recent_s=20.0, round_s=10.0, bucket_s=5.0, window_s=60.0)
    a, b, c, d, _ = N
    diag = DiagnosisPolicy()

    onset = Confirmation(pol)
    onset.step(95.0, [], None, diag)
    assert onset.step(100.0, [_blocked((a, b)), _lossy(a)], None, diag) == []
    assert onset.step(105.0, [_blocked((a, b), (a, c)), _lossy(a)], None, diag) == []
    assert shown_as(onset.step(110.0, [_isolated(a)], None, diag)) == [("node-isolated", [a])]

    held = Confirmation(pol)
    held.step(95.0, [], None, diag)
    shown = [held.step(100.0 + 5 * i, [_blocked((a, b)), _lossy(a)], None, diag) for i in range(6)]
    blocked = [("pair-blocked", sorted((a, b)))]
    assert [shown_as(s) for s in shown] == [[], [], [], [], blocked, blocked]

    elsewhere = Confirmation(pol)
    elsewhere.step(95.0, [], None, diag)
    assert shown_as(elsewhere.step(100.0, [_blocked((a, b)), _lossy(d)], None, diag)) == blocked


def test_a_blocked_pair_of_a_lossy_node_shows_both_faults() -> None:
    """A pair blocked and one of its nodes losing 10% of its packets, both from 60 s in
    (12 nodes: every pair probed every round). The loss is settled (the node's handshakes
    retry through, which no blocked pair gives) and shown from the first pass on; the pair,
    unsettled beside it (its node's other probes fail too), is held, then shown beside the
    loss. Before, the pair shown hid the loss at its node for as long as both lasted."""
    cluster = Cluster(n_nodes=12)
    n = cluster.nodes
    onset = 60.0
    faults = [
        Fault(kind="pair-blocked", nodes=(n[2], n[7]), start_s=onset),
        Fault(kind="packet-loss", nodes=(n[2],), rate=0.1, start_s=onset),
    ]
    gen = simulate(cluster, duration_s=onset + 120.0, faults=faults, seed=1)
    replay = Replay(
        gen.records, schedule=PassSchedule(), nodes=gen.nodes, topology=gen.topology, stops=gen.stops
    )
    loss = ("packet-loss", frozenset({n[2]}))
    pair = ("pair-blocked", frozenset({n[2], n[7]}))
    shown = {
        t: {(f.kind.value, frozenset(f.nodes)) for f in replay.at(START_TS + onset + t)}
        for t in (7.5, 17.5, 27.5, 37.5, 57.5, 87.5, 117.5)
    }
    assert shown == {
        7.5: {loss},
        17.5: {loss},
        27.5: {loss},
        **{t: {loss, pair} for t in (37.5, 57.5, 87.5, 117.5)},
    }


def shown_as(found: Sequence[tuple[Finding, Footprint]]) -> list[tuple[str, list[str]]]:
    """(kind, nodes) of each finding a pass shows."""
    return [(f.kind.value, f.nodes) for f, _ in found]


def test_a_node_isolated_at_240_nodes_never_flashes_a_blocked_pair() -> None:
    """Synthetic passes at 240 nodes (k = 36): 6 s after a node is cut off, its cells probed
    since read as blocked pairs beside packet-loss at the node (in 8 of the first 12 seeds;
    this one is among them); nothing is shown then, and 20 s later the node's own finding
    is, alone."""
    cluster = Cluster(n_nodes=240)
    x = cluster.nodes[57]
    pol = ConfirmPolicy.of(recent_s=20.0, round_s=10.0, bucket_s=5.0, window_s=60.0)
    confirmation = Confirmation(pol)
    # The history began before (a pass with probes): the first pass shows what it names.
    confirmation.step(-5.0, [], stream_stats(PairTable.empty(cluster.nodes)), DiagnosisPolicy())
    shown = []
    for at, ago in ((0.0, 6.0), (20.0, 26.0)):
        fault = Fault(kind="node-isolated", nodes=(x,), start_s=60.0 - ago)
        ev = evidence(cluster, rounds=6, faults=[fault], seed=3, recent_rounds=2)
        found = diagnose_window(ev)
        if at == 0.0:
            assert sorted(f.kind.value for f, _ in found) == ["packet-loss", "pair-blocked"]
            assert all(x in f.nodes for f, _ in found)
        assert ev.recent is not None
        step = confirmation.step(at, found, stream_stats(ev.recent), DiagnosisPolicy())
        shown.append({(f.kind.value, tuple(f.nodes)) for f, _ in step})
    assert shown == [set(), {("node-isolated", (x,))}]


def test_a_lossy_node_among_a_hairpins_clients_is_shown_and_the_hairpins_residue_is_not() -> None:
    """A hairpin NLB names its clients, every node: that says nothing of their other
    paths, so packet-loss at one of them (its own NLB probes among its streams) is shown
    once held, as anywhere else; a catch-all on the hairpin's own probe streams is the
    hairpin, and is not shown."""
    pol = ConfirmPolicy.of(recent_s=20.0, round_s=10.0, bucket_s=5.0, window_s=60.0)
    a = N[0]
    nlb: StreamKey = (PATH_INDEX["pod-to-nlb"], 0, a, "nlb/prober-echo", "10.1.0.200")
    peers: StreamKey = (PATH_INDEX["pod-to-pod"], 0, N[1], f"pod/{a}", "")
    other: StreamKey = (PATH_INDEX["host-to-host"], 0, N[2], f"host/{a}", "")
    hairpin = Finding(
        kind=FindingKind.NLB_HAIRPIN, severity="critical", nodes=sorted(N), pairs=[], paths=["pod-to-nlb"],
        confidence=1.0, evidence="", remediation="",
    )  # fmt: skip
    pinned = (hairpin, Footprint(streams=[nlb], impaired=5.0, probes=5.0))
    lossy, _ = _lossy(a)
    found = [pinned, (lossy, Footprint(streams=[peers, nlb, other], impaired=20.0, probes=200.0))]
    residue = [pinned, (lossy, Footprint(streams=[nlb], impaired=20.0, probes=200.0))]
    for passes, named in ((found, ["nlb-hairpin", "packet-loss"]), (residue, ["nlb-hairpin"])):
        confirmation = Confirmation(pol)
        confirmation.step(95.0, [], None, DiagnosisPolicy())
        shown = [confirmation.step(100.0 + 5 * i, passes, None, DiagnosisPolicy()) for i in range(6)]
        assert sorted(f.kind.value for f, _ in shown[-1]) == named


def test_a_star_of_blocked_pairs_is_held_back_as_a_catch_all_and_a_lone_pair_is_not() -> None:
    """A node that died a round ago in a large cluster reads as blocked pairs around it (its
    cells probed since fail, the rest succeeded): held back for the hold, the node's own
    finding replaces it. A star that holds is shown; a pair or two is shown at once."""
    pol = ConfirmPolicy.of(recent_s=20.0, round_s=10.0, bucket_s=5.0, window_s=60.0)
    a, b, c, d, e = N
    star = _blocked((b, a), (c, a), (d, a))
    assert pol.hold_s == 20.0

    onset = Confirmation(pol)
    onset.step(95.0, [], None, DiagnosisPolicy())
    assert onset.step(100.0, [star], None, DiagnosisPolicy()) == []
    assert onset.step(105.0, [star], None, DiagnosisPolicy()) == []
    assert [f.kind for f, _ in onset.step(110.0, [_dead(a)], None, DiagnosisPolicy())] == ["node-unreachable"]
    assert [f.kind for f, _ in onset.step(115.0, [_dead(a)], None, DiagnosisPolicy())] == ["node-unreachable"]

    for held_star in (star, _blocked((b, a), (c, a), (d, a), (b, e))):  # the second: two onsets, peer b
        held = Confirmation(pol)
        held.step(95.0, [], None, DiagnosisPolicy())
        shown = [held.step(100.0 + 5 * i, [held_star], None, DiagnosisPolicy()) for i in range(6)]
        assert [len(s) for s in shown] == [0, 0, 0, 0, 1, 1]
        assert shown[-1][0][0].since == 120.0

    for few in (_blocked((b, a)), _blocked((b, a), (c, a)), _blocked((b, a), (c, d), (e, a))):
        lone = Confirmation(pol)
        lone.step(95.0, [], None, DiagnosisPolicy())
        assert [f.kind for f, _ in lone.step(100.0, [few], None, DiagnosisPolicy())] == ["pair-blocked"]

    first = Confirmation(pol)  # the first pass of a history: nothing says it is an onset
    recent = stream_stats(PairTable.empty(N))
    assert len(first.step(100.0, [star], recent, DiagnosisPolicy())) == 1
