"""zone-partition: two zones cut off from each other, each healthy inside: one finding, not a storm."""

from __future__ import annotations

import pytest

from prober.diagnose import diagnose
from prober.model import Finding
from tests.synth import Cluster, Fault, evidence

C12 = Cluster(n_nodes=12)
#: Production shape: 210 nodes over 3 zones (70 each), the real schedule and inventory.
C210 = Cluster(n_nodes=210)


def named(findings: list[Finding]) -> list[tuple[str, list[str], list[str]]]:
    return [(f.kind.value, f.zones, f.nodes) for f in findings]


def zone_name(cluster: Cluster, k: int) -> str:
    return sorted({cluster.zone(n) for n in cluster.nodes})[k]


def test_two_hundred_nodes_one_finding_naming_the_two_zones() -> None:
    ev = evidence(C210, rounds=2, faults=[Fault(kind="zone-partition", zones=(0, 2))], seed=21)
    [f] = diagnose(ev)
    a, c = zone_name(C210, 0), zone_name(C210, 2)
    assert (f.kind.value, f.zones, f.nodes, f.pairs, f.severity) == (
        "zone-partition",
        [a, c],
        [],
        [],
        "critical",
    )
    assert f"{a} <-> {c}: " in f.evidence
    assert "probes across failed (100%" in f.evidence
    assert f"from 70 nodes, {c} -> {a}" in f.evidence
    assert {"pod-to-pod", "host-to-host", "pod-to-service", "pod-to-nlb"} <= set(f.paths)
    assert "network ACL" in f.remediation


@pytest.mark.parametrize(
    ("zones", "seed"),
    [pytest.param((0, 1), 1, id="a-b"), pytest.param((1, 2), 2, id="b-c"), pytest.param((0, 2), 3, id="a-c")],
)
def test_any_two_zones_one_round_one_finding_and_nothing_else(zones: tuple[int, int], seed: int) -> None:
    ev = evidence(C12, rounds=1, faults=[Fault(kind="zone-partition", zones=zones)], seed=seed)
    assert named(diagnose(ev)) == [("zone-partition", [zone_name(C12, k) for k in zones], [])]


def test_without_cross_zone_load_balancing_too() -> None:
    c = Cluster(n_nodes=12, cross_zone=False)
    ev = evidence(c, rounds=3, faults=[Fault(kind="zone-partition", zones=(0, 1))], seed=4)
    assert named(diagnose(ev)) == [("zone-partition", [zone_name(c, 0), zone_name(c, 1)], [])]


def test_a_node_fault_inside_a_partitioned_zone_is_still_named() -> None:
    # Claims are expected counts: a second fault on the same rows still shows through.
    x = C12.nodes[3]  # zone index 0
    faults = [Fault(kind="zone-partition", zones=(1, 2)), Fault(kind="node-unreachable", nodes=(x,))]
    found = diagnose(evidence(C12, rounds=4, faults=faults, seed=5))
    assert sorted((f.kind.value, f.nodes) for f in found) == [
        ("node-unreachable", [x]),
        ("zone-partition", []),
    ]


def test_blocked_pairs_across_zones_are_not_a_partition() -> None:
    # Two node pairs across zones blocked: pairs, not zones (the rest of the zones talk).
    a, b = C12.nodes[0], C12.nodes[1]
    found = diagnose(evidence(C12, rounds=4, faults=[Fault(kind="pair-blocked", nodes=(a, b))], seed=6))
    assert [f.kind.value for f in found] == ["pair-blocked"]
