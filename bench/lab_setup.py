"""How long a lab takes to build and to tear down (root).

    python bench/lab_setup.py [--repeat 3] [--no-agents-only]

Two tables, for 3 and 8 nodes in both CNI modes, under the prefix ``plabbn``:

* the namespace network alone (no processes): every namespace, link, address,
  route, neighbour entry, sysctl and iptables rule set, plus the clean fault state;
* ``prober lab up`` and ``prober lab down`` as a user runs them (wall time of the
  command, Python start-up included): the network, kube-dns and the external server,
  ``prober echo`` in every echo pod, the collector and two agents per node, until
  every one of them answers ``/readyz``; and everything stopped and removed.

Prints the median and worst of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prober.lab import cluster, netns, runtime
from prober.lab.plan import Cni, LabSpec, build_plan

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "plabbn"


def network_only(repeat: int) -> None:
    header = ("nodes", "cni", "namespaces", "setup median", "max", "teardown median", "max")
    widths = (5, 6, 10, 13, 7, 16, 7)
    print("the network alone")
    print(" ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for nodes in (3, 8):
        for cni in (Cni.BRIDGE, Cni.VPC):
            plan = build_plan(LabSpec(nodes=nodes, cni=cni, prefix=PREFIX))
            ups, downs = [], []
            for _ in range(repeat):
                try:
                    ups.append(cluster.build_network(plan).setup_s)
                finally:
                    downs.append(cluster.teardown(PREFIX)[1])
            print(
                f"{nodes:>5} {cni.value:>6} {len(plan.namespaces):>10} "
                f"{statistics.median(ups):>12.3f}s {max(ups):>6.3f}s "
                f"{statistics.median(downs):>15.3f}s {max(downs):>6.3f}s"
            )


def _timed(*args: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(runtime.LAB_ENV, None)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "prober", "lab", *args, "--prefix", PREFIX],
        check=True, env=env, cwd=ROOT, capture_output=True, timeout=300,
    )  # fmt: skip
    return time.perf_counter() - start


def with_agents(repeat: int) -> None:
    header = ("nodes", "cni", "processes", "lab up median", "max", "lab down median", "max")
    widths = (5, 6, 9, 14, 7, 16, 7)
    print("prober lab up / down, with the collector, the agents and the echo pods (wall time)")
    print(" ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for nodes in (3, 8):
        for cni in (Cni.BRIDGE, Cni.VPC):
            ups, downs = [], []
            for _ in range(repeat):
                try:
                    ups.append(_timed("up", "--nodes", str(nodes), "--cni", cni.value))
                finally:
                    downs.append(_timed("down"))
            processes = 2 + 3 * nodes  # fabric, collector; per node two agents and an echo
            print(
                f"{nodes:>5} {cni.value:>6} {processes:>9} "
                f"{statistics.median(ups):>13.2f}s {max(ups):>6.2f}s "
                f"{statistics.median(downs):>15.2f}s {max(downs):>6.2f}s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--network-only", action="store_true", help="skip the table with agents")
    args = parser.parse_args()
    netns.check_can_run()
    cluster.teardown(PREFIX)
    network_only(args.repeat)
    if not args.network_only:
        print()
        with_agents(args.repeat)


if __name__ == "__main__":
    main()
