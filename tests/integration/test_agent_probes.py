"""Every probe outcome, against real loopback sockets (blackholes are in tests/lab/)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import msgspec
import pytest

from prober.agent.probes import ProbeContext, bind_same_port, probe_same_port, run_probe, start_probe
from prober.model import Outcome, ProbeResult, Proto, SrcKind, TargetKind
from prober.pinglist import ProbeTarget
from tests.integration.agent_helpers import (
    answer_with,
    closed_tcp_port,
    closed_udp_port,
    dns_responder,
    echo_agent,
    reset_after_accept,
    tcp_server,
)

CTX = ProbeContext(src_node="node-a", src_kind=SrcKind.HOST, source_ip="127.0.0.3", timeout_s=1.0)


def target(
    port: int, proto: Proto, *, ip: str = "127.0.0.1", kind: TargetKind = TargetKind.POD
) -> ProbeTarget:
    known = kind in (TargetKind.POD, TargetKind.HOST)
    return ProbeTarget(
        target=f"{kind.value}/node-b", kind=kind, ip=ip, port=port, proto=proto,
        dst_node="node-b" if known else None, dst_kind=SrcKind.POD if known else None,
    )  # fmt: skip


def watched() -> int:
    """File descriptors the running loop watches."""
    return len(asyncio.get_running_loop()._selector.get_map())  # type: ignore[attr-defined]


def full_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose accept queue is full: it drops further SYNs, so a connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.settimeout(0.0)
        s.connect_ex(listener.getsockname())
        fillers.append(s)
    return listener, fillers


@pytest.mark.parametrize("proto", [Proto.TCP, Proto.HTTP, Proto.UDP])
async def test_echo_answers_ok_with_who_served_and_whom_it_saw(proto: Proto) -> None:
    async with echo_agent("127.0.0.2", "node-b") as echo:
        port = echo.udp_port if proto is Proto.UDP else echo.http_port
        r = await run_probe(target(port, proto, ip="127.0.0.2", kind=TargetKind.SERVICE), CTX, ts=123.5)
    assert r.outcome is Outcome.OK
    assert r.ts == 123.5
    assert r.path == "host-to-service"
    assert r.latency_s is not None
    assert 0 <= r.latency_s < 1
    assert r.src_ip == "127.0.0.3"
    assert r.src_port
    assert (r.target_ip, r.target_port) == ("127.0.0.2", port)
    if proto is Proto.TCP:  # a connect-only probe learns nothing about the server
        assert (r.dst_node, r.seen_src_ip) == (None, None)
    else:
        assert (r.dst_node, r.dst_kind, r.seen_src_ip) == ("node-b", SrcKind.POD, "127.0.0.3")


async def test_every_http_probe_uses_a_new_connection_and_source_port() -> None:
    async with echo_agent("127.0.0.2", "node-b") as echo:
        t = target(echo.http_port, Proto.HTTP, ip="127.0.0.2")
        results = [await run_probe(t, CTX, ts=1.0) for _ in range(5)]
    assert all(r.outcome is Outcome.OK for r in results)
    assert len({r.src_port for r in results}) == 5


@pytest.mark.parametrize("proto", [Proto.TCP, Proto.HTTP])
async def test_closed_port_is_refused(proto: Proto) -> None:
    sock, port = closed_tcp_port()
    with sock:
        r = await run_probe(target(port, proto), CTX, ts=1.0)
    assert r.outcome is Outcome.REFUSED
    assert r.dst_node == "node-b"  # known in advance for a pod target
    assert r.seen_src_ip is None
    assert r.src_port  # the port that got the RST is still on record


async def test_refused_balanced_probe_has_no_serving_node() -> None:
    sock, port = closed_tcp_port()
    with sock:
        r = await run_probe(target(port, Proto.HTTP, kind=TargetKind.NLB), CTX, ts=1.0)
    assert (r.outcome, r.dst_node, r.path) == (Outcome.REFUSED, None, "host-to-nlb")


async def test_reset_after_handshake_is_reset() -> None:
    async with tcp_server("127.0.0.1", reset_after_accept) as port:
        r = await run_probe(target(port, Proto.HTTP), CTX, ts=1.0)
    assert r.outcome is Outcome.RESET


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", id="not-json"),
        pytest.param(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"node": 1}', id="json-not-echo"),
        pytest.param(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", id="503"),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="not-http"),
        pytest.param(b"", id="closed-without-answer"),
    ],
)
async def test_non_echo_answer_is_bad_response(payload: bytes) -> None:
    async with tcp_server("127.0.0.1", answer_with(payload)) as port:
        r = await run_probe(target(port, Proto.HTTP, kind=TargetKind.SERVICE), CTX, ts=1.0)
    assert r.outcome is Outcome.BAD_RESPONSE
    assert r.dst_node is None


async def test_udp_port_without_listener_is_refused() -> None:
    r = await run_probe(target(closed_udp_port(), Proto.UDP), CTX, ts=1.0)
    assert r.outcome is Outcome.REFUSED


async def test_udp_answer_that_is_not_an_echo_is_bad_response() -> None:
    # A DNS server on the UDP echo port answers, but not with PRB1 + our nonce.
    async with dns_responder() as port:
        r = await run_probe(target(port, Proto.UDP), CTX, ts=1.0)
    assert r.outcome is Outcome.BAD_RESPONSE


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        pytest.param("ok.test.", Outcome.OK, id="answer"),
        pytest.param("nx.test.", Outcome.DNS_ERROR, id="nxdomain"),
        pytest.param("fail.test.", Outcome.DNS_ERROR, id="servfail"),
        pytest.param("silent.test.", Outcome.TIMEOUT, id="silence"),
        pytest.param("junk.test.", Outcome.BAD_RESPONSE, id="not-dns"),
    ],
)
async def test_dns_outcomes(name: str, outcome: Outcome) -> None:
    ctx = ProbeContext(src_node="node-a", src_kind=SrcKind.POD, timeout_s=0.5)
    async with dns_responder() as port:
        t = ProbeTarget(
            target="dns/kube-dns", kind=TargetKind.DNS, ip="127.0.0.1", port=port, proto=Proto.DNS, query=name
        )
        r = await run_probe(t, ctx, ts=1.0)
    assert r.outcome is outcome
    assert r.path == "pod-to-dns"
    assert (r.latency_s is None) == (outcome is Outcome.TIMEOUT)


async def test_dns_server_not_listening_is_refused() -> None:
    t = ProbeTarget(
        target="dns/x",
        kind=TargetKind.DNS,
        ip="127.0.0.1",
        port=closed_udp_port(),
        proto=Proto.DNS,
        query="a.",
    )
    assert (await run_probe(t, CTX, ts=1.0)).outcome is Outcome.REFUSED


async def test_source_address_that_is_not_ours_is_unreachable() -> None:
    ctx = ProbeContext(src_node="node-a", src_kind=SrcKind.POD, source_ip="192.0.2.1", timeout_s=0.5)
    r = await run_probe(target(9, Proto.TCP), ctx, ts=1.0)  # bind fails before any packet leaves
    assert r.outcome is Outcome.UNREACHABLE


def test_two_connections_from_one_local_port_to_two_listeners() -> None:
    """The kernel allows it (distinct 4-tuples): the premise of the 5-tuple collision check."""
    listeners = [socket.create_server((ip, 0)) for ip in ("127.0.0.2", "127.0.0.4")]
    socks = bind_same_port(2, socket.AF_INET, socket.SOCK_STREAM, "127.0.0.3")
    try:
        for s, lst in zip(socks, listeners, strict=True):
            s.settimeout(None)  # blocking
            s.connect(lst.getsockname())
        assert socks[0].getsockname() == socks[1].getsockname()
        accepted = [lst.accept() for lst in listeners]
        socks.extend(conn for conn, _ in accepted)
        assert accepted[0][1] == accepted[1][1] == socks[0].getsockname()
    finally:
        for s in [*socks, *listeners]:
            s.close()


async def test_same_source_port_group_probes_concurrently_from_one_port() -> None:
    async with echo_agent("127.0.0.2", "node-b") as b, echo_agent("127.0.0.4", "node-c") as c:
        group = [
            target(b.http_port, Proto.HTTP, ip="127.0.0.2", kind=TargetKind.NLB),
            target(c.http_port, Proto.HTTP, ip="127.0.0.4", kind=TargetKind.NLB),
        ]
        results = await probe_same_port(group, CTX, ts=7.0)
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK]
    assert [r.dst_node for r in results] == ["node-b", "node-c"]
    assert results[0].src_port == results[1].src_port
    assert {r.seen_src_ip for r in results} == {"127.0.0.3"}


async def test_a_connect_that_times_out_leaves_nothing_watched_on_the_loop() -> None:
    listener, fillers = full_listener()
    try:
        await asyncio.sleep(0.1)
        before = watched()
        ctx = ProbeContext(src_node="node-a", src_kind=SrcKind.HOST, timeout_s=0.3)
        r = await run_probe(target(listener.getsockname()[1], Proto.TCP), ctx, ts=1.0)
        assert r.outcome is Outcome.TIMEOUT
        assert r.src_port  # the source port of the SYN that went unanswered
        assert watched() == before
    finally:
        for s in [listener, *fillers]:
            s.close()


# ---- probes started without a task (the round loop's) ----------------------------------------


@pytest.mark.parametrize("proto", [Proto.TCP, Proto.HTTP, Proto.UDP])
async def test_a_probe_started_without_a_task_reports_once_as_the_awaited_one(proto: Proto) -> None:
    """:func:`start_probe` is the same exchange as :func:`run_probe`: the same result, given
    once to its callback, and nothing left watched on the loop."""
    got: list[ProbeResult] = []
    ended = asyncio.Event()

    def done(r: ProbeResult) -> None:
        got.append(r)
        ended.set()

    async with echo_agent("127.0.0.2", "node-b") as echo:
        port = echo.udp_port if proto is Proto.UDP else echo.http_port
        t = target(port, proto, ip="127.0.0.2", kind=TargetKind.SERVICE)
        before = watched()
        awaited = await run_probe(t, CTX, ts=5.0)
        assert start_probe(t, CTX, ts=5.0, done=done) is not None
        async with asyncio.timeout(2):
            await ended.wait()
        await asyncio.sleep(0.05)  # a second report would come by now
        assert watched() == before
    [r] = got
    assert r.outcome is awaited.outcome is Outcome.OK
    same = ("ts", "path", "src_ip", "target", "target_ip", "target_port", "proto", "dst_node", "seen_src_ip")
    assert {k: getattr(r, k) for k in same} == {k: getattr(awaited, k) for k in same}
    assert r.src_port
    assert r.src_port != awaited.src_port  # a new socket, a new port


@pytest.mark.parametrize("proto", [Proto.TCP, Proto.HTTP])
async def test_a_refused_probe_started_without_a_task_reports_at_once(proto: Proto) -> None:
    got: list[ProbeResult] = []
    sock, port = closed_tcp_port()
    with sock:
        start_probe(target(port, proto), CTX, ts=1.0, done=got.append)
        await asyncio.sleep(0.2)  # the RST comes at once; the timeout is 1 s
    assert [r.outcome for r in got] == [Outcome.REFUSED]


async def test_a_cancelled_probe_reports_nothing_and_leaves_nothing_open() -> None:
    listener, fillers = full_listener()
    got: list[ProbeResult] = []
    ctx = ProbeContext(src_node="node-a", src_kind=SrcKind.HOST, timeout_s=0.3)
    try:
        await asyncio.sleep(0.1)
        before = watched()
        cancel = start_probe(target(listener.getsockname()[1], Proto.TCP), ctx, ts=1.0, done=got.append)
        assert cancel is not None
        assert watched() == before + 1  # waiting for the handshake
        cancel()
        assert watched() == before
        await asyncio.sleep(0.5)  # past the timeout: its timer is gone too
        assert got == []
    finally:
        for s in [listener, *fillers]:
            s.close()


async def test_a_name_to_resolve_is_not_started_without_a_task() -> None:
    t = msgspec.structs.replace(target(80, Proto.HTTP, kind=TargetKind.EXTERNAL), ip="example.invalid")
    got: list[ProbeResult] = []
    assert start_probe(t, CTX, ts=1.0, done=got.append) is None
    assert got == []


# ---- the large-payload (MTU) probe and "connected, then stalled" ------------------------


@pytest.mark.parametrize("size", [1, 8_900, 65_536])
async def test_large_probe_gets_an_echo_answer_of_the_size_asked(size: int) -> None:
    ctx = ProbeContext(
        src_node="node-a", src_kind=SrcKind.HOST, source_ip="127.0.0.3", large_probe_bytes=size
    )
    async with echo_agent("127.0.0.2", "node-b") as echo:
        r = await run_probe(target(echo.http_port, Proto.HTTP_LARGE, ip="127.0.0.2"), ctx, ts=1.0)
        served = echo.registry.get_sample_value("prober_echo_requests_total", {"proto": "http-large"})
    assert (r.outcome, r.proto, r.dst_node, r.seen_src_ip) == (
        Outcome.OK,
        Proto.HTTP_LARGE,
        "node-b",
        "127.0.0.3",
    )
    assert served == 1


class StallAfter:
    """Read the request, send ``head`` (maybe nothing), then never finish: an answer that stalls.
    ``done`` is set once the probe gave up and the server's side is closed."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.done = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(ConnectionError):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(self.head)
                await writer.drain()
                await reader.read()  # until the probe gives up and closes
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        finally:
            self.done.set()


@pytest.mark.parametrize("proto", [Proto.HTTP, Proto.HTTP_LARGE])
@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 9000\r\n\r\n" + b"{" * 1400, id="cut-off-body"),
    ],
)
async def test_connected_then_no_complete_answer_is_stalled(proto: Proto, head: bytes) -> None:
    ctx = ProbeContext(src_node="node-a", src_kind=SrcKind.HOST, source_ip="127.0.0.3", timeout_s=0.3)
    server = StallAfter(head)
    async with tcp_server("127.0.0.1", server) as port:
        r = await run_probe(target(port, proto), ctx, ts=1.0)
        async with asyncio.timeout(5):
            await server.done.wait()
    assert (r.outcome, r.latency_s, r.dst_node) == (Outcome.STALLED, None, "node-b")
    assert r.src_port


async def test_large_probe_answered_short_is_bad_response() -> None:
    # An echo that ignores ?size= (or a middlebox that truncates) is not a large transfer.
    echo = b'{"node":"node-b","kind":"pod","client_ip":"127.0.0.3","client_port":1}'
    short = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(echo), echo)
    async with tcp_server("127.0.0.1", answer_with(short)) as port:
        r = await run_probe(target(port, Proto.HTTP_LARGE), CTX, ts=1.0)
    assert r.outcome is Outcome.BAD_RESPONSE


async def test_a_large_answer_has_half_the_timeout_once_connected() -> None:
    """An MTU black hole's stall is reported half the timeout after the handshake; a small
    probe's silent answer waits the whole timeout."""
    ctx = ProbeContext(src_node="node-a", src_kind=SrcKind.HOST, source_ip="127.0.0.3", timeout_s=2.0)
    elapsed: dict[Proto, float] = {}
    for proto in (Proto.HTTP_LARGE, Proto.HTTP):
        server = StallAfter(b"")
        async with tcp_server("127.0.0.1", server) as port:
            start = time.monotonic()
            r = await run_probe(target(port, proto), ctx, ts=1.0)
            elapsed[proto] = time.monotonic() - start
            async with asyncio.timeout(5):
                await server.done.wait()
        assert r.outcome is Outcome.STALLED
    assert 0.9 <= elapsed[Proto.HTTP_LARGE] < 1.5
    assert elapsed[Proto.HTTP] >= 1.9
