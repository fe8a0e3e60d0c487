"""On-demand sweeps: every ready agent probes a bounded slice of its pinglist now.

A :class:`Sweep` is the state of one sweep. Nothing reaches out to an agent: the
sweep's :class:`~prober.pinglist.SweepOrder` rides on the agents' own pinglist
fetches (the HTTP layer adds it to the answer), each agent probes what the order
says within its budget and delivers its results with ``POST
/api/v1/sweeps/{id}/results/{agent}``. The sweep ends when every agent has delivered
or at its deadline (plus :data:`DEADLINE_GRACE_S`), whichever is first; an agent
that did not deliver is a failure *in the sweep's status*, with a reason, never a
stalled sweep.

Bounds kept here: an agent is part of a sweep only if it was ready when the sweep
started, delivers at most :attr:`Sweep.records_per_agent` results (the lines beyond
are rejected and counted), and only while the sweep runs; a delivery after the agent
said it was done is refused. What a sweep covers, and why that stays within every
agent's budget and every target's fan-in: docs/contracts.md § Sweep.

No I/O (no HTTP, no clock of its own): the service passes the time.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Final

import msgspec

from prober.inventory import Agent
from prober.model import ProbeResult, Report
from prober.pinglist import SWEEP_DELIVERY_MARGIN_S, SweepOrder
from prober.records import Rejected

#: How long past a sweep's deadline the collector waits for deliveries in flight.
DEADLINE_GRACE_S: Final = 1.0
#: Agents stop launching a sweep's probes this long (plus the probe timeout) before its end.
DELIVERY_MARGIN_S: Final = SWEEP_DELIVERY_MARGIN_S


class SweepFailure(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    node: str
    error: str


class SweepStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/v1/sweeps/{id}``. ``agents_done`` counts agents finished either way;
    ``agents_failed`` lists those among them that gave no complete answer."""

    id: str
    state: str  # "running" | "done" | "failed" (the collector itself failed; see ``error``)
    started_at: float
    finished_at: float | None
    agents_total: int
    agents_done: int
    agents_failed: list[SweepFailure]
    probes: int
    rejected: int  # result lines from agents that were not valid records, or beyond the bound
    report: Report | None
    error: str | None = None
    #: The probe timeout and deadline in force (a request's are lowered to the collector's maxima).
    timeout_s: float = 0.0
    deadline_s: float = 0.0
    #: Rounds of the schedule whose peers each agent probes (docs/contracts.md § Sweep).
    rounds: int = 0


class SweepDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to one delivery of an agent's sweep results."""

    accepted: int
    rejected: int
    errors: list[Rejected]


class SweepRefusedError(Exception):
    """A delivery the sweep does not take: ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def new_sweep_id() -> str:
    return secrets.token_hex(6)


class Sweep:
    """The progress of one sweep: orders handed out, results delivered, failures."""

    def __init__(
        self,
        order: SweepOrder,
        agents: Sequence[Agent],
        *,
        started_at: float,
        deadline_s: float,
        records_per_agent: int,
    ) -> None:
        self.order = order
        self.id = order.id
        self.agents = {a.name: a for a in agents}
        self.started_at = started_at
        self.deadline_s = deadline_s
        self.records_per_agent = records_per_agent
        self.finished_at: float | None = None
        self.asked: set[str] = set()
        self.delivered: dict[str, int] = {}
        self.done: set[str] = set()
        self.failed: list[SweepFailure] = []
        self.records: list[ProbeResult] = []
        self.rejected = 0
        self.report: Report | None = None
        self.error: str | None = None
        self.closed = False
        self.all_done = asyncio.Event()

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
            agents_done=len(self.done) + len(self.failed),
            agents_failed=list(self.failed),
            probes=len(self.records),
            rejected=self.rejected,
            report=self.report,
            error=self.error,
            timeout_s=self.order.timeout_s,
            deadline_s=self.deadline_s,
            rounds=self.order.rounds,
        )

    def order_for(self, agent: str) -> SweepOrder | None:
        """The order for ``agent`` while it still owes its results; ``None`` otherwise."""
        if self.closed or agent not in self.agents or agent in self.done:
            return None
        self.asked.add(agent)
        return self.order

    def deliver(
        self, agent: str, records: list[ProbeResult], rejected: int, errors: list[Rejected], *, done: bool
    ) -> tuple[SweepDelivery, list[ProbeResult]]:
        """Take a batch of ``agent``'s results (decoded by the caller); the reply and the
        records kept. Raises :class:`SweepRefusedError` for a delivery the sweep does not take."""
        if agent not in self.agents:
            raise SweepRefusedError(404, f"agent {agent!r} is not part of sweep {self.id}")
        if agent in self.done:
            raise SweepRefusedError(409, f"agent {agent!r} already delivered its results of sweep {self.id}")
        if self.closed:
            raise SweepRefusedError(409, f"sweep {self.id} is over: results arrived after its deadline")
        who = self.agents[agent]
        foreign = [r for r in records if r.src_node != who.node or r.src_kind is not who.kind]
        if foreign:
            records = [r for r in records if r.src_node == who.node and r.src_kind is who.kind]
            rejected += len(foreign)
            errors = [
                *errors,
                Rejected(
                    line=0,
                    error=f"{len(foreign)} results not from this agent ({who.kind.value} on {who.node})",
                ),
            ]
        room = self.records_per_agent - self.delivered.get(agent, 0)
        if len(records) > room:
            over = len(records) - max(room, 0)
            errors = [
                *errors,
                Rejected(
                    line=0, error=f"{over} results beyond this sweep's {self.records_per_agent} per agent"
                ),
            ]
            rejected += over
            records = records[: max(room, 0)]
        self.delivered[agent] = self.delivered.get(agent, 0) + len(records)
        self.asked.add(agent)
        self.records.extend(records)
        self.rejected += rejected
        if done:
            self.done.add(agent)
            if len(self.done) == len(self.agents):
                self.all_done.set()
        return SweepDelivery(accepted=len(records), rejected=rejected, errors=errors), records

    def close(self, now: float) -> None:
        """Stop taking deliveries; every agent that did not finish becomes a failure with a reason."""
        self.closed = True
        deadline = f"{self.deadline_s:g} s"
        for name, agent in self.agents.items():
            if name in self.done:
                continue
            if name not in self.asked:
                error = f"did not fetch its pinglist within {deadline} (down, or not reaching the collector)"
            elif (n := self.delivered.get(name, 0)) == 0:
                error = f"took the sweep but delivered no results within {deadline}"
            else:
                error = f"delivered {n} results but did not finish within {deadline}"
            self.failed.append(SweepFailure(agent=name, node=agent.node, error=error))
        self.finished_at = now
