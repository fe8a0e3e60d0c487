"""The agent's side of the mesh: a delta that does not give the mesh it promises is
dropped for the whole mesh, and the agent never probes from a wrong one; the mesh is
inflated and decoded a piece at a time, and a broken or oversized body is an error."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import random
import zlib
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp import ClientPayloadError, ClientSession, web
from prometheus_client import CollectorRegistry

from prober.agent import runner as runner_module
from prober.agent.metrics import AgentMetrics
from prober.agent.runner import PinglistHolder, _MeshDocument, follow_collector
from prober.pinglist import (
    MESH_DELTA_IM,
    MESH_VERSION_HEADER,
    Mesh,
    MeshDelta,
    assemble,
    encode_mesh,
    group_digests,
    mesh_delta,
)
from prober.schedule import PinglistBuilder, SchedulePolicy
from tests.inventories import EksCluster

CLUSTER = EksCluster(n_nodes=6, zones=3)
POLICY = SchedulePolicy(interval_s=0.5, timeout_s=0.2)
AGENT = CLUSTER.inventory().agents[0]


def builder(nodes: range) -> PinglistBuilder:
    return PinglistBuilder(CLUSTER.inventory(nodes=nodes), POLICY)


class MeshServer:
    """Serves one agent's part and a mesh that changes, with a delta from the first mesh
    (``tamper``: one that claims the new version but does not give it)."""

    def __init__(self, first: PinglistBuilder) -> None:
        self.builder = first
        self.first: Mesh = first.mesh()
        self.delta: MeshDelta | None = None
        self.mesh_statuses: list[int] = []

    def change(self, to: PinglistBuilder, *, tamper: bool) -> None:
        now = to.mesh()
        delta = mesh_delta(self.first.version, group_digests(self.first.ring), now, group_digests(now.ring))
        assert delta is not None
        wrong = msgspec.structs.replace(delta.mesh, repeat=delta.mesh.repeat + 1)  # but the same version
        self.delta = msgspec.structs.replace(delta, mesh=wrong) if tamper else delta
        self.builder = to

    async def pinglist(self, request: web.Request) -> web.Response:
        head = self.builder.head(request.match_info["agent"])
        assert head is not None
        headers = {"ETag": f'"{head.version}"', MESH_VERSION_HEADER: f'"{self.builder.mesh().version}"'}
        if request.headers.get("If-None-Match") == headers["ETag"]:
            return web.Response(status=304, headers=headers)
        return web.Response(body=msgspec.json.encode(head), content_type="application/json", headers=headers)

    async def mesh(self, request: web.Request) -> web.Response:
        now = self.builder.mesh()
        etag = f'"{now.version}"'
        held = request.headers.get("If-None-Match")
        if held == etag:
            status, body = 304, b""
        elif self.delta is not None and held == f'"{self.first.version}"' and request.headers.get("A-IM"):
            status, body = 226, msgspec.json.encode(self.delta)
        else:
            status, body = 200, msgspec.json.encode(now)
        self.mesh_statuses.append(status)
        headers = {"ETag": etag, **({"IM": MESH_DELTA_IM} if status == 226 else {})}
        return web.Response(
            status=status, body=body or None, content_type="application/json", headers=headers
        )


@pytest.mark.parametrize("tamper", [False, True], ids=["good-delta", "bad-delta"])
async def test_the_agent_applies_a_good_delta_and_refetches_past_a_bad_one(
    tamper: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server = MeshServer(builder(range(5)))
    app = web.Application()
    app.router.add_get("/api/v1/pinglist/{agent}", server.pinglist)
    app.router.add_get("/api/v1/mesh", server.mesh)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    holder = PinglistHolder(
        AgentMetrics(registry=CollectorRegistry(), node=AGENT.node, kind="pod", version="t")
    )
    try:
        async with ClientSession() as session:
            follow = asyncio.create_task(
                follow_collector(holder, session, collector=f"http://127.0.0.1:{port}", agent=AGENT.name,
                                 rng=random.Random(1), initial_interval_s=0.2)
            )  # fmt: skip
            try:
                async with asyncio.timeout(10):
                    await holder.wait()
                after = builder(range(6))
                server.change(after, tamper=tamper)
                head = after.head(AGENT.name)
                assert head is not None
                want = assemble(head, after.mesh())
                with caplog.at_level(logging.WARNING, logger="prober.agent.runner"):
                    async with asyncio.timeout(10):
                        while holder.current is None or holder.current.version != want.version:  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
            finally:
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follow
    finally:
        await runner.cleanup()
    assert holder.current == want
    if tamper:
        assert server.mesh_statuses[:3] == [200, 226, 200]
        assert "mesh delta unusable" in caplog.text
    else:
        assert server.mesh_statuses[:2] == [200, 226]
        assert 200 not in server.mesh_statuses[1:]
        assert "mesh delta unusable" not in caplog.text


MESH_BODY = encode_mesh(builder(range(6)).mesh())


@contextlib.asynccontextmanager
async def serving(body: bytes, encoding: str | None) -> AsyncIterator[str]:
    """A server answering every GET with ``body`` as it is, under ``Content-Encoding: encoding``."""

    async def answer(_request: web.Request) -> web.Response:
        headers = {"Content-Encoding": encoding} if encoding else {}
        return web.Response(body=body, content_type="application/json", headers=headers)

    app = web.Application()
    app.router.add_get("/api/v1/mesh", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        pytest.param(gzip.compress(MESH_BODY), "gzip", id="gzip"),
        pytest.param(MESH_BODY, None, id="plain"),
    ],
)
async def test_the_mesh_is_inflated_and_decoded_a_piece_at_a_time(body: bytes, encoding: str | None) -> None:
    async with serving(body, encoding) as url, ClientSession() as session:
        doc = _MeshDocument(f"{url}/api/v1/mesh")
        status, _, _ = await doc.fetch(session)
    assert status == 200
    assert doc.value == msgspec.json.decode(MESH_BODY, type=Mesh)


@pytest.mark.parametrize(
    ("body", "encoding", "message"),
    [
        pytest.param(gzip.compress(MESH_BODY)[:-40], "gzip", "cut short", id="cut-gzip"),
        pytest.param(b"\x1f\x8b" + b"\x00" * 64, "gzip", "bad gzip body", id="not-gzip"),
        pytest.param(zlib.compress(MESH_BODY), "deflate", "not understood", id="another-encoding"),
    ],
)
async def test_a_broken_mesh_body_is_a_payload_error(body: bytes, encoding: str, message: str) -> None:
    async with serving(body, encoding) as url, ClientSession() as session:
        doc = _MeshDocument(f"{url}/api/v1/mesh")
        with pytest.raises(ClientPayloadError, match=message):
            await doc.fetch(session)
    assert doc.value is None


async def test_a_mesh_larger_than_the_bound_is_refused_while_it_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_module, "MAX_DOCUMENT_BYTES", len(MESH_BODY) // 2)
    async with serving(gzip.compress(MESH_BODY), "gzip") as url, ClientSession() as session:
        doc = _MeshDocument(f"{url}/api/v1/mesh")
        with pytest.raises(ClientPayloadError, match="more than"):
            await doc.fetch(session)
