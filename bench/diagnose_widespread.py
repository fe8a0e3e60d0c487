"""Diagnosis time during a widespread failure against a healthy cluster of the same size.

    PYTHONPATH=. python bench/diagnose_widespread.py [--nodes 1000] [--rounds 6] [--repeat 3]

Generates one window (the collector's default: 6 rounds of 10 s) of an EKS-like
cluster at the production schedule (``tests/synth.py``), healthy and then with each
widespread failure below, and times what the collector does with a window: its
findings from the window's tables (``findings_for``: the window and the last two
rounds as recent evidence). Table building is timed apart (it does not depend on the
failure). Prints the best of ``--repeat`` runs per case, the findings' count and the
ratio to the healthy time (the goal: within 2x). Times are CPU seconds of the
diagnosing thread, so a loaded machine does not skew the ratio.

Cases: every node of one zone unreachable (a zone cut off), every node of one zone
isolated, and one node in twenty lossy (10% per direction).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from prober.report import findings_for, window_from_records
from tests.synth import Cluster, Fault, simulate


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    """The least CPU time (this thread's: the machine's other load does not count) of ``repeat`` runs."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.thread_time()
        result = fn()
        best = min(best, time.thread_time() - t0)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cluster = Cluster(n_nodes=args.nodes)
    zone0 = tuple(n for n in cluster.nodes if cluster.zone(n) == cluster.zone(cluster.nodes[0]))
    cases: list[tuple[str, list[Fault]]] = [
        ("healthy", []),
        (f"zone unreachable ({len(zone0)} nodes)", [Fault(kind="node-unreachable", nodes=zone0)]),
        (f"zone isolated ({len(zone0)} nodes)", [Fault(kind="node-isolated", nodes=zone0)]),
        (
            f"1 node in 20 lossy ({len(cluster.nodes[::20])} nodes)",
            [Fault(kind="packet-loss", nodes=cluster.nodes[::20], rate=0.1)],
        ),
    ]
    print(
        f"{args.nodes} nodes, {args.rounds} rounds at the production schedule; best of {args.repeat}, "
        "CPU seconds"
    )
    print(f"{'case':<34} {'probes':>10} {'tables':>8} {'diagnosis':>10} {'findings':>9} {'x healthy':>10}")
    healthy_s: float | None = None
    for title, faults in cases:
        gen = simulate(cluster, rounds=args.rounds, faults=faults, seed=1)
        t0 = time.thread_time()
        window, recent = window_from_records(
            gen.records, nodes=gen.nodes, recent_s=2 * cluster.interval_s, stops=gen.stops
        )
        tables_s = time.thread_time() - t0
        topology = gen.topology
        diag_s, found = best_of(
            args.repeat,
            lambda: findings_for([window], topology=topology, recent=recent),  # noqa: B023
        )
        healthy_s = healthy_s if healthy_s is not None else diag_s
        n_found = len(found) if isinstance(found, list) else 0
        print(
            f"{title:<34} {len(gen.records):>10,} {tables_s:7.2f}s {diag_s:9.2f}s {n_found:>9} "
            f"{diag_s / healthy_s:9.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
