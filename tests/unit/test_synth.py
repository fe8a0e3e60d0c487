"""The synthetic cluster follows prober's schedule and the faults' semantics (what the rule tests rely on)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from prober.model import Outcome
from tests.synth import Cluster, Fault, generate


@pytest.mark.parametrize("n", [3, 10, 23])
def test_every_node_receives_k_peer_visits_per_round_and_every_pair_is_covered(n: int) -> None:
    c = Cluster(n_nodes=n)
    rounds = math.ceil((n - 1) / c.k)
    records = generate(c, rounds=rounds, seed=1)
    t0 = min(r.ts for r in records)
    visits: Counter[tuple[int, str]] = Counter()
    pairs = set()
    for r in records:
        if r.path == "pod-to-pod" and r.proto.value == "http" and r.src_node != r.dst_node:
            visits[(int((r.ts - t0) // c.interval_s), r.dst_node or "")] += 1
            pairs.add((r.src_node, r.dst_node))
    assert set(visits.values()) == {c.k}
    assert len(pairs) == n * (n - 1)


def test_same_node_targets_every_round_and_shared_targets_at_the_fan_in_stride() -> None:
    c = Cluster(n_nodes=60)
    assert c.every == 3
    records = generate(c, rounds=6, seed=2)
    local = Counter(r.src_node for r in records if r.path == "pod-to-service-local")
    assert set(local.values()) == {6}
    nlb = Counter(r.src_node for r in records if r.path == "pod-to-nlb" and r.src_port is not None)
    # 3 zone addresses every 3rd round (6 rounds: 2 times) plus the same-port pairs.
    assert min(nlb.values()) >= 2 * c.n_zones


def test_same_source_port_pairs_go_to_two_nlb_addresses_at_once() -> None:
    records = generate(Cluster(n_nodes=5), rounds=6, seed=3)
    by_port: dict[tuple[str, str, int | None], list[object]] = {}
    for r in records:
        if r.path.endswith("-to-nlb"):
            by_port.setdefault((r.src_node, r.path, r.src_port), []).append(r)
    pairs = [v for v in by_port.values() if len(v) == 2]
    assert pairs
    for a, b in pairs:
        assert a.target_ip != b.target_ip  # type: ignore[attr-defined]
        assert abs(a.ts - b.ts) < 0.01  # type: ignore[attr-defined]


def test_hairpin_never_shows_a_self_served_success_and_fails_about_one_in_n() -> None:
    c = Cluster(n_nodes=5, noise=0.0)
    records = [
        r for r in generate(c, rounds=30, faults=[Fault(kind="nlb-hairpin")], seed=4) if "nlb" in r.path
    ]
    assert not any(r.outcome is Outcome.OK and r.dst_node == r.src_node for r in records)
    failed = sum(r.outcome is not Outcome.OK for r in records)
    assert 0.12 < failed / len(records) < 0.28


def test_bridge_netfilter_breaks_only_the_nodes_pods_reaching_its_own_backends() -> None:
    c = Cluster(n_nodes=4, noise=0.0)
    x = c.nodes[1]
    records = generate(c, rounds=20, faults=[Fault(kind="bridge-netfilter", nodes=(x,))], seed=5)
    failed = Counter((r.src_node, r.path) for r in records if r.outcome is not Outcome.OK)
    assert set(failed) == {(x, "pod-to-service-local"), (x, "pod-to-service")}
    assert not any(r.src_node == x and r.path == "pod-to-service" and r.dst_node == x for r in records)


def test_failed_balanced_probes_have_no_serving_node_and_peers_keep_theirs() -> None:
    c = Cluster(n_nodes=4, noise=0.0)
    x = c.nodes[2]
    records = generate(c, rounds=4, faults=[Fault(kind="node-isolated", nodes=(x,))], seed=6)
    for r in records:
        if r.outcome is Outcome.OK:
            continue
        if r.path.endswith(("-to-pod", "-to-host")):
            assert r.dst_node is not None
        else:
            assert r.dst_node is None


def test_packet_loss_turns_some_losses_into_retransmit_latencies() -> None:
    c = Cluster(n_nodes=4, noise=0.0)
    x = c.nodes[0]
    records = generate(c, rounds=30, faults=[Fault(kind="packet-loss", nodes=(x,), rate=0.1)], seed=7)
    http = [r for r in records if r.proto.value == "http" and r.dst_node == x and r.src_node != x]
    slow = [r for r in http if r.latency_s is not None and 0.9 < r.latency_s <= 1.1]
    lost = [r for r in http if r.outcome is not Outcome.OK]
    assert slow
    assert lost
