"""Real traffic from inside a lab namespace: one HTTP echo probe, one UDP echo, one DNS query.

The lab's own client, used by ``prober lab check`` and the lab tests to prove each
path and each fault with packets, independently of the agents. Sockets are created in
the source namespace and then driven from this process's event loop; a new
connection per probe, errors mapped to :class:`~prober.model.Outcome` as the agent
does (network failures are data).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import time
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.rcode

from prober.model import Outcome
from prober_lab import netns


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    outcome: Outcome
    node: str | None = None  # who answered (the echo's "node")
    client_ip: str | None = None  # the client address the echo saw
    src_port: int | None = None
    latency_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


def _failed(exc: BaseException, src_port: int | None) -> Probe:
    if isinstance(exc, TimeoutError):
        return Probe(outcome=Outcome.TIMEOUT, src_port=src_port)
    if isinstance(exc, ConnectionRefusedError):
        return Probe(outcome=Outcome.REFUSED, src_port=src_port)
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return Probe(outcome=Outcome.RESET, src_port=src_port)
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EINVAL):
        return Probe(outcome=Outcome.UNREACHABLE, src_port=src_port)
    if isinstance(exc, ValueError | KeyError):
        return Probe(outcome=Outcome.BAD_RESPONSE, src_port=src_port)
    return Probe(outcome=Outcome.UNREACHABLE, src_port=src_port)


async def http_probe(
    ns: str,
    ip: str,
    port: int,
    *,
    timeout_s: float = 0.9,
    bind: tuple[str, int] | None = None,
) -> Probe:
    """``GET /`` of an echo at ``ip:port`` from namespace ``ns``; a new connection each time.

    ``bind`` fixes the local address and port (two probes from one port reach two
    NLB addresses at once: the 5-tuple collision check).
    """
    loop = asyncio.get_running_loop()
    sock = netns.socket_in(ns)
    src_port: int | None = None
    start = time.perf_counter()
    try:
        sock.settimeout(0.0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        if bind is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(bind)
        async with asyncio.timeout(timeout_s):
            if bind is not None:
                src_port = sock.getsockname()[1]
            await loop.sock_connect(sock, (ip, port))
            src_port = sock.getsockname()[1]
            request = f"GET / HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n".encode()
            await loop.sock_sendall(sock, request)
            data = b""
            while True:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return Probe(outcome=Outcome.BAD_RESPONSE, src_port=src_port)
        answer = json.loads(body)
        return Probe(
            outcome=Outcome.OK,
            node=str(answer["node"]),
            client_ip=str(answer["client_ip"]),
            src_port=src_port,
            latency_s=time.perf_counter() - start,
        )
    except (OSError, TimeoutError, ValueError, KeyError) as exc:
        return _failed(exc, src_port)
    finally:
        sock.close()


async def udp_probe(ns: str, ip: str, port: int, *, timeout_s: float = 0.9) -> Probe:
    loop = asyncio.get_running_loop()
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
    start = time.perf_counter()
    try:
        sock.settimeout(0.0)
        sock.connect((ip, port))
        nonce = os.urandom(8)
        await loop.sock_sendall(sock, b"PRB1" + nonce + bytes(500))
        async with asyncio.timeout(timeout_s):
            data = await loop.sock_recv(sock, 2048)
        if not data.startswith(b"PRB1" + nonce):
            return Probe(outcome=Outcome.BAD_RESPONSE)
        answer = json.loads(data[12:])
        return Probe(
            outcome=Outcome.OK,
            node=str(answer["node"]),
            client_ip=str(answer["client_ip"]),
            src_port=sock.getsockname()[1],
            latency_s=time.perf_counter() - start,
        )
    except (OSError, TimeoutError, ValueError, KeyError) as exc:
        return _failed(exc, None)
    finally:
        sock.close()


async def dns_probe(ns: str, ip: str, name: str, *, port: int = 53, timeout_s: float = 0.9) -> Probe:
    loop = asyncio.get_running_loop()
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
    start = time.perf_counter()
    try:
        sock.settimeout(0.0)
        sock.connect((ip, port))
        query = dns.message.make_query(name, "A")
        await loop.sock_sendall(sock, query.to_wire())
        async with asyncio.timeout(timeout_s):
            data = await loop.sock_recv(sock, 4096)
        reply = dns.message.from_wire(data)
        if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
            return Probe(outcome=Outcome.DNS_ERROR)
        return Probe(outcome=Outcome.OK, latency_s=time.perf_counter() - start)
    except dns.exception.DNSException:
        return Probe(outcome=Outcome.BAD_RESPONSE)
    except (OSError, TimeoutError) as exc:
        return _failed(exc, None)
    finally:
        sock.close()
