"""What a results post costs the collector beyond its records: the price of production's request rate.

``bench/collector_scale.py`` sends every ~11 agents' posts as one request (at most ~100
requests a second, what one process here can send in real time beside the collector),
which states the collector's cost per record but not per request. In production every
agent posts its own results every 2 s (``--flush-s``), or less often in a large mesh
(the mesh's ``report_interval_s``): ~1,000 requests a second at 1,000 nodes and at
5,000 (every 10 s there).

This bench holds the records a second fixed and varies how many go in a request:

1. A real ``prober collector`` with an EKS-like ``--nodes`` inventory (as
   ``collector_scale.py`` runs it), listening on 127.0.0.1.
2. One round of the production schedule's records (``tests/synth.py``), grouped as each
   agent's reporter posts them (one agent's results of ``--flush-s``), then every
   ``n`` consecutive posts sent as one request, for each ``n`` of ``--coalesce`` in
   turn (default 100, 1, 100, 1, 10: production's requests, 1, between fewer and
   larger ones, so that the passes' cost, which grows while the long window fills,
   weighs on both alike).
3. Each setting posts ``--records-per-s`` records a second, restamped to now, for
   ``--seconds``; the collector's CPU (``/proc``) is read over the setting's steady
   part (after ``--warmup``). The collector's passes run as always; the records a
   second, and so what they cost, are the same in every setting.

Prints each setting's requests and records a second and the collector's cores; the
CPU per request and per record (least squares over the settings); and what
production's request rate (``agents / flush_s``) would cost at 1,000 and 5,000 nodes.
Bounded: about ``len(coalesce) * seconds`` plus the generation (~10 s at 1,000 nodes).

    PYTHONPATH=. python bench/collector_posts.py [--nodes 1000] [--coalesce 100 1 100 1 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import msgspec
import numpy as np
from collector_scale import Batch, batches_of, coalesce, collector, cpu_s, free_port, restamp, wait_ready

from prober.model import ProbeResult
from prober.schedule import SchedulePolicy
from tests.synth import START_TS, Cluster, simulate


def records_of_a_round(cluster: Cluster) -> list[ProbeResult]:
    return simulate(cluster, rounds=1, seed=1, start_ts=START_TS).records


async def post_for(
    url: str, batches: Sequence[Batch], *, records_per_s: float, seconds: float
) -> tuple[int, int, int, float]:
    """Post ``batches`` in a loop at ``records_per_s``, restamped to now, for ``seconds``:
    (requests, records, refused or failed requests, seconds taken)."""
    rate = records_per_s / (sum(b.records for b in batches) / len(batches))  # requests a second
    sent = records = bad = 0
    inflight: set[asyncio.Task[None]] = set()
    limit = asyncio.Semaphore(64)
    start = time.monotonic()

    async def post(session: aiohttp.ClientSession, b: Batch) -> None:
        nonlocal bad
        async with limit:
            body = restamp(b, int(time.time()) - b.seconds[0])
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/x-ndjson"}
                ) as resp:
                    await resp.read()
                    bad += resp.status != 200
            except (aiohttp.ClientError, OSError):
                bad += 1

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                b = batches[sent % len(batches)]
                task = asyncio.create_task(post(session, b))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                sent += 1
                records += b.records
            await asyncio.sleep(max(0.0, start + due / rate - time.monotonic()))
        if inflight:
            await asyncio.wait(inflight)
    return sent, records, bad, time.monotonic() - start


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000, help="cluster size (default 1000)")
    ap.add_argument("--coalesce", type=int, nargs="+", default=[100, 1, 100, 1, 10],
                    help="agents' posts sent as one request, a setting each, in turn "
                    "(default 100 1 100 1 10)")  # fmt: skip
    ap.add_argument("--records-per-s", type=float, default=5000.0,
                    help="records posted a second in every setting (default 5000)")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=30.0, help="each setting's length (default 30)")
    ap.add_argument("--warmup", type=float, default=10.0, help="a setting's first seconds, not measured")
    ap.add_argument("--flush-s", type=float, default=2.0, help="the agents' flush interval (default 2)")
    args = ap.parse_args()
    if args.warmup >= args.seconds:
        ap.error("--warmup must be shorter than --seconds")
    if len(set(args.coalesce)) < 2 or min(args.coalesce) < 1:
        ap.error("--coalesce needs two different values, each at least 1: the fit compares them")
    return args


def main() -> None:
    args = parse_args()
    cluster = Cluster(n_nodes=args.nodes)
    t0 = time.perf_counter()
    records = records_of_a_round(cluster)
    posts = batches_of(records, t0=START_TS, flush_s=args.flush_s, timeout_s=cluster.timeout_s)
    posts.sort(key=lambda b: b.at)
    per_post = len(records) / len(posts)
    print(f"{args.nodes} nodes ({2 * args.nodes} agents): one round of {len(records):,} records in "
          f"{len(posts):,} agents' posts ({per_post:.1f} records a post), made in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="prober-posts-") as tmp:
        inv = Path(tmp) / "inventory.json"
        inv.write_bytes(msgspec.json.encode(cluster.inventory()))
        port = free_port()
        log = Path(tmp) / "collector.log"
        state = Path(tmp) / "state"
        state.mkdir()
        with collector(inv, port, log, state_dir=state) as proc:
            base = f"http://127.0.0.1:{port}"
            wait_ready(proc, base, port, log)
            os.nice(5)  # the senders yield to the collector (which started at our priority)
            rows: list[tuple[int, float, float, float, int]] = []
            for n in args.coalesce:
                batches = coalesce(posts, n)

                async def run(batches: list[Batch] = batches) -> tuple[int, int, int, float, float, float]:
                    task = asyncio.create_task(
                        post_for(
                            base + "/api/v1/results",
                            batches,
                            records_per_s=args.records_per_s,
                            seconds=args.seconds,
                        )
                    )
                    await asyncio.sleep(args.warmup)
                    c0, w0 = cpu_s(proc.pid), time.monotonic()
                    await asyncio.sleep(args.seconds - args.warmup)
                    c1, w1 = cpu_s(proc.pid), time.monotonic()
                    sent, recs, bad, took = await task
                    return sent, recs, bad, took, (c1 - c0) / (w1 - w0), w1 - w0

                sent, recs, bad, took, cores, _ = asyncio.run(run())
                req_s, rec_s = sent / took, recs / took
                rows.append((n, req_s, rec_s, cores, bad))
                print(f"  {n:>4} posts a request: {req_s:8.1f} requests/s, {rec_s:8.0f} records/s, "
                      f"collector {cores:.3f} cores, {bad} refused or failed", flush=True)  # fmt: skip
            if proc.poll() is not None:
                sys.exit(f"the collector exited:\n{log.read_text()[-2000:]}")
    a = np.array([[r[1], r[2]] for r in rows])
    y = np.array([r[3] for r in rows])
    # cores = per_request * requests/s + per_record * records/s + fixed (the passes)
    design = np.column_stack([a[:, 0], np.ones(len(rows))])
    (per_request, fixed), *_ = np.linalg.lstsq(design, y, rcond=None)
    print(f"collector CPU per request beyond its records: {per_request * 1e3:.2f} ms "
          f"(least squares over {len(rows)} settings at {args.records_per_s:g} records/s; "
          f"the rest, {fixed:.3f} cores, is the records' and the passes')")  # fmt: skip
    for nodes in (1000, 5000):
        every_s = SchedulePolicy().report_interval(2 * nodes)  # what the mesh tells the agents
        req = 2 * nodes / every_s
        print(f"  production at {nodes:,} nodes: {req:,.0f} requests/s (2 agents a node, a post each every "
              f"{every_s:g} s, the mesh's report_interval_s): {per_request * req:.2f} cores for the requests "
              "alone")  # fmt: skip
    rows_out = [
        {"coalesce": n, "requests_per_s": round(rps, 1), "records_per_s": round(rec), "cores": round(c, 3)}
        | {"bad": bad}
        for n, rps, rec, c, bad in rows
    ]
    per_request_ms = round(float(per_request) * 1e3, 3)
    print(json.dumps({"nodes": args.nodes, "per_request_ms": per_request_ms, "rows": rows_out}))


if __name__ == "__main__":
    main()
