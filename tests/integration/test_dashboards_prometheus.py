"""Every dashboard query and every recording rule returns data from a real Prometheus.

A mesh runs on loopback (a collector and the pod and host agents of three nodes; a
fourth node is in the inventory without agents, so probes to it fail and the
dashboards have failing pairs to show). A real Prometheus scrapes it every second
with prober's rules loaded. The test then asks Prometheus's HTTP API for every
recording rule's series and for every panel query of every generated dashboard,
with the dashboard variables replaced by real values, and fails on any that comes
back empty.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from prober.dashboards import dashboards, panel_queries
from prober.slo import recorded_series, rule_groups
from tests.integration.mesh import mesh_nodes, running_mesh
from tests.integration.prometheus_server import Prometheus, prometheus

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/prober-rules.yaml"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="prometheus not installed (Debian 'prometheus')"
    ),
]

#: What a user would pick in each dashboard variable.
VARIABLES = {
    "cluster": "test-1",
    "kind": "pod",
    "path": "pod-to-pod",
    "src_zone": ".*",  # the variables' "All"
    "dst_zone": ".*",
    "window": "5m",
}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace ``$var``, ``${var}`` and ``${var:format}`` as Grafana does for a single value."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values[name] if name in values else m.group(0)

    out = _VAR.sub(one, expr)
    assert "$" not in out, f"unsubstituted variable in {out!r}"
    return out


def variable_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(variable name, ``label_values(selector, label)``) for every query variable."""
    return [(v["name"], v["query"]) for v in doc["templating"]["list"] if v["type"] == "query"]


def label_values(prom: Prometheus, query: str) -> list[str]:
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
    assert m is not None, query
    return prom.label_values(m.group(2), match=m.group(1))


def test_every_panel_query_and_recording_rule_returns_data(tmp_path: Path) -> None:
    nodes = mesh_nodes(["zone-1", "zone-1", "zone-2", "zone-2"], missing=["node-d"])
    with (
        running_mesh(tmp_path / "mesh", nodes) as mesh,
        prometheus(
            tmp_path / "prometheus",
            jobs={"prober-agent": mesh.agent_addrs, "prober-collector": [mesh.collector_addr]},
            rule_files=[RULES],
            target_labels={"cluster": "test-1"},
        ) as prom,
    ):
        # Data flows: agents probe, report, the collector exports the matrix, rules evaluate.
        prom.wait_for('prober_pair_success_ratio{path="pod-to-pod", dst_node="node-d"} < 1', timeout_s=45)
        prom.wait_for('prober_pair_success_ratio{path="pod-to-pod", dst_node="node-b"} == 1', timeout_s=10)
        prom.wait_for('prober:slo_error_budget_remaining:ratio{path="pod-to-pod"}', timeout_s=15)
        prom.wait_for("prober_finding", timeout_s=20)

        groups = rule_groups()
        loaded = {r["name"] for g in prom.rule_groups() for r in g["rules"]}
        assert loaded == {r.get("record") or r["alert"] for g in groups for r in g["rules"]}

        # name -> PromQL; rate() and increase() need two scrapes of a series, and a
        # loaded machine may be a scrape or two behind, so empties are asked again
        # until a shared deadline instead of failing on the first look.
        queries: dict[str, str] = {f"recording rule {name}": name for name in recorded_series(groups)}
        for file, doc in dashboards().items():
            for var, query in variable_queries(doc):
                values = label_values(prom, substitute(query, VARIABLES))
                if not values:
                    queries[f"{file}: variable {var}: {query}"] = ""
                elif var in VARIABLES and VARIABLES[var] != ".*":
                    assert VARIABLES[var] in values, (file, var, values)
            for title, expr in panel_queries(doc):
                q = substitute(expr, VARIABLES)
                queries[f"{file}: {title}: {q}"] = q
        panels = sum(1 for q in queries if not q.startswith("recording rule") and queries[q])
        assert panels >= 25

        deadline = time.monotonic() + 20
        empty = [name for name, q in queries.items() if not q or not prom.query(q)]
        while empty and time.monotonic() < deadline:
            time.sleep(1)
            empty = [name for name in empty if not queries[name] or not prom.query(queries[name])]
        assert not empty, "queries without data:\n" + "\n".join(empty)
