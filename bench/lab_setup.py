"""How long a lab takes to build and to tear down (root).

    python bench/lab_setup.py [--repeat 3] [--network-only]

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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prober_lab import cluster, netns, runtime
from prober_lab.plan import Cni, LabSpec, build_plan

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "plabbn"

#: One build and teardown of a lab of (nodes, CNI): (what it counts, up s, down s).
Trial = Callable[[int, Cni], tuple[int, float, float]]


def _network_trial(nodes: int, cni: Cni) -> tuple[int, float, float]:
    """(namespaces, setup s, teardown s) of the network alone."""
    plan = build_plan(LabSpec(nodes=nodes, cni=cni, prefix=PREFIX))
    try:
        up = cluster.build_network(plan).setup_s
    finally:
        down = cluster.teardown(PREFIX)[1]
    return len(plan.namespaces), up, down


def _timed(*args: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(runtime.LAB_ENV, None)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "prober", "lab", *args, "--prefix", PREFIX],
        check=True, env=env, cwd=ROOT, capture_output=True, timeout=300,
    )  # fmt: skip
    return time.perf_counter() - start


def _agents_trial(nodes: int, cni: Cni) -> tuple[int, float, float]:
    """(processes, ``prober lab up`` s, ``prober lab down`` s), wall time of the commands."""
    try:
        up = _timed("up", "--nodes", str(nodes), "--cni", cni.value)
    finally:
        down = _timed("down")
    return 2 + 3 * nodes, up, down  # fabric, collector; per node two agents and an echo


def _table(title: str, header: tuple[str, ...], trial: Trial, repeat: int, digits: int) -> None:
    """One row per (nodes, CNI): what ``trial`` counts, and the median and worst of its times."""
    widths = [max(len(h), 6) for h in header]
    print(title)
    print(" ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for nodes in (3, 8):
        for cni in (Cni.BRIDGE, Cni.VPC):
            runs = [trial(nodes, cni) for _ in range(repeat)]
            ups, downs = [r[1] for r in runs], [r[2] for r in runs]
            times = (statistics.median(ups), max(ups), statistics.median(downs), max(downs))
            cells = [str(nodes), cni.value, str(runs[0][0])] + [f"{x:.{digits}f}s" for x in times]
            print(" ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--network-only", action="store_true", help="skip the table with agents")
    args = parser.parse_args()
    netns.check_can_run()
    cluster.teardown(PREFIX)
    _table(
        "the network alone",
        ("nodes", "cni", "namespaces", "setup median", "max", "teardown median", "max"),
        _network_trial, args.repeat, digits=3,
    )  # fmt: skip
    if not args.network_only:
        print()
        _table(
            "prober lab up / down, with the collector, the agents and the echo pods (wall time)",
            ("nodes", "cni", "processes", "lab up median", "max", "lab down median", "max"),
            _agents_trial, args.repeat, digits=2,
        )  # fmt: skip


if __name__ == "__main__":
    main()
