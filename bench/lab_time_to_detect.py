"""Time to detect, time to clear and wrong findings shown, per fault kind (root).

    python bench/lab_time_to_detect.py [--interval 10 --interval 1] [--fault KIND ...] [--nodes 3]
        [--prefix P]

For each probe interval asked for (default: the production 10 s, with its 5 s timeout
and 20 probes/s budget, and the lab's 1 s with 0.9 s and 50/s), builds a lab with the
real collector and agents, and for each fault switches it on in a lab that has been
clean for a while, then polls ``GET /api/v1/findings`` (the collector's default 60 s
window, its longer window and recent evidence, as in production) every second:

* until a finding of the fault's kind naming the fault's nodes appears (time to
  detect, in seconds and probe intervals; the goal: within two), then ``--hold``
  seconds more with the fault on;
* then switches it off and polls ``--after`` seconds (default 60) more: time to clear
  is when the right finding was last shown after the fault was switched off;
* every finding shown at any poll, from the fault switched on to the end, other than
  the right one is a *wrong finding shown* (kind and nodes; goal: none).

Bounded: each fault waits at most ``--max-intervals`` intervals (and at least
``--max-seconds``); the clean-up at most the collector's window plus a minute. The
collector recomputes findings at most every 5 s and keeps results in 10 s buckets, which
bounds the times from below whatever the interval. The lab's namespaces take the
prefix in ``PROBER_LAB_TEST_PREFIX`` (default ``plabbt``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prober_lab import netns, runtime
from prober_lab.faults import parse_fault
from prober_lab.plan import Cni, LabSpec, Plan

PREFIX = os.environ.get("PROBER_LAB_TEST_PREFIX", "plabbt")


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
    # Two zones of three nodes: a degraded zone needs three (fewer are their nodes' loss).
    Case(fault="zone-degraded@zone-a:0.1", kind="zone-degraded", nodes=(), zones=("zone-a",), shape=(6, 2)),
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    detected_s: float | None  # fault on -> the right finding first shown
    cleared_s: float | None  # fault off -> the right finding last shown (0: gone at once)
    wrong: tuple[str, ...]  # every other finding shown, "kind[nodes]", once each


def label(f: dict[str, object]) -> str:
    nodes = f.get("nodes")
    return f"{f.get('kind')}[{','.join(str(n) for n in nodes) if isinstance(nodes, list) else ''}]"


def measure(plan: Plan, case: Case, max_s: float, *, hold_s: float, after_s: float) -> Measured:
    wrong: dict[str, None] = {}

    def poll() -> bool:
        found = findings(plan)
        for f in found:
            if not named([f], case):
                wrong.setdefault(label(f), None)
        return named(found, case)

    runtime.set_faults(plan.prefix, [parse_fault(case.fault)])
    on = time.monotonic()
    detected: float | None = None
    try:
        while (elapsed := time.monotonic() - on) < max_s:
            if poll():
                detected = elapsed
                break
            time.sleep(1.0)
        hold_until = time.monotonic() + (hold_s if detected is not None else 0.0)
        while time.monotonic() < hold_until:
            poll()
            time.sleep(1.0)
    finally:
        runtime.set_faults(plan.prefix, [])
    off = time.monotonic()
    cleared: float | None = 0.0
    while (since := time.monotonic() - off) < after_s:
        if poll():
            cleared = None
        elif cleared is None:
            cleared = since
        time.sleep(1.0)
    return Measured(detected_s=detected, cleared_s=cleared, wrong=tuple(wrong))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interval", type=float, action="append", choices=sorted(SCHEDULES))
    parser.add_argument("--fault", action="append", help="only these faults (as in CASES)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--max-intervals", type=float, default=30.0)
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--hold", type=float, default=20.0, help="seconds the fault stays on once detected")
    parser.add_argument("--after", type=float, default=60.0, help="seconds polled after the fault is off")
    parser.add_argument("--prefix", default=PREFIX, help="lab name prefix (one per checkout on a machine)")
    args = parser.parse_args()
    netns.check_can_run()
    intervals = args.interval or [10.0, 1.0]
    cases = [c for c in CASES if not args.fault or c.fault in args.fault]
    rows: list[tuple[float, str, Measured]] = []
    print(
        f"{'interval':>8}  {'fault':<28} {'detected':>9} {'intervals':>9} {'cleared':>9} {'intervals':>9}  "
        "wrong findings shown"
    )
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
                    wait_clean(plan, opts.window_s + 60.0)
                    max_s = max(args.max_seconds, args.max_intervals * interval)
                    got = measure(plan, case, max_s, hold_s=args.hold, after_s=args.after)
                    rows.append((interval, case.fault, got))
                    det = (
                        f"{'>' + format(max_s, '.0f'):>8}s {'-':>9}"
                        if got.detected_s is None
                        else f"{got.detected_s:8.1f}s {got.detected_s / interval:9.1f}"
                    )
                    clr = (
                        f"{'>' + format(args.after, '.0f'):>8}s {'-':>9}"
                        if got.cleared_s is None
                        else f"{got.cleared_s:8.1f}s {got.cleared_s / interval:9.1f}"
                    )
                    print(
                        f"{interval:>7g}s  {case.fault:<28} {det} {clr}  {', '.join(got.wrong) or 'none'}",
                        flush=True,
                    )
            finally:
                runtime.down(args.prefix)
    for interval in intervals:
        mine = [r[2] for r in rows if r[0] == interval]
        ratios = [m.detected_s / interval for m in mine if m.detected_s is not None]
        if ratios:
            within = sum(g <= 2 for g in ratios)
            print(
                f"interval {interval:g} s: median {statistics.median(ratios):.1f} intervals to detect, "
                f"worst {max(ratios):.1f}; within two intervals: {within} of {len(mine)}; "
                f"faults with wrong findings shown: {sum(bool(m.wrong) for m in mine)} of {len(mine)}"
            )


if __name__ == "__main__":
    main()
