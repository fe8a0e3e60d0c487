"""nlb-hairpin and nlb-5tuple-collision: the NLB's own failure modes, from served-by and source ports."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from dataclasses import replace

import msgspec
import numpy as np
import pytest

from prober.diagnose import DiagnosisPolicy, diagnose
from prober.diagnose.nlb_collision import _Chance, _Codes, _distinct_of
from prober.model import Finding, Outcome
from prober.report import evidence_from_records
from prober.stats import OK, NlbProbes
from tests.synth import Cluster, Fault, evidence, generate

C3 = Cluster(n_nodes=3)
C10 = Cluster(n_nodes=10)
HAIRPIN = Fault(kind="nlb-hairpin")
COLLISION = Fault(kind="nlb-5tuple-collision")


def kinds(findings: list[Finding]) -> list[str]:
    return [f.kind for f in findings]


# ---- nlb-hairpin ---------------------------------------------------------------------


def test_hairpin_names_every_client_node_on_pod_and_host_paths() -> None:
    [f] = diagnose(evidence(C10, rounds=4, faults=[HAIRPIN], seed=1))
    assert (f.kind, f.nodes, f.severity) == ("nlb-hairpin", list(C10.nodes), "critical")
    assert f.pairs == [(x, x) for x in C10.nodes]
    assert f.paths == ["host-to-nlb", "pod-to-nlb"]
    assert "0 of" in f.evidence
    assert "successes served by the client's own node (expected ~" in f.evidence
    assert "preserve_client_ip.enabled" in f.remediation


def test_hairpin_in_three_nodes_within_one_round() -> None:
    found = diagnose(evidence(C3, rounds=1, faults=[HAIRPIN], seed=2))
    assert kinds(found) == ["nlb-hairpin"]


def test_hairpin_failures_are_not_also_loss_or_unexplained() -> None:
    found = diagnose(evidence(C10, rounds=20, faults=[HAIRPIN], seed=3))
    assert kinds(found) == ["nlb-hairpin"]


def test_hairpin_stays_silent_below_min_samples() -> None:
    ev = evidence(C3, rounds=1, faults=[HAIRPIN], seed=4)
    assert diagnose(ev, policy=DiagnosisPolicy(min_samples=200)) == []


def test_nlb_failing_at_the_self_share_but_serving_self_is_not_hairpin() -> None:
    # An unreachable node fails every client's NLB probes at about 1/N as well, but
    # the clients' own nodes keep serving their successes.
    x = C10.nodes[4]
    found = diagnose(evidence(C10, rounds=6, faults=[Fault(kind="node-unreachable", nodes=(x,))], seed=5))
    assert kinds(found) == ["node-unreachable"]


@pytest.mark.parametrize(
    ("seed", "ended_before_s"),
    [
        pytest.param(1, 4, id="ended-4s-before"),
        pytest.param(3, 3, id="ended-3s-before"),
        pytest.param(4, 2, id="ended-2s-before"),
        pytest.param(2, 5, id="ended-5s-before"),
        pytest.param(5, 5, id="ended-5s-before-again"),
    ],
)
def test_hairpin_that_ended_inside_the_window_names_its_clients(seed: int, ended_before_s: int) -> None:
    # Once the fault is over, every client gets a few self-served successes: each one
    # still has far fewer than expected, so it is still a hairpinned client. Never a
    # finding without nodes, never an unexplained beside it.
    fault = Fault(kind="nlb-hairpin", end_s=60.0 - ended_before_s)
    [f] = diagnose(evidence(C3, rounds=6, faults=[fault], seed=seed))
    assert (f.kind, f.nodes) == ("nlb-hairpin", list(C3.nodes))


def test_hairpin_with_zone_restricted_nlb() -> None:
    no_cross = replace(C10, cross_zone=False)
    [f] = diagnose(evidence(no_cross, rounds=6, faults=[HAIRPIN], seed=7))
    assert (f.kind, f.nodes) == ("nlb-hairpin", list(C10.nodes))


def test_zone_restricted_nlb_without_hairpin_is_clean() -> None:
    no_cross = replace(C10, cross_zone=False)
    assert diagnose(evidence(no_cross, rounds=12, seed=8)) == []


# ---- nlb-5tuple-collision ------------------------------------------------------------


def test_collision_is_one_finding_without_nodes() -> None:
    [f] = diagnose(evidence(C10, rounds=12, faults=[COLLISION], seed=10))
    assert (f.kind, f.nodes, f.pairs, f.severity) == ("nlb-5tuple-collision", [], [], "warning")
    assert "same-source-port NLB probe groups" in f.evidence
    assert "groups that all succeeded at once had two probes land on one target node (expected" in f.evidence
    assert "cross_zone" in f.remediation


def test_collision_that_a_syn_retransmit_survives_is_named() -> None:
    # With a probe timeout over a second, the colliding connection completes on its
    # SYN retransmit once the other flow is gone: every probe succeeds, one of each
    # same-target pair a second late.
    retransmit = Fault(kind="nlb-5tuple-collision", variant="retransmit")
    [f] = diagnose(evidence(C10, rounds=12, faults=[retransmit], seed=9))
    assert f.kind == "nlb-5tuple-collision"
    assert "had a failed or SYN-retransmitted probe" in f.evidence


def test_collision_next_to_hairpin() -> None:
    found = diagnose(evidence(C10, rounds=30, faults=[COLLISION, HAIRPIN], seed=10))
    assert kinds(found) == ["nlb-hairpin", "nlb-5tuple-collision"]


def test_collision_stays_silent_below_min_samples() -> None:
    ev = evidence(C10, rounds=12, faults=[COLLISION], seed=11)
    # The collisions' failures stay, as a residue no rule named.
    assert kinds(diagnose(ev, policy=DiagnosisPolicy(min_samples=500))) == ["unexplained"]


def test_collision_needs_the_individual_probes() -> None:
    ev = evidence(C10, rounds=12, faults=[COLLISION], seed=12)
    assert "nlb-5tuple-collision" not in kinds(diagnose(replace(ev, nlb_probes=None)))


def test_pairs_failing_with_a_dead_node_are_not_collisions() -> None:
    # A dead node fails every pair routed to it, paired or not: no excess in pairs.
    x = C10.nodes[2]
    found = diagnose(evidence(C10, rounds=30, faults=[Fault(kind="node-isolated", nodes=(x,))], seed=13))
    assert kinds(found) == ["node-isolated"]


def test_clean_nlb_has_no_collision() -> None:
    assert diagnose(evidence(C10, rounds=40, seed=14)) == []


@pytest.mark.parametrize("n", [3, 10])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_collision_that_began_inside_the_window_is_named(n: int, seed: int) -> None:
    """The window's first half holds groups that landed on one node with both probes
    fine (no collision yet): the rule tests the groups sent after the last of those.
    Before, the pre-fault groups vetoed it for the whole window and its failures
    showed as unexplained."""
    c = Cluster(n_nodes=n)
    ev = evidence(c, rounds=30, faults=[COLLISION], fault_rounds=(15, 30), seed=seed)
    assert [(f.kind, f.nodes) for f in diagnose(ev)] == [("nlb-5tuple-collision", [])]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_the_chance_that_a_groups_picks_all_differ_is_exact(k: int) -> None:
    """The set-partition sum equals counting every way the group's picks can fall, with
    each address's own (uneven) serving-node shares."""
    nodes = ["a", "b", "c", "d"]
    dists = [Counter({x: 1 + (i * 3 + j * 5) % 7 for j, x in enumerate(nodes)}) for i in range(k)]
    want = 0.0
    for picks in itertools.product(nodes, repeat=k):
        if len(set(picks)) == k:
            want += math.prod(d[x] / d.total() for d, x in zip(dists, picks, strict=True))
    chances = np.array([[d[x] / d.total() for x in nodes] for d in dists])
    assert _distinct_of(chances) == pytest.approx(want, abs=1e-12)


def _landing(nb: NlbProbes, ok: np.ndarray, ip: str, src: str | None = None) -> Counter[str]:
    return Counter(
        d
        for k, d in enumerate(nb.dst_node)
        if ok[k] and d is not None and nb.target_ip[k] == ip and src in (None, nb.src_node[k])
    )


def _same(a: Counter[str], b: Counter[str]) -> float:
    return sum(a[x] / a.total() * b[x] / b.total() for x in a)


def test_an_all_successful_groups_same_node_chance_comes_from_its_own_nodes_successes() -> None:
    """A client that hairpins never lands on its own node, so its successful picks spread
    over the other nodes: on three nodes two of them are the same 1 time in 2, not 1 in 3
    as over every client's successes. A node with under 8 successes of an address has
    every node's spread instead."""
    cluster = Cluster(n_nodes=3, zones=2)
    ev = evidence(cluster, rounds=6, faults=[HAIRPIN], seed=2)
    nb = ev.nlb_probes
    assert nb is not None
    ok = nb.outcome == OK
    ips = tuple(sorted({ip for ip in nb.target_ip if ip}))
    assert len(ips) == 2
    chance = _Chance(nb, _Codes.of(nb, nb.dst_node), ok)
    for src in cluster.nodes:
        own = [_landing(nb, ok, ip, src) for ip in ips]
        assert all(src not in d and d.total() >= 8 for d in own)
        assert chance(src, ips) == pytest.approx(_same(*own), abs=1e-12)
        assert chance(src, ips) > 0.4
    # The first node keeps three successes of each address: too few, every node's spread.
    first = cluster.nodes[0]
    mine = np.array([s == first for s in nb.src_node])
    keep = ok & ~mine
    for ip in ips:
        keep[np.flatnonzero(ok & mine & np.array([t == ip for t in nb.target_ip]))[:3]] = True
    chance = _Chance(nb, _Codes.of(nb, nb.dst_node), keep)
    pooled = _same(*(_landing(nb, keep, ip) for ip in ips))
    assert chance(first, ips) == pytest.approx(pooled, abs=1e-12)
    assert chance(first, ips) < 0.4


def test_past_64_landing_nodes_every_nodes_spread_serves_each_source() -> None:
    """At 80 nodes a source's few successes of an address say less of where its picks
    fall than every node's do (one node fewer moves the chance by about 1 in 80): the
    chance is every node's for each source, however many successes it has."""
    cluster = Cluster(n_nodes=80)
    nb = evidence(cluster, rounds=12, seed=2).nlb_probes
    assert nb is not None
    ok = nb.outcome == OK
    ips = tuple(sorted({ip for ip in nb.target_ip if ip}))
    assert len(ips) == 3
    chance = _Chance(nb, _Codes.of(nb, nb.dst_node), ok)
    spreads = [_landing(nb, ok, ip) for ip in ips]
    # 1 - P(three picks all differ), by inclusion and exclusion over the pairs
    pairs = sum(_same(a, b) for a, b in itertools.combinations(spreads, 2))
    triple = sum(math.prod(d[x] / d.total() for d in spreads) for x in spreads[0])
    for src in cluster.nodes[:5]:
        assert all(_landing(nb, ok, ip, src).total() >= 8 for ip in ips)
        assert chance(src, ips) == pytest.approx(pairs - 2 * triple, abs=1e-12)


@pytest.mark.parametrize("traffic_policy", ["Local", "Cluster"])
def test_a_collision_beside_a_hairpin_is_named_from_its_resets(traffic_policy: str) -> None:
    """Three nodes in two zones, every client hairpinning (a third of its NLB probes time
    out) and colliding: the excess of failed groups over single probes is small beside
    the hairpin's failures, but the collisions' resets stand alone (single probes never
    reset). Named within four rounds for every seed, from the resets."""
    cluster = Cluster(n_nodes=3, zones=2, external_traffic_policy=traffic_policy)
    for seed in range(5):
        found = diagnose(evidence(cluster, rounds=4, faults=[COLLISION, HAIRPIN], seed=seed))
        want = [("nlb-hairpin", sorted(cluster.nodes)), ("nlb-5tuple-collision", [])]
        assert [(f.kind, f.nodes) for f in found] == want, seed
        assert "a probe reset or refused (~0 expected: 0/" in found[1].evidence


def test_resets_that_single_probes_share_are_no_collision() -> None:
    """An NLB that resets one connection in 20 whatever its source port (a flaky
    listener): grouped probes reset no more often than single ones, so the resets are
    no collision."""
    c = Cluster(n_nodes=10)
    records = generate(c, rounds=20, seed=15)
    rng = random.Random(15)
    flaky = [
        msgspec.structs.replace(r, outcome=Outcome.RESET, latency_s=None, dst_node=None, seen_src_ip=None)
        if r.path.endswith("-to-nlb") and rng.random() < 0.05
        else r
        for r in records
    ]
    assert sum(r.outcome is Outcome.RESET for r in flaky) > 100
    ev = evidence_from_records(flaky, topology=c.topology(), nodes=c.nodes)
    # No rule names a flaky listener: its resets are a residue with no place.
    assert [(f.kind, f.nodes) for f in diagnose(ev)] == [("unexplained", [])]


@pytest.mark.parametrize("traffic_policy", ["Local", "Cluster"])
def test_a_collision_that_ends_in_a_syn_retransmit_is_named_from_where_the_late_groups_landed(
    traffic_policy: str,
) -> None:
    """With the production timeout a colliding connection completes on its SYN
    retransmit, a second late: of the groups whose probes all succeeded, those with two
    on one node are late and those spread over nodes are not. Beside a hairpin in three
    nodes that reading names the collision within four rounds for every seed."""
    cluster = Cluster(n_nodes=3, zones=2, external_traffic_policy=traffic_policy)
    retransmit = Fault(kind="nlb-5tuple-collision", variant="retransmit")
    for seed in range(5):
        found = diagnose(evidence(cluster, rounds=4, faults=[retransmit, HAIRPIN], seed=seed))
        want = [("nlb-hairpin", sorted(cluster.nodes)), ("nlb-5tuple-collision", [])]
        assert [(f.kind, f.nodes) for f in found] == want, seed
        assert "had one late (a SYN retransmit; ~0 expected from the single probes that" in found[1].evidence


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_syn_loss_at_one_node_makes_no_group_late_for_where_it_landed(seed: int) -> None:
    """A node that drops a SYN in three: the NLB probes it serves complete on a retransmit
    whichever way the group landed (a group on that node twice is late more often than
    one that reached it once, a group that never reached it less), so the late groups
    are no collision."""
    cluster = Cluster(n_nodes=3, zones=2)
    lossy = Fault(kind="packet-loss", nodes=(cluster.nodes[1],), rate=0.3)
    found = diagnose(evidence(cluster, rounds=12, faults=[lossy], seed=seed))
    assert [(f.kind, f.nodes) for f in found] == [("packet-loss", [cluster.nodes[1]])]
