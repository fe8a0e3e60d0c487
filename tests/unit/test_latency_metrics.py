"""The collector's latency histogram by path and zone pair: counts, buckets, bounded labels."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from prober.collector.latency_metrics import NAME, ZoneLatencyMetrics
from prober.model import Outcome, ProbeResult, Proto, SrcKind

ZONES = {"node-a": "zone-1", "node-b": "zone-2", "node-c": ""}


def ok(src: str, target: str, dst: str | None, latency_s: float, path: str = "pod-to-pod") -> ProbeResult:
    return ProbeResult(
        ts=1.0, path=path, src_node=src, src_kind=SrcKind.POD, target=target, outcome=Outcome.OK,
        proto=Proto.HTTP, dst_node=dst, latency_s=latency_s,
    )  # fmt: skip


def fresh() -> tuple[CollectorRegistry, ZoneLatencyMetrics]:
    reg = CollectorRegistry()
    m = ZoneLatencyMetrics(reg)
    m.set_topology(ZONES, ["external/example", "dns/kube-dns"])
    return reg, m


def bucket(reg: CollectorRegistry, le: str, **labels: str) -> float | None:
    return reg.get_sample_value(f"{NAME}_bucket", {**labels, "le": le})


def test_successes_fill_cumulative_buckets_by_zone_pair() -> None:
    reg, m = fresh()
    m.observe([ok("node-a", "pod/node-b", "node-b", 0.002), ok("node-a", "pod/node-b", "node-b", 1.0)])
    m.observe([ok("node-a", "pod/node-b", "node-b", 0.0025)])  # on an edge: counted in it (le)
    pair = {"path": "pod-to-pod", "src_zone": "zone-1", "dst_zone": "zone-2"}
    assert bucket(reg, "0.001", **pair) == 0
    assert bucket(reg, "0.0025", **pair) == 2
    assert bucket(reg, "0.9", **pair) == 2
    assert bucket(reg, "1.1", **pair) == 3  # the SYN retransmit bucket
    assert bucket(reg, "+Inf", **pair) == 3
    assert reg.get_sample_value(f"{NAME}_count", pair) == 3
    assert reg.get_sample_value(f"{NAME}_sum", pair) == pytest.approx(1.0045)


@pytest.mark.parametrize(
    ("record", "labels"),
    [
        pytest.param(ok("node-c", "pod/node-a", "node-a", 0.01), ("(no zone)", "zone-1"), id="no-zone"),
        pytest.param(ok("node-x", "pod/node-a", "node-a", 0.01), ("(no zone)", "zone-1"), id="unknown-node"),
        pytest.param(
            ok("node-a", "service/echo", None, 0.01, "pod-to-service"),
            ("zone-1", "(unanswered)"),
            id="unclaimed",
        ),
        pytest.param(
            ok("node-a", "external/example", None, 0.01, "pod-to-external"),
            ("zone-1", "external/example"),
            id="outside-target",
        ),
    ],
)
def test_zone_labels(record: ProbeResult, labels: tuple[str, str]) -> None:
    reg, m = fresh()
    m.observe([record])
    src_zone, dst_zone = labels
    assert (
        reg.get_sample_value(
            f"{NAME}_count", {"path": record.path, "src_zone": src_zone, "dst_zone": dst_zone}
        )
        == 1
    )


def test_failures_and_unknown_outside_targets_add_no_series() -> None:
    """Timeouts would pile up in the top bucket; an outside target the inventory does not
    name could be anything an agent sends, so it is not a label value."""
    reg, m = fresh()
    failed = ProbeResult(
        ts=1.0, path="pod-to-pod", src_node="node-a", src_kind=SrcKind.POD, target="pod/node-b",
        outcome=Outcome.TIMEOUT, proto=Proto.HTTP, dst_node="node-b",
    )  # fmt: skip
    m.observe([failed, *(ok("node-a", f"external/x{i}", None, 0.1, "pod-to-external") for i in range(50))])
    samples = [s for family in reg.collect() for s in family.samples]
    assert samples == []
