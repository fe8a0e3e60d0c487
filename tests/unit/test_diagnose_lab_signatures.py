"""Diagnosis of real signatures, recorded from the network-namespace lab.

Each file in ``tests/data/lab`` holds one window of probe results that the real agents
reported to the lab's collector while one fault was on (3 nodes, node-a and node-c in
zone-a, node-b alone in zone-b; 1 s rounds, 0.9 s timeout). They pin two signatures
first seen in the lab (``tests/synth.py`` models both, so the rule tests see them too):

* kube-proxy sends a node's own callers of its own NodePort to *any* endpoint
  (externalTrafficPolicy: Local short-circuits in-node traffic to the cluster-wide
  chain), so those probes fail with a fault anywhere, not only on the node itself;
* when the only node of a zone is dead, every balanced success comes from the other
  zones, which is not an NLB without cross-zone load balancing.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from prober.aggregation import aggregate
from prober.diagnose import diagnose
from prober.model import Finding, ProbeResult
from prober.records import decode_record
from prober.stats import Evidence, NlbProbes, Topology

DATA = Path(__file__).parents[1] / "data" / "lab"
NODES = ["node-a", "node-b", "node-c"]
ZONES = {"node-a": "zone-a", "node-b": "zone-b", "node-c": "zone-a"}


def recorded(name: str) -> list[ProbeResult]:
    return [decode_record(line) for line in gzip.decompress((DATA / name).read_bytes()).splitlines() if line]


def diagnosed(name: str) -> list[Finding]:
    records = recorded(name)
    table = aggregate(records, nodes=NODES)
    return diagnose(
        Evidence(table=table, nlb_probes=NlbProbes.from_records(records), topology=Topology(zones=ZONES))
    )


@pytest.mark.parametrize(
    ("name", "kind", "node"),
    [
        pytest.param("bridge-node-unreachable-at-node-b.jsonl.gz", "node-unreachable", "node-b",
                     id="unreachable-alone-in-its-zone"),
        pytest.param("bridge-node-isolated-at-node-b.jsonl.gz", "node-isolated", "node-b",
                     id="isolated-alone-in-its-zone"),
        pytest.param("bridge-packet-loss-at-node-c-0.1.jsonl.gz", "packet-loss", "node-c",
                     id="lossy-node-and-its-own-nodeport"),
        pytest.param("bridge-bridge-netfilter-at-node-b.jsonl.gz", "bridge-netfilter", "node-b",
                     id="bridge-and-its-own-nodeport"),
    ],
)  # fmt: skip
def test_one_fault_is_one_finding(name: str, kind: str, node: str) -> None:
    assert [(f.kind, f.nodes) for f in diagnosed(name)] == [(kind, [node])]


def test_the_recordings_hold_the_signatures_they_pin() -> None:
    """The data shows what the rules must explain (so the tests above cannot pass vacuously)."""
    # A dead node alone in its zone: Service and NLB successes all from zone-a, and a third
    # of the balanced probes lost to node-b.
    dead = recorded("bridge-node-unreachable-at-node-b.jsonl.gz")
    balanced = [r for r in dead if r.path.endswith(("-to-service", "-to-nlb")) and r.src_node != "node-b"]
    assert {ZONES[r.dst_node] for r in balanced if r.dst_node} == {"zone-a"}
    assert 0.15 < sum(r.outcome != "ok" for r in balanced) / len(balanced) < 0.5
    # Own NodePort from the node itself: served by other nodes too, and failing under loss
    # or under a same-bridge backend.
    for name, node in (
        ("bridge-packet-loss-at-node-c-0.1.jsonl.gz", "node-c"),
        ("bridge-bridge-netfilter-at-node-b.jsonl.gz", "node-b"),
    ):
        records = recorded(name)
        own = [
            r
            for r in records
            if r.path.endswith("-to-nodeport")
            and r.src_node == node
            and r.target_ip == _address(records, node)
        ]
        assert {r.dst_node for r in own if r.dst_node} - {node}, name  # balanced over other nodes
        assert any(r.outcome != "ok" for r in own), name


def test_bridge_netfilter_names_the_own_nodeport_it_breaks() -> None:
    [f] = diagnosed("bridge-bridge-netfilter-at-node-b.jsonl.gz")
    assert f.paths == ["pod-to-nodeport", "pod-to-service", "pod-to-service-local"]


def _address(records: list[ProbeResult], node: str) -> str:
    """The node's own address: where its host agent is probed."""
    return next(
        r.target_ip for r in records if r.path.endswith("-to-host") and r.dst_node == node and r.target_ip
    )
