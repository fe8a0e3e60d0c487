"""What exporting the matrix to Prometheus costs at scale: time per refresh and series count.

Builds one window's pair table the size the default schedule produces (every node
probes ``--peers`` peers per window on each of the four peer paths, and a Service
served by every node), with ``--fail`` of the cells failing, then times
:func:`matrix_series` (what the collector runs on every refresh) next to
:func:`build_matrix` (what ``/api/v1/matrix`` costs) and one scrape of
:class:`MatrixMetrics`, and prints how many series are exported. Bounded: one table
per size.

    PYTHONPATH=. python bench/matrix_metrics.py [--nodes 100 1000 5000] [--peers 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from prober.collector.matrix_metrics import MatrixMetrics, matrix_series
from prober.matrix import build_matrix
from prober.model import OUTCOME_INDEX, PATH_INDEX, Outcome
from prober.stats import N_LAT_BINS, PairTable, Topology, slow_of

PATHS = ("pod-to-pod", "pod-to-host", "host-to-pod", "host-to-host", "pod-to-service")
PER_CELL = 6  # probes per cell per window: one per 10 s round over 60 s


def build(n: int, peers: int, fail: float, rng: np.random.Generator) -> tuple[PairTable, Topology]:
    nodes = tuple(f"ip-10-0-{i // 250}-{i % 250}.ec2.internal" for i in range(n))
    k = min(peers, n - 1)
    src = np.repeat(np.arange(n), k)
    dst = (src + np.tile(np.arange(1, k + 1), n)) % n
    rows_per_path = src.size
    path = np.repeat(np.asarray([PATH_INDEX[p] for p in PATHS]), rows_per_path)
    src, dst = np.tile(src, len(PATHS)), np.tile(dst, len(PATHS))
    rows = path.size
    counts = np.zeros((rows, len(OUTCOME_INDEX)), dtype=np.int32)
    failed = np.where(rng.random(rows) < fail, rng.integers(1, PER_CELL + 1, rows), 0)
    counts[:, OUTCOME_INDEX[Outcome.OK]] = PER_CELL - failed
    counts[:, OUTCOME_INDEX[Outcome.TIMEOUT]] = failed
    hist = np.zeros((rows, N_LAT_BINS), dtype=np.int32)
    hist[:, 2] = PER_CELL - failed
    zero = np.zeros(rows, dtype=np.int64)
    table = PairTable(
        nodes=nodes, dsts=nodes, targets=("pod/echo",), target_ips=(), path=path, proto=zero, src=src,
        dst=dst, target=zero, target_ip=zero - 1, counts=counts, latency_sum_s=np.zeros(rows),
        latency_hist=hist, slow=slow_of(hist), window_s=60.0, end_ts=0.0,
    )  # fmt: skip
    zones = Topology(zones={node: f"us-east-1{'abc'[i % 3]}" for i, node in enumerate(nodes)})
    return table, zones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--peers", type=int, default=300, help="peers each node probes per window")
    parser.add_argument("--fail", type=float, default=0.01, help="share of failing cells")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    print(
        f"{'nodes':>6} {'cells':>9} {'series s':>9} {'matrix s':>9} {'scrape s':>9} {'pairs':>6} {'zones':>6}"
    )
    for n in args.nodes:
        table, topology = build(n, args.peers, args.fail, rng)
        t0 = time.perf_counter()
        series = matrix_series(table, topology=topology)
        t_series = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_matrix(table, nodes=table.nodes, window_s=60.0, generated_at=0.0)
        t_matrix = time.perf_counter() - t0
        registry = CollectorRegistry()
        MatrixMetrics(registry=registry).update(table, topology=topology, window_s=60.0)
        t0 = time.perf_counter()
        generate_latest(registry)
        t_scrape = time.perf_counter() - t0
        print(
            f"{n:>6} {table.rows:>9} {t_series:>9.3f} {t_matrix:>9.3f} {t_scrape:>9.4f}"
            f" {len(series.pairs):>6} {len(series.zones):>6}"
        )


if __name__ == "__main__":
    main()
