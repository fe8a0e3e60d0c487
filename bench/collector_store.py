"""How fast the collector's store ingests, and how long a window's table takes, at scale.

Simulates one window of a cluster at the production schedule: every node runs a pod
and a host agent in 10 s rounds, each at its share of the cluster budget
(the pinglist builder's ``budget_per_s``: the default 5,000 probes/s for the whole mesh
shared out, but never under 3 peers a round: 2.5 a second per agent at 1,000 and
5,000 nodes). A round covers the schedule's ``k`` peers for the
cluster's size (3 at 1,000 and 5,000 nodes; ``tests/synth.py``'s cluster), 4 probes
each (pod and host echo, HTTP and UDP), rotating through the ring; the rest of the
agent's round goes to the shared and same-node targets (Service, NodePort, NLB, DNS,
external). Results arrive as JSONL batches, as agents send them, and go through the
collector's real path: ``decode_batch`` (decode and validate) then ``Store.ingest``.

Prints decode and ingest rates, the store's memory per bucket and per entry (and at
the default 15 min retention), and the time of ``Store.table`` and ``build_matrix``
over the window. Bounded: one window per cluster size. The running collector's
memory and CPU, with its passes and readers: ``bench/collector_scale.py``.

    PYTHONPATH=. python bench/collector_store.py [--nodes 1000 5000] [--window 60]
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import resource
import time
from collections.abc import Iterator

from prober.collector.batch import decode_batch
from prober.collector.store import ENTRY_BYTES, Store, StoreSettings
from prober.matrix import build_matrix
from prober.settings import INTERVAL, WINDOW
from tests.synth import Cluster

INTERVAL_S = INTERVAL.default
#: The shared and same-node targets an agent's round spends the rest of its budget on.
SHARED = ("service/prober-echo", "service/prober-echo-local", "nodeport/prober-echo", "nlb/prober-echo",
          "dns/kube-dns", "external/example")  # fmt: skip
BATCH = 500  # records per batch (a post's worth, as the collector receives them)
FAIL_RATE = 0.01


def _line(
    ts: float, path: str, src: str, target: str, *, ip: str, proto: str, dst: str | None, ok: bool
) -> str:
    kind = path.split("-to-", 1)[0]
    dst_json = "null" if dst is None else f'"{dst}"'
    tail = f'"outcome":"ok","latency_s":0.0012,"dst_kind":"{kind}"' if ok else '"outcome":"timeout"'
    return (
        f'{{"ts":{ts:.3f},"path":"{path}","src_node":"{src}","src_kind":"{kind}","src_ip":"10.0.0.1",'
        f'"target":"{target}","target_ip":"{ip}","target_port":8080,"proto":"{proto}",'
        f'"dst_node":{dst_json},"seen_src_ip":"10.0.0.1","src_port":40000,{tail}}}'
    )


def batches(n_nodes: int, start: float, window_s: float, rng: random.Random) -> Iterator[bytes]:
    """JSONL batches of one window, round by round, agents in turn."""
    nodes = [f"node-{i:05d}" for i in range(n_nodes)]
    cluster = Cluster(n_nodes=n_nodes)
    peers = cluster.k
    per_round = round(cluster.builder.budget_per_s * INTERVAL_S)
    shared_per_round = max(1, per_round - 4 * peers)
    rounds = int(window_s / INTERVAL_S)
    buf: list[str] = []
    for r in range(rounds):
        t0 = start + r * INTERVAL_S
        for i, src in enumerate(nodes):
            for kind in ("pod", "host"):
                base = (r * peers) % (n_nodes - 1)
                for j in range(peers):
                    peer = (i + 1 + (base + j) % (n_nodes - 1)) % n_nodes
                    dst = nodes[peer]
                    ts = t0 + rng.random() * INTERVAL_S
                    for tkind in ("pod", "host"):
                        ip = f"10.{peer // 250}.{peer % 250}.{1 if tkind == 'host' else 5}"
                        for proto in ("http", "udp"):
                            ok = rng.random() > FAIL_RATE
                            path, target = f"{kind}-to-{tkind}", f"{tkind}/{dst}"
                            buf.append(_line(ts, path, src, target, ip=ip, proto=proto, dst=dst, ok=ok))
                for _ in range(shared_per_round):
                    served = nodes[rng.randrange(n_nodes)]
                    ok = rng.random() > FAIL_RATE
                    shared = rng.choice(SHARED)
                    skind = shared.split("/", 1)[0]
                    dst_s = None if skind in ("dns", "external") or not ok else served
                    ip = f"172.31.{rng.randrange(3)}.10" if skind == "nlb" else "10.96.0.10"
                    ts = t0 + rng.random() * INTERVAL_S
                    buf.append(
                        _line(ts, f"{kind}-to-{skind}", src, shared, ip=ip, proto="http", dst=dst_s, ok=ok)
                    )
                if len(buf) >= BATCH:
                    yield ("\n".join(buf) + "\n").encode()
                    buf = []
    if buf:
        yield ("\n".join(buf) + "\n").encode()


class _Timer:
    """Wall and CPU time of a block: the machine may be shared, CPU time is the honest cost."""

    def __enter__(self) -> _Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def __str__(self) -> str:
        return f"{self.cpu * 1e3:>7.0f} ms cpu {self.wall * 1e3:>7.0f} ms wall"


def run(n_nodes: int, window_s: float, *, matrix: bool) -> None:
    rng = random.Random(n_nodes)
    start = 1_763_856_000.0
    now = start + window_s - 0.001
    store = Store(StoreSettings(bucket_s=10, retention_s=900))
    store.set_nodes([f"node-{i:05d}" for i in range(n_nodes)])
    decode_s = ingest_s = 0.0
    n = 0
    gc.collect()
    for body in batches(n_nodes, start, window_s, rng):
        t = time.process_time()
        good, rejected, _ = decode_batch(body)
        t1 = time.process_time()
        store.ingest(good, now=now)
        t2 = time.process_time()
        assert rejected == 0
        decode_s += t1 - t
        ingest_s += t2 - t1
        n += len(good)
    # On the event loop, snapshot() seals what arrived since the last one; at most a
    # whole bucket (the refresh runs every few seconds, so usually less).
    with _Timer() as seal_one:
        store.snapshot(now=now, window_s=store.settings.bucket_s)
    with _Timer() as first:
        table = store.table(now=now, window_s=window_s)
    with _Timer() as snap:
        snapshot = store.snapshot(now=now, window_s=window_s)
    with _Timer() as again:
        table = snapshot.table()
    usage = store.usage()
    table_bytes = sum(
        a.nbytes
        for a in (
            table.path,
            table.proto,
            table.src,
            table.dst,
            table.target,
            table.target_ip,
            table.counts,
            table.latency_sum_s,
            table.hist,
            table.slow,
        )
    )
    per_bucket = usage.bytes / max(usage.buckets, 1)
    retained = math.ceil(900 / 10)
    print(f"== {n_nodes} nodes, {2 * n_nodes} agents, {window_s:.0f} s window (CPU times)")
    print(f"   probes in window          {n:>12,}")
    print(f"   decode (decode_batch)     {decode_s / n * 1e6:>9.2f} us/record  ({n / decode_s:,.0f}/s)")
    print(f"   Store.ingest              {ingest_s / n * 1e6:>9.2f} us/record  ({n / ingest_s:,.0f}/s)")
    print(f"   decode + ingest           {(decode_s + ingest_s) / n * 1e6:>9.2f} us/record")
    print(f"   arriving at this size     {n / window_s:>12,.0f} records/s")
    print(f"   buckets x entries         {usage.buckets} x {usage.entries / usage.buckets:,.0f}")
    print(f"   memory per bucket         {per_bucket / 2**20:>9.1f} MiB  ({ENTRY_BYTES} B per entry)")
    print(f"   memory, 15 min retention  {per_bucket * retained / 2**20:>9.0f} MiB ({retained} buckets)")
    print(f"   interned names / targets  {usage.names:,} / {usage.tcombos:,}")
    print(f"   snapshot(), seal 1 bucket {seal_one}  (event loop, worst case)")
    print(f"   table(), sealing 5 more   {first}")
    print(f"   snapshot(), all sealed    {snap}")
    print(f"   table() from snapshot     {again}  ({table.rows:,} rows, {table_bytes / 2**20:.0f} MiB)")
    if matrix:
        with _Timer() as m:
            built = build_matrix(table, nodes=table.nodes, window_s=window_s, generated_at=now)
        cells = sum(len(p.cells) for p in built.paths)
        print(f"   build_matrix()            {m}  ({cells:,} cells)")
    print(
        f"   peak RSS                  {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:>9.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--window", type=float, default=WINDOW.default)
    parser.add_argument("--no-matrix", action="store_true", help="skip build_matrix (slow at 5,000 nodes)")
    args = parser.parse_args()
    for n in args.nodes:
        run(n, args.window, matrix=not args.no_matrix)


if __name__ == "__main__":
    main()
