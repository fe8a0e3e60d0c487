"""How long diagnosis takes on a million probe results (the offline ``prober diagnose`` budget).

Generates 1M records from the synthetic cluster in ``tests/synth.py`` (an EKS-like
cluster of 120 nodes at the production schedule: k = 36 peers a round, shared
targets every other round; noise only, then with faults), and times the parts that
are diagnosis's share of ``prober diagnose``, through the report pipeline
(``prober.report``): the window's tables from the records (``window_from_records``:
the table, the NLB probes and the recent table) and the findings (``findings_for``),
with and without the recent table. Decoding the JSONL is timed too, for the whole
budget, but it is the records module's share.

    PYTHONPATH=. python bench/diagnose_speed.py [--records 1000000] [--nodes 120]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

from prober.records import encode_records, iter_records
from prober.report import findings_for, window_from_records
from tests.synth import Cluster, Fault, generate

T = TypeVar("T")


def timed(label: str, fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t0
    print(f"  {label:<34} {dt:7.2f} s")
    return result, dt


def run(cluster: Cluster, records: int, faults: list[Fault], title: str) -> None:
    per_round = len(generate(cluster, rounds=1, seed=0))
    rounds = max(1, records // per_round)
    print(f"{title}: {cluster.n_nodes} nodes, {rounds} rounds of {per_round} probes")
    recs, _ = timed(
        "generate (not timed as diagnosis)", lambda: generate(cluster, rounds=rounds, faults=faults)
    )
    print(f"  {'records':<34} {len(recs):>9,}")
    blob = encode_records(recs)
    timed("decode JSONL (records' share)", lambda: list(iter_records(blob.splitlines())))
    recent_s = 2 * cluster.interval_s
    (window, recent), t_window = timed(
        "tables (window_from_records)",
        lambda: window_from_records(recs, nodes=cluster.nodes, recent_s=recent_s),
    )
    print(f"  {'table rows':<34} {window.table.rows:>9,}")
    found, _ = timed("diagnose", lambda: findings_for([window], topology=cluster.topology()))
    found2, t_diag2 = timed(
        "diagnose with recent",
        lambda: findings_for([window], topology=cluster.topology(), recent=recent),
    )
    total = t_window + t_diag2
    print(f"  {'diagnosis share, total':<34} {total:7.2f} s")
    for f in found2:
        print(f"  -> {f.kind} {f.nodes[:4]}{' ...' if len(f.nodes) > 4 else ''} conf={f.confidence}")
    if [f.kind for f in found] != [f.kind for f in found2]:
        print("  (without recent:", [f.kind for f in found], ")")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--nodes", type=int, default=120)
    args = ap.parse_args()
    cluster = Cluster(n_nodes=args.nodes)
    nodes = cluster.nodes
    run(cluster, args.records, [], "noise only (0.05% of probes fail)")
    faults = [
        Fault(kind="node-unreachable", nodes=(nodes[3],)),
        Fault(kind="packet-loss", nodes=(nodes[40],), rate=0.1),
        Fault(kind="bridge-netfilter", nodes=(nodes[77],)),
        Fault(kind="nlb-hairpin"),
        Fault(kind="dns-timeouts", rate=0.02),
    ]
    run(cluster, args.records, faults, "five faults")


if __name__ == "__main__":
    main()
