"""Agents that stopped on purpose: which probes of them are routine, not evidence of a fault.

A rolling restart of an agent DaemonSet, a drained node or a deleted pod makes its
peers' probes of it fail for a while: they keep probing it until they fetch the
pinglist rebuilt without it (the collector's settle time, then up to a round or
two), and a restarting host agent's port refuses until its successor listens. None
of that is a network fault, and diagnosis must not see it.

The inventory says when an agent stops: Kubernetes marks its pod for deletion
(``Agent.stopping``) before it sends SIGTERM, or the agent leaves the inventory
while its node stays. An agent that merely turns not Ready (its node went NotReady,
its readiness probe failed) has **not** stopped on purpose: its probes stay
evidence, or a dead node would hide itself. :func:`track` turns successive
inventories into :class:`AgentStop` values (the address and network of the agent,
from when, and until a Ready agent of the same network answers at the address
again); :func:`routine` says which probe results they cover.

Pure: no I/O; times are arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from prober.inventory import Agent, Inventory
from prober.model import ProbeResult, SrcKind, TargetKind

#: The target kind of a probe of an agent of each network.
_PEER: Final[dict[SrcKind, TargetKind]] = {SrcKind.POD: TargetKind.POD, SrcKind.HOST: TargetKind.HOST}


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStop:
    """Probes of the ``kind`` agent at ``address`` from ``at`` until ``until`` are routine."""

    address: str
    kind: SrcKind
    at: float
    until: float = math.inf

    def covers(self, r: ProbeResult) -> bool:
        return (
            r.target_ip == self.address and r.target_kind is _PEER[self.kind] and self.at <= r.ts < self.until
        )


def track(
    stops: Sequence[AgentStop], old: Inventory | None, new: Inventory, *, now: float, keep_s: float
) -> tuple[AgentStop, ...]:
    """The stops after the inventory changed from ``old`` to ``new`` at ``now``.

    An agent of ``old`` that ``new`` marks ``stopping``, or leaves out, stopped at
    ``now`` (unless already known). A ready agent of ``new`` at a stopped address
    ends that stop at ``now``. Stops that ended more than ``keep_s`` ago are
    forgotten, so the list is bounded by the agents that stopped within ``keep_s``.
    """
    current = {(a.address, a.kind): a for a in new.agents}
    open_at = {(s.address, s.kind) for s in stops if s.until == math.inf}
    out: list[AgentStop] = []
    for s in stops:
        a = current.get((s.address, s.kind))
        back = s.until == math.inf and a is not None and a.ready and not a.stopping
        ended = AgentStop(address=s.address, kind=s.kind, at=s.at, until=now) if back else s
        if ended.until >= now - keep_s:
            out.append(ended)
    gone: list[Agent] = []
    if old is not None:
        names = {a.name: a for a in new.agents}
        gone = [a for a in old.agents if a.name not in names or names[a.name].stopping]
    gone += [a for a in new.agents if a.stopping and (old is None or old.agent(a.name) is None)]
    for a in gone:
        key = (a.address, a.kind)
        successor = current.get(key)
        if key in open_at or (successor is not None and successor.ready and not successor.stopping):
            continue
        open_at.add(key)
        out.append(AgentStop(address=a.address, kind=a.kind, at=now))
    return tuple(out)


def routine(records: Sequence[ProbeResult], stops: Sequence[AgentStop]) -> list[bool]:
    """Per record: whether it probed an agent that had stopped on purpose (see the module docstring)."""
    if not stops:
        return [False] * len(records)
    by_address: dict[str, list[AgentStop]] = {}
    for s in stops:
        by_address.setdefault(s.address, []).append(s)
    return [
        r.target_ip is not None
        and r.target_ip in by_address
        and any(s.covers(r) for s in by_address[r.target_ip])
        for r in records
    ]


def without_routine(
    records: Sequence[ProbeResult], stops: Sequence[AgentStop]
) -> tuple[Sequence[ProbeResult], int]:
    """The records that are evidence, and how many were probes of stopped agents."""
    if not stops:
        return records, 0
    mask = routine(records, stops)
    dropped = sum(mask)
    if not dropped:
        return records, 0
    return [r for r, m in zip(records, mask, strict=True) if not m], dropped
