"""A real collector on loopback, and fake agents that speak the agent's ``POST /sweep`` protocol."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry

from prober.collector.auth import Authenticator
from prober.collector.http import Collector
from prober.collector.service import CollectorService, PinglistFactory
from prober.collector.settings import CollectorSettings
from prober.inventory import Agent, Inventory, Node
from prober.inventory.static import StaticInventory
from prober.model import Outcome, ProbeResult, Proto, SrcKind
from prober.records import encode_records
from prober.schedule import PinglistBuilder, SchedulePolicy, pinglist_factory

REFRESH_S = 0.1
FRESH_S = 0.15
_T = TypeVar("_T")


async def eventually(
    read: Callable[[], Awaitable[_T]], done: Callable[[_T], bool], *, within_s: float = 10.0
) -> _T:
    """``read()`` again until ``done`` holds (at most ``within_s``): readers get the last
    completed pass, and on a loaded machine the pass after a post may still be running."""
    async with asyncio.timeout(within_s):
        while not done(value := await read()):  # noqa: ASYNC110 - polling the collector from outside
            await asyncio.sleep(REFRESH_S)
    return value


def real_pinglists(inv: Inventory, previous: object = None) -> PinglistBuilder:
    return pinglist_factory(SchedulePolicy())(inv, previous)


def write_inventory(path: Path, inv: Inventory) -> None:
    path.write_bytes(msgspec.json.encode(inv))  # JSON is YAML


def three_nodes(agents: Sequence[Agent] = ()) -> Inventory:
    return Inventory(
        nodes=[
            Node(name="node-a", address="127.0.0.1", zone="zone-1"),
            Node(name="node-b", address="127.0.0.1", zone="zone-1"),
            Node(name="node-c", address="127.0.0.1", zone="zone-2"),
        ],
        agents=list(agents),
    )


@asynccontextmanager
async def running_collector(
    tmp_path: Path,
    inv: Inventory,
    *,
    pinglists: PinglistFactory = real_pinglists,
    clock: Callable[[], float] | None = None,
    auth: Authenticator | None = None,
    **settings: object,
) -> AsyncIterator[tuple[CollectorService, str]]:
    """A collector serving on 127.0.0.1 (a free port), following ``tmp_path/inventory.json``;
    yields its service (its state) and its URL.

    Findings and matrices are recomputed at most every ``refresh_s`` (0.1 s here, unless
    given): wait :data:`FRESH_S` after posting results before reading them back.
    ``auth``: who may call it (default: anyone).
    """
    settings.setdefault("refresh_s", REFRESH_S)
    path = tmp_path / "inventory.json"
    write_inventory(path, inv)
    service = CollectorService(
        CollectorSettings(inventory=str(path), **settings),  # type: ignore[arg-type]
        pinglists=pinglists,
        registry=CollectorRegistry(),
        **({"clock": clock} if clock else {}),  # type: ignore[arg-type]
    )
    async with Collector(service, auth=auth).serving(
        StaticInventory(path, poll_s=0.05), host="127.0.0.1", port=0
    ) as url:
        yield service, url


def probe(
    src: str,
    dst: str | None,
    outcome: Outcome = Outcome.OK,
    *,
    ts: float,
    path: str = "pod-to-pod",
    target: str | None = None,
) -> ProbeResult:
    kind = SrcKind(path.split("-to-", 1)[0])
    return ProbeResult(
        ts=ts, path=path, src_node=src, src_kind=kind, target=target or f"pod/{dst}", proto=Proto.HTTP,
        outcome=outcome, latency_s=0.001 if outcome is Outcome.OK else None, dst_node=dst,
        target_ip="127.0.0.1", target_port=8080,
    )  # fmt: skip


class FakeAgent:
    """An HTTP server that answers ``POST /sweep`` like an agent: JSONL results, one per line.

    ``results`` makes the answer from the request's ``timeout_s``; ``delay_s`` makes a
    slow agent; ``status`` makes a broken one; ``stall_after`` streams that many
    results and then hangs.
    """

    def __init__(
        self,
        results: Callable[[float], list[ProbeResult]],
        *,
        delay_s: float = 0.0,
        status: int = 200,
        body: bytes | None = None,
        stall_after: int | None = None,
    ) -> None:
        self.results = results
        self.delay_s = delay_s
        self.stall_after = stall_after
        self.status = status
        self.body = body
        self.requests: list[dict[str, float]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _sweep(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        req = msgspec.json.decode(raw, type=dict[str, float]) if raw else {}
        self.requests.append(req)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return web.Response(status=self.status, text="agent is draining")
        results = self.results(req.get("timeout_s", 5.0))
        if self.stall_after is not None:  # stream some results, then hang like a stuck probe
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await resp.prepare(request)
            await resp.write(encode_records(results[: self.stall_after]))
            await asyncio.sleep(5.0)
            return resp
        body = self.body if self.body is not None else encode_records(results)
        return web.Response(body=body, content_type="application/x-ndjson")

    async def __aenter__(self) -> FakeAgent:
        app = web.Application()
        app.router.add_post("/sweep", self._sweep)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def agent(name: str, node: str, port: int, kind: SrcKind = SrcKind.POD) -> Agent:
    return Agent(name=name, node=node, kind=kind, address="127.0.0.1", http_port=port, udp_port=port)
