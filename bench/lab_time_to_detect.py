"""Time to detect, per fault kind: fault on -> the collector's first finding of that kind (root).

    python bench/lab_time_to_detect.py [--interval 10 --interval 1] [--fault KIND ...] [--nodes 3]
        [--prefix P]

For each probe interval asked for (default: the production 10 s, with its 5 s timeout
and 20 probes/s budget, and the lab's 1 s with 0.9 s and 50/s), builds a lab with the
real collector and agents, and for each fault switches it on in a lab that has been
clean for a while, then polls ``GET /api/v1/findings`` (the collector's default 60 s
window, its longer window and recent evidence, as in production) every half second
until a finding of the fault's kind naming the fault's nodes appears. Prints the time
in seconds and in probe intervals (the goal: within two), then switches the fault off
and waits until the collector's findings are empty again before the next one.

Bounded: each fault waits at most ``--max-intervals`` intervals (and at least
``--max-seconds``); the clean-up at most the collector's window plus a minute. The
collector recomputes findings at most every 5 s and keeps results in 10 s buckets, which
bounds the time to detect from below whatever the interval.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prober_lab import netns, runtime
from prober_lab.faults import parse_fault
from prober_lab.plan import Cni, LabSpec, Plan

PREFIX = "plabbt"


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    fault: str
    kind: str
    nodes: tuple[str, ...]  # the nodes the finding must name (empty: none needed)
    cni: Cni = Cni.BRIDGE
    zones: tuple[str, ...] = ()  # the zones the finding must name
    #: (nodes, zones) of the lab this case needs, when not --nodes' default shape.
    shape: tuple[int, int] | None = None


CASES = (
    Case(fault="bridge-netfilter@node-b", kind="bridge-netfilter", nodes=("node-b",)),
    Case(fault="nlb-hairpin", kind="nlb-hairpin", nodes=()),
    Case(fault="node-unreachable@node-c", kind="node-unreachable", nodes=("node-c",)),
    Case(fault="node-isolated@node-c", kind="node-isolated", nodes=("node-c",)),
    Case(fault="pair-blocked@node-a,node-c", kind="pair-blocked", nodes=("node-a", "node-c")),
    Case(fault="pod-network-isolated@node-b", kind="pod-network-isolated", nodes=("node-b",)),
    Case(fault="packet-loss@node-c:0.1", kind="packet-loss", nodes=("node-c",)),
    Case(fault="snat-asymmetric@node-b", kind="snat-asymmetric", nodes=("node-b",), cni=Cni.VPC),
    # VPC pods keep their source port to the NLB (bridge pods are masqueraded): more pairs collide.
    Case(fault="nlb-5tuple-collision", kind="nlb-5tuple-collision", nodes=(), cni=Cni.VPC),
    # Three zones of two nodes: a zone of one node is that node's fault.
    Case(
        fault="zone-partition@zone-a,zone-b",
        kind="zone-partition",
        nodes=(),
        zones=("zone-a", "zone-b"),
        shape=(6, 3),
    ),
)

#: interval -> (timeout, budget): production defaults, and the lab's.
SCHEDULES = {10.0: (5.0, 20.0), 1.0: (runtime.LAB_TIMEOUT_S, runtime.LAB_BUDGET)}


def findings(plan: Plan) -> list[dict[str, object]]:
    body = runtime.collector_get(plan, "/api/v1/findings", timeout_s=30.0)
    result: list[dict[str, object]] = json.loads(body)["findings"]
    return result


def named(found: list[dict[str, object]], case: Case) -> bool:
    for f in found:
        nodes, zones = f.get("nodes"), f.get("zones", [])
        if (
            f.get("kind") == case.kind
            and isinstance(nodes, list)
            and set(case.nodes) <= set(nodes)
            and isinstance(zones, list)
            and set(case.zones) <= set(zones)
        ):
            return True
    return False


def wait_clean(plan: Plan, limit_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if not findings(plan):
            return time.monotonic() - start
        time.sleep(1.0)
    return float("nan")


def measure(plan: Plan, case: Case, max_s: float) -> float | None:
    runtime.set_faults(plan.prefix, [parse_fault(case.fault)])
    on = time.monotonic()
    try:
        while (elapsed := time.monotonic() - on) < max_s:
            if named(findings(plan), case):
                return elapsed
            time.sleep(0.5)
        return None
    finally:
        runtime.set_faults(plan.prefix, [])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interval", type=float, action="append", choices=sorted(SCHEDULES))
    parser.add_argument("--fault", action="append", help="only these faults (as in CASES)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--max-intervals", type=float, default=30.0)
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--prefix", default=PREFIX, help="lab name prefix (one per checkout on a machine)")
    args = parser.parse_args()
    netns.check_can_run()
    intervals = args.interval or [10.0, 1.0]
    cases = [c for c in CASES if not args.fault or c.fault in args.fault]
    rows: list[tuple[float, str, float | None, float]] = []
    print(f"{'interval':>8}  {'fault':<28} {'detected':>9} {'intervals':>9}  {'clean again':>11}")
    for interval in intervals:
        timeout, budget = SCHEDULES[interval]
        labs = sorted({(c.cni, c.shape) for c in cases}, key=lambda k: (k[0].value, k[1] or (0, 0)))
        for cni, shape in labs:
            todo = [c for c in cases if (c.cni, c.shape) == (cni, shape)]
            n_nodes, n_zones = shape or (args.nodes, None)
            runtime.down(args.prefix)
            opts = runtime.UpOptions(interval_s=interval, timeout_s=timeout, budget=budget)
            spec = LabSpec(nodes=n_nodes, cni=cni, prefix=args.prefix, zones=n_zones)
            state = runtime.up(spec, [], opts)
            plan = state.plan
            try:
                time.sleep(3 * interval)  # every agent past its first round
                for case in todo:
                    max_s = max(args.max_seconds, args.max_intervals * interval)
                    got = measure(plan, case, max_s)
                    clean = wait_clean(plan, opts.window_s + 60.0)
                    rows.append((interval, case.fault, got, clean))
                    if got is None:
                        shown = f"{'>' + format(max_s, '.0f'):>8}s {'-':>9}"
                    else:
                        shown = f"{got:8.1f}s {got / interval:9.1f}"
                    print(f"{interval:>7g}s  {case.fault:<28} {shown}  {clean:10.1f}s", flush=True)
            finally:
                runtime.down(args.prefix)
    for interval in intervals:
        ratios = [r[2] / interval for r in rows if r[0] == interval and r[2] is not None]
        missed = sum(1 for r in rows if r[0] == interval and r[2] is None)
        if ratios:
            within = sum(g <= 2 for g in ratios)
            print(
                f"interval {interval:g} s: median {statistics.median(ratios):.1f} intervals, "
                f"worst {max(ratios):.1f}; within two intervals: {within} of {len(ratios) + missed}"
            )


if __name__ == "__main__":
    main()
