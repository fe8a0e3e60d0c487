"""One diagnosis pass of the collector, as CPU seconds by stage, at a cluster size.

    PYTHONPATH=. python bench/collector_pass.py [--nodes 1000] [--rounds 30] [--passes 3] [--healthy]

Tunes its heap as ``prober collector`` does (``service.tune_heap``) and gives the pages
back after each pass as the service does. Generates ``--rounds`` rounds of an EKS-like
cluster at the production schedule (``tests/synth.py``: 2 agents a node, the cluster
budget's probes), with a few faults from the middle on (``--healthy``: none, the
background noise alone, as most passes of a running collector read), stores them in a real
:class:`~prober.collector.store.Store` as the collector does, then times what one
refresh of the collector does (as ``CollectorService`` does it, in one thread, with its
default schedule): the tables of the latest 15 s and recent 20 s tails, the 60 s window
and the 300 s long window from the store's 5 s buckets, their evidence, the rules on the
tails (once, as the service), on each window (the long one within its bound,
``--long-window-entries``, as the service reads it), and the merge. Time is the thread's CPU
time (``time.thread_time``), so the figures hold on a loaded machine, with the kernel's
share of it beside (page faults of freshly allocated columns, mostly); the wall time is
printed too. Prints the best of ``--passes`` per stage, then a JSON line.

The goal (README § Benchmarks): one pass, all windows, ≤ 0.5 s at 1,000 nodes.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import pickle
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prober.collector.service import trim_heap, tune_heap
from prober.collector.settings import CollectorSettings
from prober.collector.store import Store, StoreSettings
from prober.diagnose import NAMED_RULES, diagnose_recent, diagnose_window, longer_window_rules, merge_windows
from prober.report import Window, evidence_for
from prober.stats import PairTable
from tests.synth import Cluster, Fault, Generated, simulate

ROOT = Path(__file__).resolve().parents[1]
#: The files whose code makes the records (part of the cache key).
GENERATOR_SOURCES = ("tests/synth.py", "tests/inventories.py", "prober/schedule.py", "prober/pinglist.py")

T = TypeVar("T")


def timed(stages: dict[str, list[float]], name: str, fn: Callable[[], T]) -> T:
    start, sys0 = time.thread_time(), _sys_s()
    out = fn()
    stages.setdefault(name, []).append(time.thread_time() - start)
    SYSTEM.setdefault(name, []).append(_sys_s() - sys0)
    return out


#: The kernel's share of each stage's CPU time: page faults of freshly allocated
#: columns, mostly (a virtual machine pays dearly for them, and variably).
SYSTEM: dict[str, list[float]] = {}


def _sys_s() -> float:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_stime


def generated(args: argparse.Namespace) -> Generated:
    """The bench's records: generated, or read back from ``--cache``."""
    cluster = Cluster(n_nodes=args.nodes)
    nodes = cluster.nodes
    faults = [
        Fault(kind="node-unreachable", nodes=(nodes[1],)),
        Fault(kind="pair-blocked", nodes=(nodes[2], nodes[3])),
        Fault(kind="packet-loss", nodes=(nodes[4],), rate=0.05),
    ]
    if args.healthy:
        faults = []
    # The records depend on the code that makes them (the schedule, the network model) too.
    sources = b"".join((ROOT / f).read_bytes() for f in GENERATOR_SOURCES)
    key = hashlib.blake2b(sources, digest_size=8).hexdigest()
    name = f"collector-pass-{args.nodes}-{args.rounds}{'-healthy' if args.healthy else ''}-{key}.pickle"
    cached = Path(args.cache) / name if args.cache else None
    if cached is not None and cached.exists():
        gen: Generated = pickle.loads(cached.read_bytes())
    else:
        half = (args.rounds // 2, args.rounds)
        gen = simulate(cluster, rounds=args.rounds, faults=faults, seed=1, fault_rounds=half)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(pickle.dumps(gen))
    return gen


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=30, help="rounds stored (default 30: the long window)")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument(
        "--healthy",
        action="store_true",
        help="a cluster without faults (background noise only): what most passes of a running collector read",
    )
    ap.add_argument(
        "--long-window-entries",
        type=lambda v: None if v == "none" else int(v),
        default=CollectorSettings(inventory="bench").long_window_entries,
        help="the long window's bound in entries ('none': the whole window; default: the collector's)",
    )
    ap.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "prober-bench"),
        help="keep the generated records here and reuse them ('' for none)",
    )
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    tune_heap()  # as `prober collector` does
    t0 = time.perf_counter()
    gen = generated(args)
    print(f"{args.nodes} nodes: {len(gen.records):,} records in {args.rounds} rounds, ready in "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    sched = CollectorSettings(inventory="bench", long_window_entries=args.long_window_entries).passes()
    store = Store(StoreSettings(bucket_s=sched.bucket_s, retention_s=sched.retention_s))
    store.set_nodes(gen.nodes)
    now = gen.end_ts - 0.001
    start = time.thread_time()
    for i in range(0, len(gen.records), 5000):
        store.ingest(gen.records[i : i + 5000], now=now)
    ingest_s = time.thread_time() - start
    del gen.records[:]
    print(f"ingest: {ingest_s / max(1, store.usage().entries) * 1e6:.2f} µs CPU per stored entry; "
          f"store {store.usage().bytes / 2**20:.0f} MiB")  # fmt: skip
    stages: dict[str, list[float]] = {}
    walls: list[float] = []
    findings = []
    for _ in range(args.passes):
        wall = time.perf_counter()
        cpu0, sys0 = time.thread_time(), _sys_s()

        # As the service: only the window's own table has latency histograms (the matrix's).
        def lean(window_s: float) -> Callable[[], PairTable]:
            return functools.partial(store.snapshot(now=now, window_s=window_s).table, histogram=False)

        latest = timed(stages, "table 15 s", lean(sched.latest_s))
        recent = timed(stages, "table 20 s", lean(sched.recent_s))
        main_t = timed(stages, "table 60 s", store.snapshot(now=now, window_s=60.0).table)
        # As the service: the long window within its bound (`long_window_entries`).
        long_snap = store.snapshot(now=now, window_s=300.0, entries=sched.long_window_entries, pair_s=60.0)
        long_t = timed(stages, "table 300 s", functools.partial(long_snap.table, histogram=False))
        nlb60 = timed(stages, "NLB probes", lambda: store.nlb_probes(now=now, window_s=60.0))
        nlb300 = store.nlb_probes(now=now, window_s=300.0)
        ev60, ev300 = (
            evidence_for(
                [Window(table=t, nlb_probes=p)], topology=gen.topology, recent=recent, latest=latest
            )[0]
            for t, p in ((main_t, nlb60), (long_t, nlb300))
        )
        # As the service: the tails' findings once, read by both windows.
        tails = timed(stages, "rules on the tails", lambda: diagnose_recent(ev60))  # noqa: B023
        raw60 = timed(stages, "rules 60 s", lambda: diagnose_window(ev60, recent_found=tails))  # noqa: B023
        # As the service: the long window runs the rules up to the last slow kind's.
        longer = longer_window_rules(NAMED_RULES)
        raw300 = timed(
            stages,
            "rules 300 s",
            lambda: diagnose_window(ev300, rules=longer, recent_found=tails),  # noqa: B023
        )
        findings = timed(stages, "merge", lambda: merge_windows([raw60, raw300], shortest=main_t))  # noqa: B023
        trim_heap()  # as the service does after each pass
        stages.setdefault("pass", []).append(time.thread_time() - cpu0)
        SYSTEM.setdefault("pass", []).append(_sys_s() - sys0)
        walls.append(time.perf_counter() - wall)
    print(f"rows: 15 s {latest.rows:,}, 20 s {recent.rows:,}, 60 s {main_t.rows:,}, 300 s {long_t.rows:,}")
    print(f"{'stage':<26} {'CPU s (best)':>12} {'of which kernel':>16}")
    for name, values in stages.items():
        best = values.index(min(values))
        print(f"{name:<26} {values[best]:12.3f} {SYSTEM[name][best]:16.3f}")
    print(f"pass wall time (best) {min(walls):.3f} s; goal <= 0.5 s CPU at 1,000 nodes")
    print("findings:", [(f.kind.value, f.nodes[:3]) for f in findings])
    print(json.dumps({"nodes": args.nodes, **{k: round(min(v), 3) for k, v in stages.items()}}))


if __name__ == "__main__":
    main()
