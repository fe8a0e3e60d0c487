"""How long a lab's network takes to build and to tear down (root).

    python bench/lab_setup.py [--repeat 3]

Builds and removes the namespace network only (no workloads, no agents) for 3 and
8 nodes in both CNI modes, under the prefix ``plabbn``, and prints the median and
worst times. Setup includes every namespace, link, address, route, neighbour entry,
sysctl and iptables rule set, plus the clean fault state.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prober.lab import cluster, netns
from prober.lab.plan import Cni, LabSpec, build_plan

PREFIX = "plabbn"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    netns.check_can_run()
    cluster.teardown(PREFIX)
    header = ("nodes", "cni", "namespaces", "setup median", "max", "teardown median", "max")
    widths = (5, 6, 10, 13, 7, 16, 7)
    print(" ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for nodes in (3, 8):
        for cni in (Cni.BRIDGE, Cni.VPC):
            plan = build_plan(LabSpec(nodes=nodes, cni=cni, prefix=PREFIX))
            ups, downs = [], []
            for _ in range(args.repeat):
                try:
                    ups.append(cluster.build_network(plan).setup_s)
                finally:
                    downs.append(cluster.teardown(PREFIX)[1])
            print(
                f"{nodes:>5} {cni.value:>6} {len(plan.namespaces):>10} "
                f"{statistics.median(ups):>12.3f}s {max(ups):>6.3f}s "
                f"{statistics.median(downs):>15.3f}s {max(downs):>6.3f}s"
            )


if __name__ == "__main__":
    main()
