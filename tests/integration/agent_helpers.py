"""Real loopback servers for the agent's tests: echo agents, misbehaving peers, a DNS responder."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import dns.exception
import dns.message
import dns.rcode
import dns.rrset
from prometheus_client import CollectorRegistry

from prober.agent.echo import EchoIdentity, EchoState, open_udp_echo, serve_http, serve_udp
from prober.agent.metrics import AgentMetrics
from prober.model import SrcKind


@dataclass(frozen=True, slots=True)
class EchoAgent:
    identity: EchoIdentity
    host: str
    http_port: int
    udp_port: int
    state: EchoState
    registry: CollectorRegistry


@contextlib.asynccontextmanager
async def echo_agent(host: str, node: str, kind: SrcKind = SrcKind.POD) -> AsyncIterator[EchoAgent]:
    """An agent's HTTP and UDP echo on ``host`` (free ports)."""
    registry = CollectorRegistry()
    identity = EchoIdentity(node=node, kind=kind, agent=f"{kind.value}-{node}")
    metrics = AgentMetrics(registry=registry, node=node, kind=kind.value, version="test")
    state = EchoState(identity=identity, registry=registry, metrics=metrics)
    async with serve_http(state, host, 0) as runner:
        http_port = runner.addresses[0][1]
        udp = await open_udp_echo(host, 0)
        udp_port = udp.sockname[1]
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(serve_udp(udp, identity, metrics))
            try:
                yield EchoAgent(identity, host, http_port, udp_port, state, registry)
            finally:
                task.cancel()


def closed_tcp_port(host: str = "127.0.0.1") -> tuple[socket.socket, int]:
    """A port that answers SYN with RST: bound, never listening (kept bound so nobody takes it)."""
    sock = socket.socket()
    sock.bind((host, 0))
    return sock, sock.getsockname()[1]


def closed_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody listens on (there is a tiny race with other processes; loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def tcp_server(host: str, handler: object) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, host, 0)  # type: ignore[arg-type]
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def reset_after_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, then close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def answer_with(payload: bytes) -> object:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(payload)
            await writer.drain()
        writer.close()

    return handler


class _DnsResponder(asyncio.DatagramProtocol):
    """Answers A queries: ``ok.test.`` → 127.0.0.9, ``nx.test.`` → NXDOMAIN,
    ``fail.test.`` → SERVFAIL, ``silent.test.`` → nothing, ``junk.test.`` → garbage."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:  # not DNS: answer with a valid-looking header anyway
            self.transport.sendto(data[:2] + b"\x81\x80" + bytes(8), addr)
            return
        name = query.question[0].name.to_text()
        if name == "silent.test.":
            return
        if name == "junk.test.":
            self.transport.sendto(b"\x00\x01garbage", addr)
            return
        response = dns.message.make_response(query)
        if name == "ok.test.":
            response.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "127.0.0.9"))
        elif name == "fail.test.":
            response.set_rcode(dns.rcode.SERVFAIL)
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(response.to_wire(), addr)


@contextlib.asynccontextmanager
async def dns_responder(host: str = "127.0.0.1") -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_DnsResponder, local_addr=(host, 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()
