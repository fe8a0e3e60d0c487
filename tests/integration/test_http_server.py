"""The bounds of prober's HTTP servers, with real sockets on loopback: header and body
deadlines, the connection cap, and nothing else changed for well-behaved clients."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from prober.http_server import BODY_TIMEOUT, HEADER_TIMEOUT, OVER_CAP, ServerLimits, bounded_site
from tests.integration.sockets import connected_while_blocked

HOST = "127.0.0.1"


@asynccontextmanager
async def server(limits: ServerLimits) -> AsyncIterator[tuple[int, list[str]]]:
    async def hello(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(text=f"hello {len(body)}\n")

    app = web.Application(client_max_size=1024)
    app.router.add_route("*", "/", hello)
    closed: list[str] = []
    async with bounded_site(app, HOST, 0, limits=limits, on_close=closed.append) as runner:
        yield int(runner.addresses[0][1]), closed


async def request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(raw)
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


GET = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def test_half_a_head_is_closed_at_the_deadline_and_others_are_served() -> None:
    async with server(ServerLimits(header_timeout_s=0.5)) as (port, closed):
        slow = [await asyncio.open_connection(HOST, port) for _ in range(20)]
        for _, w in slow:
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert b"hello 0" in await request(port, GET)
        started = time.monotonic()
        answers = await asyncio.gather(*(r.read() for r, _ in slow))
        assert answers == [b""] * 20  # closed without an answer
        assert time.monotonic() - started < 2.0
        assert closed == [HEADER_TIMEOUT] * 20
        for _, w in slow:
            w.close()


async def test_a_connection_that_says_nothing_is_closed_too() -> None:
    async with server(ServerLimits(header_timeout_s=0.3)) as (port, closed):
        reader, writer = await asyncio.open_connection(HOST, port)
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()
        assert closed == [HEADER_TIMEOUT]


async def test_a_slow_body_gets_408_and_a_prompt_one_is_read() -> None:
    async with server(ServerLimits(body_timeout_s=0.5)) as (port, closed):
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
        assert b"hello 100" in await request(port, head + b"x" * 100)
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(head + b"x" * 10)
        async with asyncio.timeout(3):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408")
        assert closed == [BODY_TIMEOUT]


async def test_the_connection_cap_closes_one_more_at_once() -> None:
    async with server(ServerLimits(header_timeout_s=3.0, max_connections=5)) as (port, closed):
        held = [await asyncio.open_connection(HOST, port) for _ in range(5)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        try:
            answer = await request(port, GET)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed at once (or reset), never answered
        assert time.monotonic() - started < 1.0
        assert closed == [OVER_CAP]
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)
        assert b"hello 0" in await request(port, GET)  # room again


async def test_a_kept_alive_connection_serves_several_requests() -> None:
    async with server(ServerLimits(header_timeout_s=0.5)) as (port, closed):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            for _ in range(3):
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await read_answer(reader)).startswith(b"HTTP/1.1 200")
                await asyncio.sleep(0.7)  # idle longer than the header deadline: keep-alive's business
        finally:
            writer.close()
        assert closed == []


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        return head + await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))


async def test_a_head_on_time_is_served_however_late_the_loop_gets_to_it() -> None:
    """The loop stalls (a long garbage collection, a starved CPU) past the deadline
    after the head arrived: the head was on time, so it is served."""
    async with server(ServerLimits(header_timeout_s=0.3)) as (port, closed):
        for parts in ([GET], [GET[:-1], GET[-1:]]):  # the head's end in one read, or split
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                await asyncio.sleep(0.05)  # accepted: the deadline runs
                for part in parts[:-1]:
                    writer.write(part)
                    await asyncio.sleep(0.05)
                writer.write(parts[-1])
                time.sleep(0.5)  # noqa: ASYNC251  # the stall itself, before the server reads
                assert (await read_answer(reader)).startswith(b"HTTP/1.1 200")
            finally:
                writer.close()
        assert closed == []


async def test_a_connection_made_while_the_server_shuts_down_is_closed() -> None:
    """A connection the kernel accepted before the server stopped listening gets its
    transport a turn later (asyncio's accept), which can be after aiohttp's shutdown
    closed the connections it knew: such a late connection is closed at once, not left
    open until garbage collection. Simulated: a connection made on the server's own
    protocol factory after the block exits."""
    app = web.Application()
    async with bounded_site(app, HOST, 0) as runner:
        [site] = runner.sites
        make = site._server._protocol_factory  # type: ignore[union-attr]  # asyncio's Server
    ours, theirs = socket.socketpair()
    theirs.settimeout(0.0)  # non-blocking
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(make, ours)
    try:
        async with asyncio.timeout(2):
            while True:
                try:
                    if theirs.recv(1) == b"":
                        break
                except BlockingIOError:
                    await asyncio.sleep(0.01)
                except ConnectionResetError:
                    break
        assert transport.is_closing()
    finally:
        transport.abort()
        theirs.close()


async def test_a_burst_within_the_cap_is_queued_by_the_kernel_while_the_loop_is_busy() -> None:
    """300 connections arrive while the event loop is blocked: the listen queue holds
    them all (its size is the cap), none waits on a SYN retransmit (1 s, then 3 s)
    behind a queue of aiohttp's default 128."""
    async with server(ServerLimits(max_connections=300)) as (port, _closed):
        # Blocks the event loop on purpose: only the kernel answers.
        assert connected_while_blocked(HOST, port, 300) == 300
