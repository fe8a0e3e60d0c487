"""The agent's metrics: names other parts rely on, bounded labels, departed targets removed."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from prober.agent.metrics import UNKNOWN_DST, AgentMetrics, pinglist_targets
from prober.model import Outcome, ProbeResult, Proto, SrcKind, TargetKind
from prober.pinglist import PeerGroup, Pinglist, ProbeTarget, SharedGroup


def result(
    target: str, dst: str | None, outcome: Outcome = Outcome.OK, path: str = "pod-to-pod"
) -> ProbeResult:
    return ProbeResult(
        ts=1.0,
        path=path,
        src_node="node-a",
        src_kind=SrcKind.POD,
        target=target,
        outcome=outcome,
        proto=Proto.HTTP,
        dst_node=dst,
        latency_s=0.002 if outcome is Outcome.OK else None,
    )


def peer(node: str) -> PeerGroup:
    return PeerGroup(
        node=node,
        targets=[
            ProbeTarget(
                target=f"pod/{node}", kind=TargetKind.POD, ip="127.0.0.2", port=8080, proto=Proto.HTTP,
                dst_node=node, dst_kind=SrcKind.POD,
            ),
            ProbeTarget(
                target=f"host/{node}", kind=TargetKind.HOST, ip="127.0.0.3", port=8081, proto=Proto.UDP,
                dst_node=node, dst_kind=SrcKind.HOST,
            ),
        ],
    )  # fmt: skip


def pinglist(peers: list[str]) -> Pinglist:
    dns = ProbeTarget(
        target="dns/kube-dns", kind=TargetKind.DNS, ip="127.0.0.53", port=53, proto=Proto.DNS, query="x."
    )
    return Pinglist(
        version="1", agent="pod-node-a", node="node-a", kind=SrcKind.POD, interval_s=10, timeout_s=5,
        budget_per_s=20, concurrency=64, peers=[peer(n) for n in peers], peers_per_round=2,
        local=[], shared=[SharedGroup(name="dns", targets=[dns])],
    )  # fmt: skip


def fresh(*, per_target: bool) -> tuple[CollectorRegistry, AgentMetrics]:
    reg = CollectorRegistry()
    return reg, AgentMetrics(registry=reg, node="node-a", kind="pod", version="1.2.3", per_target=per_target)


def test_probe_counters_use_the_documented_names_and_no_histogram() -> None:
    reg, m = fresh(per_target=False)
    m.observe(result("pod/node-b", "node-b"))
    m.observe(result("pod/node-b", "node-b", Outcome.TIMEOUT))
    m.observe(result("pod/node-c", "node-c", Outcome.TIMEOUT))
    total = "prober_probes_total"
    assert reg.get_sample_value(total, {"path": "pod-to-pod", "src_node": "node-a", "outcome": "ok"}) == 1
    assert (
        reg.get_sample_value(total, {"path": "pod-to-pod", "src_node": "node-a", "outcome": "timeout"}) == 2
    )
    # Latency distributions come from the collector (by zone pair), not from every agent.
    names = {m.name for m in reg.collect()}
    assert not any("duration" in n for n in names)
    # ... and no *_created sample beside each counter
    assert not any(s.name.endswith("_created") for m in reg.collect() for s in m.samples)
    assert (
        reg.get_sample_value("prober_agent_info", {"node": "node-a", "kind": "pod", "version": "1.2.3"}) == 1
    )
    # No per-target series unless asked for.
    labels = {"path": "pod-to-pod", "src_node": "node-a", "dst_node": "node-b", "outcome": "ok"}
    assert reg.get_sample_value("prober_target_probes_total", labels) is None


def test_label_values_never_carry_addresses() -> None:
    reg, m = fresh(per_target=True)
    m.observe(result("pod/node-b", "node-b"))
    m.observe(result("nlb/prober-echo", None, Outcome.TIMEOUT, path="pod-to-nlb"))
    for metric in reg.collect():
        for sample in metric.samples:
            for value in sample.labels.values():
                assert not value.startswith("127."), (sample.name, sample.labels)


def test_per_target_series_of_departed_targets_are_removed() -> None:
    reg, m = fresh(per_target=True)
    m.set_pinglist(pinglist(["node-b", "node-c"]))
    m.observe(result("pod/node-b", "node-b"))
    m.observe(result("pod/node-c", "node-c", Outcome.REFUSED))
    m.observe(result("dns/kube-dns", None, Outcome.DNS_ERROR, path="pod-to-dns"))
    m.observe(result("nlb/prober-echo", None, Outcome.TIMEOUT, path="pod-to-nlb"))

    def series(dst: str, outcome: str, path: str = "pod-to-pod") -> float | None:
        labels = {"path": path, "src_node": "node-a", "dst_node": dst, "outcome": outcome}
        return reg.get_sample_value("prober_target_probes_total", labels)

    assert series("node-b", "ok") == 1
    assert series("node-c", "refused") == 1
    assert series("kube-dns", "dns_error", "pod-to-dns") is None  # outside targets are named by target
    assert series("dns/kube-dns", "dns_error", "pod-to-dns") == 1
    assert series(UNKNOWN_DST, "timeout", "pod-to-nlb") == 1

    m.set_pinglist(pinglist(["node-b"]))  # node-c left the cluster
    assert series("node-c", "refused") is None
    assert series("node-b", "ok") == 1
    assert series("dns/kube-dns", "dns_error", "pod-to-dns") == 1
    assert series(UNKNOWN_DST, "timeout", "pod-to-nlb") == 1
    assert reg.get_sample_value("prober_pinglist_targets") == pinglist_targets(pinglist(["node-b"])) == 3

    m.observe(result("pod/node-c", "node-c", Outcome.REFUSED))  # a late result re-creates it
    assert series("node-c", "refused") == 1
