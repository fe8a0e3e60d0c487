"""The lab's workloads that are not prober agents: the echo backend pods, kube-dns, the external server.

One process serves them all: it opens each listener inside its namespace (a socket
keeps the namespace it was created in) and serves them from one event loop, so a lab
of 8 nodes costs one process here instead of ten. Run by ``prober lab up`` as
``python -m prober.lab.fabric --nodes N --cni MODE --prefix P``.

* Echo pods (the Services' endpoints): HTTP ``GET /`` answers the same JSON as an
  agent's echo, ``{"node", "kind", "agent", "client_ip", "client_port"}``, so a probe
  through a Service, NodePort or NLB learns which node served it and which client
  address that node saw. A UDP echo answers datagrams that start with ``PRB1``.
* kube-dns endpoints (port 53 in every echo pod): ``A`` for the lab's names.
* The external server (outside the VPC): the same HTTP echo, as node ``external``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import cast

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from aiohttp import web

from prober.lab import netns
from prober.lab.plan import (
    DNS_PORT,
    DNS_QUERY,
    ECHO_HTTP_PORT,
    ECHO_SERVICE_IP,
    ECHO_UDP_PORT,
    EXTERNAL_PORT,
    Cni,
    LabSpec,
    build_plan,
)

log = logging.getLogger(__name__)
UDP_MAGIC = b"PRB1"
NONCE_BYTES = 8
EXTERNAL_NODE = "external"


def echo_answer(*, node: str, kind: str, agent: str, peer: tuple[str, int]) -> dict[str, object]:
    return {"node": node, "kind": kind, "agent": agent, "client_ip": peer[0], "client_port": peer[1]}


def _http_app(node: str, kind: str, agent: str) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ip, port = (peer[0], peer[1]) if peer else ("", 0)
        return web.json_response(echo_answer(node=node, kind=kind, agent=agent, peer=(ip, port)))

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/", echo)
    app.router.add_get("/healthz", ok)
    app.router.add_get("/readyz", ok)
    return app


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, node: str, kind: str, agent: str) -> None:
        self.node, self.kind, self.agent = node, kind, agent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        # The agent's UDP echo format: PRB1 + 8-byte nonce in, PRB1 + nonce + JSON out.
        if (
            len(data) < len(UDP_MAGIC) + NONCE_BYTES
            or not data.startswith(UDP_MAGIC)
            or self.transport is None
        ):
            return
        nonce = data[len(UDP_MAGIC) : len(UDP_MAGIC) + NONCE_BYTES]
        peer = (str(addr[0]), int(addr[1]))
        body = json.dumps(echo_answer(node=self.node, kind=self.kind, agent=self.agent, peer=peer)).encode()
        reply = UDP_MAGIC + nonce + body
        if len(reply) <= len(data):  # never more bytes out than in: no amplification
            self.transport.sendto(reply, addr)


def dns_answer(query: bytes, *, names: dict[str, str]) -> bytes | None:
    """The reply to one DNS query: ``A`` for a known name, NXDOMAIN otherwise."""
    try:
        msg = dns.message.from_wire(query)
    except dns.exception.DNSException:
        return None
    reply = dns.message.make_response(msg)
    for q in msg.question:
        name = q.name.to_text(omit_final_dot=True).lower()
        if q.rdtype == dns.rdatatype.A and name in names:
            reply.answer.append(dns.rrset.from_text(q.name, 30, "IN", "A", names[name]))
        elif name not in names:
            reply.set_rcode(dns.rcode.NXDOMAIN)
    return reply.to_wire()


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        answer = dns_answer(data, names=self.names)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)


def _bound(ns: str, kind: int, port: int) -> socket.socket:
    sock = netns.socket_in(ns, socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(0.0)
    if kind == socket.SOCK_STREAM:
        sock.listen(512)
    return sock


async def serve(spec: LabSpec, *, ready: Callable[[], None] | None = None) -> None:
    plan = build_plan(spec)
    loop = asyncio.get_running_loop()
    runners: list[web.AppRunner] = []
    names = {DNS_QUERY: ECHO_SERVICE_IP}

    async def http(ns: str, port: int, node: str, kind: str, agent: str) -> None:
        runner = web.AppRunner(_http_app(node, kind, agent), access_log=None)
        await runner.setup()
        await web.SockSite(runner, _bound(ns, socket.SOCK_STREAM, port)).start()
        runners.append(runner)

    for n in plan.nodes:
        pod = n.echo
        agent = f"echo-{n.letter}"
        await http(pod.ns, ECHO_HTTP_PORT, n.name, "pod", agent)
        await loop.create_datagram_endpoint(
            functools.partial(UdpEcho, n.name, "pod", agent),
            sock=_bound(pod.ns, socket.SOCK_DGRAM, ECHO_UDP_PORT),
        )
        await loop.create_datagram_endpoint(
            lambda: DnsServer(names), sock=_bound(pod.ns, socket.SOCK_DGRAM, DNS_PORT)
        )
    await http(plan.ext_ns, EXTERNAL_PORT, EXTERNAL_NODE, "host", "external")
    if ready is not None:
        ready()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def _ready() -> None:
    # `prober lab up` waits for this line on our stdout before it goes on.
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prober.lab.fabric", description=__doc__)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--cni", choices=[c.value for c in Cni], required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s fabric: %(message)s")
    spec = LabSpec(nodes=args.nodes, cni=Cni(args.cni), prefix=args.prefix)
    asyncio.run(serve(spec, ready=_ready))


if __name__ == "__main__":
    main()
