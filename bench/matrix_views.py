"""The matrix views a person looks at: how long one takes to build and encode, and its size.

For each cluster size N: results at the production schedule (``tests/synth.py``: the
real pinglists and round plans, 10 s rounds, the default cluster budget; ``--rounds``
rounds, i.e. a window of that many times 10 s) with faults on (a node unreachable,
one at 30% packet loss, a blocked pair), aggregated into the window's table as the
collector does; then each view of ``GET /api/v1/matrix`` (``prober.matrix.matrix_view``,
what the collector runs in a thread, then JSON encoding, also in a thread) is built
``--repeat`` times. Prints the median and p99 CPU time of each, the JSON size, and the
``full`` matrix's size for comparison where it is allowed.

Goal (for the whole API answer under load): p99 <= 100 ms at 1,000 nodes, <= 200 ms at
5,000. This measures the view's own cost; the collector adds the wait for its
window's table.

    PYTHONPATH=. python bench/matrix_views.py [--nodes 1000 5000] [--rounds 6] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

GOALS_MS = {1000: 100, 5000: 200}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import msgspec

    from prober.aggregation import aggregate
    from prober.matrix import matrix_view
    from tests.synth import Cluster, Fault, generate

    for n in args.nodes:
        cluster = Cluster(n_nodes=n)
        nodes = list(cluster.nodes)
        records = generate(
            cluster,
            rounds=args.rounds,
            faults=[
                Fault(kind="node-unreachable", nodes=(nodes[1],)),
                Fault(kind="packet-loss", nodes=(nodes[2],), rate=0.3),
                Fault(kind="pair-blocked", nodes=(nodes[3], nodes[4])),
            ],
        )
        inv = cluster.inventory()
        zones = {node.name: node.zone for node in inv.nodes}
        table = aggregate(records, nodes=[node.name for node in inv.nodes])
        print(
            f"{n:>5} nodes: {len(records):,} results in {args.rounds} rounds, a table of {table.rows:,} rows"
        )
        for view, node in (("zones", None), ("failing", None), ("node", nodes[5]), ("full", None)):
            if view == "full" and n > 500:
                print(f"      view=full: refused above 500 nodes ({n:,}² cells a path)")
                continue
            times, size = [], 0
            for _ in range(args.repeat if view != "full" else 3):
                t0 = time.process_time()
                body = msgspec.json.encode(
                    matrix_view(
                        table, view=view, nodes=[node.name for node in inv.nodes], zones=zones, node=node
                    )
                )
                times.append(time.process_time() - t0)
                size = len(body)
            times.sort()
            p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
            print(
                f"      view={view}: median {statistics.median(times) * 1e3:.0f} ms, "
                f"p99 {p99 * 1e3:.0f} ms CPU "
                f"(goal <= {GOALS_MS.get(n, 0)} ms for the answer), {size / 1e3:,.0f} kB JSON",
                flush=True,
            )


if __name__ == "__main__":
    main()
