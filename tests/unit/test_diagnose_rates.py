"""packet-loss and dns-timeouts: partial failure rates, against the background and the rest of the cluster."""

from __future__ import annotations

import random

import pytest

from prober.diagnose import DiagnosisPolicy, diagnose, diagnose_window, packet_loss
from prober.diagnose.context import Context
from prober.model import Finding, ProbeResult
from prober.report import evidence_from_records
from prober.stats import Evidence
from tests.synth import Cluster, Fault, break_, evidence, generate

C3 = Cluster(n_nodes=3)
C10 = Cluster(n_nodes=10)


def kinds(findings: list[Finding]) -> list[str]:
    return [f.kind for f in findings]


def from_records(cluster: Cluster, records: list[ProbeResult]) -> Evidence:
    return evidence_from_records(records, topology=cluster.topology(), nodes=cluster.nodes)


def loss(node: str, rate: float = 0.1) -> Fault:
    return Fault(kind="packet-loss", nodes=(node,), rate=rate)


# ---- packet-loss -----------------------------------------------------------------------


def test_lossy_node_is_named_with_both_directions_and_retransmits() -> None:
    x = C10.nodes[3]
    [f] = diagnose(evidence(C10, rounds=2, faults=[loss(x)], seed=1))
    assert (f.kind, f.nodes) == ("packet-loss", [x])
    assert f"probes touching {x}:" in f.evidence
    assert "inbound" in f.evidence
    assert "outbound" in f.evidence
    assert "succeeded after a retransmit" in f.evidence
    assert "inbound and outbound" in f.remediation
    assert "ethtool" in f.remediation


def test_peers_of_a_lossy_node_are_explained_away() -> None:
    # In three nodes, half of each peer's probes go to the lossy node.
    x = C3.nodes[0]
    found = diagnose(evidence(C3, rounds=10, faults=[loss(x)], seed=2))
    assert [(f.kind, f.nodes) for f in found] == [("packet-loss", [x])]


def test_two_lossy_nodes_are_two_findings() -> None:
    a, b = C10.nodes[1], C10.nodes[8]
    found = diagnose(evidence(C10, rounds=4, faults=[loss(a), loss(b, 0.2)], seed=3))
    assert [(f.kind, f.nodes) for f in found] == [("packet-loss", [a]), ("packet-loss", [b])]


def test_loss_stays_silent_below_min_samples() -> None:
    ev = evidence(C3, rounds=1, faults=[loss(C3.nodes[0])], seed=4)
    assert diagnose(ev, policy=DiagnosisPolicy(min_samples=500)) == []


@pytest.mark.parametrize(
    ("rate", "rounds", "seed", "named"),
    [
        # 1% per direction: about 2% of the probes touching the node against 0.05% elsewhere.
        pytest.param(0.01, 6, 0, True, id="1%-one-minute"),
        pytest.param(0.01, 6, 1, True, id="1%-one-minute-again"),
        # 0.5% per direction: about 1% of its probes, named once five minutes support it.
        pytest.param(0.005, 30, 5, True, id="0.5%-five-minutes"),
        # 0.1% per direction: about 0.2% of its probes, under min_loss_floor however many.
        pytest.param(0.001, 30, 5, False, id="0.1%-under-the-floor"),
    ],
)
def test_the_loss_threshold_follows_the_sample_size(rate: float, rounds: int, seed: int, named: bool) -> None:
    x = C10.nodes[3]
    found = diagnose(evidence(C10, rounds=rounds, faults=[loss(x, rate)], seed=seed))
    assert [(f.kind, f.nodes) for f in found] == ([("packet-loss", [x])] if named else [])


def test_one_round_of_1pct_loss_is_mostly_too_few_samples() -> None:
    """One round holds ~234 probes touching the node, ~2% of them impaired at 1% loss per
    direction: about 5, where the test needs about 7. So the rule names it in a minority
    of rounds, by the chance of the round (about 1 in 5; six rounds name it every time,
    above), never in most."""
    x = C10.nodes[3]
    found = [[(f.kind, f.nodes) for f in diagnose(evidence(C10, rounds=1, faults=[loss(x, 0.01)], seed=seed))]
             for seed in range(20)]  # fmt: skip
    assert all(f in ([], [("packet-loss", [x])]) for f in found), found  # the loss, or nothing
    assert sum(bool(f) for f in found) < 10


def test_one_lossy_pair_is_not_a_lossy_node() -> None:
    a, b = C10.nodes[1], C10.nodes[2]
    rng = random.Random(6)
    records = generate(C10, rounds=20, seed=6)
    records = break_(records, lambda r: {r.src_node, r.dst_node} == {a, b} and rng.random() < 0.3)
    assert "packet-loss" not in kinds(diagnose(from_records(C10, records)))


def test_refused_probes_are_not_loss() -> None:
    x = C10.nodes[5]
    found = diagnose(evidence(C10, rounds=6, faults=[Fault(kind="pod-agent-down", nodes=(x,))], seed=7))
    assert "packet-loss" not in kinds(found)


def test_loss_that_stopped_is_not_reported() -> None:
    x = C10.nodes[3]
    ev = evidence(C10, rounds=10, faults=[loss(x)], fault_rounds=(0, 3), recent_rounds=2, seed=8)
    assert diagnose(ev) == []


# ---- dns-timeouts ----------------------------------------------------------------------


def test_dns_timeouts_spread_over_the_cluster() -> None:
    [f] = diagnose(evidence(C10, rounds=40, faults=[Fault(kind="dns-timeouts", rate=0.03)], seed=9))
    assert (f.kind, f.nodes, f.severity, f.paths) == (
        "dns-timeouts",
        [],
        "warning",
        ["host-to-dns", "pod-to-dns"],
    )
    assert "queries timed out or answered after > 5 s" in f.evidence
    assert "UDP echo between nodes:" in f.evidence
    assert "single-request-reopen" in f.remediation
    assert "NodeLocal DNSCache" in f.remediation


def test_dns_timeouts_concentrated_on_one_node_name_it() -> None:
    x = C10.nodes[7]
    rng = random.Random(10)
    records = generate(C10, rounds=40, seed=10)
    records = break_(
        records, lambda r: r.src_node == x and r.path.endswith("-to-dns") and rng.random() < 0.15
    )
    [f] = diagnose(from_records(C10, records))
    assert (f.kind, f.nodes) == ("dns-timeouts", [x])
    assert f"concentrated on {x}" in f.evidence


def test_dns_timeouts_stay_silent_below_min_samples() -> None:
    ev = evidence(C3, rounds=5, faults=[Fault(kind="dns-timeouts", rate=0.03)], seed=11)
    assert diagnose(ev) == []


def test_dns_timeouts_just_under_the_rate_threshold_are_silent() -> None:
    ev = evidence(C10, rounds=60, faults=[Fault(kind="dns-timeouts", rate=0.002)], seed=12)
    assert "dns-timeouts" not in kinds(diagnose(ev))


def test_dns_lost_like_every_other_udp_probe_is_not_dns_timeouts() -> None:
    lossy = Cluster(n_nodes=10, noise=0.03)
    assert "dns-timeouts" not in kinds(diagnose(evidence(lossy, rounds=40, seed=13)))


def test_dns_down_is_an_outage_not_timeouts() -> None:
    found = diagnose(evidence(C10, rounds=10, faults=[Fault(kind="dns-timeouts", rate=1.0)], seed=14))
    assert kinds(found) == ["unexplained"]
    assert found[0].suspects[0].component == "dns/kube-dns"


X = C10.nodes[4]


@pytest.mark.parametrize(
    ("faults", "could", "named"),
    [
        pytest.param([], False, [], id="healthy"),
        pytest.param([loss(X, 0.05)], True, [[X]], id="lossy-node"),
        # Alone (no node rule before it to claim the node's probes), it reads as total loss.
        pytest.param([Fault(kind="node-unreachable", nodes=(X,))], True, [[X]], id="dead-node-unclaimed"),
    ],
)
def test_packet_loss_looks_for_a_lossy_node_only_where_one_could_be(
    faults: list[Fault], could: bool, named: list[list[str]]
) -> None:
    """A window where no node has min_samples probes with min_loss_floor of them impaired
    skips the rule's sums; where one might, the rule runs and decides."""
    ev = evidence(C10, rounds=3, faults=faults, seed=41)
    ctx = Context(ev, DiagnosisPolicy())
    assert packet_loss._could_lose(ctx) is could
    assert [f.nodes for f in packet_loss.detect(ctx)] == named


# ---- settled: loss itself, not a fault's onset -----------------------------------------


@pytest.mark.parametrize(("cluster", "rate"), [(C10, 0.05), (C10, 0.2), (Cluster(n_nodes=240), 0.05)])
def test_a_lossy_nodes_retransmits_settle_its_finding(cluster: Cluster, rate: float) -> None:
    """Loss lets a handshake's retries through: the finding is settled (shown without the
    catch-alls' hold, :mod:`prober.diagnose.confirm`)."""
    x = cluster.nodes[3]
    found = diagnose_window(evidence(cluster, rounds=2, faults=[loss(x, rate)], seed=4))
    assert [(f.kind, f.nodes, fp.settled) for f, fp in found] == [("packet-loss", [x], True)]


@pytest.mark.parametrize("kind", ["node-isolated", "node-unreachable"])
def test_the_onset_of_a_fault_that_drops_everything_reads_as_loss_unsettled(kind: str) -> None:
    """6 s after a node's fault began, a window that still holds its healthy minute reads
    as packet-loss at the node; none of its probes retried through, so it is not settled
    (confirmation holds it back until the node's own rule has the probes)."""
    cluster = Cluster(n_nodes=240)
    x = cluster.nodes[57]
    fault = Fault(kind=kind, nodes=(x,), start_s=60.0 - 6.0)
    found = diagnose_window(evidence(cluster, rounds=6, faults=[fault], seed=3, recent_rounds=2))
    losses = [fp for f, fp in found if f.kind == "packet-loss"]
    assert losses, f"{kind}'s onset did not read as packet-loss: {[f.kind.value for f, _ in found]}"
    assert not any(fp.settled for fp in losses)
