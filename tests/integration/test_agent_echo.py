"""The echo servers on real sockets: HTTP fields, /metrics, the UDP drop rules."""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from prober.agent.echo import MAX_UDP_REQUEST, NONCE_BYTES, parse_udp_reply, udp_request
from prober.model import SrcKind
from tests.integration.agent_helpers import echo_agent


async def test_http_echo_reports_the_node_and_the_client_it_saw() -> None:
    async with echo_agent("127.0.0.2", "node-b", SrcKind.HOST) as echo:
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.get(f"http://127.0.0.2:{echo.http_port}/") as r:
                body = await r.json()
                assert r.headers.get("Connection", "").lower() == "close"
            async with http.get(f"http://127.0.0.2:{echo.http_port}/metrics") as r:
                metrics = await r.text()
                assert r.content_type == "text/plain"
            for _ in range(100):  # nothing on an agent starts work, however often asked
                async with http.post(f"http://127.0.0.2:{echo.http_port}/sweep", json={"timeout_s": 2}) as r:
                    assert r.status == 404
            async with http.post(f"http://127.0.0.2:{echo.http_port}/sweep", data=b"x" * 100_000) as r:
                assert r.status == 413  # small bodies only
    assert body["node"] == "node-b"
    assert body["kind"] == "host"
    assert "agent" not in body  # an agent's name is its key to its pinglist
    assert body["client_ip"] == "127.0.0.3"
    assert isinstance(body["client_port"], int)
    assert 'prober_echo_requests_total{proto="http"} 1.0' in metrics


async def test_udp_echo_answers_only_well_formed_requests_that_cannot_amplify() -> None:
    async with echo_agent("127.0.0.2", "node-b") as echo:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.0)  # non-blocking
            s.bind(("127.0.0.3", 0))
            s.connect(("127.0.0.2", echo.udp_port))
            nonce = bytes(range(NONCE_BYTES))
            for bad in (b"hello", b"PRB1" + nonce, udp_request(nonce, size=MAX_UDP_REQUEST + 100)):
                await loop.sock_sendall(s, bad)
            await loop.sock_sendall(s, udp_request(nonce))
            async with asyncio.timeout(2):
                reply = await loop.sock_recv(s, 2048)  # the first reply is to the good request
            echoed = parse_udp_reply(reply, nonce)
            assert echoed is not None
            assert (echoed.node, echoed.client_ip, echoed.client_port) == (
                "node-b",
                "127.0.0.3",
                s.getsockname()[1],
            )
            assert len(reply) <= len(udp_request(nonce))
        reg = echo.registry
        assert reg.get_sample_value("prober_echo_dropped_datagrams_total", {"reason": "malformed"}) == 1
        assert reg.get_sample_value("prober_echo_dropped_datagrams_total", {"reason": "amplification"}) == 1
        assert reg.get_sample_value("prober_echo_dropped_datagrams_total", {"reason": "oversize"}) == 1
        assert reg.get_sample_value("prober_echo_requests_total", {"proto": "udp"}) == 1


async def test_http_echo_pads_its_answer_to_the_size_asked_within_its_bound() -> None:
    async with echo_agent("127.0.0.2", "node-b") as echo, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.2:{echo.http_port}/"
        sizes = {}
        for size in ("0", "9000", "65536"):
            async with http.get(base, params={"size": size}) as r:
                assert r.status == 200
                body = await r.read()
                sizes[size] = len(body)
                assert (await r.json())["node"] == "node-b"  # still the echo answer
        refused = []
        for bad in ("65537", "-1", "9e3", "abc", "", "1" * 40):
            async with http.get(base, params={"size": bad}) as r:
                refused.append(r.status)
    assert sizes["9000"] == 9000
    assert sizes["65536"] == 65536
    assert 0 < sizes["0"] < 200  # below the plain answer's size: the plain answer
    assert refused == [400] * 6
