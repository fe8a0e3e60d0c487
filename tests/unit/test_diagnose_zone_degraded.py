"""zone-degraded: loss over most nodes of one zone is one finding naming the zone, not one per node.

At the production shape (210 nodes in 3 zones of 70, the real schedule and inventory)
and in a small cluster; with the negative cases beside it: one lossy node is
packet-loss, a few lossy nodes of one zone are their packet-loss findings, a zone
partition is zone-partition, a healthy cluster is nothing.
"""

from __future__ import annotations

import pytest

from prober.diagnose import DiagnosisPolicy, diagnose, zone_degraded
from prober.diagnose.context import Context
from prober.model import Finding
from tests.synth import Cluster, Fault, evidence

C12 = Cluster(n_nodes=12)
C210 = Cluster(n_nodes=210)


def named(findings: list[Finding]) -> list[tuple[str, list[str], list[str]]]:
    return [(f.kind.value, f.zones, f.nodes) for f in findings]


def zone_name(cluster: Cluster, k: int) -> str:
    return sorted({cluster.zone(n) for n in cluster.nodes})[k]


def zone_nodes(cluster: Cluster, k: int) -> list[str]:
    return [n for n in cluster.nodes if cluster.zone(n) == zone_name(cluster, k)]


def test_two_hundred_nodes_one_zone_losing_is_one_finding_naming_the_zone() -> None:
    # 2% per direction at each of the zone's 70 nodes, one round: without the rule, one
    # unexplained finding (each node's loss is no worse than the rest it is compared with).
    ev = evidence(C210, rounds=1, faults=[Fault(kind="zone-degraded", zones=(1,), rate=0.02)], seed=31)
    [f] = diagnose(ev)
    b = zone_name(C210, 1)
    assert (f.kind.value, f.zones, f.nodes, f.pairs, f.severity) == ("zone-degraded", [b], [], [], "warning")
    assert f"probes touching the 70 nodes of {b}: " in f.evidence
    assert f"inside {b} " in f.evidence
    assert "without its 35 lossiest nodes" in f.evidence
    assert {"pod-to-pod", "host-to-host"} <= set(f.paths)
    assert "availability zone" in f.remediation


def test_two_hundred_nodes_one_lossy_node_is_packet_loss_only() -> None:
    x = zone_nodes(C210, 1)[5]
    ev = evidence(C210, rounds=1, faults=[Fault(kind="packet-loss", nodes=(x,), rate=0.05)], seed=32)
    assert named(diagnose(ev)) == [("packet-loss", [], [x])]


@pytest.mark.parametrize(
    ("zone", "rate", "seed"),
    [
        pytest.param(0, 0.05, 1, id="a-5pct"),
        pytest.param(1, 0.1, 2, id="b-10pct"),
        pytest.param(2, 0.3, 3, id="c-30pct-critical"),
    ],
)
def test_any_zone_any_rate_in_a_small_cluster(zone: int, rate: float, seed: int) -> None:
    ev = evidence(C12, rounds=6, faults=[Fault(kind="zone-degraded", zones=(zone,), rate=rate)], seed=seed)
    found = diagnose(ev)
    assert named(found) == [("zone-degraded", [zone_name(C12, zone)], [])]
    assert found[0].severity == ("critical" if rate >= 0.2 else "warning")


def test_one_lossy_node_in_a_small_cluster_is_packet_loss_only() -> None:
    x = zone_nodes(C12, 0)[1]
    ev = evidence(C12, rounds=6, faults=[Fault(kind="packet-loss", nodes=(x,), rate=0.1)], seed=4)
    assert named(diagnose(ev)) == [("packet-loss", [], [x])]


def test_two_lossy_nodes_of_one_zone_are_their_own_findings() -> None:
    # Two of a zone's four nodes: without them the zone is clean, so they are nodes.
    xs = tuple(zone_nodes(C12, 2)[:2])
    ev = evidence(C12, rounds=6, faults=[Fault(kind="packet-loss", nodes=xs, rate=0.1)], seed=5)
    assert sorted(named(diagnose(ev))) == [("packet-loss", [], [x]) for x in sorted(xs)]


def test_a_zone_partition_is_a_partition_not_a_degraded_zone() -> None:
    ev = evidence(C12, rounds=6, faults=[Fault(kind="zone-partition", zones=(0, 1))], seed=6)
    assert named(diagnose(ev)) == [("zone-partition", [zone_name(C12, 0), zone_name(C12, 1)], [])]


def test_healthy_cluster_nothing() -> None:
    assert diagnose(evidence(C12, rounds=6, seed=7)) == []


def test_a_dead_node_inside_a_degraded_zone_is_still_named() -> None:
    # The deterministic rules run first: the dead node's probes are claimed before the zone is tested.
    x = zone_nodes(C12, 1)[2]
    faults = [Fault(kind="zone-degraded", zones=(1,), rate=0.1), Fault(kind="node-unreachable", nodes=(x,))]
    found = diagnose(evidence(C12, rounds=6, faults=faults, seed=8))
    assert sorted((f.kind.value, f.zones, f.nodes) for f in found) == [
        ("node-unreachable", [], [x]),
        ("zone-degraded", [zone_name(C12, 1)], []),
    ]


def test_synthetic_model_refuses_a_degraded_zone_without_a_rate() -> None:
    with pytest.raises(ValueError, match="one zone"):
        Fault(kind="zone-degraded", zones=(0,))


@pytest.mark.parametrize(
    ("faults", "could"),
    [
        # The zones beside a lossy one trade lossy probes with it: they could be too.
        pytest.param([Fault(kind="zone-degraded", zones=(1,), rate=0.02)], [True, True, True], id="zone"),
        pytest.param([], [False, False, False], id="healthy"),
        pytest.param([Fault(kind="zone-partition", zones=(0, 2))], [True, False, True], id="partition"),
    ],
)
def test_only_a_zone_that_could_be_losing_is_tested(faults: list[Fault], could: list[bool]) -> None:
    """The screen before each zone's test (two sums a zone over every row) passes every zone
    whose test names it, and no zone of a healthy cluster (whose tests would each have cost
    a dozen passes over the rows); beside a lossy zone it is loose, and the test decides."""
    ev = evidence(C210, rounds=1, faults=faults, seed=33)
    ctx = Context(ev, DiagnosisPolicy())
    names, zone = zone_degraded._zone_index(ctx)
    rows = zone_degraded._Rows.of(ctx, zone)
    imp = zone_degraded._impaired(ctx)
    screened = zone_degraded._could_lose(ctx, rows, imp, len(names)).tolist()
    assert screened == could
    tested = [zone_degraded._test(ctx, rows, z, imp) is not None for z in range(len(names))]
    assert all(s for s, t in zip(screened, tested, strict=True) if t)
    assert any(tested) is bool(faults and faults[0].kind == "zone-degraded")
