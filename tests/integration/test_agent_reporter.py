"""The reporter against a real aiohttp collector that is away, then back."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from prober.agent.metrics import AgentMetrics
from prober.agent.reporter import Reporter, ReporterPolicy
from prober.model import Outcome, ProbeResult, Proto, SrcKind
from prober.pinglist import Pinglist
from prober.records import parse_batch, read_records

FAST = ReporterPolicy(
    batch_records=4, flush_interval_s=0.05, max_buffer=6, backoff_initial_s=0.02, backoff_max_s=0.1
)


def result(i: int) -> ProbeResult:
    return ProbeResult(
        ts=1000.0 + i, path="pod-to-pod", src_node="node-a", src_kind=SrcKind.POD, target="pod/node-b",
        outcome=Outcome.OK, proto=Proto.HTTP, latency_s=0.001, dst_node="node-b",
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeCollector:
    """Speaks the collector's results API; answers ``status`` (200 takes the batch)."""

    def __init__(self) -> None:
        self.received: list[ProbeResult] = []
        self.posts = 0
        self.status = 200

    async def results(self, request: web.Request) -> web.Response:
        self.posts += 1
        if self.status != 200:
            return web.json_response({"error": "nope"}, status=self.status)
        good, n_rejected, _ = parse_batch(await request.read())
        self.received.extend(good)
        return web.json_response({"accepted": len(good), "rejected": n_rejected, "errors": []})


@contextlib.asynccontextmanager
async def collector_on(port: int, fake: FakeCollector) -> AsyncIterator[None]:
    app = web.Application()
    app.router.add_post("/api/v1/results", fake.results)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a condition on state that has no event to wait on (metrics, a fake's list)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_buffers_while_away_drops_oldest_and_delivers_when_back(tmp_path: Path) -> None:
    import aiohttp

    port = free_port()
    reg = CollectorRegistry()
    metrics = AgentMetrics(registry=reg, node="node-a", kind="pod", version="t")
    fake = FakeCollector()
    async with aiohttp.ClientSession() as session:
        reporter = Reporter(
            collector_url=f"http://127.0.0.1:{port}/", session=session, metrics=metrics, policy=FAST,
            results_file=tmp_path / "out.jsonl", rng=random.Random(1),
        )  # fmt: skip
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(reporter.run())
            reporter.add([result(i) for i in range(5)])
            await until(
                lambda: (reg.get_sample_value("prober_report_batches_total", {"result": "failed"}) or 0) >= 2
            )
            reporter.add([result(i) for i in range(5, 10)])
            assert len(reporter.buffer) == 6
            assert reg.get_sample_value("prober_report_dropped_records_total") == 4
            assert reg.get_sample_value("prober_report_buffer_records") == 6
            async with collector_on(port, fake):
                await until(lambda: len(fake.received) == 6)
                await until(lambda: reg.get_sample_value("prober_report_buffer_records") == 0)
            task.cancel()
        await reporter.close(deadline_s=0.1)
    # The newest six survived, in order; the oldest four were dropped and counted.
    assert [r.ts for r in fake.received] == [1004.0 + i for i in range(6)]
    assert reg.get_sample_value("prober_report_batches_total", {"result": "ok"}) == 2  # 4 + 2
    # The results file has everything, collector or not.
    assert [r.ts for r in read_records(tmp_path / "out.jsonl")] == [1000.0 + i for i in range(10)]


async def test_server_errors_are_retried_and_refusals_are_not() -> None:
    import aiohttp

    port = free_port()
    reg = CollectorRegistry()
    metrics = AgentMetrics(registry=reg, node="node-a", kind="pod", version="t")
    fake = FakeCollector()
    fake.status = 503
    async with aiohttp.ClientSession() as session, collector_on(port, fake):
        reporter = Reporter(
            collector_url=f"http://127.0.0.1:{port}", session=session, metrics=metrics, policy=FAST,
            rng=random.Random(2),
        )  # fmt: skip
        reporter.add([result(0), result(1)])
        assert not await reporter.flush_once()
        assert len(reporter.buffer) == 2  # 503: kept for the next attempt
        fake.status = 400
        assert await reporter.flush_once()
        assert len(reporter.buffer) == 0  # 400: resending cannot help; dropped and counted
        assert reg.get_sample_value("prober_report_batches_total", {"result": "rejected"}) == 1
        assert reg.get_sample_value("prober_report_dropped_records_total") == 2
        fake.status = 200
        reporter.add([result(2)])
        await reporter.close(deadline_s=2.0)  # shutdown delivers what is left
    assert [r.ts for r in fake.received] == [1002.0]
    assert fake.posts == 3


async def test_the_reporter_posts_as_often_as_the_pinglist_says() -> None:
    """A large mesh posts less often (``report_interval_s``): the same results, a result
    every 20 ms for 0.9 s, go out in ~18 posts at 0.05 s and ~3 at 0.3 s."""
    import aiohttp

    port = free_port()
    metrics = AgentMetrics(registry=CollectorRegistry(), node="node-a", kind="pod", version="t")
    policy = ReporterPolicy(batch_records=1000, flush_interval_s=0.05)
    slow = Pinglist(
        version="v", agent="a", node="node-a", kind=SrcKind.POD, interval_s=10.0, timeout_s=5.0,
        budget_per_s=2.5, concurrency=8, peers=[], peers_per_round=0, local=[], shared=[],
        report_interval_s=0.3,
    )  # fmt: skip
    posts: list[int] = []
    fake = FakeCollector()
    async with aiohttp.ClientSession() as session, collector_on(port, fake):
        reporter = Reporter(
            collector_url=f"http://127.0.0.1:{port}/", session=session, metrics=metrics, policy=policy
        )
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(reporter.run())
            for follow in (False, True):
                if follow:
                    reporter.follow(slow)
                    await asyncio.sleep(0.06)  # the post under way at the old interval
                before = fake.posts
                for i in range(45):
                    reporter.add([result(i)])
                    await asyncio.sleep(0.02)
                posts.append(fake.posts - before)
            task.cancel()
    assert reporter.flush_interval_s == 0.3
    assert posts[0] >= 9
    assert 1 <= posts[1] <= 5
