"""Sweeps through a real collector: orders ride on pinglist answers, results come back.

The agents here are clients doing exactly what an agent does about sweeps (fetch the
pinglist, deliver for each order): fine, down, silent, unfinished, foreign.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import msgspec

from prober.collector.sweep import SweepStatus
from prober.model import Matrix, Outcome, ProbeResult
from prober.pinglist import SweepOrder
from tests.integration.collector_helpers import (
    FRESH_S,
    FakeAgent,
    agent,
    closed_port,
    fake_agents,
    probe,
    running_collector,
    three_nodes,
)


def reaches_every_node(src: str, *, failing: str | None = None):  # type: ignore[no-untyped-def]
    """Results of an agent on ``src`` that reached every node once (``failing`` timed out)."""

    def results(order: SweepOrder) -> list[ProbeResult]:
        now = time.time()
        return [
            probe(src, dst, Outcome.TIMEOUT if dst == failing else Outcome.OK, ts=now)
            for dst in ("node-a", "node-b", "node-c")
        ]

    return results


async def start(s: aiohttp.ClientSession, url: str, body: object = None) -> dict[str, object]:
    async with s.post(f"{url}/api/v1/sweeps", json=body) as resp:
        assert resp.status == 202, await resp.text()
        started: dict[str, object] = await resp.json()
        return started


async def wait_done(s: aiohttp.ClientSession, url: str, sweep_id: object) -> SweepStatus:
    async with asyncio.timeout(30):
        while True:
            async with s.get(f"{url}/api/v1/sweeps/{sweep_id}") as resp:
                status = msgspec.json.decode(await resp.read(), type=SweepStatus)
            if status.state != "running":
                return status
            await asyncio.sleep(0.05)


INVENTORY = three_nodes(
    [
        agent("agent-pod-a", "node-a", closed_port()),
        agent("agent-pod-b", "node-b", closed_port()),
        agent("agent-pod-c", "node-c", closed_port()),
        agent("agent-host-c", "node-c", closed_port()),
        agent("agent-host-b", "node-b", closed_port()),
    ]
)


async def test_a_sweep_reports_the_deliveries_and_says_why_agents_failed(tmp_path: Path) -> None:
    fine_a = FakeAgent("agent-pod-a", reaches_every_node("node-a", failing="node-c"))
    fine_b = FakeAgent("agent-pod-b", reaches_every_node("node-b"))
    silent = FakeAgent("agent-host-c", silent=True)
    # claims results of node-a: only its own node's count
    unfinished = FakeAgent("agent-host-b", reaches_every_node("node-a"), unfinished=True)
    async with (
        running_collector(tmp_path, INVENTORY, timeout_s=2.0) as (collector, url),
        fake_agents(url, [fine_a, fine_b, silent, unfinished]),
        aiohttp.ClientSession() as s,
    ):
        began = time.monotonic()
        started = await start(s, url, {"deadline_s": 1.5})
        status = await wait_done(s, url, started["id"])
        assert time.monotonic() - began < 4.0  # the silent agents were not waited for past the deadline
        assert (started["timeout_s"], started["deadline_s"]) == (2.0, 1.5)

        assert status.state == "done"
        assert (status.agents_total, status.agents_done, status.probes) == (5, 5, 6)
        failed = {f.agent: f.error for f in status.agents_failed}
        assert failed == {
            "agent-pod-c": "did not fetch its pinglist within 1.5 s (down, or not reaching the collector)",
            "agent-host-c": "took the sweep but delivered no results within 1.5 s",
            "agent-host-b": "took the sweep but delivered no results within 1.5 s",
        }
        # the agents got the schedule's probe timeout, one order each
        assert [(o.timeout_s, o.rounds) for o in fine_a.orders] == [(2.0, 1)]
        assert unfinished.answers == [
            (
                200,
                {
                    "accepted": 0,
                    "rejected": 3,
                    "errors": [{"line": 0, "error": "3 results not from this agent (pod on node-b)"}],
                },
            )
        ]

        assert status.report is not None
        [pm] = status.report.matrix.paths
        assert (pm.path, pm.sources, pm.sent, pm.ok) == ("pod-to-pod", ["node-a", "node-b", "node-c"], 6, 5)
        ac = next(c for c in pm.cells if (c.src, c.dst) == ("node-a", "node-c"))
        assert ac.outcomes == {"timeout": 1}
        assert status.report.findings == []

        # the sweep's results went into the store too
        await asyncio.sleep(FRESH_S)
        async with s.get(f"{url}/api/v1/matrix") as resp:
            matrix = msgspec.json.decode(await resp.read(), type=Matrix)
        assert matrix.paths[0].sent == 6
        assert collector.registry.get_sample_value("prober_sweeps_total", {"result": "done"}) == 1


async def test_deliveries_the_sweep_does_not_take_are_refused(tmp_path: Path) -> None:
    late = FakeAgent("agent-pod-a", reaches_every_node("node-a"), delay_s=2.5)
    twice = FakeAgent("agent-pod-b", reaches_every_node("node-b"))
    inv = three_nodes([agent("agent-pod-a", "node-a", 1), agent("agent-pod-b", "node-b", 1)])
    async with (
        running_collector(tmp_path, inv, sweep_min_gap_s=0.0) as (_, url),
        fake_agents(url, [late, twice]),
        aiohttp.ClientSession() as s,
    ):
        sweep_id = (await start(s, url, {"deadline_s": 0.5}))["id"]
        async with s.post(f"{url}/api/v1/sweeps/nosuchsweep/results/agent-pod-a", params={"done": "1"}) as r:
            assert (r.status, (await r.json())["error"]) == (404, "no sweep 'nosuchsweep'")
        async with s.post(f"{url}/api/v1/sweeps/{sweep_id}/results/agent-pod-z") as r:
            assert r.status == 404
        status = await wait_done(s, url, sweep_id)
        async with s.post(f"{url}/api/v1/sweeps/{sweep_id}/results/agent-pod-b", params={"done": "1"}) as r:
            assert r.status == 409
            assert "already delivered" in (await r.json())["error"]
        await asyncio.sleep(2.0)
        assert late.answers == [
            (409, {"error": f"sweep {sweep_id} is over: results arrived after its deadline"})
        ]
        assert [f.agent for f in status.agents_failed] == ["agent-pod-a"]


async def test_no_ready_agents_is_409_and_bad_requests_400(tmp_path: Path) -> None:
    inv = three_nodes([msgspec.structs.replace(agent("agent-pod-a", "node-a", 1), ready=False)])
    async with running_collector(tmp_path, inv) as (_, url), aiohttp.ClientSession() as s:
        async with s.post(f"{url}/api/v1/sweeps") as resp:
            assert resp.status == 409
            assert "no ready agents" in (await resp.json())["error"]
        for body in (b"{", b'{"deadline_s": "soon"}', b'{"deadline_s": -1}', b'{"timeout_s": NaN}'):
            async with s.post(f"{url}/api/v1/sweeps", data=body) as resp:
                assert resp.status == 400, body
                assert "bad sweep request" in (await resp.json())["error"]
