"""HTTP servers with bounds: a header deadline, a body deadline and a connection cap.

aiohttp on its own waits for a request's headers as long as the client keeps the
connection open, and accepts as many connections as the process has descriptors: a
few hundred clients that send half a request line and stop hold an echo forever.
:func:`bounded_site` serves an aiohttp application so that

* a connection that has not sent a complete request head within
  :attr:`ServerLimits.header_timeout_s` of connecting (on a kept-alive connection: of
  the next request's first byte) is closed; the head counts as sent when its last
  bytes arrive, not when the handler starts, so a busy event loop never closes a
  client that was on time;
* a request body is read by the server before the handler runs, within
  :attr:`ServerLimits.body_timeout_s` (and the application's ``client_max_size``), so
  no handler ever waits on a slow body; a late one gets 408 and the connection closes;
* at most :attr:`ServerLimits.max_connections` connections are open at once; one more
  is closed as soon as it is accepted. The kernel's listen queue holds as many (up to
  ``net.core.somaxconn``), so a burst within the cap waits for the event loop in the
  queue, not for the client's SYN retransmits (1 s, then 3 s) behind a full queue of
  aiohttp's default 128;
* idle kept-alive connections are closed after :attr:`ServerLimits.keepalive_s`.

Every connection closed for one of these reasons is reported to ``on_close(reason)``
(``header_timeout``, ``body_timeout``, ``over_cap``), for a counter. Used by every HTTP
server of the agent and the echo. It must not know any route: it bounds connections,
nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

#: Reasons given to ``on_close``.
HEADER_TIMEOUT: Final = "header_timeout"
BODY_TIMEOUT: Final = "body_timeout"
OVER_CAP: Final = "over_cap"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    """The bounds of one HTTP server (see the module's docstring)."""

    header_timeout_s: float = 5.0
    body_timeout_s: float = 5.0
    #: Under the usual 1,024 descriptors per process, with room for the probes' sockets.
    max_connections: int = 512
    keepalive_s: float = 15.0
    #: How long requests in flight get to finish when the server stops.
    shutdown_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keepalive_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0, got {getattr(self, name)!r}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections!r}")


OnClose = Callable[[str], None]

#: Where a request's head ends (RFC 9112 § 2.1).
_HEAD_END: Final = b"\r\n\r\n"


class _Refuse(asyncio.Protocol):
    """A connection over the cap: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's protocol, behind a deadline for each request's head."""

    def __init__(self, guard: _Guard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: A request's head is in and its handler runs: its body has its own deadline.
        self.busy = False
        #: The last bytes of the head so far, for an end of head split across reads.
        self._tail = b""

    def arm(self) -> None:
        self.disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout_s, self._expired)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def begin(self) -> None:
        self.disarm()
        self.busy = True

    def end(self) -> None:
        # An idle kept-alive connection is aiohttp's keep-alive timeout's; the next
        # request's head gets its deadline from its first byte (data_received).
        self.busy = False

    def _expired(self) -> None:
        self._timer = None
        transport = self._transport
        if isinstance(transport, asyncio.Transport) and not transport.is_closing():
            self._guard.closed(HEADER_TIMEOUT)
            transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._guard.open[transport] = self
        self.arm()
        self._inner.connection_made(transport)
        if self._guard.stopping and isinstance(transport, asyncio.Transport):
            # Accepted before the server stopped listening, made after its shutdown
            # closed the connections it knew: nothing would close this one.
            transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            if self._timer is None:
                self.arm()
            if _HEAD_END in data or _HEAD_END in self._tail + data[:3]:
                # The head is in: on time, however late the loop gets to its handler.
                self._tail = b""
                self.begin()
            else:
                self._tail = (self._tail + data)[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self._transport is not None:
            self._guard.open.pop(self._transport, None)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Guard:
    """The connections of one server, their deadlines and the cap."""

    def __init__(self, limits: ServerLimits, on_close: OnClose | None) -> None:
        self.limits = limits
        self.on_close = on_close
        self.open: dict[asyncio.BaseTransport, _Guarded] = {}
        #: The server is shutting down: a connection made now is closed at once.
        self.stopping = False

    def closed(self, reason: str) -> None:
        if self.on_close is not None:
            self.on_close(reason)

    def factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            if len(self.open) >= self.limits.max_connections:
                self.closed(OVER_CAP)
                return _Refuse()
            return _Guarded(self, server())

        return make

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        conn = self.open.get(request.transport) if request.transport is not None else None
        if conn is not None:
            conn.begin()
        try:
            if request.body_exists:
                try:
                    async with asyncio.timeout(self.limits.body_timeout_s):
                        await request.read()
                except TimeoutError:
                    self.closed(BODY_TIMEOUT)
                    response = web.Response(status=408, text="request body too slow\n")
                    response.force_close()
                    return response
            return await handler(request)
        finally:
            if conn is not None:
                conn.end()


class _BoundedSite(web.TCPSite):
    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: _Guard) -> None:
        super().__init__(runner, host, port, reuse_address=True, backlog=guard.limits.max_connections)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.factory(server), self._host, self._port, backlog=self._backlog, reuse_address=True
        )


@contextlib.asynccontextmanager
async def bounded_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    limits: ServerLimits | None = None,
    on_close: OnClose | None = None,
    **runner_kwargs: Any,
) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` on ``host:port`` (0: a free port; see ``runner.addresses``) within
    ``limits`` until the block exits."""
    limits = limits or ServerLimits()
    guard = _Guard(limits, on_close)
    app.middlewares.insert(0, guard.middleware)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=limits.keepalive_s,
        lingering_time=limits.body_timeout_s,
        shutdown_timeout=limits.shutdown_s,
        **runner_kwargs,
    )
    await runner.setup()
    try:
        site = _BoundedSite(runner, host, port, guard)
        await site.start()
        yield runner
    finally:
        guard.stopping = True
        await runner.cleanup()
        for transport in list(guard.open):  # any the shutdown left open
            if isinstance(transport, asyncio.Transport) and not transport.is_closing():
                transport.abort()
