"""One probe = one small async function that returns a ``ProbeResult``, never raises.

Every TCP and HTTP probe opens a new socket and so a new source port: no keep-alive,
no pooling. A reused connection would hide exactly what prober exists to see (a
dropped SYN, a conntrack entry that went stale, a 5-tuple that collides inside an
NLB). The local address of that socket is recorded (``src_ip``, ``src_port``), also
for failures, so a failure can be matched against packet captures and flow logs.

Errors are mapped to the most specific :class:`~prober.model.Outcome` in one place
(:func:`outcome_of`): RST to a SYN is ``refused``, a reset after the handshake is
``reset``, an ICMP host/net unreachable (or no route) is ``unreachable``, silence is
``timeout`` before the handshake completed and ``stalled`` after it, an answer that
is not an echo is ``bad_response``. Only
``CancelledError`` propagates.

The socket work uses the event loop's primitives directly (non-blocking
``connect_ex`` plus a writer callback, ``sock_recv``): this is the agent's hot path,
and a client library's per-request machinery costs several times the syscalls it
wraps. The HTTP/1.1 exchange is one fixed request and a strict parse of the answer.

Latency is measured with the loop's monotonic clock; the wall-clock ``ts`` of the
record is passed in by the caller (the round loop decides when a probe "happened").
The default timeout is 5 s so that a success after the first (1 s) or second (3 s)
SYN retransmit shows up as a latency, not as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prober.agent.dnswire import NOERROR, BadNameError, a_query, response_rcode
from prober.agent.echo import NONCE_BYTES, EchoReply, decode_echo, parse_udp_reply, udp_request
from prober.model import TCP_PROTOS, Outcome, ProbeResult, Proto, SrcKind, path_of
from prober.pinglist import ProbeTarget
from prober.settings import LARGE_PROBE_BYTES, MAX_LARGE_PROBE_BYTES, TIMEOUT

log = logging.getLogger(__name__)

#: The most bytes an HTTP echo answer may have; anything longer is not an echo.
MAX_HTTP_RESPONSE = 16 * 1024
#: The most a large-payload probe's answer may have: the largest size it may ask for, and a head.
MAX_LARGE_HTTP_RESPONSE = MAX_LARGE_PROBE_BYTES + MAX_HTTP_RESPONSE
_RECV = 4096
_RECV_LARGE = 65536
#: Linux: reserve the source port at connect() time, not at bind(): binding a source
#: address with port 0 would otherwise take a port for every destination at once.
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

_UNREACHABLE_ERRNOS = frozenset(
    {
        errno.EHOSTUNREACH,  # ICMP host unreachable / admin prohibited, or ARP/ND failed
        errno.ENETUNREACH,  # ICMP net unreachable, or no route from here
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.ENONET,
        errno.EADDRNOTAVAIL,  # the source address is not (or no longer) ours
        errno.EPERM,  # dropped by a local firewall rule on the way out
        errno.EACCES,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeContext:
    """Who probes, from where, and how long to wait: the same for every probe of an agent."""

    src_node: str
    src_kind: SrcKind
    #: Bind probes to this local address (a loopback mesh, a specific ENI); None: routing picks.
    source_ip: str | None = None
    timeout_s: float = TIMEOUT.default
    user_agent: str = "prober"
    #: The answer size a large-payload (``http-large``) probe asks the echo for.
    large_probe_bytes: int = LARGE_PROBE_BYTES.default


_reported_errnos: set[int] = set()


def outcome_of(exc: OSError) -> Outcome:
    """The outcome an OS error means. The one place errors become data."""
    if isinstance(exc, TimeoutError) or exc.errno == errno.ETIMEDOUT:
        return Outcome.TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return Outcome.REFUSED
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return Outcome.RESET
    if isinstance(exc, socket.gaierror):
        return Outcome.DNS_ERROR
    if exc.errno not in _UNREACHABLE_ERRNOS and exc.errno not in _reported_errnos:
        # Not a network verdict (out of file descriptors, ...): say so once, loudly.
        _reported_errnos.add(exc.errno or 0)
        log.warning("probe failed with a local error, recorded as unreachable: %s", exc)
    return Outcome.UNREACHABLE


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(_family(host), host)
    except OSError:
        return False
    return True


def new_socket(family: socket.AddressFamily, kind: socket.SocketKind, source_ip: str | None) -> socket.socket:
    """A non-blocking socket, bound to ``source_ip`` (port chosen at connect) if given."""
    sock = socket.socket(family, kind)
    try:
        sock.settimeout(0.0)  # non-blocking
        if source_ip:
            if kind == socket.SOCK_STREAM:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source_ip, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def bind_same_port(
    count: int, family: socket.AddressFamily, kind: socket.SocketKind, source_ip: str | None
) -> list[socket.socket]:
    """``count`` sockets bound to one local address and port (SO_REUSEADDR + SO_REUSEPORT).

    Each then connects to a different destination, so every 4-tuple stays unique on
    this host; behind an NLB that rewrites destinations they may not stay unique,
    which is the cross-zone 5-tuple collision the group exists to provoke.
    """
    host = source_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    socks: list[socket.socket] = []
    try:
        port = 0
        for _ in range(count):
            sock = socket.socket(family, kind)
            socks.append(sock)
            sock.settimeout(0.0)  # non-blocking
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def _local(sock: socket.socket) -> tuple[str | None, int | None]:
    try:
        name = sock.getsockname()
    except OSError:
        return None, None
    ip, port = str(name[0]), int(name[1])
    if port == 0:
        return None, None
    return (None if ip in ("0.0.0.0", "::") else ip), port


class _Probe:
    """Result building shared by every probe: fields that come from the target and context."""

    __slots__ = ("ctx", "echo", "local_ip", "local_port", "target", "ts")

    def __init__(self, target: ProbeTarget, ctx: ProbeContext, ts: float) -> None:
        self.target = target
        self.ctx = ctx
        self.ts = ts
        self.local_ip: str | None = None
        self.local_port: int | None = None
        self.echo: EchoReply | None = None

    def local(self, sock: socket.socket) -> None:
        if self.local_port is None:
            self.local_ip, self.local_port = _local(sock)

    def result(self, outcome: Outcome, latency_s: float | None = None) -> ProbeResult:
        t, echo = self.target, self.echo
        return ProbeResult(
            ts=self.ts,
            path=path_of(self.ctx.src_kind, t.kind),
            src_node=self.ctx.src_node,
            src_kind=self.ctx.src_kind,
            src_ip=self.local_ip,
            src_port=self.local_port,
            target=t.target,
            target_ip=t.ip,
            target_port=t.port,
            proto=t.proto,
            dst_node=echo.node if echo is not None else t.dst_node,
            dst_kind=echo.kind if echo is not None else t.dst_kind,
            outcome=outcome,
            latency_s=latency_s,
            seen_src_ip=echo.client_ip if echo is not None else None,
        )


def _writable(fut: asyncio.Future[float], loop: asyncio.AbstractEventLoop, fd: int) -> None:
    # Unwatched at once: the socket stays writable, and a level-triggered watch would wake
    # the loop again before the probe's task runs.
    loop.remove_writer(fd)
    if not fut.done():
        fut.set_result(loop.time())


async def _connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, addr: tuple[str, int], p: _Probe
) -> float:
    """Connect ``sock``; returns the loop time the handshake completed. Raises ``OSError``.

    The local address is taken right after the SYN is sent, so a probe that times out
    still says which source port it used.
    """
    err = sock.connect_ex(addr)
    p.local(sock)
    if err == 0:
        return loop.time()
    if err != errno.EINPROGRESS:
        raise OSError(err, os.strerror(err))
    fut: asyncio.Future[float] = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, _writable, fut, loop, fd)
    try:
        done = await fut
    finally:
        if fut.cancelled() or not fut.done():  # timed out: the callback never ran
            loop.remove_writer(fd)
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))
    return done


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int, kind: socket.SocketKind) -> str:
    """An IP literal for ``host`` (external targets may be names)."""
    if _is_ip(host):
        return host
    infos = await loop.getaddrinfo(host, port, type=kind)
    return str(infos[0][4][0])


async def probe_tcp(
    target: ProbeTarget, ctx: ProbeContext, *, ts: float, sock: socket.socket | None = None
) -> ProbeResult:
    """TCP connect: ``ok`` once the handshake completes; latency is the handshake."""
    loop = asyncio.get_running_loop()
    p = _Probe(target, ctx, ts)
    try:
        async with asyncio.timeout(ctx.timeout_s):
            ip = await _resolve(loop, target.ip, target.port, socket.SOCK_STREAM)
            if sock is None:
                sock = new_socket(_family(ip), socket.SOCK_STREAM, ctx.source_ip)
            t0 = loop.time()
            done = await _connect(loop, sock, (ip, target.port), p)
        return p.result(Outcome.OK, max(0.0, done - t0))
    except TimeoutError:
        return p.result(Outcome.TIMEOUT)
    except OSError as exc:
        return p.result(outcome_of(exc))
    finally:
        if sock is not None:
            sock.close()


class BadResponseError(Exception):
    """The peer answered, but not with what the probe asked for."""


def http_request(host: str, port: int, user_agent: str, size: int | None = None) -> bytes:
    """The echo request; with ``size``, for an answer of that many bytes (``GET /?size=N``)."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    target = "/" if size is None else f"/?size={size}"
    return (
        f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {user_agent}\r\n"
        "Accept: application/json\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


def parse_http_response(
    data: bytes, *, eof: bool, limit: int = MAX_HTTP_RESPONSE
) -> tuple[int, bytes] | None:
    """(status, body) of a complete HTTP/1.x response; ``None`` while more bytes are needed.

    Strict on purpose: anything that is not a well-formed, length-delimited (or
    close-delimited) response raises :class:`BadResponseError`. Chunked encoding is not
    accepted: the echo never sends it, so whoever does is not the echo.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if eof or len(data) > limit:
            raise BadResponseError("incomplete response head")
        return None
    status_line, *header_lines = data[:end].split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
        raise BadResponseError(f"not an HTTP status line: {status_line[:40]!r}")
    status = int(parts[1])
    length: int | None = None
    for line in header_lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise BadResponseError(f"malformed header line: {line[:40]!r}")
        lname = name.lower()
        if lname == b"content-length":
            v = value.strip()
            if not v.isdigit() or (length is not None and int(v) != length):
                raise BadResponseError("bad Content-Length")
            length = int(v)
        elif lname == b"transfer-encoding":
            raise BadResponseError("transfer-encoding is not expected from an echo")
    body = data[end + 4 :]
    if length is None:
        return (status, body) if eof else None
    if length > limit:
        raise BadResponseError("response too large for an echo")
    if len(body) >= length:
        return status, body[:length]
    if eof:
        raise BadResponseError("response body cut short")
    return None


async def probe_http(
    target: ProbeTarget, ctx: ProbeContext, *, ts: float, sock: socket.socket | None = None
) -> ProbeResult:
    """HTTP GET of an echo on a new connection: ``ok`` with the serving node and the client IP it saw.

    Latency runs from the SYN to the complete answer. Silence before the handshake
    completed is ``timeout``; once connected, an answer that does not complete in
    time is ``stalled`` (connected, then stalled: the MTU black hole's signature on
    a large answer). An ``http-large`` probe asks for ``ctx.large_probe_bytes`` bytes
    (``GET /?size=N``), needs at least that many back, and has half the timeout for
    them once connected.
    """
    loop = asyncio.get_running_loop()
    p = _Probe(target, ctx, ts)
    large = target.proto is Proto.HTTP_LARGE
    size = ctx.large_probe_bytes if large else None
    limit = MAX_LARGE_HTTP_RESPONSE if large else MAX_HTTP_RESPONSE
    recv = _RECV_LARGE if large else _RECV
    connected = False
    try:
        async with asyncio.timeout(ctx.timeout_s):
            ip = await _resolve(loop, target.ip, target.port, socket.SOCK_STREAM)
            if sock is None:
                sock = new_socket(_family(ip), socket.SOCK_STREAM, ctx.source_ip)
            t0 = loop.time()
            await _connect(loop, sock, (ip, target.port), p)
            connected = True
            # A large answer has half the timeout from the handshake: a black hole's stall
            # is reported that much sooner, and a working path moves 9 kB in a few RTTs.
            async with asyncio.timeout(ctx.timeout_s / 2 if large else None):
                await loop.sock_sendall(sock, http_request(target.ip, target.port, ctx.user_agent, size))
                buf = b""
                while True:
                    chunk = await loop.sock_recv(sock, recv)
                    buf += chunk
                    answer = parse_http_response(buf, eof=not chunk, limit=limit)
                    if answer is not None:
                        break
            t1 = loop.time()
        status, body = answer
        echo = decode_echo(body) if status == 200 and (size is None or len(body) >= size) else None
        if echo is None:
            return p.result(Outcome.BAD_RESPONSE, t1 - t0)
        p.echo = echo
        return p.result(Outcome.OK, t1 - t0)
    except TimeoutError:
        return p.result(Outcome.STALLED if connected else Outcome.TIMEOUT)
    except BadResponseError:
        return p.result(Outcome.BAD_RESPONSE)
    except OSError as exc:
        return p.result(outcome_of(exc))
    finally:
        if sock is not None:
            sock.close()


async def _datagram_exchange(
    loop: asyncio.AbstractEventLoop,
    target: ProbeTarget,
    *,
    ctx: ProbeContext,
    p: _Probe,
    sock: socket.socket | None,
    request: bytes,
    accept: Callable[[bytes], Outcome],
) -> tuple[Outcome, float]:
    """Send one datagram on a connected UDP socket and classify the first reply.

    Connecting the socket is what makes an ICMP port unreachable come back as
    ``ECONNREFUSED`` (``refused``) instead of silence.
    """
    own = sock is None
    try:
        async with asyncio.timeout(ctx.timeout_s):
            ip = await _resolve(loop, target.ip, target.port, socket.SOCK_DGRAM)
            if sock is None:
                sock = new_socket(_family(ip), socket.SOCK_DGRAM, ctx.source_ip)
            sock.connect((ip, target.port))
            p.local(sock)
            t0 = loop.time()
            await loop.sock_sendall(sock, request)
            data = await loop.sock_recv(sock, 2048)
            return accept(data), loop.time() - t0
    finally:
        if own and sock is not None:
            sock.close()


async def probe_udp(
    target: ProbeTarget, ctx: ProbeContext, *, ts: float, sock: socket.socket | None = None
) -> ProbeResult:
    """One datagram to a UDP echo; ``ok`` when the reply carries our nonce."""
    loop = asyncio.get_running_loop()
    p = _Probe(target, ctx, ts)
    nonce = os.urandom(NONCE_BYTES)

    def accept(data: bytes) -> Outcome:
        p.echo = parse_udp_reply(data, nonce)
        return Outcome.OK if p.echo is not None else Outcome.BAD_RESPONSE

    try:
        outcome, latency = await _datagram_exchange(
            loop, target, ctx=ctx, p=p, sock=sock, request=udp_request(nonce), accept=accept
        )
        return p.result(outcome, latency)
    except TimeoutError:
        return p.result(Outcome.TIMEOUT)
    except OSError as exc:
        return p.result(outcome_of(exc))
    finally:
        if sock is not None:
            sock.close()


async def probe_dns(
    target: ProbeTarget, ctx: ProbeContext, *, ts: float, sock: socket.socket | None = None
) -> ProbeResult:
    """One A query over UDP. Any NOERROR answer is ``ok``: the resolver works.

    NXDOMAIN, SERVFAIL, REFUSED, ... are ``dns_error``; silence is ``timeout`` (the
    ~5 s conntrack-race timeouts this probe exists to count); an answer that is not a
    DNS response to our query is ``bad_response``. A name that cannot be put in a query
    is a ``dns_error`` (nothing is sent).
    """
    loop = asyncio.get_running_loop()
    p = _Probe(target, ctx, ts)

    def accept(data: bytes) -> Outcome:
        rcode = response_rcode(data, query)
        if rcode is None:
            return Outcome.BAD_RESPONSE
        return Outcome.OK if rcode == NOERROR else Outcome.DNS_ERROR

    try:
        query = a_query(target.query or ".", int.from_bytes(os.urandom(2), "big"))
        outcome, latency = await _datagram_exchange(
            loop, target, ctx=ctx, p=p, sock=sock, request=query, accept=accept
        )
        return p.result(outcome, latency)
    except TimeoutError:
        return p.result(Outcome.TIMEOUT)
    except BadNameError as exc:
        log.warning("dns probe of %s: %s", target.target, exc)
        return p.result(Outcome.DNS_ERROR)
    except OSError as exc:
        return p.result(outcome_of(exc))
    finally:
        if sock is not None:
            sock.close()


class ProbeFn(Protocol):
    def __call__(
        self, target: ProbeTarget, ctx: ProbeContext, *, ts: float, sock: socket.socket | None = None
    ) -> Coroutine[Any, Any, ProbeResult]: ...


PROBES: dict[Proto, ProbeFn] = {
    Proto.TCP: probe_tcp,
    Proto.HTTP: probe_http,
    Proto.UDP: probe_udp,
    Proto.DNS: probe_dns,
    Proto.HTTP_LARGE: probe_http,
}


def run_probe(
    target: ProbeTarget, ctx: ProbeContext, *, ts: float, sock: socket.socket | None = None
) -> Coroutine[Any, Any, ProbeResult]:
    """The probe for ``target``'s protocol (the socket, if given, is used and closed)."""
    return PROBES[target.proto](target, ctx, ts=ts, sock=sock)


def _sock_kind(proto: Proto) -> socket.SocketKind:
    return socket.SOCK_STREAM if proto in TCP_PROTOS else socket.SOCK_DGRAM


async def probe_same_port(
    targets: Sequence[ProbeTarget], ctx: ProbeContext, *, ts: float
) -> list[ProbeResult]:
    """Probe ``targets`` concurrently from one local port (the NLB 5-tuple collision check).

    Targets that need a different socket type or address family get their own shared
    port. If the shared bind fails, each target is probed from its own port instead:
    the probe still runs, only the collision check is lost for this round.
    """
    sockets: list[socket.socket | None] = [None] * len(targets)
    groups: dict[tuple[socket.AddressFamily, socket.SocketKind], list[int]] = {}
    for i, t in enumerate(targets):
        if _is_ip(t.ip):
            groups.setdefault((_family(t.ip), _sock_kind(t.proto)), []).append(i)
    for (family, kind), idxs in groups.items():
        if len(idxs) < 2:
            continue
        try:
            socks = bind_same_port(len(idxs), family, kind, ctx.source_ip)
        except OSError as exc:
            log.warning("same-source-port bind failed, probing from separate ports: %s", exc)
            continue
        for i, bound in zip(idxs, socks, strict=True):
            sockets[i] = bound
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(run_probe(t, ctx, ts=ts, sock=s))
                for t, s in zip(targets, sockets, strict=True)
            ]
    finally:
        for leftover in sockets:
            if leftover is not None:
                leftover.close()
    return [t.result() for t in tasks]
