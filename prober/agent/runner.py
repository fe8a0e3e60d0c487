"""The agent runtime: pinglist in, probes out on schedule, results delivered, clean exit.

Rounds follow :mod:`prober.schedule`: the round index is ``floor(wall clock /
interval)`` on every agent, the first round starts after a per-agent stagger (a
restarted DaemonSet must not stampede), and each probe is launched at its planned
offset within the round. Two limits hold whatever the plan says: the probe budget
(never more than ``budget_per_s`` probe launches in any one-second window) and the
concurrency (probes in flight). A probe that cannot start before its round ends is
not sent late into the next one: it is skipped and counted in
``prober_round_overruns_total``.

The pinglist comes from the collector (``GET /api/v1/pinglist/{agent}`` joined with
``GET /api/v1/mesh``, refreshed every interval with ``If-None-Match``, the mesh read a
peer group at a time as it arrives and, once held, fetched as a delta; the last one
stays in force while the collector is away) or from a local inventory file
(standalone).

Sweeps: the collector's pinglist answer may carry a sweep order
(:class:`~prober.pinglist.SweepOrder`); the agent runs one sweep at a time, its
launches spread over the order's ``spread_s`` and held to its own budget and
concurrency, and delivers the results to the collector. Nothing else can start one:
the agent serves no endpoint that does.

Shutdown (SIGTERM/SIGINT) runs in this order: ``/readyz`` turns 503, no new probes
start, a sweep in progress is cancelled, probes in flight get a grace period to
finish (then are cancelled), the result buffer gets a last delivery attempt, and
only then do the echo servers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import msgspec
from prometheus_client import CollectorRegistry

from prober import __version__
from prober.agent.budget import Budget
from prober.agent.compact import MeshLines, decode_mesh
from prober.agent.echo import EchoIdentity, EchoState, open_udp_echo, serve_http, serve_udp
from prober.agent.metrics import AgentMetrics
from prober.agent.probes import ProbeContext, probe_same_port, run_probe, start_probe
from prober.agent.reporter import Reporter, ReporterPolicy, backoff_delay
from prober.agent.settings import AgentSettings
from prober.credentials import TokenFile
from prober.inventory import Inventory, InventoryError
from prober.model import ProbeResult
from prober.pinglist import (
    MESH_DELTA_IM,
    MESH_VERSION_HEADER,
    SWEEP_DELIVERY_MARGIN_S,
    SWEEP_HEADER,
    AgentPinglist,
    DeltaMismatchError,
    Mesh,
    MeshDelta,
    Pinglist,
    ProbeTarget,
    SweepOrder,
    apply_delta,
    assemble,
    decode_announcement,
    decode_sweep_order,
)
from prober.records import encode_records
from prober.schedule import (
    PinglistBuilder,
    PlannedProbe,
    SchedulePolicy,
    focus_catch_up,
    launch_offsets,
    plan_round,
    round_index,
    round_start,
    stagger_s,
    sweep_plan,
)
from prober.settings import INTERVAL

log = logging.getLogger(__name__)

#: Sweep results per delivery request (about 0.5 MB of JSON lines).
SWEEP_BATCH = 2000
#: The largest pinglist or mesh an agent reads (a 5,000-node mesh is ~5 MB of JSON).
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024

#: How early a sleep may end and the probe still start (what a sleep could not make up).
_LAUNCH_SLACK_S: Final = 0.0005

#: Clock for round alignment and record timestamps (wall clock, seconds).
Clock = Callable[[], float]
#: Keeps a :class:`PinglistHolder` current until cancelled (collector or inventory file).
Feed = Callable[["PinglistHolder"], Coroutine[Any, Any, None]]


class PinglistHolder:
    """The pinglist in force, when it was last confirmed, and a signal on each change."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics
        self.current: Pinglist | None = None
        self.confirmed_at = math.nan  # monotonic
        self.changed = asyncio.Event()
        #: Called with each new pinglist as it comes into force (the agent's round loop
        #: starts newly focused probes at once: :meth:`AgentRuntime.focus_changed`).
        self.listeners: list[Callable[[Pinglist], None]] = []
        metrics.track_pinglist_age(self.age_s)

    def age_s(self) -> float:
        return time.monotonic() - self.confirmed_at

    def confirm(self) -> None:
        self.confirmed_at = time.monotonic()

    def set(self, pl: Pinglist) -> None:
        self.confirm()
        if self.current is not None and pl.version == self.current.version:
            return
        first = self.current is None
        self.current = pl
        self.metrics.set_pinglist(pl)
        log.info(
            "%s pinglist %s: %d peers (%d per round), %d local, %d shared groups, %d focused, every %gs",
            "got" if first else "new",
            pl.version,
            len(pl.peers),
            pl.peers_per_round,
            len(pl.local),
            len(pl.shared),
            len(pl.focus),
            pl.interval_s,
        )
        self.changed.set()
        for listener in self.listeners:
            listener(pl)

    async def wait(self) -> Pinglist:
        while self.current is None:
            self.changed.clear()
            await self.changed.wait()
        return self.current


#: Without news in the answers to its results, an agent still asks for its pinglist
#: every this many rounds (docs/contracts.md § Pinglist).
POLL_ROUNDS: Final = 6


class Announcements:
    """What the collector's answers to this agent's results say of its pinglist
    (:data:`~prober.pinglist.PINGLIST_HEADER`): the fetcher is woken when the version
    named is not the one in force, or a sweep named is one it has not been given. Until
    an answer has named this agent, the fetcher asks every round (a collector that does
    not announce)."""

    def __init__(self, agent: str, holder: PinglistHolder) -> None:
        self.agent, self.holder = agent, holder
        self.wake = asyncio.Event()
        self.heard_any = False
        self._sweeps: dict[str, None] = {}  # the last sweeps given, oldest first

    def heard(self, raw: str) -> None:
        entry = decode_announcement(raw).get(self.agent)
        if entry is None:
            return
        self.heard_any = True
        current = self.holder.current
        new_sweep = entry.sweep is not None and entry.sweep not in self._sweeps
        if current is None or current.version != entry.version or new_sweep:
            self.wake.set()

    def given(self, sweep_id: str) -> None:
        """A sweep order the fetcher passed on: no reason to wake for it again."""
        self._sweeps[sweep_id] = None
        while len(self._sweeps) > 16:
            del self._sweeps[next(iter(self._sweeps))]

    async def until_news(self, interval_s: float) -> None:
        """Wait for news, at most :data:`POLL_ROUNDS` rounds of ``interval_s`` (one round
        before any answer named this agent)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout((POLL_ROUNDS if self.heard_any else 1) * interval_s):
                await self.wake.wait()
        self.wake.clear()


_head_decoder = msgspec.json.Decoder(AgentPinglist)


class _Document:
    """One document fetched with ``If-None-Match``: its last body's ETag and value."""

    #: aiohttp inflates a gzip body as fast as it arrives; a reader that inflates it
    #: itself (:func:`_inflated`) holds a piece at a time.
    auto_decompress = True

    def __init__(self, url: str, decode: Callable[[bytes | bytearray], Any]) -> None:
        self.url = url
        self.decode = decode
        self.etag: str | None = None
        self.value: Any = None

    async def fetch(
        self, session: aiohttp.ClientSession, credential: TokenFile | None = None
    ) -> tuple[int, str | None, str | None]:
        """GET it (with ``credential``'s token); returns the status (200: a new value, 304:
        unchanged), the mesh version the collector announces with it and the sweep order
        it carries (the raw :data:`~prober.pinglist.SWEEP_HEADER`; None when it does not)."""
        headers = {"If-None-Match": self.etag} if self.etag and self.value is not None else {}
        if not self.auto_decompress:
            headers["Accept-Encoding"] = "gzip"  # the one encoding _inflated reads
        if credential is not None:
            headers.update(credential.header())
        async with session.get(
            self.url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=10),
            auto_decompress=self.auto_decompress,
        ) as resp:
            if resp.status == 200:
                self.value = await self.read(resp)
                self.etag = resp.headers.get("ETag")
            else:
                await resp.read()
            return resp.status, resp.headers.get(MESH_VERSION_HEADER), resp.headers.get(SWEEP_HEADER)

    async def read(self, resp: aiohttp.ClientResponse) -> Any:
        """The value in a 200 answer's body."""
        return self.decode(await _read_body(resp))


_delta_decoder = msgspec.json.Decoder(MeshDelta)


class _MeshDocument(_Document):
    """The mesh: fetched as a delta from the one held when the collector has it (RFC 3229:
    ``A-IM``, answered ``226 IM Used``), so a node joining costs each agent a few hundred
    bytes and no second copy of the mesh. A delta that does not give the version it
    promises is dropped for the whole mesh (logged)."""

    auto_decompress = False

    def __init__(self, url: str) -> None:
        super().__init__(url, decode_mesh)

    async def read(self, resp: aiohttp.ClientResponse) -> Mesh:
        """The mesh, decoded a peer group at a time as it arrives (:class:`MeshLines`)."""
        lines = MeshLines()
        async for piece in _inflated(resp):
            lines.feed(piece)
        return lines.finish()

    async def fetch(
        self, session: aiohttp.ClientSession, credential: TokenFile | None = None
    ) -> tuple[int, str | None, str | None]:
        held: Mesh | None = self.value
        if held is None:
            return await super().fetch(session, credential)
        headers = {"If-None-Match": f'"{held.version}"', "A-IM": MESH_DELTA_IM, "Accept-Encoding": "gzip"}
        if credential is not None:
            headers.update(credential.header())
        async with session.get(
            self.url, headers=headers, timeout=aiohttp.ClientTimeout(total=10), auto_decompress=False
        ) as resp:
            if resp.status != 226:
                if resp.status == 200:
                    self.value = await self.read(resp)
                    self.etag = resp.headers.get("ETag")
                else:
                    await resp.read()
                return resp.status, resp.headers.get(MESH_VERSION_HEADER), None
            delta = _delta_decoder.decode(b"".join([piece async for piece in _inflated(resp)]))
            etag = resp.headers.get("ETag")
        try:
            self.value = apply_delta(held, delta)
        except DeltaMismatchError as exc:
            log.warning("mesh delta unusable (%s); fetching the whole mesh", exc)
            self.value = None
            try:
                return await super().fetch(session, credential)
            finally:
                if self.value is None:  # the whole mesh did not come: keep the one held
                    self.value = held
        self.etag = etag
        return 200, None, None


#: The most bytes :func:`_inflated` hands on at once.
_PIECE_BYTES = 65536


async def _inflated(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body of a response read with ``auto_decompress=False``, inflated here a piece
    (at most :data:`_PIECE_BYTES`) at a time as the reader takes them.

    aiohttp inflates a gzip body into its buffer as fast as the compressed bytes come:
    on loopback, or from a fast collector, the whole ~5 MB mesh at once beside the one
    being decoded. Raises ``aiohttp.ClientPayloadError`` for a body over
    :data:`MAX_DOCUMENT_BYTES`, a broken or cut gzip stream, or another encoding.
    """
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise aiohttp.ClientPayloadError(f"{resp.url.path}: Content-Encoding {encoding!r} not understood")
    z = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
    size = 0
    async for raw in resp.content.iter_any():
        data = bytes(raw)
        while data:
            if z is None:
                piece, data = data, b""
            else:
                try:
                    piece = z.decompress(data, _PIECE_BYTES)
                except zlib.error as exc:
                    raise aiohttp.ClientPayloadError(f"{resp.url.path}: bad gzip body: {exc}") from None
                data = z.unconsumed_tail
            size += len(piece)
            if size > MAX_DOCUMENT_BYTES:
                raise aiohttp.ClientPayloadError(f"{resp.url.path}: more than {MAX_DOCUMENT_BYTES} bytes")
            if piece:
                yield piece
    if z is not None:
        if rest := z.flush():
            yield rest
        if not z.eof:
            raise aiohttp.ClientPayloadError(f"{resp.url.path}: the gzip body was cut short")


async def _read_body(resp: aiohttp.ClientResponse) -> bytearray:
    """The (decompressed) body, appended to one buffer as it arrives.

    ``resp.read()`` keeps every chunk until the end and then joins them: twice a 5 MB
    mesh at once, which would be the agent's memory high-water mark.
    """
    body = bytearray()
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > MAX_DOCUMENT_BYTES:
            raise aiohttp.ClientPayloadError(f"{resp.url.path}: more than {MAX_DOCUMENT_BYTES} bytes")
    return body


def collector_tls(url: str) -> ssl.SSLContext | bool:
    """The TLS client context for an https:// collector: the system's CAs, verified.

    Made here, not taken from aiohttp's defaults: the agent loads aiohttp without them
    (``prober.commands.agent``). Reads the CA bundle from disk.
    """
    if urlsplit(url).scheme != "https":
        return True  # plain HTTP: no TLS, aiohttp's default stands
    context = ssl.create_default_context()
    context.set_alpn_protocols(("http/1.1",))
    return context


async def follow_collector(
    holder: PinglistHolder,
    session: aiohttp.ClientSession,
    *,
    collector: str,
    agent: str,
    rng: random.Random,
    initial_interval_s: float = INTERVAL.default,
    credential: TokenFile | None = None,
    on_sweep: Callable[[SweepOrder], None] | None = None,
    announcements: Announcements | None = None,
) -> None:
    """Fetch the pinglist until cancelled; keep the last one through outages.

    When: at once when ``announcements`` (what the answers to this agent's results say)
    has news, and every :data:`POLL_ROUNDS` rounds without once the collector has
    announced; every round before that, and without ``announcements``.

    Two documents, each with ``If-None-Match``: the agent's own part
    (``/api/v1/pinglist/{agent}``) and the mesh every agent shares (``/api/v1/mesh``),
    the latter only when the pinglist's answer announces a mesh version other than the
    one held, and then as a delta from it where the collector has one; the pinglist in
    force is the two joined. ``credential``: the token presented
    to the collector (re-read when its file changes).

    A sweep order in the pinglist's answer (the :data:`~prober.pinglist.SWEEP_HEADER`)
    goes to ``on_sweep`` once the pinglist it applies to is in force: this fetch is the
    only way a sweep reaches an agent.
    """
    head = _Document(f"{collector}/api/v1/pinglist/{agent}", _head_decoder.decode)
    mesh = _MeshDocument(f"{collector}/api/v1/mesh")
    failures = 0
    said_404 = False
    while True:
        interval = holder.current.interval_s if holder.current else initial_interval_s
        problem: str | None = None
        try:
            status, mesh_now, sweep_raw = await head.fetch(session, credential)
            if status == 404:
                if not said_404:
                    log.warning(
                        "collector does not know agent %r yet (404); "
                        "waiting for it to appear in the inventory",
                        agent,
                    )
                    said_404 = True
                problem = "404"
            elif status not in (200, 304):
                problem = f"HTTP {status} for the pinglist"
            else:
                # Only when the collector announces a mesh other than ours (or says nothing).
                stale = mesh.value is None or mesh_now is None or mesh_now != mesh.etag
                mesh_status = (await mesh.fetch(session, credential))[0] if stale else 304
                if mesh_status not in (200, 304):
                    problem = f"HTTP {mesh_status} for the mesh"
                elif status == 304 and mesh_status == 304:
                    holder.confirm()
                else:
                    holder.set(assemble(head.value, mesh.value))
                if problem is None and on_sweep is not None and holder.current is not None:
                    order = decode_sweep_order(sweep_raw) if sweep_raw else None
                    if order is not None:
                        on_sweep(order)
                    elif sweep_raw:
                        log.warning("ignoring an unusable sweep order from the collector: %.200s", sweep_raw)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            problem = f"unusable pinglist: {exc}"
        if problem is None:
            if failures:
                log.info("collector reachable again")
            failures, said_404 = 0, False
            # The interval of the pinglist just fetched (the first one's, not the default).
            interval = holder.current.interval_s if holder.current else interval
            await (asyncio.sleep(interval) if announcements is None else announcements.until_news(interval))
            continue
        if failures == 0 and problem != "404":
            kept = "keeping the last pinglist" if holder.current else "no pinglist yet"
            log.warning("pinglist fetch failed (%s); %s, retrying", problem, kept)
        failures += 1
        policy = ReporterPolicy(backoff_initial_s=1.0, backoff_max_s=interval)
        await asyncio.sleep(max(0.2, backoff_delay(failures, policy, rng)))


async def follow_inventory(
    holder: PinglistHolder, path: Path, policy: SchedulePolicy, agent: str, *, first: Inventory | None = None
) -> None:
    """Standalone: rebuild the pinglist whenever the inventory file changes."""
    # Here, not at the top: only a standalone agent reads YAML (an agent with a
    # collector never loads the parser: memory on every node).
    from prober.inventory.static import StaticInventory  # noqa: PLC0415

    if first is not None:
        _set_from_inventory(holder, first, policy, agent)
    async for inv in StaticInventory(path).updates():
        _set_from_inventory(holder, inv, policy, agent)


def _set_from_inventory(holder: PinglistHolder, inv: Inventory, policy: SchedulePolicy, agent: str) -> None:
    pl = PinglistBuilder(inv, policy).for_agent(agent)
    if pl is None:
        log.warning("agent %r is not in the inventory any more; keeping the last pinglist", agent)
        return
    holder.set(pl)


def pinglist_from_inventory(inv: Inventory, policy: SchedulePolicy, agent: str) -> Pinglist:
    """The standalone pinglist; ``InventoryError`` if the inventory has no such agent."""
    pl = PinglistBuilder(inv, policy).for_agent(agent)
    if pl is None:
        known = ", ".join(a.name for a in inv.agents) or "none"
        raise InventoryError(f"agent {agent!r} is not in the inventory (agents there: {known})")
    return pl


@dataclass(slots=True, kw_only=True)
class _RoundInForce:
    """The round an agent is probing, and the focused entries its probes hold so far."""

    index: int
    start: float
    interval_s: float
    focus: list[ProbeTarget]


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeOptions:
    """Knobs of the runtime itself (not user flags): test seams and shutdown budgets."""

    clock: Clock = time.time
    #: Extra time for probes in flight at shutdown, on top of the pinglist's timeout.
    grace_extra_s: float = 1.0
    #: Last delivery attempt for buffered results at shutdown.
    flush_deadline_s: float = 5.0
    reporter: ReporterPolicy = field(default_factory=ReporterPolicy)


class AgentRuntime:
    """One agent: echo servers, pinglist feed, round loop, reporter. Run with :meth:`run`."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        registry: CollectorRegistry,
        rng: random.Random | None = None,
        options: RuntimeOptions | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.rng = rng or random.Random()
        self.options = options or RuntimeOptions()
        self.clock = self.options.clock
        self.metrics = AgentMetrics(
            registry=registry,
            node=settings.node,
            kind=settings.network.value,
            version=__version__,
            per_target=settings.per_target_metrics,
        )
        self.identity = EchoIdentity(node=settings.node, kind=settings.network, agent=settings.name)
        self.holder = PinglistHolder(self.metrics)
        self.announcements = Announcements(settings.name, self.holder)
        self.echo_state = EchoState(identity=self.identity, registry=registry, metrics=self.metrics)
        self.reporter: Reporter | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        #: Lone probes started without a task (:func:`start_probe`), by number: what cancels each.
        self._started: dict[int, Callable[[], None] | None] = {}
        self._started_count = 0
        #: Set when the last of them ends, while shutting down.
        self._landed_all: asyncio.Event | None = None
        self._budget: Budget | None = None
        self._budget_rate = 0.0
        self._sem: asyncio.Semaphore | None = None
        self._sem_size = 0
        #: Bound addresses once serving: ("http", port), ("udp", port); for tests and logs.
        self.http_port: int | None = None
        self.udp_port: int | None = None
        self.serving = asyncio.Event()
        self._services: asyncio.TaskGroup | None = None
        self._session: aiohttp.ClientSession | None = None
        #: The token presented to the collector (sweep deliveries too), if any.
        self._credential: TokenFile | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._sweeps_seen: dict[str, None] = {}
        #: The round in progress: its index, start, interval and the focus its plan holds.
        self._round: _RoundInForce | None = None
        self._probes: asyncio.TaskGroup | None = None
        #: Focused probes started mid-round (:meth:`focus_changed`), cancelled at shutdown.
        self._catch_ups: set[asyncio.Task[None]] = set()
        self.holder.listeners.append(self.focus_changed)

    # --- probing -------------------------------------------------------------------

    def _context(self, pl: Pinglist, timeout_s: float | None = None) -> ProbeContext:
        return ProbeContext(
            src_node=self.settings.node,
            src_kind=self.settings.network,
            source_ip=self.settings.source_ip,
            timeout_s=timeout_s or pl.timeout_s,
            user_agent=f"prober/{__version__}",
            large_probe_bytes=pl.large_probe_bytes,
        )

    async def _probe(self, planned: PlannedProbe, ctx: ProbeContext, ts: float) -> list[ProbeResult]:
        targets = planned.targets
        if len(targets) == 1:
            return [await run_probe(targets[0], ctx, ts=ts)]
        if planned.same_source_port:
            return await probe_same_port(targets, ctx, ts=ts)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(run_probe(t, ctx, ts=ts)) for t in targets]
        return [t.result() for t in tasks]

    async def _launched(
        self, planned: PlannedProbe, ctx: ProbeContext, ts: float, sem: asyncio.Semaphore
    ) -> None:
        try:
            results = await self._probe(planned, ctx, ts)
        finally:
            for _ in planned.targets:
                sem.release()
        observe = self.metrics.observe
        for r in results:
            observe(r)
        if self.reporter is not None:
            self.reporter.add(results)

    @property
    def in_flight(self) -> int:
        """Probes started and not ended (with or without a task of their own)."""
        return len(self._inflight) + len(self._started)

    def _start(self, planned: PlannedProbe, ctx: ProbeContext, ts: float, sem: asyncio.Semaphore) -> bool:
        """Start a lone probe of an address on the loop's callbacks, without a task (the
        round loop's common case: at 12.5 probes/s a task per probe was ~12% of the
        agent's CPU); False when it needs one (a group, a name to resolve)."""
        if len(planned.targets) != 1:
            return False
        number = self._started_count = self._started_count + 1
        self._started[number] = None  # before it starts: it may end at once
        done = functools.partial(self._landed, sem, number)
        cancel = start_probe(planned.targets[0], ctx, ts=ts, done=done)
        if cancel is None:
            del self._started[number]
            return False
        if number in self._started:
            self._started[number] = cancel
        return True

    def _landed(self, sem: asyncio.Semaphore, number: int, result: ProbeResult) -> None:
        """A probe started by :meth:`_start` ended: as :meth:`_launched` after its probe."""
        del self._started[number]
        if not self._started and self._landed_all is not None:
            self._landed_all.set()
        sem.release()
        self.metrics.observe(result)
        if self.reporter is not None:
            self.reporter.add([result])

    def _limits(self, pl: Pinglist) -> tuple[Budget, asyncio.Semaphore]:
        if self._budget is None or self._budget_rate != pl.budget_per_s:
            self._budget, self._budget_rate = Budget(pl.budget_per_s), pl.budget_per_s
        if self._sem is None or self._sem_size != pl.concurrency:
            # In-flight probes release the semaphore they took; a new size takes effect for new ones.
            self._sem, self._sem_size = asyncio.Semaphore(pl.concurrency), pl.concurrency
        return self._budget, self._sem

    async def _admit(self, n: int, end: float, budget: Budget, sem: asyncio.Semaphore) -> bool:
        """Wait for budget and concurrency for ``n`` probes until wall-clock ``end``."""
        loop = asyncio.get_running_loop()
        while (wait := budget.delay(loop.time(), n)) > 0:
            if self.clock() + wait >= end:
                return False
            await asyncio.sleep(wait)
        taken = 0
        while taken < n and not sem.locked():  # the common case: free slots, no waiting
            await sem.acquire()
            taken += 1
        if taken < n:
            try:
                async with asyncio.timeout(max(0.0, end - self.clock())):
                    while taken < n:
                        await sem.acquire()
                        taken += 1
            except TimeoutError:
                for _ in range(taken):
                    sem.release()
                return False
        budget.take(loop.time(), n)
        return True

    async def _run_round(self, tg: asyncio.TaskGroup, pl: Pinglist, index: int, *, joined_at: float) -> None:
        start = round_start(index, pl.interval_s)
        self._round = _RoundInForce(index=index, start=start, interval_s=pl.interval_s, focus=list(pl.focus))
        await self._run_plan(tg, pl, plan_round(pl, index, self.rng), start, joined_at=joined_at)

    async def _run_plan(
        self, tg: asyncio.TaskGroup, pl: Pinglist, plan: list[PlannedProbe], start: float, *, joined_at: float
    ) -> None:
        """Launch ``plan`` (offsets from ``start``) within the round that begins at ``start``;
        what cannot start before it ends is counted as overruns."""
        end = start + pl.interval_s
        ctx = self._context(pl)
        budget, sem = self._limits(pl)
        # One wake-up for the probes due close together (LAUNCH_AHEAD_S).
        launch = launch_offsets([p.offset_s for p in plan])
        for i, planned in enumerate(plan):
            if start + planned.offset_s < joined_at:
                continue  # this agent started mid-round: the probes before now are not owed
            delay = start + launch[i] - self.clock()
            if delay > _LAUNCH_SLACK_S:
                await asyncio.sleep(delay)
            if not await self._admit(len(planned.targets), end, budget, sem):
                skipped = sum(len(p.targets) for p in plan[i:] if start + p.offset_s >= joined_at)
                self.metrics.overruns.inc(skipped)
                log.debug("round starting %.1f: %d probes could not start before it ended", start, skipped)
                return
            ts = self.clock()
            if self._start(planned, ctx, ts, sem):
                continue
            task = tg.create_task(self._launched(planned, ctx, ts, sem))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def focus_changed(self, pl: Pinglist) -> None:
        """A new pinglist came into force: the focused entries it adds start in the round in
        progress, within a second (:func:`~prober.schedule.focus_catch_up`),
        rather than a round later. A question is asked because one probe failed; the
        sooner its answer, the sooner diagnosis decides (docs/contracts.md § Pinglist)."""
        r, tg = self._round, self._probes
        if r is None or tg is None or self.echo_state.draining or pl.interval_s != r.interval_s:
            return
        elapsed = self.clock() - r.start
        if not 0.0 <= elapsed < r.interval_s:
            return
        plan = focus_catch_up(r.focus, pl, elapsed_s=elapsed, rng=self.rng)
        r.focus = list(pl.focus)
        if not plan:
            return
        log.debug("round %d: %d newly focused probes start now", r.index, len(plan))
        task = tg.create_task(self._run_plan(tg, pl, plan, r.start, joined_at=-math.inf))
        self._catch_ups.add(task)
        task.add_done_callback(self._catch_ups.discard)

    async def rounds(self, tg: asyncio.TaskGroup) -> None:
        """The round loop: runs until cancelled; probe tasks go into ``tg``."""
        self._probes = tg
        pl = await self.holder.wait()
        await asyncio.sleep(stagger_s(self.settings.name, pl.interval_s))
        joined_at = self.clock()
        last: int | None = None
        while True:
            pl = self.holder.current or pl
            index = round_index(self.clock(), pl.interval_s)
            if last is not None and index <= last:
                index = last + 1
            await self._run_round(tg, pl, index, joined_at=joined_at)
            last = index
            rest = round_start(index, pl.interval_s) + pl.interval_s - self.clock()
            if rest > 0:
                await asyncio.sleep(rest)

    def _sweep_ordered(self, order: SweepOrder) -> None:
        self.announcements.given(order.id)  # the answers to results name it until it is done
        self.offer_sweep(order)

    def offer_sweep(self, order: SweepOrder) -> None:
        """A sweep order from the collector: start it unless one is running or it was done.

        One sweep at a time; an order seen before (the collector repeats it on every
        fetch until the results are in) is not run again.
        """
        if order.id in self._sweeps_seen or self._services is None or self._session is None:
            return
        if self._sweep_task is not None and not self._sweep_task.done():
            return
        if self.echo_state.draining:
            return
        self._sweeps_seen[order.id] = None
        while len(self._sweeps_seen) > 16:
            del self._sweeps_seen[next(iter(self._sweeps_seen))]
        self._sweep_task = self._services.create_task(self._sweep_and_deliver(order, self._session))

    async def sweep_results(self, pl: Pinglist, order: SweepOrder) -> list[ProbeResult]:
        """Probe what ``order`` says, launches spread over its ``spread_s`` and held to the
        pinglist's budget and concurrency; stop launching where the delivery margin begins.

        The results go to the sweep only, not to the reporter or the probe counters.
        """
        ctx = self._context(pl, order.timeout_s)
        plan = sweep_plan(pl, order)
        budget, sem = Budget(pl.budget_per_s), asyncio.Semaphore(pl.concurrency)
        start = self.clock()
        # Learnt late (one fetch into the sweep): squeeze the plan into what is left.
        cutoff = order.until - order.timeout_s - SWEEP_DELIVERY_MARGIN_S
        scale = min(1.0, max(0.0, cutoff - start) / order.spread_s) if order.spread_s > 0 else 1.0
        results: list[ProbeResult] = []
        skipped = 0

        async def one(planned: PlannedProbe) -> None:
            try:
                results.extend(await self._probe(planned, ctx, self.clock()))
            finally:
                for _ in planned.targets:
                    sem.release()

        async with asyncio.TaskGroup() as tg:
            for i, planned in enumerate(plan):
                delay = start + planned.offset_s * scale - self.clock()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
                if not await self._admit(len(planned.targets), cutoff, budget, sem):
                    skipped = sum(len(p.targets) for p in plan[i:])
                    break
                tg.create_task(one(planned))
        if skipped:
            log.warning("sweep %s: %d probes did not fit before its deadline", order.id, skipped)
        return results

    async def _sweep_and_deliver(self, order: SweepOrder, session: aiohttp.ClientSession) -> None:
        try:
            await self._deliver_sweep(order, session)
        except Exception:  # a sweep must never take the agent down
            log.exception("sweep %s failed", order.id)

    async def _deliver_sweep(self, order: SweepOrder, session: aiohttp.ClientSession) -> None:
        pl = self.holder.current
        if pl is None:
            return
        log.info("sweep %s: probing %d rounds' peers over %gs", order.id, order.rounds, order.spread_s)
        results = await self.sweep_results(pl, order)
        url = f"{self.settings.collector}/api/v1/sweeps/{order.id}/results/{self.settings.name}"
        batches = [results[i : i + SWEEP_BATCH] for i in range(0, len(results), SWEEP_BATCH)] or [[]]
        for n, batch in enumerate(batches, 1):
            left = max(1.0, order.until - self.clock())
            params = {"done": "1"} if n == len(batches) else {}
            try:
                async with session.post(
                    url,
                    data=encode_records(batch),
                    params=params,
                    headers=self._credential.header() if self._credential is not None else {},
                    timeout=aiohttp.ClientTimeout(total=left),
                ) as resp:
                    if resp.status != 200:
                        text = (await resp.content.read(300)).decode("utf-8", "replace")
                        log.warning(
                            "sweep %s: the collector refused the results: %d %s", order.id, resp.status, text
                        )
                        return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("sweep %s: could not deliver the results: %s", order.id, exc)
                return
        log.info("sweep %s: delivered %d results", order.id, len(results))

    # --- lifecycle -----------------------------------------------------------------

    async def _drain(self, grace_s: float) -> None:
        pending = set(self._inflight)
        if not pending and not self._started:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        in_flight = len(pending) + len(self._started)
        log.info("shutdown: waiting up to %.1fs for %d probes in flight", grace_s, in_flight)
        _, late = await asyncio.wait(pending, timeout=grace_s) if pending else (set(), set())
        if self._started:  # their ends are callbacks: no task to wait on
            landed = self._landed_all = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await landed.wait()
        for task in late:
            task.cancel()
        stopped = [cancel for cancel in self._started.values() if cancel is not None]
        for cancel in stopped:
            cancel()
        self._started.clear()
        if late or stopped:
            log.info("shutdown: cancelled %d probes still in flight", len(late) + len(stopped))

    async def run(self, stop: asyncio.Event, *, feed: Feed | None = None) -> None:
        """Serve, probe and report until ``stop`` is set; then shut down in order."""
        s = self.settings
        async with contextlib.AsyncExitStack() as stack:
            session: aiohttp.ClientSession | None = None
            credential = self._credential = TokenFile(s.token_file) if s.token_file else None
            if s.collector:
                tls = collector_tls(s.collector)  # before anything is served: blocking is harmless
                session = await stack.enter_async_context(
                    aiohttp.ClientSession(
                        headers={"User-Agent": f"prober-agent/{__version__}"},
                        connector=aiohttp.TCPConnector(ssl=tls),
                    )
                )
            self.reporter = Reporter(
                collector_url=s.collector,
                session=session,
                metrics=self.metrics,
                policy=self.options.reporter,
                results_file=s.results_file,
                rng=self.rng,
                credential=credential,
                on_answer=self.announcements.heard,
            )
            # Post as often as the pinglist in force says (a large mesh, less often).
            self.holder.listeners.append(self.reporter.follow)
            stack.callback(self.holder.listeners.remove, self.reporter.follow)
            if self.holder.current is not None:
                self.reporter.follow(self.holder.current)
            runner = await stack.enter_async_context(serve_http(self.echo_state, s.listen, s.http_port))
            self.http_port = int(runner.addresses[0][1])
            udp = await open_udp_echo(s.listen, s.udp_port)
            self.udp_port = int(udp.sockname[1])
            log.info(
                "agent %s (%s network on %s): echo on %s tcp/%d udp/%d",
                s.name, s.network.value, s.node, s.listen, self.http_port, self.udp_port,
            )  # fmt: skip
            async with asyncio.TaskGroup() as services:
                self._services, self._session = services, session
                background = [
                    services.create_task(serve_udp(udp, self.identity, self.metrics)),
                    services.create_task(self.reporter.run()),
                ]
                if feed is not None:
                    background.append(services.create_task(feed(self.holder)))
                elif session is not None and s.collector:
                    background.append(
                        services.create_task(
                            follow_collector(
                                self.holder,
                                session,
                                collector=s.collector,
                                agent=s.name,
                                rng=self.rng,
                                credential=credential,
                                on_sweep=self._sweep_ordered,
                                announcements=self.announcements,
                            )
                        )
                    )
                self.serving.set()
                async with asyncio.TaskGroup() as probes:
                    rounds = probes.create_task(self.rounds(probes))
                    await stop.wait()
                    log.info("shutdown: not ready any more; stopping new probes")
                    self.echo_state.draining = True
                    rounds.cancel()
                    for task in list(self._catch_ups):
                        task.cancel()
                    if self._sweep_task is not None and not self._sweep_task.done():
                        log.info("shutdown: cancelling the sweep in progress")
                        self._sweep_task.cancel()
                    pl = self.holder.current
                    await self._drain((pl.timeout_s if pl else 0.0) + self.options.grace_extra_s)
                await self.reporter.close(deadline_s=self.options.flush_deadline_s)
                for task in background:
                    task.cancel()
                self._services = self._session = None
        log.info("shutdown: done")
