"""Time to detect, time to clear and wrong findings shown, per fault kind and traffic policy (root).

    python bench/lab_time_to_detect.py [--policy Local --policy Cluster] [--interval 10]
        [--fault KIND ...] [--parallel N] [--nodes 3] [--prefix P]

The faults are the catalogue's lab faults (every failure mode with a ``lab_fault``,
:mod:`prober.diagnose.catalogue`), so a new mode is measured as soon as the lab can
make it. For each traffic policy (the echo NodePort/NLB's ``externalTrafficPolicy``;
a lab without that option runs ``Local`` only) and each probe interval asked for
(default: the production 10 s, with its 5 s timeout and 20 probes/s budget; ``1``: the
lab's 1 s with 0.9 s and 50/s), builds a lab with the real collector and agents, and
for each fault switches it on in a lab that has been clean for a while, then polls
``GET /api/v1/findings`` (what the API, ``prober_finding`` and the web matrix show:
the collector's default 60 s window, its longer window and recent evidence, confirmed
over its passes, as in production) every second:

* until a finding of the fault's kind naming the fault's nodes appears (time to
  detect, in seconds and rounds; the goals: within two rounds for node-unreachable,
  node-isolated, pair-blocked, bridge-netfilter, snat-asymmetric, pod-network-isolated,
  zone-partition and mtu-blackhole, three for nlb-hairpin, six for
  nlb-5tuple-collision), then ``--hold`` seconds more with the fault on;
* then switches it off and polls ``--after`` seconds (default 60) more: time to clear
  is when the right finding was last shown after the fault was switched off;
* every finding shown at any poll, from the fault switched on to the end, other than
  the right one is a *wrong finding shown* (kind and nodes; goal: none). A kind the
  fault's lab configuration really produces beside it is right too (``ALONGSIDE``: the
  collision's cross-zone NLB with client-IP preservation makes every client hairpin).

Each fault goes on at a random point of the collector's 5 s refresh cycle (``--seed``),
as a real fault does, and the clock starts once it is in force (switching it, printed
as ``switch``, takes 0.1-1.5 s of iptables in the lab's namespaces). ``--trials N``
measures each fault N times; the summary gives each kind's median and worst, and
counts a goal met when the median meets it.

``--gap S``: faults in a row, as they come in a bad hour: each fault goes on ``S``
seconds (plus its random phase, under a refresh) after the one before went off (in the
same lab, without waiting for it to show nothing), and time to clear is polled for
those ``S`` seconds only. The finding
of the fault before is right while it clears; anything else is wrong (the goal: two
faults within a minute give two correct findings and nothing else, never the old
fault's failures resurfacing as a new ``unexplained``). Each lab's first fault starts
clean.

``--parallel N`` runs N labs at once (prefixes ``P0``..``P{N-1}``), each a share of the
faults in sequence, so the whole table takes about a Nth of the time; on a loaded
machine the labs compete for CPU. Bounded: each fault waits at most
``--max-intervals`` rounds (and at least ``--max-seconds``); the clean-up at most the
collector's window plus a minute. The collector recomputes findings every 5 s (2.5 s
after each of its 5 s buckets ends) and names a fault from its last round and a
bucket, which bounds the times from below (about one round and a half). The lab's
namespaces take the prefix in ``PROBER_LAB_TEST_PREFIX`` (default ``plabbt``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prober.diagnose.mode import Arity
from prober_lab import netns, runtime
from prober_lab.faults import FAULTS, parse_fault
from prober_lab.plan import Cni, LabSpec, Plan

PREFIX = os.environ.get("PROBER_LAB_TEST_PREFIX", "plabbt")
POLICIES = ("Local", "Cluster")
#: Rounds to detect, the goal per kind (the kinds without one are measured all the same).
GOALS = {
    "node-unreachable": 2,
    "node-isolated": 2,
    "pair-blocked": 2,
    "bridge-netfilter": 2,
    "snat-asymmetric": 2,
    "nlb-hairpin": 3,
    "nlb-5tuple-collision": 6,
    "pod-network-isolated": 2,
    "zone-partition": 2,
    "mtu-blackhole": 2,
}

#: Kinds a fault's lab configuration really produces beside its own, named on these nodes:
#: they are right, not wrong findings. The collision needs cross-zone balancing with
#: client-IP preservation, and with it every in-cluster client that the NLB sends to
#: its own node hairpins (docs/incidents.md#istio-nlb-cross-zone).
ALONGSIDE: dict[str, dict[str, tuple[str, ...]]] = {
    "nlb-5tuple-collision": {"nlb-hairpin": ("node-a", "node-b", "node-c")},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    fault: str
    kind: str
    nodes: tuple[str, ...]  # the nodes the finding must name (empty: none needed)
    cni: Cni = Cni.BRIDGE
    zones: tuple[str, ...] = ()  # the zones the finding must name
    #: (nodes, zones) of the lab this case needs, when not --nodes' default shape.
    shape: tuple[int, int] | None = None


def case_of(kind: str) -> Case:
    """The bench's case for a catalogue lab fault: which nodes (or zones) it takes, and its lab."""
    [info] = [i for k, i in FAULTS.items() if k.value == kind]
    # VPC pods keep their source port to the NLB (bridge pods are masqueraded): more pairs collide.
    cni = info.needs_cni or (Cni.VPC if kind == "nlb-5tuple-collision" else Cni.BRIDGE)
    arity = info.lab.arity
    rate = ":0.1" if info.lab.takes_rate else ""
    if arity is Arity.ZONE_PAIR:
        # Three zones of two nodes: a zone of one node is that node's fault.
        return Case(fault=f"{kind}@zone-a,zone-b", kind=kind, nodes=(), zones=("zone-a", "zone-b"),
                    cni=cni, shape=(6, 3))  # fmt: skip
    if arity is Arity.ONE_ZONE:
        # Two zones of three nodes: a degraded zone needs three (fewer are their nodes' loss).
        return Case(
            fault=f"{kind}@zone-a{rate}", kind=kind, nodes=(), zones=("zone-a",), cni=cni, shape=(6, 2)
        )
    if arity is Arity.PAIR:
        return Case(fault=f"{kind}@node-a,node-c{rate}", kind=kind, nodes=("node-a", "node-c"), cni=cni)
    if arity is Arity.ONE_OR_MORE:
        return Case(fault=f"{kind}@node-c{rate}", kind=kind, nodes=("node-c",), cni=cni)
    return Case(fault=f"{kind}{rate}", kind=kind, nodes=(), cni=cni)


#: The collector's refresh (``refresh_s``, its default): findings change at most this often.
REFRESH_S = 5.0

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
    clean_s: float  # how long the lab took to show nothing before the fault (nan: never)
    switch_s: float = 0.0  # how long switching the fault on took (the clock starts after it)


def label(f: dict[str, object]) -> str:
    nodes = f.get("nodes")
    return f"{f.get('kind')}[{','.join(str(n) for n in nodes) if isinstance(nodes, list) else ''}]"


def measure(
    plan: Plan,
    case: Case,
    max_s: float,
    *,
    hold_s: float,
    after_s: float,
    clean_s: float,
    phase_s: float = 0.0,
    previous: Case | None = None,
) -> Measured:
    """``previous``: the fault switched off just before this one (``--gap``), whose
    finding is right while it clears."""
    wrong: dict[str, None] = {}

    def also(c: Case, f: dict[str, object]) -> bool:
        nodes = f.get("nodes")
        extra = ALONGSIDE.get(c.kind, {}).get(str(f.get("kind")))
        return extra is not None and isinstance(nodes, list) and set(nodes) <= set(extra)

    def right(f: dict[str, object]) -> bool:
        if named([f], case) or also(case, f):
            return True
        return previous is not None and (named([f], previous) or also(previous, f))

    def poll() -> bool:
        found = findings(plan)
        for f in found:
            if not right(f):
                wrong.setdefault(label(f), None)
        return named(found, case)

    # A real fault starts at any point of the collector's refresh cycle: wait ``phase_s``
    # (drawn over one refresh) first. Without it every case after a worker's first would
    # start just after a refresh (the previous case ended on a poll that followed one),
    # the worst phase, every time.
    time.sleep(phase_s)
    asked = time.monotonic()
    runtime.set_faults(plan.prefix, [parse_fault(case.fault)])
    # The clock starts once the fault is in force: switching it (iptables in every
    # namespace it touches) takes 0.1-1.5 s in the lab, and is reported apart.
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
        off = time.monotonic()
        runtime.set_faults(plan.prefix, [])
    cleared: float | None = 0.0
    while (since := time.monotonic() - off) < after_s:
        if poll():
            cleared = None
        elif cleared is None:
            cleared = since
        time.sleep(1.0)
    return Measured(
        detected_s=detected, cleared_s=cleared, wrong=tuple(wrong), clean_s=clean_s, switch_s=on - asked
    )


def lab_spec(policy: str, **kw: object) -> LabSpec:
    """A lab with the echo's externalTrafficPolicy."""
    return LabSpec(external_traffic_policy=policy, **kw)  # type: ignore[arg-type]


def run(
    cases: list[Case], *, policy: str, interval: float, args: argparse.Namespace, prefix: str
) -> Iterator[tuple[Case, Measured]]:
    """Measure ``cases`` in sequence, one lab per (CNI, shape); yields (case, Measured)."""
    timeout, budget = SCHEDULES[interval]
    phases = random.Random(args.seed)
    labs = sorted({(c.cni, c.shape) for c in cases}, key=lambda k: (k[0].value, k[1] or (0, 0)))
    for cni, shape in labs:
        todo = [c for c in cases if (c.cni, c.shape) == (cni, shape)]
        n_nodes, n_zones = shape or (args.nodes, None)
        runtime.down(prefix)
        opts = runtime.UpOptions(interval_s=interval, timeout_s=timeout, budget=budget)
        state = runtime.up(lab_spec(policy, nodes=n_nodes, cni=cni, prefix=prefix, zones=n_zones), [], opts)
        plan = state.plan
        try:
            time.sleep(3 * interval)  # every agent past its first round
            previous: Case | None = None
            for case in todo:
                for _ in range(args.trials):
                    # In a row (--gap): the next fault goes on ``gap`` s after the last
                    # went off, whatever is shown; the lab's first starts clean.
                    in_row = args.gap is not None and previous is not None
                    clean = 0.0 if in_row else wait_clean(plan, opts.window_s + 60.0)
                    max_s = max(args.max_seconds, args.max_intervals * interval)
                    got = measure(
                        plan, case, max_s, hold_s=args.hold,
                        after_s=args.after if args.gap is None else args.gap, clean_s=clean,
                        phase_s=phases.uniform(0.0, REFRESH_S), previous=previous if in_row else None,
                    )  # fmt: skip
                    yield case, got
                    previous = case
        finally:
            runtime.down(prefix)


def row(policy: str, interval: float, case: Case, got: Measured, args: argparse.Namespace) -> str:
    max_s = max(args.max_seconds, args.max_intervals * interval)
    goal = GOALS.get(case.kind)
    det = (
        f"{'>' + format(max_s, '.0f'):>8}s {'-':>6}"
        if got.detected_s is None
        else f"{got.detected_s:8.1f}s {got.detected_s / interval:6.1f}"
    )
    polled = args.after if args.gap is None else args.gap
    clr = (
        f"{'>' + format(polled, '.0f'):>8}s {'-':>6}"
        if got.cleared_s is None
        else f"{got.cleared_s:8.1f}s {got.cleared_s / interval:6.1f}"
    )
    return (
        f"{policy:<7} {interval:>4g}s  {case.fault:<30} {got.switch_s:5.1f}s {det} "
        f"{'≤' + str(goal) if goal else '':>4} {clr}  "
        f"{', '.join(got.wrong) or 'none'}"
        + ("" if got.clean_s == got.clean_s else "  (not clean before the fault: not a valid row)")
    )


HEADER = (
    f"{'policy':<7} {'round':>5}  {'fault':<30} {'switch':>6} {'detected':>9} {'rounds':>6} {'goal':>4} "
    f"{'cleared':>9} {'rounds':>6}  wrong findings shown"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", action="append", choices=POLICIES, help="default: Local")
    parser.add_argument("--interval", type=float, action="append", choices=sorted(SCHEDULES))
    parser.add_argument("--fault", action="append", help="only these fault kinds (default: every lab fault)")
    parser.add_argument("--parallel", type=int, default=1, help="labs at once (each a share of the faults)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--max-intervals", type=float, default=30.0)
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--hold", type=float, default=20.0, help="seconds the fault stays on once detected")
    parser.add_argument("--after", type=float, default=60.0, help="seconds polled after the fault is off")
    parser.add_argument("--trials", type=int, default=1, help="times each fault is measured (each a row)")
    parser.add_argument(
        "--gap",
        type=float,
        help="faults in a row: each goes on this many seconds after the one before went off "
        "(default: each starts in a lab that shows nothing)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="of the onset phases within the collector's refresh"
    )
    parser.add_argument("--prefix", default=PREFIX, help="lab name prefix (one per checkout on a machine)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a worker's rows
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    if args.gap is not None and not 0 <= args.gap <= 600:
        parser.error("--gap is seconds from one fault off to the next on, 0 to 600")
    netns.check_can_run()
    # SIGTERM (and SIGINT, which a background job ignores) tears the labs down on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    intervals = args.interval or [10.0]
    policies = args.policy or ["Local"]
    kinds = [k.value for k in FAULTS]
    unknown = set(args.fault or ()) - set(kinds)
    if unknown:
        raise SystemExit(f"no lab fault {sorted(unknown)}; the lab's faults: {', '.join(kinds)}")
    cases = [case_of(k) for k in kinds if not args.fault or k in args.fault]
    jobs = [(p, i) for p in policies for i in intervals]
    results: list[tuple[str, float, Case, Measured]] = []
    if args.parallel > 1:
        results = run_parallel(cases, jobs, args)
    else:
        if not args.json:
            print(HEADER, flush=True)
        for policy, interval in jobs:
            for case, got in run(cases, policy=policy, interval=interval, args=args, prefix=args.prefix):
                results.append((policy, interval, case, got))
                if args.json:
                    print(json.dumps({"policy": policy, "interval": interval, "kind": case.kind,
                                      **dataclasses.asdict(got)}), flush=True)  # fmt: skip
                else:
                    print(row(policy, interval, case, got, args), flush=True)
    if not args.json:
        summary(results, jobs)


def run_parallel(
    cases: list[Case], jobs: list[tuple[str, float]], args: argparse.Namespace
) -> list[tuple[str, float, Case, Measured]]:
    """Split (policy, interval, case) over ``--parallel`` worker processes, each its own lab
    prefix; print every row as it comes, then the table in order."""
    work = [(p, i, c) for p, i in jobs for c in cases]
    # Cases that share a lab (CNI and shape) go to the same worker where possible.
    work.sort(key=lambda w: (w[0], w[1], w[2].cni.value, w[2].shape or (0, 0)))
    shares: list[list[tuple[str, float, Case]]] = [[] for _ in range(args.parallel)]
    for n, w in enumerate(work):
        shares[n * args.parallel // len(work)].append(w)
    procs = []
    for n, share in enumerate(s for s in shares if s):
        cmd = [sys.executable, __file__, "--json", "--prefix", f"{args.prefix[:5]}{n}",
               "--nodes", str(args.nodes), "--hold", str(args.hold), "--after", str(args.after),
               "--max-intervals", str(args.max_intervals),
               "--max-seconds", str(args.max_seconds), "--trials", str(args.trials),
               "--seed", str(args.seed + n)]  # fmt: skip
        if args.gap is not None:
            cmd += ["--gap", str(args.gap)]
        for policy in sorted({w[0] for w in share}):
            cmd += ["--policy", policy]
        for interval in sorted({w[1] for w in share}):
            cmd += ["--interval", f"{interval:g}"]
        for kind in sorted({w[2].kind for w in share}):
            cmd += ["--fault", kind]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    print(f"{len(procs)} labs at once", file=sys.stderr, flush=True)
    by_kind = {c.kind: c for c in cases}
    out: list[tuple[str, float, Case, Measured]] = []
    print(HEADER, flush=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    for proc in procs:
        threading.Thread(target=pump, args=(proc,), daemon=True).start()
    try:
        running = len(procs)
        while running:
            line = lines.get()
            if line is None:
                running -= 1
                continue
            d = json.loads(line)
            got = Measured(detected_s=d["detected_s"], cleared_s=d["cleared_s"], wrong=tuple(d["wrong"]),
                           clean_s=d["clean_s"], switch_s=d["switch_s"])  # fmt: skip
            out.append((d["policy"], d["interval"], by_kind[d["kind"]], got))
            print(row(d["policy"], d["interval"], by_kind[d["kind"]], got, args), flush=True)
        for proc in procs:
            proc.wait()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()  # each worker tears its lab down
        for proc in procs:
            proc.wait(timeout=120)
    return out


def summary(results: list[tuple[str, float, Case, Measured]], jobs: list[tuple[str, float]]) -> None:
    """Per policy and interval: each kind's median and worst rounds over its trials, and the
    goals met by the median."""
    for policy, interval in jobs:
        mine = [(c, m) for p, i, c, m in results if (p, i) == (policy, interval)]
        kinds = list(dict.fromkeys(c.kind for c, _ in mine))
        per_kind: dict[str, list[float]] = {
            k: [m.detected_s / interval for c, m in mine if c.kind == k and m.detected_s is not None]
            for k in kinds
        }
        missed = [k for k in kinds if len(per_kind[k]) < sum(c.kind == k for c, _ in mine)]
        met = [k for k in kinds if k in GOALS and per_kind[k] and statistics.median(per_kind[k]) <= GOALS[k]]
        trials = max((sum(c.kind == k for c, _ in mine) for k in kinds), default=0)
        if trials > 1:
            for k in kinds:
                r = per_kind[k]
                goal = f" (goal ≤ {GOALS[k]})" if k in GOALS else ""
                spread = f"median {statistics.median(r):.1f}, worst {max(r):.1f} rounds" if r else "never"
                print(f"{policy}, {interval:g} s: {k}: {spread} over {len(r)} detections{goal}")
        medians = [statistics.median(r) for r in per_kind.values() if r]
        if medians:
            print(
                f"{policy}, {interval:g} s rounds: median {statistics.median(medians):.1f} rounds to detect, "
                f"worst kind {max(medians):.1f}; goal met (median) by {len(met)} of "
                f"{sum(k in GOALS for k in kinds)}; "
                f"faults with wrong findings shown: {sum(bool(m.wrong) for _, m in mine)} of {len(mine)}; "
                f"not detected (in some trial): {', '.join(missed) or 'none'}"
            )


if __name__ == "__main__":
    main()
