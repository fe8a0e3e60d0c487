"""On-demand sweeps: ask every ready agent to probe its whole pinglist once, now.

A :class:`Sweep` is the state of one sweep. It asks every agent through the
:class:`AgentTransport` it is given (the real one, :class:`prober.collector.client.HttpAgents`,
calls the agent's ``POST /sweep`` and reads its JSONL answer; tests give a fake),
at most ``concurrency`` at a time, and the collector builds a report from exactly
the results. An agent that is down, slow or answers garbage is a failure *in the
sweep's status*, with a reason; it never fails or stalls the sweep: the transport
keeps each agent's deadline, and the sweep stops waiting for an agent
:data:`DEADLINE_GRACE_S` after it whatever the transport does.

No I/O of its own (no HTTP client here): the transport does it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import msgspec

from prober.inventory import Agent
from prober.model import ProbeResult, Report

#: How long past an agent's deadline a sweep waits for the transport's answer about it.
DEADLINE_GRACE_S: Final = 1.0


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


class AgentTransport(Protocol):
    """How a sweep reaches agents (:class:`prober.collector.client.HttpAgents` over HTTP)."""

    async def sweep(self, agent: Agent, *, probe_timeout_s: float, deadline_s: float) -> AgentAnswer:
        """The agent's results of one sweep with probes of ``probe_timeout_s``.

        Returns within ``deadline_s``; every failure comes back as
        :attr:`AgentAnswer.error` (never as an exception), with the complete results
        the agent sent before it.
        """
        ...


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
        agents: AgentTransport,
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
                try:
                    async with asyncio.timeout(deadline_s + DEADLINE_GRACE_S):
                        answer = await agents.sweep(
                            agent, probe_timeout_s=probe_timeout_s, deadline_s=deadline_s
                        )
                except TimeoutError:
                    answer = AgentAnswer(agent=agent, error=f"no answer within {deadline_s:g} s")
            if answer.error is not None:
                self.failed.append(SweepFailure(agent=agent.name, node=agent.node, error=answer.error))
            self.records.extend(answer.records)
            self.rejected += answer.rejected
            self.done += 1
            on_answer(answer)

        async with asyncio.TaskGroup() as tg:
            for agent in self.agents:
                tg.create_task(one(agent))
