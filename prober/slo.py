"""SLOs and alerts as code: the one source of prober's Prometheus rules.

Objectives live in :data:`DEFAULT_OBJECTIVES` (one number per path) and are
recorded into Prometheus as ``prober:slo_objective:ratio{path}``; every burn-rate
threshold, every error-budget series and the SLO dashboard read that series, so
changing an objective is one edit: here (then ``python -m prober.generate``), with
``--objective PATH=RATIO`` on the generator, or in the ``prober-slo-objectives``
group of a deployed rule file.

The SLI is the agents' own count, ``prober_probes_total{path,src_node,outcome}``:
measured where the probe ran, so it keeps counting while the collector is away.
It is aggregated once per path into 5-minute rates; every longer window averages
those (16 series) instead of re-reading every agent's counters, which keeps rule
evaluation cheap at 5,000 nodes.

Alerts follow the SRE workbook's multiwindow, multi-burn-rate recipe for a 30-day
period: 14.4x over 1h and 5m, 6x over 6h and 30m page (``severity: critical``);
3x over 1d and 2h, 1x over 3d and 6h open a ticket (``severity: warning``).
Each finding kind the collector reports has its own alert, declared with its
failure mode (:mod:`prober.diagnose.catalogue`), whose annotation carries the
mode's one remediation text; the agents' and collector's health have theirs.

**Many clusters.** Every rule keeps a ``cluster`` label: aggregations are ``by
(cluster, ...)`` and joins ``on (cluster, ...)``, so one Prometheus (or a Thanos or
Mimir ruler) holding several clusters' series, each with its ``cluster`` external
label, alerts and records per cluster. Without a ``cluster`` label (one cluster)
the same rules work unchanged: the label is simply empty. The objectives carry no
cluster: they apply to every cluster alike.

Pure: builds plain dicts for YAML; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from prober.diagnose.catalogue import BY_KIND
from prober.diagnose.mode import NODE, Arity, FailureMode
from prober.model import PATHS, FindingKind, split_path

#: The SLO period the error budget is counted over.
SLO_PERIOD: Final[str] = "30d"

#: Success-ratio objectives per path. In-cluster paths are held to 99.9 %; paths
#: through an AWS NLB or out of the cluster, which prober does not control end to
#: end, to 99.5 %.
DEFAULT_OBJECTIVES: Final[Mapping[str, float]] = {
    "pod-to-pod": 0.999,
    "pod-to-host": 0.999,
    "pod-to-service": 0.999,
    "pod-to-service-local": 0.999,
    "pod-to-nodeport": 0.999,
    "pod-to-nlb": 0.995,
    "pod-to-external": 0.995,
    "pod-to-dns": 0.999,
    "host-to-pod": 0.999,
    "host-to-host": 0.999,
    "host-to-service": 0.999,
    "host-to-service-local": 0.999,
    "host-to-nodeport": 0.999,
    "host-to-nlb": 0.995,
    "host-to-external": 0.995,
    "host-to-dns": 0.999,
}

#: Windows the error ratio is recorded over: every window a burn-rate alert reads,
#: plus the SLO period for the error budget.
WINDOWS: Final[tuple[str, ...]] = ("5m", "30m", "1h", "2h", "6h", "1d", "3d", SLO_PERIOD)


@dataclass(frozen=True, slots=True, kw_only=True)
class BurnRateAlert:
    """One (long window, short window) pair of the multiwindow, multi-burn-rate recipe.

    Fires while the error budget burns faster than ``factor`` times the sustainable
    rate over *both* windows: the long one proves the burn is significant, the short
    one that it is still going on (so the alert resolves minutes after a fix).
    """

    long_window: str
    short_window: str
    factor: float
    severity: str  # "critical" pages, "warning" opens a ticket
    for_: str
    budget_spent: str  # share of the 30-day budget a burn at ``factor`` spends per long window


#: The SRE workbook's table for a 30-day period.
BURN_RATE_ALERTS: Final[tuple[BurnRateAlert, ...]] = (
    BurnRateAlert(long_window="1h", short_window="5m", factor=14.4, severity="critical", for_="2m",
                  budget_spent="2%"),
    BurnRateAlert(long_window="6h", short_window="30m", factor=6.0, severity="critical", for_="15m",
                  budget_spent="5%"),
    BurnRateAlert(long_window="1d", short_window="2h", factor=3.0, severity="warning", for_="1h",
                  budget_spent="10%"),
    BurnRateAlert(long_window="3d", short_window="6h", factor=1.0, severity="warning", for_="3h",
                  budget_spent="10%"),
)  # fmt: skip


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_s(text: str) -> int:
    """Seconds in a Prometheus duration such as ``5m`` or ``3d`` (single unit only)."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"not a duration: {text!r}")
    return int(m.group(1)) * _SECONDS[m.group(2)]


def parse_objective(text: str) -> tuple[str, float]:
    """``pod-to-nlb=0.995`` or ``pod-to-nlb=99.5%`` → ``("pod-to-nlb", 0.995)``."""
    path, sep, value = text.partition("=")
    path, value = path.strip(), value.strip()
    if not sep or not value:
        raise ValueError(f"expected PATH=RATIO (e.g. pod-to-nlb=99.5%), got {text!r}")
    split_path(path)  # raises with the list of valid paths
    try:
        ratio = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(f"{path}: objective {value!r} is not a number") from None
    if not 0 < ratio < 1:
        raise ValueError(
            f"{path}: objective must be between 0 and 1 (or 0% and 100%), exclusive; got {value}"
        )
    return path, ratio


def objectives_with(overrides: Sequence[str] = ()) -> dict[str, float]:
    """The default objectives with ``PATH=RATIO`` overrides applied."""
    objectives = dict(DEFAULT_OBJECTIVES)
    for text in overrides:
        path, ratio = parse_objective(text)
        objectives[path] = ratio
    return objectives


def _ratio_literal(x: float) -> str:
    return repr(round(x, 10))


def _objective_rules(objectives: Mapping[str, float]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"record": "prober:slo_objective:ratio", "expr": f"vector({_ratio_literal(objectives[p])})",
         "labels": {"path": p}}
        for p in PATHS
    ]  # fmt: skip
    rules.append(
        {"record": "prober:slo_error_budget:ratio", "expr": "1 - prober:slo_objective:ratio"},
    )
    return rules


def _sli_rules() -> list[dict[str, Any]]:
    # Errors are recorded as "errors or 0" so that a path with no failure yet has a
    # ratio of 0 (not no ratio at all): the counter series of an outcome only exists
    # once that outcome happened.
    rules: list[dict[str, Any]] = [
        {"record": "prober:probes:rate5m", "expr": "sum by (cluster, path) (rate(prober_probes_total[5m]))"},
        {
            "record": "prober:probe_errors:rate5m",
            "expr": 'sum by (cluster, path) (rate(prober_probes_total{outcome!="ok"}[5m]))'
            " or 0 * prober:probes:rate5m",
        },
        {
            "record": "prober:probe_error_ratio:rate5m",
            "expr": "prober:probe_errors:rate5m / prober:probes:rate5m",
        },
    ]
    # Longer windows average the per-path 5-minute rates: the mean of the rates over
    # a window is the rate over it (plus 5 minutes of smoothing), and reads 16 series
    # instead of every agent's counters.
    rules.extend(
        {
            "record": f"prober:probe_error_ratio:rate{w}",
            "expr": f"sum by (cluster, path) (avg_over_time(prober:probe_errors:rate5m[{w}]))"
            f" / sum by (cluster, path) (avg_over_time(prober:probes:rate5m[{w}]))",
        }
        for w in WINDOWS[1:]
    )
    rules.extend(
        {
            "record": f"prober:slo_burn_rate:rate{w}",
            "expr": f"prober:probe_error_ratio:rate{w} / on (path) group_left prober:slo_error_budget:ratio",
        }
        for w in WINDOWS
    )
    rules.append(
        {
            "record": "prober:slo_error_budget_remaining:ratio",
            "expr": f"1 - prober:slo_burn_rate:rate{SLO_PERIOD}",
        }
    )
    return rules


def _burn_rate_alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for a in BURN_RATE_ALERTS:
        factor = f"{a.factor:g}"
        action = "Page" if a.severity == "critical" else "Ticket"
        rules.append(
            {
                "alert": "ProberErrorBudgetBurn",
                "expr": f"prober:slo_burn_rate:rate{a.long_window} > {factor}"
                f" and on (cluster, path) prober:slo_burn_rate:rate{a.short_window} > {factor}",
                "for": a.for_,
                "labels": {
                    "severity": a.severity,
                    "long_window": a.long_window,
                    "short_window": a.short_window,
                },
                "annotations": {
                    "summary": f"{action}: {{{{ $labels.path }}}} burns its error budget at {factor}x or "
                    f"more over {a.long_window} and {a.short_window}.",
                    "description": f"Probes on {{{{ $labels.path }}}} fail at least {factor} times faster "
                    f"than its objective allows, over the last {a.long_window} and still over the last "
                    f"{a.short_window}: at this rate the path spends {a.budget_spent} of its {SLO_PERIOD} "
                    f"error budget every {a.long_window}. The prober / matrix dashboard shows which node "
                    "pairs fail; the collector's findings say why.",
                },
            }
        )
    return rules


#: Seconds without a completed diagnosis (the collector diagnoses every few seconds)
#: after which prober counts as blind.
DIAGNOSIS_STALE_S: Final = 180
#: The p99 of the collector's event-loop lag over which it is overloaded: a post or a
#: read waiting a second for the loop (at 5,000 nodes on a 2-core machine its p99 was at
#: most 0.1 s: bench/collector_scale.py).
LOOP_LAG_ALERT_S: Final = 1.0

#: How an alert annotation names the node of the ``prober_finding`` series that fired.
NODE_LABEL: Final[str] = "{{ $labels.node }}"


def alert_text(mode: FailureMode, template: str) -> str:
    """A mode's text (its summary or remediation) for an alert annotation.

    ``{node}`` becomes the series' node label; every other placeholder what the mode's
    ``alert_fills`` say in its place.
    """
    return template.format(**{NODE: NODE_LABEL}, **mode.alert_fills)


#: Modes whose findings name availability zones, not nodes: their ``prober_finding``
#: series has an empty node label, and ``prober_zone_finding`` holds the zones.
_ZONE_ARITIES: Final = frozenset({Arity.ZONE_PAIR, Arity.ONE_ZONE})


def _finding_description(mode: FailureMode) -> str:
    """What an alert on the mode's ``prober_finding`` series says it is about."""
    if mode.lab_fault is not None and mode.lab_fault.arity in _ZONE_ARITIES:
        where = f'in availability zones (prober_zone_finding{{kind="{mode.kind}"}} names them)'
    else:
        # A finding may name no node (an NLB collision, DNS timeouts spread over the
        # cluster): its series' node label is empty, and the text says so.
        named = f"for node {NODE_LABEL}"
        where = f"{{{{ if $labels.node }}}}{named}{{{{ else }}}}for the cluster as a whole{{{{ end }}}}"
    return (
        f"prober reports an active {mode.kind} finding {where}. Evidence: the collector's "
        "GET /api/v1/findings."
    )


def _finding_alert_rules() -> list[dict[str, Any]]:
    modes = [BY_KIND[k] for k in FindingKind]  # in the order findings are listed
    return [
        {
            "alert": m.alert.name,
            "expr": f'max by (cluster, kind, node) (prober_finding{{kind="{m.kind}"}}) > 0',
            # The collector already holds a finding to a statistical test; one more
            # evaluation rides out a finding that flickers at its threshold.
            "for": "2m",
            "labels": {"severity": m.alert.severity},
            "annotations": {
                "summary": alert_text(m, m.summary),
                "description": _finding_description(m),
                "remediation": alert_text(m, m.remediation),
            },
        }
        for m in modes
    ]


def _health_alert_rules() -> list[dict[str, Any]]:
    return [
        {
            "alert": "ProberAgentMissing",
            "expr": "max by (cluster) (prober_inventory_nodes) - on (cluster) group_right ()"
            " count by (cluster, kind) (prober_agent_info) > 0",
            "for": "15m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $value }} nodes have no {{ $labels.kind }}-network prober agent.",
                "description": "The collector's inventory has more nodes than there are {{ $labels.kind }} "
                "agents exporting metrics: those nodes are not probed from that network. Check the "
                "prober-agent DaemonSet's pods (pending, crash-looping, or not scheduled because of taints).",
            },
        },
        {
            "alert": "ProberAgentsAbsent",
            "expr": "max by (cluster) (prober_inventory_nodes) > 0"
            " unless on (cluster) count by (cluster) (prober_agent_info)",
            "for": "15m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "Prometheus scrapes no prober agent although the collector knows nodes.",
                "description": "Without agent metrics there is no SLI: every prober SLO alert is blind. "
                "Check that the agent DaemonSets run and that Prometheus discovers them (ServiceMonitor, "
                "PodMonitor or scrape config).",
            },
        },
        {
            "alert": "ProberCollectorAbsent",
            "expr": "count by (cluster) (prober_agent_info)"
            " unless on (cluster) max by (cluster) (prober_inventory_source_up)",
            "for": "15m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Prometheus scrapes prober agents but not the prober collector.",
                "description": "Findings, the matrix metrics and the finding alerts need the collector: "
                "check that it runs and that Prometheus scrapes it.",
            },
        },
        {
            "alert": "ProberAgentNotReporting",
            "expr": "max by (cluster, node, kind) (prober_report_buffer_records"
            " * on (cluster, instance) group_left (node, kind) prober_agent_info) > 0"
            " unless on (cluster, node, kind)"
            ' max by (cluster, node, kind) (increase(prober_report_batches_total{result="ok"}[10m])'
            " * on (cluster, instance) group_left (node, kind) prober_agent_info) > 0",
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "The {{ $labels.kind }} agent on {{ $labels.node }} has not delivered results "
                "to the collector for 10 minutes.",
                "description": "Its results wait in its buffer ({{ $value }} records) and are missing from "
                "the matrix and findings. Check that the agent reaches the collector's Service and that the "
                "collector is ready.",
            },
        },
        {
            "alert": "ProberAgentDroppingResults",
            "expr": "sum by (cluster, node, kind) (increase(prober_report_dropped_records_total[15m])"
            " * on (cluster, instance) group_left (node, kind) prober_agent_info) > 0",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "The {{ $labels.kind }} agent on {{ $labels.node }} dropped "
                '{{ $value | printf "%.0f" }} probe results in 15 minutes.',
                "description": "Its report buffer overflowed while the collector was unreachable or slow: "
                "the matrix and findings miss those probes. Check the collector's availability and "
                "ingest latency.",
            },
        },
        {
            "alert": "ProberPinglistStale",
            "expr": "max by (cluster, node, kind) (prober_pinglist_age_seconds"
            " * on (cluster, instance) group_left (node, kind) prober_agent_info) > 900",
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "The {{ $labels.kind }} agent on {{ $labels.node }} has not refreshed its "
                "pinglist for {{ $value | humanizeDuration }}.",
                "description": "It keeps probing its last pinglist, so nodes that joined since are not "
                "probed from it. Check that it reaches the collector.",
            },
        },
        {
            "alert": "ProberInventorySourceDown",
            "expr": "max by (cluster) (prober_inventory_source_up) == 0",
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "The prober collector cannot read its inventory.",
                "description": "It keeps the last good inventory: new nodes are not probed and departed "
                "nodes stay in the matrix. Check the collector's log (Kubernetes API access or the "
                "inventory file).",
            },
        },
        {
            "alert": "ProberDiagnosisStale",
            "expr": "time() - max by (cluster) (prober_last_diagnosis_timestamp_seconds)"
            f" > {DIAGNOSIS_STALE_S}",
            "for": "2m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "The prober collector has not completed a diagnosis for "
                "{{ $value | humanizeDuration }}.",
                "description": "Its findings and the finding alerts are frozen or missing: prober is blind "
                "to network faults. The collector's log names the error (prober_diagnosis_errors_total "
                "counts them by rule).",
            },
        },
        {
            "alert": "ProberDiagnosisErrors",
            "expr": "sum by (cluster, rule) (increase(prober_diagnosis_errors_total[10m])) > 0",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "The prober diagnosis rule {{ $labels.rule }} failed "
                '{{ $value | printf "%.0f" }} times in 10 minutes.',
                "description": "The other rules still run, but the findings this rule names are missing "
                '(rule="pipeline": whole evaluations failed). The collector\'s log has the error.',
            },
        },
        {
            "alert": "ProberCollectorOverloaded",
            "expr": "histogram_quantile(0.99, sum by (cluster, le)"
            " (rate(prober_collector_event_loop_lag_seconds_bucket[10m])))"
            f" > {LOOP_LAG_ALERT_S}",
            "for": "15m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "The prober collector's event loop ran "
                '{{ $value | printf "%.1f" }} s late at the 99th percentile over 10 minutes.',
                "description": "Posts, pinglist fetches and reads of findings wait that long for it: "
                "agents' results arrive late and faults are named late. Its diagnosis passes need "
                "more CPU than it gets: give it the requests of its cluster size "
                "(deploy/components/large-cluster, xlarge-cluster) or more.",
            },
        },
        {
            "alert": "ProberIngestRejecting",
            "expr": "sum by (cluster) (increase(prober_ingest_rejected_records_total[15m])) > 0",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": 'The prober collector rejected {{ $value | printf "%.0f" }} result records '
                "in 15 minutes.",
                "description": "Agents send records the collector cannot read (a version skew between "
                "agents and collector?). The collector's POST /api/v1/results answer names the bad lines.",
            },
        },
    ]


def rule_groups(objectives: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Every prober rule group, as the ``groups`` list of a Prometheus rule file."""
    objs = dict(DEFAULT_OBJECTIVES if objectives is None else objectives)
    unknown = sorted(set(objs) - set(PATHS))
    if unknown:
        raise ValueError(f"objectives for unknown paths: {', '.join(unknown)}")
    missing = sorted(set(PATHS) - set(objs))
    if missing:
        raise ValueError(f"no objective for paths: {', '.join(missing)}")
    return [
        {"name": "prober-slo-objectives", "rules": _objective_rules(objs)},
        {"name": "prober-sli", "rules": _sli_rules()},
        {"name": "prober-slo-alerts", "rules": _burn_rate_alert_rules()},
        {"name": "prober-finding-alerts", "rules": _finding_alert_rules()},
        {"name": "prober-health-alerts", "rules": _health_alert_rules()},
    ]


def prometheus_rule(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The same groups as a ``PrometheusRule`` object for the Prometheus Operator."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "prober",
            "labels": {"app.kubernetes.io/name": "prober", "app.kubernetes.io/component": "rules"},
        },
        "spec": {"groups": groups},
    }


def recorded_series(groups: list[dict[str, Any]]) -> list[str]:
    """Names of every series the groups record."""
    return sorted({r["record"] for g in groups for r in g["rules"] if "record" in r})
