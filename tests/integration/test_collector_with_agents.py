"""The collector with real ``prober agent`` processes on loopback: pinglists out, results in, sweeps."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import msgspec
import pytest

from prober.collector.auth import Authenticator
from prober.collector.sweep import SweepStatus
from prober.credentials import TokenFile
from prober.inventory import Inventory
from prober.model import Matrix, SrcKind
from prober.schedule import SchedulePolicy, pinglist_factory
from tests.integration.collector_helpers import running_collector
from tests.inventories import EksCluster

ROOT = Path(__file__).resolve().parents[2]
POLICY = SchedulePolicy(interval_s=1.0, timeout_s=0.5, budget_per_s=50)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
    return port


#: Three nodes with a pod agent each, EKS-like names and addresses moved onto loopback.
SHAPE = EksCluster(n_nodes=3, kinds=(SrcKind.POD,), shared=False, loopback=True)


def mesh() -> Inventory:
    """The shape's inventory, each agent on a free port (HTTP and UDP share the number)."""
    inv = SHAPE.inventory()
    agents = []
    for a in inv.agents:
        port = free_port(a.address)
        agents.append(msgspec.structs.replace(a, http_port=port, udp_port=port))
    return msgspec.structs.replace(inv, agents=agents)


@asynccontextmanager
async def agent_processes(
    inv: Inventory, url: str, token_file: Path
) -> AsyncIterator[dict[str, asyncio.subprocess.Process]]:
    procs: dict[str, asyncio.subprocess.Process] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for a in inv.agents:
            procs[a.name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "prober", "--log-level", "warning", "agent",
                "--network", a.kind.value, "--node", a.node, "--name", a.name,
                "--listen", a.address, "--http-port", str(a.http_port), "--udp-port", str(a.udp_port),
                "--source-ip", a.address, "--collector", url, "--token-file", str(token_file),
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
        assert resp.status == 202
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
    # A static inventory's credential: the agents present the collector's token file
    # (without it every pinglist and result would be a 401, and the matrix stay empty).
    token = tmp_path / "token"
    token.write_text("agents-and-operator-7c1d9e\n")
    auth = Authenticator(token_file=TokenFile(token))
    async with (
        running_collector(
            tmp_path, inv, pinglists=pinglist_factory(POLICY), auth=auth, sweep_min_gap_s=0.0
        ) as (_, url),
        agent_processes(inv, url, token) as procs,
        aiohttp.ClientSession(headers={"Authorization": "Bearer agents-and-operator-7c1d9e"}) as s,
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
                if {c.src for c in cells} == set(SHAPE.node_names) and all(c.ratio == 1.0 for c in cells):
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
            gone = SHAPE.agent_name(2, SrcKind.POD)
            procs[gone].send_signal(signal.SIGTERM)
            await procs[gone].wait()
            status = await sweep(s, url)
            assert [(f.agent, f.error) for f in status.agents_failed] == [
                (gone, "did not fetch its pinglist within 5 s (down, or not reaching the collector)")
            ]
            assert status.probes > 0


async def metric(s: aiohttp.ClientSession, url: str, name: str) -> float:
    async with s.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.mark.slow
async def test_only_the_collector_starts_a_sweep_and_an_agent_stops_in_one(tmp_path: Path) -> None:
    """Asking the agents themselves does nothing; a hundred requests to the collector are
    one sweep; an agent told to stop in the middle of a long sweep exits at once. About 15 s."""
    inv = mesh()
    # one probe per second: a sweep's few probes take seconds, and stopping comes mid-sweep
    slow = SchedulePolicy(interval_s=1.0, timeout_s=0.5, budget_per_s=1.0)
    token = tmp_path / "token"  # the agents' and the operator's credential (a static inventory's)
    token.write_text("agents-and-operator-7c1d9e\n")
    auth = Authenticator(token_file=TokenFile(token))
    async with (
        running_collector(tmp_path, inv, pinglists=pinglist_factory(slow), auth=auth) as (service, url),
        agent_processes(inv, url, token) as procs,
        aiohttp.ClientSession(headers={"Authorization": "Bearer agents-and-operator-7c1d9e"}) as s,
    ):
        async with asyncio.timeout(30):
            while any(service.pinglist(a.name) is None for a in inv.agents):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            a = inv.agents[0]
            base = f"http://{a.address}:{a.http_port}"
            while True:  # its echo is up
                try:
                    async with s.get(f"{base}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            for _ in range(100):
                async with s.post(f"{base}/sweep", json={"timeout_s": 60}) as resp:
                    assert resp.status == 404

            # a hundred requests at once: one sweep, the others join it, each within the maxima
            async def ask() -> dict[str, object]:
                async with s.post(f"{url}/api/v1/sweeps", json={"deadline_s": 1e9, "timeout_s": 1e9}) as r:
                    assert r.status == 202
                    answer: dict[str, object] = await r.json()
                    return answer

            answers = await asyncio.gather(*(ask() for _ in range(100)))
            assert {(x["id"], x["timeout_s"], x["deadline_s"]) for x in answers} == {
                (answers[0]["id"], 10.0, 120.0)
            }
            sweep = service._sweeps[str(answers[0]["id"])]
            assert sweep.order.spread_s > 2.0
            gone = inv.agents[1]
            while gone.name not in sweep.asked:  # noqa: ASYNC110 - the collector's state, no event
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            stopping = time.monotonic()
            procs[gone.name].send_signal(signal.SIGTERM)
            assert await procs[gone.name].wait() == 0
            took = time.monotonic() - stopping
        # the pod's grace period is 35 s; the agent needs its drain (timeout + 1 s) and a flush
        assert took < 8.0, f"the agent took {took:.1f} s to stop in a sweep"
        async with s.post(f"{url}/api/v1/sweeps") as resp:
            assert resp.status == 202  # joins the one still running: the stopped agent never delivers
            assert (await resp.json())["id"] == answers[0]["id"]
        assert gone.name not in sweep.done
