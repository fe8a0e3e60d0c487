"""The collector's latency histogram by path and zone pair: counts, buckets, bounded labels."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from prober.aggregation import Keys
from prober.collector.latency_metrics import NAME, ZoneLatencyMetrics
from prober.collector.store import Store, StoreSettings
from prober.model import LATENCY_BUCKETS_S, OUTSIDE_KINDS, Outcome, ProbeResult, Proto, SrcKind
from tests.unit.test_aggregation import records

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


#: A sample: its name and its labels, sorted.
Sample = tuple[str, tuple[tuple[str, str], ...]]


def samples(reg: CollectorRegistry) -> dict[Sample, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in reg.collect() for s in f.samples}


def reference(records: list[ProbeResult], zones: dict[str, str], outside: set[str]) -> dict[Sample, float]:
    """The histogram's series, counted one record at a time."""
    counts: dict[tuple[str, str, str], list[int]] = {}
    sums: dict[tuple[str, str, str], float] = {}
    for r in records:
        if r.outcome is not Outcome.OK or r.latency_s is None:
            continue
        if r.target_kind in OUTSIDE_KINDS:
            if r.target not in outside:
                continue
            dst = r.target
        else:
            dst = "(unanswered)" if r.dst_node is None else zones.get(r.dst_node) or "(no zone)"
        key = (r.path, zones.get(r.src_node) or "(no zone)", dst)
        counts.setdefault(key, [0] * (len(LATENCY_BUCKETS_S) + 1))[
            bisect.bisect_left(LATENCY_BUCKETS_S, r.latency_s)
        ] += 1
        sums[key] = sums.get(key, 0.0) + r.latency_s
    out: dict[Sample, float] = {}
    edges = [*(repr(float(b)) for b in LATENCY_BUCKETS_S), "+Inf"]
    for (path, src, dst), per_bin in counts.items():
        labels = (("dst_zone", dst), ("path", path), ("src_zone", src))
        for i, le in enumerate(edges):
            out[(f"{NAME}_bucket", tuple(sorted((*labels, ("le", le)))))] = float(sum(per_bin[: i + 1]))
        out[(f"{NAME}_count", labels)] = float(sum(per_bin))
        out[(f"{NAME}_sum", labels)] = sums[(path, src, dst)]
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(records(), max_size=30), max_size=4))
def test_the_stores_sort_keys_count_what_each_record_counts(batches: list[list[ProbeResult]]) -> None:
    """The collector hands the histogram the store's sort keys, batch after batch, over one
    growing set of labels: the series are those of counting each record."""
    reg = CollectorRegistry()
    m = ZoneLatencyMetrics(reg)
    zones, outside = {"node-a": "zone-1", "node-b": "zone-1", "node-c": ""}, {"external/one", "dns/two"}
    m.set_topology(zones, outside)
    store = Store(StoreSettings(bucket_s=10, retention_s=1200))
    for batch in batches:
        store.ingest(batch, now=1000.0, observe=m.observe_keys)
    got = samples(reg)
    expected = reference([r for b in batches for r in b], zones, outside)
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(v) for k, v in expected.items())


def test_a_new_topology_relabels_the_names_already_known() -> None:
    reg, m = fresh()
    keys = Keys()
    sk, lat, _ = keys.encode([ok("node-c", "pod/node-a", "node-a", 0.01)])
    m.observe_keys(sk, lat, keys)
    m.set_topology({**ZONES, "node-c": "zone-3"}, [])
    m.observe_keys(sk, lat, keys)
    pair = {"path": "pod-to-pod", "dst_zone": "zone-1"}
    assert reg.get_sample_value(f"{NAME}_count", {**pair, "src_zone": "(no zone)"}) == 1
    assert reg.get_sample_value(f"{NAME}_count", {**pair, "src_zone": "zone-3"}) == 1
