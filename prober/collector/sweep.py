"""On-demand sweeps: ask every ready agent to probe its whole pinglist once, now.

The collector calls each agent's ``POST /sweep`` concurrently (bounded), reads the
JSONL answer, and builds a report from exactly those results. An agent that is down,
slow or answers garbage is a failure *in the sweep's status*, with a reason; it never
fails or stalls the sweep (every call has a deadline).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import msgspec

from prober.collector.batch import decode_batch
from prober.inventory import Agent
from prober.model import ProbeResult, Report

#: The largest answer read from one agent (its whole pinglist's results).
MAX_AGENT_ANSWER_BYTES = 256 * 2**20


class SweepFailure(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    node: str
    error: str


class SweepStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/v1/sweeps/{id}``. ``agents_done`` counts agents finished either way;
    ``agents_failed`` lists those among them that gave no usable answer."""

    id: str
    state: str  # "running" | "done" | "failed" (the collector itself failed; see ``error``)
    started_at: float
    finished_at: float | None
    agents_total: int
    agents_done: int
    agents_failed: list[SweepFailure]
    probes: int
    rejected: int  # result lines from agents that were not valid records
    report: Report | None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentAnswer:
    agent: Agent
    records: list[ProbeResult] = field(default_factory=list)
    rejected: int = 0
    error: str | None = None


def agent_url(agent: Agent, path: str) -> str:
    host = agent.address
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a DNS name
    return f"http://{host}:{agent.http_port}{path}"


def connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """``connection refused``, ``no route to host``, ...: the errno's words, not the socket's repr."""
    err = exc.os_error
    if err is not None and err.errno:
        return os.strerror(err.errno).lower()
    return str(err or exc).lower()


def _http_error(status: int, body: bytes) -> str:
    """``HTTP 503: no pinglist yet``: the JSON error's message if there is one, else the body's start."""
    try:
        message = str(msgspec.json.decode(body)["error"])
    except (msgspec.DecodeError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


def _results(agent: Agent, body: bytes, *, error: str | None = None) -> AgentAnswer:
    records, rejected, _ = decode_batch(body)
    if rejected and not records and error is None:
        error = f"no valid result among {rejected} lines"
    return AgentAnswer(agent=agent, records=records, rejected=rejected, error=error)


async def ask_agent(
    session: aiohttp.ClientSession, agent: Agent, *, probe_timeout_s: float, deadline_s: float
) -> AgentAnswer:
    """One agent's sweep results; every failure comes back as ``AgentAnswer.error``.

    Agents stream their results as the probes finish; an agent still answering at
    the deadline is a failure, but the complete lines it sent are kept.
    """
    url = agent_url(agent, "/sweep")
    chunks: list[bytes] = []
    size = 0
    try:
        async with (
            asyncio.timeout(deadline_s),
            session.post(url, json={"timeout_s": probe_timeout_s}) as resp,
        ):
            if resp.status != 200:
                return AgentAnswer(agent=agent, error=_http_error(resp.status, await resp.content.read(4096)))
            async for chunk in resp.content.iter_any():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_AGENT_ANSWER_BYTES:
                    limit = MAX_AGENT_ANSWER_BYTES // 2**20
                    return AgentAnswer(agent=agent, error=f"answer larger than {limit} MiB")
    except TimeoutError:
        partial = b"".join(chunks)
        complete = partial[: partial.rfind(b"\n") + 1]
        if not complete:
            return AgentAnswer(agent=agent, error=f"no answer within {deadline_s:g} s")
        answer = _results(agent, complete)
        kept = len(answer.records)
        return AgentAnswer(
            agent=agent,
            records=answer.records,
            rejected=answer.rejected,
            error=f"still answering after {deadline_s:g} s ({kept} results kept)",
        )
    except aiohttp.ClientConnectorError as exc:
        return AgentAnswer(agent=agent, error=f"cannot connect: {connect_reason(exc)}")
    except aiohttp.ClientPayloadError as exc:
        return _results(agent, b"".join(chunks).rpartition(b"\n")[0], error=f"answer cut short: {exc}")
    except (aiohttp.ClientError, OSError) as exc:
        return AgentAnswer(agent=agent, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
    return _results(agent, b"".join(chunks))


def new_sweep_id() -> str:
    return secrets.token_hex(6)


class Sweep:
    """The progress of one sweep; mutated only by its own task, read by status requests."""

    def __init__(self, sweep_id: str, agents: Sequence[Agent], *, started_at: float) -> None:
        self.id = sweep_id
        self.agents = list(agents)
        self.started_at = started_at
        self.finished_at: float | None = None
        self.done = 0
        self.failed: list[SweepFailure] = []
        self.records: list[ProbeResult] = []
        self.rejected = 0
        self.report: Report | None = None
        self.error: str | None = None

    @property
    def finished(self) -> bool:
        return self.report is not None or self.error is not None

    def status(self) -> SweepStatus:
        return SweepStatus(
            id=self.id,
            state="failed" if self.error is not None else "done" if self.report is not None else "running",
            started_at=self.started_at,
            finished_at=self.finished_at,
            agents_total=len(self.agents),
            agents_done=self.done,
            agents_failed=list(self.failed),
            probes=len(self.records),
            rejected=self.rejected,
            report=self.report,
            error=self.error,
        )

    async def collect(
        self,
        session: aiohttp.ClientSession,
        *,
        probe_timeout_s: float,
        deadline_s: float,
        concurrency: int,
        on_answer: Callable[[AgentAnswer], None],
    ) -> None:
        """Ask every agent, at most ``concurrency`` at a time; returns when all have answered or failed."""
        limit = asyncio.Semaphore(concurrency)

        async def one(agent: Agent) -> None:
            async with limit:
                answer = await ask_agent(
                    session, agent, probe_timeout_s=probe_timeout_s, deadline_s=deadline_s
                )
            if answer.error is not None:
                self.failed.append(SweepFailure(agent=agent.name, node=agent.node, error=answer.error))
            self.records.extend(answer.records)
            self.rejected += answer.rejected
            self.done += 1
            on_answer(answer)

        async with asyncio.TaskGroup() as tg:
            for agent in self.agents:
                tg.create_task(one(agent))
