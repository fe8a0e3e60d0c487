"""How pinglist construction scales: build time, per-agent cost, and wire size.

Builds an EKS-like inventory of N nodes (``tests/inventories.py``: a pod and a host
agent on each over three zones, plus the echo Service, the local Service, the
NodePort, an NLB with an address per zone, kube-dns and an external target) and
prints, per N: the time to build a PinglistBuilder, to answer ``for_agent`` and
``version_of``, to plan one round, and the size and encoding time of one pinglist
as JSON (and its gzip size, since the collector may compress it).

    PYTHONPATH=. python bench/pinglist_scale.py [--nodes 1000 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gzip
import random
import statistics
import time
from collections.abc import Callable
from functools import partial

import msgspec

from prober.pinglist import Pinglist
from prober.schedule import PinglistBuilder, SchedulePolicy, plan_round, planned_count, round_index
from tests.inventories import eks_inventory


def each(fn: Callable[[str], object], names: list[str]) -> list[object]:
    return [fn(x) for x in names]


def plan_fresh(pl: Pinglist, index: int) -> object:
    return plan_round(pl, index, random.Random(0))


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    policy = SchedulePolicy()
    index = round_index(time.time(), policy.interval_s)
    print(f"policy: {policy}")
    header = (
        f"{'nodes':>6} {'agents':>6} {'build':>9} {'for_agent':>10} {'version_of':>11} {'plan_round':>11} "
        f"{'k':>3} {'every':>5} {'probes':>6} {'json':>9} {'encode':>8} {'gzip':>8}"
    )
    print(header)
    for n in args.nodes:
        inv = eks_inventory(n)
        build_s = timed(partial(PinglistBuilder, inv, policy), args.repeat)
        builder = PinglistBuilder(inv, policy)
        names = random.Random(n).sample(builder.agents(), min(20, len(builder.agents())))
        for_agent_s = timed(partial(each, builder.for_agent, names), args.repeat) / len(names)
        version_s = timed(partial(each, builder.version_of, names), args.repeat) / len(names)
        pl = builder.for_agent(names[0])
        assert pl is not None
        plan_s = timed(partial(plan_fresh, pl, index), args.repeat)
        probes = planned_count(plan_round(pl, index, random.Random(0)))
        encoded = msgspec.json.encode(pl)
        encode_s = timed(partial(msgspec.json.encode, pl), args.repeat)
        zipped = gzip.compress(encoded)
        print(
            f"{n:>6} {len(builder.agents()):>6} {build_s * 1e3:>7.0f}ms {for_agent_s * 1e3:>8.2f}ms "
            f"{version_s * 1e6:>9.2f}us {plan_s * 1e3:>9.2f}ms "
            f"{pl.peers_per_round:>3} {builder.shared_every:>5} {probes:>6} "
            f"{len(encoded) / 1e6:>7.2f}MB {encode_s * 1e3:>6.1f}ms {len(zipped) / 1e3:>6.0f}kB"
        )


if __name__ == "__main__":
    main()
