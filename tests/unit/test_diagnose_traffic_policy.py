"""externalTrafficPolicy: Cluster: a NodePort or NLB probe takes two hops, and only the faulty one is named.

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
from tests.synth import Cluster, Fault, evidence

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
