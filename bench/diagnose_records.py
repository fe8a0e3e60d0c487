"""``prober diagnose`` on a million recorded results: end to end, and phase by phase.

Writes N results (default 1,000,000) of a 50-node cluster to a temporary JSONL file —
pod and host peers over HTTP and UDP, a Service, an NLB with hairpin timeouts, DNS —
then runs ``prober diagnose FILE --json`` as a user would (a subprocess) and times
the read -> table -> diagnose -> matrix phases in-process, then the same phases
as one call of the report pipeline (``prober.report.report_from_records``). Prints
wall and CPU seconds (the machine may be shared: CPU time is the honest cost).

    PYTHONPATH=. python bench/diagnose_records.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

NODES = [f"node-{i:02d}" for i in range(50)]


def _record(i: int, rng: random.Random) -> dict[str, object]:
    src = rng.choice(NODES)
    kind = "pod" if i % 2 else "host"
    r: dict[str, object] = {
        "ts": round(1_763_856_000 + i * 0.0006, 4),
        "src_node": src,
        "src_kind": kind,
        "src_ip": "10.0.0.1",
        "target_port": 80,
        "src_port": rng.randrange(32768, 60999),
        "proto": "http",
    }
    k = rng.random()
    dst: str | None = rng.choice(NODES)
    ok = True
    if k < 0.8:
        tkind = rng.choice(("pod", "host"))
        assert dst is not None
        r.update(
            path=f"{kind}-to-{tkind}",
            target=f"{tkind}/{dst}",
            target_ip=f"10.0.{NODES.index(dst)}.{1 if tkind == 'host' else 5}",
            proto=rng.choice(("http", "udp")),
        )
        ok = rng.random() > 0.01
    elif k < 0.9:
        r.update(path=f"{kind}-to-nlb", target="nlb/prober-echo", target_ip=f"172.31.{rng.randrange(3)}.10")
        ok = dst != src  # hairpin: the NLB picked the client's own node
    elif k < 0.97:
        r.update(path=f"{kind}-to-service", target="service/prober-echo", target_ip="10.96.0.20")
    else:
        r.update(path=f"{kind}-to-dns", target="dns/kube-dns", target_ip="10.96.0.10", proto="dns")
        dst = None
    r["dst_node"] = dst if ok else None
    r["outcome"] = "ok" if ok else "timeout"
    if ok:
        r["latency_s"] = round(0.001 + rng.random() * 0.002, 6)
    return r


def write_records(path: Path, n: int, rng: random.Random) -> None:
    encode = msgspec.json.Encoder().encode
    with path.open("wb") as fh:
        for start in range(0, n, 100_000):
            fh.write(b"".join(encode(_record(i, rng)) + b"\n" for i in range(start, min(n, start + 100_000))))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.jsonl"
        write_records(path, args.records, random.Random(1))
        size = path.stat().st_size
        print(f"== prober diagnose, {args.records:,} results ({size / 2**20:.0f} MiB)")

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "prober", "diagnose", str(path), "--json"],
            env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True,
            check=False,
        )
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert done.returncode in (0, 1), done.stderr.decode()
        print(f"   end to end (subprocess)   {wall:6.2f} s wall  {cpu:6.2f} s cpu  exit {done.returncode}")
        print(f"   peak RSS                  {after.ru_maxrss / 1024:6.0f} MiB")

        from prober.aggregation import aggregate
        from prober.diagnose import diagnose
        from prober.matrix import build_matrix
        from prober.records import read_records
        from prober.report import report_from_records
        from prober.stats import Evidence, NlbProbes

        gc.disable()  # as the command does
        phases: list[tuple[str, float, float]] = []

        def timed(name: str, fn):  # type: ignore[no-untyped-def]
            t, c = time.perf_counter(), time.process_time()
            out = fn()
            phases.append((name, time.perf_counter() - t, time.process_time() - c))
            return out

        records = timed("read + decode", lambda: read_records(path))
        table = timed("table (aggregate)", lambda: aggregate(records, nodes=NODES))
        nlb = timed("NLB probes", lambda: NlbProbes.from_records(records))
        findings = timed("diagnose", lambda: diagnose(Evidence(table=table, nlb_probes=nlb)))
        timed("matrix", lambda: build_matrix(table, nodes=NODES, window_s=600, generated_at=0))
        timed("all but read (pipeline)", lambda: report_from_records(records, nodes=NODES))
        for name, w, c in phases:
            print(f"   {name:<25} {w:6.2f} s wall  {c:6.2f} s cpu")
        print(f"   table rows {table.rows:,}, findings {len(findings)}: {sorted({f.kind for f in findings})}")


if __name__ == "__main__":
    main()
