"""Prometheus series per node, cluster-wide, and how long a scrape of the collector takes.

For each cluster size N (an EKS-like inventory, ``tests/inventories.py``: 2 agents a
node, three zones, the Services, NodePort, NLB, DNS and an external target), results
at the production schedule (``tests/synth.py``: the real pinglists and round plans,
10 s rounds, the default cluster budget) with faults on (a node unreachable, one at
30% packet loss, a blocked pair), so the matrix has failing cells to export:

* **agents**: one node's pod and host agents' ``AgentMetrics`` are fed that node's
  results and their exposition counted, as scraped (``typical``); ``worst`` adds
  every outcome on every path the agent probes (a counter series each);
* **collector**: a real collector (``CollectorService`` behind its aiohttp API on
  127.0.0.1) is given the results over ``POST /api/v1/results``, asked for its
  findings (so its refresh has run), then ``GET /metrics`` is timed (20 scrapes) and
  its series counted, and ``GET /api/v1/matrix`` in each view a person looks at
  (``zones``, ``failing``, ``node``: 20 each, one client at a time, no other load).

Series per node = the two agents' + the collector's / N. Goals: <= 50 per node, a
scrape <= 1 s at 1,000 nodes and <= 2 s at 5,000.

    PYTHONPATH=. python bench/metrics_series.py [--nodes 1000 5000] [--rounds 3]

Bounded: a few rounds of results per size, 20 scrapes, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

GOALS_SCRAPE_S = {1000: 1.0, 5000: 2.0}


def series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def families(text: str) -> Counter[str]:
    """Series per metric family (a histogram's buckets, sum and count under its name)."""
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            out[re.sub(r"_(bucket|sum|count)$", "", name)] += 1
    return out


def agent_series(records: list[object], node: str, kind: str, *, worst: bool) -> int:
    from prometheus_client import CollectorRegistry, generate_latest

    from prober.agent.metrics import AgentMetrics
    from prober.model import Outcome, ProbeResult

    reg = CollectorRegistry()
    m = AgentMetrics(registry=reg, node=node, kind=kind, version="bench")
    mine = [
        r for r in records if isinstance(r, ProbeResult) and r.src_node == node and r.src_kind.value == kind
    ]
    for r in mine:
        m.observe(r)
    if worst:
        for path in {r.path for r in mine}:
            for outcome in Outcome:
                m.probes.labels(path, node, outcome.value).inc(0)
    # the agent's runtime sets these at start (batches by result, overruns, echo by proto)
    for result in ("ok", "failed", "rejected"):
        m.batches.labels(result).inc(0)
    for proto in ("http", "udp"):
        m.echo_requests.labels(proto).inc(0)
    return series(generate_latest(reg).decode())


class PushedInventory:
    def __init__(self, first: object) -> None:
        self.first = first

    async def updates(self) -> AsyncIterator[object]:
        yield self.first
        await asyncio.Event().wait()


def _batches(records: list[Any], max_bytes: int) -> list[bytes]:
    """The records encoded in as few bodies as fit ``max_bytes`` each."""
    from prober.records import encode_records

    out: list[bytes] = []
    step = 4096
    i = 0
    while i < len(records):
        body = encode_records(records[i : i + step])
        if len(body) > max_bytes and step > 1:
            step //= 2
            continue
        out.append(body)
        i += step
    return out


async def collector_scrape(
    inv: object, records: list[object], scrapes: int
) -> tuple[str, list[float], dict[str, list[float]]]:
    import aiohttp
    from prometheus_client import CollectorRegistry

    from prober.collector.http import Collector
    from prober.collector.service import CollectorService
    from prober.collector.settings import CollectorSettings
    from prober.model import ProbeResult
    from prober.schedule import SchedulePolicy, pinglist_factory

    service = CollectorService(
        CollectorSettings(inventory="bench", window_s=60.0),
        pinglists=pinglist_factory(SchedulePolicy()),
        registry=CollectorRegistry(),
        clock=lambda: max(r.ts for r in records if isinstance(r, ProbeResult)) + 1.0,
    )
    typed = [r for r in records if isinstance(r, ProbeResult)]
    async with (
        Collector(service).serving(PushedInventory(inv), host="127.0.0.1", port=0) as url,  # type: ignore[arg-type]
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s,
    ):
        # Batches within the collector's body limit (--max-body-bytes), as agents send them.
        for batch in _batches(typed, service.settings.max_body_bytes):
            async with s.post(f"{url}/api/v1/results", data=batch) as r:
                assert r.status == 200, await r.text()
        # findings (the refresh) and the matrix metrics computed on the same window
        await asyncio.sleep(service.settings.refresh_s * 2)
        async with s.get(f"{url}/api/v1/findings") as r:
            assert r.status == 200
        while service.registry.get_sample_value("prober_matrix_window_seconds") is None:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        await asyncio.sleep(service.settings.refresh_s)
        times, text = [], ""
        for _ in range(scrapes):
            t0 = time.perf_counter()
            async with s.get(f"{url}/metrics") as r:
                text = await r.text()
            times.append(time.perf_counter() - t0)
        # the matrix views, as the web page asks for them (each on the cached window)
        views: dict[str, list[float]] = {}
        node = service.node_names()[1]
        for name, params in (
            ("zones", {"view": "zones"}),
            ("failing", {"view": "failing"}),
            ("node", {"view": "node", "node": node}),
        ):
            for _ in range(scrapes):
                t0 = time.perf_counter()
                async with s.get(f"{url}/api/v1/matrix", params=params) as r:
                    body = await r.read()
                    assert r.status == 200, body[:200]
                views.setdefault(name, []).append(time.perf_counter() - t0)
            views[f"{name} bytes"] = [float(len(body))]
    return text, times, views


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument(
        "--agents-only", action="store_true", help="count the agents' series only (no collector run)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.synth import Cluster, Fault, generate

    for n in args.nodes:
        cluster = Cluster(n_nodes=n)
        nodes = cluster.nodes
        t0 = time.perf_counter()
        records = generate(
            cluster,
            rounds=args.rounds,
            faults=[
                Fault(kind="node-unreachable", nodes=(nodes[1],)),
                Fault(kind="packet-loss", nodes=(nodes[2],), rate=0.3),
                Fault(kind="pair-blocked", nodes=(nodes[3], nodes[4])),
            ],
        )
        gen_s = time.perf_counter() - t0
        node = nodes[5]
        typical = agent_series(list(records), node, "pod", worst=False) + agent_series(
            list(records), node, "host", worst=False
        )
        worst = agent_series(list(records), node, "pod", worst=True) + agent_series(
            list(records), node, "host", worst=True
        )
        scraped, times, views = asyncio.run(
            collector_scrape(cluster.inventory(), list(records), args.scrapes)
        )
        collector = series(scraped)
        times.sort()
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
        print(
            f"{n:>5} nodes, {len(records):,} results in {args.rounds} rounds (generated in {gen_s:.0f} s): "
            f"agents of one node {typical} series (every outcome on every path: {worst}); "
            f"collector {collector} series ({collector / n:.1f} per node); "
            f"per node {typical + collector / n:.1f} (worst {worst + collector / n:.1f}; goal <= 50); "
            f"GET /metrics median {statistics.median(times) * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms "
            f"(goal <= {GOALS_SCRAPE_S.get(n, float('nan')) * 1e3:.0f} ms)",
            flush=True,
        )
        top = ", ".join(f"{name} {count:,}" for name, count in families(scraped).most_common(4))
        print(f"      the collector's largest families: {top}", flush=True)
        for name in ("zones", "failing", "node"):
            ts = sorted(views[name])
            print(
                f"      GET /api/v1/matrix?view={name}: median {statistics.median(ts) * 1e3:.0f} ms, "
                f"p99 {ts[min(len(ts) - 1, int(0.99 * len(ts)))] * 1e3:.0f} ms, "
                f"{views[name + ' bytes'][0] / 1e3:.0f} kB",
                flush=True,
            )


if __name__ == "__main__":
    main()
