"""The echo responders every agent serves: who answered, and whom it saw.

A probe through a Service, a NodePort or an NLB only learns which node served it
because the echo says so, and it only learns whether the client address was
SNATed or preserved because the echo reports the address it saw. The HTTP echo
(aiohttp) answers ``GET /`` with ``{"node", "kind", "agent", "client_ip",
"client_port"}``; the UDP echo answers a datagram that starts with ``PRB1``.

The UDP echo must never be an amplifier: a reply is sent only if it is no longer
than the request, so a spoofed source gains nothing. Oversized and malformed
datagrams are dropped and counted. The wire format of both echoes (and the parsing
the probes use) lives here, so server and client cannot drift apart.

The same aiohttp application serves the agent's ``/metrics``, ``/healthz``,
``/readyz`` (503 once draining) and ``POST /sweep``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

import asyncio_dgram
import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from prober.agent.metrics import AgentMetrics
from prober.model import ProbeResult, SrcKind
from prober.records import encode_record

log = logging.getLogger(__name__)

#: First bytes of every UDP echo request and reply.
UDP_MAGIC = b"PRB1"
#: Bytes of the request nonce that follows the magic; the reply repeats it.
NONCE_BYTES = 8
#: Requests larger than this are dropped unanswered (nothing legitimate is bigger).
MAX_UDP_REQUEST = 1400
#: The size probes pad their requests to: room for the reply, under any sane MTU.
UDP_REQUEST_SIZE = 512
#: The HTTP echo and its side endpoints take small bodies only (a sweep's options).
CLIENT_MAX_SIZE = 16 * 1024


class EchoReply(msgspec.Struct, frozen=True, kw_only=True):
    """What an echo says: which agent on which node answered, and the client it saw."""

    node: str
    kind: SrcKind
    agent: str
    client_ip: str
    client_port: int


_reply_decoder = msgspec.json.Decoder(EchoReply)
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoIdentity:
    node: str
    kind: SrcKind
    agent: str

    def reply(self, client_ip: str, client_port: int) -> EchoReply:
        return EchoReply(
            node=self.node, kind=self.kind, agent=self.agent, client_ip=client_ip, client_port=client_port
        )


def decode_echo(body: bytes) -> EchoReply | None:
    """The echo answer in ``body``, or ``None`` if it is not one."""
    try:
        return _reply_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


# --- UDP echo wire format (pure) -------------------------------------------------


def udp_request(nonce: bytes, size: int = UDP_REQUEST_SIZE) -> bytes:
    """``PRB1`` + nonce, zero-padded to ``size`` so the reply fits under the no-amplification rule."""
    head = UDP_MAGIC + nonce
    return head + bytes(max(0, size - len(head)))


class UdpDrop(msgspec.Struct, frozen=True):
    """Why a datagram got no answer (the ``reason`` label of the drop counter)."""

    reason: str


def udp_reply(datagram: bytes, identity: EchoIdentity, client: tuple[str, int]) -> bytes | UdpDrop:
    """The reply to one datagram, or why there is none."""
    if len(datagram) > MAX_UDP_REQUEST:
        return UdpDrop("oversize")
    if len(datagram) < len(UDP_MAGIC) + NONCE_BYTES or not datagram.startswith(UDP_MAGIC):
        return UdpDrop("malformed")
    nonce = datagram[len(UDP_MAGIC) : len(UDP_MAGIC) + NONCE_BYTES]
    reply = UDP_MAGIC + nonce + _encoder.encode(identity.reply(client[0], client[1]))
    if len(reply) > len(datagram):
        return UdpDrop("amplification")
    return reply


def parse_udp_reply(data: bytes, nonce: bytes) -> EchoReply | None:
    """The echo answer in a UDP reply to the request carrying ``nonce``, or ``None``."""
    head = UDP_MAGIC + nonce
    if not data.startswith(head):
        return None
    return decode_echo(data[len(head) :])


# --- servers ----------------------------------------------------------------------

#: Starts a sweep (optional timeout override): results as they complete, or ``None``
#: when there is nothing to sweep yet (no pinglist).
SweepFn = Callable[[float | None], AsyncGenerator[ProbeResult, None] | None]


@dataclass(slots=True, kw_only=True)
class EchoState:
    """What the HTTP endpoints need from the running agent."""

    identity: EchoIdentity
    registry: CollectorRegistry
    metrics: AgentMetrics
    sweep: SweepFn | None = None
    draining: bool = False


class SweepRequest(msgspec.Struct, frozen=True, kw_only=True):
    timeout_s: float | None = None


_STATE: web.AppKey[EchoState] = web.AppKey("state", EchoState)


async def _echo(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    peer = request.transport.get_extra_info("peername") if request.transport else None
    ip, port = (str(peer[0]), int(peer[1])) if peer else ("", 0)
    state.metrics.echo_requests.labels("http").inc()
    resp = web.Response(body=_encoder.encode(state.identity.reply(ip, port)), content_type="application/json")
    # Closing keeps the echo honest about what prober measures: a new connection
    # (and a new 5-tuple) per probe, never a kept-alive one.
    resp.force_close()
    return resp


async def _metrics(request: web.Request) -> web.Response:
    registry = request.app[_STATE].registry
    resp = web.Response(body=generate_latest(registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    resp.charset = "utf-8"
    return resp


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    if request.app[_STATE].draining:
        return web.Response(status=503, text="draining\n")
    return web.Response(text="ready\n")


def _json_error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, body=_encoder.encode({"error": message}), content_type="application/json"
    )


async def _sweep(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    if state.draining:
        return _json_error(503, "agent is shutting down")
    raw = await request.read()
    try:
        opts = msgspec.json.decode(raw, type=SweepRequest) if raw.strip() else SweepRequest()
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return _json_error(400, f"bad sweep request: {exc}")
    if opts.timeout_s is not None and not 0 < opts.timeout_s <= 60:
        return _json_error(400, "timeout_s must be in (0, 60]")
    results = state.sweep(opts.timeout_s) if state.sweep is not None else None
    if results is None:
        return _json_error(503, "no pinglist yet: this agent has nothing to sweep")
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    async with contextlib.aclosing(results):
        await resp.prepare(request)
        async for result in results:
            await resp.write(encode_record(result) + b"\n")
    await resp.write_eof()
    return resp


def make_app(state: EchoState) -> web.Application:
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[_STATE] = state
    app.router.add_get("/", _echo)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_post("/sweep", _sweep)
    return app


@contextlib.asynccontextmanager
async def serve_http(state: EchoState, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve the HTTP echo and the agent endpoints until the block exits."""
    runner = web.AppRunner(make_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        yield runner
    finally:
        await runner.cleanup()


async def open_udp_echo(host: str, port: int) -> asyncio_dgram.DatagramServer:
    """Bind the UDP echo socket (port 0 picks a free port: see ``.sockname``).

    Bind the address probes are sent to: on a node with several addresses, a reply
    from a wildcard socket leaves with whatever source address routing picks, and a
    connected client discards it.
    """
    return await asyncio_dgram.bind((host, port))


async def serve_udp(
    server: asyncio_dgram.DatagramServer, identity: EchoIdentity, metrics: AgentMetrics
) -> None:
    """Answer UDP echo requests on ``server`` until cancelled; closes it on the way out."""
    try:
        while True:
            try:
                data, addr = await server.recv()
            except OSError as exc:  # ICMP errors from earlier replies surface here
                log.debug("udp echo: %s", exc)
                continue
            if not isinstance(addr, tuple):
                continue
            out = udp_reply(data, identity, (str(addr[0]), int(addr[1])))
            if isinstance(out, UdpDrop):
                metrics.echo_dropped.labels(out.reason).inc()
                continue
            metrics.echo_requests.labels("udp").inc()
            try:
                await server.send(out, addr)
            except OSError as exc:
                log.debug("udp echo reply to %s failed: %s", addr, exc)
    finally:
        server.close()
