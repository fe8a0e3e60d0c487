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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from prober.collector.auth import Authenticator, AuthError, Caller, Role
from prober.collector.metrics import CollectorMetrics
from prober.collector.service import CollectorService, MatrixAnswer, NoAgentsError, SweepTooSoonError
from prober.collector.sweep import SweepRefusedError
from prober.collector.web import add_routes as add_web_routes
from prober.inventory import InventorySource
from prober.matrix import FAILING_LIMIT, VIEWS, ViewError
from prober.model import Finding, Report
from prober.pinglist import (
    MESH_DELTA_IM,
    MESH_VERSION_HEADER,
    PINGLIST_HEADER,
    SWEEP_HEADER,
    encode_announcement,
    encode_sweep_order,
)

log = logging.getLogger(__name__)

JSON: Final = "application/json"
#: Refused credentials are logged at most this often (an attacker must not fill the log).
REFUSAL_LOG_EVERY_S: Final = 60.0
#: The most rows and columns a ``view=failing`` matrix may ask for.
MAX_FAILING_LIMIT: Final = 500
NDJSON: Final = "application/x-ndjson"
#: A results body up to this size is decoded and checked on the event loop: ~40 results,
#: ~70 µs (1.7 µs a result), less than handing it to a worker thread and back costs. An
#: agent's post at 2.5 probes/s holds ~5 results (``bench/collector_posts.py``).
INLINE_ADMIT_BYTES: Final = 16 * 1024


class DiagnosisStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the findings are whole and fresh: ``failed_rules`` raised in this evaluation
    (their findings are missing); ``last_success_ts`` is when the default window was last
    diagnosed with every rule answering (0: never)."""

    at: float
    failed_rules: list[str]
    last_success_ts: float


class FindingsReply(msgspec.Struct, frozen=True, kw_only=True):
    findings: list[Finding]
    diagnosis: DiagnosisStatus | None = None


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

    def __init__(self, service: CollectorService, *, auth: Authenticator | None = None) -> None:
        self.service = service
        self.settings = service.settings
        #: Who may call what (:mod:`prober.collector.auth`); without one, every endpoint is open.
        self.auth = auth or Authenticator()
        self._refusals_logged_at = -math.inf
        self._ingest_turns = asyncio.Semaphore(self.settings.ingest_concurrency)
        self._metrics_turn = asyncio.Lock()

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
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        add_web_routes(app)
        return app

    async def _get_metrics(self, request: web.Request) -> web.Response:
        """The registry in the text format the scraper accepts (OpenMetrics or Prometheus'),
        only the ``name[]`` families when given, rendered in a thread, one scrape at a time.

        The client library's aiohttp handler renders on the event loop: at 5,000 nodes the
        registry holds tens of thousands of series (the zone latency histogram, the matrix's
        pairs), and every POST and reader would wait for each scrape. Its metrics are safe to
        read from a thread (the library's own locks; the collectors here swap in a new value
        or hold a lock).
        """
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        names = request.query.getall("name[]", [])
        registry = self.registry.restricted_registry(names) if names else self.registry
        self.service.flush()  # the latency histograms count the results queued for the store
        async with self._metrics_turn:
            body = await asyncio.to_thread(encoder, registry)
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

    @web.middleware
    async def _errors_and_metrics(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every error is a JSON ``{"error": ...}``; every answer is counted by route template."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            response = await handler(request)
        except AuthError as exc:
            response = _error(exc.status, exc.message)
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="prober"'
            self._log_refusal(request, route, exc)
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

    def _log_refusal(self, request: web.Request, route: str, exc: AuthError) -> None:
        """Log a refused credential, at most once a minute (every refusal is counted by
        ``prober_http_requests_total{code}``)."""
        now = time.monotonic()
        if now - self._refusals_logged_at >= REFUSAL_LOG_EVERY_S:
            self._refusals_logged_at = now
            log.warning(
                "refused %s %s from %s: %d %s (further refusals this minute are only counted)",
                request.method, route, request.remote, exc.status, exc.message,
            )  # fmt: skip

    async def _caller(self, request: web.Request, *allowed: Role) -> Caller:
        """Who is calling; :class:`AuthError` unless it has one of the ``allowed`` roles."""
        caller = await self.auth.identify(request.headers.get("Authorization"), self.service.inventory)
        if caller.role is Role.ANYONE or caller.role in allowed:
            return caller
        if self.auth.token_file is None:
            raise AuthError(403, "this needs the operator credential, and the collector has none: "
                                 "start it with --token-file")  # fmt: skip
        raise AuthError(403, "this needs the operator credential (the collector's --token-file)")

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
        caller = await self._caller(request, Role.OPERATOR, Role.AGENT)
        if caller.role is Role.AGENT and caller.agent != agent:
            raise AuthError(403, f"an agent may read only its own pinglist, not {agent!r}")
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
        await self._caller(request, Role.OPERATOR, Role.AGENT)
        doc = self.service.mesh()
        if doc is None:
            return _error(503, "no inventory yet")
        # An agent that holds an earlier mesh and accepts a delta (RFC 3229) gets the edits.
        held = _etag_named(request.headers.get("If-None-Match"))
        if (
            held is not None
            and held != doc[0]
            and _accepts_im(request.headers.get("A-IM"), MESH_DELTA_IM)
            and (delta := self.service.mesh_delta(held)) is not None
        ):
            return await _encoded_document(
                request, *delta, status=226, extra={"IM": MESH_DELTA_IM, "Delta-Base": f'"{held}"'}
            )
        return await _encoded_document(request, *doc)

    async def _post_results(self, request: web.Request) -> web.StreamResponse:
        """Results in: a bounded body, read and decoded in a bounded number of turns.

        The body is read only in a turn (``ingest_concurrency`` at once, so at most that
        many bodies are in memory), within ``body_timeout_s``, and decoded and checked
        (:mod:`prober.collector.admission`) on a worker thread, or on the event loop
        when it is at most :data:`INLINE_ADMIT_BYTES`; storing runs on the event loop.
        """
        s = self.settings
        try:
            caller = await self._caller(request, Role.OPERATOR, Role.AGENT)
        except AuthError:
            self.metrics.refused_batches.labels("unauthorized").inc()
            raise
        limit = s.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._refused("too-large", _too_large(limit))
        try:
            async with asyncio.timeout(s.ingest_wait_s):
                await self._ingest_turns.acquire()
        except TimeoutError:
            return self._refused(
                "busy",
                _error(503, "busy: too many result batches at once; retry shortly", retry_after_s=1),
            )
        try:
            try:
                async with asyncio.timeout(s.body_timeout_s):
                    body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return self._refused("too-large", _too_large(limit))
            except TimeoutError:
                return self._refused(
                    "too-slow", _error(408, f"the body did not arrive within {s.body_timeout_s:g} s")
                )
            if not body.strip():
                return _error(400, "empty body: expected probe results as JSON lines")
            if len(body) <= INLINE_ADMIT_BYTES:
                admission = self.service.admit(body, caller_node=caller.node)
            else:
                admission = await asyncio.to_thread(self.service.admit, body, caller_node=caller.node)
        finally:
            self._ingest_turns.release()
        reply = self.service.store_admitted(admission)
        if admission.refused:
            return self._refused(
                "bad-lines",
                _json(
                    {
                        "error": f"more than {s.max_rejected_lines} lines rejected: the batch was "
                        "refused, nothing of it stored",
                        "rejected": reply.rejected,
                        "errors": reply.errors,
                    },
                    status=400,
                ),
            )
        response = _json(reply)
        # What each poster's pinglist is now: it fetches it only when that is news to it.
        if announced := self.service.announcement(admission.records):
            response.headers[PINGLIST_HEADER] = encode_announcement(announced)
        return response

    def _refused(self, reason: str, response: web.Response) -> web.Response:
        self.metrics.refused_batches.labels(reason).inc()
        return response

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

    async def _matrix(self, request: web.Request) -> MatrixAnswer:
        window, view = self._window(request), self._view(request)
        try:
            return await self.service.matrix(window, **view)
        except ViewError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None

    async def _get_matrix(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=(await self._matrix(request)).body, content_type=JSON)

    async def _get_findings(self, request: web.Request) -> web.StreamResponse:
        c = await self.service.window(self._window(request))
        status = DiagnosisStatus(
            at=c.at,
            failed_rules=sorted({f.rule for f in c.failures}),
            last_success_ts=self.service.last_diagnosis_ts,
        )
        return _json(FindingsReply(findings=c.findings, diagnosis=status))

    async def _get_report(self, request: web.Request) -> web.StreamResponse:
        answer = await self._matrix(request)
        c = await self.service.window(self._window(request))
        return await _json_off_loop(Report(matrix=answer.matrix, findings=c.findings))

    async def _post_sweep(self, request: web.Request) -> web.StreamResponse:
        await self._caller(request, Role.OPERATOR)
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                body = await request.read()
        except TimeoutError:
            return _error(408, f"the body did not arrive within {self.settings.body_timeout_s:g} s")
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
        agent = request.match_info["agent"]
        caller = await self._caller(request, Role.OPERATOR, Role.AGENT)
        if caller.role is Role.AGENT and caller.agent != agent:
            raise AuthError(403, f"an agent may deliver only its own sweep results, not {agent!r}'s")
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _too_large(limit)
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(limit)
        except TimeoutError:
            return _error(408, f"the body did not arrive within {self.settings.body_timeout_s:g} s")
        done = request.query.get("done", "0") == "1"
        try:
            reply = self.service.deliver_sweep(request.match_info["id"], agent, body, done=done)
        except SweepRefusedError as exc:
            return _error(exc.status, str(exc))
        return _json(reply)

    async def _get_sweep(self, request: web.Request) -> web.StreamResponse:
        await self._caller(request, Role.OPERATOR)
        status = self.service.sweep_status(request.match_info["id"])
        if status is None:
            return _error(404, f"no sweep {request.match_info['id']!r} (finished sweeps are kept a while)")
        return _json(status)

    async def _get_records(self, request: web.Request) -> web.StreamResponse:
        await self._caller(request, Role.OPERATOR)
        try:
            since = float(request.query.get("since", "-inf"))
            limit = int(request.query["limit"]) if "limit" in request.query else None
        except ValueError:
            return _error(400, "since must be a Unix timestamp and limit an integer")
        return web.Response(body=self.service.recent_jsonl(since=since, limit=limit), content_type=NDJSON)

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
            # keepalive_timeout bounds the wait for a request's headers too: aiohttp arms
            # it when a connection opens and after each answer, and closes a connection
            # whose next request has not fully arrived by then.
            runner = web.AppRunner(
                self.app(),
                access_log=None,
                handle_signals=False,
                keepalive_timeout=self.settings.header_timeout_s,
            )
            await runner.setup()
            try:
                site = CappedSite(
                    runner,
                    host,
                    port,
                    max_connections=self.settings.max_connections,
                    on_refused=self.metrics.refused_connections.inc,
                )
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


def _error(status: int, message: str, *, retry_after_s: int | None = None) -> web.Response:
    response = _json({"error": message}, status=status)
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response


def _too_large(limit: int) -> web.Response:
    return _error(413, f"body larger than {limit // 2**20} MiB: send smaller batches")


async def _encoded_document(
    request: web.Request,
    version: str,
    body: bytes,
    *,
    status: int = 200,
    extra: dict[str, str] | None = None,
) -> web.Response:
    """A pre-encoded (gzip) document with its ``ETag``; 304 when ``If-None-Match`` names it.

    Sent as stored to clients that accept gzip (every agent); decompressed in a thread
    for the others, so a large mesh never holds the event loop."""
    headers = {"ETag": f'"{version}"', **(extra or {})}
    if _etag_matches(request.headers.get("If-None-Match"), version):
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(
            status=status, body=body, content_type=JSON, headers={**headers, "Content-Encoding": "gzip"}
        )
    plain = await asyncio.to_thread(gzip.decompress, body)
    return web.Response(status=status, body=plain, content_type=JSON, headers=headers)


def _etag_named(header: str | None) -> str | None:
    """The one strong entity tag ``If-None-Match`` names (an agent names the mesh it
    holds); None for none, ``*`` or a list."""
    if not header or "," in header:
        return None
    tag = header.strip()
    if not (len(tag) >= 2 and tag[0] == tag[-1] == '"'):
        return None
    return tag[1:-1]


def _accepts_im(header: str | None, manipulation: str) -> bool:
    """Whether ``A-IM`` (RFC 3229: a comma-separated list, each maybe with parameters)
    names ``manipulation``."""
    if not header:
        return False
    return any(item.split(";", 1)[0].strip().lower() == manipulation for item in header.split(","))


def _etag_matches(header: str | None, version: str) -> bool:
    if not header:
        return False
    for raw in header.split(","):
        tag = raw.strip()
        if tag == "*" or tag.removeprefix("W/").strip('"') == version:
            return True
    return False


class CappedSite(web.TCPSite):
    """A TCP site that keeps at most ``max_connections`` open: a connection beyond the cap
    gets ``503`` and is closed at once, before anything of it is read. The kernel's listen
    queue holds as many (up to ``net.core.somaxconn``): every agent reconnecting at once
    after a restart waits in the queue for the event loop, not on SYN retransmits (1 s,
    then 3 s) behind asyncio's default queue of 100."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        on_refused: Callable[[], object] = lambda: None,
    ) -> None:
        super().__init__(runner, host, port)
        self.max_connections = max_connections
        self.on_refused = on_refused

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= self.max_connections:
                self.on_refused()
                return _Refuse()
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self.max_connections
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 34\r\n"
    b"Connection: close\r\nRetry-After: 1\r\n\r\ntoo many connections; retry later\n"
)
