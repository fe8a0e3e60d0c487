"""Every dashboard query and every recording rule returns data from a real Prometheus.

A mesh runs on loopback (a collector and the pod and host agents of three nodes; a
fourth node is in the inventory without agents, so probes to it fail and the
dashboards have failing pairs to show). A real Prometheus scrapes it every second
with prober's rules loaded. The test then asks Prometheus's HTTP API for every
recording rule's series and for every panel query of every generated dashboard,
with the dashboard variables replaced by real values, and fails on any that comes
back empty (but the zone-findings panel, which has data only while a finding names
zones: the second test feeds the collector a zone partition and reads the zone panels).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from prober.dashboards import dashboards, panel_queries
from prober.records import encode_records
from prober.slo import recorded_series, rule_groups
from tests.integration.mesh import mesh_nodes, partition_probes, running_mesh
from tests.integration.prometheus_server import Prometheus, prometheus

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/prober-rules.yaml"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
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
#: Panels empty while no finding names a zone (read by the partition test below).
ZONE_FINDINGS_PANEL = "Zone \u00d7 zone: findings naming zones (now)"
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
        # Rounds of 2 s with a 1.5 s timeout: the healthy pairs must read exactly 1 below,
        # and CI runs these tests at nice 19 beside the lab, where a 0.5 s timeout is
        # missed now and then by an agent waiting for the CPU. The missing node-d is
        # refused at once, whatever the timeout.
        running_mesh(tmp_path / "mesh", nodes, interval_s=2.0, timeout_s=1.5) as mesh,
        prometheus(
            tmp_path / "prometheus",
            jobs={"prober-agent": mesh.agent_addrs, "prober-collector": [mesh.collector_addr]},
            rule_files=[RULES],
            target_labels={"cluster": "test-1"},
        ) as prom,
    ):
        # Data flows: agents probe, report, the collector exports the matrix, rules evaluate.
        prom.wait_for('prober_pair_success_ratio{path="pod-to-pod", dst_node="node-d"} < 1', timeout_s=45)
        # The agents start one after another: a probe of node-b sent before node-b's agent
        # listens fails, and stays in the matrix window (30 s). On a slow machine every
        # source's first probes of node-b can fail, so wait out the window.
        prom.wait_for('prober_pair_success_ratio{path="pod-to-pod", dst_node="node-b"} == 1', timeout_s=60)
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
                if title == ZONE_FINDINGS_PANEL:
                    continue
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


def zone_cells(prom: Prometheus, expr: str, field: str = "value") -> dict[tuple[str, str], str]:
    out = {}
    for r in prom.query(expr):
        m = r["metric"]
        out[m["src_zone"], m["dst_zone"]] = m["kind"] if field == "kind" else r["value"][1]
    return out


def test_the_zone_panels_show_a_zone_partition(tmp_path: Path) -> None:
    """A collector of three zones of two nodes is fed pod-to-pod probes that all time out
    between zone-1 and zone-2 and succeed elsewhere (for as long as the test reads); a real
    Prometheus scrapes it. The zone x zone success panel's PromQL gives 0 for the two
    partitioned cells and 1 for the others, and the zone-findings panel's names
    zone-partition on exactly those two cells."""
    nodes = mesh_nodes(["zone-1", "zone-1", "zone-2", "zone-2", "zone-3", "zone-3"])
    cut = {("zone-1", "zone-2"), ("zone-2", "zone-1")}

    def batch(now: float) -> bytes:
        return encode_records(partition_probes(nodes, cut, start=now - 2, step_s=0.1, count=10))

    async def feed(url: str, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            while not stop.is_set():
                async with http.post(f"{url}/api/v1/results", data=batch(time.time())) as resp:
                    assert (await resp.json())["rejected"] == 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)

    [doc] = [d for f, d in dashboards().items() if "matrix" in f]
    panels = dict(panel_queries(doc))
    values = {**VARIABLES, "path": "pod-to-pod", "window": "1m"}
    success = substitute(panels["$path: zone \u00d7 zone success ratio (mean over $window)"], values)
    found = substitute(panels[ZONE_FINDINGS_PANEL], values)
    with (
        running_mesh(tmp_path / "mesh", nodes, agents=False, window_s=60) as mesh,
        prometheus(
            tmp_path / "prometheus",
            jobs={"prober-collector": [mesh.collector_addr]},
            rule_files=[RULES],
            target_labels={"cluster": "test-1"},
        ) as prom,
    ):

        async def run() -> None:
            stop = asyncio.Event()
            feeding = asyncio.create_task(feed(mesh.collector_url, stop))
            try:
                deadline = time.monotonic() + 45
                while time.monotonic() < deadline:
                    if len(zone_cells(prom, found, "kind")) == 2 and len(zone_cells(prom, success)) == 9:
                        break
                    await asyncio.sleep(1.0)
            finally:
                stop.set()
                await feeding

        asyncio.run(run())
        assert zone_cells(prom, found, "kind") == dict.fromkeys(cut, "zone-partition")
        ratios = zone_cells(prom, success)
        assert {k: float(v) for k, v in ratios.items() if k in cut} == dict.fromkeys(cut, 0.0)
        others = {k: float(v) for k, v in ratios.items() if k not in cut}
        assert len(others) == 7
        assert set(others.values()) == {1.0}
