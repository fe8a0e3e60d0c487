"""A real collector on loopback, and fake agents that take sweeps the way agents do."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import aiohttp
import msgspec
from prometheus_client import CollectorRegistry

from prober.collector.auth import Authenticator
from prober.collector.http import Collector
from prober.collector.service import CollectorService, PinglistFactory
from prober.collector.settings import CollectorSettings
from prober.inventory import Agent, Inventory, Node
from prober.inventory.static import StaticInventory
from prober.model import Outcome, ProbeResult, Proto, SrcKind
from prober.pinglist import SWEEP_HEADER, SweepOrder, decode_sweep_order
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
    """A client that does what an agent does about sweeps: fetch its pinglist every
    ``poll_s``, and deliver results for each sweep order found in the answer.

    ``results`` makes the delivery from the order; ``delay_s`` delays it; ``silent``
    takes orders and never delivers; ``unfinished`` delivers without saying it is done;
    ``headers`` carry its credential.
    ``orders`` lists every order id seen (once per sweep), ``answers`` the collector's
    replies to the deliveries.
    """

    def __init__(
        self,
        name: str,
        results: Callable[[SweepOrder], list[ProbeResult]] = lambda _: [],
        *,
        poll_s: float = 0.05,
        delay_s: float = 0.0,
        silent: bool = False,
        unfinished: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.headers = headers or {}  # its credential, where the collector asks for one
        self.results = results
        self.poll_s = poll_s
        self.delay_s = delay_s
        self.silent = silent
        self.unfinished = unfinished
        self.orders: list[SweepOrder] = []
        self.answers: list[tuple[int, dict[str, object]]] = []
        self.url = ""
        self._task: asyncio.Task[None] | None = None

    async def _deliver(self, s: aiohttp.ClientSession, order: SweepOrder) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        params = {} if self.unfinished else {"done": "1"}
        url = f"{self.url}/api/v1/sweeps/{order.id}/results/{self.name}"
        async with s.post(url, data=encode_records(self.results(order)), params=params) as resp:
            self.answers.append((resp.status, await resp.json()))

    async def _run(self) -> None:
        async with aiohttp.ClientSession(headers=self.headers) as s, asyncio.TaskGroup() as tg:
            while True:
                async with s.get(f"{self.url}/api/v1/pinglist/{self.name}") as resp:
                    raw = resp.headers.get(SWEEP_HEADER)
                order = decode_sweep_order(raw) if raw else None
                if order is not None and order.id not in {o.id for o in self.orders}:
                    self.orders.append(order)
                    if not self.silent:
                        tg.create_task(self._deliver(s, order))
                await asyncio.sleep(self.poll_s)

    def start(self, url: str) -> FakeAgent:
        self.url = url
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@asynccontextmanager
async def fake_agents(url: str, agents: Sequence[FakeAgent]) -> AsyncIterator[None]:
    for a in agents:
        a.start(url)
    try:
        yield
    finally:
        for a in agents:
            await a.stop()


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def agent(name: str, node: str, port: int, kind: SrcKind = SrcKind.POD) -> Agent:
    return Agent(name=name, node=node, kind=kind, address="127.0.0.1", http_port=port, udp_port=port)
