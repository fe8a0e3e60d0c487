"""The entry point: one root cause gives one finding, in a stable order, in the contract's shape."""

from __future__ import annotations

import random

import msgspec
import pytest

from prober.diagnose import (
    NAMED_RULES,
    RULES,
    SLOW_KINDS,
    DiagnosisPolicy,
    diagnose,
    diagnose_window,
    diagnose_windows,
    longer_window_rules,
    merge_windows,
    recency,
)
from prober.diagnose.context import Context
from prober.diagnose.localize import rank
from prober.model import PATHS, Finding, FindingKind, ProbeResult
from prober.report import evidence_from_records
from prober.schedule import SchedulePolicy
from prober.stats import Evidence, PairTable
from tests.synth import Cluster, Fault, evidence, generate

C5 = Cluster(n_nodes=5)
C10 = Cluster(n_nodes=10)
N = C10.nodes


def kinds(findings: list[Finding]) -> list[str]:
    return [f.kind for f in findings]


def test_every_named_kind_has_a_rule_and_runs_in_order() -> None:
    names = [rule.__module__.rsplit(".", 1)[1] for rule in RULES]
    assert names == [
        "zone_partition",
        "node_isolated",
        "node_unreachable",
        "pod_network_isolated",
        "pair_blocked",
        "mtu_blackhole",
        "nlb_hairpin",
        "nlb_collision",
        "bridge_netfilter",
        "snat_asymmetric",
        "zone_degraded",
        "packet_loss",
        "dns_timeouts",
        "localize",
    ]


def test_empty_evidence_has_no_findings() -> None:
    assert diagnose(Evidence(table=PairTable.empty(["a", "b"]))) == []


@pytest.mark.parametrize("n", [3, 10, 30])
def test_background_noise_gives_no_finding(n: int) -> None:
    # 0.05% of every path fails, as on a healthy cluster.
    assert diagnose(evidence(Cluster(n_nodes=n), rounds=40, seed=n)) == []


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        pytest.param(Fault(kind="node-unreachable", nodes=(N[1],)), "node-unreachable", id="unreachable"),
        pytest.param(Fault(kind="node-isolated", nodes=(N[1],)), "node-isolated", id="isolated"),
        pytest.param(Fault(kind="nlb-hairpin"), "nlb-hairpin", id="hairpin"),
        pytest.param(Fault(kind="bridge-netfilter", nodes=(N[1],)), "bridge-netfilter", id="bridge"),
        pytest.param(Fault(kind="packet-loss", nodes=(N[1],), rate=0.2), "packet-loss", id="loss"),
        pytest.param(Fault(kind="snat-asymmetric", nodes=(N[1],)), "snat-asymmetric", id="snat"),
    ],
)
def test_one_root_cause_gives_one_finding(fault: Fault, kind: str) -> None:
    # Long enough for every secondary pattern (loss on peers, blocked cells, residue) to show.
    assert kinds(diagnose(evidence(C10, rounds=30, faults=[fault], seed=1))) == [kind]


def test_findings_are_sorted_and_independent_of_record_order() -> None:
    faults = [
        Fault(kind="packet-loss", nodes=(N[2],), rate=0.1),
        Fault(kind="node-unreachable", nodes=(N[7],)),
        Fault(kind="nlb-hairpin"),
    ]
    records = generate(C10, rounds=6, faults=faults, seed=2)
    first = diagnose(evidence_from_records(records, topology=C10.topology(), nodes=C10.nodes))
    random.Random(2).shuffle(records)
    again = diagnose(evidence_from_records(records, topology=C10.topology()))
    assert kinds(first) == ["nlb-hairpin", "node-unreachable", "packet-loss"]
    assert [(f.kind, f.nodes, f.paths, f.confidence) for f in first] == [
        (f.kind, f.nodes, f.paths, f.confidence) for f in again
    ]


def test_findings_keep_the_wire_contract() -> None:
    faults = [Fault(kind="nlb-hairpin"), Fault(kind="pair-blocked", nodes=(N[0], N[4]))]
    for f in diagnose(evidence(C10, rounds=10, faults=faults, seed=3)):
        assert isinstance(f.kind, FindingKind)
        assert msgspec.json.decode(msgspec.json.encode(f))["kind"] == f.kind.value  # a plain string
        assert f.severity in ("critical", "warning", "info")
        assert 0.0 <= f.confidence <= 1.0
        assert set(f.paths) <= set(PATHS)
        assert f.evidence
        assert f.remediation
        assert msgspec.json.decode(msgspec.json.encode(f), type=Finding) == f


def test_stricter_confidence_needs_more_evidence() -> None:
    ev = evidence(C10, rounds=1, faults=[Fault(kind="bridge-netfilter", nodes=(N[3],))], seed=4)
    ev2 = evidence(C10, rounds=2, faults=[Fault(kind="bridge-netfilter", nodes=(N[3],))], seed=4)
    strict = DiagnosisPolicy(min_confidence=1 - 1e-12)
    assert kinds(diagnose(ev)) == ["bridge-netfilter"]
    assert diagnose(ev, policy=strict) == []
    assert kinds(diagnose(ev2, policy=strict)) == ["bridge-netfilter"]


# ---- pairs of faults on different nodes ----------------------------------------------


def test_unreachable_and_isolated_nodes_side_by_side() -> None:
    faults = [Fault(kind="node-unreachable", nodes=(N[2],)), Fault(kind="node-isolated", nodes=(N[6],))]
    found = diagnose(evidence(C10, rounds=6, faults=faults, seed=5))
    assert [(f.kind, f.nodes) for f in found] == [("node-unreachable", [N[2]]), ("node-isolated", [N[6]])]


def test_bridge_and_loss_on_different_nodes() -> None:
    faults = [
        Fault(kind="bridge-netfilter", nodes=(N[2],)),
        Fault(kind="packet-loss", nodes=(N[6],), rate=0.1),
    ]
    found = diagnose(evidence(C10, rounds=6, faults=faults, seed=6))
    assert [(f.kind, f.nodes) for f in found] == [("bridge-netfilter", [N[2]]), ("packet-loss", [N[6]])]


# ---- the localizer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "suspect"),
    [
        pytest.param(Fault(kind="pod-agent-down", nodes=(N[4],)), f"pod-network/{N[4]}", id="pod-agent"),
        pytest.param(Fault(kind="service-down"), "service/prober-echo", id="service"),
        pytest.param(Fault(kind="nlb-address-down", zone=1), f"nlb-zone/{C10.nlb_ip(1)}", id="nlb-address"),
    ],
)
def test_a_residue_no_rule_explains_is_one_unexplained_finding(fault: Fault, suspect: str) -> None:
    [f] = diagnose(evidence(C10, rounds=6, faults=[fault], seed=7))
    assert f.kind == "unexplained"
    assert f.suspects[0].component == suspect
    assert f.suspects[0].score > 0.5
    assert [s.score for s in f.suspects] == sorted((s.score for s in f.suspects), reverse=True)
    assert suspect in f.evidence
    assert f.remediation.startswith("No known failure mode fits")


def test_localizer_ranks_nothing_on_a_clean_cluster() -> None:
    ctx = Context(evidence(C10, rounds=10, seed=8), DiagnosisPolicy())
    assert rank(ctx) == []


def test_localizer_names_a_dead_pod_network_node() -> None:
    x = C5.nodes[2]
    [f] = diagnose(evidence(C5, rounds=6, faults=[Fault(kind="pod-agent-down", nodes=(x,))], seed=9))
    assert f.nodes == [x]
    assert f"the pod network of {x} fails while its host network works" in f.remediation


# ---- faults that start or end inside the window --------------------------------------


def test_without_recent_a_fresh_fault_reads_as_partial() -> None:
    fault = Fault(kind="node-isolated", nodes=(N[3],))
    window = evidence(C10, rounds=6, faults=[fault], fault_rounds=(4, 6), seed=10)
    assert "node-isolated" not in kinds(diagnose(window))
    both = evidence(C10, rounds=6, faults=[fault], fault_rounds=(4, 6), recent_rounds=2, seed=10)
    assert [(f.kind, f.nodes) for f in diagnose(both)] == [("node-isolated", [N[3]])]


def test_recent_evidence_keeps_a_steady_fault() -> None:
    fault = Fault(kind="packet-loss", nodes=(N[3],), rate=0.1)
    ev = evidence(C10, rounds=10, faults=[fault], recent_rounds=2, seed=11)
    assert [(f.kind, f.nodes) for f in diagnose(ev)] == [("packet-loss", [N[3]])]


def test_recent_evidence_keeps_window_only_findings() -> None:
    # dns-timeouts needs the whole window; a short recent slice neither confirms nor drops it.
    ev = evidence(C10, rounds=40, faults=[Fault(kind="dns-timeouts", rate=0.03)], recent_rounds=2, seed=12)
    assert kinds(diagnose(ev)) == ["dns-timeouts"]


# ---- several windows ending now ------------------------------------------------------


def windows(cluster: Cluster, records: list[ProbeResult], *lengths: int) -> list[Evidence]:
    end = max(r.ts for r in records)
    return [
        evidence_from_records(
            [r for r in records if r.ts > end - n * cluster.interval_s],
            topology=cluster.topology(),
            nodes=cluster.nodes,
            recent_s=2 * cluster.interval_s,
        )
        for n in lengths
    ]


def test_a_short_window_names_a_fresh_fault_the_long_one_dilutes() -> None:
    # Each shared target once a round (as past a few dozen nodes): the long window's recent
    # slice holds 2 probes of the external target from the node, under min_samples.
    once = Cluster(n_nodes=10, policy=SchedulePolicy(repeat_max=1))
    x = once.nodes[4]
    records = generate(
        once, rounds=30, faults=[Fault(kind="snat-asymmetric", nodes=(x,))], fault_rounds=(24, 30)
    )
    short, long = windows(once, records, 6, 30)
    assert diagnose(long) == []  # a fifth of the window: not "dead", and too few recent probes
    assert [(f.kind, f.nodes) for f in diagnose_windows([short, long])] == [("snat-asymmetric", [x])]


def test_a_long_window_names_a_rate_limited_fault_the_short_one_cannot() -> None:
    c3 = Cluster(n_nodes=3)
    records = generate(c3, rounds=150, faults=[Fault(kind="dns-timeouts", rate=0.03)], seed=13)
    short, long = windows(c3, records, 6, 150)
    # Six rounds hold ~4 of ~108 DNS probes failed: not dns-timeouts, only a residue no
    # rule names (unexplained; some seeds leave none), which the long window's finding replaces.
    assert kinds(diagnose(short)) == ["unexplained"]
    assert kinds(diagnose_windows([short, long])) == ["dns-timeouts"]


def test_windows_report_one_finding_per_fault() -> None:
    records = generate(C10, rounds=30, faults=[Fault(kind="node-unreachable", nodes=(N[2],))], seed=14)
    found = diagnose_windows(windows(C10, records, 2, 6, 30))
    assert [(f.kind, f.nodes) for f in found] == [("node-unreachable", [N[2]])]


@pytest.mark.parametrize(
    ("fault", "remembered"),
    [
        # The window's own recent probes do not resolve these (one probe a round, diluted):
        # the long window alone still reports them, as unexplained.
        (Fault(kind="bridge-netfilter", nodes=(C5.nodes[1],)), True),
        (Fault(kind="snat-asymmetric", nodes=(C5.nodes[3],)), True),
        (Fault(kind="nlb-hairpin"), False),
        (Fault(kind="node-unreachable", nodes=(C5.nodes[2],)), False),
        (Fault(kind="packet-loss", nodes=(C5.nodes[2],), rate=0.1), False),
    ],
    ids=lambda v: v.kind if isinstance(v, Fault) else ("remembered" if v else "forgotten"),
)
def test_a_fault_that_ended_before_the_short_window_is_over(fault: Fault, remembered: bool) -> None:
    # On for rounds 0-12 of 30; the last 6 rounds are clean, and say so.
    records = generate(C5, rounds=30, faults=[fault], fault_rounds=(0, 12), seed=21)
    short, long = windows(C5, records, 6, 30)
    assert bool(diagnose(long)) is remembered
    assert diagnose(short) == []
    assert diagnose_windows([short, long]) == []


def test_a_longer_window_runs_the_rules_up_to_the_last_slow_kind() -> None:
    longer = longer_window_rules(NAMED_RULES)
    names = [name for name, _ in longer]
    assert names == [name for name, _ in NAMED_RULES[: len(longer)]]
    assert {k.value for k in SLOW_KINDS} <= set(names)
    assert names[-1] in {k.value for k in SLOW_KINDS}
    assert FindingKind.UNEXPLAINED.value not in names
    assert longer_window_rules([(n, r) for n, r in NAMED_RULES if n == "node-unreachable"]) == ()


def test_what_a_longer_window_leaves_out_is_what_the_merge_drops() -> None:
    # Over for the last 6 rounds: the long window names the ended fault's residue as
    # unexplained with every rule, which the merge drops; without the localizer it names
    # nothing, and the merge says the same.
    records = generate(C5, rounds=30, faults=[Fault(kind="bridge-netfilter", nodes=(C5.nodes[1],))],
                       fault_rounds=(0, 12), seed=21)  # fmt: skip
    short, long = windows(C5, records, 6, 30)
    every = [diagnose_window(short), diagnose_window(long)]
    assert [f.kind for f, _ in every[1]] == ["unexplained"]
    assert diagnose_window(long, rules=longer_window_rules(NAMED_RULES)) == []
    assert merge_windows(every, shortest=short.table) == diagnose_windows([short, long]) == []


def test_a_rate_limited_fault_still_on_is_not_over_in_a_short_clean_window() -> None:
    c3 = Cluster(n_nodes=3)
    records = generate(c3, rounds=150, faults=[Fault(kind="dns-timeouts", rate=0.03)], seed=22)
    short, long = windows(c3, records, 6, 150)
    assert kinds(diagnose_windows([short, long])) == ["dns-timeouts"]


@pytest.mark.parametrize("path", ["host-to-service-local", "pod-to-external", "pod-to-dns"])
def test_probes_that_never_cross_between_nodes_give_no_finding_and_no_error(path: str) -> None:
    # One source whose only probes stay on its node or leave the mesh (the first batch a
    # collector gets can be this): no peer pair at all. Every rule answers (none raises).
    records = [r for r in generate(C5, rounds=3, seed=2) if r.path == path and r.src_node == C5.nodes[0]]
    assert records
    assert diagnose(evidence_from_records(records, nodes=C5.nodes)) == []


def test_the_merge_sums_the_shortest_windows_streams_only_when_a_longer_window_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = C5.nodes[2]
    records = generate(C5, rounds=30, faults=[Fault(kind="packet-loss", nodes=(x,), rate=0.1)], seed=23)
    short, long = windows(C5, records, 6, 30)
    raw_short, raw_long = diagnose_window(short), diagnose_window(long)
    assert [(f.kind, f.nodes) for f, _ in raw_long] == [("packet-loss", [x])]  # a slow kind

    def summed(table: PairTable) -> None:
        raise AssertionError("the shortest window's streams were summed")

    monkeypatch.setattr(recency, "stream_stats", summed)
    # Nothing from the longer window: nothing to check against the shortest's streams.
    assert [(f.kind, f.nodes) for f in merge_windows([raw_short, []], shortest=short.table)] == [
        ("packet-loss", [x])
    ]
    with pytest.raises(AssertionError, match="streams were summed"):
        merge_windows([raw_short, raw_long], shortest=short.table)


C12 = Cluster(n_nodes=12)


@pytest.mark.parametrize("loss", [None, 0.1, 0.3], ids=["alone", "lossy-10pct", "lossy-30pct"])
def test_a_blocked_pair_whose_node_fails_its_other_probes_too_is_unsettled(loss: float | None) -> None:
    """A pair's own probes all fail; where one of its nodes' other probes also fail well
    above the background (a lossy node here; a zone cut off at its onset in production),
    the pair may be the first sign of something wider, and the rule marks it unsettled
    for confirmation to hold back. Alone, at 12 nodes (every pair probed every round), it
    is settled from its first pass."""
    n = C12.nodes
    faults = [Fault(kind="pair-blocked", nodes=(n[2], n[7]))]
    if loss is not None:
        faults.append(Fault(kind="packet-loss", nodes=(n[2],), rate=loss))
    found = diagnose_window(evidence(C12, rounds=3, faults=faults, seed=1))
    assert [(f.kind.value, set(f.nodes), fp.unsettled) for f, fp in found] == [
        ("pair-blocked", {n[2], n[7]}, loss is not None),
        *([("packet-loss", {n[2]}, False)] if loss is not None else []),
    ]
    [pair] = [f for f, _ in found if f.kind is FindingKind.PAIR_BLOCKED]
    assert "every other probe to or from" in pair.evidence
