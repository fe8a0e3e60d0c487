"""The lab's workloads that are neither prober agents nor echo pods: kube-dns and the external server.

One process serves them: it opens each listener inside its namespace (a socket keeps
the namespace it was created in) and serves them from one event loop. Run by
``prober lab up`` as ``python -m prober_lab.fabric --nodes N --cni MODE --prefix P``.
The echo pods (the Services' endpoints) run the real ``prober echo``, one process per
node, as the prober-echo DaemonSet does in a cluster.

* kube-dns (port 53 in the lab's DNS namespace, kube-dns's one endpoint): ``A`` for
  the lab's names.
* The external server (outside the VPC): an HTTP echo that answers as node
  ``external`` with the client address it saw (the NAT gateway's).
"""

from __future__ import annotations

import argparse
import asyncio
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

from prober_lab import netns
from prober_lab.plan import (
    COLLECTOR_IP,
    DNS_PORT,
    DNS_QUERY,
    ECHO_SERVICE_IP,
    EXTERNAL_PORT,
    Cni,
    LabSpec,
    build_plan,
)

log = logging.getLogger(__name__)
EXTERNAL_NODE = "external"
#: The ``kubernetes`` Service's address: the first of the Service CIDR, as in a cluster.
API_SERVICE_IP = "10.96.0.1"


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
    names = {
        DNS_QUERY: ECHO_SERVICE_IP,
        # What every cluster's DNS answers, for prober's own containers (tests/image):
        # the API server's Service (the collector's DNS probe) and the collector's.
        "kubernetes.default.svc.cluster.local": API_SERVICE_IP,
        "prober-collector.prober.svc.cluster.local": COLLECTOR_IP,
    }
    await loop.create_datagram_endpoint(
        lambda: DnsServer(names), sock=_bound(plan.dns_ns, socket.SOCK_DGRAM, DNS_PORT)
    )
    runner = web.AppRunner(_http_app(EXTERNAL_NODE, "host", "external"), access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, _bound(plan.ext_ns, socket.SOCK_STREAM, EXTERNAL_PORT)).start()
        if ready is not None:
            ready()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _ready() -> None:
    # `prober lab up` waits for this line on our stdout before it goes on.
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prober_lab.fabric", description=__doc__)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--cni", choices=[c.value for c in Cni], required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--zones", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s fabric: %(message)s")
    spec = LabSpec(nodes=args.nodes, cni=Cni(args.cni), prefix=args.prefix, zones=args.zones)
    asyncio.run(serve(spec, ready=_ready))


if __name__ == "__main__":
    main()
