"""The echo responders every agent serves: who answered, and whom it saw.

A probe through a Service, a NodePort or an NLB only learns which node served it
because the echo says so, and it only learns whether the client address was
SNATed or preserved because the echo reports the address it saw. The HTTP echo
(aiohttp) answers ``GET /`` with ``{"node", "kind", "client_ip", "client_port"}``
(never the agent's name: that is its key to its pinglist); the UDP echo answers a
datagram that starts with ``PRB1``. ``GET /?size=N`` (the large-payload, MTU probe)
answers the same JSON padded to N bytes, N at most 64 KiB.

The UDP echo must never be an amplifier: a reply is sent only if it is no longer
than the request, so a spoofed source gains nothing. Oversized and malformed
datagrams are dropped and counted. The wire format of both echoes (and the parsing
the probes use) lives here, so server and client cannot drift apart.

The same aiohttp application serves the agent's ``/metrics``, ``/healthz`` and
``/readyz`` (503 once draining), and nothing else: only GETs, nothing that starts
work (a sweep reaches an agent through its pinglist fetch). It is served within
the bounds of :mod:`prober.http_server` (header and body deadlines, a connection
cap). :func:`serve_echo` runs the echoes alone, without probing (``prober echo``):
the backend of the echo Services, the NodePort and the NLB, answering exactly as an
agent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import asyncio_dgram
import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from prober.agent.metrics import EchoMetrics
from prober.http_server import ServerLimits, bounded_site
from prober.model import SrcKind
from prober.settings import MAX_LARGE_PROBE_BYTES

log = logging.getLogger(__name__)

#: First bytes of every UDP echo request and reply.
UDP_MAGIC = b"PRB1"
#: Bytes of the request nonce that follows the magic; the reply repeats it.
NONCE_BYTES = 8
#: Requests larger than this are dropped unanswered (nothing legitimate is bigger).
MAX_UDP_REQUEST = 1400
#: The size probes pad their requests to: room for the reply, under any sane MTU.
UDP_REQUEST_SIZE = 512
#: The HTTP echo and its side endpoints expect no body: a small one is read and ignored.
CLIENT_MAX_SIZE = 16 * 1024


class EchoReply(msgspec.Struct, frozen=True, kw_only=True):
    """What an echo says: which node (and network) answered, and the client it saw."""

    node: str
    kind: SrcKind
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
        return EchoReply(node=self.node, kind=self.kind, client_ip=client_ip, client_port=client_port)


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


@dataclass(slots=True, kw_only=True)
class EchoState:
    """What the HTTP endpoints need from the running agent."""

    identity: EchoIdentity
    registry: CollectorRegistry
    metrics: EchoMetrics
    draining: bool = False
    limits: ServerLimits = field(default_factory=ServerLimits)


_STATE: web.AppKey[EchoState] = web.AppKey("state", EchoState)


def padded(body: bytes, size: int) -> bytes:
    """The echo answer ``body`` (a JSON object) grown to ``size`` bytes by a ``pad`` field.

    Readers of :class:`EchoReply` ignore the field. An answer is never shorter than
    the plain one: a ``size`` below it gets the plain answer.
    """
    room = size - len(body) - len(b',"pad":""')
    if room < 0:
        return body
    return body[:-1] + b',"pad":"' + b"x" * room + b'"}'


def requested_size(query: str | None) -> int | str | None:
    """The answer size ``GET /?size=N`` asks for: ``None`` without one, else N, or why it is refused.

    The echo is network-facing: N is a whole number from 0 to
    :data:`~prober.settings.MAX_LARGE_PROBE_BYTES`, nothing else.
    """
    if query is None:
        return None
    if not query.isdigit() or len(query) > 6 or int(query) > MAX_LARGE_PROBE_BYTES:
        return f"size must be a whole number from 0 to {MAX_LARGE_PROBE_BYTES}"
    return int(query)


async def _echo(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    size = requested_size(request.query.get("size"))
    if isinstance(size, str):
        return web.Response(status=400, text=size + "\n")
    peer = request.transport.get_extra_info("peername") if request.transport else None
    ip, port = (str(peer[0]), int(peer[1])) if peer else ("", 0)
    state.metrics.echo_requests.labels("http" if size is None else "http-large").inc()
    body = _encoder.encode(state.identity.reply(ip, port))
    if size is not None:
        body = padded(body, size)
    resp = web.Response(body=body, content_type="application/json")
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


def make_app(state: EchoState) -> web.Application:
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[_STATE] = state
    app.router.add_get("/", _echo)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


@contextlib.asynccontextmanager
async def serve_http(state: EchoState, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve the HTTP echo and the agent endpoints, within ``state.limits``, until the block exits."""
    closed = state.metrics.http_closed
    async with bounded_site(
        make_app(state), host, port, limits=state.limits, on_close=lambda reason: closed.labels(reason).inc()
    ) as runner:
        yield runner


async def open_udp_echo(host: str, port: int) -> asyncio_dgram.DatagramServer:
    """Bind the UDP echo socket (port 0 picks a free port: see ``.sockname``).

    Bind the address probes are sent to: on a node with several addresses, a reply
    from a wildcard socket leaves with whatever source address routing picks, and a
    connected client discards it.
    """
    return await asyncio_dgram.bind((host, port))


async def serve_udp(
    server: asyncio_dgram.DatagramServer, identity: EchoIdentity, metrics: EchoMetrics
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


async def serve_echo(
    state: EchoState,
    host: str,
    http_port: int,
    udp_port: int,
    stop: asyncio.Event,
    *,
    drain_s: float = 1.0,
    on_serving: Callable[[int, int], None] | None = None,
) -> None:
    """Serve both echoes until ``stop`` is set, then shut down readiness first.

    Once ``stop`` is set ``/readyz`` answers 503 while the echoes go on answering for
    ``drain_s`` (load balancers and kubelet see "not ready" before anything is
    refused), then the listeners close and requests in flight finish.
    ``on_serving(http_port, udp_port)`` is called once both are bound.
    """
    async with serve_http(state, host, http_port) as runner:
        udp = await open_udp_echo(host, udp_port)
        bound_http, bound_udp = int(runner.addresses[0][1]), int(udp.sockname[1])
        log.info(
            "echo %s (%s network on %s): tcp/%d udp/%d on %s",
            state.identity.agent, state.identity.kind.value, state.identity.node, bound_http, bound_udp, host,
        )  # fmt: skip
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(serve_udp(udp, state.identity, state.metrics))
            if on_serving is not None:
                on_serving(bound_http, bound_udp)
            await stop.wait()
            log.info("shutdown: not ready any more; echo answers for %gs more", drain_s)
            state.draining = True
            await asyncio.sleep(drain_s)
            task.cancel()
    log.info("shutdown: done")
