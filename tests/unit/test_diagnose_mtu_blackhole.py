"""mtu-blackhole: small probes pass, large answers connect and then stall, on one node's link or one pair."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import msgspec
import pytest

from prober.diagnose import diagnose
from prober.model import Finding, Outcome, ProbeResult, Proto
from prober.report import evidence_from_records
from prober.schedule import SchedulePolicy, large_probe_targets
from tests.synth import Cluster, Fault, evidence, generate

C10 = Cluster(n_nodes=10)
#: Production shape: 240 nodes over 3 zones, the real schedule (k = 18 peers a round) and inventory.
C240 = Cluster(n_nodes=240)


def named(findings: list[Finding]) -> list[tuple[str, list[str], list[tuple[str, str]]]]:
    return [(f.kind.value, f.nodes, [tuple(p) for p in f.pairs]) for f in findings]  # type: ignore[misc]


def test_two_hundred_forty_nodes_two_rounds_one_finding_naming_the_node() -> None:
    x = C240.nodes[57]
    ev = evidence(C240, rounds=2, faults=[Fault(kind="mtu-blackhole", nodes=(x,))], seed=13)
    [f] = diagnose(ev)
    assert (f.kind.value, f.nodes, f.pairs, f.severity) == ("mtu-blackhole", [x], [], "critical")
    assert f.paths == ["host-to-host", "pod-to-pod"]
    # One large probe per round from each source kind into the node and out of it: 4 a round.
    assert f"{x}: large-payload probes into it 4/4 stalled (100%, from 2 of 2 nodes); " in f.evidence
    assert "out of it 4/4 stalled (100%, to 2 of 2 nodes)" in f.evidence
    # The small probes pass but for the background noise (0.2% of probes fail anywhere).
    small = re.search(rf"small probes into and out of {re.escape(x)}: ([\d,]+)/([\d,]+) failed", f.evidence)
    assert small is not None, f.evidence
    failed, sent = (int(g.replace(",", "")) for g in small.groups())
    assert sent > 500
    assert failed / sent < 0.01
    assert "type 3, code 4" in f.remediation
    assert "--clamp-mss-to-pmtu" in f.remediation
    assert "9001" in f.remediation


def test_one_round_at_the_production_schedule_is_not_enough_and_not_unexplained() -> None:
    # Four large probes touch the node in a round, from one peer each way: below the six
    # a rule needs and the two peers a node needs; and too few for the localizer.
    x = C240.nodes[3]
    ev = evidence(C240, rounds=1, faults=[Fault(kind="mtu-blackhole", nodes=(x,))], seed=5)
    assert diagnose(ev) == []


def test_a_small_cluster_names_the_node_in_one_round() -> None:
    """With ``repeat`` 3 (10 nodes) the round's three large probes go to three different
    peers: two peers, the node-level signature, within the first round."""
    x = C10.nodes[1]
    ev = evidence(C10, rounds=1, faults=[Fault(kind="mtu-blackhole", nodes=(x,))], seed=0)
    assert named(diagnose(ev)) == [("mtu-blackhole", [x], [])]


def test_a_fault_that_began_in_the_last_round_is_not_unexplained_and_then_named() -> None:
    """Begun in the window's last round: too few stalls for the node (a tenth of its window's
    large probes), and they are the MTU rule's to wait on, not the localizer's. Two rounds
    on, the recent evidence names the node."""
    c = Cluster(n_nodes=3)
    x = c.nodes[1]
    fault = [Fault(kind="mtu-blackhole", nodes=(x,))]
    assert diagnose(evidence(c, rounds=6, faults=fault, fault_rounds=(5, 6), recent_rounds=2, seed=0)) == []
    ev = evidence(c, rounds=6, faults=fault, fault_rounds=(4, 6), recent_rounds=2, seed=0)
    assert named(diagnose(ev)) == [("mtu-blackhole", [x], [])]


def test_a_hop_between_two_nodes_names_the_pair_both_ways() -> None:
    a, b = C10.nodes[2], C10.nodes[6]
    # A pair's large probes come every k = 9 rounds each way: ten rounds see both directions.
    faults = [Fault(kind="mtu-blackhole", nodes=(a, b), variant="pair")]
    ev = evidence(C10, rounds=10, faults=faults, seed=7)
    [f] = diagnose(ev)
    assert (f.kind.value, f.nodes) == ("mtu-blackhole", sorted([a, b]))
    assert [tuple(p) for p in f.pairs] == sorted([(a, b), (b, a)])
    assert "2 node pairs: their large-payload probes " in f.evidence


def test_two_nodes_are_two_findings() -> None:
    a, b = C10.nodes[1], C10.nodes[8]
    ev = evidence(C10, rounds=4, faults=[Fault(kind="mtu-blackhole", nodes=(a, b))], seed=3)
    assert sorted(named(diagnose(ev))) == [("mtu-blackhole", [a], []), ("mtu-blackhole", [b], [])]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        # Nothing gets into the node: its large probes time out with the small ones.
        pytest.param(Fault(kind="node-unreachable", nodes=("n",)), "node-unreachable", id="node-unreachable"),
        pytest.param(Fault(kind="node-isolated", nodes=("n",)), "node-isolated", id="node-isolated"),
        pytest.param(Fault(kind="pair-blocked", nodes=("n", "m")), "pair-blocked", id="pair-blocked"),
        pytest.param(Fault(kind="packet-loss", nodes=("n",), rate=0.3), "packet-loss", id="packet-loss"),
    ],
)
def test_small_probes_failing_is_not_an_mtu_black_hole(fault: Fault, kind: str) -> None:
    x, y = C10.nodes[4], C10.nodes[7]
    real = dataclasses.replace(fault, nodes=tuple({"n": x, "m": y}[n] for n in fault.nodes))
    found = [f.kind.value for f in diagnose(evidence(C10, rounds=6, faults=[real], seed=9))]
    assert found == [kind]


def test_beside_an_unreachable_node_both_are_named() -> None:
    x, y = C10.nodes[2], C10.nodes[5]
    faults = [Fault(kind="mtu-blackhole", nodes=(x,)), Fault(kind="node-unreachable", nodes=(y,))]
    ev = evidence(C10, rounds=6, faults=faults, seed=11)
    assert sorted(named(diagnose(ev))) == [("mtu-blackhole", [x], []), ("node-unreachable", [y], [])]


def test_stalled_small_probes_are_loss_not_an_mtu_black_hole() -> None:
    """The rule reads the large probes only: a node whose *small* answers stall is no MTU black hole."""
    x = C10.nodes[3]
    records = generate(C10, rounds=6, seed=2)
    stalled = [
        msgspec.structs.replace(r, outcome=Outcome.STALLED, latency_s=None, seen_src_ip=None)
        if r.proto is Proto.HTTP and r.dst_node == x and r.src_node != x and r.path == "pod-to-pod"
        else r
        for r in records
    ]
    kinds = [f.kind.value for f in diagnose(evidence_from_records(stalled))]
    assert "mtu-blackhole" not in kinds
    assert kinds  # it is a fault all the same


def test_a_clean_cluster_with_large_probes_has_no_findings() -> None:
    records = generate(C10, rounds=6, seed=4)
    assert any(r.proto is Proto.HTTP_LARGE for r in records)
    assert diagnose(evidence_from_records(records)) == []


def _large_only(records: list[ProbeResult]) -> list[ProbeResult]:
    return [r for r in records if r.proto is Proto.HTTP_LARGE]


def test_large_probes_are_pod_to_pod_and_host_to_host_only() -> None:
    paths = {r.path for r in _large_only(generate(C10, rounds=2, seed=1))}
    assert paths == {"pod-to-pod", "host-to-host"}


@pytest.mark.parametrize("n", [3, 10, 100])
def test_every_node_receives_and_sends_repeat_large_probes_per_kind_a_round(n: int) -> None:
    c = Cluster(n_nodes=n)
    builder = c.builder
    for r in (0, 1, 7):
        into: Counter[tuple[str, str]] = Counter()
        for agent in builder.agents():
            pl = builder.for_agent(agent)
            assert pl is not None
            targets = large_probe_targets(pl, r)
            assert [t.proto for t in targets] == [Proto.HTTP_LARGE] * c.repeat
            assert len({t.dst_node for t in targets}) == min(c.repeat, c.k)  # different peers
            assert {t.kind.value for t in targets} == {pl.kind.value}
            into.update((t.dst_node or "", t.kind.value) for t in targets)
        assert set(into.values()) == {c.repeat}
        assert len(into) == 2 * n


def test_no_large_probes_at_zero_bytes() -> None:
    c = Cluster(n_nodes=5, policy=SchedulePolicy(large_probe_bytes=0))
    pl = c.builder.for_agent(c.builder.agents()[0])
    assert pl is not None
    assert pl.large_probe_bytes == 0
    assert large_probe_targets(pl, 3) == []
