"""prober's Grafana dashboards, built with grafana-foundation-sdk.

Three dashboards, committed as JSON under ``dashboards/`` by ``python -m
prober.generate`` (a test regenerates them and fails on drift):

- **prober / matrix**: per path, the zone-by-zone success ratio and the source node
  by target node matrix, coloured by success ratio; clicking a zone cell drills down
  to the nodes of that zone pair; the zone-by-zone p99 latency; the zone pairs of an
  active zone-partition or zone-degraded finding, named in their cells. Variables: cluster,
  source kind, path, source and target zone, window.
- **prober / SLOs**: per path, the objective, the error budget left over the SLO
  period and the burn rate over each alert window.
- **prober / overview**: active findings, agents and collector health.

Every query reads only metrics and recording rules prober defines (see
:mod:`prober.slo` and the collector's matrix metrics), so each dashboard works
with any Prometheus that scrapes the agents and the collector and loads the rules.
Every dashboard has a ``cluster`` variable and every query selects on it, for a
Prometheus (Thanos, Mimir) holding many clusters' series; "All" also matches series
without a ``cluster`` label. The SLO objectives are the same for every cluster.

Needs the ``generate`` extra (``pip install 'prober[generate]'``): without
grafana-foundation-sdk, importing this module raises
:class:`~prober.errors.MissingExtraError`, which says so in one line. Nothing else
in prober imports it; :mod:`prober.generate` imports it only when it renders.
"""

from __future__ import annotations

import json
from typing import Any, Final

from prober.errors import MissingExtraError
from prober.slo import BURN_RATE_ALERTS, SLO_PERIOD, duration_s

try:
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders import prometheus as prom
    from grafana_foundation_sdk.builders import stat, table, text, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common as cm
    from grafana_foundation_sdk.models import dashboard as dm
    from grafana_foundation_sdk.models import prometheus as pm
except ImportError as exc:
    raise MissingExtraError(
        __name__, extra="generate", package="grafana-foundation-sdk", reason=str(exc)
    ) from exc

MATRIX_UID: Final[str] = "prober-matrix"
SLO_UID: Final[str] = "prober-slo"
OVERVIEW_UID: Final[str] = "prober-overview"

#: Success-ratio colours shared by every matrix: red below 99 %, amber below 99.9 %.
_RATIO_STEPS: Final[list[dm.Threshold]] = [
    dm.Threshold(value=None, color="red"),
    dm.Threshold(value=0.99, color="orange"),
    dm.Threshold(value=0.999, color="green"),
]
_DS: Final[dm.DataSourceRef] = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
_TAGS: Final[list[str]] = ["prober", "network"]


def _query(expr: str, *, ref: str = "A", legend: str = "", instant: bool = False) -> prom.Dataquery:
    q = prom.Dataquery().expr(expr).ref_id(ref).datasource(_DS)
    q = q.instant().format(pm.PromQueryFormat.TABLE) if instant else q.range()
    if legend:
        q = q.legend_format(legend)
    return q


def _thresholds(steps: list[dm.Threshold]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps)


#: Every query's cluster selector: one Prometheus (or Thanos, Mimir) may hold many
#: clusters' series, each with its ``cluster`` label; "All" is ``.*``, which also
#: matches series without the label (one cluster, no ``cluster`` label at all).
CLUSTER: Final[str] = 'cluster=~"$cluster"'


def _cluster_var() -> db.QueryVariable:
    return _query_var("cluster", "Cluster", "label_values(prober_inventory_nodes, cluster)", all_value=".*")


def _datasource_var() -> db.DatasourceVariable:
    return db.DatasourceVariable("datasource").label("Data source").type("prometheus")


def _query_var(
    name: str, label: str, query: str, *, multi: bool = True, all_value: str = ""
) -> db.QueryVariable:
    v = (
        db.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(_DS)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
    )
    if all_value:
        v = v.all_value(all_value)
    return v


def _matrix_table(
    title: str, expr: str, *, row_field: str, column_field: str, unit: str, steps: list[dm.Threshold]
) -> table.Panel:
    """A table turned into a matrix: one row per ``row_field``, one column per ``column_field``.

    Each cell's background is coloured by its value; an empty cell is a pair with no
    series (no probes, or a healthy pair left out to bound cardinality).
    """
    return (
        table.Panel()
        .title(title)
        .datasource(_DS)
        .with_target(_query(expr, instant=True))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={
                    "rowField": row_field,
                    "columnField": column_field,
                    "valueField": "Value",
                    "emptyValue": "null",
                },
            )
        )
        .unit(unit)
        .decimals(2 if unit == "percentunit" else 1)
        .thresholds(_thresholds(steps))
        .override_by_regexp(
            ".*",
            [
                dm.DynamicConfigValue(
                    id_val="custom.cellOptions",
                    value=cm.TableColoredBackgroundCellOptions(mode=cm.TableCellBackgroundDisplayMode.BASIC),
                )
            ],
        )
        .override_by_name(
            f"{row_field}\\{column_field}",
            [dm.DynamicConfigValue(id_val="custom.cellOptions", value=cm.TableAutoCellOptions())],
        )
        .cell_height(cm.TableCellHeight.SM)
    )


def matrix_dashboard() -> dm.Dashboard:
    selector = f'{CLUSTER}, path="$path", src_zone=~"$src_zone", dst_zone=~"$dst_zone"'
    drill_down = (
        f"/d/{MATRIX_UID}/prober-matrix?${{datasource:queryparam}}&${{cluster:queryparam}}&${{kind:queryparam}}"
        "&${path:queryparam}"
        "&${window:queryparam}&var-src_zone=${__data.fields[0]}&var-dst_zone=${__field.name}&${__url_time_range}"
    )
    zone_matrix = _matrix_table(
        "$path: zone × zone success ratio (mean over $window)",
        f"avg_over_time(prober_zone_success_ratio{{{selector}}}[$window])",
        row_field="src_zone",
        column_field="dst_zone",
        unit="percentunit",
        steps=_RATIO_STEPS,
    ).data_links([db.DashboardLink("Drill down to the nodes of this zone pair").url(drill_down)])
    zone_matrix = (
        zone_matrix.description(
            "Rows are source zones, columns the zone of the node that served the probe. Click a cell to "
            "show only the nodes of that zone pair below. (unanswered): failed probes no node answered."
        )
        .height(7)
        .span(12)
    )
    zone_latency = (
        _matrix_table(
            "$path: zone × zone p99 latency (over $window)",
            "histogram_quantile(0.99, sum by (le, src_zone, dst_zone) "
            f"(rate(prober_zone_probe_duration_seconds_bucket{{{selector}}}[$window])))",
            row_field="src_zone",
            column_field="dst_zone",
            unit="s",
            steps=[
                dm.Threshold(value=None, color="green"),
                dm.Threshold(value=0.1, color="orange"),
                dm.Threshold(value=0.9, color="red"),
            ],
        )
        .description(
            "p99 of successful probes between zones, from the collector's histogram of every result "
            "(agents export no latency histogram). Above 0.9 s (red) a success needed a TCP SYN retransmit."
        )
        .height(7)
        .span(12)
    )
    zone_findings = (
        table.Panel()
        .title("Zone × zone: findings naming zones (now)")
        .description(
            "The zone pairs an active zone-partition (its two zones, both ways) or zone-degraded (the "
            "zone's row and column) finding is about, with the finding's kind in the cell; empty while "
            "no finding names a zone. The collector's GET /api/v1/findings has the evidence and the fix."
        )
        .datasource(_DS)
        .with_target(
            _query(f"max by (src_zone, dst_zone, kind) (prober_zone_finding{{{CLUSTER}}})", instant=True)
        )
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={
                    "rowField": "src_zone",
                    "columnField": "dst_zone",
                    "valueField": "kind",
                    "emptyValue": "null",
                },
            )
        )
        .mappings(
            [
                dm.RegexMap(
                    options=dm.DashboardRegexMapOptions(
                        pattern=".+", result=dm.ValueMappingResult(color="red")
                    )
                )
            ]
        )
        .override_by_regexp(
            ".*",
            [
                dm.DynamicConfigValue(
                    id_val="custom.cellOptions",
                    value=cm.TableColoredBackgroundCellOptions(mode=cm.TableCellBackgroundDisplayMode.BASIC),
                )
            ],
        )
        .override_by_name(
            "src_zone\\dst_zone",
            [dm.DynamicConfigValue(id_val="custom.cellOptions", value=cm.TableAutoCellOptions())],
        )
        .cell_height(cm.TableCellHeight.SM)
        .height(7)
        .span(12)
    )
    node_matrix = (
        _matrix_table(
            "$path: source node × target node success ratio (worst over $window)",
            f"min_over_time(prober_pair_success_ratio{{{selector}}}[$window])",
            row_field="src_node",
            column_field="dst_node",
            unit="percentunit",
            steps=_RATIO_STEPS,
        )
        .description(
            "Rows are source nodes (the source kind is the path's), columns the node that served the "
            "probe. On large clusters the collector exports only pairs that failed in its window (worst "
            "first, capped), so an empty cell there means healthy; see 'pairs left out'."
        )
        .height(14)
        .span(24)
    )
    latency_matrix = (
        _matrix_table(
            "$path: p99 latency (worst over $window)",
            f"max_over_time(prober_pair_latency_p99_seconds{{{selector}}}[$window])",
            row_field="src_node",
            column_field="dst_node",
            unit="s",
            steps=[
                dm.Threshold(value=None, color="green"),
                dm.Threshold(value=0.1, color="orange"),
                dm.Threshold(value=0.9, color="red"),
            ],
        )
        .description("p99 of successful probes. Above 0.9 s (red) a success needed a TCP SYN retransmit.")
        .height(10)
        .span(24)
    )
    worst = (
        table.Panel()
        .title("$path: worst pairs")
        .datasource(_DS)
        .with_target(
            _query(
                f"bottomk(20, min_over_time(prober_pair_success_ratio{{{selector}}}[$window]) < 1)",
                instant=True,
            )
        )
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True}},
            )
        )
        .unit("percentunit")
        .decimals(2)
        .height(7)
        .span(8)
    )
    omitted = (
        stat.Panel()
        .title("$path: pairs left out")
        .description(
            "Failing pairs the collector did not export because of its per-path cap: the node matrix "
            "shows the worst ones only."
        )
        .datasource(_DS)
        .with_target(_query(f'max(prober_matrix_pairs_omitted{{{CLUSTER}, path="$path"}})'))
        .thresholds(
            _thresholds([dm.Threshold(value=None, color="green"), dm.Threshold(value=1, color="orange")])
        )
        .height(7)
        .span(4)
    )
    path_ratio = (
        timeseries.Panel()
        .title("$path: success ratio (5m)")
        .datasource(_DS)
        .with_target(
            _query(f'1 - prober:probe_error_ratio:rate5m{{{CLUSTER}, path="$path"}}', legend="{{path}}")
        )
        .unit("percentunit")
        .max(1)
        .height(7)
        .span(12)
    )
    builder = (
        db.Dashboard("prober / matrix")
        .uid(MATRIX_UID)
        .description("Which (source node, target node) pairs fail, per path. Generated by prober.dashboards.")
        .tags(_TAGS)
        .time("now-1h", "now")
        .refresh("30s")
        .with_variable(_datasource_var())
        .with_variable(_cluster_var())
        .with_variable(
            db.CustomVariable("kind").label("Source kind").values("pod,host").multi(True).include_all(True)
        )
        .with_variable(
            _query_var(
                "path",
                "Path",
                f'label_values(prober_zone_success_ratio{{{CLUSTER}, path=~"${{kind:regex}}-to-.*"}}, path)',
            )
        )
        .with_variable(
            _query_var(
                "src_zone",
                "Source zone",
                f"label_values(prober_zone_success_ratio{{{CLUSTER}}}, src_zone)",
                all_value=".*",
            )
        )
        .with_variable(
            _query_var(
                "dst_zone",
                "Target zone",
                f"label_values(prober_zone_success_ratio{{{CLUSTER}}}, dst_zone)",
                all_value=".*",
            )
        )
        .with_variable(
            db.CustomVariable("window")
            .label("Window")
            .values("5m,15m,1h,6h,1d")
            .current(dm.VariableOption(selected=True, text="15m", value="15m"))
        )
        .link(
            db.DashboardLink("prober")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["prober"])
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
        .with_row(db.Row("$path").repeat("path"))
        .with_panel(zone_matrix)
        .with_panel(path_ratio)
        .with_panel(zone_latency)
        .with_panel(zone_findings)
        .with_panel(node_matrix)
        .with_panel(latency_matrix)
        .with_panel(worst)
        .with_panel(omitted)
    )
    return builder.build()


def slo_dashboard() -> dm.Dashboard:
    windows = sorted({a.long_window for a in BURN_RATE_ALERTS}, key=duration_s)
    summary = (
        table.Panel()
        .title("Objectives and error budgets")
        .description(
            f"Per path: the objective, the success ratio and error budget left over {SLO_PERIOD}, and the "
            "burn rate (1 = spending the budget exactly over the period). Objectives come from "
            "prober:slo_objective:ratio (prober/slo.py)."
        )
        .datasource(_DS)
        .with_target(_query('prober:slo_objective:ratio{path=~"$path"}', ref="objective", instant=True))
        .with_target(
            _query(
                f'1 - prober:probe_error_ratio:rate{SLO_PERIOD}{{{CLUSTER}, path=~"$path"}}',
                ref="sli",
                instant=True,
            )
        )
        .with_target(
            _query(
                f'prober:slo_error_budget_remaining:ratio{{{CLUSTER}, path=~"$path"}}',
                ref="budget",
                instant=True,
            )
        )
        .with_target(
            _query(f'prober:slo_burn_rate:rate1h{{{CLUSTER}, path=~"$path"}}', ref="burn1h", instant=True)
        )
        .with_target(
            _query(f'prober:slo_burn_rate:rate6h{{{CLUSTER}, path=~"$path"}}', ref="burn6h", instant=True)
        )
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "renameByName": {
                        "Value #objective": "objective",
                        "Value #sli": f"success ({SLO_PERIOD})",
                        "Value #budget": "error budget left",
                        "Value #burn1h": "burn rate 1h",
                        "Value #burn6h": "burn rate 6h",
                    },
                },
            )
        )
        .unit("percentunit")
        .decimals(3)
        .override_by_regexp(
            "burn rate.*",
            [
                dm.DynamicConfigValue(id_val="unit", value="none"),
                dm.DynamicConfigValue(id_val="decimals", value=2),
                dm.DynamicConfigValue(
                    id_val="thresholds",
                    value=_thresholds(
                        [
                            dm.Threshold(value=None, color="green"),
                            dm.Threshold(value=1, color="orange"),
                            dm.Threshold(value=6, color="red"),
                        ]
                    ).build(),
                ),
                dm.DynamicConfigValue(
                    id_val="custom.cellOptions",
                    value=cm.TableColoredBackgroundCellOptions(mode=cm.TableCellBackgroundDisplayMode.BASIC),
                ),
            ],
        )
        .override_by_name(
            "error budget left",
            [
                dm.DynamicConfigValue(
                    id_val="thresholds",
                    value=_thresholds(
                        [
                            dm.Threshold(value=None, color="red"),
                            dm.Threshold(value=0.25, color="orange"),
                            dm.Threshold(value=0.5, color="green"),
                        ]
                    ).build(),
                ),
                dm.DynamicConfigValue(
                    id_val="custom.cellOptions",
                    value=cm.TableColoredBackgroundCellOptions(mode=cm.TableCellBackgroundDisplayMode.BASIC),
                ),
            ],
        )
        .height(10)
        .span(24)
    )
    firing = (
        stat.Panel()
        .title("Burn-rate alerts firing")
        .datasource(_DS)
        .with_target(
            _query(
                f'count(ALERTS{{alertname="ProberErrorBudgetBurn", alertstate="firing", {CLUSTER}}})'
                " or vector(0)"
            )
        )
        .thresholds(
            _thresholds([dm.Threshold(value=None, color="green"), dm.Threshold(value=1, color="red")])
        )
        .height(5)
        .span(6)
    )
    objective = (
        stat.Panel()
        .title("Objective")
        .datasource(_DS)
        .with_target(_query('prober:slo_objective:ratio{path="$path"}'))
        .unit("percentunit")
        .decimals(2)
        .height(5)
        .span(4)
    )
    budget = (
        stat.Panel()
        .title(f"Error budget left ({SLO_PERIOD})")
        .datasource(_DS)
        .with_target(_query(f'prober:slo_error_budget_remaining:ratio{{{CLUSTER}, path="$path"}}'))
        .unit("percentunit")
        .decimals(1)
        .thresholds(
            _thresholds(
                [
                    dm.Threshold(value=None, color="red"),
                    dm.Threshold(value=0.25, color="orange"),
                    dm.Threshold(value=0.5, color="green"),
                ]
            )
        )
        .height(5)
        .span(4)
    )
    burn = (
        timeseries.Panel()
        .title("Burn rate per alert window")
        .description(
            "Error ratio over the window divided by the error budget (1 - objective). The alerts page at "
            + ", ".join(
                f"{a.factor:g}x over {a.long_window}" for a in BURN_RATE_ALERTS if a.severity == "critical"
            )
            + " and open a ticket at "
            + ", ".join(
                f"{a.factor:g}x over {a.long_window}" for a in BURN_RATE_ALERTS if a.severity != "critical"
            )
            + " (each with its short window)."
        )
        .datasource(_DS)
        .unit("none")
        .thresholds(
            _thresholds(
                [
                    dm.Threshold(value=None, color="green"),
                    dm.Threshold(value=1, color="orange"),
                    dm.Threshold(value=6, color="red"),
                ]
            )
        )
        .height(5)
        .span(16)
    )
    for i, w in enumerate(windows):
        burn = burn.with_target(
            _query(
                f'prober:slo_burn_rate:rate{w}{{{CLUSTER}, path="$path"}}', ref=chr(ord("A") + i), legend=w
            )
        )
    ratio = (
        timeseries.Panel()
        .title("Success ratio vs objective")
        .datasource(_DS)
        .with_target(
            _query(
                f'1 - prober:probe_error_ratio:rate5m{{{CLUSTER}, path="$path"}}',
                ref="A",
                legend="success (5m)",
            )
        )
        .with_target(
            _query(
                f'1 - prober:probe_error_ratio:rate1h{{{CLUSTER}, path="$path"}}',
                ref="B",
                legend="success (1h)",
            )
        )
        .with_target(_query('prober:slo_objective:ratio{path="$path"}', ref="C", legend="objective"))
        .unit("percentunit")
        .max(1)
        .height(7)
        .span(24)
    )
    builder = (
        db.Dashboard("prober / SLOs")
        .uid(SLO_UID)
        .description("Objectives, error budgets and burn rates per path. Generated by prober.dashboards.")
        .tags(_TAGS)
        .time("now-7d", "now")
        .refresh("1m")
        .with_variable(_datasource_var())
        .with_variable(_cluster_var())
        .with_variable(_query_var("path", "Path", "label_values(prober:slo_objective:ratio, path)"))
        .link(
            db.DashboardLink("prober")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["prober"])
            .as_dropdown(True)
            .keep_time(True)
        )
        .with_panel(summary)
        .with_panel(firing)
        .with_row(db.Row("$path").repeat("path"))
        .with_panel(objective)
        .with_panel(budget)
        .with_panel(burn)
        .with_panel(ratio)
    )
    return builder.build()


def overview_dashboard() -> dm.Dashboard:
    count = (
        stat.Panel()
        .title("Active findings")
        .datasource(_DS)
        .with_target(_query(f"count(prober_finding{{{CLUSTER}}} > 0) or vector(0)"))
        .thresholds(
            _thresholds([dm.Threshold(value=None, color="green"), dm.Threshold(value=1, color="red")])
        )
        .height(5)
        .span(4)
    )
    nodes = (
        stat.Panel()
        .title("Nodes in inventory")
        .datasource(_DS)
        .with_target(_query(f"sum(max by (cluster) (prober_inventory_nodes{{{CLUSTER}}}))"))
        .height(5)
        .span(4)
    )
    agents = (
        stat.Panel()
        .title("Agents exporting metrics")
        .datasource(_DS)
        .with_target(_query(f"count by (kind) (prober_agent_info{{{CLUSTER}}})", legend="{{kind}}"))
        .height(5)
        .span(4)
    )
    inventory_up = (
        stat.Panel()
        .title("Inventory source")
        .datasource(_DS)
        .with_target(_query(f"min(prober_inventory_source_up{{{CLUSTER}}})"))
        .mappings(
            [
                dm.ValueMap(
                    options={
                        "0": dm.ValueMappingResult(text="down", color="red"),
                        "1": dm.ValueMappingResult(text="up", color="green"),
                    }
                )
            ]
        )
        .height(5)
        .span(4)
    )
    ingest = (
        stat.Panel()
        .title("Probes ingested /s")
        .datasource(_DS)
        .with_target(_query(f"sum(rate(prober_ingested_probes_total{{{CLUSTER}}}[5m]))"))
        .unit("reqps")
        .height(5)
        .span(4)
    )
    rejected = (
        stat.Panel()
        .title("Records rejected (1h)")
        .datasource(_DS)
        .with_target(_query(f"sum(increase(prober_ingest_rejected_records_total{{{CLUSTER}}}[1h]))"))
        .thresholds(
            _thresholds([dm.Threshold(value=None, color="green"), dm.Threshold(value=1, color="orange")])
        )
        .height(5)
        .span(4)
    )
    findings = (
        timeseries.Panel()
        .title("Findings over time (1 while active)")
        .description(
            "One line per active finding (kind, node). The collector's GET /api/v1/findings has the "
            "evidence and the fix; each kind also has an alert with the fix in its annotation."
        )
        .datasource(_DS)
        .with_target(
            _query(
                f"max by (cluster, kind, node) (prober_finding{{{CLUSTER}}})",
                legend="{{cluster}} {{kind}} {{node}}",
            )
        )
        .draw_style(cm.GraphDrawStyle.BARS)
        .min(0)
        .max(1)
        .height(8)
        .span(24)
    )
    paths = (
        timeseries.Panel()
        .title("Success ratio per path (5m)")
        .datasource(_DS)
        .with_target(
            _query(f"1 - prober:probe_error_ratio:rate5m{{{CLUSTER}}}", legend="{{cluster}} {{path}}")
        )
        .unit("percentunit")
        .max(1)
        .height(8)
        .span(12)
    )
    outcomes = (
        timeseries.Panel()
        .title("Failed probes by outcome /s")
        .datasource(_DS)
        .with_target(
            _query(
                f'sum by (outcome) (rate(prober_ingested_probes_total{{{CLUSTER}, outcome!="ok"}}[5m]))'
                " or vector(0)",
                legend="{{outcome}}",
            )
        )
        .unit("reqps")
        .height(8)
        .span(12)
    )
    buffers = (
        timeseries.Panel()
        .title("Agent report buffers (records waiting)")
        .datasource(_DS)
        .with_target(
            _query(
                f"max by (cluster, node, kind) (prober_report_buffer_records{{{CLUSTER}}}"
                " * on (cluster, instance) group_left (node, kind) prober_agent_info)",
                legend="{{node}} {{kind}}",
            )
        )
        .height(8)
        .span(8)
    )
    dropped = (
        timeseries.Panel()
        .title("Results dropped by agents /s")
        .datasource(_DS)
        .with_target(
            _query(f"sum(rate(prober_report_dropped_records_total{{{CLUSTER}}}[5m]))", legend="dropped")
        )
        .unit("reqps")
        .height(8)
        .span(8)
    )
    pinglist_age = (
        timeseries.Panel()
        .title("Oldest pinglist (s)")
        .datasource(_DS)
        .with_target(
            _query(
                f"max by (kind) (prober_pinglist_age_seconds{{{CLUSTER}}}"
                " * on (cluster, instance) group_left (kind) prober_agent_info)",
                legend="{{kind}}",
            )
        )
        .unit("s")
        .height(8)
        .span(8)
    )
    builder = (
        db.Dashboard("prober / overview")
        .uid(OVERVIEW_UID)
        .description("Active findings and the health of the prober mesh. Generated by prober.dashboards.")
        .tags(_TAGS)
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(_datasource_var())
        .with_variable(_cluster_var())
        .link(
            db.DashboardLink("prober")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["prober"])
            .as_dropdown(True)
            .keep_time(True)
        )
        .with_panel(count)
        .with_panel(nodes)
        .with_panel(agents)
        .with_panel(inventory_up)
        .with_panel(ingest)
        .with_panel(rejected)
        .with_panel(findings)
        .with_panel(paths)
        .with_panel(outcomes)
        .with_row(db.Row("Agents"))
        .with_panel(buffers)
        .with_panel(dropped)
        .with_panel(pinglist_age)
        .with_panel(
            text.Panel()
            .title("About")
            .content(
                "prober probes every path between every pair of nodes. **prober / matrix** shows which "
                "pairs fail, **prober / SLOs** how much error budget each path has left. The collector "
                "serves the same live matrix without Grafana at its own `/`."
            )
            .height(4)
            .span(24)
        )
    )
    return builder.build()


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → dashboard JSON document, for every prober dashboard."""
    built = {
        "prober-matrix.json": matrix_dashboard(),
        "prober-slo.json": slo_dashboard(),
        "prober-overview.json": overview_dashboard(),
    }
    return {name: _to_json(d) for name, d in built.items()}


def _to_json(d: dm.Dashboard) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(d, cls=JSONEncoder))
    # Panel ids: stable and unique, so links and provisioning keep working across
    # regenerations.
    for i, panel in enumerate(doc.get("panels", []), start=1):
        panel["id"] = i
    # Variables get ids the SDK leaves as zero UUIDs; Grafana keys them by name.
    for var in doc.get("templating", {}).get("list", []):
        var.pop("id", None)
    return doc


def panel_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query in a dashboard document."""
    out: list[tuple[str, str]] = []
    for panel in doc.get("panels", []):
        out.extend((panel.get("title", ""), t["expr"]) for t in panel.get("targets") or [] if t.get("expr"))
    return out
