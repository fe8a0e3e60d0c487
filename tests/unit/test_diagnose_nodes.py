"""node-isolated, node-unreachable, pair-blocked: a dead column, row and column, or cell of the matrix."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from prober.diagnose import DiagnosisPolicy, diagnose, node_isolated, node_unreachable
from prober.diagnose.context import Context, kind_mask
from prober.diagnose.nodes import dead_log_p, describe, traffic
from prober.diagnose.suspects import suspects
from prober.model import Finding, FindingKind, Outcome, ProbeResult, Proto, SrcKind, TargetKind
from prober.report import evidence_from_records
from prober.stats import Evidence
from tests.synth import Cluster, Fault, evidence, generate, heal

C3 = Cluster(n_nodes=3)
C5 = Cluster(n_nodes=5)
C10 = Cluster(n_nodes=10)


def kinds(findings: list[Finding]) -> list[str]:
    return [f.kind for f in findings]


def from_records(
    cluster: Cluster, records: list[ProbeResult], *, recent_rounds: int | None = None
) -> Evidence:
    recent = None if recent_rounds is None else recent_rounds * cluster.interval_s
    return evidence_from_records(records, topology=cluster.topology(), nodes=cluster.nodes, recent_s=recent)


def into(cluster: Cluster, node: str) -> Callable[[ProbeResult], bool]:
    """Probes from other nodes that must enter ``node``: its agents and its NodePort."""
    address = cluster.node_ip(node)

    def crosses(r: ProbeResult) -> bool:
        if r.src_node == node:
            return False
        if r.path.endswith("-to-nodeport"):
            return r.target_ip == address
        return r.dst_node == node and r.path.endswith(("-to-pod", "-to-host"))

    return crosses


# ---- node-unreachable ----------------------------------------------------------------


def test_unreachable_node_is_one_finding_naming_it() -> None:
    x = C5.nodes[2]
    [f] = diagnose(evidence(C5, rounds=3, faults=[Fault(kind="node-unreachable", nodes=(x,))], seed=1))
    assert (f.kind, f.nodes, f.severity) == ("node-unreachable", [x], "critical")
    assert f.confidence >= 0.99
    # 3 rounds: 120 small probes and 18 large-payload ones (3 a round of each kind) into it.
    assert "inbound 138/138 probes failed (100%, from 4 of 4 nodes)" in f.evidence
    assert "outbound 0/" in f.evidence
    assert {"pod-to-pod", "host-to-host", "pod-to-host", "host-to-pod"} <= set(f.paths)
    assert "security group" in f.remediation


def test_unreachable_in_three_nodes_within_one_round() -> None:
    x = C3.nodes[1]
    found = diagnose(evidence(C3, rounds=1, faults=[Fault(kind="node-unreachable", nodes=(x,))], seed=2))
    assert [(f.kind, f.nodes) for f in found] == [("node-unreachable", [x])]


def test_node_that_sends_nothing_is_unreachable_and_the_evidence_says_so() -> None:
    x = C5.nodes[4]
    records = generate(C5, rounds=3, faults=[Fault(kind="node-isolated", nodes=(x,))], seed=3)
    [f] = diagnose(from_records(C5, [r for r in records if r.src_node != x]))
    assert (f.kind, f.nodes) == ("node-unreachable", [x])
    assert f"no probes from {x} in this window" in f.evidence


def test_unreachable_stays_silent_below_min_samples() -> None:
    x = C3.nodes[1]
    records = generate(C3, rounds=1, faults=[Fault(kind="node-unreachable", nodes=(x,))], seed=4)
    inbound = [r for r in records if into(C3, x)(r)]
    kept = [r for r in records if not into(C3, x)(r)] + inbound[:4]
    assert "node-unreachable" not in kinds(diagnose(from_records(C3, kept)))


def test_column_failing_just_under_dead_ratio_is_not_unreachable() -> None:
    x = C10.nodes[3]
    records = generate(C10, rounds=3, faults=[Fault(kind="node-unreachable", nodes=(x,))], seed=5)
    records = heal(records, into(C10, x), 0.15, seed=5)
    assert "node-unreachable" not in kinds(diagnose(from_records(C10, records)))


def test_unreachable_node_that_recovered_is_not_reported() -> None:
    x = C10.nodes[3]
    fault = Fault(kind="node-unreachable", nodes=(x,))
    assert (
        diagnose(evidence(C10, rounds=8, faults=[fault], fault_rounds=(0, 2), recent_rounds=2, seed=6)) == []
    )


def test_unreachable_node_that_just_died_is_named_for_what_it_is_now() -> None:
    x = C10.nodes[3]
    fault = Fault(kind="node-unreachable", nodes=(x,))
    window = evidence(C10, rounds=8, faults=[fault], fault_rounds=(6, 8), seed=7)
    assert "node-unreachable" not in kinds(diagnose(window))  # a quarter of the window: reads as loss
    found = diagnose(evidence(C10, rounds=8, faults=[fault], fault_rounds=(6, 8), recent_rounds=2, seed=7))
    assert [(f.kind, f.nodes) for f in found] == [("node-unreachable", [x])]


# ---- node-isolated -------------------------------------------------------------------


def test_isolated_node_is_one_finding_not_also_unreachable() -> None:
    x = C5.nodes[0]
    [f] = diagnose(evidence(C5, rounds=3, faults=[Fault(kind="node-isolated", nodes=(x,))], seed=8))
    assert (f.kind, f.nodes) == ("node-isolated", [x])
    assert "inbound 138/138" in f.evidence
    assert "outbound 138/138" in f.evidence


def test_isolated_node_names_its_outside_paths_and_leaves_no_question_of_them() -> None:
    """Its external and DNS probes fail with it: the finding names those paths, so the
    collector spends no focused probe asking whether the node's targets are at fault."""
    x = C5.nodes[0]
    [f] = diagnose(evidence(C5, rounds=3, faults=[Fault(kind="node-isolated", nodes=(x,))], seed=8))
    assert {"pod-to-external", "host-to-external", "pod-to-dns", "host-to-dns"} <= set(f.paths)
    # A window that holds the onset: the node's targets failed after some successes.
    onset = evidence(C5, rounds=2, faults=[Fault(kind="node-isolated", nodes=(x,), start_s=5)], seed=8)
    assert {q.key for q in suspects(onset.table)} == {
        ("target", x, "external/example"),
        ("target", x, "dns/kube-dns"),
    }
    assert suspects(onset.table, [f]) == []


def test_isolation_with_outbound_just_under_dead_ratio_is_still_isolated_not_unreachable() -> None:
    """Nothing gets in and 80% of what goes out fails: cut off both ways (or becoming so,
    as a tail that began just before the cut reads), not a node that only cannot be reached."""
    x = C10.nodes[0]
    records = generate(C10, rounds=3, faults=[Fault(kind="node-isolated", nodes=(x,))], seed=9)
    records = heal(records, lambda r: r.src_node == x, 0.2, seed=9)
    found = [(f.kind, f.nodes) for f in diagnose(from_records(C10, records))]
    assert found == [("node-isolated", [x])]


def test_a_node_with_half_its_outbound_failing_is_not_called_isolated() -> None:
    """Inbound dead, outbound failing at under half the dead ratio: unreachable, as before."""
    x = C10.nodes[0]
    records = generate(C10, rounds=3, faults=[Fault(kind="node-isolated", nodes=(x,))], seed=9)
    records = heal(records, lambda r: r.src_node == x, 0.7, seed=9)
    found = kinds(diagnose(from_records(C10, records)))
    assert "node-isolated" not in found
    assert "node-unreachable" in found


def test_isolated_node_that_recovered_is_not_reported() -> None:
    x = C10.nodes[5]
    fault = Fault(kind="node-isolated", nodes=(x,))
    assert (
        diagnose(evidence(C10, rounds=8, faults=[fault], fault_rounds=(0, 2), recent_rounds=2, seed=10)) == []
    )


def test_isolation_stays_silent_below_min_samples() -> None:
    x = C3.nodes[0]
    ev = evidence(C3, rounds=1, faults=[Fault(kind="node-isolated", nodes=(x,))], seed=11)
    assert diagnose(ev, policy=DiagnosisPolicy(min_samples=1_000)) == []


# ---- pair-blocked --------------------------------------------------------------------


def test_blocked_pair_both_ways() -> None:
    a, b = C5.nodes[1], C5.nodes[3]
    [f] = diagnose(evidence(C5, rounds=4, faults=[Fault(kind="pair-blocked", nodes=(a, b))], seed=12))
    assert (f.kind, f.nodes, f.pairs) == ("pair-blocked", [a, b], [(a, b), (b, a)])
    assert f"{a} -> {b}:" in f.evidence
    assert "every other probe to or from" in f.evidence


def test_blocked_pair_one_way() -> None:
    a, b = C5.nodes[1], C5.nodes[3]
    fault = Fault(kind="pair-blocked", nodes=(a, b), one_way=True)
    [f] = diagnose(evidence(C5, rounds=4, faults=[fault], seed=13))
    assert (f.kind, f.pairs) == ("pair-blocked", [(a, b)])


def test_unrelated_blocked_pairs_are_separate_findings() -> None:
    n = C10.nodes
    faults = [Fault(kind="pair-blocked", nodes=(n[0], n[1])), Fault(kind="pair-blocked", nodes=(n[5], n[7]))]
    found = diagnose(evidence(C10, rounds=9, faults=faults, seed=14))
    assert [(f.kind, f.nodes) for f in found] == [
        ("pair-blocked", [n[0], n[1]]),
        ("pair-blocked", [n[5], n[7]]),
    ]


def test_blocked_pair_stays_silent_below_min_samples() -> None:
    a, b = C5.nodes[1], C5.nodes[2]
    ev = evidence(C5, rounds=1, faults=[Fault(kind="pair-blocked", nodes=(a, b))], seed=15)
    assert "pair-blocked" not in kinds(diagnose(ev, policy=DiagnosisPolicy(min_samples=50)))


def test_cell_failing_just_under_dead_ratio_is_not_blocked() -> None:
    a, b = C5.nodes[1], C5.nodes[2]
    records = generate(C5, rounds=6, faults=[Fault(kind="pair-blocked", nodes=(a, b))], seed=16)
    records = heal(records, lambda r: {r.src_node, r.dst_node} == {a, b}, 0.2, seed=16)
    assert "pair-blocked" not in kinds(diagnose(from_records(C5, records)))


def test_blocked_pair_that_recovered_is_not_reported() -> None:
    a, b = C3.nodes[0], C3.nodes[1]
    fault = Fault(kind="pair-blocked", nodes=(a, b))
    assert (
        diagnose(evidence(C3, rounds=8, faults=[fault], fault_rounds=(0, 2), recent_rounds=3, seed=17)) == []
    )


# ---- noise -----------------------------------------------------------------------------


def test_failures_spread_uniformly_are_no_dead_node_or_pair() -> None:
    noisy = Cluster(n_nodes=10, noise=0.005)
    assert diagnose(evidence(noisy, rounds=10, seed=18)) == []


# ---- a node alone in its zone --------------------------------------------------------

C3_2Z = Cluster(n_nodes=3, zones=2)  # two nodes in one zone, one alone in the other


def test_dead_node_alone_in_its_zone_does_not_read_as_a_zone_restricted_balancer() -> None:
    """With a zone's only node dead, every Service and NLB success comes from the other zone:
    that is the dead node, not balancers without cross-zone load balancing. Its share of the
    balanced failures is explained with it (the lab's node-unreachable@node-b, 3 nodes in 2 zones)."""
    [x] = [n for n in C3_2Z.nodes if [C3_2Z.zone(m) for m in C3_2Z.nodes].count(C3_2Z.zone(n)) == 1]
    for kind in ("node-unreachable", "node-isolated"):
        found = diagnose(evidence(C3_2Z, rounds=8, faults=[Fault(kind=kind, nodes=(x,))], seed=11))
        assert [(f.kind, f.nodes) for f in found] == [(kind, [x])], kind


def test_a_blocked_pair_is_named_in_a_window_of_peer_probes_only() -> None:
    """No Service, NodePort or NLB probe in the window (a mesh with peers only): the
    pair's claims of load-balanced probes have nothing to claim, and must not fail."""
    nodes = ["node-a", "node-b", "node-c"]
    records = [
        ProbeResult(
            ts=1000.0 + i * 0.25,
            path="pod-to-pod",
            src_node=src,
            src_kind=SrcKind.POD,
            target=f"pod/{dst}",
            proto=Proto.HTTP,
            dst_node=dst,
            dst_kind=SrcKind.POD,
            outcome=Outcome.TIMEOUT if (src, dst) == ("node-b", "node-c") else Outcome.OK,
            latency_s=None if (src, dst) == ("node-b", "node-c") else 0.001,
        )
        for src in nodes
        for dst in nodes
        for i in range(30)
    ]
    [f] = diagnose(evidence_from_records(records, nodes=nodes))
    assert (f.kind, f.nodes, f.pairs) == ("pair-blocked", ["node-b", "node-c"], [("node-b", "node-c")])


# ---- many dead nodes at once ---------------------------------------------------------


def _greedy_by_full_passes(ctx: Context) -> None:
    """node-isolated then node-unreachable the plain way: every candidate re-tested on
    sums of the whole window after each finding, each claim a pass over every row."""
    pol = ctx.policy
    half = 0.5 * pol.dead_ratio
    while True:
        inbound, outbound = traffic(ctx)
        best: tuple[float, int, float] | None = None
        for x in range(ctx.n_nodes):
            lp_in, lp_out = dead_log_p(ctx, inbound, x, half), dead_log_p(ctx, outbound, x, half)
            if lp_in is None or lp_out is None:
                continue
            if dead_log_p(ctx, inbound, x) is None and dead_log_p(ctx, outbound, x) is None:
                continue
            strength = float(inbound.failed[x] + outbound.failed[x])
            if best is None or strength > best[0]:
                best = (strength, x, max(lp_in, lp_out))
        if best is None:
            break
        _, x, lp = best
        evidence = f"{ctx.nodes[x]}: {describe(inbound, x, into=True)}; {describe(outbound, x, into=False)}"
        touching, from_x = (ctx.src == x) | (ctx.ingress == x), ctx.src == x
        paths = ctx.paths_in(ctx.crossing & touching | ctx.outside & from_x)
        ctx.claim_all(ctx.crossing & touching)
        ctx.claim_all(ctx.outside & from_x)
        ctx.claim_all(ctx.unknown & from_x & ~ctx.local_service)
        ctx.claim_expected(~from_x, ctx.share_of(x))
        node_isolated.MODE.finding(ctx, nodes=[ctx.nodes[x]], paths=paths, log_p=lp, evidence=evidence)
    nlb = kind_mask(ctx.tkind, TargetKind.NLB)
    forwarded = kind_mask(ctx.tkind, TargetKind.NODEPORT) & ~ctx.own_nodeport
    while True:
        inbound, outbound = traffic(ctx)
        found: tuple[float, int, float] | None = None
        for x in range(ctx.n_nodes):
            lp_x = dead_log_p(ctx, inbound, x)
            if lp_x is None or (outbound.sent[x] > 0 and outbound.failed[x] >= half * outbound.sent[x]):
                continue
            if found is None or inbound.failed[x] > found[0]:
                found = (float(inbound.failed[x]), x, lp_x)
        if found is None:
            return
        _, x, lp = found
        out = describe(outbound, x, into=False) if outbound.sent[x] > 0 else (
            f"no probes from {ctx.nodes[x]} in this window (its agents may be down, or the node is off)"
        )  # fmt: skip
        evidence = f"{ctx.nodes[x]}: {describe(inbound, x, into=True)}; {out}"
        into_x = ctx.crossing & (ctx.ingress == x)
        paths = ctx.paths_in(into_x)
        share = ctx.through_share_of(x)
        ctx.claim_all(into_x)
        ctx.claim_expected(ctx.src != x, share)
        ctx.claim_expected((ctx.src == x) & (nlb | forwarded), share)
        node_unreachable.MODE.finding(ctx, nodes=[ctx.nodes[x]], paths=paths, log_p=lp, evidence=evidence)


@pytest.mark.parametrize("traffic_policy", ["Local", "Cluster"])
def test_many_dead_nodes_are_named_as_re_testing_every_node_after_each_finding_would(
    traffic_policy: str,
) -> None:
    """A zone's nodes dead and two more isolated: the node rules keep their sums current
    and test the strongest candidates first, and name the same nodes in the same order,
    with the same evidence and footprints, as re-testing every node on fresh sums after
    each finding."""
    cluster = Cluster(n_nodes=30, external_traffic_policy=traffic_policy)
    zone = tuple(n for n in cluster.nodes if cluster.zone(n) == cluster.zone(cluster.nodes[0]))
    others = [n for n in cluster.nodes if n not in zone]
    isolated = tuple(others[:2])
    faults = [Fault(kind="node-unreachable", nodes=zone), Fault(kind="node-isolated", nodes=isolated)]
    ev = evidence(cluster, rounds=6, faults=faults, seed=5)
    fast, plain = Context(ev, DiagnosisPolicy()), Context(ev, DiagnosisPolicy())
    node_isolated.detect(fast)
    node_unreachable.detect(fast)
    _greedy_by_full_passes(plain)
    named = [(f.kind, f.nodes) for f, _ in fast.found_list]
    want = [(FindingKind.NODE_ISOLATED, [n]) for n in isolated]
    want += [(FindingKind.NODE_UNREACHABLE, [n]) for n in zone]
    assert sorted(named) == sorted(want)
    assert fast.found_list == plain.found_list
    np.testing.assert_allclose(fast.residual, plain.residual, atol=1e-9)
