"""The collector at production scale: a real ``prober collector`` fed by simulated agents over HTTP.

For each cluster size (default 1,000 nodes; ``--nodes 1000 5000`` for both):

1. The cluster is an EKS-like inventory (``tests/inventories.py``), written to a file
   and given to a real ``prober collector`` process (``--inventory FILE``, default
   window, retention and schedule), listening on 127.0.0.1.
2. Its agents' results come from ``tests/synth.py``: every agent's real pinglist and
   ``plan_round`` at the production schedule (10 s rounds, the cluster budget's share
   of probes per agent but never fewer than 3 peers a round, 2 agents per node),
   through the network model, with one fault of each kind injected from round
   ``--fault-round`` on, on distinct nodes (a blocked pair and the NLB hairpin
   included). The records are generated before the run (in chunks of rounds, kept as
   compressed JSONL batches) and stamped for the run's wall clock when sent.
3. The run is in real time, without time compression: each agent posts its results
   as the agent's reporter does (``POST /api/v1/results``, every ``--flush-s``
   seconds at its own phase, by default the mesh's ``report_interval_s``: 2 s up to
   1,000 nodes, 10 s at 5,000) over real HTTP on loopback,
   each result in the first post after its probe ended: a timed-out probe's 5 s
   (the timeout) after its stamp, as the collector gets it.
   Each agent fetches its own pinglist as the agent's fetcher does
   (``GET /api/v1/pinglist/{agent}``, a 304 while unchanged): at once when the
   answer to a post that held its results names another version for it
   (``Prober-Pinglist``; the answer to a post of several agents names each), and every
   six rounds at its own phase (every agent in the first round), so the
   suspect loop is closed: the focused probes the collector asks for are generated
   shortly before each round (the same network model and faults) and posted like
   the rest, and the entries an agent learns of mid-round are generated at once, to
   start within a second, as an agent starts them (``--no-focus``: the schedule
   alone, no fetches).
   Meanwhile a reader asks ``GET /api/v1/findings`` every second (its latency, and
   the first time each fault is named), ``GET /api/v1/matrix`` every 5 s (what the
   web matrix asks) and ``/metrics`` every 15 s (Prometheus' default scrape), and
   the collector's RSS and CPU time are sampled from ``/proc``.

Prints the RSS over time, the collector's CPU (core-seconds per second), the
diagnosis pass time (its own gauge, ``prober_diagnosis_duration_seconds``), API
latencies, its event loop's lag (``prober_collector_event_loop_lag_seconds`` at the
last scrape: how long anything waited for the loop), the rounds from each fault's onset
to its finding, and the findings nobody injected, each beside the goal for that cluster
size; and whether the figures are valid: the load arrived on schedule, and other
processes took at most ``MAX_OTHERS_CORES`` of the machine (its busy time in
``/proc/stat`` less this process's and its children's); then one JSON line per size.
Bounded: generation (about 1 CPU-s per 3 s of traffic at 1,000 nodes) plus
``--rounds`` rounds plus at most ``--drain-s``; the default (1,000 nodes, 12 rounds)
takes about 4 minutes.

    PYTHONPATH=. python bench/collector_scale.py [--nodes 1000 5000] [--rounds 12] [--flush-s 2]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import json
import math
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import msgspec
import yaml
from processes import stop_process

from prober.agent.runner import POLL_ROUNDS
from prober.collector.service import STATE_FILE
from prober.model import ProbeResult
from prober.pinglist import PINGLIST_HEADER, AgentPinglist, ProbeTarget, decode_announcement
from prober.records import encode_records
from prober.schedule import USABLE_FRACTION, SchedulePolicy, focus_added
from tests.image.podspec import quantity
from tests.synth import EXTERNAL, KINDS, START_TS, Cluster, Fault, completed_at, simulate

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BASE_NICE = os.getpriority(os.PRIO_PROCESS, 0)

#: The goals (docs: README § Benchmarks), per cluster size: 1,000 nodes and 5,000 nodes.
GOALS: dict[str, tuple[float, float]] = {
    "rss_gib": (1.0, 2.0),
    "cpu_cores": (0.25, 1.0),
    "pass_s": (0.5, 2.0),
    "api_p99_s": (0.1, 0.2),
    "fast_rounds": (2, 3),
    "slow_rounds": (5, 10),
    "metrics_s": (1.0, 2.0),
}
#: Bump when the generated posts change shape (cached posts of another version are not reused).
CACHE_VERSION = 2
#: The files whose code makes the posts (part of the cache key).
GENERATOR_SOURCES = ("tests/synth.py", "tests/inventories.py", "prober/schedule.py", "prober/pinglist.py")
#: Seconds before a round's start that its focused probes are generated (from the
#: pinglists the agents hold then).
FOCUS_LEAD_S = 1.5
#: Cores other processes may take over a run before its figures are not valid (the
#: machine's own background is a few hundredths).
MAX_OTHERS_CORES = 0.25
#: The manifests' volume for the windows' snapshot.
COLLECTOR_MANIFEST = ROOT / "deploy/base/collector.yaml"


def state_volume_mib(manifest: Path = COLLECTOR_MANIFEST) -> int:
    """The size limit of the collector's ``state`` volume (an ``emptyDir``) in the manifests, MiB."""
    for doc in yaml.safe_load_all(manifest.read_text()):
        for volume in (doc or {}).get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            if volume.get("name") == "state":
                return int(quantity(volume["emptyDir"]["sizeLimit"]) / 2**20)
    raise ValueError(f"{manifest}: no state volume")


#: Seeds of the focused probes' generation (apart from the chunks' seeds 0, 3, 6, ...).
FOCUS_SEED = 100_000
#: Kinds the goals give the shorter time to detect.
FAST = {"node-unreachable", "node-isolated", "bridge-netfilter", "packet-loss", "snat-asymmetric"}


def goal(name: str, nodes: int) -> float:
    lo, hi = GOALS[name]
    return lo if nodes <= 1000 else hi


# ----------------------------------------------------------------------- the faults


def faults_for(cluster: Cluster, kinds: Sequence[str], *, fault_round: int) -> list[Fault]:
    """One fault of each kind, each on its own nodes (spread over the zones). The blocked
    pair is a node and the peer its rotation reaches in the fault's first round: the
    rotation comes to a pair taken at random only every ``ceil((N - 1) / k)`` rounds (44
    at 1,000 nodes), and no rule can name a pair before its first probe. The
    cross-wired node is likewise one whose pod agent probes the external target in
    that round."""
    nodes = cluster.nodes
    step = max(1, len(nodes) // 16)
    picks = [nodes[i * step + 1] for i in range(16)]
    pick = iter(picks)
    taken = set(picks)  # every fault's nodes, so that no two faults share one
    out = []
    for kind in kinds:
        if kind == "pair-blocked":
            x = next(pick)
            y = cluster.reached(x, fault_round)
            if y in taken:  # the rotation's peer is another fault's node: a pair of its own
                free = (c for c in nodes if c not in taken and cluster.reached(c, fault_round) not in taken)
                other = next(free, None)
                if other is None:
                    raise SystemExit(f"no blocked pair free of the other faults among {len(nodes)} nodes")
                x, y = other, cluster.reached(other, fault_round)
            taken.update((x, y))
            out.append(Fault(kind=kind, nodes=(x, y)))
        elif kind == "snat-asymmetric":
            # A node whose pod agent reaches the external target in the fault's first
            # round: the fan-in stride brings it round once every `every` rounds (10 at
            # 1,000 nodes), and no rule names a node before its first failed probe.
            wired = (c for c in nodes if c not in taken and cluster.probes_in_round(c, EXTERNAL, fault_round))
            x = next(wired, "")
            if not x:
                raise SystemExit(f"no node of its own probes the external target in round {fault_round}")
            taken.add(x)
            out.append(Fault(kind=kind, nodes=(x,)))
        elif kind == "packet-loss":
            out.append(Fault(kind=kind, nodes=(next(pick),), rate=0.05))
        elif kind == "dns-timeouts":
            out.append(Fault(kind=kind, rate=0.05))
        elif kind in ("nlb-hairpin", "nlb-5tuple-collision"):
            out.append(Fault(kind=kind))
        elif kind == "zone-partition":
            out.append(Fault(kind=kind, zones=(0, 2)))
        elif kind == "zone-degraded":
            out.append(Fault(kind=kind, zones=(1,), rate=0.05))
        else:
            out.append(Fault(kind=kind, nodes=(next(pick),)))
    return out


def expected(f: Fault) -> frozenset[str]:
    """The nodes a finding of the fault must name (empty: any finding of its kind)."""
    if f.kind in ("nlb-hairpin", "nlb-5tuple-collision", "dns-timeouts", "zone-partition", "zone-degraded"):
        return frozenset()
    return frozenset(f.nodes)


# ------------------------------------------------------------------ the agents' posts


@dataclass(frozen=True, slots=True)
class Batch:
    """One agent's post: when (seconds after the span's start), and its JSONL, compressed.

    ``seconds`` are the whole seconds of its records' timestamps: the run restamps
    them by replacing ``{"ts":<second>.`` (the first field of every line).
    """

    at: float
    body: bytes
    seconds: tuple[int, ...]
    records: int


def phase_of(agent: tuple[str, str], flush_s: float) -> float:
    digest = hashlib.blake2b(f"{agent[0]}/{agent[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64 * flush_s


def batches_of(records: Sequence[ProbeResult], *, t0: float, flush_s: float, timeout_s: float) -> list[Batch]:
    """Each agent's records grouped as its reporter sends them: every ``flush_s`` at its
    phase, each in the first post after its probe ended (a timed-out probe's a timeout
    after its stamp). A probe that ends after its chunk of rounds goes in a post of its
    own at the same moment as the next chunk's."""
    groups: dict[tuple[tuple[str, str], int], list[ProbeResult]] = defaultdict(list)
    phases: dict[tuple[str, str], float] = {}
    for r in records:
        agent = (r.src_node, r.src_kind.value)
        ph = phases.get(agent)
        if ph is None:
            ph = phases[agent] = phase_of(agent, flush_s)
        done = completed_at(r, timeout_s=timeout_s)
        groups[(agent, math.floor((done - t0 - ph) / flush_s))].append(r)
    out = []
    for (agent, slot), rs in groups.items():
        body = encode_records(rs)
        out.append(
            Batch(
                at=phases[agent] + (slot + 1) * flush_s,
                body=zlib.compress(body, 1),
                seconds=tuple(sorted({int(r.ts) for r in rs})),
                records=len(rs),
            )
        )
    return out


def coalesce(batches: Sequence[Batch], n: int) -> list[Batch]:
    """Every ``n`` consecutive posts as one (sent when the last of them is due)."""
    if n <= 1:
        return list(batches)
    out = []
    for i in range(0, len(batches), n):
        group = batches[i : i + n]
        body = b"".join(zlib.decompress(b.body) for b in group)
        out.append(
            Batch(
                at=group[-1].at,
                body=zlib.compress(body, 1),
                seconds=tuple(sorted({x for b in group for x in b.seconds})),
                records=sum(b.records for b in group),
            )
        )
    return out


def restamp(batch: Batch, shift: int) -> bytes:
    body = zlib.decompress(batch.body)
    for s in batch.seconds:
        body = body.replace(b'{"ts":%d.' % s, b'{"ts":%d.' % (s + shift))
    return body


def generate(
    cluster: Cluster, *, rounds: int, faults: Sequence[Fault], fault_round: int, flush_s: float, chunk: int
) -> tuple[list[Batch], int]:
    """Every post of the run, in order of sending; and the records in them."""
    interval = cluster.interval_s
    out: list[Batch] = []
    total = 0
    for c0 in range(0, rounds, chunk):
        n = min(chunk, rounds - c0)
        start = START_TS + c0 * interval
        active = [
            replace(f, start_s=max(0.0, (fault_round - c0) * interval))
            for f in faults
            if fault_round < c0 + n
        ]
        gen = simulate(cluster, rounds=n, faults=active, seed=c0, start_ts=start)
        total += len(gen.records)
        out.extend(batches_of(gen.records, t0=START_TS, flush_s=flush_s, timeout_s=cluster.timeout_s))
        print(f"  generated rounds {c0}..{c0 + n - 1}: {len(gen.records):,} records", flush=True)
        del gen
    out.sort(key=lambda b: b.at)
    return out, total


# ------------------------------------------------------------------- the collector


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_s() -> float:
    """CPU seconds every CPU of the machine has spent busy since boot (``/proc/stat``: all but
    idle and iowait)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


def family_cpu_s() -> float:
    """CPU seconds of this process and of its children alive now (the collector, the focus
    worker): what the machine's busy time holds of the run itself."""
    own = time.process_time()
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):  # a process that ended meanwhile
            if stat.read_text().rsplit(")", 1)[1].split()[1] == me:  # its parent
                own += cpu_s(int(stat.parent.name))
    return own


def status_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


@contextlib.contextmanager
def collector(
    inventory: Path, port: int, log: Path, *, state_dir: Path, cluster_budget: float | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    argv = [
        sys.executable,
        "-m",
        "prober",
        "collector",
        "--inventory",
        str(inventory),
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        # As the manifests run it (PROBER_STATE_DIR): a snapshot of the windows every 30 s.
        "--state-dir",
        str(state_dir),
    ]
    if cluster_budget is not None:
        argv += ["--cluster-budget", f"{cluster_budget:g}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield proc
    finally:
        stop_process(proc, 20.0)


def wait_ready(proc: subprocess.Popen[bytes], url: str, port: int, log: Path) -> None:
    """Until the collector answers ``/readyz`` (exits the benchmark if it dies or takes 120 s)."""
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None or time.time() > deadline:
            sys.exit(f"the collector did not become ready:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            import urllib.request

            try:
                with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
        time.sleep(0.5)


# --------------------------------------------------------------------------- the run


@dataclass
class Run:
    pid: int
    url: str
    t0: float  # wall time of the span's start
    interval: float
    rss: list[tuple[float, float]] = field(default_factory=list)  # (s since t0, MiB)
    #: The collector's snapshot of its windows (``--state-dir``), and its sizes as sampled.
    state_file: Path | None = None
    state_bytes: list[int] = field(default_factory=list)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (s since t0, CPU-s)
    posts: list[float] = field(default_factory=list)
    post_errors: int = 0
    error_reasons: dict[str, int] = field(default_factory=dict)
    lag: list[float] = field(default_factory=list)
    findings: list[float] = field(default_factory=list)
    matrix: list[float] = field(default_factory=list)
    scrape: list[float] = field(default_factory=list)
    #: The collector's event-loop lag histogram at the last scrape: (upper bound, count).
    loop_lag: list[tuple[float, float]] = field(default_factory=list)
    passes: list[float] = field(default_factory=list)
    pass_cpu: list[float] = field(default_factory=list)
    driver_cpu_s: float = 0.0  # this process's CPU over the run: the simulated agents and readers
    #: CPU seconds the machine spent on other processes over the run (busy time less this
    #: process's and its children's): another load distorts every figure.
    others_cpu_s: float = 0.0
    load: list[float] = field(default_factory=list)  # the machine's 1-minute load average
    seen: dict[tuple[str, frozenset[str]], float] = field(default_factory=dict)
    extra: dict[tuple[str, tuple[str, ...]], float] = field(default_factory=dict)
    #: Each unexplained finding's evidence when first shown, and how many reads showed it.
    extra_evidence: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)
    extra_reads: dict[tuple[str, tuple[str, ...]], int] = field(default_factory=dict)
    gave_up_at: float | None = None
    polls: list[float] = field(default_factory=list)  # GET /api/v1/pinglist/{agent} latencies
    first_poll: float = math.inf  # when the first fetch went out (wall time)
    last_poll: float = -math.inf  # and the last
    poll_errors: int = 0
    focus: dict[str, list[ProbeTarget]] = field(default_factory=dict)  # each agent's focused probes now
    focus_probes: int = 0  # focused probes the simulated agents sent
    focus_rounds: int = 0  # rounds with any
    focus_agents: set[str] = field(default_factory=set)
    #: When an agent of each node came to hold focused entries (seconds into the span).
    focused_at: dict[str, list[float]] = field(default_factory=dict)
    #: Focused entries agents learned of mid-round, to probe in that round as agents do:
    #: per round, each agent's new entries and the seconds into the round it fetched them.
    catch_up: dict[int, dict[str, tuple[list[ProbeTarget], float]]] = field(default_factory=dict)
    catch_up_due: asyncio.Event = field(default_factory=asyncio.Event)
    catch_up_probes: int = 0  # of focus_probes, those started mid-round
    #: The agents whose pinglist the answers to the posts named with a version other than
    #: the one they hold: each fetches it at once, as an agent does.
    news: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    held: dict[str, str] = field(default_factory=dict)  # each agent's pinglist version (own part)
    announced: int = 0  # fetches the answers' news asked for


async def send(
    run: Run, session: aiohttp.ClientSession, batches: Sequence[Batch], shift: int, *, max_lag_s: float
) -> None:
    """Post each batch at its time; the lag is measured when a post goes out (at most 256 in flight)."""
    inflight: set[asyncio.Task[None]] = set()
    limit = asyncio.Semaphore(256)
    done = asyncio.Event()

    async def post(b: Batch) -> None:
        async with limit:
            if done.is_set():
                return
            lag = time.time() - (run.t0 + b.at)
            run.lag.append(max(0.0, lag))
            if lag > max_lag_s or run.gave_up_at is not None:
                if run.gave_up_at is None:
                    run.gave_up_at = b.at
                    print(
                        f"  the posts fell more than {max_lag_s:g} s behind at {b.at:.0f} s into the span: "
                        "stopped sending (this machine could not play the agents in real time)",
                        flush=True,
                    )
                done.set()
                return
            body = restamp(b, shift)
            start = time.perf_counter()
            try:
                async with session.post(
                    run.url + "/api/v1/results", data=body, headers={"Content-Type": "application/x-ndjson"}
                ) as resp:
                    await resp.read()
                    if (raw := resp.headers.get(PINGLIST_HEADER)) and run.held:
                        for agent, a in decode_announcement(raw).items():
                            held, head = run.held.get(agent), a.version.split(".", 1)[0]
                            if held is not None and held != head:  # its first fetch comes first
                                run.held[agent] = head  # asked once
                                run.news.put_nowait(agent)
                    if resp.status != 200:
                        run.post_errors += 1
                        reason = f"HTTP {resp.status}"
                        run.error_reasons[reason] = run.error_reasons.get(reason, 0) + 1
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                run.post_errors += 1
                reason = type(exc).__name__
                run.error_reasons[reason] = run.error_reasons.get(reason, 0) + 1
            run.posts.append(time.perf_counter() - start)

    for b in batches:
        if done.is_set():
            break
        delay = run.t0 + b.at - time.time()
        if delay > 0.005:
            await asyncio.sleep(delay)
        task = asyncio.create_task(post(b))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    if inflight:
        await asyncio.wait(inflight)


_head_decoder = msgspec.json.Decoder(AgentPinglist)


async def fetch_pinglist(
    run: Run, session: aiohttp.ClientSession, etags: dict[str, str], limit: asyncio.Semaphore, agent: str
) -> None:
    """One agent's own pinglist, as its fetcher asks for it (``If-None-Match``)."""
    async with limit:
        headers = {"Accept-Encoding": "gzip"}
        if agent in etags:
            headers["If-None-Match"] = etags[agent]
        start = time.perf_counter()
        run.first_poll = min(run.first_poll, time.time())
        run.last_poll = time.time()
        try:
            async with session.get(f"{run.url}/api/v1/pinglist/{agent}", headers=headers) as resp:
                body = await resp.read()
                if resp.status == 200:
                    etags[agent] = resp.headers.get("ETag", "")
                    head = _head_decoder.decode(body)
                    run.held[agent] = head.version
                    caught_up(run, agent, head.focus)
                    if head.focus and agent not in run.focus:
                        run.focused_at.setdefault(head.node, []).append(time.time() - run.t0)
                    if head.focus:
                        run.focus[agent] = head.focus
                    else:
                        run.focus.pop(agent, None)
                elif resp.status != 304:
                    run.poll_errors += 1
        except (aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError):
            run.poll_errors += 1
        run.polls.append(time.perf_counter() - start)


def caught_up(run: Run, agent: str, focus: Sequence[ProbeTarget]) -> None:
    """An agent holds ``focus`` from now: the entries new to it go into ``run.catch_up`` for
    the round in progress, as an agent starts them at once (``focus_catch_up``). The round's
    own focused probes were generated ``FOCUS_LEAD_S`` before it began, from the focus then."""
    added = focus_added(run.focus.get(agent, []), focus)
    if not added or run.gave_up_at is not None:
        return
    now = time.time() - run.t0
    r = math.floor(now / run.interval)
    elapsed = now - r * run.interval
    if r < 1 or elapsed >= USABLE_FRACTION * run.interval:
        return
    pending = run.catch_up.setdefault(r, {})
    entries, since = pending.get(agent, ([], elapsed))
    pending[agent] = ([*entries, *added], since)
    run.catch_up_due.set()


async def poll_pinglists(
    run: Run, session: aiohttp.ClientSession, agents: Sequence[str], stop: asyncio.Event
) -> None:
    """Each agent's own pinglist, fetched as the agent's fetcher does: at once when the
    answer to a post names another version for it (``run.news``), and every
    ``POLL_ROUNDS`` rounds at its own phase (``If-None-Match``: a 304 while it is
    unchanged); its focused probes kept in ``run.focus``. The mesh is not refetched: it
    does not change during the run."""
    etags: dict[str, str] = {}
    limit = asyncio.Semaphore(128)
    tasks: set[asyncio.Task[None]] = set()

    def start(agent: str) -> None:
        task = asyncio.create_task(fetch_pinglist(run, session, etags, limit, agent))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def on_news() -> None:
        while True:
            agent = await run.news.get()
            run.announced += 1
            start(agent)

    # Every agent's first fetch in the first round; then every POLL_ROUNDS rounds.
    period = POLL_ROUNDS * run.interval
    due = sorted((phase_of((a, "fetch"), run.interval), a) for a in agents)
    news = asyncio.create_task(on_news())
    r = 0
    while not stop.is_set():
        for phase, agent in due:
            delay = run.t0 + (r * period if r else 0.0) + phase - time.time()
            if delay > 0.005:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                break
            start(agent)
        r += 1
    news.cancel()
    if tasks:
        await asyncio.wait(tasks)


#: The cluster the focused probes' worker process generates for (set as it starts).
_FOCUS: dict[str, Cluster] = {}


def _adopt(cluster: Cluster) -> None:
    _FOCUS["cluster"] = cluster


def focused_batches(
    r: int,
    focus: dict[str, list[ProbeTarget]],
    faults: list[Fault],
    flush_s: float,
    focus_from_s: dict[str, float] | None = None,
) -> tuple[list[Batch], int]:
    """Round ``r``'s focused probes (``focus``: each agent's entries; ``focus_from_s``: those
    learned that many seconds into the round, probed from then on) through the network
    model and ``faults``, as the posts that carry them; and how many. Runs in a worker
    process, so that generating them never holds this process's event loop."""
    cluster = _FOCUS["cluster"]
    seed = FOCUS_SEED + r + (FOCUS_SEED if focus_from_s else 0)
    gen = simulate(
        cluster, rounds=1, faults=faults, seed=seed, start_ts=START_TS + r * cluster.interval_s,
        focus=focus, focus_only=True, focus_from_s=focus_from_s,
    )  # fmt: skip
    batches = batches_of(gen.records, t0=START_TS, flush_s=flush_s, timeout_s=cluster.timeout_s)
    return sorted(batches, key=lambda b: b.at), len(gen.records)


def focus_worker(cluster: Cluster) -> concurrent.futures.ProcessPoolExecutor:
    """One worker process for the focused probes, forked now (before any thread or event
    loop of this process) with ``cluster`` in its memory."""
    worker = concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("fork"), initializer=_adopt, initargs=(cluster,)
    )
    worker.submit(int).result()  # forked here, not from inside the run's event loop
    return worker


@dataclass(frozen=True, slots=True, kw_only=True)
class FocusPoster:
    """What the focused probes' posts take: the run and its session, the worker process that
    generates them, the faults (in force from ``fault_round``) and the posts' bounds."""

    run: Run
    session: aiohttp.ClientSession
    worker: concurrent.futures.Executor
    faults: Sequence[Fault]
    shift: int
    rounds: int
    fault_round: int
    flush_s: float
    max_lag_s: float

    async def post(
        self, r: int, focus: dict[str, list[ProbeTarget]], since: dict[str, float] | None = None
    ) -> tuple[asyncio.Task[None], int]:
        """Round ``r``'s focused probes of ``focus`` (``since``: learned mid-round), generated
        in the worker and posted at their times by the task returned; and how many."""
        active = [replace(f, start_s=0.0) for f in self.faults] if r >= self.fault_round else []
        loop = asyncio.get_running_loop()
        job = functools.partial(focused_batches, r, focus, active, self.flush_s, since)
        batches, n = await loop.run_in_executor(self.worker, job)
        self.run.focus_probes += n
        self.run.focus_agents |= focus.keys()
        sender = send(self.run, self.session, batches, self.shift, max_lag_s=self.max_lag_s)
        return asyncio.create_task(sender), n


async def send_focused(p: FocusPoster) -> None:
    """The focused probes the collector asked for, probed in the next round as agents
    do: shortly before each round starts, the focused entries the agents hold are
    generated for that round (the same network model and faults, :func:`simulate` with
    ``focus_only``, in the worker) and posted like the scheduled results."""
    run = p.run
    senders: list[asyncio.Task[None]] = []
    for r in range(1, p.rounds):
        delay = run.t0 + r * run.interval - FOCUS_LEAD_S - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        focus = dict(run.focus)
        if not focus or run.gave_up_at is not None:
            continue
        task, _ = await p.post(r, focus)
        run.focus_rounds += 1
        senders.append(task)
    if senders:
        await asyncio.gather(*senders)


async def send_caught_up(p: FocusPoster, stop: asyncio.Event) -> None:
    """The focused entries agents learned of mid-round (``run.catch_up``), generated for the
    rest of their round as soon as they are known and posted like the others."""
    run = p.run
    senders: list[asyncio.Task[None]] = []
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.catch_up_due.wait(), 0.5)
        run.catch_up_due.clear()
        pending, run.catch_up = run.catch_up, {}
        for r, agents in sorted(pending.items()):
            if r >= p.rounds:
                continue  # past the span, as the rounds' own focused probes
            focus = {a: entries for a, (entries, _) in agents.items()}
            since = {a: elapsed for a, (_, elapsed) in agents.items()}
            task, n = await p.post(r, focus, since)
            run.catch_up_probes += n
            senders.append(task)
    if senders:
        await asyncio.gather(*senders)


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=120)) as resp:
        body = await resp.read()
    return time.perf_counter() - start, body


async def read_findings(
    run: Run,
    session: aiohttp.ClientSession,
    want: dict[tuple[str, frozenset[str]], Fault],
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        took, body = await timed_get(session, run.url + "/api/v1/findings")
        run.findings.append(took)
        now = time.time() - run.t0
        for f in json.loads(body).get("findings", []):
            kind, nodes = f["kind"], frozenset(f["nodes"])
            hit = False
            for key in want:
                if key[0] == kind and key[1] <= nodes:
                    run.seen.setdefault(key, now)
                    hit = True
            if not hit:
                shown = (kind, tuple(sorted(nodes))[:4])
                run.extra.setdefault(shown, now)
                run.extra_evidence.setdefault(shown, f.get("evidence", ""))
                run.extra_reads[shown] = run.extra_reads.get(shown, 0) + 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, 1.0 - took))


async def read_every(
    run: Run, session: aiohttp.ClientSession, path: str, every: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        took, body = await timed_get(session, run.url + path)
        if path == "/metrics":
            run.scrape.append(took)
            text = body.decode()
            for line in text.splitlines():
                if line.startswith("prober_diagnosis_duration_seconds "):
                    run.passes.append(float(line.split()[1]))
                elif line.startswith("prober_diagnosis_cpu_seconds "):
                    run.pass_cpu.append(float(line.split()[1]))
            run.loop_lag = lag_buckets(text)
        else:
            run.matrix.append(took)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, every - took))


async def sample(run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        now = time.time() - run.t0
        run.rss.append((now, status_mib(run.pid, "VmRSS")))
        run.cpu.append((now, cpu_s(run.pid)))
        if run.state_file is not None:
            with contextlib.suppress(FileNotFoundError):
                run.state_bytes.append(run.state_file.stat().st_size)
        run.load.append(os.getloadavg()[0])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)


async def drive(
    run: Run,
    batches: Sequence[Batch],
    shift: int,
    faults: Sequence[Fault],
    *,
    span_s: float,
    drain_s: float,
    matrix: bool,
    max_lag_s: float,
    cluster: Cluster,
    worker: concurrent.futures.Executor | None,
    fault_round: int,
    flush_s: float,
) -> None:
    want = {(f.kind, expected(f)): f for f in faults}
    stop = asyncio.Event()
    driver_start = time.process_time()
    busy_start, family_start = machine_busy_s(), family_cpu_s()
    conn = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        readers = [
            asyncio.create_task(read_findings(run, session, want, stop)),
            asyncio.create_task(read_every(run, session, "/metrics", 15.0, stop)),
            asyncio.create_task(sample(run, stop)),
        ]
        if matrix:
            readers.append(asyncio.create_task(read_every(run, session, "/api/v1/matrix", 5.0, stop)))
        focused = None
        if worker is not None:
            agents = [a.name for a in cluster.inventory().agents]
            readers.append(asyncio.create_task(poll_pinglists(run, session, agents, stop)))
            poster = FocusPoster(run=run, session=session, worker=worker, faults=faults, shift=shift,
                                 rounds=round(span_s / run.interval), fault_round=fault_round,
                                 flush_s=flush_s, max_lag_s=max_lag_s)  # fmt: skip
            focused = asyncio.create_task(send_focused(poster))
            readers.append(asyncio.create_task(send_caught_up(poster, stop)))
        await send(run, session, batches, shift, max_lag_s=max_lag_s)
        if focused is not None:
            await focused
        # Let the last round's faults be named: wait until every fault is seen or drain_s passes.
        end = max(run.t0 + span_s, time.time()) + drain_s
        while time.time() < end and len(run.seen) < len(want):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        stop.set()
        await asyncio.gather(*readers, return_exceptions=True)
    run.driver_cpu_s = time.process_time() - driver_start
    run.others_cpu_s = max(0.0, (machine_busy_s() - busy_start) - (family_cpu_s() - family_start))


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def lag_buckets(text: str) -> list[tuple[float, float]]:
    """The cumulative buckets of ``prober_collector_event_loop_lag_seconds`` in a scrape."""
    prefix = 'prober_collector_event_loop_lag_seconds_bucket{le="'
    out = []
    for line in text.splitlines():
        if line.startswith(prefix):
            le, _, value = line[len(prefix) :].partition('"} ')
            out.append((float(le), float(value)))
    return sorted(out)


def lag_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The bucket bound under which a share ``q`` of the samples fell (an upper bound)."""
    total = buckets[-1][1] if buckets else 0.0
    return next((le for le, n in buckets if n >= q * total), math.nan) if total else math.nan


def report_lag(buckets: list[tuple[float, float]]) -> float:
    """Print the collector's event-loop lag from its histogram (its last scrape); its p99,
    an upper bound (NaN: no scrape had it)."""
    if not buckets:
        return math.nan
    total = buckets[-1][1]
    late = total - next((n for le, n in buckets if le >= 0.1), total)
    p50, p99 = lag_quantile(buckets, 0.5), lag_quantile(buckets, 0.99)
    print(f"  collector event-loop lag: p50 <= {p50:g} s, p99 <= {p99:g} s; of {total:,.0f} samples "
          f"(one each 0.25 s), {late:,.0f} more than 0.1 s late")  # fmt: skip
    return p99


def row(name: str, measured: str, goal_text: str, ok: bool | None) -> None:
    mark = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"  {name:<38} {measured:>24}   goal {goal_text:<14} {mark}")


def run_size(n_nodes: int, args: argparse.Namespace) -> dict[str, object]:
    policy = SchedulePolicy()
    if args.cluster_budget is not None:
        policy = replace(policy, cluster_budget_per_s=args.cluster_budget)
    cluster = Cluster(n_nodes=n_nodes, policy=policy)
    faults = faults_for(cluster, args.faults, fault_round=args.fault_round)
    interval = cluster.interval_s
    flush_s = args.flush_s if args.flush_s is not None else cluster.builder.mesh().report_interval_s
    print(
        f"\n== {n_nodes} nodes ({2 * n_nodes} agents), k={cluster.k} peers a round "
        f"({cluster.builder.budget_per_s:g} probes/s an agent, cluster budget "
        f"{policy.cluster_budget_per_s or 'none'}), {args.rounds} rounds of "
        f"{interval:g} s, faults from round {args.fault_round}: {', '.join(args.faults)}",
        flush=True,
    )
    g0 = time.perf_counter()
    # The posts depend on the code that makes them too (the schedule, the network model):
    # a change there must not replay posts made before it.
    sources = b"".join((ROOT / f).read_bytes() for f in GENERATOR_SOURCES)
    key = hashlib.blake2b(
        repr(
            (n_nodes, args.rounds, args.fault_round, faults, flush_s, args.chunk, CACHE_VERSION)
            + ((policy.cluster_budget_per_s,) if args.cluster_budget is not None else ())
        ).encode()
        + sources,
        digest_size=8,
    ).hexdigest()
    cached = Path(args.cache) / f"collector-scale-{n_nodes}-{key}.pickle" if args.cache else None
    if cached is not None and cached.exists():
        batches, n_records = pickle.loads(cached.read_bytes())
        print(f"  the agents' posts from {cached}", flush=True)
    else:
        batches, n_records = generate(
            cluster,
            rounds=args.rounds,
            faults=faults,
            fault_round=args.fault_round,
            flush_s=flush_s,
            chunk=args.chunk,
        )
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(pickle.dumps((batches, n_records)))
    span_s = args.rounds * interval
    posts_per_s = len(batches) / span_s
    n_coalesce = args.coalesce or max(1, math.ceil(posts_per_s / args.max_posts_per_s))
    batches = coalesce(batches, n_coalesce)
    print(
        f"  {posts_per_s:,.0f} agents' posts a second (each every {flush_s:g} s), "
        f"sent {n_coalesce} to a request "
        f"({len(batches) / span_s:,.0f} requests/s): the collector's per-request cost is "
        f"{'that of production' if n_coalesce == 1 else 'understated, its per-record cost is not'}",
        flush=True,
    )
    print(
        f"  {n_records:,} records ({n_records / span_s:,.0f}/s) in {len(batches):,} posts "
        f"({len(batches) / span_s:,.0f}/s), generated in {time.perf_counter() - g0:.0f} s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="prober-scale-") as tmp:
        inv = Path(tmp) / "inventory.json"
        inv.write_bytes(msgspec.json.encode(cluster.inventory()))
        port = free_port()
        log = Path(tmp) / "collector.log"
        with contextlib.suppress(PermissionError):  # back to our own priority for the next collector
            os.setpriority(os.PRIO_PROCESS, 0, BASE_NICE)
        state = Path(tmp) / "state"
        state.mkdir()
        with collector(inv, port, log, state_dir=state, cluster_budget=args.cluster_budget) as proc:
            url = f"http://127.0.0.1:{port}"
            wait_ready(proc, url, port, log)
            idle_rss = status_mib(proc.pid, "VmRSS")
            os.setpriority(os.PRIO_PROCESS, 0, BASE_NICE + args.nice)
            t0 = math.ceil((time.time() + 2.0) / interval) * interval
            shift = int(t0 - START_TS)
            run = Run(pid=proc.pid, url=url, t0=t0, interval=interval, state_file=state / STATE_FILE)
            worker = focus_worker(cluster) if not args.no_focus else None
            asyncio.run(
                drive(
                    run,
                    batches,
                    shift,
                    faults,
                    span_s=span_s,
                    drain_s=args.drain_s,
                    matrix=not args.no_matrix,
                    max_lag_s=args.max_lag_s,
                    cluster=cluster,
                    worker=worker,
                    fault_round=args.fault_round,
                    flush_s=flush_s,
                )
            )
            if worker is not None:
                worker.shutdown()
            peak = status_mib(proc.pid, "VmHWM")
            if proc.poll() is not None:
                sys.exit(f"the collector exited:\n{log.read_text()[-2000:]}")
    return report(
        n_nodes,
        run,
        faults,
        idle_rss=idle_rss,
        peak=peak,
        args=args,
        n_records=n_records,
        n_coalesce=n_coalesce,
        flush_s=flush_s,
    )


def focused_rounds(run: Run, faults: Sequence[Fault], onset: float) -> dict[str, float]:
    """Per fault with nodes: rounds from the onset until an agent of one of its nodes came
    to hold focused entries (the suspect loop's first half: probe, result, pass, question,
    the agent's fetch)."""
    asked: dict[str, float] = {}
    for f in faults:
        at = min((t for x in f.nodes for t in run.focused_at.get(x, ()) if t >= onset), default=None)
        if at is not None:
            asked[f.kind] = round((at - onset) / run.interval, 1)
    return asked


def report_validity(run: Run, *, lag: float, wall: float, flush_s: float) -> bool:
    """Whether the figures stand, said in a line: only if the agents' load arrived as
    scheduled (a sender more than one posting interval late for 1% of its posts, or one
    that gave up, delivered less) and nothing else took a share of the machine's CPUs the
    collector would have had."""
    on_time = run.gave_up_at is None and lag <= flush_s
    quiet = run.others_cpu_s / wall <= MAX_OTHERS_CORES
    print(
        "  VALID: the load arrived on schedule"
        if on_time
        else "  NOT VALID: the sender fell behind (the collector saw less than the production load); "
        "use --coalesce, a quieter machine, or fewer --nodes"
    )
    others = f"other processes took {run.others_cpu_s / wall:.2f} cores of the machine"
    print(
        f"  VALID: {others}, at most {MAX_OTHERS_CORES:g}"
        if quiet
        else f"  NOT VALID: {others}, more than {MAX_OTHERS_CORES:g}: every figure is distorted; run it "
        "again on a quiet machine"
    )
    return on_time and quiet


def report(
    n_nodes: int,
    run: Run,
    faults: Sequence[Fault],
    *,
    idle_rss: float,
    peak: float,
    args: argparse.Namespace,
    n_records: int,
    n_coalesce: int,
    flush_s: float,
) -> dict[str, object]:
    span_s = args.rounds * run.interval
    print(f"  collector RSS over time (MiB; idle with the inventory {idle_rss:.0f}):")
    line = [f"{t:4.0f}s {m:5.0f}" for t, m in run.rss if t >= 0][::5]
    for i in range(0, len(line), 8):
        print("    " + "  ".join(line[i : i + 8]))
    steady = [(t, c) for t, c in run.cpu if t >= min(span_s / 2, 60.0)]
    cpu_all = (run.cpu[-1][1] - run.cpu[0][1]) / max(1e-9, run.cpu[-1][0] - run.cpu[0][0])
    cpu_steady = math.nan
    if len(steady) > 1:
        cpu_steady = (steady[-1][1] - steady[0][1]) / max(1e-9, steady[-1][0] - steady[0][0])
    rss_end = run.rss[-1][1] if run.rss else math.nan
    lag = pct(run.lag, 0.99) if run.lag else 0.0
    print(
        f"  posts: {len(run.posts):,}, errors {run.post_errors} {run.error_reasons or ''}, "
        f"sender behind schedule p99 {lag:.2f} s "
        f"(a late sender understates the load)"
    )
    if run.polls:
        print(
            f"  pinglist fetches: {len(run.polls):,} "
            f"({len(run.polls) / max(1.0, run.last_poll - run.first_poll):,.0f}/s), "
            f"{run.announced:,} of them asked for by the answers' news, errors {run.poll_errors}, "
            f"p50 {pct(run.polls, 0.5):.3f} s, p99 {pct(run.polls, 0.99):.3f} s; focused probes sent: "
            f"{run.focus_probes:,} in {run.focus_rounds} rounds by {len(run.focus_agents)} agents, "
            f"{run.catch_up_probes:,} of them started mid-round as the agents learned of them"
        )
    wall = max(1e-9, run.cpu[-1][0] - run.cpu[0][0]) if run.cpu else math.nan
    print(
        f"  this process (simulated agents and readers): {run.driver_cpu_s:.0f} CPU-s, "
        f"{run.driver_cpu_s / wall:.2f} cores; machine load average {min(run.load, default=math.nan):.1f}"
        f"..{max(run.load, default=math.nan):.1f} on {os.cpu_count()} CPUs; other processes "
        f"{run.others_cpu_s / wall:.2f} cores"
    )
    state_mib = max(run.state_bytes, default=0) / 2**20
    print(
        f"  the windows' snapshot (--state-dir, as the manifests run it: every 30 s): largest "
        f"{state_mib:.0f} MiB, last {(run.state_bytes or [0])[-1] / 2**20:.0f} MiB "
        f"(the manifests' emptyDir holds {state_volume_mib()} MiB: the old one too while a new one "
        "is written)"
    )
    valid = report_validity(run, lag=lag, wall=wall, flush_s=flush_s)
    results: dict[str, object] = {
        "nodes": n_nodes,
        "coalesce": n_coalesce,
        "flush_s": flush_s,
        "rounds": args.rounds,
        "records_per_s": round(n_records / span_s),
        "posts_per_s": round(len(run.posts) / span_s),
        "rss_end_mib": round(rss_end),
        "rss_peak_mib": round(peak),
        "state_mib_max": round(state_mib, 1),
        "cpu_cores": round(cpu_all, 3),
        "cpu_cores_steady": round(cpu_steady, 3),
        "pass_s_max": max(run.passes, default=math.nan),
        "pass_s_median": pct(run.passes, 0.5),
        "pass_cpu_s_max": max(run.pass_cpu, default=math.nan),
        "pass_cpu_s_median": pct(run.pass_cpu, 0.5),
        "driver_cores": round(run.driver_cpu_s / wall, 3),
        "others_cores": round(run.others_cpu_s / wall, 3),
        "load_max": max(run.load, default=math.nan),
        "valid": valid,
        "findings_p99_s": pct(run.findings, 0.99),
        "matrix_p99_s": pct(run.matrix, 0.99),
        "post_p99_s": pct(run.posts, 0.99),
        "metrics_max_s": max(run.scrape, default=math.nan),
        "loop_lag_p99_s": report_lag(run.loop_lag),
        "pinglist_p99_s": pct(run.polls, 0.99) if run.polls else None,
        "focus_probes": run.focus_probes,
        "catch_up_probes": run.catch_up_probes,
    }

    def g(name: str) -> float:
        return goal(name, n_nodes)

    row(
        "collector RSS end / peak (MiB)",
        f"{rss_end:.0f} / {peak:.0f}",
        f"<= {g('rss_gib'):g} GiB",
        peak <= g("rss_gib") * 1024,
    )
    row(
        "collector CPU (cores): run / steady",
        f"{cpu_all:.3f} / {cpu_steady:.3f}",
        f"<= {g('cpu_cores'):g}",
        cpu_steady <= g("cpu_cores"),
    )
    row(
        "diagnosis pass, wall (s): median / max",
        f"{pct(run.passes, 0.5):.2f} / {max(run.passes, default=math.nan):.2f}",
        f"<= {g('pass_s'):g} s",
        max(run.passes, default=math.inf) <= g("pass_s"),
    )
    row(
        "diagnosis pass, CPU (s): median / max",
        f"{pct(run.pass_cpu, 0.5):.2f} / {max(run.pass_cpu, default=math.nan):.2f}",
        f"<= {g('pass_s'):g} s",
        max(run.pass_cpu, default=math.inf) <= g("pass_s"),
    )
    for name, values in (("GET /api/v1/findings", run.findings), ("GET /api/v1/matrix", run.matrix)):
        if values:
            row(
                f"{name} (s): p50 / p99 / n",
                f"{pct(values, 0.5):.3f} / {pct(values, 0.99):.3f} / {len(values)}",
                f"<= {g('api_p99_s'):g} s",
                pct(values, 0.99) <= g("api_p99_s"),
            )
    row(
        "POST /api/v1/results (s): p50 / p99",
        f"{pct(run.posts, 0.5):.3f} / {pct(run.posts, 0.99):.3f}",
        "-",
        None,
    )
    row(
        "GET /metrics (s): max",
        f"{max(run.scrape, default=math.nan):.2f}",
        f"<= {g('metrics_s'):g} s",
        max(run.scrape, default=math.inf) <= g("metrics_s"),
    )
    onset = args.fault_round * run.interval
    detect: dict[str, float | None] = {}
    for f in faults:
        key = (f.kind, expected(f))
        at = run.seen.get(key)
        rounds = None if at is None else (at - onset) / run.interval
        detect[f.kind] = None if rounds is None else round(rounds, 1)
        lim = g("fast_rounds") if f.kind in FAST else g("slow_rounds")
        where = ",".join(sorted(key[1])) or "cluster"
        shown = "not found" if rounds is None else f"{rounds:.1f} rounds"
        if rounds is None and run.gave_up_at is not None and run.gave_up_at <= onset:
            row(f"detect {f.kind} ({where[:40]})", "not sent", f"<= {lim:g} rounds", None)
            continue
        row(
            f"detect {f.kind} ({where[:40]})",
            shown,
            f"<= {lim:g} rounds",
            rounds is not None and rounds <= lim,
        )
    results["detect_rounds"] = detect
    asked = focused_rounds(run, faults, onset)
    if asked:
        print(
            "  a fault's node first held focused entries (rounds after onset): "
            + ", ".join(f"{k} {v:g}" for k, v in asked.items())
        )
    results["focused_rounds"] = asked
    print_extra(run)
    results["extra_findings"] = sorted({k for k, _ in run.extra})
    return results


def print_extra(run: Run) -> None:
    """The findings no fault explains, each with its evidence when first shown."""
    if not run.extra:
        return
    print(
        "  findings no fault explains (kind, first nodes, first seen s after start, "
        "reads that showed it; then its evidence when first shown):"
    )
    for key, at in sorted(run.extra.items(), key=lambda kv: kv[1]):
        kind, nodes = key
        print(f"    {kind:<22} {','.join(nodes)[:80]:<80} {at:6.0f} {run.extra_reads[key]:5d}")
        print(f"      {run.extra_evidence[key][:600]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1000], help="cluster sizes (default 1000)")
    ap.add_argument("--rounds", type=int, default=12, help="rounds of traffic (10 s each; default 12)")
    ap.add_argument("--fault-round", type=int, default=4, help="the round the faults begin (default 4)")
    ap.add_argument(
        "--faults",
        nargs="*",
        default=[k for k in KINDS if k not in ("zone-partition", "zone-degraded")],
        help="fault kinds to inject (default: every named kind but zone-partition and zone-degraded, "
        "widespread failures "
        "that would hide the others; bench/diagnose_widespread.py times such failures)",
    )
    ap.add_argument(
        "--flush-s",
        type=float,
        default=None,
        help="each agent posts this often (default: the mesh's report_interval_s, 2 s at 1,000 nodes, "
        "10 s at 5,000)",
    )
    ap.add_argument(
        "--drain-s",
        type=float,
        default=30.0,
        help="after the last post, wait this long at most for faults not yet named (default 30 s)",
    )
    ap.add_argument(
        "--max-lag-s", type=float, default=30.0, help="stop sending when this far behind (default 30)"
    )
    ap.add_argument("--chunk", type=int, default=3, help="rounds generated at once (memory)")
    ap.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "prober-bench"),
        help="keep the generated posts here and reuse them ('' for none)",
    )
    ap.add_argument(
        "--coalesce",
        type=int,
        default=0,
        help="send every N agents' posts as one request (default 0: as many as keep the requests within "
        "--max-posts-per-s; 1: each agent's post alone, as in production)",
    )
    ap.add_argument(
        "--max-posts-per-s",
        type=float,
        default=100.0,
        help="with --coalesce 0, the requests a second this process sends at most (default 100: what "
        "one Python sender keeps up with beside the collector on 2 shared cores)",
    )
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="this process's niceness once the collector runs (default 0). On a machine where only the "
        "benchmark runs, 10 lets the load generator yield the CPU to the collector; on a machine "
        "shared with other work it starves the generator instead",
    )
    ap.add_argument(
        "--cluster-budget",
        type=float,
        default=None,
        help="the collector's and the simulated agents' --cluster-budget (probes/s of the whole mesh; "
        "default: the schedule's, 5,000): what another budget costs the collector and gives detection",
    )
    ap.add_argument("--no-matrix", action="store_true", help="do not ask for the matrix every 5 s")
    ap.add_argument(
        "--no-focus",
        action="store_true",
        help="agents do not fetch their pinglists, so never probe what the collector focuses on "
        "(the schedule alone, as before the suspect loop)",
    )
    args = ap.parse_args()
    # Stopped by a signal: leave through the finally blocks, which stop the collector.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not 0 <= args.fault_round < args.rounds:
        ap.error("--fault-round must be within --rounds")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; real time, no time compression")
    out = [run_size(n, args) for n in args.nodes]
    for r in out:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
