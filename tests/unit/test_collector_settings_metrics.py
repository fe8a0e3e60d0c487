"""Collector settings (a pure parse function) and metrics (bounded labels, cleared findings)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from prober.collector.metrics import CollectorMetrics
from prober.collector.settings import CollectorSettings, collector_settings
from prober.errors import UsageError
from prober.model import Finding, FindingKind, Outcome, ProbeResult, Proto, SrcKind


def test_defaults_match_the_documented_ones() -> None:
    s = collector_settings(inventory="inv.yaml")
    assert s == CollectorSettings(inventory="inv.yaml")
    assert (s.listen, s.port, s.window_s, s.retention_s) == ("0.0.0.0", 9090, 60.0, 900.0)
    assert (s.interval_s, s.timeout_s, s.budget_per_s, s.shared_budget_per_s) == (10.0, 5.0, 20.0, 20.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"inventory": None}, "no inventory: pass --inventory FILE", id="no-inventory"),
        pytest.param({"port": 70000}, "--port must be from 0 to 65535, got 70000", id="port"),
        pytest.param({"interval_s": 0.0}, "--interval must be at least 0.1 s, got 0", id="interval"),
        pytest.param({"budget_per_s": -1.0}, "--budget must be at least 0.01 probes/s, got -1", id="budget"),
        pytest.param(
            {"cluster_budget_per_s": 0.0},
            "--cluster-budget must be greater than 0 probes/s, or none (no limit), got 0",
            id="cluster-budget-zero",
        ),
        pytest.param({"timeout_s": 10.0}, "--timeout (10 s) must be shorter than --interval", id="timeout"),
        pytest.param(
            {"window_s": 1000.0}, "--window (1000 s) cannot be longer than --retention", id="window"
        ),
        pytest.param(
            {"retention_s": 4.0, "window_s": 4.0}, "--retention must be at least 5 s", id="retention"
        ),
        pytest.param({"listen": ""}, "--listen must be an address", id="listen"),
    ],
)
def test_bad_values_name_the_flag(changes: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"inventory": "inv.yaml", **changes}
    with pytest.raises(UsageError) as err:
        collector_settings(**args)  # type: ignore[arg-type]
    assert message in str(err.value)


def finding(kind: str, *nodes: str) -> Finding:
    return Finding(
        kind=FindingKind(kind), severity="critical", nodes=list(nodes), pairs=[], paths=[], confidence=0.999,
        evidence="", remediation="",
    )  # fmt: skip


def test_finding_series_are_removed_when_the_finding_clears() -> None:
    reg = CollectorRegistry()
    m = CollectorMetrics(reg)
    m.set_findings([finding("node-unreachable", "node-b"), finding("nlb-hairpin", "node-a", "node-c")])
    assert reg.get_sample_value("prober_finding", {"kind": "node-unreachable", "node": "node-b"}) == 1
    assert reg.get_sample_value("prober_finding", {"kind": "nlb-hairpin", "node": "node-c"}) == 1
    m.set_findings([finding("nlb-hairpin", "node-a"), finding("dns-timeouts")])
    assert reg.get_sample_value("prober_finding", {"kind": "node-unreachable", "node": "node-b"}) is None
    assert reg.get_sample_value("prober_finding", {"kind": "nlb-hairpin", "node": "node-c"}) is None
    assert reg.get_sample_value("prober_finding", {"kind": "nlb-hairpin", "node": "node-a"}) == 1
    assert reg.get_sample_value("prober_finding", {"kind": "dns-timeouts", "node": ""}) == 1
    m.set_findings([])
    assert not [s for metric in reg.collect() if metric.name == "prober_finding" for s in metric.samples]


def test_ingested_probes_are_counted_by_path_and_outcome() -> None:
    reg = CollectorRegistry()
    m = CollectorMetrics(reg)
    r = ProbeResult(
        ts=1.0, path="host-to-dns", src_node="a", src_kind=SrcKind.HOST, target="dns/kube-dns",
        proto=Proto.DNS, outcome=Outcome.TIMEOUT,
    )  # fmt: skip
    m.count_ingested([r, r, r], rejected=2)
    assert (
        reg.get_sample_value("prober_ingested_probes_total", {"path": "host-to-dns", "outcome": "timeout"})
        == 3
    )
    assert reg.get_sample_value("prober_ingest_rejected_records_total") == 2


def test_inventory_source_is_a_file_or_kubernetes_never_both_nor_neither() -> None:
    assert collector_settings(inventory=None, kubernetes=True).kubernetes
    with pytest.raises(UsageError, match="either --inventory FILE or --kubernetes"):
        collector_settings(inventory="inv.yaml", kubernetes=True)
    with pytest.raises(UsageError, match="or --kubernetes in a cluster"):
        collector_settings(inventory=None)
