"""The collector with real ``prober agent`` processes on loopback: pinglists out, results in, sweeps."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import msgspec
import pytest

from prober.collector.sweep import SweepStatus
from prober.inventory import Agent, Inventory, Node
from prober.model import Matrix, SrcKind
from prober.schedule import PinglistBuilder, SchedulePolicy
from tests.integration.collector_helpers import running_collector

ROOT = Path(__file__).resolve().parents[2]
POLICY = SchedulePolicy(interval_s=1.0, timeout_s=0.5, budget_per_s=50)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
    return port


def mesh() -> Inventory:
    nodes = [Node(name=f"node-{c}", address=f"127.0.10.{i}", zone="zone-1") for i, c in enumerate("abc", 1)]
    agents = []
    for i, n in enumerate(nodes, 1):
        address = f"127.0.11.{i}"
        port = free_port(address)
        agents.append(
            Agent(name=f"agent-pod-{n.name[-1]}", node=n.name, kind=SrcKind.POD, address=address,
                  http_port=port, udp_port=port)
        )  # fmt: skip
    return Inventory(nodes=nodes, agents=agents)


@asynccontextmanager
async def agent_processes(inv: Inventory, url: str) -> AsyncIterator[dict[str, asyncio.subprocess.Process]]:
    procs: dict[str, asyncio.subprocess.Process] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for a in inv.agents:
            procs[a.name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "prober", "--log-level", "warning", "agent",
                "--network", a.kind.value, "--node", a.node, "--name", a.name,
                "--listen", a.address, "--http-port", str(a.http_port), "--udp-port", str(a.udp_port),
                "--source-ip", a.address, "--collector", url,
                env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        yield procs
    finally:
        for p in procs.values():
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                await asyncio.wait_for(p.wait(), timeout=10)
            except TimeoutError:
                p.kill()
                await p.wait()


async def sweep(s: aiohttp.ClientSession, url: str) -> SweepStatus:
    async with s.post(f"{url}/api/v1/sweeps", json={"deadline_s": 5}) as resp:
        sweep_id = (await resp.json())["id"]
    while True:
        async with s.get(f"{url}/api/v1/sweeps/{sweep_id}") as resp:
            status = msgspec.json.decode(await resp.read(), type=SweepStatus)
        if status.state != "running":
            return status
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_agents_report_rounds_and_answer_sweeps(tmp_path: Path) -> None:
    inv = mesh()
    async with (
        running_collector(tmp_path, inv, pinglists=lambda i: PinglistBuilder(i, POLICY)) as (_, url),
        agent_processes(inv, url) as procs,
        aiohttp.ClientSession() as s,
    ):
        async with asyncio.timeout(60):
            # scheduled rounds arrive: every agent's results show up in the matrix, and
            # once every agent listens (a peer probed before its echo was up is refused),
            # a recent window is all green
            while True:
                async with s.get(f"{url}/api/v1/matrix?window=3") as resp:
                    matrix = msgspec.json.decode(await resp.read(), type=Matrix)
                pod = [p for p in matrix.paths if p.path == "pod-to-pod"]
                cells = pod[0].cells if pod else []
                if {c.src for c in cells} == {"node-a", "node-b", "node-c"} and all(
                    c.ratio == 1.0 for c in cells
                ):
                    break
                await asyncio.sleep(0.2)

            # every agent answers a sweep, once its pinglist is in
            while (status := await sweep(s, url)).agents_failed:  # noqa: ASYNC110 - polling over HTTP
                await asyncio.sleep(0.2)
            assert (status.agents_total, status.agents_done) == (3, 3)
            assert status.report is not None
            swept = {p.path: p for p in status.report.matrix.paths}
            assert swept["pod-to-pod"].ok == swept["pod-to-pod"].sent > 0

            # an agent that went away is a failure with a reason, the others still count
            procs["agent-pod-c"].send_signal(signal.SIGTERM)
            await procs["agent-pod-c"].wait()
            status = await sweep(s, url)
            assert [(f.agent, f.error) for f in status.agents_failed] == [
                ("agent-pod-c", "cannot connect: connection refused")
            ]
            assert status.probes > 0
