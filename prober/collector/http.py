"""The collector's HTTP API: routes that parse requests, call the service and encode its answers.

The API is docs/architecture.md § Collector HTTP API. Each handler checks its
request (a window within retention, a body within ``max_body_bytes``, a sweep
request's JSON), calls :class:`~prober.collector.service.CollectorService` and
encodes what it answers; no state lives here. The middleware turns every error
into a JSON ``{"error": ...}`` (a bug costs one request, never the collector) and
counts every answer by route template. :meth:`Collector.serving` runs the service and
the server together. No handler here calls out to an agent: a sweep's order rides on
the agents' pinglist answers and its results come back to
``POST /api/v1/sweeps/{id}/results/{agent}``.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from prober.collector.metrics import CollectorMetrics
from prober.collector.service import CollectorService, NoAgentsError, SweepTooSoonError
from prober.collector.sweep import SweepRefusedError
from prober.collector.web import add_routes as add_web_routes
from prober.inventory import InventorySource
from prober.matrix import FAILING_LIMIT, VIEWS, ViewError
from prober.model import Finding, Matrix, Report
from prober.pinglist import MESH_VERSION_HEADER, SWEEP_HEADER, encode_sweep_order
from prober.records import encode_records

log = logging.getLogger(__name__)

JSON: Final = "application/json"
#: The most rows and columns a ``view=failing`` matrix may ask for.
MAX_FAILING_LIMIT: Final = 500
NDJSON: Final = "application/x-ndjson"


class FindingsReply(msgspec.Struct, frozen=True, kw_only=True):
    findings: list[Finding]


class SweepRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /api/v1/sweeps`` (optional): the agents' probe timeout, how long the
    sweep runs. Each is lowered to the collector's maximum."""

    timeout_s: float | None = None
    deadline_s: float | None = None


class SweepStarted(msgspec.Struct, frozen=True, kw_only=True):
    """A sweep started or joined, with the probe timeout and deadline it runs with."""

    id: str
    timeout_s: float
    deadline_s: float


class Collector:
    """The collector on the network: a :class:`CollectorService` behind its HTTP API."""

    def __init__(self, service: CollectorService) -> None:
        self.service = service
        self.settings = service.settings

    @property
    def registry(self) -> CollectorRegistry:
        return self.service.registry

    @property
    def metrics(self) -> CollectorMetrics:
        return self.service.metrics

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.max_body_bytes, middlewares=[self._errors_and_metrics]
        )
        app.router.add_get("/api/v1/pinglist/{agent}", self._get_pinglist)
        app.router.add_get("/api/v1/mesh", self._get_mesh)
        app.router.add_post("/api/v1/results", self._post_results)
        app.router.add_get("/api/v1/matrix", self._get_matrix)
        app.router.add_get("/api/v1/findings", self._get_findings)
        app.router.add_get("/api/v1/report", self._get_report)
        app.router.add_post("/api/v1/sweeps", self._post_sweep)
        app.router.add_get("/api/v1/sweeps/{id}", self._get_sweep)
        app.router.add_post("/api/v1/sweeps/{id}/results/{agent}", self._post_sweep_results)
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
        if not self.service.ready:
            return _error(503, "no inventory yet")
        doc, mesh = self.service.pinglist(agent), self.service.mesh()
        if doc is None or mesh is None:
            return _error(404, f"unknown agent {agent!r}: not in the inventory (or not ready)")
        # The mesh's version rides along, so an agent asks for the mesh only when it changed.
        extra = {MESH_VERSION_HEADER: f'"{mesh[0]}"'}
        # A sweep reaches an agent only this way: in the answer to its own fetch.
        if (order := self.service.sweep_order(agent)) is not None:
            extra[SWEEP_HEADER] = encode_sweep_order(order)
        return await _encoded_document(request, *doc, extra=extra)

    async def _get_mesh(self, request: web.Request) -> web.StreamResponse:
        doc = self.service.mesh()
        if doc is None:
            return _error(503, "no inventory yet")
        return await _encoded_document(request, *doc)

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
        return _json(self.service.ingest(body))

    def _view(self, request: web.Request) -> dict[str, Any]:
        """``view``, ``node`` and ``limit`` of a matrix request: the views of ``Matrix`` in
        docs/contracts.md § Command line"""
        view = request.query.get("view", "auto")
        if view not in VIEWS:
            raise web.HTTPBadRequest(text=f"view must be one of {', '.join(VIEWS)}; got {view!r}")
        raw = request.query.get("limit", str(FAILING_LIMIT))
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_FAILING_LIMIT:
            raise web.HTTPBadRequest(
                text=f"limit must be a whole number from 1 to {MAX_FAILING_LIMIT}; got {raw!r}"
            )
        return {"view": view, "node": request.query.get("node"), "limit": limit}

    async def _matrix(self, request: web.Request) -> Matrix:
        window, view = self._window(request), self._view(request)
        try:
            return await self.service.matrix(window, **view)
        except ViewError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None

    async def _get_matrix(self, request: web.Request) -> web.StreamResponse:
        return await _json_off_loop(await self._matrix(request))

    async def _get_findings(self, request: web.Request) -> web.StreamResponse:
        c = await self.service.window(self._window(request), with_matrix=False)
        return _json(FindingsReply(findings=c.findings))

    async def _get_report(self, request: web.Request) -> web.StreamResponse:
        matrix = await self._matrix(request)
        c = await self.service.window(self._window(request), with_matrix=False)
        return await _json_off_loop(Report(matrix=matrix, findings=c.findings))

    async def _post_sweep(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            req = msgspec.json.decode(body, type=SweepRequest) if body.strip() else SweepRequest()
            sweep = self.service.start_sweep(timeout_s=req.timeout_s, deadline_s=req.deadline_s)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            return _error(400, f"bad sweep request: {exc}")
        except NoAgentsError as exc:
            return _error(409, str(exc))
        except SweepTooSoonError as exc:
            response = _error(429, str(exc))
            response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
            return response
        started = SweepStarted(id=sweep.id, timeout_s=sweep.order.timeout_s, deadline_s=sweep.deadline_s)
        return _json(started, status=202)

    async def _post_sweep_results(self, request: web.Request) -> web.StreamResponse:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _too_large(limit)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(limit)
        done = request.query.get("done", "0") == "1"
        try:
            reply = self.service.deliver_sweep(
                request.match_info["id"], request.match_info["agent"], body, done=done
            )
        except SweepRefusedError as exc:
            return _error(exc.status, str(exc))
        return _json(reply)

    async def _get_sweep(self, request: web.Request) -> web.StreamResponse:
        status = self.service.sweep_status(request.match_info["id"])
        if status is None:
            return _error(404, f"no sweep {request.match_info['id']!r} (finished sweeps are kept a while)")
        return _json(status)

    async def _get_records(self, request: web.Request) -> web.StreamResponse:
        try:
            since = float(request.query.get("since", "-inf"))
            limit = int(request.query["limit"]) if "limit" in request.query else None
        except ValueError:
            return _error(400, "since must be a Unix timestamp and limit an integer")
        records = self.service.recent_records(since=since, limit=limit)
        return web.Response(body=encode_records(records), content_type=NDJSON)

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        if not self.service.ready:
            return web.Response(status=503, text="no inventory yet\n")
        return web.Response(text="ready\n")

    # -- lifecycle --------------------------------------------------------------------------

    @asynccontextmanager
    async def serving(self, source: InventorySource, *, host: str, port: int) -> AsyncIterator[str]:
        """Load the first inventory (its errors propagate), serve, and follow the source.

        Yields the base URL. Leaving the context stops the server, the loops and any
        sweep in progress.
        """
        async with self.service.running(source):
            runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
            await runner.setup()
            try:
                site = web.TCPSite(runner, host, port)
                await site.start()
                bound = runner.addresses[0]
                shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
                yield f"http://{shown}:{bound[1]}"
            finally:
                await runner.cleanup()


def _json(value: object, *, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), content_type=JSON, status=status)


async def _json_off_loop(value: object) -> web.Response:
    """JSON encoded in a thread: a matrix can be megabytes."""
    body = await asyncio.to_thread(msgspec.json.encode, value)
    return web.Response(body=body, content_type=JSON)


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


def _too_large(limit: int) -> web.Response:
    return _error(413, f"body larger than {limit // 2**20} MiB: send smaller batches")


async def _encoded_document(
    request: web.Request, version: str, body: bytes, *, extra: dict[str, str] | None = None
) -> web.Response:
    """A pre-encoded (gzip) document with its ``ETag``; 304 when ``If-None-Match`` names it.

    Sent as stored to clients that accept gzip (every agent); decompressed in a thread
    for the others, so a large mesh never holds the event loop."""
    headers = {"ETag": f'"{version}"', **(extra or {})}
    if _etag_matches(request.headers.get("If-None-Match"), version):
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(body=body, content_type=JSON, headers={**headers, "Content-Encoding": "gzip"})
    plain = await asyncio.to_thread(gzip.decompress, body)
    return web.Response(body=plain, content_type=JSON, headers=headers)


def _etag_matches(header: str | None, version: str) -> bool:
    if not header:
        return False
    for raw in header.split(","):
        tag = raw.strip()
        if tag == "*" or tag.removeprefix("W/").strip('"') == version:
            return True
    return False
