"""prober's Prometheus rules under promtool: which alerts fire on which series, and which do not.

Each test writes a promtool unit-test file that feeds counter series the way agents
and the collector export them, and asserts the exact set of firing alerts at given
times (``exp_alerts: []`` asserts that nothing fires). The rules under test are the
committed ``deploy/prometheus/prober-rules.yaml`` (test_generated_files.py keeps it
equal to what prober.slo generates), or a freshly generated file where a test
changes an objective.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from prober.collector.metrics import LOOP_LAG_BUCKETS
from prober.diagnose.catalogue import BY_KIND, MODES
from prober.generate import to_yaml
from prober.model import FindingKind
from prober.slo import objectives_with, rule_groups

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/prober-rules.yaml"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package 'prometheus')"
)


def promtool_test(tmp_path: Path, tests: list[dict[str, Any]], *, rules: Path = RULES) -> None:
    doc = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}
    test_file = tmp_path / "test.yaml"
    test_file.write_text(to_yaml(doc), encoding="utf-8")
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"promtool test rules failed:\n{proc.stdout}\n{proc.stderr}"


def probes(path: str, outcome: str, values: str, *, node: str = "node-a") -> dict[str, str]:
    return {
        "series": f'prober_probes_total{{path="{path}", src_node="{node}", outcome="{outcome}"}}',
        "values": values,
    }


_LABEL_REF = re.compile(r"\{\{ \$labels\.(\w+) \}\}")
_IF_LABEL = re.compile(r"\{\{ if \$labels\.(\w+) \}\}(.*?)\{\{ else \}\}(.*?)\{\{ end \}\}")


def annotations_of(alertname: str, labels: dict[str, str], *, groups: list[dict[str, Any]] | None = None,
                   **match: str) -> dict[str, str]:  # fmt: skip
    """A rule's annotations with label references filled in (``{{ $value }}`` is left as is)."""
    for group in groups or rule_groups():
        for rule in group["rules"]:
            if rule.get("alert") != alertname:
                continue
            if any(rule.get("labels", {}).get(k) != v for k, v in match.items()):
                continue

            def fill(text: str) -> str:
                text = _IF_LABEL.sub(lambda m: m.group(2) if labels[m.group(1)] else m.group(3), text)
                return _LABEL_REF.sub(lambda m: labels[m.group(1)], text)

            return {k: fill(v) for k, v in rule["annotations"].items()}
    raise AssertionError(f"no rule {alertname} {match}")


def burn(path: str, long_window: str, short_window: str, severity: str) -> dict[str, Any]:
    labels = {"path": path, "severity": severity, "long_window": long_window, "short_window": short_window}
    return {
        "exp_labels": labels,
        "exp_annotations": annotations_of(
            "ProberErrorBudgetBurn", labels, long_window=long_window, short_window=short_window
        ),
    }


PAGE_1H = ("1h", "5m", "critical")
PAGE_6H = ("6h", "30m", "critical")
TICKET_1D = ("1d", "2h", "warning")
TICKET_3D = ("3d", "6h", "warning")


def burn_test(eval_time: str, *firing: dict[str, Any]) -> dict[str, Any]:
    return {"eval_time": eval_time, "alertname": "ProberErrorBudgetBurn", "exp_alerts": list(firing)}


def test_fast_burn_pages_then_stops_paging_when_the_failures_stop(tmp_path: Path) -> None:
    # 5 % of pod-to-service probes fail for an hour (a burn rate of 50 against
    # 99.9 %), then none do.
    series = [
        probes("pod-to-service", "ok", "0+570x240"),
        probes("pod-to-service", "timeout", "0+30x60 1800+0x180"),
    ]
    promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    burn_test("1m"),  # pending: 'for' not yet reached
                    burn_test("10m", burn("pod-to-service", *PAGE_1H)),
                    burn_test(
                        "40m",
                        burn("pod-to-service", *PAGE_1H),
                        burn("pod-to-service", *PAGE_6H),
                    ),
                    # The 5m window is clean again: the fast page resolves although
                    # the 1h window still burns; the slower alerts go on.
                    burn_test("75m", burn("pod-to-service", *PAGE_6H), burn("pod-to-service", *TICKET_1D)),
                    burn_test("120m", burn("pod-to-service", *TICKET_1D)),
                ],
                "promql_expr_test": [
                    {
                        "expr": 'round(prober:probe_error_ratio:rate1h{path="pod-to-service"}, 0.0001)',
                        "eval_time": "30m",
                        "exp_samples": [{"labels": '{path="pod-to-service"}', "value": 0.05}],
                    },
                    {
                        "expr": 'round(prober:slo_burn_rate:rate1h{path="pod-to-service"}, 0.01)',
                        "eval_time": "30m",
                        "exp_samples": [{"labels": '{path="pod-to-service"}', "value": 50}],
                    },
                ],
            }
        ],
    )


def test_slow_burn_opens_tickets_and_never_pages(tmp_path: Path) -> None:
    # 0.4 % failures: a burn rate of 4, under both paging factors (14.4 and 6).
    series = [probes("pod-to-service", "ok", "0+996x300"), probes("pod-to-service", "refused", "0+4x300")]
    promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    burn_test("30m"),
                    burn_test("90m", burn("pod-to-service", *TICKET_1D)),
                    burn_test("4h", burn("pod-to-service", *TICKET_1D), burn("pod-to-service", *TICKET_3D)),
                ],
            }
        ],
    )


def test_brief_blip_does_not_page(tmp_path: Path) -> None:
    # 5 % failures for 3 minutes in hours of clean probes: the 5m window burns at
    # ~30x, but the long windows prove too little budget was spent to wake anyone.
    series = [
        probes("pod-to-service", "ok", "0+570x300"),
        probes("pod-to-service", "timeout", "0+0x30 0+30x3 90+0x267"),
    ]
    promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [burn_test(t) for t in ("34m", "40m", "60m", "2h", "4h", "5h")],
                "promql_expr_test": [
                    {  # the short window alone would have paged
                        "expr": 'prober:slo_burn_rate:rate5m{path="pod-to-service"} > bool 14.4',
                        "eval_time": "34m",
                        "exp_samples": [{"labels": '{path="pod-to-service"}', "value": 1}],
                    }
                ],
            }
        ],
    )


def test_objectives_are_per_path(tmp_path: Path) -> None:
    # 1 % failures burns 99.9 % (pod-to-service) at 10x: pages on 6h/30m; it burns
    # 99.5 % (pod-to-nlb) at 2x: a ticket at most, later.
    series = [
        probes("pod-to-service", "ok", "0+990x120"),
        probes("pod-to-service", "timeout", "0+10x120"),
        probes("pod-to-nlb", "ok", "0+990x120"),
        probes("pod-to-nlb", "timeout", "0+10x120"),
    ]
    promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [burn_test("30m", burn("pod-to-service", *PAGE_6H))],
            }
        ],
    )


def test_changing_an_objective_is_one_edit(tmp_path: Path) -> None:
    # The same 1 % failures against an objective lowered to 99 % (burn rate 1): no
    # page, and the recorded objective and budget follow the one changed number.
    groups = rule_groups(objectives_with(["pod-to-service=99%"]))
    rules = tmp_path / "rules.yaml"
    rules.write_text(to_yaml({"groups": groups}), encoding="utf-8")
    series = [probes("pod-to-service", "ok", "0+990x120"), probes("pod-to-service", "timeout", "0+10x120")]
    promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [burn_test("30m"), burn_test("2h")],
                "promql_expr_test": [
                    {
                        "expr": 'round(prober:slo_error_budget:ratio{path="pod-to-service"}, 0.0001)',
                        "eval_time": "5m",
                        "exp_samples": [{"labels": '{path="pod-to-service"}', "value": 0.01}],
                    }
                ],
            }
        ],
        rules=rules,
    )


def test_every_finding_kind_alerts_with_its_remediation(tmp_path: Path) -> None:
    series = [
        {
            "series": f'prober_finding{{kind="{m.kind}", node="node-b", instance="collector:9090"}}',
            "values": "1x10",
        }
        for m in MODES
    ]
    # A finding that shows once and is gone by the next evaluation does not alert.
    series.append({"series": 'prober_finding{kind="packet-loss", node="node-c"}', "values": "_ 1 stale"})
    tests: list[dict[str, Any]] = []
    for m in MODES:
        labels = {"kind": m.kind.value, "node": "node-b", "severity": m.alert.severity}
        expected = annotations_of(m.alert.name, labels)
        # The mode's one remediation text: what a finding on node-b says, with the
        # alert's words where a finding knows more than the node.
        assert expected["remediation"] == m.fill(["node-b"], m.alert_fills)
        tests.append(
            {"eval_time": "1m", "alertname": m.alert.name, "exp_alerts": []}
        )  # 'for: 2m' not reached
        firing = [{"exp_labels": labels, "exp_annotations": expected}]
        tests.append({"eval_time": "5m", "alertname": m.alert.name, "exp_alerts": firing})
    promtool_test(tmp_path, [{"interval": "1m", "input_series": series, "alert_rule_test": tests}])


def test_a_finding_that_names_no_node_alerts_for_the_cluster(tmp_path: Path) -> None:
    """An NLB collision names no node: its series' node label is empty, and the alert
    says the cluster, not "for node " and nothing."""
    mode = BY_KIND[FindingKind.NLB_5TUPLE_COLLISION]
    labels = {"kind": mode.kind.value, "node": "", "severity": mode.alert.severity}
    expected = annotations_of(mode.alert.name, labels)
    assert "finding for the cluster as a whole." in expected["description"]
    # (an empty label is no label to Prometheus)
    series = [{"series": f'prober_finding{{kind="{mode.kind}"}}', "values": "1x10"}]
    firing = [{"exp_labels": {k: v for k, v in labels.items() if v}, "exp_annotations": expected}]
    tests = [{"eval_time": "5m", "alertname": mode.alert.name, "exp_alerts": firing}]
    promtool_test(tmp_path, [{"interval": "1m", "input_series": series, "alert_rule_test": tests}])


def agent_info(instance: str, node: str, kind: str) -> dict[str, str]:
    return {
        "series": f'prober_agent_info{{instance="{instance}", node="{node}", kind="{kind}", version="1"}}',
        "values": "1x60",
    }


def test_agent_health_alerts(tmp_path: Path) -> None:
    agents = [
        ("10.0.0.1:8080", "node-a", "host"),
        ("10.0.0.2:8080", "node-b", "host"),
        ("10.0.0.3:8080", "node-c", "host"),
        ("10.244.0.1:8080", "node-a", "pod"),
        ("10.244.0.2:8080", "node-b", "pod"),
        # node-c has no pod agent
    ]
    series = [agent_info(*a) for a in agents]
    series += [
        {"series": 'prober_inventory_nodes{instance="collector:9090"}', "values": "3x60"},
        {"series": 'prober_inventory_source_up{instance="collector:9090"}', "values": "1x60"},
        {"series": 'prober_ingest_rejected_records_total{instance="collector:9090"}', "values": "0x60"},
    ]
    for instance, _, _ in agents:
        stuck = instance == "10.0.0.2:8080"
        dropping = instance == "10.244.0.2:8080"
        stale = instance == "10.0.0.3:8080"
        series += [
            {"series": f'prober_report_buffer_records{{instance="{instance}"}}',
             "values": "0+50x60" if stuck else "0x60"},
            {"series": f'prober_report_batches_total{{instance="{instance}", result="ok"}}',
             "values": "0x60" if stuck else "0+6x60"},
            {"series": f'prober_report_dropped_records_total{{instance="{instance}"}}',
             "values": "0+2x60" if dropping else "0x60"},
            {"series": f'prober_pinglist_age_seconds{{instance="{instance}"}}',
             "values": "0+60x60" if stale else "0+0x60"},
        ]  # fmt: skip
    tests = [
        {"eval_time": "10m", "alertname": "ProberAgentMissing", "exp_alerts": []},
        {
            "eval_time": "20m",
            "alertname": "ProberAgentMissing",
            "exp_alerts": [
                {
                    "exp_labels": {"kind": "pod", "severity": "warning"},
                    "exp_annotations": {
                        "summary": "1 nodes have no pod-network prober agent.",
                        "description": annotations_of("ProberAgentMissing", {"kind": "pod"})["description"],
                    },
                }
            ],
        },
        {
            "eval_time": "30m",
            "alertname": "ProberAgentNotReporting",
            "exp_alerts": [
                {
                    "exp_labels": {"node": "node-b", "kind": "host", "severity": "warning"},
                    "exp_annotations": {
                        "summary": "The host agent on node-b has not delivered results to the collector for "
                        "10 minutes.",
                        "description": "Its results wait in its buffer (1500 records) and are missing from "
                        "the matrix and findings. Check that the agent reaches the collector's Service and "
                        "that the collector is ready.",
                    },
                }
            ],
        },
        {
            "eval_time": "30m",
            "alertname": "ProberAgentDroppingResults",
            "exp_alerts": [
                {
                    "exp_labels": {"node": "node-b", "kind": "pod", "severity": "warning"},
                    "exp_annotations": {
                        "summary": "The pod agent on node-b dropped 30 probe results in 15 minutes.",
                        "description": annotations_of(
                            "ProberAgentDroppingResults", {"kind": "pod", "node": "node-b"}
                        )["description"],
                    },
                }
            ],
        },
        {"eval_time": "15m", "alertname": "ProberPinglistStale", "exp_alerts": []},
        {
            "eval_time": "25m",
            "alertname": "ProberPinglistStale",
            "exp_alerts": [
                {
                    "exp_labels": {"node": "node-c", "kind": "host", "severity": "warning"},
                    "exp_annotations": {
                        "summary": "The host agent on node-c has not refreshed its pinglist for 25m 0s.",
                        "description": annotations_of(
                            "ProberPinglistStale", {"kind": "host", "node": "node-c"}
                        )["description"],
                    },
                }
            ],
        },
        {"eval_time": "30m", "alertname": "ProberInventorySourceDown", "exp_alerts": []},
        {"eval_time": "30m", "alertname": "ProberIngestRejecting", "exp_alerts": []},
    ]
    promtool_test(tmp_path, [{"interval": "1m", "input_series": series, "alert_rule_test": tests}])


def test_collector_health_alerts(tmp_path: Path) -> None:
    series = [
        {"series": 'prober_inventory_source_up{instance="collector:9090"}', "values": "1x5 0x30"},
        {
            "series": 'prober_ingest_rejected_records_total{instance="collector:9090"}',
            "values": "0x10 0+4x25",
        },
    ]
    tests = [
        {"eval_time": "10m", "alertname": "ProberInventorySourceDown", "exp_alerts": []},
        {
            "eval_time": "20m",
            "alertname": "ProberInventorySourceDown",
            "exp_alerts": [
                {
                    "exp_labels": {"severity": "warning"},
                    "exp_annotations": annotations_of("ProberInventorySourceDown", {}),  # no templates
                }
            ],
        },
        {
            "eval_time": "30m",
            "alertname": "ProberIngestRejecting",
            "exp_alerts": [
                {
                    "exp_labels": {"severity": "warning"},
                    "exp_annotations": {
                        "summary": "The prober collector rejected 60 result records in 15 minutes.",
                        "description": annotations_of("ProberIngestRejecting", {})["description"],
                    },
                }
            ],
        },
    ]
    promtool_test(tmp_path, [{"interval": "1m", "input_series": series, "alert_rule_test": tests}])


def test_a_stale_or_failing_diagnosis_alerts(tmp_path: Path) -> None:
    """prober must never be silently blind: the collector's last complete diagnosis (a Unix
    time; promtool's clock starts at 0) stops advancing at 10m, and one rule fails."""
    series = [
        {
            "series": 'prober_last_diagnosis_timestamp_seconds{instance="collector:9090"}',
            "values": "0+60x10 600x20",
        },
        {
            "series": 'prober_diagnosis_errors_total{instance="collector:9090", rule="nlb-hairpin"}',
            "values": "0x10 5x20",
        },
    ]
    stale = {
        "exp_labels": {"severity": "critical"},
        "exp_annotations": {
            "summary": "The prober collector has not completed a diagnosis for 7m 0s.",
            "description": annotations_of("ProberDiagnosisStale", {})["description"],
        },
    }
    tests = [
        {"eval_time": "12m", "alertname": "ProberDiagnosisStale", "exp_alerts": []},
        {"eval_time": "17m", "alertname": "ProberDiagnosisStale", "exp_alerts": [stale]},
        {"eval_time": "9m", "alertname": "ProberDiagnosisErrors", "exp_alerts": []},
        {
            "eval_time": "15m",
            "alertname": "ProberDiagnosisErrors",
            "exp_alerts": [
                {
                    "exp_labels": {"severity": "warning", "rule": "nlb-hairpin"},
                    "exp_annotations": {
                        "summary": "The prober diagnosis rule nlb-hairpin failed 5 times in 10 minutes.",
                        "description": annotations_of("ProberDiagnosisErrors", {"rule": "nlb-hairpin"})[
                            "description"
                        ],
                    },
                }
            ],
        },
        {"eval_time": "29m", "alertname": "ProberDiagnosisErrors", "exp_alerts": []},
    ]
    promtool_test(tmp_path, [{"interval": "1m", "input_series": series, "alert_rule_test": tests}])


def test_a_collector_whose_event_loop_runs_late_is_overloaded(tmp_path: Path) -> None:
    """Its loop sampled four times a second: on time (under 10 ms) for 20 minutes, then
    1 to 2.5 s late. The p99 over 10 minutes passes 1 s from 20 minutes on, and after 15
    minutes of that the warning fires, naming the p99."""
    lag = "prober_collector_event_loop_lag_seconds"
    series = [
        {
            "series": f'{lag}_bucket{{instance="collector:9090", le="{le}"}}',
            # 240 samples a minute: every one in the lowest buckets, then every one above 1 s
            "values": "0+240x20 4800x30" if le not in {"2.5", "5.0", "10.0", "+Inf"} else "0+240x50",
        }
        for le in (*(str(b) for b in LOOP_LAG_BUCKETS), "+Inf")
    ]
    late = {
        "exp_labels": {"severity": "warning"},
        "exp_annotations": {
            "summary": "The prober collector's event loop ran 2.5 s late at the 99th percentile "
            "over 10 minutes.",
            "description": annotations_of("ProberCollectorOverloaded", {})["description"],
        },
    }
    tests = [
        {"eval_time": "19m", "alertname": "ProberCollectorOverloaded", "exp_alerts": []},
        {"eval_time": "30m", "alertname": "ProberCollectorOverloaded", "exp_alerts": []},
        {"eval_time": "40m", "alertname": "ProberCollectorOverloaded", "exp_alerts": [late]},
    ]
    promtool_test(tmp_path, [{"interval": "1m", "input_series": series, "alert_rule_test": tests}])


def test_committed_rules_pass_promtool_check() -> None:
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_prometheus_rule_groups_pass_promtool_check(tmp_path: Path) -> None:
    # The operator's PrometheusRule carries the same groups: check them as a rule file.
    crd = yaml.safe_load((ROOT / "deploy/prometheus/prometheusrule.yaml").read_text(encoding="utf-8"))
    assert crd["kind"] == "PrometheusRule"
    rules = tmp_path / "from-crd.yaml"
    rules.write_text(to_yaml({"groups": crd["spec"]["groups"]}), encoding="utf-8")
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_absent_agents_or_collector_alert(tmp_path: Path) -> None:
    collector_only = [
        {"series": 'prober_inventory_nodes{instance="collector:9090"}', "values": "3x30"},
        {"series": 'prober_inventory_source_up{instance="collector:9090"}', "values": "1x30"},
    ]
    agents_only = [agent_info("10.0.0.1:8080", "node-a", "host")]
    tests = [
        {"interval": "1m", "input_series": collector_only, "alert_rule_test": [
            {"eval_time": "10m", "alertname": "ProberAgentsAbsent", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "ProberAgentsAbsent", "exp_alerts": [
                {"exp_labels": {"severity": "critical"},
                 "exp_annotations": annotations_of("ProberAgentsAbsent", {})}]},
            {"eval_time": "20m", "alertname": "ProberCollectorAbsent", "exp_alerts": []},
        ]},
        {"interval": "1m", "input_series": agents_only, "alert_rule_test": [
            {"eval_time": "20m", "alertname": "ProberAgentsAbsent", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "ProberCollectorAbsent", "exp_alerts": [
                {"exp_labels": {"severity": "warning"},
                 "exp_annotations": annotations_of("ProberCollectorAbsent", {})}]},
        ]},
    ]  # fmt: skip
    promtool_test(tmp_path, tests)


def test_two_clusters_alert_and_record_apart(tmp_path: Path) -> None:
    """One Prometheus (or Thanos, Mimir) holding two clusters' series, each with its
    ``cluster`` label (their external label): each alert fires for its own cluster only,
    the recording rules keep the label, and agents with the same address in both
    clusters (overlapping VPC CIDRs) are told apart."""

    def c(cluster: str, series: str) -> str:
        name, labels = series.split("{", 1)
        return f'{name}{{cluster="{cluster}", {labels}'

    pod_a = '{instance="10.0.0.5:8080"}'
    series = [
        # us-1: 5 % of pod-to-service probes fail (a fast burn); eu-1 is clean
        {"series": c("us-1", probes("pod-to-service", "ok", "")["series"]), "values": "0+570x60"},
        {"series": c("us-1", probes("pod-to-service", "timeout", "")["series"]), "values": "0+30x60"},
        {"series": c("eu-1", probes("pod-to-service", "ok", "")["series"]), "values": "0+600x60"},
        # eu-1: node-a unreachable
        {
            "series": 'prober_finding{cluster="eu-1", kind="node-unreachable", node="node-a"}',
            "values": "1x60",
        },
        # both: a collector that knows 1 node; only us-1 has agents, and the same agent
        # address in both clusters, whose pinglist is stale in eu-1 only
        *(
            {
                "series": f'prober_inventory_nodes{{cluster="{cl}", instance="collector:9090"}}',
                "values": "1x60",
            }
            for cl in ("us-1", "eu-1")
        ),
        *(
            {
                "series": f'prober_inventory_source_up{{cluster="{cl}", instance="collector:9090"}}',
                "values": "1x60",
            }
            for cl in ("us-1", "eu-1")
        ),
        {
            "series": c("us-1", f'prober_agent_info{{node="node-a", kind="pod", version="1", {pod_a[1:]}'),
            "values": "1x60",
        },
        {"series": c("us-1", f"prober_pinglist_age_seconds{pod_a}"), "values": "0+60x60"},
        {"series": c("eu-1", f"prober_pinglist_age_seconds{pod_a}"), "values": "10x60"},
        # eu-1's collector diagnosed last at 0 s while us-1's keeps going (the freshest of
        # the two must not hide the stale one); a rule fails in us-1 only
        {
            "series": 'prober_last_diagnosis_timestamp_seconds{cluster="us-1", instance="collector:9090"}',
            "values": "0+60x60",
        },
        {
            "series": 'prober_last_diagnosis_timestamp_seconds{cluster="eu-1", instance="collector:9090"}',
            "values": "0x60",
        },
        {
            "series": 'prober_diagnosis_errors_total{cluster="us-1", instance="collector:9090",'
            ' rule="pair-blocked"}',
            "values": "0+1x60",
        },
    ]
    unreachable = {"cluster": "eu-1", "kind": "node-unreachable", "node": "node-a", "severity": "critical"}
    page = {"cluster": "us-1", "path": "pod-to-service", "severity": "critical", "long_window": "1h",
            "short_window": "5m"}  # fmt: skip
    tests = [
        {"eval_time": "10m", "alertname": "ProberErrorBudgetBurn", "exp_alerts": [
            {"exp_labels": page, "exp_annotations": annotations_of(
                "ProberErrorBudgetBurn", page, long_window="1h", short_window="5m")}]},
        {"eval_time": "10m", "alertname": "ProberNodeUnreachable", "exp_alerts": [
            {"exp_labels": unreachable,
             "exp_annotations": annotations_of("ProberNodeUnreachable", unreachable)}]},
        {"eval_time": "20m", "alertname": "ProberAgentsAbsent", "exp_alerts": [
            {"exp_labels": {"cluster": "eu-1", "severity": "critical"},
             "exp_annotations": annotations_of("ProberAgentsAbsent", {})}]},
        {"eval_time": "20m", "alertname": "ProberCollectorAbsent", "exp_alerts": []},
        {"eval_time": "20m", "alertname": "ProberDiagnosisStale", "exp_alerts": [
            {"exp_labels": {"cluster": "eu-1", "severity": "critical"},
             "exp_annotations": {
                 "summary": "The prober collector has not completed a diagnosis for 20m 0s.",
                 "description": annotations_of("ProberDiagnosisStale", {})["description"]}}]},
        {"eval_time": "20m", "alertname": "ProberDiagnosisErrors", "exp_alerts": [
            {"exp_labels": {"cluster": "us-1", "rule": "pair-blocked", "severity": "warning"},
             "exp_annotations": {
                 "summary": "The prober diagnosis rule pair-blocked failed 10 times in 10 minutes.",
                 "description": annotations_of("ProberDiagnosisErrors", {"rule": "pair-blocked"})[
                     "description"]}}]},
        {"eval_time": "25m", "alertname": "ProberPinglistStale", "exp_alerts": [
            {"exp_labels": {"cluster": "us-1", "node": "node-a", "kind": "pod", "severity": "warning"},
             "exp_annotations": {
                 "summary": "The pod agent on node-a has not refreshed its pinglist for 25m 0s.",
                 "description": annotations_of("ProberPinglistStale", {"kind": "pod", "node": "node-a"})[
                     "description"]}}]},
    ]  # fmt: skip
    exprs = [
        {"expr": 'round(prober:slo_burn_rate:rate1h{path="pod-to-service"}, 0.01)', "eval_time": "30m",
         "exp_samples": [{"labels": '{cluster="eu-1", path="pod-to-service"}', "value": 0},
                         {"labels": '{cluster="us-1", path="pod-to-service"}', "value": 50}]},
    ]  # fmt: skip
    promtool_test(
        tmp_path,
        [{"interval": "1m", "input_series": series, "alert_rule_test": tests, "promql_expr_test": exprs}],
    )
