"""pod-network-isolated: one node's pods cut off from the other nodes, the node itself fine."""

from __future__ import annotations

import re

import pytest

from prober.diagnose import DiagnosisPolicy, diagnose, pod_network_isolated
from prober.diagnose.context import POD, Context, kind_mask
from prober.model import Finding, TargetKind
from tests.synth import Cluster, Fault, evidence

C10 = Cluster(n_nodes=10)
#: Production shape: 200 nodes over 3 zones, each agent probing k random peers a round.
C200 = Cluster(n_nodes=200)


def named(findings: list[Finding]) -> list[tuple[str, list[str]]]:
    return [(f.kind.value, f.nodes) for f in findings]


def test_two_hundred_nodes_one_finding_naming_the_node_and_its_pod_network() -> None:
    x = C200.nodes[57]
    ev = evidence(C200, rounds=3, faults=[Fault(kind="pod-network-isolated", nodes=(x,))], seed=13)
    [f] = diagnose(ev)
    assert (f.kind.value, f.nodes, f.pairs, f.severity) == ("pod-network-isolated", [x], [], "critical")
    assert f"{x}: its pods' network: inbound " in f.evidence
    assert "probes failed (100%, from " in f.evidence
    # The host network works: at most the background's failure or two among its ~200 probes.
    host_in = re.search(r"Its host network: inbound (\d+)/(\d+) probes failed", f.evidence)
    assert host_in is not None
    assert int(host_in[1]) <= 2
    assert int(host_in[2]) > 100
    assert f"Same-node pod<->host on {x}: 0/" in f.evidence
    assert {"pod-to-pod", "host-to-pod"} <= set(f.paths)
    assert "host-to-host" not in f.paths
    assert "50 routes" in f.remediation
    assert x in f.remediation


@pytest.mark.parametrize(
    ("variant", "seed"),
    [
        pytest.param("kubenet", 1, id="kubenet-masquerades-off-cluster"),
        pytest.param("vpc", 2, id="vpc-pods-on-vpc-addresses"),
    ],
)
def test_either_cni_is_one_finding_and_nothing_else(variant: str, seed: int) -> None:
    x = C10.nodes[4]
    ev = evidence(
        C10, rounds=6, faults=[Fault(kind="pod-network-isolated", nodes=(x,), variant=variant)], seed=seed
    )
    assert named(diagnose(ev)) == [("pod-network-isolated", [x])]


def test_two_nodes_at_once_are_two_findings() -> None:
    a, b = C10.nodes[1], C10.nodes[7]
    ev = evidence(C10, rounds=6, faults=[Fault(kind="pod-network-isolated", nodes=(a, b))], seed=3)
    assert sorted(named(diagnose(ev))) == sorted(
        [("pod-network-isolated", [a]), ("pod-network-isolated", [b])]
    )


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        # The host network is cut too: the whole node, not its pods.
        pytest.param("node-isolated", "node-isolated", id="node-isolated-stays-node-isolated"),
        # Its pods do not answer even on their own node: the agent is down, not the route.
        pytest.param("pod-agent-down", "unexplained", id="pod-agent-down-is-not-a-route"),
    ],
)
def test_what_it_is_not(fault: str, kind: str) -> None:
    x = C10.nodes[3]
    found = diagnose(evidence(C10, rounds=6, faults=[Fault(kind=fault, nodes=(x,))], seed=4))
    assert "pod-network-isolated" not in [f.kind.value for f in found]
    assert kind in [f.kind.value for f in found]


@pytest.mark.parametrize(
    ("fault", "could"),
    [
        (None, False),
        ("pod-network-isolated", True),
        ("node-isolated", True),  # its pods are dead both ways too: the rule decides (its host is not fine)
        ("packet-loss", False),
    ],
)
def test_only_a_window_where_some_nodes_pods_could_be_dead_is_summed(fault: str | None, could: bool) -> None:
    """A healthy window skips the rule's cells; where some node's pods fail at dead_ratio
    both ways it runs and decides, and names nothing the screen ruled out."""
    x = C10.nodes[6]
    faults = [] if fault is None else [Fault(kind=fault, nodes=(x,), rate=0.1)]
    ev = evidence(C10, rounds=2, faults=faults, seed=51)
    ctx = Context(ev, DiagnosisPolicy())
    to_pod = kind_mask(ctx.tkind, TargetKind.POD)
    assert pod_network_isolated._could_be_dead(ctx, to_pod, ctx.src_kind == POD) is could
    named = [f.nodes for f in pod_network_isolated.detect(ctx)]
    assert named == ([[x]] if fault == "pod-network-isolated" else [])
