"""What one sweep covers at scale, and what it costs every agent and every target.

Builds an EKS-like inventory of N nodes (``tests/inventories.py``: a pod and a host
agent on each over three zones, the echo Services, NodePort, an NLB per zone,
kube-dns, an external target) with the collector's default schedule, makes the order
the collector would send for a sweep of each deadline (``prober.schedule.sweep_order``,
the default probe timeout), plans every agent's sweep (``sweep_plan``) and prints:
the rounds and peers each agent probes, its probes and their rate against its
budget, the spread, the source nodes of each kind probing one node (the fan-in
into a node) and the most probes one node's echoes and one shared target receive
per second, and the results the collector keeps for the report.

    PYTHONPATH=. python bench/sweep_scale.py [--nodes 1000 5000] [--deadline 60 120]
"""

from __future__ import annotations

import argparse
from collections import Counter

from prober.collector.service import SWEEP_RESULTS_MAX
from prober.model import TargetKind
from prober.pinglist import Pinglist
from prober.schedule import PinglistBuilder, SchedulePolicy, planned_count, sweep_order, sweep_plan
from tests.inventories import eks_inventory

PEER_KINDS = (TargetKind.POD, TargetKind.HOST, TargetKind.NODEPORT)
SHARED_KINDS = (TargetKind.SERVICE, TargetKind.NLB, TargetKind.DNS, TargetKind.EXTERNAL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--deadline", type=float, nargs="+", default=[60.0, 120.0])
    args = parser.parse_args()
    policy = SchedulePolicy()
    print(
        f"schedule: interval {policy.interval_s:g} s, probe timeout {policy.timeout_s:g} s, "
        f"budget {policy.budget_per_s:g}/s per agent, cluster budget {policy.cluster_budget_per_s:,.0f}/s"
    )
    print(
        "nodes  deadline  rounds  peers/agent  probes/agent  spread   rate/agent (budget)  "
        "sources/node/kind  max probes/s into a node  max probes/s at a shared target  results kept"
    )
    for n in args.nodes:
        builder = PinglistBuilder(eks_inventory(n), policy)
        pls: list[Pinglist] = [pl for a in builder.agents() if (pl := builder.for_agent(a)) is not None]
        for deadline in args.deadline:
            order = sweep_order(
                pls[0], sweep_id="bench", now=0.0, deadline_s=deadline, timeout_s=policy.timeout_s,
                agents=len(pls), max_results=SWEEP_RESULTS_MAX,
            )  # fmt: skip
            spread = max(order.spread_s, 1e-9)
            into_node: Counter[str] = Counter()
            at_shared: Counter[str] = Counter()
            sources: dict[tuple[str | None, str], set[str]] = {}
            probes = []
            for pl in pls:
                plan = sweep_plan(pl, order)
                probes.append(planned_count(plan))
                for p in plan:
                    for t in p.targets:
                        if t.kind in PEER_KINDS and t.dst_node != pl.node:
                            into_node[t.dst_node or t.ip] += 1
                            if t.kind is not TargetKind.NODEPORT:
                                sources.setdefault((t.dst_node, pl.kind.value), set()).add(pl.node)
                        elif t.kind in SHARED_KINDS:
                            at_shared[t.target + t.ip] += 1
            per_node = sorted({len(v) for v in sources.values()})
            peers = min(len(pls[0].peers), pls[0].peers_per_round * order.rounds)
            print(
                f"{n:>5,}  {deadline:>6g} s  {order.rounds:>6}  {peers:>11}  {max(probes):>12,}  "
                f"{order.spread_s:>5.1f} s  {max(probes) / spread:>8.1f}/s ({pls[0].budget_per_s:g}/s)  "
                f"{'-'.join(str(x) for x in per_node):>17}  {max(into_node.values()) / spread:>24.1f}  "
                f"{max(at_shared.values()) / spread:>31.1f}  {sum(probes):>12,}"
            )


if __name__ == "__main__":
    main()
