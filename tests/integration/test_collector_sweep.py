"""Sweeps against fake agents speaking the real ``POST /sweep`` protocol: fine, down, slow, broken."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import msgspec

from prober.collector.sweep import SweepStatus
from prober.model import Matrix, Outcome, ProbeResult
from tests.integration.collector_helpers import (
    FRESH_S,
    FakeAgent,
    agent,
    closed_port,
    probe,
    running_collector,
    three_nodes,
)


def answers_from(src: str, *, failing: str | None = None) -> FakeAgent:
    """An agent on ``src`` that reaches every node once (``failing`` times out)."""

    def results(timeout_s: float) -> list[ProbeResult]:
        now = time.time()
        return [
            probe(src, dst, Outcome.TIMEOUT if dst == failing else Outcome.OK, ts=now)
            for dst in ("node-a", "node-b", "node-c")
        ]

    return FakeAgent(results)


async def sweep_until_done(s: aiohttp.ClientSession, url: str, body: object = None) -> SweepStatus:
    async with s.post(f"{url}/api/v1/sweeps", json=body) as resp:
        assert resp.status == 202
        sweep_id = (await resp.json())["id"]
    return await wait_done(s, url, sweep_id)


async def wait_done(s: aiohttp.ClientSession, url: str, sweep_id: str) -> SweepStatus:
    async with asyncio.timeout(30):
        while True:
            async with s.get(f"{url}/api/v1/sweeps/{sweep_id}") as resp:
                status = msgspec.json.decode(await resp.read(), type=SweepStatus)
            if status.state != "running":
                return status
            await asyncio.sleep(0.05)


async def test_sweep_reports_answers_and_lists_failed_agents(tmp_path: Path) -> None:
    slow = FakeAgent(lambda _: [], delay_s=5.0)
    async with (
        answers_from("node-a", failing="node-c") as fine_a,
        answers_from("node-b") as fine_b,
        slow,
        FakeAgent(lambda _: [], status=503) as broken,
    ):
        inv = three_nodes(
            [
                agent("agent-pod-a", "node-a", fine_a.port),
                agent("agent-pod-b", "node-b", fine_b.port),
                agent("agent-pod-c", "node-c", closed_port()),
                agent("agent-host-c", "node-c", slow.port),
                agent("agent-host-b", "node-b", broken.port),
            ]
        )
        async with (
            running_collector(tmp_path, inv, timeout_s=2.0) as (collector, url),
            aiohttp.ClientSession() as s,
        ):
            started = time.monotonic()
            status = await sweep_until_done(s, url, {"deadline_s": 1.0})
            assert time.monotonic() - started < 5.0  # the slow agent was not waited for

            assert status.state == "done"
            assert (status.agents_total, status.agents_done, status.probes) == (5, 5, 6)
            failed = {f.agent: f.error for f in status.agents_failed}
            assert set(failed) == {"agent-pod-c", "agent-host-c", "agent-host-b"}
            assert failed["agent-pod-c"].startswith("cannot connect")
            assert failed["agent-host-c"] == "no answer within 1 s"
            assert failed["agent-host-b"] == "HTTP 503: agent is draining"
            # agents get the probe timeout of the schedule
            assert fine_a.requests == [{"timeout_s": 2.0}]

            assert status.report is not None
            [pm] = status.report.matrix.paths
            assert pm.path == "pod-to-pod"
            assert pm.sources == ["node-a", "node-b", "node-c"]
            assert (pm.sent, pm.ok) == (6, 5)
            ac = next(c for c in pm.cells if (c.src, c.dst) == ("node-a", "node-c"))
            assert ac.outcomes == {"timeout": 1}
            assert status.report.findings == []

            # the sweep's results went into the store too
            await asyncio.sleep(FRESH_S)
            async with s.get(f"{url}/api/v1/matrix") as resp:
                matrix = msgspec.json.decode(await resp.read(), type=Matrix)
            assert matrix.paths[0].sent == 6
            assert collector.registry.get_sample_value("prober_sweeps_total", {"result": "done"}) == 1


async def test_results_streamed_before_the_deadline_are_kept(tmp_path: Path) -> None:
    def results(_: float) -> list[ProbeResult]:
        return [probe("node-a", d, ts=time.time()) for d in ("node-a", "node-b", "node-c")]

    async with FakeAgent(results, stall_after=2) as stuck:
        inv = three_nodes([agent("agent-pod-a", "node-a", stuck.port)])
        async with running_collector(tmp_path, inv) as (_, url), aiohttp.ClientSession() as s:
            status = await sweep_until_done(s, url, {"deadline_s": 0.5})
            assert [f.error for f in status.agents_failed] == ["still answering after 0.5 s (2 results kept)"]
            assert status.probes == 2
            assert status.report is not None
            assert status.report.matrix.paths[0].sent == 2


async def test_a_sweep_in_progress_is_joined_not_repeated(tmp_path: Path) -> None:
    async with FakeAgent(lambda _: [probe("node-a", "node-b", ts=time.time())], delay_s=0.5) as slowish:
        inv = three_nodes([agent("agent-pod-a", "node-a", slowish.port)])
        async with running_collector(tmp_path, inv) as (_, url), aiohttp.ClientSession() as s:
            async with s.post(f"{url}/api/v1/sweeps") as first, s.post(f"{url}/api/v1/sweeps") as second:
                sweep_id = (await first.json())["id"]
                assert (await second.json())["id"] == sweep_id
            status = await wait_done(s, url, sweep_id)
            assert (status.probes, len(slowish.requests)) == (1, 1)
            # once it is done, the next request starts a new sweep
            again = await sweep_until_done(s, url)
            assert again.id != sweep_id
            assert len(slowish.requests) == 2


async def test_garbage_answers_are_failures_with_a_reason(tmp_path: Path) -> None:
    async with FakeAgent(lambda _: [], body=b"<html>not an agent</html>\n") as imposter:
        inv = three_nodes([agent("agent-pod-a", "node-a", imposter.port)])
        async with running_collector(tmp_path, inv) as (_, url), aiohttp.ClientSession() as s:
            status = await sweep_until_done(s, url)
            assert status.state == "done"
            assert [f.error for f in status.agents_failed] == ["no valid result among 1 lines"]
            assert status.rejected == 1


async def test_no_ready_agents_is_409_and_bad_requests_400(tmp_path: Path) -> None:
    inv = three_nodes([msgspec.structs.replace(agent("agent-pod-a", "node-a", 1), ready=False)])
    async with running_collector(tmp_path, inv) as (_, url), aiohttp.ClientSession() as s:
        async with s.post(f"{url}/api/v1/sweeps") as resp:
            assert resp.status == 409
            assert "no ready agents" in (await resp.json())["error"]
        for body in (b"{", b'{"deadline_s": "soon"}', b'{"deadline_s": -1}'):
            async with s.post(f"{url}/api/v1/sweeps", data=body) as resp:
                assert resp.status == 400, body
                assert "bad sweep request" in (await resp.json())["error"]
