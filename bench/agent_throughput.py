"""How much CPU and memory one agent spends per probe, next to prometheus-blackbox-exporter.

For each probe kind (``tcp``, ``http``, ``udp``, ``dns``) and each rate (default 2.5,
12.5 and 500 probes/s: the default cluster budget gives an agent 2.5/s from ~1,000
nodes up and 12.5/s at 200 nodes), one ``prober agent`` process probes N loopback
targets (default 500) at that rate. A second process plays the rest of the cluster: N
echo sites (prober's own HTTP and UDP echo and a small DNS responder, one per loopback
address) and a minimal collector that serves the agent's pinglist and accepts its
result batches, so the agent does all the work it does in a cluster (fetch, plan,
probe, count, encode, report). Only the agent process's CPU is counted
(``/proc/<pid>/stat``, over a steady-state window), and its peak RSS (``VmHWM``).

Debian's ``prometheus-blackbox-exporter`` gets the same job: the same targets at the
same rate, driven by this process (whose CPU is not counted; blackbox's is, from
``/proc/<pid>/stat``): ``tcp`` against prober's TCP connect, ``http`` (``http_2xx``)
against its HTTP echo probe, ``dns`` (an A query over UDP) against its DNS probe. The
exporter has no UDP-echo prober: prober's one-datagram UDP echo is set beside its
one-datagram ``dns`` module, the nearest thing it has.

For ``tcp`` a third process gives the floor under both: a bare asyncio loop that only
opens and closes a connection to each target in turn at the same rate
(``loop.sock_connect``, no pinglist, no results, no metrics, no echo of its own), its
CPU measured like the agent's. What the agent costs above it is prober's own work; the
floor is what any asyncio prober pays on this machine (``--no-floor`` skips it).

At rates up to 50/s the agent, the exporter and the floor run at the same time (each measured
from its own ``/proc``); above, one after the other. The measured window is at least
``--seconds`` and long enough for ``--min-probes`` probes (60 s at 2.5/s), since CPU
time comes in 10 ms ticks.

``--mesh-nodes N`` replaces the N outside targets by a production pinglist of N peer
nodes (5 targets each, 10 s rounds): the agent's memory holding a 1,000- or
5,000-node cluster (RSS goals: 40 and 48 MB).

Prints one line per run, a table of prober/blackbox ratios, then one JSON line with
every figure. Bounded: each run stops by itself (about the window plus 30 s); the
default (4 kinds by 3 rates) takes about 12 minutes.

    python bench/agent_throughput.py [--kinds tcp,http,udp,dns] [--rates 2.5,12.5,500]
    python bench/agent_throughput.py --mesh-nodes 5000 --rates 2.5 --kinds http
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from processes import stop_process

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
KINDS = ("tcp", "http", "udp", "dns")
#: The blackbox module measured against each prober probe kind.
BLACKBOX_MODULE = {"tcp": "tcp", "http": "http", "udp": "dns", "dns": "dns"}
QUERY = "bench.prober.example."
#: Above this rate the agent and the exporter are measured one after the other.
CONCURRENT_MAX_RATE = 50.0


def target_ips(n: int) -> list[str]:
    """N distinct loopback addresses (127.77.x.y), one echo site each."""
    return [f"127.77.{i // 250}.{i % 250 + 1}" for i in range(n)]


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_name(kind: str, rate: float) -> str:
    return f"bench-{kind}-{rate:g}".replace(".", "p")


@dataclass(frozen=True)
class Ports:
    echo: int  # HTTP echo (tcp and http probes)
    udp: int  # UDP echo
    dns: int  # DNS responder
    collector: int

    def of(self, kind: str) -> int:
        return {"tcp": self.echo, "http": self.echo, "udp": self.udp, "dns": self.dns}[kind]


# --- the rest of the cluster: echo sites and a minimal collector (separate process) --


def bench_pinglist(kind: str, rate: float, ips: list[str], port: int, mesh_nodes: int) -> Any:
    """The pinglist of one run: ``rate`` probes/s of ``kind`` in 10 s rounds (shorter rounds
    where the targets are fewer than a round's probes).

    Outside targets: one ring group per target. ``mesh_nodes``: a production pinglist of that
    many peer nodes, EKS-like names, 5 targets each (a node's pod and host echoes and its
    NodePort): all of ``kind``, at the echo sites.
    """
    from prober.model import Proto, SrcKind, TargetKind
    from prober.pinglist import PeerGroup, Pinglist, ProbeTarget

    proto = Proto(kind)
    query = QUERY if proto is Proto.DNS else None
    if mesh_nodes:
        names = [f"ip-10-{i // 250}-{i % 250}-{i % 200}.ec2.internal" for i in range(mesh_nodes)]
        ring = [
            PeerGroup(node=node, targets=[
                ProbeTarget(target=f"pod/{node}", kind=TargetKind.POD, ip=ips[(5 * i + j) % len(ips)],
                            port=port, proto=proto, dst_node=node, dst_kind=SrcKind.POD, query=query)
                for j in range(5)
            ])
            for i, node in enumerate(names)
        ]  # fmt: skip
        per_group = 5
    else:
        tkind = TargetKind.DNS if proto is Proto.DNS else TargetKind.EXTERNAL
        ring = [
            PeerGroup(node=f"t{i}", targets=[
                ProbeTarget(target=f"{tkind.value}/t{i}", kind=tkind, ip=ip, port=port, proto=proto,
                            query=query)
            ])
            for i, ip in enumerate(ips)
        ]  # fmt: skip
        per_group = 1
    interval = min(10.0, len(ring) * per_group / rate)
    k = max(1, round(rate * interval / per_group))
    return Pinglist(
        version=f"{kind}-{rate:g}-{mesh_nodes}",
        agent=agent_name(kind, rate),
        node="bench",
        kind=SrcKind.HOST,
        interval_s=interval,
        timeout_s=5.0,
        # Probes are spread over 90% of a round with jitter: room above the mean rate.
        budget_per_s=max(5.0, 2 * rate),
        concurrency=256,
        peers=ring,
        peers_per_round=k,
        local=[],
        shared=[],
    )


def fake_collector(pinglists: dict[str, Any]) -> Any:
    """The collector's pinglist, mesh and results API, for the agents under test."""
    import msgspec
    from aiohttp import web

    from prober.pinglist import encode_mesh, split
    from prober.records import parse_batch

    # As the collector answers: gzip, ETags and 304s, the mesh's version on every pinglist answer
    # (an agent that re-read a 5,000-node mesh every poll would measure the fake, not itself).
    # Every agent has its own mesh here: the mesh request names it in a query parameter the
    # real collector does not need (it has one mesh for all).
    encoded = {
        name: [msgspec.json.encode(head), encode_mesh(mesh)]
        for name, (head, mesh) in ((name, split(pl)) for name, pl in pinglists.items())
    }

    gzipped = {name: [gzip.compress(doc, 6) for doc in docs] for name, docs in encoded.items()}

    def answer(request: web.Request, name: str, part: int, headers: dict[str, str]) -> web.Response:
        if request.headers.get("If-None-Match") == headers["ETag"]:
            return web.Response(status=304, headers=headers)
        if "gzip" in request.headers.get("Accept-Encoding", ""):  # as the collector: every agent
            headers = {**headers, "Content-Encoding": "gzip"}
            return web.Response(body=gzipped[name][part], content_type="application/json", headers=headers)
        return web.Response(body=encoded[name][part], content_type="application/json", headers=headers)

    last = {"agent": next(iter(pinglists))}

    async def pinglist(request: web.Request) -> web.Response:
        name = request.match_info["agent"]
        pl = pinglists.get(name)
        if pl is None:
            return web.json_response({"error": "unknown agent"}, status=404)
        last["agent"] = name
        etag = f'"{pl.version}"'
        return answer(request, name, 0, {"ETag": etag, "X-Prober-Mesh-Version": etag})

    async def mesh(request: web.Request) -> web.Response:
        # Runs that overlap ask for different meshes: the one of the last pinglist asked for,
        # which is the asking agent's (it asks right after its pinglist).
        name = last["agent"]
        return answer(request, name, 1, {"ETag": f'"{pinglists[name].version}"'})

    async def results(request: web.Request) -> web.Response:
        good, rejected, _ = parse_batch(await request.read())
        return web.json_response({"accepted": len(good), "rejected": rejected, "errors": []})

    collector = web.Application(client_max_size=64 * 1024 * 1024)
    collector.router.add_get("/api/v1/pinglist/{agent}", pinglist)
    collector.router.add_get("/api/v1/mesh", mesh)
    collector.router.add_post("/api/v1/results", results)
    return collector


class DnsResponder(asyncio.DatagramProtocol):
    """Answers every A query with one record (127.0.0.1, TTL 0): a resolver that works."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        import dns.exception
        import dns.message
        import dns.rrset

        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        response = dns.message.make_response(query)
        for question in query.question:
            response.answer.append(dns.rrset.from_text(question.name, 0, "IN", "A", "127.0.0.1"))
        self.transport.sendto(response.to_wire(), addr)  # type: ignore[attr-defined]


async def serve_cluster(args: argparse.Namespace) -> None:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from prober.agent.echo import EchoIdentity, EchoState, make_app, open_udp_echo, serve_udp
    from prober.agent.metrics import AgentMetrics
    from prober.model import SrcKind

    ports = Ports(args.echo_port, args.udp_port, args.dns_port, args.collector_port)
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry=registry, node="echo", kind="pod", version="bench")
    identity = EchoIdentity(node="echo", kind=SrcKind.POD, agent="echo")
    state = EchoState(identity=identity, registry=registry, metrics=metrics)
    echo = web.AppRunner(make_app(state), access_log=None)
    await echo.setup()
    ips = target_ips(args.targets)
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tg:
        udp_tasks = []
        for ip in ips:
            await web.TCPSite(echo, ip, ports.echo, reuse_address=True, backlog=1024).start()
            udp_tasks.append(tg.create_task(serve_udp(await open_udp_echo(ip, ports.udp), identity, metrics)))
            await loop.create_datagram_endpoint(DnsResponder, local_addr=(ip, ports.dns))
        pinglists = {
            agent_name(kind, rate): bench_pinglist(kind, rate, ips, ports.of(kind), args.mesh_nodes)
            for kind in args.kinds
            for rate in args.rates
        }
        crunner = web.AppRunner(fake_collector(pinglists), access_log=None)
        await crunner.setup()
        await web.TCPSite(crunner, "127.0.0.1", ports.collector).start()
        print(json.dumps({"ready": True}), flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        for task in udp_tasks:
            task.cancel()
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


def window_s(args: argparse.Namespace, rate: float) -> float:
    seconds: float = args.seconds
    min_probes: int = args.min_probes
    return max(seconds, min_probes / rate)


async def measure_agent(
    kind: str,
    rate: float,
    args: argparse.Namespace,
    collector: str,
    env: dict[str, str],
    *,
    profile: Path | None = None,
) -> Measured:
    import aiohttp

    http_port = free_port()
    python = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
    argv = [
        *python, "-m", "prober", "--log-level", "warning", "agent", "--network", "host",
        "--node", "bench", "--name", agent_name(kind, rate), "--listen", "127.0.0.1",
        "--http-port", str(http_port), "--udp-port", str(free_port(socket.SOCK_DGRAM)),
        "--collector", collector,
    ]  # fmt: skip
    with process(argv, env=env, cwd=ROOT) as agent:
        metrics = f"http://127.0.0.1:{http_port}/metrics"
        async with aiohttp.ClientSession() as session:
            # A first round waits up to one 10 s interval; start-up alone takes tens of
            # seconds on a loaded machine.
            deadline = time.monotonic() + 120
            while True:  # wait until probing is under way (stagger, first fetch)
                with contextlib.suppress(aiohttp.ClientError):
                    if (await probes_total(session, metrics))[0] > 0:
                        break
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"agent did not start probing within 120 s (exit {agent.poll()})")
                await asyncio.sleep(0.5)
            await asyncio.sleep(args.warmup)
            p0, ok0 = await probes_total(session, metrics)
            c0, t0 = cpu_s(agent.pid), time.monotonic()
            await asyncio.sleep(window_s(args, rate))
            p1, ok1 = await probes_total(session, metrics)
            c1, t1 = cpu_s(agent.pid), time.monotonic()
        return Measured(p1 - p0, ok1 - ok0, t1 - t0, c1 - c0, peak_rss_mb(agent.pid))


def write_blackbox_config(directory: Path) -> Path:
    """The exporter's modules, with prober's 5 s timeout: a TCP connect, an HTTP GET that
    wants a 2xx, an A query over UDP."""
    config = directory / "blackbox.yml"
    config.write_text(
        "modules:\n"
        "  tcp:\n    prober: tcp\n    timeout: 5s\n    tcp:\n      preferred_ip_protocol: ip4\n"
        "  http:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n"
        "  dns:\n    prober: dns\n    timeout: 5s\n    dns:\n      preferred_ip_protocol: ip4\n"
        f"      transport_protocol: udp\n      query_name: {QUERY}\n      query_type: A\n"
    )
    return config


def blackbox_target(kind: str, ip: str, ports: Ports) -> str:
    module = BLACKBOX_MODULE[kind]
    if module == "http":
        return f"http://{ip}:{ports.echo}/"
    return f"{ip}:{ports.dns if module == 'dns' else ports.echo}"


async def measure_blackbox(kind: str, rate: float, args: argparse.Namespace, ports: Ports) -> Measured:
    import aiohttp

    port = free_port()
    module = BLACKBOX_MODULE[kind]
    targets = [blackbox_target(kind, ip, ports) for ip in target_ips(args.targets)]
    with tempfile.TemporaryDirectory(prefix="prober-bench-") as tmp:
        config = write_blackbox_config(Path(tmp))
        argv = [
            BLACKBOX,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        with process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as bb:
            base = f"http://127.0.0.1:{port}/probe?module={module}&target="
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
                    """Launch probes at ``rate``/s, round-robin over the targets."""
                    interval = 1.0 / rate
                    start = time.monotonic()
                    i = 0
                    async with asyncio.TaskGroup() as tg:
                        while (now := time.monotonic()) - start < seconds:
                            due = int((now - start) / interval) + 1
                            while i < due:
                                tg.create_task(one(targets[i % len(targets)]))
                                i += 1
                            await asyncio.sleep(min(interval, 0.05))

                await drive(args.warmup)
                a0, ok0 = counts["all"], counts["ok"]
                c0, t0 = cpu_s(bb.pid), time.monotonic()
                await drive(window_s(args, rate))
                a1, ok1 = counts["all"], counts["ok"]
                c1, t1 = cpu_s(bb.pid), time.monotonic()
                rss = peak_rss_mb(bb.pid)
    return Measured(a1 - a0, ok1 - ok0, t1 - t0, c1 - c0, rss)


async def floor_client(args: argparse.Namespace) -> None:
    """``--floor-client``: the floor (see the module doc). Probes the echo sites at the
    first of ``--rates``, then prints one JSON line: probes, successes, seconds and CPU
    seconds (its own ``/proc``) over the window after the warm-up."""
    loop = asyncio.get_running_loop()
    ips, port, rate = target_ips(args.targets), args.echo_port, args.rates[0]
    counts = {"all": 0, "ok": 0}

    async def probe(ip: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(0.0)  # non-blocking, as the agent makes its sockets
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), 5.0)
            counts["ok"] += 1
        except (OSError, TimeoutError):
            pass
        finally:
            sock.close()
            counts["all"] += 1

    async def drive(seconds: float, start_at: int) -> int:
        interval, start, i = 1.0 / rate, time.monotonic(), start_at
        async with asyncio.TaskGroup() as tg:
            while (now := time.monotonic()) - start < seconds:
                due = start_at + int((now - start) / interval) + 1
                while i < due:
                    tg.create_task(probe(ips[i % len(ips)]))
                    i += 1
                await asyncio.sleep(max(0.0, start + (due - start_at) * interval - time.monotonic()))
        return i

    i = await drive(args.warmup, 0)
    a0, ok0, c0, t0 = counts["all"], counts["ok"], cpu_s(os.getpid()), time.monotonic()
    await drive(window_s(args, rate), i)
    a1, ok1, c1, t1 = counts["all"], counts["ok"], cpu_s(os.getpid()), time.monotonic()
    got = {"probes": a1 - a0, "ok": ok1 - ok0, "seconds": t1 - t0, "cpu_s": c1 - c0}
    print(json.dumps({**got, "rss_mb": peak_rss_mb(os.getpid())}))


async def measure_floor(rate: float, args: argparse.Namespace, ports: Ports) -> Measured:
    """The floor's run (``--floor-client`` in a process of its own) at ``rate``."""
    argv = [sys.executable, __file__, "--floor-client", "--targets", str(args.targets),
            "--rates", f"{rate:g}", "--echo-port", str(ports.echo), "--seconds", f"{args.seconds:g}",
            "--min-probes", str(args.min_probes), "--warmup", f"{args.warmup:g}"]  # fmt: skip
    with process(argv, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        limit = args.warmup + window_s(args, rate) + 30
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), limit)
        await asyncio.to_thread(proc.wait, 10)  # it ends by itself once it has reported
    if not line:
        raise SystemExit("the floor client did not report")
    got = json.loads(line)
    return Measured(got["probes"], got["ok"], got["seconds"], got["cpu_s"], got["rss_mb"])


@contextlib.asynccontextmanager
async def cluster(args: argparse.Namespace, env: dict[str, str]) -> AsyncIterator[Ports]:
    ports = Ports(free_port(), free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM), free_port())
    argv = [sys.executable, __file__, "--serve", "--targets", str(args.targets),
            "--rates", ",".join(f"{r:g}" for r in args.rates), "--kinds", ",".join(args.kinds),
            "--echo-port", str(ports.echo), "--udp-port", str(ports.udp), "--dns-port", str(ports.dns),
            "--collector-port", str(ports.collector), "--mesh-nodes", str(args.mesh_nodes)]  # fmt: skip
    with process(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
        if not line:
            raise SystemExit("echo/collector process did not start")
        yield ports


def print_profile(path: Path, top: int = 25) -> None:
    """The agent's hottest functions by own time (cProfile; slows the agent ~2x)."""
    import pstats

    print(f"profile ({path}), top {top} by own time:")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(top)


def report(name: str, m: Measured) -> None:
    print(
        f"{name:<30} {m.per_s:8.2f} probes/s  ok {100 * m.ok / max(m.probes, 1):5.1f}%  "
        f"cpu {m.cpu_s:6.2f}s / {m.probes:6.0f} probes = {m.cpu_per_1k:6.3f} s per 1k  "
        f"peak rss {m.rss_mb:5.1f} MB",
        flush=True,
    )


@dataclass
class Row:
    kind: str
    rate: float
    prober_probes_per_s: float
    prober_ok_ratio: float
    prober_cpu_per_1k: float
    prober_rss_mb: float
    blackbox_module: str | None
    blackbox_probes_per_s: float | None
    blackbox_cpu_per_1k: float | None
    ratio: float | None
    #: The floor's CPU per 1,000 probes (``tcp`` only; see the module doc).
    floor_cpu_per_1k: float | None = None


async def measure_pair(
    kind: str, rate: float, args: argparse.Namespace, *, collector: str, env: dict[str, str], ports: Ports
) -> Row:
    with_blackbox = not args.no_blackbox and shutil.which(BLACKBOX) is not None
    with_floor = kind == "tcp" and not args.no_floor
    blackbox: Measured | None = None
    floor: Measured | None = None
    if rate <= CONCURRENT_MAX_RATE:
        others = [measure_blackbox(kind, rate, args, ports)] if with_blackbox else []
        others += [measure_floor(rate, args, ports)] if with_floor else []
        agent, *measured = await asyncio.gather(measure_agent(kind, rate, args, collector, env), *others)
        blackbox = measured.pop(0) if with_blackbox else None
        floor = measured.pop(0) if with_floor else None
    else:
        agent = await measure_agent(kind, rate, args, collector, env)
        blackbox = await measure_blackbox(kind, rate, args, ports) if with_blackbox else None
        floor = await measure_floor(rate, args, ports) if with_floor else None
    report(f"prober {kind} @ {rate:g}/s", agent)
    if blackbox is not None:
        report(f"blackbox {BLACKBOX_MODULE[kind]} @ {rate:g}/s", blackbox)
    if floor is not None:
        report(f"asyncio floor {kind} @ {rate:g}/s", floor)
    ratio = agent.cpu_per_1k / blackbox.cpu_per_1k if blackbox else None
    return Row(
        kind=kind,
        rate=rate,
        prober_probes_per_s=round(agent.per_s, 2),
        prober_ok_ratio=round(agent.ok / max(agent.probes, 1), 4),
        prober_cpu_per_1k=round(agent.cpu_per_1k, 4),
        prober_rss_mb=round(agent.rss_mb, 1),
        blackbox_module=BLACKBOX_MODULE[kind] if blackbox else None,
        blackbox_probes_per_s=round(blackbox.per_s, 2) if blackbox else None,
        blackbox_cpu_per_1k=round(blackbox.cpu_per_1k, 4) if blackbox else None,
        ratio=round(ratio, 3) if ratio is not None else None,
        floor_cpu_per_1k=round(floor.cpu_per_1k, 4) if floor else None,
    )


async def main(args: argparse.Namespace) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    shape = f"{args.targets} outside targets"
    if args.mesh_nodes:
        shape = f"a pinglist of {args.mesh_nodes} peer nodes"
    print(f"one agent, loopback echo sites as {shape}; kinds {','.join(args.kinds)}; rates "
          f"{', '.join(f'{r:g}' for r in args.rates)} probes/s; windows >= {args.seconds:g}s and "
          f">= {args.min_probes} probes after {args.warmup:g}s warm-up; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)  # fmt: skip
    if not shutil.which(BLACKBOX):
        print(f"{BLACKBOX} not installed: no comparison (scripts/install installs it)")
    rows: list[Row] = []
    async with cluster(args, env) as ports:
        collector = f"http://127.0.0.1:{ports.collector}"
        for rate in args.rates:
            for kind in args.kinds:
                row = await measure_pair(kind, rate, args, collector=collector, env=env, ports=ports)
                rows.append(row)
        if args.profile:
            await measure_agent(args.kinds[0], args.rates[0], args, collector, env, profile=args.profile)
            print_profile(args.profile)
    print(f"\n{'kind':<5} {'rate/s':>7} {'prober s/1k':>12} {'blackbox s/1k':>14} {'ratio':>6} {'rss MB':>7} "
          f"{'floor s/1k':>11} {'floor/blackbox':>15}")  # fmt: skip
    for r in rows:
        bb = f"{r.blackbox_module} {r.blackbox_cpu_per_1k:.3f}" if r.blackbox_cpu_per_1k is not None else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        cpu, rss = r.prober_cpu_per_1k, r.prober_rss_mb
        floor = f"{r.floor_cpu_per_1k:.3f}" if r.floor_cpu_per_1k is not None else "-"
        floor_ratio = (
            f"{r.floor_cpu_per_1k / r.blackbox_cpu_per_1k:.2f}"
            if r.floor_cpu_per_1k is not None and r.blackbox_cpu_per_1k
            else "-"
        )
        line = f"{r.kind:<5} {r.rate:>7g} {cpu:>12.3f} {bb:>14} {ratio:>6} {rss:>7.1f}"
        print(f"{line} {floor:>11} {floor_ratio:>15}")
    print("goals: prober/blackbox CPU per probe <= 0.5 at the production rate; "
          "RSS <= 40 MB at 1,000 nodes, <= 48 MB at 5,000 (--mesh-nodes)")  # fmt: skip
    print(f"total {time.monotonic() - started:.0f}s, load average now {os.getloadavg()[0]:.1f}")
    print(json.dumps({"targets": args.targets, "mesh_nodes": args.mesh_nodes, "rows": [*map(asdict, rows)]}))


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _kinds(text: str) -> list[str]:
    kinds = [k for k in text.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"kinds are {', '.join(KINDS)}; got {text!r}")
    return kinds


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=int, default=500, help="loopback echo sites (default 500)")
    p.add_argument("--rates", type=_floats, default=[2.5, 12.5, 500.0],
                   help="probe rates, probes/s, comma-separated (default 2.5,12.5,500)")  # fmt: skip
    p.add_argument("--kinds", type=_kinds, default=list(KINDS),
                   help="probe kinds, comma-separated (default tcp,http,udp,dns)")  # fmt: skip
    p.add_argument("--seconds", type=float, default=20.0, help="shortest window (default 20: two rounds)")
    p.add_argument("--min-probes", type=int, default=150,
                   help="windows long enough for this many probes (default 150: 60 s at 2.5/s)")  # fmt: skip
    p.add_argument("--warmup", type=float, default=3.0, help="steady-state wait before measuring (default 3)")
    p.add_argument("--no-blackbox", action="store_true", help="measure the agent only")
    p.add_argument("--no-floor", action="store_true",
                   help="skip the floor (a bare asyncio connect loop beside tcp; see above)")  # fmt: skip
    p.add_argument("--profile", type=Path,
                   help="then run the first kind at the first rate under cProfile; save, print")  # fmt: skip
    p.add_argument("--mesh-nodes", type=int, default=0,
                   help="probe a production pinglist of this many peer nodes (5 targets each, 10 s rounds) "
                   "instead of the targets as outside targets (default 0: outside targets)")  # fmt: skip
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--floor-client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--echo-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--udp-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dns-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--collector-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 1 <= args.targets <= 5000 or not 1 <= args.seconds <= 300:
        p.error("--targets must be 1..5000, --seconds 1..300")
    if not args.rates or any(not 0.5 <= r <= 5000 for r in args.rates):
        p.error("--rates must be 0.5..5000 each")
    if not 1 <= args.min_probes <= 10_000:
        p.error("--min-probes must be 1..10000")
    if not 0 <= args.mesh_nodes <= 10000:
        p.error("--mesh-nodes must be 0..10000")
    return args


if __name__ == "__main__":
    parsed = parse_args(sys.argv[1:])
    if parsed.floor_client:  # starts no process: SIGTERM's default (exit) is enough
        asyncio.run(floor_client(parsed))
    else:
        # SIGTERM unwinds like ^C: every process this run started is stopped on the way out.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        asyncio.run(serve_cluster(parsed) if parsed.serve else main(parsed))
