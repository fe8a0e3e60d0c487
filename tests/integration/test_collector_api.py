"""The collector's HTTP API against a real server on loopback: good input, bad input, no crash."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from prober.agent.metrics import AgentMetrics
from prober.agent.runner import PinglistHolder, follow_collector
from prober.collector.http import INLINE_ADMIT_BYTES
from prober.collector.service import PinglistSource
from prober.inventory import Inventory
from prober.model import Matrix, Outcome, ProbeResult, Report
from prober.pinglist import (
    MESH_DELTA_IM,
    MESH_VERSION_HEADER,
    PINGLIST_HEADER,
    AgentPinglist,
    Announced,
    Mesh,
    MeshDelta,
    apply_delta,
    assemble,
    decode_announcement,
)
from prober.records import encode_records
from prober.schedule import SchedulePolicy, pinglist_factory
from tests.integration.collector_helpers import (
    FRESH_S,
    agent,
    eventually,
    probe,
    running_collector,
    three_nodes,
    write_inventory,
)

GOOD = probe("node-a", "node-b", ts=0.0)


def good_line(**changes: object) -> bytes:
    d = msgspec.json.decode(msgspec.json.encode(GOOD))
    d["ts"] = time.time()
    d.update(changes)
    return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()


INVENTORY = three_nodes([agent("agent-pod-a", "node-a", 18080), agent("agent-pod-b", "node-b", 18080)])


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{url}/api/v1/results", data=body) as resp:
        return resp.status, await resp.json()


async def test_results_are_counted_and_served_back(tmp_path: Path) -> None:
    async with running_collector(tmp_path, INVENTORY) as (collector, url), aiohttp.ClientSession() as s:
        now = time.time()
        records = [probe("node-a", "node-b", ts=now) for _ in range(9)]
        records.append(probe("node-a", "node-b", Outcome.TIMEOUT, ts=now))
        status, reply = await post(s, url, encode_records(records))
        assert (status, reply) == (200, {"accepted": 10, "rejected": 0, "errors": []})

        async def read_report() -> Report:
            async with s.get(f"{url}/api/v1/report?window=60") as resp:
                assert resp.status == 200
                return msgspec.json.decode(await resp.read(), type=Report)

        report = await eventually(read_report, lambda r: bool(r.matrix.paths))
        [pm] = report.matrix.paths
        [cell] = pm.cells
        assert (cell.src, cell.dst, cell.sent, cell.ok) == ("node-a", "node-b", 10, 9)
        assert report.matrix.nodes == ["node-a", "node-b", "node-c"]
        assert report.findings == []  # one pair, 10 probes: below every rule's minimum

        async with s.get(f"{url}/api/v1/matrix") as resp:
            matrix = msgspec.json.decode(await resp.read(), type=Matrix)
        assert matrix.window_s == 60.0
        async with s.get(f"{url}/api/v1/findings?window=30") as resp:
            found = await resp.json()
        assert found["findings"] == []
        assert found["diagnosis"]["failed_rules"] == []
        assert found["diagnosis"]["last_success_ts"] > 0

        async with s.get(f"{url}/api/v1/records?since={now - 1}") as resp:
            assert resp.content_type == "application/x-ndjson"
            lines = (await resp.read()).splitlines()
        assert len(lines) == 10
        async with s.get(f"{url}/api/v1/records?since={now + 1}") as resp:
            assert await resp.read() == b""

        async with s.get(f"{url}/metrics") as resp:
            text = await resp.text()
        assert 'prober_ingested_probes_total{outcome="ok",path="pod-to-pod"} 9.0' in text
        assert 'prober_ingested_probes_total{outcome="timeout",path="pod-to-pod"} 1.0' in text
        assert "prober_inventory_nodes 3.0" in text
        assert "prober_inventory_source_up 1.0" in text
        reg = collector.registry
        assert (
            reg.get_sample_value(
                "prober_http_requests_total",
                {"handler": "/api/v1/results", "method": "POST", "code": "200"},
            )
            == 1
        )


class _ThreadSeen(Collector):
    """A family whose collection notes the thread it runs in, and waits a little as a big
    registry's rendering does."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.threads.append(threading.get_ident())
        time.sleep(0.3)
        family = GaugeMetricFamily("prober_test_rendered", "A family of this test.")
        family.add_metric([], 1.0)
        yield family


async def test_metrics_are_rendered_off_the_event_loop(tmp_path: Path) -> None:
    """A scrape renders the registry in a thread: while it takes 0.3 s the collector still
    answers; OpenMetrics when asked for, and the ``name[]`` families alone when named."""
    async with running_collector(tmp_path, INVENTORY) as (collector, url), aiohttp.ClientSession() as s:
        slow = _ThreadSeen()
        collector.registry.register(slow)
        loop_thread = threading.get_ident()

        done: list[str] = []

        async def scrape() -> tuple[str, str]:
            async with s.get(f"{url}/metrics") as resp:
                answer = resp.headers["Content-Type"], await resp.text()
            done.append("metrics")
            return answer

        async def healthz_while_scraping() -> None:
            await asyncio.sleep(0.1)
            async with s.get(f"{url}/healthz") as resp:
                assert resp.status == 200
            done.append("healthz")

        (content_type, text), _ = await asyncio.gather(scrape(), healthz_while_scraping())
        assert slow.threads
        assert loop_thread not in slow.threads
        assert done == ["healthz", "metrics"]  # answered while the scrape was rendering
        assert content_type.startswith("text/plain")
        assert "prober_test_rendered 1.0" in text
        assert "prober_inventory_nodes 3.0" in text

        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with s.get(f"{url}/metrics", headers=headers) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await resp.text()).endswith("# EOF\n")
        async with s.get(f"{url}/metrics?name[]=prober_inventory_nodes") as resp:
            assert (await resp.text()).splitlines()[-1] == "prober_inventory_nodes 3.0"
            assert "prober_test_rendered" not in await resp.text()


async def test_a_small_batch_is_decoded_on_the_event_loop_and_a_large_one_in_a_thread(tmp_path: Path) -> None:
    """An agent's post of a few results costs less to decode than a thread's hand-off;
    a large batch must not hold up the loop. Both are stored alike."""
    async with running_collector(tmp_path, INVENTORY) as (collector, url), aiohttp.ClientSession() as s:
        admit = collector.admit
        threads: list[int] = []

        def watched(body: bytes, *, caller_node: str | None = None) -> Any:
            threads.append(threading.get_ident())
            return admit(body, caller_node=caller_node)

        collector.admit = watched  # type: ignore[method-assign]
        small = b"\n".join(good_line() for _ in range(5)) + b"\n"
        large = b"\n".join(good_line() for _ in range(INLINE_ADMIT_BYTES // len(good_line()) + 1)) + b"\n"
        assert len(small) <= INLINE_ADMIT_BYTES < len(large)
        for body in (small, large):
            status, reply = await post(s, url, body)
            assert (status, reply["accepted"], reply["rejected"]) == (200, body.count(b"\n"), 0)
        assert threads[0] == threading.get_ident()  # the test's loop is the collector's
        assert threads[1] != threading.get_ident()
        lines = small.count(b"\n") + large.count(b"\n")
        async with s.get(f"{url}/api/v1/records") as resp:
            assert len((await resp.read()).splitlines()) == lines


@pytest.mark.parametrize(
    ("line", "error"),
    [
        pytest.param(b'{"ts": 1.0, "path": "pod-to-pod",', "not valid JSON", id="malformed-json"),
        pytest.param(good_line(outcome=...), "missing required field `outcome`", id="missing-field"),
        pytest.param(good_line(ts="yesterday"), "Expected `float`, got `str` - at `$.ts`", id="wrong-type"),
        pytest.param(good_line(outcome="fine"), "Invalid enum value 'fine'", id="unknown-outcome"),
        pytest.param(good_line(path="pod-to-moon"), "unknown path 'pod-to-moon'", id="unknown-path"),
        pytest.param(b"\xff\xfe\x00garbage", "not valid JSON", id="not-utf8"),
        pytest.param(b"[1, 2, 3]", "Expected `object`, got `array`", id="not-an-object"),
    ],
)
async def test_a_bad_line_is_rejected_by_number_and_the_good_ones_kept(
    tmp_path: Path, line: bytes, error: str
) -> None:
    async with running_collector(tmp_path, INVENTORY) as (collector, url), aiohttp.ClientSession() as s:
        body = b"\n".join([good_line(), line, b"", good_line()]) + b"\n"
        status, reply = await post(s, url, body)
        assert status == 200
        assert reply["accepted"] == 2
        assert reply["rejected"] == 1
        [rejection] = reply["errors"]
        assert rejection["line"] == 2
        assert error in rejection["error"]
        assert collector.registry.get_sample_value("prober_ingest_rejected_records_total") == 1
        async with s.get(f"{url}/healthz") as resp:
            assert resp.status == 200


async def test_many_bad_lines_are_counted_and_the_list_is_bounded(tmp_path: Path) -> None:
    async with running_collector(tmp_path, INVENTORY) as (_, url), aiohttp.ClientSession() as s:
        status, reply = await post(s, url, b"nope\n" * 100 + good_line() + b"\n")
        assert (status, reply["accepted"], reply["rejected"], len(reply["errors"])) == (200, 1, 100, 20)
        # One more bad line and the batch is garbage: reading stops, nothing of it is stored.
        status, reply = await post(s, url, good_line() + b"\n" + b"nope\n" * 500)
        assert status == 400
        assert "more than 100 lines rejected" in reply["error"]
        assert (reply["rejected"], len(reply["errors"])) == (101, 20)


@pytest.mark.parametrize("body", [pytest.param(b"", id="empty"), pytest.param(b"\n \n", id="blank-lines")])
async def test_empty_body_is_a_clear_400(tmp_path: Path, body: bytes) -> None:
    async with running_collector(tmp_path, INVENTORY) as (_, url), aiohttp.ClientSession() as s:
        status, reply = await post(s, url, body)
        assert status == 400
        assert "empty body" in str(reply["error"])


async def test_oversized_body_is_413_and_the_collector_carries_on(tmp_path: Path) -> None:
    async with (
        running_collector(tmp_path, INVENTORY, max_body_bytes=64 * 1024) as (_, url),
        aiohttp.ClientSession() as s,
    ):
        big = good_line() + b"\n"
        body = big * (64 * 1024 // len(big) + 2)
        status, reply = await post(s, url, body)
        assert status == 413
        assert "send smaller batches" in str(reply["error"])

        async def chunks() -> object:  # no Content-Length: the limit holds while reading
            for _ in range(64 * 1024 // len(big) + 2):
                yield big

        async with s.post(f"{url}/api/v1/results", data=chunks()) as resp:
            assert resp.status == 413
        status, reply = await post(s, url, big)
        assert (status, reply["accepted"]) == (200, 1)


async def test_matrix_views_and_their_bounds(tmp_path: Path) -> None:
    async with running_collector(tmp_path, INVENTORY) as (_, url), aiohttp.ClientSession() as s:
        now = time.time()
        records = [probe("node-a", "node-b", ts=now) for _ in range(4)]
        records += [probe("node-a", "node-c", Outcome.TIMEOUT, ts=now), probe("node-b", "node-c", ts=now)]
        assert (await post(s, url, encode_records(records)))[0] == 200

        async def matrix(**params: str) -> Matrix:
            async with s.get(f"{url}/api/v1/matrix", params=params) as resp:
                assert resp.status == 200, await resp.text()
                return msgspec.json.decode(await resp.read(), type=Matrix)

        await eventually(matrix, lambda m: bool(m.paths))

        assert (await matrix()).view == "full"  # three nodes: every one of them
        zones = await matrix(view="zones")
        [pm] = zones.paths
        assert (zones.view, zones.nodes) == ("zones", ["zone-1", "zone-2"])
        assert {(c.src, c.dst, c.sent, c.ok) for c in pm.cells} == {
            ("zone-1", "zone-1", 4, 4),
            ("zone-1", "zone-2", 2, 1),
        }
        [failing] = (await matrix(view="failing")).paths
        assert (failing.sources, failing.targets, failing.hidden_sources, failing.hidden_targets) == (
            ["node-a"], ["node-c"], 1, 1,
        )  # fmt: skip
        [row] = (await matrix(view="node", node="node-c")).paths
        assert {(c.src, c.dst) for c in row.cells} == {("node-a", "node-c"), ("node-b", "node-c")}
        async with s.get(f"{url}/api/v1/report", params={"view": "zones"}) as resp:
            assert msgspec.json.decode(await resp.read(), type=Report).matrix.view == "zones"
        for params, message in [
            ({"view": "sideways"}, "view must be one of"),
            ({"view": "node"}, "needs node=NAME"),
            ({"view": "node", "node": "node-z"}, "needs node=NAME"),
            ({"view": "failing", "limit": "0"}, "limit must be a whole number"),
            ({"view": "failing", "limit": "9999"}, "limit must be a whole number"),
        ]:
            async with s.get(f"{url}/api/v1/matrix", params=params) as resp:
                assert resp.status == 400
                assert message in (await resp.json())["error"]


async def test_pinglist_etag_and_unknown_agent(tmp_path: Path) -> None:
    async with running_collector(tmp_path, INVENTORY) as (_, url), aiohttp.ClientSession() as s:
        async with s.get(f"{url}/api/v1/pinglist/agent-pod-a") as resp:
            assert resp.status == 200
            head = msgspec.json.decode(await resp.read(), type=AgentPinglist)
            etag = resp.headers["ETag"]
            announced = resp.headers[MESH_VERSION_HEADER]
        assert (head.agent, head.node) == ("agent-pod-a", "node-a")
        assert etag == f'"{head.version}"'
        async with s.get(f"{url}/api/v1/pinglist/agent-pod-a", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
            assert await resp.read() == b""
            assert resp.headers[MESH_VERSION_HEADER] == announced
        async with s.get(f"{url}/api/v1/pinglist/agent-pod-a", headers={"If-None-Match": '"stale"'}) as resp:
            assert resp.status == 200
        async with s.get(f"{url}/api/v1/pinglist/agent-nobody") as resp:
            assert resp.status == 404
            assert "unknown agent 'agent-nobody'" in (await resp.json())["error"]
        async with s.get(f"{url}/api/v1/mesh") as resp:
            assert resp.status == 200
            mesh = msgspec.json.decode(await resp.read(), type=Mesh)
            mesh_etag = resp.headers["ETag"]
        assert mesh_etag == f'"{mesh.version}"' == announced
        async with s.get(f"{url}/api/v1/mesh", headers={"If-None-Match": mesh_etag}) as resp:
            assert resp.status == 304
        pl = assemble(head, mesh)
        assert [g.node for g in pl.peers] == [g.node for g in mesh.ring if g.node != "node-a"]
        assert pl.interval_s == mesh.interval_s


async def test_an_agent_holding_an_earlier_mesh_gets_a_delta_to_the_current_one(tmp_path: Path) -> None:
    async with running_collector(tmp_path, INVENTORY) as (collector, url), aiohttp.ClientSession() as s:
        async with s.get(f"{url}/api/v1/mesh") as resp:
            first = msgspec.json.decode(await resp.read(), type=Mesh)
        bigger = msgspec.structs.replace(
            INVENTORY, agents=[*INVENTORY.agents, agent("agent-pod-c", "node-c", 18080)]
        )
        write_inventory(tmp_path / "inventory.json", bigger)
        async with asyncio.timeout(10):
            while collector.inventory != bigger:  # noqa: ASYNC110 - watching the collector from outside
                await asyncio.sleep(0.05)
        async with s.get(f"{url}/api/v1/mesh") as resp:
            now = msgspec.json.decode(await resp.read(), type=Mesh)
        assert now.version != first.version

        held = {"If-None-Match": f'"{first.version}"'}
        async with s.get(f"{url}/api/v1/mesh", headers={**held, "A-IM": MESH_DELTA_IM}) as resp:
            assert resp.status == 226
            assert resp.headers["IM"] == MESH_DELTA_IM
            assert resp.headers["Delta-Base"] == f'"{first.version}"'
            assert resp.headers["ETag"] == f'"{now.version}"'
            delta = msgspec.json.decode(await resp.read(), type=MeshDelta)
        assert [p.group.node for p in delta.groups] == ["node-c"]
        assert apply_delta(first, delta) == now
        # Without A-IM, or from a mesh the collector does not remember: the whole mesh.
        async with s.get(f"{url}/api/v1/mesh", headers=held) as resp:
            assert resp.status == 200
            assert msgspec.json.decode(await resp.read(), type=Mesh) == now
        for stale in ('"0123456789abcdef"', "*", f'"{first.version}", "x"'):
            headers = {"If-None-Match": stale, "A-IM": MESH_DELTA_IM}
            async with s.get(f"{url}/api/v1/mesh", headers=headers) as resp:
                assert resp.status == (304 if stale == "*" else 200), stale
        async with s.get(
            f"{url}/api/v1/mesh", headers={"If-None-Match": f'"{now.version}"', "A-IM": MESH_DELTA_IM}
        ) as resp:
            assert resp.status == 304
        # Not gzip-capable: the same delta, plain.
        headers = {**held, "A-IM": f"vcdiff, {MESH_DELTA_IM};q=1", "Accept-Encoding": "identity"}
        async with s.get(f"{url}/api/v1/mesh", headers=headers) as resp:
            assert resp.status == 226
            assert "Content-Encoding" not in resp.headers
            assert msgspec.json.decode(await resp.read(), type=MeshDelta) == delta


def quick_pinglists(inv: Inventory, previous: PinglistSource | None) -> PinglistSource:
    """Pinglists of half-second rounds: an agent polls every half second."""
    return pinglist_factory(SchedulePolicy(interval_s=0.5, timeout_s=0.2))(inv, previous)


async def test_an_agent_follows_a_changing_mesh_by_its_deltas(tmp_path: Path) -> None:
    statuses: list[tuple[str, int]] = []

    async def on_end(_s: object, _c: object, params: aiohttp.TraceRequestEndParams) -> None:
        statuses.append((params.url.path, params.response.status))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    async with (
        running_collector(tmp_path, INVENTORY, pinglists=quick_pinglists) as (collector, url),
        aiohttp.ClientSession(trace_configs=[trace]) as s,
    ):
        holder = PinglistHolder(
            AgentMetrics(registry=CollectorRegistry(), node="node-a", kind="pod", version="test")
        )
        follow = asyncio.create_task(
            follow_collector(
                holder, s, collector=url, agent="agent-pod-a", rng=random.Random(1), initial_interval_s=0.2
            )
        )
        try:
            async with asyncio.timeout(10):
                first = await holder.wait()
            assert [g.node for g in first.peers] == ["node-b"]
            bigger = msgspec.structs.replace(
                INVENTORY, agents=[*INVENTORY.agents, agent("agent-pod-c", "node-c", 18080)]
            )
            write_inventory(tmp_path / "inventory.json", bigger)
            async with asyncio.timeout(10):
                while holder.current is None or len(holder.current.peers) != 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
        mesh = collector.mesh()
        assert mesh is not None
        assert holder.current.version.endswith(f".{mesh[0]}")
        assert [st for path, st in statuses if path == "/api/v1/mesh"] == [200, 226]


async def test_pinglists_travel_gzipped_to_clients_that_accept_it(tmp_path: Path) -> None:
    async with running_collector(tmp_path, INVENTORY) as (_, url), aiohttp.ClientSession() as s:
        for doc, kind in (("pinglist/agent-pod-a", AgentPinglist), ("mesh", Mesh)):
            async with s.get(f"{url}/api/v1/{doc}", auto_decompress=False) as resp:
                assert resp.headers["Content-Encoding"] == "gzip"  # aiohttp asks for gzip by default
                zipped = await resp.read()
            plain_headers = {"Accept-Encoding": "identity"}
            async with s.get(f"{url}/api/v1/{doc}", headers=plain_headers) as resp:
                assert "Content-Encoding" not in resp.headers
                plain = await resp.read()
            assert gzip.decompress(zipped) == plain
            msgspec.json.decode(plain, type=kind)


@pytest.mark.parametrize("window", ["abc", "0", "-5", "inf", "nan", "100000"])
async def test_bad_window_is_a_clear_400(tmp_path: Path, window: str) -> None:
    async with running_collector(tmp_path, INVENTORY) as (_, url), aiohttp.ClientSession() as s:
        for endpoint in ("matrix", "findings", "report"):
            async with s.get(f"{url}/api/v1/{endpoint}", params={"window": window}) as resp:
                assert resp.status == 400
                assert "window must be a number of seconds" in (await resp.json())["error"]


async def test_unknown_routes_methods_and_sweeps_answer_json(tmp_path: Path) -> None:
    async with running_collector(tmp_path, INVENTORY) as (_, url), aiohttp.ClientSession() as s:
        async with s.get(f"{url}/api/v1/nothing") as resp:
            assert resp.status == 404
            assert "error" in await resp.json()
        async with s.get(f"{url}/api/v1/results") as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "POST"
        async with s.get(f"{url}/api/v1/sweeps/0123") as resp:
            assert resp.status == 404
            assert "no sweep '0123'" in (await resp.json())["error"]
        async with s.get(f"{url}/api/v1/records?since=yesterday") as resp:
            assert resp.status == 400
        async with s.get(f"{url}/readyz") as resp:
            assert resp.status == 200


async def test_inventory_changes_are_followed_and_departed_nodes_drop_out(tmp_path: Path) -> None:
    async with running_collector(tmp_path, INVENTORY) as (collector, url), aiohttp.ClientSession() as s:
        now = time.time()
        body = encode_records([probe("node-a", "node-c", ts=now), probe("node-a", "node-b", ts=now)])
        assert (await post(s, url, body))[0] == 200
        smaller = msgspec.structs.replace(INVENTORY, nodes=INVENTORY.nodes[:2], agents=INVENTORY.agents[:1])
        write_inventory(tmp_path / "inventory.json", smaller)
        async with asyncio.timeout(10):
            while collector.inventory != smaller:  # noqa: ASYNC110 - watching the collector from outside
                await asyncio.sleep(0.05)
        await asyncio.sleep(FRESH_S)
        async with s.get(f"{url}/api/v1/matrix") as resp:
            matrix = msgspec.json.decode(await resp.read(), type=Matrix)
        assert matrix.nodes == ["node-a", "node-b"]
        assert [(c.src, c.dst) for c in matrix.paths[0].cells] == [("node-a", "node-b")]
        async with s.get(f"{url}/api/v1/pinglist/agent-pod-b") as resp:
            assert resp.status == 404
        # a broken edit is ignored: the last good inventory stays
        (tmp_path / "inventory.json").write_text("nodes: [")
        await asyncio.sleep(0.3)
        assert collector.inventory == smaller
        async with s.get(f"{url}/readyz") as resp:
            assert resp.status == 200


class FailingClock:
    """A clock with a bug that can be switched on: every reading raises."""

    def __init__(self) -> None:
        self.broken = False

    def __call__(self) -> float:
        if self.broken:
            raise KeyError("clock")
        return time.time()


async def test_a_bug_costs_one_request_not_the_collector(tmp_path: Path) -> None:
    clock = FailingClock()
    async with (
        running_collector(tmp_path, INVENTORY, clock=clock) as (_, url),
        aiohttp.ClientSession() as s,
    ):
        clock.broken = True
        async with s.get(f"{url}/api/v1/findings") as resp:
            assert resp.status == 500
            assert (await resp.json())["error"] == "internal error: KeyError: 'clock'"
        clock.broken = False
        status, reply = await post(s, url, good_line())
        assert (status, reply["accepted"]) == (200, 1)


async def test_the_answer_to_results_names_each_posting_agents_pinglist_version(tmp_path: Path) -> None:
    """docs/contracts.md § Pinglist: ``Prober-Pinglist`` names, for each agent whose
    results the batch held, the joined version of its pinglist, and it changes with it."""
    async with running_collector(tmp_path, INVENTORY) as (_, url), aiohttp.ClientSession() as s:

        async def version(name: str) -> str:
            async with s.get(f"{url}/api/v1/pinglist/{name}") as resp:
                assert resp.status == 200
                head, mesh = resp.headers["ETag"], resp.headers[MESH_VERSION_HEADER]
                return f"{head.strip(chr(34))}.{mesh.strip(chr(34))}"

        async def announced(records: list[ProbeResult]) -> dict[str, Announced]:
            async with s.post(f"{url}/api/v1/results", data=encode_records(records)) as resp:
                assert resp.status == 200
                return decode_announcement(resp.headers.get(PINGLIST_HEADER, ""))

        now = time.time()
        assert await announced([probe("node-a", "node-b", ts=now)]) == {
            "agent-pod-a": Announced(await version("agent-pod-a"))
        }
        both = await announced([probe("node-a", "node-b", ts=now), probe("node-b", "node-a", ts=now)])
        assert both == {
            "agent-pod-a": Announced(await version("agent-pod-a")),
            "agent-pod-b": Announced(await version("agent-pod-b")),
        }
        # A node joins: the mesh changes, and so does every agent's version named.
        before = both["agent-pod-a"].version
        write_inventory(
            tmp_path / "inventory.json",
            three_nodes([*INVENTORY.agents, agent("agent-pod-c", "node-c", 18080)]),
        )
        after = await eventually(
            lambda: announced([probe("node-a", "node-b", ts=time.time())]),
            lambda got: got.get("agent-pod-a", Announced(before)).version != before,
        )
        assert after == {"agent-pod-a": Announced(await version("agent-pod-a"))}
