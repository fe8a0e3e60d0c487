"""The collector's edge against a real server on loopback: no caller can blind, poison or exhaust it.

One test per way of attacking it (README § Threat model): each sends what a hostile or
careless client sent to the collector of an earlier version, which answered 500 from
then on, named a healthy node unreachable, lost good lines, filled its label tables,
grew past its memory limit or blocked its event loop. Genuine results from the 5-node
synthetic cluster (:mod:`tests.synth`, with its inventory) go alongside, and their
finding must still come.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from prober.collector.auth import Authenticator
from prober.credentials import TokenFile
from prober.model import ProbeResult
from prober.records import encode_records
from tests.integration.collector_helpers import running_collector
from tests.integration.sockets import connected_while_blocked
from tests.synth import Cluster, Fault, generate

C5 = Cluster(n_nodes=5)
N = C5.nodes
UNREACHABLE = Fault(kind="node-unreachable", nodes=(N[2],))
BATCH = 3000  # records per POST: under the 2 MiB body limit
FAKES = 40_000


def genuine(
    faults: Sequence[Fault] = (), *, rounds: int = 6, seed: int = 1, ago_s: float = 0.0
) -> list[ProbeResult]:
    """The cluster's results of ``rounds`` rounds ending ``ago_s`` seconds ago."""
    return generate(C5, rounds=rounds, faults=faults, seed=seed, start_ts=time.time() - ago_s - 10.0 * rounds)


def line(record: ProbeResult, **changes: Any) -> bytes:
    d = msgspec.json.decode(msgspec.json.encode(record))
    d.update(changes)
    return json.dumps(d).encode()


async def post(
    s: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with s.post(f"{url}/api/v1/results", data=io.BytesIO(body), headers=headers or {}) as resp:
        return resp.status, await resp.json()


async def post_all(s: aiohttp.ClientSession, url: str, records: Sequence[ProbeResult]) -> int:
    accepted = 0
    for i in range(0, len(records), BATCH):
        status, reply = await post(s, url, encode_records(records[i : i + BATCH]))
        assert status == 200, reply
        accepted += reply["accepted"]
    return accepted


async def findings(s: aiohttp.ClientSession, url: str) -> list[tuple[str, list[str]]]:
    async with s.get(f"{url}/api/v1/findings") as resp:
        assert resp.status == 200
        return [(f["kind"], f["nodes"]) for f in (await resp.json())["findings"]]


async def until_found(s: aiohttp.ClientSession, url: str, expected: list[tuple[str, list[str]]]) -> None:
    """Poll the findings (the collector refreshes them every 0.1 s here) until they are ``expected``."""
    for _ in range(100):
        if await findings(s, url) == expected:
            return
        await asyncio.sleep(0.1)
    assert await findings(s, url) == expected


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


async def test_a_far_future_line_with_a_huge_port_costs_only_itself(tmp_path: Path) -> None:
    async with running_collector(tmp_path, C5.inventory()) as (_, url), aiohttp.ClientSession() as s:
        good = genuine(rounds=1, ago_s=70.0)  # a healthy round before the fault below
        poison = line(good[0], path="pod-to-nlb", target="nlb/prober-echo", src_port=2**64,
                      ts=time.time() + 10 * 365 * 86400)  # fmt: skip
        status, reply = await post(s, url, poison + b"\n" + encode_records(good[1:]))
        assert (status, reply["rejected"], reply["accepted"]) == (200, 1, len(good) - 1)
        assert "src_port" in reply["errors"][0]["error"]
        future = line(good[0], ts=time.time() + 10 * 365 * 86400)
        status, reply = await post(s, url, future + b"\n")
        assert (status, reply["rejected"]) == (200, 1)
        assert "in the future" in reply["errors"][0]["error"]
        for path in ("findings", "matrix", "report"):
            async with s.get(f"{url}/api/v1/{path}") as resp:
                assert resp.status == 200, path
        # a real fault started afterwards is reported
        await post_all(s, url, genuine([UNREACHABLE]))
        await until_found(s, url, [("node-unreachable", [N[2]])])


async def test_a_node_named_like_an_outside_target_is_rejected(tmp_path: Path) -> None:
    async with running_collector(tmp_path, C5.inventory()) as (_, url), aiohttp.ClientSession() as s:
        [r] = genuine(rounds=1)[:1]
        external = line(r, path="pod-to-external", target="x", dst_node=None)
        as_node = line(r, src_node="x")
        status, reply = await post(s, url, external + b"\n" + as_node + b"\n")
        assert (status, reply["accepted"], reply["rejected"]) == (200, 0, 2)
        assert [e["line"] for e in reply["errors"]] == [1, 2]
        assert "not a node of the inventory" in reply["errors"][1]["error"]
        for path in ("findings", "matrix"):
            async with s.get(f"{url}/api/v1/{path}") as resp:
                assert resp.status == 200, path


async def test_fabricated_lines_without_a_credential_name_no_node(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-operator-token\n")
    auth = Authenticator(token_file=TokenFile(tmp_path / "token"))
    async with (
        running_collector(tmp_path, C5.inventory(), auth=auth) as (collector, url),
        aiohttp.ClientSession() as s,
    ):
        fabricated = genuine([UNREACHABLE], rounds=8)
        assert len(fabricated) > 3860
        for i in range(0, len(fabricated), BATCH):
            status, _ = await post(s, url, encode_records(fabricated[i : i + BATCH]))
            assert status == 401
        status, _ = await post(
            s, url, encode_records(fabricated[:10]), {"Authorization": "Bearer guessed-token"}
        )
        assert status == 401
        assert collector.recent_records() == []
        await asyncio.sleep(0.3)
        assert await findings(s, url) == []


async def test_a_deeply_nested_line_costs_only_itself(tmp_path: Path) -> None:
    async with running_collector(tmp_path, C5.inventory()) as (_, url), aiohttp.ClientSession() as s:
        good = genuine(rounds=1)
        nested = b'{"x": ' + b"[" * 1000 + b"]" * 1000 + b", " + line(good[0])[1:]
        deeper = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        body = encode_records(good[1:20]) + nested + b"\n" + deeper + b"\n" + encode_records(good[20:40])
        status, reply = await post(s, url, body)
        assert (status, reply["accepted"], reply["rejected"]) == (200, 39, 2)
        assert [e["line"] for e in reply["errors"]] == [20, 21]


async def test_fake_labels_never_fill_the_tables_nor_cost_genuine_batches(tmp_path: Path) -> None:
    async with (
        running_collector(tmp_path, C5.inventory(), budget_per_s=5.0, ingest_quota_per_s=10.0) as (
            collector,
            url,
        ),
        aiohttp.ClientSession() as s,
    ):
        [r] = genuine(rounds=1)[:1]
        # 40,000 distinct fake targets, and as many fake addresses of a real target (each
        # of them a new label; the earlier collector filled its tables with 280,000)
        template = line(r, target="pod/FAKE", target_ip="IP").replace(b"FAKE", b"%d").replace(b"IP", b"%d")
        rejected = 0
        for start in range(0, FAKES, 4000):
            body = b"\n".join(template % (i, i) for i in range(start, start + 4000))
            status, reply = await post(s, url, body)
            assert status in (200, 400)
            rejected += reply["rejected"]
        addr_template = line(r, target_ip="IP").replace(b"IP", b"10.%d.%d.%d")
        for start in range(0, FAKES, 4000):
            ips = ((i >> 16, (i >> 8) & 255, i & 255) for i in range(start, start + 4000))
            status, reply = await post(s, url, b"\n".join(addr_template % ip for ip in ips))
            assert status == 200
        usage = collector.store.usage()
        # what the source's quota let in (3,000 at once, 10/s after), not the attacker's 80,000
        assert usage.tcombos <= 4000
        # the other agents' batches go on as before
        others = [x for x in genuine(rounds=2) if x.src_node != r.src_node]
        assert await post_all(s, url, others) == len(others)


async def test_stalled_uploads_and_huge_names_keep_memory_bounded(tmp_path: Path) -> None:
    async with (
        running_collector(tmp_path, C5.inventory(), body_timeout_s=1.0, ingest_wait_s=0.5) as (_, url),
        aiohttp.ClientSession() as s,
    ):
        host, port = url.removeprefix("http://").split(":")
        before = rss_bytes()

        async def stalled() -> bytes:
            reader, writer = await asyncio.open_connection(host, int(port))
            head = (
                f"POST /api/v1/results HTTP/1.1\r\nHost: x\r\nContent-Length: {2 * 2**20}\r\n\r\n"
            ).encode()
            writer.write(head + b"x" * (3 * 2**19))  # 1.5 MiB of the 2 announced, then nothing
            await writer.drain()
            answer = await reader.readline()
            writer.close()
            return answer

        async with asyncio.timeout(30):
            answers = await asyncio.gather(*(stalled() for _ in range(40)))
        assert {a.split()[1] for a in answers} <= {b"408", b"503"}
        big = line(genuine(rounds=1)[0], src_node="n" * 2**20)
        for _ in range(60):  # records with 1 MiB names (300 of them, measured: same bound)
            status, reply = await post(s, url, big + b"\n")
            assert (status, reply["rejected"]) == (200, 1)
        assert rss_bytes() - before < 96 * 2**20
        status, reply = await post(s, url, encode_records(genuine(rounds=1)))
        assert status == 200


async def test_garbage_batches_never_block_the_event_loop(tmp_path: Path) -> None:
    async with running_collector(tmp_path, C5.inventory()) as (_, url), aiohttp.ClientSession() as s:
        status, _ = await post(s, url, b"{}\n" * (10 * 10**6 // 3))
        assert status == 413
        garbage = b"{}\n" * (2 * 10**6 // 3)
        health: list[int] = []

        async def attack() -> None:
            for _ in range(3):
                results = await asyncio.gather(*(post(s, url, garbage) for _ in range(6)))
                assert {status for status, _ in results} <= {400, 503}

        async def check_health() -> None:
            for _ in range(20):
                async with s.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    health.append(resp.status)
                await asyncio.sleep(0.1)

        await asyncio.gather(attack(), check_health())
        assert health == [200] * 20


async def test_connections_beyond_the_cap_and_slow_headers_are_closed(tmp_path: Path) -> None:
    async with (
        running_collector(tmp_path, C5.inventory(), max_connections=20, header_timeout_s=0.5) as (
            collector,
            url,
        ),
        aiohttp.ClientSession() as s,
    ):
        host, port = url.removeprefix("http://").split(":")
        conns = []
        for _ in range(30):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers that never end
            conns.append((reader, writer))
        async with asyncio.timeout(5):
            firsts = [await reader.read(100) for reader, _ in conns]
        busy = [f for f in firsts if f.startswith(b"HTTP/1.1 503")]
        closed = [f for f in firsts if f == b""]
        assert (len(busy), len(closed)) == (10, 20)  # 10 over the cap at once; 20 after 0.5 s
        for _, writer in conns:
            writer.close()
        assert collector.registry.get_sample_value("prober_http_refused_connections_total") == 10
        async with s.get(f"{url}/healthz") as resp:
            assert resp.status == 200


async def test_agents_reconnecting_at_once_are_queued_by_the_kernel_while_the_loop_is_busy(
    tmp_path: Path,
) -> None:
    """300 connections (agents reconnecting after a restart) arrive while the event loop
    is blocked: the listen queue, as long as the cap, holds them all; none waits on a SYN
    retransmit (1 s, then 3 s) behind asyncio's default queue of 100."""
    async with running_collector(tmp_path, C5.inventory(), max_connections=300) as (_, url):
        host, port = url.removeprefix("http://").split(":")
        # Blocks the event loop on purpose: only the kernel answers.
        assert connected_while_blocked(host, int(port), 300) == 300


async def test_genuine_results_alone_name_the_fault(tmp_path: Path) -> None:
    """The control run of the tests above: the same records, nothing hostile."""
    async with running_collector(tmp_path, C5.inventory()) as (_, url), aiohttp.ClientSession() as s:
        await post_all(s, url, genuine([UNREACHABLE]))
        await until_found(s, url, [("node-unreachable", [N[2]])])
