"""A clean lab, soaked: how many findings appear when nothing is wrong (goal: none), per-path success (root).

    python bench/lab_soak.py [--minutes 10] [--nodes 3] [--cni bridge] [--interval 1]

Builds a clean lab with the real collector and agents, then for ``--minutes`` polls the
collector's findings (``GET /api/v1/findings``: its default window, its longer window
and recent evidence, as in production) once per probe interval, and reports every
finding that ever appeared (with its evidence, the first time). At the end, the success
ratio of every path over the soak, from the collector's own
``prober_ingested_probes_total{path,outcome}`` counters, and the worst path.

Bounded: exactly ``--minutes`` of polling (one request per interval), then teardown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prober_lab import netns, runtime
from prober_lab.plan import Cni, LabSpec, Plan

PREFIX = "plabbs"


def ingested(plan: Plan) -> Counter[tuple[str, str]]:
    """(path, outcome) -> results the collector has ingested so far."""
    text = runtime.collector_get(plan, "/metrics").decode()
    out: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "prober_ingested_probes":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[(sample.labels["path"], sample.labels["outcome"])] += int(sample.value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--cni", choices=[c.value for c in Cni], default="bridge")
    parser.add_argument("--interval", type=float, default=runtime.LAB_INTERVAL_S)
    args = parser.parse_args()
    netns.check_can_run()
    runtime.down(PREFIX)
    opts = runtime.UpOptions(interval_s=args.interval)
    state = runtime.up(LabSpec(nodes=args.nodes, cni=Cni(args.cni), prefix=PREFIX), [], opts)
    plan = state.plan
    seen: dict[tuple[str, tuple[str, ...]], int] = {}
    polls = polls_with_findings = 0
    try:
        time.sleep(3 * args.interval)  # every agent past its first round
        before = ingested(plan)
        start = time.monotonic()
        end = start + 60 * args.minutes
        print(
            f"soaking a clean {args.cni} lab of {args.nodes} nodes for {args.minutes:g} min "
            f"(interval {args.interval:g} s), polling findings every {args.interval:g} s",
            flush=True,
        )
        next_poll = start
        while next_poll < end:
            time.sleep(max(0.0, next_poll - time.monotonic()))
            found = json.loads(runtime.collector_get(plan, "/api/v1/findings", timeout_s=30.0))["findings"]
            polls += 1
            polls_with_findings += bool(found)
            for f in found:
                key = (f["kind"], tuple(f["nodes"]))
                if key not in seen:
                    at = time.monotonic() - start
                    print(f"  {at:6.0f} s: {f['kind']} {f['nodes']}: {f['evidence']}", flush=True)
                seen[key] = seen.get(key, 0) + 1
            next_poll += args.interval
        after = ingested(plan)
    finally:
        runtime.down(PREFIX)
    print(f"\npolls: {polls}, with findings: {polls_with_findings}; distinct findings: {len(seen)}")
    for (kind, nodes), n in sorted(seen.items()):
        print(f"  {kind} {list(nodes)}: in {n} polls")
    print_paths(after - before, 60 * args.minutes)


def print_paths(delta: Counter[tuple[str, str]], seconds: float) -> None:
    paths = sorted({p for p, _ in delta})
    total = sum(delta.values())
    ok_total = sum(n for (_, o), n in delta.items() if o == "ok")
    print(f"probes: {total:,} ({total / seconds:.0f}/s), ok {ok_total / total:.5%}")
    print(f"{'path':<24} {'probes':>8} {'ok':>10}  failures")
    worst = ("", 1.0)
    for p in paths:
        sent = sum(n for (q, _), n in delta.items() if q == p)
        ok = delta[(p, "ok")]
        fails = {o: n for (q, o), n in delta.items() if q == p and o != "ok" and n}
        ratio = ok / sent if sent else float("nan")
        worst = min(worst, (p, ratio), key=lambda x: x[1])
        print(f"{p:<24} {sent:>8,} {ratio:>10.4%}  {fails or ''}")
    print(f"worst path: {worst[0]} {worst[1]:.4%}")


if __name__ == "__main__":
    main()
