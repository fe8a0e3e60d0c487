"""externalTrafficPolicy: Cluster: a NodePort or NLB probe takes two hops, and only the faulty one is named;
the NLB modes are named under either policy.

Under ``Cluster`` the node a NodePort probe enters forwards it to any node's echo
(SNATed to its own address), so a blocked pair or an unreachable node also fails a
third node's probes of the pair's NodePorts, and a node's own probes of other nodes'
NodePorts that come back to it. Those failures are the fault's: no other finding, and
no healthy node named. Records from ``tests/synth.py`` with its two-hop model.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from prober.diagnose import diagnose
from prober.stats import NlbProbes
from tests.synth import Cluster, Fault, evidence, simulate

C3 = replace(Cluster(n_nodes=3), external_traffic_policy="Cluster")
C10 = replace(Cluster(n_nodes=10), external_traffic_policy="Cluster")


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("cluster", [C3, C10], ids=["3-nodes", "10-nodes"])
@pytest.mark.parametrize("kind", ["pair-blocked", "node-unreachable"])
def test_a_two_hop_path_blames_only_the_faulty_hop(kind: str, cluster: Cluster, seed: int) -> None:
    n = cluster.nodes
    nodes = (n[0], n[1]) if kind == "pair-blocked" else (n[2],)
    found = diagnose(evidence(cluster, rounds=6, faults=[Fault(kind=kind, nodes=nodes)], seed=seed))
    assert [(f.kind, f.nodes) for f in found] == [(kind, sorted(nodes))]


@pytest.mark.parametrize("cluster", [C3, C10], ids=["3-nodes", "10-nodes"])
def test_a_healthy_cluster_behind_two_hops_is_clean(cluster: Cluster) -> None:
    assert diagnose(evidence(cluster, rounds=6, seed=3)) == []


# ---- the NLB modes under both policies -------------------------------------------------
#
# Under Cluster the node the NLB picks forwards to any echo: a hairpinned client's
# successes are served by its own echo now and then (through another node), and the
# NLB's pick shows only in the client address the echo saw. Diagnosis reads it back
# through the inventory (or, where the inventory does not say, infers the policy from
# it). Cross-zone off: each zone address enters its own zone's nodes only.


def _cluster(n: int, policy: str, *, known: bool = True, cross_zone: bool = True) -> Cluster:
    return replace(
        Cluster(n_nodes=n), external_traffic_policy=policy, policy_known=known, cross_zone=cross_zone
    )


NLB_CASES = [
    pytest.param(policy, known, cross_zone, id=f"{policy}-{'said' if known else 'inferred'}-{cz_id}")
    for policy in ("Local", "Cluster")
    for known in (True, False)
    for cross_zone, cz_id in ((True, "cross-zone"), (False, "zonal"))
]


@pytest.mark.parametrize(("policy", "known", "cross_zone"), NLB_CASES)
def test_the_hairpin_is_named_under_both_policies(policy: str, known: bool, cross_zone: bool) -> None:
    c = _cluster(10, policy, known=known, cross_zone=cross_zone)
    found = diagnose(evidence(c, rounds=6, faults=[Fault(kind="nlb-hairpin")], seed=1))
    assert [(f.kind, f.nodes) for f in found] == [("nlb-hairpin", sorted(c.nodes))]
    if policy == "Cluster":
        assert "entered through the client's own node" in found[0].evidence


@pytest.mark.parametrize(("policy", "known"), [("Local", True), ("Cluster", True), ("Cluster", False)])
@pytest.mark.parametrize("n", [3, 10])
def test_the_collision_is_named_under_both_policies(policy: str, known: bool, n: int) -> None:
    c = _cluster(n, policy, known=known)
    found = diagnose(evidence(c, rounds=6, faults=[Fault(kind="nlb-5tuple-collision")], seed=1))
    assert [(f.kind, f.nodes) for f in found] == [("nlb-5tuple-collision", [])]


@pytest.mark.parametrize(("policy", "known", "cross_zone"), NLB_CASES)
def test_a_healthy_nlb_is_clean_under_both_policies(policy: str, known: bool, cross_zone: bool) -> None:
    c = _cluster(10, policy, known=known, cross_zone=cross_zone)
    assert diagnose(evidence(c, rounds=6, seed=2)) == []


def test_under_cluster_a_hairpinned_client_is_still_served_by_its_own_echo() -> None:
    """The data the rule must not read as a contradiction: successes of the client's own node's
    echo, entered through another node (the echo saw that node's address)."""
    c = _cluster(10, "Cluster")
    gen = simulate(c, rounds=6, faults=[Fault(kind="nlb-hairpin")], seed=1)
    topo = gen.topology
    own = [
        r
        for r in gen.records
        if r.path.endswith("-to-nlb") and r.outcome == "ok" and r.dst_node == r.src_node
    ]
    assert own
    assert all(topo.node_at(r.seen_src_ip) not in (None, r.src_node) for r in own)


@pytest.mark.parametrize("n", [3, 10])
@pytest.mark.parametrize("policy", ["Local", "Cluster"])
@pytest.mark.parametrize("rounds_in", [2, 1])
def test_a_hairpin_that_began_inside_the_window_is_named_from_the_successes_since(
    policy: str, n: int, rounds_in: int
) -> None:
    """The window (6 rounds) still holds rounds of successes through each client's own
    node from before the hairpin, too many for the window's count; the successes since
    the last of them name it, from one round on. Under Cluster only the NLB probes tell
    which node each entered through."""
    c = _cluster(n, policy)
    faults = [Fault(kind="nlb-hairpin")]
    ev = evidence(c, rounds=6, faults=faults, fault_rounds=(6 - rounds_in, 6), recent_rounds=2, seed=5)
    found = diagnose(ev)
    assert [(f.kind, f.nodes) for f in found] == [("nlb-hairpin", sorted(c.nodes))]
    assert "since the last success" in found[0].evidence
    # The same window without the hairpin names nothing.
    assert diagnose(evidence(c, rounds=6, faults=faults, fault_rounds=(6, 6), recent_rounds=2, seed=5)) == []


def test_nlb_probes_since_keeps_the_later_probes_and_every_column() -> None:
    gen = simulate(_cluster(3, "Cluster"), rounds=3, seed=1)
    probes = NlbProbes.from_records(gen.records)
    cut = float(probes.ts[probes.size // 2])
    later = probes.since(cut)
    keep = [i for i in range(probes.size) if probes.ts[i] >= cut]
    assert 0 < later.size == len(keep) < probes.size
    for name in ("src_node", "src_ip", "target_ip", "dst_node", "path", "seen_src_ip"):
        assert getattr(later, name) == tuple(getattr(probes, name)[i] for i in keep), name
    for name in ("ts", "src_port", "outcome", "late"):
        assert getattr(later, name).tolist() == getattr(probes, name)[keep].tolist(), name
