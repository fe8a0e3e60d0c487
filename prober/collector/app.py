"""The collector service: pinglists out, results in, matrix and findings served, sweeps run.

:class:`Collector` holds the state (the last good inventory, the pinglist builder, the
windowed store, cached findings per window, sweeps) and its aiohttp application
implements the API in docs/architecture.md § Collector HTTP API. Where the inventory
comes from is injected (an :class:`~prober.inventory.InventorySource`), and so is
how pinglists are built from it (a factory), so the same service runs on a static
file, on the Kubernetes API, in the lab and in tests.

Rules it keeps: a bad request is answered with a JSON error and never takes the
collector down; one bad result line never costs the good ones; findings are computed
at most once per window per ``refresh_s``, not per request, and off the event loop
where the work is pure (diagnosis, the matrix); agents that fail a sweep are listed,
never waited on past their deadline.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Final, Protocol

import aiohttp
import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from prober.collector.batch import decode_batch
from prober.collector.matrix_metrics import MatrixMetrics
from prober.collector.metrics import CollectorMetrics
from prober.collector.settings import CollectorSettings
from prober.collector.store import Store, StoreSettings
from prober.collector.sweep import AgentAnswer, Sweep, SweepStatus, new_sweep_id
from prober.collector.web import add_routes as add_web_routes
from prober.diagnose import DiagnosisPolicy
from prober.inventory import Inventory, InventoryError, InventorySource
from prober.model import Finding, Matrix, Report
from prober.pinglist import Pinglist
from prober.records import Rejected, encode_records
from prober.report import Window, findings_for, matrix_for, report_from_records
from prober.stats import PairTable, Topology

log = logging.getLogger(__name__)

JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"
#: Windows whose findings are cached at once (each costs a table).
MAX_CACHED_WINDOWS: Final = 4
#: Pause before a failed inventory source is asked again.
SOURCE_RETRY_S: Final = 5.0
#: Encoded pinglists kept (a pinglist is O(nodes) bytes, so not one per agent).
PINGLIST_CACHE: Final = 64


class PinglistSource(Protocol):
    """What the collector needs from a pinglist builder (``prober.schedule.PinglistBuilder``)."""

    def version_of(self, agent_name: str) -> str | None:
        """The version (ETag) of the agent's pinglist, cheaply; None for an unknown agent."""
        ...

    def for_agent(self, agent_name: str) -> Pinglist | None: ...


PinglistFactory = Callable[[Inventory], PinglistSource]


class IngestReply(msgspec.Struct, frozen=True, kw_only=True):
    accepted: int
    rejected: int
    errors: list[Rejected]


class FindingsReply(msgspec.Struct, frozen=True, kw_only=True):
    findings: list[Finding]


class SweepRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /api/v1/sweeps`` (optional): the agents' probe timeout, the wait per agent."""

    timeout_s: float | None = None
    deadline_s: float | None = None


class SweepStarted(msgspec.Struct, frozen=True, kw_only=True):
    id: str


class NoAgentsError(Exception):
    """A sweep was asked for while the inventory has no ready agent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Computed:
    """A window's table and findings at one moment; the matrix is built on first request."""

    at: float
    table: PairTable
    nodes: tuple[str, ...]
    findings: list[Finding]
    matrix: Matrix | None = None


class Collector:
    def __init__(
        self,
        settings: CollectorSettings,
        *,
        pinglists: PinglistFactory,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        diagnosis: DiagnosisPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = CollectorMetrics(self.registry)
        self.matrix_metrics = MatrixMetrics(registry=self.registry)
        self.store = Store(StoreSettings(bucket_s=settings.bucket_s, retention_s=settings.retention_s))
        self.inventory: Inventory | None = None
        self._clock = clock
        self._policy = diagnosis
        self._pinglist_factory = pinglists
        self._builder: PinglistSource | None = None
        self._pinglists: OrderedDict[str, bytes] = OrderedDict()
        self._topology = Topology()
        self._windows: dict[float, _Computed] = {}
        self._window_locks: dict[float, asyncio.Lock] = {}
        self._sweeps: dict[str, Sweep] = {}
        self._running_sweep: Sweep | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._updates: AsyncIterator[Inventory] | None = None

    # -- inventory --------------------------------------------------------------------------

    def apply_inventory(self, inv: Inventory) -> bool:
        """Switch to a new inventory; an inventory the pinglist builder refuses is ignored."""
        try:
            builder = self._pinglist_factory(inv)
        except (ValueError, InventoryError) as exc:
            log.warning("inventory ignored, keeping the last good one: %s", exc)
            return False
        self.inventory = inv
        self._builder = builder
        self._pinglists.clear()
        self._windows.clear()
        self._topology = Topology(zones={n.name: n.zone for n in inv.nodes})
        self.store.set_nodes([n.name for n in inv.nodes])
        self.metrics.inventory_nodes.set(len(inv.nodes))
        self.metrics.inventory_agents.set(len(inv.agents))
        log.info(
            "inventory: %d nodes, %d agents (version %s)", len(inv.nodes), len(inv.agents), inv.version()
        )
        return True

    async def follow_inventory(self, updates: AsyncIterator[Inventory], source: InventorySource) -> None:
        """Apply every update. When the source fails or ends, keep the last good inventory and
        ask the source again after a pause."""
        while True:
            try:
                async for inv in updates:
                    self.metrics.inventory_up.set(1)
                    self.apply_inventory(inv)
                log.warning("inventory source stopped; restarting it in %g s", SOURCE_RETRY_S)
            except Exception as exc:  # noqa: BLE001 - whatever the source raised, the collector goes on
                log.warning("inventory source failed, keeping the last good inventory: %s", exc)
            self.metrics.inventory_up.set(0)
            await asyncio.sleep(SOURCE_RETRY_S)
            await _close(updates)
            updates = self._updates = source.updates()

    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.inventory.nodes) if self.inventory else ()

    # -- pinglists --------------------------------------------------------------------------

    def pinglist_version(self, agent: str) -> str | None:
        return None if self._builder is None else self._builder.version_of(agent)

    def pinglist(self, agent: str) -> bytes | None:
        """The agent's pinglist, JSON gzip-compressed; None if unknown. Recently served ones
        are cached. A pinglist is O(nodes) (4.7 MB of JSON at 5,000 nodes, 20x less gzipped)."""
        body = self._pinglists.get(agent)
        if body is not None:
            self._pinglists.move_to_end(agent)
            return body
        pl = None if self._builder is None else self._builder.for_agent(agent)
        if pl is None:
            return None
        body = gzip.compress(msgspec.json.encode(pl), compresslevel=6, mtime=0)
        self._pinglists[agent] = body
        if len(self._pinglists) > PINGLIST_CACHE:
            self._pinglists.popitem(last=False)
        return body

    # -- results ----------------------------------------------------------------------------

    def ingest(self, body: bytes) -> IngestReply:
        records, rejected, errors = decode_batch(body)
        self.store.ingest(records, now=self._clock())
        self.metrics.count_ingested(records, rejected)
        return IngestReply(accepted=len(records), rejected=rejected, errors=errors)

    # -- findings and matrix ----------------------------------------------------------------

    async def computed(self, window_s: float, *, with_matrix: bool) -> _Computed:
        """The window's table and findings, recomputed when older than ``refresh_s``."""
        lock = self._window_locks.setdefault(window_s, asyncio.Lock())
        async with lock:
            now = self._clock()
            c = self._windows.get(window_s)
            if c is None or now - c.at >= self.settings.refresh_s or c.nodes != self.node_names():
                table, findings = await self._diagnose_window(now, window_s)
                c = _Computed(at=now, table=table, nodes=self.node_names(), findings=findings)
            if with_matrix and c.matrix is None:
                matrix = await asyncio.to_thread(matrix_for, c.table, nodes=c.nodes)
                c = replace(c, matrix=matrix)
            self._windows.pop(window_s, None)
            self._windows[window_s] = c
            while len(self._windows) > MAX_CACHED_WINDOWS:
                oldest = next(iter(self._windows))
                del self._windows[oldest]
                self._window_locks.pop(oldest, None)
            return c

    async def _diagnose_window(self, now: float, window_s: float) -> tuple[PairTable, list[Finding]]:
        """The window's table, and the findings of the window and of a longer one.

        Both carry the last two bucket-widths as ``recent`` evidence: a fault that began
        or ended inside the window is named by what it is now, not by its diluted
        average. The longer window (``long_window_factor`` times, within retention)
        gives the rate-limited modes their samples; ``diagnose_windows`` merges the two.
        """
        s = self.settings
        recent_s = 2 * s.bucket_s
        longer = min(s.retention_s, window_s * s.long_window_factor)
        windows = [window_s] + ([longer] if longer > window_s else [])
        recent = await asyncio.to_thread(self.store.snapshot(now=now, window_s=recent_s).table)
        stats = [
            Window(
                table=await asyncio.to_thread(self.store.snapshot(now=now, window_s=w).table),
                nlb_probes=self.store.nlb_probes(now=now, window_s=w),
            )
            for w in windows
        ]
        findings = await asyncio.to_thread(
            findings_for, stats, topology=self._topology, recent=recent, policy=self._policy
        )
        return stats[0].table, findings

    async def refresh_forever(self) -> None:
        """Keep the default window's findings (and their metrics) fresh without any request."""
        while True:
            started = time.perf_counter()
            try:
                c = await self.computed(self.settings.window_s, with_matrix=False)
                self.metrics.set_findings(c.findings)
                await asyncio.to_thread(
                    self.matrix_metrics.update,
                    c.table,
                    topology=self._topology,
                    window_s=self.settings.window_s,
                )
            except Exception:
                log.exception("diagnosis failed; the previous findings stay in the metrics")
            self.metrics.diagnosis_seconds.set(time.perf_counter() - started)
            self.metrics.set_store(self.store.usage())
            await asyncio.sleep(self.settings.refresh_s)

    # -- sweeps -----------------------------------------------------------------------------

    def start_sweep(self, request: SweepRequest) -> Sweep:
        """Start a sweep, or return the one in progress (sweeps do not stack)."""
        if self._running_sweep is not None:
            return self._running_sweep
        if self._tg is None or self._session is None:
            raise RuntimeError("the collector is not serving")
        inv = self.inventory
        ready_nodes = {n.name for n in inv.nodes if n.ready} if inv else set()
        agents = [a for a in (inv.agents if inv else []) if a.ready and a.node in ready_nodes]
        if not agents:
            raise NoAgentsError("no ready agents in the inventory: nothing to sweep")
        sweep = Sweep(new_sweep_id(), agents, started_at=self._clock())
        self._sweeps[sweep.id] = sweep
        finished = [s for s in self._sweeps.values() if s.finished]
        for old in finished[: max(0, len(finished) - self.settings.sweeps_kept)]:
            del self._sweeps[old.id]
        self._running_sweep = sweep
        task = self._tg.create_task(
            self._run_sweep(
                sweep,
                self._session,
                probe_timeout_s=request.timeout_s or self.settings.timeout_s,
                deadline_s=request.deadline_s or self.settings.sweep_deadline_s,
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return sweep

    def _sweep_answer(self, answer: AgentAnswer) -> None:
        if answer.records:
            self.store.ingest(answer.records, now=self._clock())
        self.metrics.count_ingested(answer.records, answer.rejected)

    async def _run_sweep(
        self, sweep: Sweep, session: aiohttp.ClientSession, *, probe_timeout_s: float, deadline_s: float
    ) -> None:
        try:
            await sweep.collect(
                session,
                probe_timeout_s=probe_timeout_s,
                deadline_s=deadline_s,
                concurrency=self.settings.sweep_concurrency,
                on_answer=self._sweep_answer,
            )
            nodes = self.node_names()
            records = sweep.records
            now = self._clock()
            sweep.report = await asyncio.to_thread(
                report_from_records,
                records,
                nodes=nodes,
                topology=self._topology,
                policy=self._policy,
                window_s=max(now - sweep.started_at, 0.0),
                end_ts=now,
            )
            sweep.finished_at = now
            self.metrics.sweeps.labels("done").inc()
        except Exception as exc:
            log.exception("sweep %s failed", sweep.id)
            sweep.error = f"{type(exc).__name__}: {exc}"
            sweep.finished_at = self._clock()
            self.metrics.sweeps.labels("failed").inc()
        finally:
            if self._running_sweep is sweep:
                self._running_sweep = None

    def sweep_status(self, sweep_id: str) -> SweepStatus | None:
        sweep = self._sweeps.get(sweep_id)
        return None if sweep is None else sweep.status()

    # -- HTTP -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.max_body_bytes, middlewares=[self._errors_and_metrics]
        )
        app.router.add_get("/api/v1/pinglist/{agent}", self._get_pinglist)
        app.router.add_post("/api/v1/results", self._post_results)
        app.router.add_get("/api/v1/matrix", self._get_matrix)
        app.router.add_get("/api/v1/findings", self._get_findings)
        app.router.add_get("/api/v1/report", self._get_report)
        app.router.add_post("/api/v1/sweeps", self._post_sweep)
        app.router.add_get("/api/v1/sweeps/{id}", self._get_sweep)
        app.router.add_get("/api/v1/records", self._get_records)
        app.router.add_get("/metrics", make_aiohttp_handler(self.registry))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        add_web_routes(app)
        return app

    @web.middleware
    async def _errors_and_metrics(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every error is a JSON ``{"error": ...}``; every answer is counted by route template."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                self.metrics.http_requests.labels(route, request.method, str(exc.status)).inc()
                raise
            text = exc.text or exc.reason
            if text.startswith(f"{exc.status}: "):  # aiohttp's default body, e.g. "404: Not Found"
                text = text.split(": ", 1)[1]
            response = _error(exc.status, text)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception as exc:
            # A bug must cost one request, not the collector; the log has the traceback.
            log.exception("%s %s failed", request.method, route)
            response = _error(500, f"internal error: {type(exc).__name__}: {exc}")
        self.metrics.http_requests.labels(route, request.method, str(response.status)).inc()
        return response

    def _window(self, request: web.Request) -> float:
        raw = request.query.get("window")
        if raw is None:
            return self.settings.window_s
        try:
            window = float(raw)
        except ValueError:
            window = math.nan
        if not (math.isfinite(window) and 0 < window <= self.settings.retention_s):
            raise web.HTTPBadRequest(
                text=f"window must be a number of seconds, more than 0 and at most the retention "
                f"({self.settings.retention_s:g}); got {raw!r}"
            )
        return window

    async def _get_pinglist(self, request: web.Request) -> web.StreamResponse:
        agent = request.match_info["agent"]
        if self.inventory is None:
            return _error(503, "no inventory yet")
        version = self.pinglist_version(agent)
        if version is None:
            return _error(404, f"unknown agent {agent!r}: not in the inventory (or not ready)")
        etag = f'"{version}"'
        if _etag_matches(request.headers.get("If-None-Match"), version):
            return web.Response(status=304, headers={"ETag": etag})
        body = self.pinglist(agent)
        if body is None:
            return _error(404, f"unknown agent {agent!r}: not in the inventory (or not ready)")
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(
                body=body, content_type=JSON, headers={"ETag": etag, "Content-Encoding": "gzip"}
            )
        return web.Response(body=gzip.decompress(body), content_type=JSON, headers={"ETag": etag})

    async def _post_results(self, request: web.Request) -> web.StreamResponse:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _too_large(limit)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(limit)
        if not body.strip():
            return _error(400, "empty body: expected probe results as JSON lines")
        return _json(self.ingest(body))

    async def _get_matrix(self, request: web.Request) -> web.StreamResponse:
        c = await self.computed(self._window(request), with_matrix=True)
        assert c.matrix is not None
        return _json(c.matrix)

    async def _get_findings(self, request: web.Request) -> web.StreamResponse:
        c = await self.computed(self._window(request), with_matrix=False)
        return _json(FindingsReply(findings=c.findings))

    async def _get_report(self, request: web.Request) -> web.StreamResponse:
        c = await self.computed(self._window(request), with_matrix=True)
        assert c.matrix is not None
        return _json(Report(matrix=c.matrix, findings=c.findings))

    async def _post_sweep(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            req = msgspec.json.decode(body, type=SweepRequest) if body.strip() else SweepRequest()
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _error(400, f"bad sweep request: {exc}")
        for name, value in (("timeout_s", req.timeout_s), ("deadline_s", req.deadline_s)):
            if value is not None and not (math.isfinite(value) and value > 0):
                return _error(400, f"bad sweep request: {name} must be more than 0, got {value}")
        try:
            sweep = self.start_sweep(req)
        except NoAgentsError as exc:
            return _error(409, str(exc))
        return _json(SweepStarted(id=sweep.id), status=202)

    async def _get_sweep(self, request: web.Request) -> web.StreamResponse:
        status = self.sweep_status(request.match_info["id"])
        if status is None:
            return _error(404, f"no sweep {request.match_info['id']!r} (finished sweeps are kept a while)")
        return _json(status)

    async def _get_records(self, request: web.Request) -> web.StreamResponse:
        try:
            since = float(request.query.get("since", "-inf"))
            limit = int(request.query["limit"]) if "limit" in request.query else None
        except ValueError:
            return _error(400, "since must be a Unix timestamp and limit an integer")
        records = self.store.recent(since=since, limit=limit)
        return web.Response(body=encode_records(records), content_type=NDJSON)

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        if self.inventory is None:
            return web.Response(status=503, text="no inventory yet\n")
        return web.Response(text="ready\n")

    # -- lifecycle --------------------------------------------------------------------------

    @asynccontextmanager
    async def serving(self, source: InventorySource, *, host: str, port: int) -> AsyncIterator[str]:
        """Load the first inventory (its errors propagate), serve, and follow the source.

        Yields the base URL. Leaving the context stops the server, the loops and any
        sweep in progress.
        """
        updates = self._updates = source.updates()
        try:
            first = await anext(updates)
        except BaseException:
            await _close(updates)
            self._updates = None
            raise
        if not self.apply_inventory(first):
            await _close(updates)
            self._updates = None
            raise InventoryError("the first inventory was refused; see the log")
        self.metrics.inventory_up.set(1)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        connector = aiohttp.TCPConnector(limit=self.settings.sweep_concurrency, force_close=True)
        # An exception from the caller's block is held and re-raised after the task
        # group, so it arrives as itself rather than wrapped in an ExceptionGroup.
        raised: BaseException | None = None
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
            asyncio.TaskGroup() as tg,
        ):
            self._tg, self._session = tg, session
            runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
            await runner.setup()
            loops = [
                tg.create_task(self.follow_inventory(updates, source)),
                tg.create_task(self.refresh_forever()),
            ]
            try:
                site = web.TCPSite(runner, host, port)
                await site.start()
                bound = runner.addresses[0]
                shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
                yield f"http://{shown}:{bound[1]}"
            except BaseException as exc:  # noqa: BLE001 - re-raised below, unwrapped
                raised = exc
            finally:
                for task in [*loops, *self._tasks]:
                    task.cancel()
                await runner.cleanup()
                self._tg = self._session = None
                self._running_sweep = None
        # A source may hold threads or watches: let it stop them.
        if self._updates is not None:
            await _close(self._updates)
            self._updates = None
        if raised is not None:
            raise raised


def _json(value: object, *, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), content_type=JSON, status=status)


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


def _too_large(limit: int) -> web.Response:
    return _error(413, f"body larger than {limit // 2**20} MiB: send smaller batches")


def _etag_matches(header: str | None, version: str) -> bool:
    if not header:
        return False
    for raw in header.split(","):
        tag = raw.strip()
        if tag == "*" or tag.removeprefix("W/").strip('"') == version:
            return True
    return False


async def _close(updates: AsyncIterator[Inventory]) -> None:
    """Close an inventory source's generator if it is one (ends its watches and threads)."""
    aclose = getattr(updates, "aclose", None)
    if aclose is not None:
        await aclose()
