"""What exporting the matrix to Prometheus costs at scale: time per update and series count.

Builds one window's matrix the size the default schedule produces (every node
probes ``--peers`` peers per window on each of the four peer paths, plus a Service
path served by every node), with ``--fail`` of the cells failing, then times
:func:`matrix_series` and one scrape of :class:`MatrixMetrics`, and prints how many
series each metric has. Bounded: one matrix per size.

    PYTHONPATH=. python bench/matrix_metrics.py [--nodes 100 1000 5000] [--peers 300]
"""

from __future__ import annotations

import argparse
import random
import time

from prometheus_client import CollectorRegistry, generate_latest

from prober.collector.matrix_metrics import MatrixMetrics, matrix_series
from prober.model import Cell, Matrix, PathMatrix

PEER_PATHS = ("pod-to-pod", "pod-to-host", "host-to-pod", "host-to-host")


def build(n: int, peers: int, fail: float, rng: random.Random) -> tuple[Matrix, dict[str, str]]:
    nodes = [f"ip-10-0-{i // 250}-{i % 250}.ec2.internal" for i in range(n)]
    zones = {node: f"us-east-1{'abc'[i % 3]}" for i, node in enumerate(nodes)}
    paths = []
    for path in (*PEER_PATHS, "pod-to-service"):
        cells = []
        for i, src in enumerate(nodes):
            for k in range(1, min(peers, n - 1) + 1):
                sent = 6
                ok = sent - rng.randint(1, sent) if rng.random() < fail else sent
                cells.append(
                    Cell(src=src, dst=nodes[(i + k) % n], sent=sent, ok=ok,
                         outcomes={"timeout": sent - ok} if ok < sent else {}, ratio=ok / sent,
                         latency_p50_s=0.001, latency_p99_s=0.004 if ok else None)
                )  # fmt: skip
        paths.append(
            PathMatrix(path=path, sources=nodes, targets=nodes, cells=cells,
                       sent=sum(c.sent for c in cells), ok=sum(c.ok for c in cells))
        )  # fmt: skip
    return Matrix(window_s=60.0, generated_at=0.0, nodes=nodes, paths=paths), zones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--peers", type=int, default=300, help="peers each node probes per window")
    parser.add_argument("--fail", type=float, default=0.01, help="share of failing cells")
    args = parser.parse_args()
    rng = random.Random(1)
    print(f"{'nodes':>6} {'cells':>9} {'update s':>9} {'scrape s':>9} {'pair':>6} {'zone':>6} {'bytes':>9}")
    for n in args.nodes:
        matrix, zones = build(n, args.peers, args.fail, rng)
        cells = sum(len(p.cells) for p in matrix.paths)
        t0 = time.perf_counter()
        series = matrix_series(matrix, zones=zones)
        t_update = time.perf_counter() - t0
        registry = CollectorRegistry()
        MatrixMetrics(registry=registry).update(matrix, zones=zones)
        t0 = time.perf_counter()
        body = generate_latest(registry)
        t_scrape = time.perf_counter() - t0
        print(
            f"{n:>6} {cells:>9} {t_update:>9.3f} {t_scrape:>9.4f} {len(series.pairs):>6}"
            f" {len(series.zones):>6} {len(body):>9}"
        )


if __name__ == "__main__":
    main()
