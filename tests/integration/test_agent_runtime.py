"""The agent runtime end to end on loopback: echo agents on 127.0.0.2/127.0.0.3, a fake collector."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from prober.agent.reporter import Reporter, ReporterPolicy
from prober.agent.runner import AgentRuntime, PinglistHolder, RuntimeOptions
from prober.agent.settings import AgentSettings
from prober.model import Outcome, ProbeResult, Proto, SrcKind, TargetKind
from prober.pinglist import (
    MESH_VERSION_HEADER,
    PINGLIST_HEADER,
    SWEEP_HEADER,
    Announced,
    PeerGroup,
    Pinglist,
    ProbeTarget,
    SharedGroup,
    SweepOrder,
    encode_announcement,
    encode_sweep_order,
    split,
)
from prober.records import parse_batch, read_records
from prober.schedule import LAUNCH_AHEAD_S, USABLE_FRACTION, PlannedProbe, round_index, round_start
from tests.integration.agent_helpers import dns_responder, echo_agent, tcp_server
from tests.integration.test_agent_reporter import free_port

ME = "127.0.0.2"
PEER = "127.0.0.3"


def echo_targets(kind: TargetKind, node: str, ip: str, http: int, udp: int) -> list[ProbeTarget]:
    dst_kind = SrcKind.HOST if kind is TargetKind.HOST else SrcKind.POD
    return [
        ProbeTarget(target=f"{kind.value}/{node}", kind=kind, ip=ip, port=http, proto=Proto.HTTP,
                    dst_node=node, dst_kind=dst_kind),
        ProbeTarget(target=f"{kind.value}/{node}", kind=kind, ip=ip, port=udp, proto=Proto.UDP,
                    dst_node=node, dst_kind=dst_kind),
    ]  # fmt: skip


def pinglist(
    *, my_http: int, my_udp: int, peer_http: int, peer_udp: int, dns_port: int, interval_s: float = 1.0,
    version: str = "v1",
) -> Pinglist:  # fmt: skip
    nlb = [
        ProbeTarget(target="nlb/prober-echo", kind=TargetKind.NLB, ip=ip, port=port, proto=Proto.HTTP, zone=z)
        for ip, port, z in ((ME, my_http, "zone-1"), (PEER, peer_http, "zone-2"))
    ]
    dns = ProbeTarget(
        target="dns/kube-dns",
        kind=TargetKind.DNS,
        ip="127.0.0.1",
        port=dns_port,
        proto=Proto.DNS,
        query="ok.test.",
    )
    return Pinglist(
        version=version, agent="host-node-a", node="node-a", kind=SrcKind.HOST, interval_s=interval_s,
        timeout_s=1.0, budget_per_s=50, concurrency=8,
        peers=[PeerGroup(node="node-b",
                         targets=echo_targets(TargetKind.POD, "node-b", PEER, peer_http, peer_udp))],
        peers_per_round=1,
        local=echo_targets(TargetKind.HOST, "node-a", ME, my_http, my_udp),
        shared=[
            SharedGroup(name="nlb/prober-echo", targets=nlb, same_source_port=True),
            SharedGroup(name="dns/kube-dns", targets=[dns]),
        ],
    )  # fmt: skip


def settings(**kw: object) -> AgentSettings:
    base: dict[str, object] = {
        "network": SrcKind.HOST, "node": "node-a", "name": "host-node-a", "listen": ME, "source_ip": ME,
        "http_port": free_port(), "udp_port": 0,
    }  # fmt: skip
    base.update(kw)
    return AgentSettings(**base)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(
    runtime: AgentRuntime, feed: Callable[[PinglistHolder], object] | None = None
) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(runtime.run(stop, feed=feed))  # type: ignore[arg-type]
        async with asyncio.timeout(5):
            await runtime.serving.wait()
        try:
            yield stop
        finally:
            stop.set()
            # An agent asked to stop drains within its deadlines: one that does not fails
            # here, in seconds, instead of holding the test to its timeout.
            async with asyncio.timeout(30):
                await task


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_standalone_rounds_probe_every_path_and_record_what_the_echo_saw(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    s = settings(inventory=tmp_path / "unused.yaml", results_file=out)
    reg = CollectorRegistry()
    runtime = AgentRuntime(s, registry=reg, rng=random.Random(3))
    async with echo_agent(PEER, "node-b") as peer, dns_responder() as dns_port:
        runtime.http_port = None

        async def feed(holder: PinglistHolder) -> None:
            await runtime.serving.wait()
            assert runtime.http_port is not None
            assert runtime.udp_port is not None
            pl = pinglist(my_http=runtime.http_port, my_udp=runtime.udp_port, peer_http=peer.http_port,
                          peer_udp=peer.udp_port, dns_port=dns_port)  # fmt: skip
            holder.set(pl)
            await asyncio.Event().wait()

        def seen() -> int:
            return len(out.read_bytes().splitlines()) if out.exists() else 0

        async with running(runtime, feed):
            await until(lambda: seen() >= 2 * 7)  # two rounds: 2 local + 2 peer + 2 NLB + 1 DNS
    results = read_records(out)
    by_target: dict[tuple[str, Proto], list[ProbeResult]] = {}
    for r in results:
        by_target.setdefault((r.target, r.proto), []).append(r)
        assert r.outcome is Outcome.OK, r
        assert r.src_node == "node-a"
        assert r.src_ip == ME  # --source-ip bound every probe
        if r.proto in (Proto.HTTP, Proto.UDP):
            assert r.seen_src_ip == ME
    assert set(by_target) == {
        ("host/node-a", Proto.HTTP), ("host/node-a", Proto.UDP), ("pod/node-b", Proto.HTTP),
        ("pod/node-b", Proto.UDP), ("nlb/prober-echo", Proto.HTTP), ("dns/kube-dns", Proto.DNS),
    }  # fmt: skip
    assert {r.path for r in results} == {"host-to-host", "host-to-pod", "host-to-nlb", "host-to-dns"}
    assert {r.dst_node for r in by_target["nlb/prober-echo", Proto.HTTP]} == {"node-a", "node-b"}
    # The NLB zone pair left from one source port, round after round.
    nlb = by_target["nlb/prober-echo", Proto.HTTP]
    by_ts: dict[float, set[int | None]] = {}
    for r in nlb:
        by_ts.setdefault(r.ts, set()).add(r.src_port)
    assert all(len(ports) == 1 for ports in by_ts.values())
    ok = reg.get_sample_value(
        "prober_probes_total", {"path": "host-to-pod", "src_node": "node-a", "outcome": "ok"}
    )
    assert ok is not None
    assert ok >= 2
    assert reg.get_sample_value("prober_pinglist_targets") == 7


class FakeCollector:
    """The collector's pinglist (own part and mesh) and results API (ETag / 304, 404 for unknown agents)."""

    def __init__(self) -> None:
        self.pinglist: Pinglist | None = None
        self.fetches: list[int] = []
        self.mesh_fetches: list[int] = []
        self.results: list[ProbeResult] = []
        self.sweep: SweepOrder | None = None
        self.swept: list[tuple[str, str, str, list[ProbeResult]]] = []
        #: Name the agent's pinglist version in the answers to its results, as the collector does.
        self.announce = False

    def _document(
        self, value: object, version: str, request: web.Request, fetches: list[int], **headers: str
    ) -> web.Response:
        etag = f'"{version}"'
        if request.headers.get("If-None-Match") == etag:
            fetches.append(304)
            return web.Response(status=304, headers={"ETag": etag, **headers})
        fetches.append(200)
        return web.Response(
            body=msgspec.json.encode(value),
            content_type="application/json",
            headers={"ETag": etag, **headers},
        )

    async def get_pinglist(self, request: web.Request) -> web.Response:
        pl = self.pinglist
        if pl is None or request.match_info["agent"] != pl.agent:
            self.fetches.append(404)
            return web.json_response({"error": "unknown agent"}, status=404)
        announce = {MESH_VERSION_HEADER: f'"{pl.version}"'}
        if self.sweep is not None:
            announce[SWEEP_HEADER] = encode_sweep_order(self.sweep)
        return self._document(split(pl)[0], pl.version, request, self.fetches, **announce)

    async def get_mesh(self, request: web.Request) -> web.Response:
        pl = self.pinglist
        if pl is None:
            return web.json_response({"error": "no inventory yet"}, status=503)
        return self._document(split(pl)[1], pl.version, request, self.mesh_fetches)

    async def post_sweep_results(self, request: web.Request) -> web.Response:
        good, _, _ = parse_batch(await request.read())
        info = request.match_info
        self.swept.append((info["id"], info["agent"], request.query.get("done", ""), good))
        return web.json_response({"accepted": len(good), "rejected": 0, "errors": []})

    async def serve(self) -> tuple[web.AppRunner, int]:
        """Serve its API on 127.0.0.1 (a free port); clean the runner up when done."""
        app = web.Application()
        app.router.add_get("/api/v1/pinglist/{agent}", self.get_pinglist)
        app.router.add_get("/api/v1/mesh", self.get_mesh)
        app.router.add_post("/api/v1/results", self.post_results)
        app.router.add_post("/api/v1/sweeps/{id}/results/{agent}", self.post_sweep_results)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner, port

    async def post_results(self, request: web.Request) -> web.Response:
        good, rejected, _ = parse_batch(await request.read())
        self.results.extend(good)
        headers = {}
        if self.announce and (pl := self.pinglist) is not None:
            sweep = None if self.sweep is None else self.sweep.id
            news = {pl.agent: Announced(f"{pl.version}.{pl.version}", sweep)}  # head and mesh: its version
            headers[PINGLIST_HEADER] = encode_announcement(news)
        return web.json_response({"accepted": len(good), "rejected": rejected, "errors": []}, headers=headers)


@pytest.mark.slow
async def test_with_a_collector_pinglist_etag_reporting_sweep_and_drain() -> None:
    fake = FakeCollector()
    runner, cport = await fake.serve()

    hung_conns: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung_conns.append(writer)  # accepts, never answers: an HTTP probe waits for its timeout (stalled)
        try:
            await reader.read()
        finally:
            writer.close()

    s = settings(collector=f"http://127.0.0.1:{cport}")
    reg = CollectorRegistry()
    from prober.agent.reporter import ReporterPolicy

    options = RuntimeOptions(reporter=ReporterPolicy(flush_interval_s=0.2), flush_deadline_s=2.0)
    runtime = AgentRuntime(s, registry=reg, rng=random.Random(4), options=options)
    try:
        async with (
            echo_agent(PEER, "node-b") as peer,
            dns_responder() as dns_port,
            tcp_server(ME, hang) as hung,
            running(runtime) as stop,
            aiohttp.ClientSession() as http,
        ):
            base = f"http://{ME}:{runtime.http_port}"
            await until(lambda: len(fake.fetches) >= 1)
            assert fake.fetches[0] == 404  # not in the inventory yet: the agent waits
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200
            async with http.post(f"{base}/sweep") as r:
                assert r.status == 404  # nothing on an agent starts work
            assert runtime.http_port is not None
            assert runtime.udp_port is not None
            pl = pinglist(my_http=runtime.http_port, my_udp=runtime.udp_port, peer_http=peer.http_port,
                          peer_udp=peer.udp_port, dns_port=dns_port)  # fmt: skip
            # A peer whose echo hangs: probes to it are in flight when shutdown comes.
            hung_target = ProbeTarget(target="pod/node-c", kind=TargetKind.POD, ip=ME, port=hung,
                                      proto=Proto.HTTP, dst_node="node-c", dst_kind=SrcKind.POD)  # fmt: skip
            fake.pinglist = msgspec.structs.replace(
                pl, local=[*pl.local, hung_target], interval_s=2.0, timeout_s=1.5, report_interval_s=0.3
            )
            await until(lambda: 200 in fake.fetches, timeout_s=15)
            # The mesh says how often to post: the reporter follows it from then on.
            await until(lambda: runtime.reporter is not None and runtime.reporter.flush_interval_s == 0.3)
            await until(lambda: 304 in fake.fetches, timeout_s=15)  # refresh with If-None-Match
            assert fake.mesh_fetches == [200]  # the mesh again only when the answer announces a new one
            await until(lambda: any(r.target == "pod/node-b" for r in fake.results), timeout_s=10)

            # a sweep order in the pinglist answer: run once, delivered once, though repeated
            fake.sweep = SweepOrder(
                id="s1", round=0, rounds=1, timeout_s=0.5, spread_s=0.2, until=time.time() + 30
            )
            await until(lambda: bool(fake.swept), timeout_s=15)
            await until(lambda: fake.fetches.count(304) >= 4, timeout_s=15)
            [(sweep_id, agent_name, done, swept)] = fake.swept
            assert (sweep_id, agent_name, done) == ("s1", s.name, "1")
            fake.sweep = None
            assert sorted(x.target for x in swept) == sorted(
                ["host/node-a", "host/node-a", "pod/node-b", "pod/node-b", "nlb/prober-echo",
                 "nlb/prober-echo", "dns/kube-dns", "pod/node-c"]
            )  # fmt: skip
            assert next(x for x in swept if x.target == "pod/node-c").outcome is Outcome.STALLED

            # Stop as a probe of the hanging peer starts: it is in flight for its timeout
            # (1.5 s), which the drain waits for while the echo still answers. (Any probe in
            # flight could end at once, the drain with it, and the echo before the reads.)
            started = len(hung_conns)
            await until(lambda: len(hung_conns) > started, timeout_s=10)
            stop.set()
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503  # readiness fails first ...
            async with http.get(f"{base}/") as r:
                assert (await r.json())["node"] == "node-a"  # ... while the echo still answers
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
    finally:
        for writer in hung_conns:
            writer.close()
        await runner.cleanup()
    # Sweep results went to the caller only; every round result reached the collector,
    # including the in-flight probes that finished during the drain.
    assert all(r.ts not in {x.ts for x in swept} or r.target != "pod/node-c" for r in fake.results)
    assert any(r.target == "pod/node-c" and r.outcome is Outcome.STALLED for r in fake.results)
    assert reg.get_sample_value("prober_report_buffer_records") == 0
    assert reg.get_sample_value("prober_report_batches_total", {"result": "ok"})


@pytest.mark.slow
async def test_an_agent_fetches_its_pinglist_when_the_answer_to_its_results_says_it_changed() -> None:
    """Once the answers to its results name its pinglist, an agent asks for it only when
    they name another version or a sweep it has not had, and every six rounds; the new
    pinglist and the sweep arrive with the answer to its next delivery (every 0.2 s here)."""
    fake = FakeCollector()
    fake.announce = True
    runner, cport = await fake.serve()
    from prober.agent.reporter import ReporterPolicy

    options = RuntimeOptions(reporter=ReporterPolicy(flush_interval_s=0.2), flush_deadline_s=2.0)
    runtime = AgentRuntime(settings(collector=f"http://127.0.0.1:{cport}"), registry=CollectorRegistry(),
                           rng=random.Random(5), options=options)  # fmt: skip
    try:
        async with echo_agent(PEER, "node-b") as peer, dns_responder() as dns_port, running(runtime):
            assert runtime.http_port is not None
            assert runtime.udp_port is not None
            pl = pinglist(my_http=runtime.http_port, my_udp=runtime.udp_port, peer_http=peer.http_port,
                          peer_udp=peer.udp_port, dns_port=dns_port, interval_s=2.0)  # fmt: skip
            fake.pinglist = pl
            await until(lambda: 200 in fake.fetches, timeout_s=10)
            await until(lambda: runtime.announcements.heard_any, timeout_s=5)
            await asyncio.sleep(2.5)  # the fetch of the round it was waiting before it heard
            # Rounds of 2 s with nothing new: no fetch for 4 s (the next poll is 6 rounds, 12 s, on),
            # and what follows comes within 3 s of its news, not at that poll.
            settled = len(fake.fetches)
            await asyncio.sleep(4.0)
            assert len(fake.fetches) == settled
            assert len(fake.results) > 0
            # A new version: fetched at the next answer, not at the next poll.
            fake.pinglist = msgspec.structs.replace(pl, version="v2")
            held = runtime.holder
            await until(lambda: held.current is not None and held.current.version == "v2.v2", timeout_s=3)
            # A sweep: fetched at once, run once; its id named again is no news.
            settled = len(fake.fetches)
            fake.sweep = SweepOrder(id="s2", round=0, rounds=1, timeout_s=0.5, spread_s=0.2,
                                    until=time.time() + 30)  # fmt: skip
            await until(lambda: bool(fake.swept), timeout_s=5)
            assert len(fake.fetches) == settled + 1
            await asyncio.sleep(2.0)
            assert len(fake.fetches) == settled + 1
            assert [x[:3] for x in fake.swept] == [("s2", pl.agent, "1")]
    finally:
        await runner.cleanup()


async def test_probes_that_cannot_start_within_their_round_are_counted_as_overruns() -> None:
    """Concurrency 1 and a peer that never answers: the round's other probes never get a slot."""
    conns: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        try:
            await reader.read()
        finally:
            writer.close()

    reg = CollectorRegistry()
    runtime = AgentRuntime(settings(), registry=reg, rng=random.Random(5))
    async with tcp_server(ME, hang) as port:
        targets = [
            ProbeTarget(target=f"pod/node-{i}", kind=TargetKind.POD, ip=ME, port=port, proto=Proto.HTTP,
                        dst_node=f"node-{i}", dst_kind=SrcKind.POD)
            for i in range(3)
        ]  # fmt: skip
        pl = Pinglist(
            version="x", agent="host-node-a", node="node-a", kind=SrcKind.HOST, interval_s=0.5, timeout_s=2.0,
            budget_per_s=100, concurrency=1, peers=[], peers_per_round=0, local=targets, shared=[],
        )  # fmt: skip

        async def feed(holder: PinglistHolder) -> None:
            holder.set(pl)
            await asyncio.Event().wait()

        async with running(runtime, feed):
            await until(lambda: (reg.get_sample_value("prober_round_overruns_total") or 0) >= 2)
            assert runtime.in_flight <= 1  # never more in flight than the concurrency
        for writer in conns:
            writer.close()
    # connected, then no answer: stalled
    timeouts = reg.get_sample_value(
        "prober_probes_total", {"path": "host-to-pod", "src_node": "node-a", "outcome": "stalled"}
    )
    assert timeouts is not None
    assert timeouts >= 1  # the probe that got the slot finished during the drain


@pytest.mark.slow
async def test_a_focused_entry_that_comes_mid_round_is_probed_in_that_round(tmp_path: Path) -> None:
    """The collector asks a question mid-round: the agent probes the new focused entry before
    the round ends, once, and from the next round on once a round as the plan holds it."""
    out = tmp_path / "results.jsonl"
    runtime = AgentRuntime(
        settings(inventory=tmp_path / "unused.yaml", results_file=out),
        registry=CollectorRegistry(),
        rng=random.Random(7),
        options=RuntimeOptions(reporter=ReporterPolicy(flush_interval_s=0.2)),
    )
    interval = 4.0
    asked_at: list[float] = []
    async with echo_agent(PEER, "node-b") as peer, dns_responder() as dns_port:
        focused = ProbeTarget(target="external/focus", kind=TargetKind.EXTERNAL, ip=PEER, port=peer.http_port,
                              proto=Proto.HTTP)  # fmt: skip

        async def feed(holder: PinglistHolder) -> None:
            await runtime.serving.wait()
            assert runtime.http_port is not None
            assert runtime.udp_port is not None
            pl = pinglist(my_http=runtime.http_port, my_udp=runtime.udp_port, peer_http=peer.http_port,
                          peer_udp=peer.udp_port, dns_port=dns_port, interval_s=interval)  # fmt: skip
            holder.set(pl)
            # A second into a round the agent is probing: the question comes.
            await until(lambda: runtime._round is not None, timeout_s=2 * interval)
            rest = round_start(round_index(time.time(), interval) + 1, interval) - time.time()
            await asyncio.sleep(rest + 1.0)
            asked_at.append(time.time())
            holder.set(msgspec.structs.replace(pl, version="v2", focus=[focused]))
            # The same question in a new version mid-round: nothing more to probe now.
            await asyncio.sleep(0.5)
            holder.set(msgspec.structs.replace(pl, version="v3", focus=[focused]))
            await asyncio.Event().wait()

        def probed() -> list[ProbeResult]:
            return [r for r in read_records(out) if r.target == "external/focus"] if out.exists() else []

        async with running(runtime, feed):
            await until(lambda: bool(asked_at) and len(probed()) >= 2, timeout_s=4 * interval)
            await until(lambda: time.time() > round_start(round_index(asked_at[0], interval) + 2, interval),
                        timeout_s=3 * interval)  # fmt: skip
            await asyncio.sleep(0.5)
    asked_round = round_index(asked_at[0], interval)
    rounds = Counter(round_index(r.ts, interval) for r in probed())
    assert rounds[asked_round] == 1
    assert rounds[asked_round + 1] == 1
    [first] = [r for r in probed() if round_index(r.ts, interval) == asked_round]
    assert asked_at[0] <= first.ts < round_start(asked_round, interval) + USABLE_FRACTION * interval
    assert first.outcome is Outcome.OK


async def test_a_rounds_probes_due_close_together_start_on_one_wake_up(tmp_path: Path) -> None:
    """A round's probes start in groups: those due within ``LAUNCH_AHEAD_S`` of the one the
    round loop woke for start with it (one wake-up for several probes), a later one at
    its own offset, never before the plan's first."""
    out = tmp_path / "results.jsonl"
    runtime = AgentRuntime(settings(), registry=CollectorRegistry(), rng=random.Random(6))
    runtime.reporter = Reporter(collector_url=None, session=None, metrics=runtime.metrics, results_file=out)
    async with echo_agent(PEER, "node-b") as peer:
        [http, _] = echo_targets(TargetKind.POD, "node-b", PEER, peer.http_port, peer.udp_port)
        pl = Pinglist(
            version="x", agent="host-node-a", node="node-a", kind=SrcKind.HOST, interval_s=4.0, timeout_s=1.0,
            budget_per_s=50, concurrency=8, peers=[], peers_per_round=0, local=[http], shared=[],
        )  # fmt: skip
        assert LAUNCH_AHEAD_S == 0.5
        offsets = [0.2, 0.45, 0.65, 1.2]
        plan = [PlannedProbe(offset_s=o, targets=(http,)) for o in offsets]
        start = time.time()
        async with asyncio.TaskGroup() as tg:
            await runtime._run_plan(tg, pl, plan, start, joined_at=start)
        async with asyncio.timeout(5):
            while runtime.in_flight:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    await runtime.reporter.close(deadline_s=0.0)  # the results file, whole
    stamps = sorted(r.ts - start for r in read_records(out))
    assert len(stamps) == 4
    assert offsets[0] - 0.01 <= stamps[0] < offsets[0] + 0.1  # the first at its own time
    assert stamps[2] - stamps[0] < 0.05  # the next two with it: one wake-up
    assert offsets[3] - 0.01 <= stamps[3] < offsets[3] + 0.1  # past the slack: at its own time
