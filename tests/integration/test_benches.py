"""The benchmarks that drive a real collector still run, at a size that takes seconds.

A benchmark is run by hand, so a change to what it drives can break it unnoticed:
``bench/metrics_series.py`` posted 20,000 results a request, past the collector's body
limit, and stopped at its first post. These run each one small, in its own process as a
user would, and check what it prints, not how fast: the figures are the benchmark's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench(*argv: str, timeout_s: float) -> str:
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_metrics_series_counts_a_small_clusters_series() -> None:
    """Three rounds of 30 nodes are more results than one 2 MiB body holds."""
    out = bench("bench/metrics_series.py", "--nodes", "30", "--rounds", "3", "--scrapes", "2", timeout_s=180)
    line = next(x for x in out.splitlines() if x.lstrip().startswith("30 nodes"))
    counts = re.search(r"agents of one node (\d+) series.*collector (\d+) series", line)
    assert counts is not None, line
    assert int(counts[1]) > 0
    assert int(counts[2]) > 0
    assert "the collector's largest families: prober_" in out
    assert "GET /api/v1/matrix?view=failing" in out


def test_collector_scale_names_the_fault_it_injects_in_a_small_cluster(tmp_path: Path) -> None:
    """40 nodes, 4 rounds of real time, one node unreachable from round 1: the collector
    under the simulated agents names it, and nothing else."""
    out = bench(
        "bench/collector_scale.py",
        "--nodes", "40", "--rounds", "4", "--fault-round", "1", "--faults", "node-unreachable",
        "--drain-s", "20", "--cache", str(tmp_path),
        timeout_s=300,
    )  # fmt: skip
    assert "VALID: the load arrived on schedule" in out, out
    # The machine's other load is measured (beside the other tests it may be any: not asserted).
    assert "other processes took" in out, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["nodes"] == 40
    assert 0 <= result["others_cores"] <= (os.cpu_count() or 1)
    assert result["detect_rounds"]["node-unreachable"] is not None, out
    assert result["extra_findings"] == []
    assert result["loop_lag_p99_s"] > 0
    # as the manifests run it, the collector keeps a snapshot of its windows (every 30 s)
    assert "the windows' snapshot (--state-dir" in out, out
    assert result["state_mib_max"] > 0, out


def test_collector_posts_prices_a_request_in_a_small_cluster() -> None:
    """Every setting's posts are stored (none refused), and the fit says what a request costs."""
    out = bench(
        "bench/collector_posts.py", "--nodes", "30", "--coalesce", "1", "10", "--records-per-s", "300",
        "--seconds", "8", "--warmup", "3", timeout_s=240,
    )  # fmt: skip
    result = json.loads(out.strip().splitlines()[-1])
    assert [r["coalesce"] for r in result["rows"]] == [1, 10]
    assert all(r["bad"] == 0 and r["records_per_s"] > 200 for r in result["rows"]), result
    assert result["rows"][0]["requests_per_s"] > 5 * result["rows"][1]["requests_per_s"]
    assert "collector CPU per request beyond its records" in out
