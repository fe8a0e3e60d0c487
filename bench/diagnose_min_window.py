"""The fewest rounds at which diagnosis names each failure mode exactly, at the production schedule.

For every failure mode of ``tests/synth.py`` (placed as ``tests/unit/test_diagnose_property.py``
places it: ``table_fault``) and every cluster size, generates windows of 1, 2, ...
rounds of the production schedule with the fault on throughout and prints the first
length at which every seed is diagnosed exactly (the faulty kind and nodes, nothing
else), as the markdown table that test module's docstring and ``MIN_ROUNDS`` hold.
A window is generated at its own length (``evidence(cluster, rounds=r, seed=s)``),
as the tests do. ``-`` means not reached within ``--max-rounds``.

    PYTHONPATH=. python bench/diagnose_min_window.py [--sizes 3 10 100] [--seeds 20 20 3]
        [--first-seed 1000] [--max-rounds 200] [--kinds KIND ...]
"""

from __future__ import annotations

import argparse
import sys
import time

from prober.diagnose import diagnose
from tests.synth import KINDS, Cluster, evidence, expected_findings, named
from tests.unit.test_diagnose_property import table_fault


def exact(cluster: Cluster, kind: str, rounds: int, seed: int) -> bool:
    faults = [table_fault(kind, cluster)]
    ev = evidence(cluster, rounds=rounds, faults=faults, seed=seed)
    return named(diagnose(ev)) == expected_findings(cluster, faults)


def min_rounds(cluster: Cluster, kind: str, seeds: range, max_rounds: int) -> int | None:
    """The first window length at which every seed is exact (seeds checked in order, the first
    failure moves on to the next length)."""
    for rounds in range(1, max_rounds + 1):
        if all(exact(cluster, kind, rounds, seed) for seed in seeds):
            return rounds
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 10, 100])
    ap.add_argument("--seeds", type=int, nargs="+", default=[20, 20, 3], help="seeds per size")
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--max-rounds", type=int, default=200)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    args = ap.parse_args()
    if len(args.seeds) != len(args.sizes):
        ap.error("give one --seeds count per size")
    table: dict[str, list[str]] = {}
    for kind in args.kinds:
        row = []
        for n, count in zip(args.sizes, args.seeds, strict=True):
            cluster = Cluster(n_nodes=n)
            t0 = time.perf_counter()
            found = min_rounds(
                cluster, kind, range(args.first_seed, args.first_seed + count), args.max_rounds
            )
            row.append("-" if found is None else str(found))
            print(f"{kind} at {n} nodes: {row[-1]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        table[kind] = row
    sizes = " | ".join(f"{n} nodes" for n in args.sizes)
    print(f"| kind | {sizes} |")
    print("|---|" + "---|" * len(args.sizes))
    for kind, row in table.items():
        print(f"| {kind} | {' | '.join(row)} |")


if __name__ == "__main__":
    main()
