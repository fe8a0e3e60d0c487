"""How much CPU and memory one agent spends per probe, next to prometheus-blackbox-exporter.

One ``prober agent`` process probes N loopback echo targets (default 500) as fast as
its budget allows; a second process plays the rest of the cluster: N HTTP echo
sites (prober's own echo app, one per loopback address) and a minimal collector that
serves the agent's pinglist and accepts its result batches, so the agent does all
the work it does in a cluster (fetch, probe, count, encode, report). Only the agent
process's CPU is counted (``/proc/<pid>/stat``, over a steady-state window), and its
peak RSS (``VmHWM``).

Then Debian's ``prometheus-blackbox-exporter`` gets the same job: a ``tcp_connect``
module, probed at the same rate against the same targets by a driver in this
process (whose CPU is not counted; blackbox's is, from ``/proc/<pid>/stat``).

Prints the numbers, then one JSON line: ``prober_cpu_per_1k``, ``blackbox_cpu_per_1k``,
``ratio_cpu_vs_blackbox``, ``rss_mb``, ``probes_per_s`` and the HTTP-echo figures.
Bounded: about ``3 * --seconds + 15`` seconds (default ≈ 50 s).

    python bench/agent_throughput.py [--targets 500] [--rate 500] [--seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processes import stop_process

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"


def target_ips(n: int) -> list[str]:
    """N distinct loopback addresses (127.77.x.y), one echo site each."""
    return [f"127.77.{i // 250}.{i % 250 + 1}" for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the rest of the cluster: echo sites and a minimal collector (separate process) --


def with_mesh(pl: Any, mesh_nodes: int, ips: list[str], port: int, rate: float) -> Any:
    """A production pinglist of ``mesh_nodes`` peers, 5 targets each (a node's pod and host
    echoes, HTTP and UDP, and its NodePort), EKS-like names, 10 s rounds; the targets are
    the echo sites, in the pinglist's protocol."""
    import msgspec

    from prober.model import SrcKind, TargetKind
    from prober.pinglist import PeerGroup, ProbeTarget

    proto = pl.shared[0].targets[0].proto
    names = [f"ip-10-{i // 250}-{i % 250}-{i % 200}.ec2.internal" for i in range(mesh_nodes)]
    ring = [
        PeerGroup(node=node, targets=[
            ProbeTarget(target=f"pod/{node}", kind=TargetKind.POD, ip=ips[(5 * i + j) % len(ips)], port=port,
                        proto=proto, dst_node=node, dst_kind=SrcKind.POD)
            for j in range(5)
        ])
        for i, node in enumerate(names)
    ]  # fmt: skip
    k = max(1, int(rate * 10 / 5))
    return msgspec.structs.replace(pl, local=[], shared=[], peers=ring, interval_s=10.0, peers_per_round=k)


def fake_collector(pinglists: dict[str, Any]) -> Any:
    """The collector's pinglist, mesh and results API, for the agents under test."""
    import msgspec
    from aiohttp import web

    from prober.pinglist import split
    from prober.records import parse_batch

    received = 0

    # As the collector answers: ETags and 304s, the mesh's version on every pinglist answer
    # (an agent that re-read a 5,000-node mesh every poll would measure the fake, not itself).
    # The mesh is that of the agent that asked for its pinglist last (the runs take turns).
    last = {"agent": next(iter(pinglists))}
    encoded = {name: [msgspec.json.encode(doc) for doc in split(pl)] for name, pl in pinglists.items()}

    async def pinglist(request: web.Request) -> web.Response:
        name = request.match_info["agent"]
        pl = pinglists.get(name)
        if pl is None:
            return web.json_response({"error": "unknown agent"}, status=404)
        last["agent"] = name
        headers = {"ETag": f'"{pl.version}"', "X-Prober-Mesh-Version": f'"{pl.version}"'}
        if request.headers.get("If-None-Match") == headers["ETag"]:
            return web.Response(status=304, headers=headers)
        return web.Response(body=encoded[name][0], content_type="application/json", headers=headers)

    async def mesh(request: web.Request) -> web.Response:
        pl = pinglists[last["agent"]]
        etag = f'"{pl.version}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=encoded[last["agent"]][1], content_type="application/json", headers={"ETag": etag}
        )

    async def results(request: web.Request) -> web.Response:
        nonlocal received
        good, rejected, _ = parse_batch(await request.read())
        received += len(good)
        return web.json_response({"accepted": len(good), "rejected": rejected, "errors": []})

    collector = web.Application(client_max_size=64 * 1024 * 1024)
    collector.router.add_get("/api/v1/pinglist/{agent}", pinglist)
    collector.router.add_get("/api/v1/mesh", mesh)
    collector.router.add_post("/api/v1/results", results)
    return collector


async def serve_cluster(n: int, rate: float, port: int, collector_port: int, mesh_nodes: int = 0) -> None:
    import msgspec
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from prober.agent.echo import EchoIdentity, EchoState, make_app
    from prober.agent.metrics import AgentMetrics
    from prober.inventory import Agent, External, Inventory, Node
    from prober.model import Proto, SrcKind
    from prober.schedule import PinglistBuilder, SchedulePolicy

    registry = CollectorRegistry()
    metrics = AgentMetrics(registry=registry, node="echo", kind="pod", version="bench")
    state = EchoState(
        identity=EchoIdentity(node="echo", kind=SrcKind.POD, agent="echo"), registry=registry, metrics=metrics
    )
    echo = web.AppRunner(make_app(state), access_log=None)
    await echo.setup()
    ips = target_ips(n)
    for ip in ips:
        await web.TCPSite(echo, ip, port, reuse_address=True, backlog=1024).start()

    policy = SchedulePolicy(interval_s=1.0, timeout_s=5.0, budget_per_s=rate, concurrency=256,
                            shared_budget_per_s=max(rate, 20.0), udp=False)  # fmt: skip
    pinglists = {}
    for proto in (Proto.TCP, Proto.HTTP):
        name = f"bench-{proto.value}"
        inv = Inventory(
            nodes=[Node(name="bench", address="127.0.0.1")],
            agents=[Agent(name=name, node="bench", kind=SrcKind.HOST, address="127.0.0.1")],
            externals=[
                External(name=f"t{i}", address=ip, port=port, proto=proto) for i, ip in enumerate(ips)
            ],
        )
        pl = PinglistBuilder(inv, policy).for_agent(name)
        assert pl is not None
        pinglists[name] = msgspec.structs.replace(pl, local=[])  # only the N targets
        if mesh_nodes:
            pinglists[name] = with_mesh(pinglists[name], mesh_nodes, ips, port, rate)
    collector = fake_collector(pinglists)
    crunner = web.AppRunner(collector, access_log=None)
    await crunner.setup()
    await web.TCPSite(crunner, "127.0.0.1", collector_port).start()
    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await crunner.cleanup()
    await echo.cleanup()


# --- measurement helpers ------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def process(argv: list[str], **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        stop_process(proc, 10.0)


async def probes_total(session: object, url: str) -> tuple[float, float]:
    """(all probes, ok probes) from an agent's /metrics."""
    async with session.get(url) as resp:  # type: ignore[attr-defined]
        text = await resp.text()
    total = ok = 0.0
    for line in text.splitlines():
        if line.startswith("prober_probes_total{"):
            value = float(line.rsplit(" ", 1)[1])
            total += value
            if 'outcome="ok"' in line:
                ok += value
    return total, ok


@dataclass
class Measured:
    probes: float
    ok: float
    seconds: float
    cpu_s: float
    rss_mb: float

    @property
    def per_s(self) -> float:
        return self.probes / self.seconds

    @property
    def cpu_per_1k(self) -> float:
        return 1000 * self.cpu_s / self.probes if self.probes else float("nan")


async def measure_agent(
    proto: str, args: argparse.Namespace, collector: str, env: dict[str, str], *, profile: Path | None = None
) -> Measured:
    import aiohttp

    http_port = free_port()
    python = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
    argv = [
        *python, "-m", "prober", "--log-level", "warning", "agent", "--network", "host",
        "--node", "bench", "--name", f"bench-{proto}", "--listen", "127.0.0.1",
        "--http-port", str(http_port), "--udp-port", str(free_port()), "--collector", collector,
    ]  # fmt: skip
    with process(argv, env=env, cwd=ROOT) as agent:
        metrics = f"http://127.0.0.1:{http_port}/metrics"
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 35  # a first round waits up to one 10 s interval
            while True:  # wait until probing is under way (stagger, first fetch)
                with contextlib.suppress(aiohttp.ClientError):
                    if (await probes_total(session, metrics))[0] > 0:
                        break
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"agent did not start probing (exit {agent.poll()})")
                await asyncio.sleep(0.2)
            await asyncio.sleep(args.warmup)
            p0, ok0 = await probes_total(session, metrics)
            c0, t0 = cpu_s(agent.pid), time.monotonic()
            await asyncio.sleep(args.seconds)
            p1, ok1 = await probes_total(session, metrics)
            c1, t1 = cpu_s(agent.pid), time.monotonic()
        return Measured(p1 - p0, ok1 - ok0, t1 - t0, c1 - c0, peak_rss_mb(agent.pid))


def write_blackbox_config(directory: Path) -> Path:
    """One module, ``tcp``: a TCP connect, like prober's tcp probe, with the same 5 s timeout."""
    config = directory / "blackbox.yml"
    config.write_text("modules:\n  tcp:\n    prober: tcp\n    timeout: 5s\n")
    return config


async def measure_blackbox(args: argparse.Namespace, targets: list[str]) -> Measured:
    import aiohttp

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="prober-bench-") as tmp:
        config = write_blackbox_config(Path(tmp))
        argv = [
            BLACKBOX,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        with process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as bb:
            base = f"http://127.0.0.1:{port}/probe?module=tcp&target="
            connector = aiohttp.TCPConnector(limit=256)
            async with aiohttp.ClientSession(connector=connector) as session:
                deadline = time.monotonic() + 10
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
                            if r.status == 200:
                                break
                    if bb.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("blackbox exporter did not start")
                    await asyncio.sleep(0.1)
                counts = {"all": 0, "ok": 0}

                async def one(target: str) -> None:
                    try:
                        async with session.get(base + target) as r:
                            body = await r.read()
                    except aiohttp.ClientError:
                        return
                    counts["all"] += 1
                    if b"\nprobe_success 1" in body:
                        counts["ok"] += 1

                async def drive(seconds: float) -> None:
                    """Launch probes at ``args.rate``/s, round-robin over the targets."""
                    interval = 1.0 / args.rate
                    start = time.monotonic()
                    i = 0
                    async with asyncio.TaskGroup() as tg:
                        while (now := time.monotonic()) - start < seconds:
                            due = int((now - start) / interval) + 1
                            while i < due:
                                tg.create_task(one(targets[i % len(targets)]))
                                i += 1
                            await asyncio.sleep(interval)

                await drive(args.warmup)
                a0, ok0 = counts["all"], counts["ok"]
                c0, t0 = cpu_s(bb.pid), time.monotonic()
                await drive(args.seconds)
                a1, ok1 = counts["all"], counts["ok"]
                c1, t1 = cpu_s(bb.pid), time.monotonic()
                rss = peak_rss_mb(bb.pid)
    return Measured(a1 - a0, ok1 - ok0, t1 - t0, c1 - c0, rss)


@contextlib.asynccontextmanager
async def cluster(args: argparse.Namespace, env: dict[str, str]) -> AsyncIterator[tuple[str, int]]:
    echo_port, collector_port = free_port(), free_port()
    argv = [sys.executable, __file__, "--serve", "--targets", str(args.targets), "--rate", str(args.rate),
            "--echo-port", str(echo_port), "--collector-port", str(collector_port),
            "--mesh-nodes", str(args.mesh_nodes)]  # fmt: skip
    with process(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        if not line:
            raise SystemExit("echo/collector process did not start")
        yield f"http://127.0.0.1:{collector_port}", echo_port


def print_profile(path: Path, top: int = 20) -> None:
    """The agent's hottest functions by own time (cProfile; slows the agent ~2x)."""
    import pstats

    print(f"profile of the tcp run ({path}), top {top} by own time:")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(top)


def report(name: str, m: Measured) -> None:
    print(
        f"{name:<26} {m.per_s:8.1f} probes/s  ok {100 * m.ok / max(m.probes, 1):5.1f}%  "
        f"cpu {m.cpu_s:6.2f}s / {m.probes:6.0f} probes = {m.cpu_per_1k:6.3f} s per 1k  "
        f"peak rss {m.rss_mb:5.1f} MB"
    )


async def main(args: argparse.Namespace) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    shape = f"a pinglist of {args.mesh_nodes} peer nodes" if args.mesh_nodes else "outside targets"
    print(f"one agent, {args.targets} loopback targets as {shape}, budget {args.rate:g} probes/s, "
          f"{args.seconds:g}s windows after {args.warmup:g}s warm-up", flush=True)  # fmt: skip
    async with cluster(args, env) as (collector, echo_port):
        targets = [f"{ip}:{echo_port}" for ip in target_ips(args.targets)]
        tcp = await measure_agent("tcp", args, collector, env)
        report("prober tcp connect", tcp)
        if args.profile:
            await measure_agent("tcp", args, collector, env, profile=args.profile)
            print_profile(args.profile)
        http = await measure_agent("http", args, collector, env)
        report("prober http echo", http)
        blackbox = None
        if shutil.which(BLACKBOX):
            blackbox = await measure_blackbox(args, targets)
            report("blackbox tcp_connect", blackbox)
        else:
            print(f"{BLACKBOX} not installed: no comparison (scripts/install installs it)")
    ratio = tcp.cpu_per_1k / blackbox.cpu_per_1k if blackbox else None
    if ratio is not None:
        print(f"prober / blackbox CPU per probe: {ratio:.2f}  "
              "(goal <= 0.5; rss goal <= 40 MB at 1,000 nodes, <= 48 MB at 5,000)")  # fmt: skip
    print(f"total {time.monotonic() - started:.0f}s")
    print(json.dumps({
        "targets": args.targets,
        "mesh_nodes": args.mesh_nodes,
        "budget_per_s": args.rate,
        "probes_per_s": round(tcp.per_s, 1),
        "ok_ratio": round(tcp.ok / max(tcp.probes, 1), 4),
        "prober_cpu_per_1k": round(tcp.cpu_per_1k, 4),
        "rss_mb": round(tcp.rss_mb, 1),
        "http_probes_per_s": round(http.per_s, 1),
        "http_ok_ratio": round(http.ok / max(http.probes, 1), 4),
        "http_cpu_per_1k": round(http.cpu_per_1k, 4),
        "http_rss_mb": round(http.rss_mb, 1),
        "blackbox_cpu_per_1k": round(blackbox.cpu_per_1k, 4) if blackbox else None,
        "blackbox_probes_per_s": round(blackbox.per_s, 1) if blackbox else None,
        "blackbox_rss_mb": round(blackbox.rss_mb, 1) if blackbox else None,
        "ratio_cpu_vs_blackbox": round(ratio, 3) if ratio is not None else None,
    }))  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=int, default=500, help="loopback echo targets (default 500)")
    p.add_argument("--rate", type=float, default=500.0, help="probe budget, probes/s (default 500)")
    p.add_argument("--seconds", type=float, default=12.0, help="measured window per run (default 12)")
    p.add_argument("--warmup", type=float, default=2.0, help="steady-state wait before measuring (default 2)")
    p.add_argument("--profile", type=Path, help="also run the tcp agent under cProfile, save and print it")
    p.add_argument("--mesh-nodes", type=int, default=0,
                   help="probe a production pinglist of this many peer nodes (5 targets each, 10 s rounds) "
                   "instead of the targets as outside targets (default 0: outside targets)")  # fmt: skip
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--echo-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--collector-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 1 <= args.targets <= 5000 or not 1 <= args.rate <= 5000 or not 1 <= args.seconds <= 120:
        p.error("--targets and --rate must be 1..5000, --seconds 1..120")
    if not 0 <= args.mesh_nodes <= 10000:
        p.error("--mesh-nodes must be 0..10000")
    return args


if __name__ == "__main__":
    parsed = parse_args(sys.argv[1:])
    if parsed.serve:
        asyncio.run(
            serve_cluster(
                parsed.targets, parsed.rate, parsed.echo_port, parsed.collector_port, parsed.mesh_nodes
            )
        )
    else:
        asyncio.run(main(parsed))
