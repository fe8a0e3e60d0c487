"""How fast ``tests/synth.py`` generates probe results at the production schedule.

Generates each case (nodes x seconds) with the production ``SchedulePolicy`` and the
default background noise, and prints the time of each phase: the collector's
pinglists (a ``PinglistBuilder`` per inventory version), the agents' round plans
(``for_agent`` and one ``plan_round`` per agent per round, the real code), their rows,
the network model (numpy) and the ``ProbeResult`` records, with the records per
second. Also one case with a rolling restart of the pod agents and a fault, for the
cost of inventory versions. The load average is printed too, and the process's CPU time next to the
wall time: on a shared, busy machine the CPU time is what the wall time would be alone.

    PYTHONPATH=. python bench/synth_speed.py [--case 1000x60 300x300] [--lifecycle]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

from tests.synth import Cluster, Event, Fault, RollingRestart, simulate

PHASES = ("pinglists", "plans", "rows", "network", "records")


def run(
    label: str,
    cluster: Cluster,
    seconds: float,
    *,
    faults: Sequence[Fault] = (),
    events: Sequence[Event] = (),
) -> None:
    timings: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    gen = simulate(cluster, duration_s=seconds, faults=faults, events=events, timings=timings)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(gen.records)
    phases = "  ".join(f"{p} {timings[p]:5.1f}s" for p in PHASES)
    print(
        f"{label:<28} {n:>10,} records  wall {total:6.1f} s  cpu {cpu:6.1f} s  ({n / total:>9,.0f}/s wall)  "
        f"k={cluster.k} every={cluster.every}  | wall: {phases}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs="+", default=["1000x60", "300x300"], help="NODESxSECONDS")
    ap.add_argument(
        "--lifecycle", action="store_true", help="also 1000x60 with a rolling restart and a fault"
    )
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for case in args.case:
        nodes, seconds = (int(x) for x in case.split("x"))
        run(f"{nodes} nodes x {seconds} s", Cluster(n_nodes=nodes), seconds)
    if args.lifecycle:
        cluster = Cluster(n_nodes=1000)
        events = [RollingRestart(start_s=0.0)]
        faults = [Fault(kind="packet-loss", nodes=(cluster.nodes[7],), rate=0.05, start_s=20.0)]
        run("1000 x 60 s, restart + loss", cluster, 60.0, events=events, faults=faults)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
