"""One probe = one small exchange on its own socket that ends in a ``ProbeResult``, never raises.

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

The socket work is the event loop's reader, writer and timer callbacks on a
non-blocking socket (:class:`_Exchange`), with no task or future per probe: this is
the agent's hot path, and a client library's per-request machinery, or even a task
per probe, costs more than the syscalls it wraps. The round loop starts a probe with
:func:`start_probe`; :func:`run_probe` is the same exchange awaited (sweeps, the
same-source-port groups, names to resolve). The HTTP/1.1 exchange is one fixed
request and a strict parse of the answer.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


#: A probe's result goes here, once, when it ends.
Done = Callable[[ProbeResult], None]


class _Exchange:
    """One probe on its own socket, driven by the event loop's callbacks: no task, no future.

    At the agent's rates from ~200 nodes up (2.5 to 12.5 probes a second) a probe is cheap next
    to what asyncio spends carrying it: a task per probe, its timeout's handle, a future
    per wait and a loop iteration for each resumption. Driven from reader, writer and
    timer callbacks, as the loop's own transports are, the agent's TCP probes at 12.5/s
    cost what ``bench/agent_throughput.py``'s floor does (a bare loop awaiting
    ``loop.sock_connect`` in a task per probe), where they cost 1.14 times as much.

    :meth:`start` sends the first packet; the result goes to ``done`` exactly once, from a
    callback (or from :meth:`start` itself when the kernel answers at once); the socket is
    closed and nothing stays watched on the loop. :meth:`cancel` stops it without a
    result. A subclass is one protocol's exchange: what to send once connected, what an
    answer means. The clock starts when the exchange is made (a name's resolution, if
    any, counts against the timeout).
    """

    __slots__ = (
        "connected",
        "ctx",
        "deadline",
        "done",
        "echo",
        "ended",
        "fd",
        "local_ip",
        "local_port",
        "loop",
        "reading",
        "sock",
        "t0",
        "target",
        "timer",
        "ts",
        "writing",
    )

    kind = socket.SOCK_STREAM

    def __init__(
        self, target: ProbeTarget, ctx: ProbeContext, ts: float, sock: socket.socket | None, done: Done
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.target, self.ctx, self.ts, self.sock, self.done = target, ctx, ts, sock, done
        self.local_ip: str | None = None
        self.local_port: int | None = None
        self.echo: EchoReply | None = None
        self.connected = self.ended = self.reading = self.writing = False
        self.fd = -1
        self.t0 = self.loop.time()
        self.deadline = self.t0 + ctx.timeout_s
        self.timer: asyncio.TimerHandle | None = self.loop.call_at(self.deadline, self._timed_out)

    # ---- the result -------------------------------------------------------------------

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

    def finish(self, outcome: Outcome, latency_s: float | None = None) -> None:
        """End the probe with this outcome (once; later calls do nothing)."""
        if self.ended:
            return
        self._release()
        self.done(self.result(outcome, latency_s))

    def fail(self, exc: OSError) -> None:
        self.finish(outcome_of(exc))

    def cancel(self) -> None:
        """Stop without a result: the socket closed, nothing left on the loop."""
        if not self.ended:
            self._release()

    def _release(self) -> None:
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._unwatch()
        if self.sock is not None:
            self.sock.close()

    def _unwatch(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False
        if self.writing:
            self.loop.remove_writer(self.fd)
            self.writing = False

    def _timed_out(self) -> None:
        self.timer = None
        self.finish(Outcome.STALLED if self.connected else Outcome.TIMEOUT)

    # ---- the exchange -----------------------------------------------------------------

    def start(self, ip: str) -> None:
        """Open the socket (unless given) and send the first packet to ``ip`` (a literal)."""
        if self.ended:  # timed out while the name was being resolved
            return
        try:
            if self.sock is None:
                self.sock = new_socket(_family(ip), self.kind, self.ctx.source_ip)
            self.fd = self.sock.fileno()
            self.t0 = self.loop.time()
            self.open(ip)
        except OSError as exc:
            self.fail(exc)

    def open(self, ip: str) -> None:
        """A stream's: a non-blocking connect, watched for writability. The local address
        is taken right after the SYN is sent, so a probe that times out still says which
        source port it used."""
        sock = self.sock
        assert sock is not None
        err = sock.connect_ex((ip, self.target.port))
        self._local()
        if err == 0:
            self._handshake_done()
        elif err == errno.EINPROGRESS:
            self.loop.add_writer(self.fd, self._writable)
            self.writing = True
        else:
            self.fail(OSError(err, os.strerror(err)))

    def _local(self) -> None:
        if self.local_port is None and self.sock is not None:
            self.local_ip, self.local_port = _local(self.sock)

    def _writable(self) -> None:
        # Unwatched at once: the socket stays writable, and a level-triggered watch would
        # wake the loop again.
        self.loop.remove_writer(self.fd)
        self.writing = False
        assert self.sock is not None
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fail(OSError(err, os.strerror(err)))
        else:
            self._handshake_done()

    def _handshake_done(self) -> None:
        self.connected = True
        self.connected_at(self.loop.time())

    def connected_at(self, now: float) -> None:
        """What a stream does once its handshake completed (a connect probe: done)."""
        self.finish(Outcome.OK, max(0.0, now - self.t0))


class _TcpConnect(_Exchange):
    """TCP connect: ``ok`` once the handshake completes; latency is the handshake."""

    __slots__ = ()


class _HttpGet(_Exchange):
    """HTTP GET of an echo on a new connection: ``ok`` with the serving node and the
    client IP it saw.

    Latency runs from the SYN to the complete answer. Silence before the handshake
    completed is ``timeout``; once connected, an answer that does not complete in
    time is ``stalled`` (connected, then stalled: the MTU black hole's signature on
    a large answer). An ``http-large`` probe asks for ``ctx.large_probe_bytes`` bytes
    (``GET /?size=N``), needs at least that many back, and has half the timeout for
    them once connected: a black hole's stall is reported that much sooner, and a
    working path moves 9 kB in a few RTTs.
    """

    __slots__ = ("buf", "out", "size")
    buf: bytes
    out: bytes
    size: int | None

    def connected_at(self, now: float) -> None:
        large = self.target.proto is Proto.HTTP_LARGE
        self.size = self.ctx.large_probe_bytes if large else None
        if large and now + self.ctx.timeout_s / 2 < self.deadline:
            assert self.timer is not None
            self.timer.cancel()
            self.deadline = now + self.ctx.timeout_s / 2
            self.timer = self.loop.call_at(self.deadline, self._timed_out)
        t = self.target
        self.out = http_request(t.ip, t.port, self.ctx.user_agent, self.size)
        self.buf = b""
        self._send()

    def _send(self) -> None:
        assert self.sock is not None
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.fail(exc)
            return
        self.out = self.out[sent:]
        if self.out:
            if not self.writing:
                self.loop.add_writer(self.fd, self._send)
                self.writing = True
            return
        if self.writing:
            self.loop.remove_writer(self.fd)
            self.writing = False
        self.loop.add_reader(self.fd, self._readable)
        self.reading = True

    def _readable(self) -> None:
        assert self.sock is not None
        large = self.size is not None
        try:
            chunk = self.sock.recv(_RECV_LARGE if large else _RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(exc)
            return
        self.buf += chunk
        try:
            answer = parse_http_response(
                self.buf, eof=not chunk, limit=MAX_LARGE_HTTP_RESPONSE if large else MAX_HTTP_RESPONSE
            )
        except BadResponseError:
            self.finish(Outcome.BAD_RESPONSE)
            return
        if answer is None:
            return
        latency = self.loop.time() - self.t0
        status, body = answer
        whole = self.size is None or len(body) >= self.size
        self.echo = decode_echo(body) if status == 200 and whole else None
        self.finish(Outcome.BAD_RESPONSE if self.echo is None else Outcome.OK, latency)


class _Datagram(_Exchange):
    """One datagram on a connected UDP socket; the first reply decides.

    Connecting the socket is what makes an ICMP port unreachable come back as
    ``ECONNREFUSED`` (``refused``) instead of silence.
    """

    __slots__ = ("request",)
    request: bytes

    kind = socket.SOCK_DGRAM

    def open(self, ip: str) -> None:
        sock = self.sock
        assert sock is not None
        sock.connect((ip, self.target.port))
        self._local()
        self.t0 = self.loop.time()
        sock.send(self.request)  # whole or not at all; a fresh socket's buffer is empty
        self.loop.add_reader(self.fd, self._readable)
        self.reading = True

    def _readable(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(2048)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(exc)
            return
        latency = self.loop.time() - self.t0
        self.finish(self.accept(data), latency)

    def accept(self, data: bytes) -> Outcome:
        raise NotImplementedError


class _UdpEcho(_Datagram):
    """One datagram to a UDP echo; ``ok`` when the reply carries our nonce."""

    __slots__ = ("nonce",)
    nonce: bytes

    def __init__(
        self, target: ProbeTarget, ctx: ProbeContext, ts: float, sock: socket.socket | None, done: Done
    ) -> None:
        super().__init__(target, ctx, ts, sock, done)
        self.nonce = os.urandom(NONCE_BYTES)
        self.request = udp_request(self.nonce)

    def accept(self, data: bytes) -> Outcome:
        self.echo = parse_udp_reply(data, self.nonce)
        return Outcome.OK if self.echo is not None else Outcome.BAD_RESPONSE


class _DnsQuery(_Datagram):
    """One A query over UDP. Any NOERROR answer is ``ok``: the resolver works.

    NXDOMAIN, SERVFAIL, REFUSED, ... are ``dns_error``; silence is ``timeout`` (the
    ~5 s conntrack-race timeouts this probe exists to count); an answer that is not a
    DNS response to our query is ``bad_response``. A name that cannot be put in a query
    is a ``dns_error`` (nothing is sent).
    """

    __slots__ = ()

    def start(self, ip: str) -> None:
        try:
            self.request = a_query(self.target.query or ".", int.from_bytes(os.urandom(2), "big"))
        except BadNameError as exc:
            log.warning("dns probe of %s: %s", self.target.target, exc)
            self.finish(Outcome.DNS_ERROR)
            return
        super().start(ip)

    def accept(self, data: bytes) -> Outcome:
        rcode = response_rcode(data, self.request)
        if rcode is None:
            return Outcome.BAD_RESPONSE
        return Outcome.OK if rcode == NOERROR else Outcome.DNS_ERROR


_EXCHANGES: dict[Proto, type[_Exchange]] = {
    Proto.TCP: _TcpConnect,
    Proto.HTTP: _HttpGet,
    Proto.HTTP_LARGE: _HttpGet,
    Proto.UDP: _UdpEcho,
    Proto.DNS: _DnsQuery,
}


def start_probe(
    target: ProbeTarget, ctx: ProbeContext, *, ts: float, done: Done
) -> Callable[[], None] | None:
    """Start ``target``'s probe now, on the running loop, without a task: its result goes to
    ``done`` once (possibly before this returns). Returns what cancels it (without a
    result), or None when ``target`` is a name to resolve first (:func:`run_probe` does)."""
    if not _is_ip(target.ip):
        return None
    exchange = _EXCHANGES[target.proto](target, ctx, ts, None, done)
    exchange.start(target.ip)
    return exchange.cancel


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int, kind: socket.SocketKind) -> str:
    """An IP literal for ``host`` (external targets may be names)."""
    if _is_ip(host):
        return host
    infos = await loop.getaddrinfo(host, port, type=kind)
    return str(infos[0][4][0])


async def run_probe(
    target: ProbeTarget, ctx: ProbeContext, *, ts: float, sock: socket.socket | None = None
) -> ProbeResult:
    """The probe for ``target``'s protocol, awaited (the socket, if given, is used and
    closed); a name is resolved first, within the timeout. Cancelled, it stops and closes
    its socket."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[ProbeResult] = loop.create_future()
    exchange = _EXCHANGES[target.proto](target, ctx, ts, sock, answer.set_result)
    try:
        try:
            async with asyncio.timeout_at(exchange.deadline):
                ip = await _resolve(loop, target.ip, target.port, exchange.kind)
        except TimeoutError:
            exchange.finish(Outcome.TIMEOUT)
        except OSError as exc:
            exchange.fail(exc)
        else:
            exchange.start(ip)
        return await answer
    except asyncio.CancelledError:
        exchange.cancel()
        raise


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
