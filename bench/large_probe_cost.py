"""What the large-payload (MTU) probe costs an agent at the production schedule.

For EKS-like inventories of each size (tests/inventories.py), builds the real
pinglists with the default schedule (10 s rounds, 20 probes/s, 5,000/s cluster budget,
never fewer than 3 peers a round, ``--large-probe-bytes`` 8,900) and plans rounds of
one agent with the real ``plan_round``: probes per round, of which large-payload, the
large probes per second, their share of the agent's probes, and the bytes they move
per second (each asks the echo for 8,900 bytes; the agent's own echo serves as many to
its probers). Also the peers per round with and without large probes (the large probe
takes its place in the round's budget).

    PYTHONPATH=. python bench/large_probe_cost.py [--sizes 3 10 100 240 1000 5000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prober.model import Proto
from prober.schedule import PinglistBuilder, SchedulePolicy, plan_round
from tests.inventories import EksCluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 10, 100, 240, 1000, 5000])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    policy = SchedulePolicy()
    print(
        "| nodes | peers per round (without large) | repeat | probes per agent per round | large per round "
        "| large probes/s per agent | share of its probes | large bytes/s per agent (asked + served) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        inv = EksCluster(n_nodes=n, zones=3).inventory()
        builder = PinglistBuilder(inv, policy)
        without = PinglistBuilder(inv, SchedulePolicy(large_probe_bytes=0))
        agent = builder.agents()[0]
        pl = builder.for_agent(agent)
        assert pl is not None
        rng = random.Random(1)
        total = large = 0
        for r in range(args.rounds):
            plan = plan_round(pl, r, rng)
            total += sum(len(p.targets) for p in plan)
            large += sum(t.proto is Proto.HTTP_LARGE for p in plan for t in p.targets)
        per_round, large_round = total / args.rounds, large / args.rounds
        rate = large_round / pl.interval_s
        print(
            f"| {n:,} | {builder.peers_per_round} ({without.peers_per_round}) | {builder.repeat} "
            f"| {per_round:.0f} "
            f"| {large_round:g} | {rate:g} | {100 * large / total:.2g}% "
            f"| {2 * rate * policy.large_probe_bytes / 1000:.1f} kB/s |"
        )


if __name__ == "__main__":
    main()
