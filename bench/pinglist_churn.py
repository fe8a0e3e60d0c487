"""One node joins a large cluster: what the collector's event loop spends on pinglists.

A real collector (``CollectorService`` behind its aiohttp API, on 127.0.0.1) holds an
EKS-like inventory of N nodes (``tests/inventories.py``: two agents a node, three
zones, the Services, NodePort, NLB, DNS and an external target). A second process
plays every agent's pinglist poll over real HTTP, as the agent does it once per
interval: ``GET /api/v1/pinglist/{agent}`` with ``If-None-Match``, and
``GET /api/v1/mesh`` only when that answer announces a mesh version other than the
agent's, asking for a delta from the mesh it holds (``A-IM``: an answer ``226`` is the
delta) (64 connections, kept alive; bodies read, not decoded). Then:

1. warm-up: every agent fetches both documents once;
2. steady state: one poll of every agent with nothing changed (all 304): the cost that
   is paid every interval whatever happens;
3. one node (two agents) joins: the new inventory goes to the collector (pinglists
   built and encoded in a thread), then one poll of every agent, newcomers included.

For steps 2 and 3 it prints the CPU time of the event loop's thread (``thread_time``
read on the loop; the builder's thread is counted apart), the answers by status, the
bytes served, and how many agents' own documents changed. "Spent on the change" is
step 3 minus step 2: the goal is at most 0.5 s at 1,000 nodes and 2 s at 5,000.

    PYTHONPATH=. python bench/pinglist_churn.py [--nodes 1000 5000]

Bounded: one warm-up and two polls per cluster size, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

GOALS = {1000: 0.5, 5000: 2.0}

CLIENT = r"""
import asyncio, json, sys, time
import aiohttp

async def main():
    url, names = sys.argv[1], json.loads(sys.stdin.readline())
    etags = {}
    conn = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=conn, auto_decompress=False) as s:
        async def get(path, key, **extra):
            headers = {"Accept-Encoding": "gzip", **extra}
            if key in etags:
                headers["If-None-Match"] = etags[key]
            async with s.get(url + path, headers=headers) as r:
                body = await r.read()
                if r.status in (200, 226):
                    etags[key] = r.headers["ETag"]
                return r.status, len(body), r.headers.get("X-Prober-Mesh-Version")

        async def agent(name):  # as the agent does: its own ETags, the mesh only when announced
            status, size, mesh_now = await get("/api/v1/pinglist/" + name, name)
            answers = [(status, size)]
            if mesh_now is None or mesh_now != etags.get(name + " mesh"):
                delta = {"A-IM": "prober-mesh-delta"}
                answers.append((await get("/api/v1/mesh", name + " mesh", **delta))[:2])
            return answers

        for line in sys.stdin:
            names += json.loads(line)
            before = {n: etags.get(n) for n in names}
            t0 = time.perf_counter()
            answers = await asyncio.gather(*(agent(n) for n in names))
            statuses, sent = {}, 0
            for pair in answers:
                for status, size in pair:
                    statuses[status] = statuses.get(status, 0) + 1
                    sent += size
            changed = sum(1 for n in names if before[n] != etags.get(n))
            print(json.dumps({"wall_s": time.perf_counter() - t0, "statuses": statuses,
                              "bytes": sent, "heads_changed": changed}), flush=True)

asyncio.run(main())
"""


class PushedInventory:
    """An inventory source the benchmark pushes to."""

    def __init__(self, first: object) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.queue.put_nowait(first)

    async def updates(self) -> AsyncIterator[object]:
        while True:
            yield await self.queue.get()


async def one_size(n: int) -> dict[str, object]:
    from prometheus_client import CollectorRegistry

    from prober.collector.http import Collector
    from prober.collector.service import CollectorService
    from prober.collector.settings import CollectorSettings
    from prober.schedule import SchedulePolicy, pinglist_factory
    from tests.inventories import EksCluster

    shape = EksCluster(n_nodes=n + 1)
    before, after = shape.inventory(nodes=range(n)), shape.inventory()
    newcomers = [a.name for a in after.agents if a.node == shape.node_name(n)]
    names = [a.name for a in before.agents]
    service = CollectorService(
        CollectorSettings(inventory="bench"),
        pinglists=pinglist_factory(SchedulePolicy()),
        registry=CollectorRegistry(),
    )
    source = PushedInventory(before)
    async with Collector(service).serving(source, host="127.0.0.1", port=0) as url:  # type: ignore[arg-type]
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert client.stdin is not None
        assert client.stdout is not None

        async def poll(extra: list[str]) -> dict[str, object]:
            assert client.stdin is not None
            assert client.stdout is not None
            client.stdin.write((json.dumps(extra) + "\n").encode())
            await client.stdin.drain()
            return dict(json.loads(await client.stdout.readline()))

        client.stdin.write((json.dumps(names) + "\n").encode())
        warm = await poll([])
        cpu0 = time.thread_time()
        steady = await poll([])
        steady_cpu = time.thread_time() - cpu0
        mesh_before = service.mesh()
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        source.queue.put_nowait(after)
        while service.mesh() is mesh_before:  # noqa: ASYNC110 - the builder's thread swaps it in
            await asyncio.sleep(0.005)
        built_s = time.perf_counter() - wall0
        changed = await poll(newcomers)
        change_cpu = time.thread_time() - cpu0
        client.stdin.close()
        await client.wait()
    mesh = service.mesh()
    assert mesh is not None
    return {
        "nodes": n,
        "agents": len(names),
        "mesh_gzip_bytes": len(mesh[1]),
        "warm": warm,
        "steady": steady,
        "steady_loop_cpu_s": round(steady_cpu, 3),
        "change": changed,
        "change_build_wall_s": round(built_s, 3),
        "change_loop_cpu_s": round(change_cpu, 3),
        "spent_on_change_s": round(change_cpu - steady_cpu, 3),
        "goal_s": GOALS.get(n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    for n in args.nodes:
        r = asyncio.run(one_size(n))
        change = r["change"]
        assert isinstance(change, dict)
        statuses = Counter({int(k): v for k, v in change["statuses"].items()})
        print(
            f"{n:>5} nodes, {r['agents']} agents, mesh {int(r['mesh_gzip_bytes']) / 1e3:.0f} kB gzip: "  # type: ignore[call-overload]
            f"steady poll: loop {r['steady_loop_cpu_s']} s CPU; "
            f"one node joins: built in {r['change_build_wall_s']} s (thread), "
            f"{change['heads_changed']} agents' own pinglists changed, answers {dict(statuses)}, "
            f"{change['bytes'] / 1e6:.0f} MB sent, loop {r['change_loop_cpu_s']} s CPU; "
            f"spent on the change {r['spent_on_change_s']} s (goal <= {r['goal_s']} s)"
        )
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
