"""``prober lab check``: probe every lab path with the lab's own client and tabulate it.

Independent of the agents and the collector, so it answers "is the lab itself right?"
(and shows a fault's signature in raw form): for every node and source network, the
share of successful probes per target and which nodes served them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from prober_lab import traffic
from prober_lab.plan import (
    DNS_QUERY,
    DNS_SERVICE_IP,
    ECHO_HTTP_PORT,
    ECHO_SERVICE_IP,
    ENI_NODEPORT,
    EXTERNAL_IP,
    EXTERNAL_PORT,
    LOCAL_SERVICE_IP,
    NLB_PORT,
    NODEPORT,
    SERVICE_PORT,
    Cni,
    Plan,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    column: str  # "pod/node-b", "service", "nlb/zone-a", ...
    ip: str
    port: int
    dns: bool = False


@dataclass(slots=True, kw_only=True)
class Cell:
    sent: int = 0
    ok: int = 0
    served_by: Counter[str] = field(default_factory=Counter)


def targets(plan: Plan) -> list[Target]:
    out = [Target(column=f"pod/{n.name}", ip=n.echo.ip, port=ECHO_HTTP_PORT) for n in plan.nodes]
    out += [
        Target(column="service", ip=ECHO_SERVICE_IP, port=SERVICE_PORT),
        Target(column="service-local", ip=LOCAL_SERVICE_IP, port=SERVICE_PORT),
    ]
    out += [Target(column=f"nodeport/{n.name}", ip=n.ip, port=NODEPORT) for n in plan.nodes]
    if plan.cni is Cni.VPC:
        out += [Target(column=f"nodeport-eni/{n.name}", ip=n.ip, port=ENI_NODEPORT) for n in plan.nodes]
    out += [Target(column=f"nlb/{nlb.zone}", ip=nlb.vip, port=NLB_PORT) for nlb in plan.nlbs]
    out += [
        Target(column="external", ip=EXTERNAL_IP, port=EXTERNAL_PORT),
        Target(column="dns", ip=DNS_SERVICE_IP, port=53, dns=True),
    ]
    return out


Row = tuple[str, str]  # (node, "pod" | "host")


async def check(
    plan: Plan, *, count: int, timeout_s: float, concurrency: int = 64
) -> dict[Row, dict[str, Cell]]:
    """``count`` probes from each node's agent pod and host to every target."""
    sem = asyncio.Semaphore(concurrency)
    table: dict[Row, dict[str, Cell]] = {}

    async def one(row: Row, ns: str, t: Target) -> None:
        async with sem:
            if t.dns:
                p = await traffic.dns_probe(ns, t.ip, DNS_QUERY, timeout_s=timeout_s)
            else:
                p = await traffic.http_probe(ns, t.ip, t.port, timeout_s=timeout_s)
        cell = table[row].setdefault(t.column, Cell())
        cell.sent += 1
        if p.ok:
            cell.ok += 1
            if p.node:
                cell.served_by[p.node] += 1

    jobs = []
    for n in plan.nodes:
        for kind, ns in (("pod", n.agent.ns), ("host", n.ns)):
            row = (n.name, kind)
            table[row] = {}
            for t in targets(plan):
                jobs += [one(row, ns, t) for _ in range(count)]
    async with asyncio.TaskGroup() as tg:
        for job in jobs:
            tg.create_task(job)
    return table


def render(plan: Plan, table: dict[Row, dict[str, Cell]]) -> str:
    cols = [t.column for t in targets(plan)]
    width = max(9, *(len(c) for c in cols))
    lines = ["".ljust(12) + "".join(c.rjust(width + 1) for c in cols)]
    for (node, kind), cells in table.items():
        line = f"{node} {kind}".ljust(12)
        for c in cols:
            cell = cells.get(c, Cell())
            text = f"{100 * cell.ok / cell.sent:.0f}%" if cell.sent else "-"
            line += text.rjust(width + 1)
        lines.append(line)
    lines.append("")
    lines.append("served by (balanced targets):")
    for (node, kind), cells in table.items():
        parts = []
        for c in cols:
            found = cells.get(c)
            if found is not None and c.startswith(("service", "nodeport", "nlb")):
                served = ",".join(
                    f"{k.removeprefix('node-')}:{v}" for k, v in sorted(found.served_by.items())
                )
                parts.append(f"{c}={served or '-'}")
        lines.append(f"  {node} {kind}: " + "  ".join(parts))
    return "\n".join(lines)
