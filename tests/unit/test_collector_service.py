"""The collector's service without sockets: a fake clock, a fake inventory source, fake agents.

The service's windows, findings cache, inventory switches, pinglists and sweeps,
driven through its own methods; agents take sweep orders through
``sweep_order`` and deliver through ``deliver_sweep``, as the HTTP routes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from prober.collector.service import (
    MAX_CACHED_VIEWS,
    MAX_CACHED_WINDOWS,
    VIEW_WATCH_S,
    CollectorService,
    NoAgentsError,
    PinglistFactory,
    PinglistSource,
    SweepTooSoonError,
    _Tails,
    next_pass_at,
)
from prober.collector.settings import CollectorSettings
from prober.collector.sweep import DEADLINE_GRACE_S, SweepRefusedError, SweepStatus
from prober.diagnose import NAMED_RULES
from prober.diagnose.context import Context
from prober.diagnose.mode import Rule
from prober.inventory import Agent, Inventory, InventoryError, Node
from prober.matrix import FAILING_LIMIT, ViewError
from prober.model import Finding, Outcome, ProbeResult, Proto, SrcKind
from prober.pinglist import AgentPinglist, Mesh, assemble
from prober.records import encode_records
from prober.schedule import PinglistBuilder, SchedulePolicy, pinglist_factory
from prober.stats import PairTable
from tests.synth import Cluster, Fault, generate

C5 = Cluster(n_nodes=5)
N = C5.nodes
START = 1_763_856_000.0  # where tests.synth starts its rounds


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def inventory(nodes: Sequence[str] = N, agents: Sequence[Agent] = ()) -> Inventory:
    """The nodes and agents given, and the 5-node cluster's Services, NLB, DNS and externals
    (the targets its results name: the collector admits only the inventory's)."""
    shared = C5.inventory()
    return Inventory(
        nodes=[
            Node(name=n, address=f"10.0.0.{i + 1}", zone=C5.shape.zone(C5.shape.zone_index(i)))
            for i, n in enumerate(nodes)
        ],
        agents=list(agents),
        services=shared.services,
        nodeports=shared.nodeports,
        nlbs=shared.nlbs,
        externals=shared.externals,
        dns=shared.dns,
    )


def pod_agent(node: str, *, ready: bool = True) -> Agent:
    return Agent(name=f"agent-pod-{node}", node=node, kind=SrcKind.POD, address="10.0.1.1", ready=ready)


def real_pinglists(inv: Inventory, previous: object = None) -> PinglistBuilder:
    return pinglist_factory(SchedulePolicy())(inv, previous)


def service(
    clock: Clock,
    pinglists: PinglistFactory = real_pinglists,
    *,
    rules: Sequence[tuple[str, Rule]] | None = None,
    **settings: object,
) -> CollectorService:
    return CollectorService(
        CollectorSettings(inventory="inventory.yaml", **settings),  # type: ignore[arg-type]
        pinglists=pinglists,
        registry=CollectorRegistry(),
        clock=clock,
        **({"rules": rules} if rules is not None else {}),  # type: ignore[arg-type]
    )


class StuckLongWindow:
    """A rule that records the long window's passes and holds every one after the first
    until ``release`` is set (a long pass that takes its time)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.passes: list[float] = []

    def __call__(self, ctx: Context) -> list[Finding]:
        if ctx.table.window_s > 60.0:
            self.passes.append(ctx.table.window_s)
            if len(self.passes) > 1:
                assert self.release.wait(timeout=30.0)
        return []


def rounds(faults: Sequence[Fault] = (), *, n: int = 6, seed: int = 0) -> bytes:
    """``n`` rounds of the 5-node cluster (ending just before ``START + 10 n``) as a JSONL batch."""
    return encode_records(generate(C5, rounds=n, faults=faults, seed=seed))


def kinds_and_nodes(found: Sequence[Finding]) -> list[tuple[str, list[str]]]:
    return [(f.kind, f.nodes) for f in found]


# -- windows and their findings -------------------------------------------------------------


async def test_a_window_is_computed_at_most_once_per_refresh_s() -> None:
    clock = Clock(START + 60.0)
    # A refresh shorter than a bucket: the window's buckets stay the same between passes.
    svc = service(clock, refresh_s=2.0)
    svc.apply_inventory(inventory())
    batch = rounds()
    svc.ingest(batch)
    first = await svc.window(60.0)
    sent = int(first.table.sent.sum())
    assert sent > 0
    svc.ingest(batch)  # the same results again: twice the counts, once recomputed
    clock.now += 1.9
    assert await svc.window(60.0) is first
    clock.now += 0.1
    fresh = await svc.window(60.0, wait=True)
    assert fresh.at == clock.now
    assert int(fresh.table.sent.sum()) == 2 * sent


async def test_a_reader_gets_the_last_completed_pass_while_the_next_one_runs() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock, refresh_s=5.0)
    svc.apply_inventory(inventory())
    svc.ingest(rounds())
    first = await svc.window(60.0)
    assert first.findings == []
    svc.ingest(rounds([Fault(kind="node-unreachable", nodes=(N[2],))], seed=1))
    clock.now += 5.0
    # Stale: the reader is answered at once with the last pass, and a new pass starts.
    assert await svc.window(60.0) is first
    assert await svc.window(60.0) is first  # one pass at a time: no second one
    assert len(svc._passes) == 1
    [running] = svc._passes
    fresh = await running
    assert fresh.at == clock.now
    assert int(fresh.table.sent.sum()) > int(first.table.sent.sum())  # it read the new results
    # Half its window failing reads as packet-loss: a catch-all, held back until confirmed.
    assert fresh.findings == []
    assert await svc.window(60.0) is fresh


async def test_while_the_refresh_loop_runs_it_alone_starts_the_default_windows_passes() -> None:
    """A reader's pass, started whenever a reader finds the last one stale, would move the
    passes off the loop's aligned times and a fault's evidence would be read late: the
    loop's pass comes whatever the age of the last, and a reader of a stale result is
    served it and starts none; once the loop stops, readers start passes again."""
    clock = Clock(START + 60.0)
    svc = service(clock, refresh_s=5.0)
    svc.apply_inventory(inventory())
    svc.ingest(rounds())
    first = await svc.window(60.0)  # the first reader waits for a pass
    clock.now += 1.0
    loop = asyncio.create_task(svc.refresh_forever())
    try:
        async with asyncio.timeout(60):
            while not svc.registry.get_sample_value("prober_diagnosis_cpu_seconds"):  # noqa: ASYNC110 - the loop sets it
                await asyncio.sleep(0.01)
        ours = await svc.window(60.0)
        assert ours is not first
        assert ours.at == clock.now  # the last was a second old: the loop's pass came anyway
        clock.now += 5.0
        assert await svc.window(60.0) is ours  # stale: served as it is
        assert not svc._passes
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert await svc.window(60.0) is ours
    assert len(svc._passes) == 1  # the loop is gone: the reader started one


async def test_the_long_window_is_diagnosed_at_most_once_per_long_refresh_s() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock, refresh_s=5.0, long_refresh_s=10.0, window_s=60.0, long_window_factor=5.0)
    svc.apply_inventory(inventory())
    svc.ingest(rounds([Fault(kind="node-unreachable", nodes=(N[2],))], seed=1))
    first = await svc.window(60.0)
    assert list(svc._long) == [300.0]
    at, nodes, raw, _ = svc._long[300.0]
    assert (at, nodes) == (clock.now, N)
    assert [f.kind for f, _ in raw] == ["node-unreachable"]
    clock.now += 5.0
    second = await svc.window(60.0, wait=True)
    assert second is not first
    assert second.at == clock.now
    assert svc._long[300.0][2] is raw  # reused, merged with the fresher default window
    assert kinds_and_nodes(second.findings) == [("node-unreachable", [N[2]])]
    clock.now += 5.0
    await svc.window(60.0, wait=True)
    await asyncio.gather(*svc._long_tasks.values())  # started by the pass, in the background
    assert svc._long[300.0][0] == clock.now
    assert svc._long[300.0][2] is not raw


async def test_a_costly_long_window_is_diagnosed_within_its_share_of_a_core() -> None:
    """A long pass that took c CPU-seconds is followed by the next no sooner than
    c / long_cpu_share after it began, however short ``long_refresh_s``."""

    def costly_in_the_long_window(ctx: Context) -> list[Finding]:
        if ctx.table.window_s > 60.0:
            began = time.thread_time()
            while time.thread_time() - began < 0.2:
                pass
        return []

    clock = Clock(START + 60.0)
    rules: list[tuple[str, Rule]] = [("costly", costly_in_the_long_window), *NAMED_RULES]
    svc = service(clock, rules=rules, refresh_s=5.0, long_refresh_s=10.0, long_cpu_share=0.01)
    svc.apply_inventory(inventory())
    svc.ingest(rounds([], seed=1))
    await svc.window(60.0)
    began, _, _, cost = svc._long[300.0]
    assert 0.2 <= cost < 1.0  # the next one starts c / 0.01 = 20 to 100 s after the first
    for _ in range(3):  # 5, 10 and 15 s on: past long_refresh_s, within the share
        clock.now += 5.0
        await svc.window(60.0, wait=True)
        assert svc._long_tasks == {}
        assert svc._long[300.0][0] == began
    clock.now = began + cost / 0.01 + 0.5  # (past it: began + cost / 0.01 - began may round below)
    await svc.window(60.0, wait=True)
    await asyncio.gather(*svc._long_tasks.values())
    assert svc._long[300.0][0] == clock.now


async def test_a_pass_never_waits_for_the_long_window_after_its_first_answer() -> None:
    slow = StuckLongWindow()
    long_passes, release = slow.passes, slow.release

    def broken_in_the_long_window(ctx: Context) -> list[Finding]:
        if ctx.table.window_s > 60.0 and len(long_passes) > 1:
            raise RuntimeError("boom")
        return []

    clock = Clock(START + 60.0)
    rules: list[tuple[str, Rule]] = [("slow", slow), ("broken", broken_in_the_long_window), *NAMED_RULES]
    svc = service(clock, rules=rules, refresh_s=5.0, long_refresh_s=10.0)
    svc.apply_inventory(inventory())
    svc.ingest(rounds([Fault(kind="node-unreachable", nodes=(N[2],))], seed=1))
    first = await svc.window(60.0)  # the first answer of the long window is waited for
    assert long_passes == [300.0]
    raw = svc._long[300.0][2]
    assert [f.kind for f, _ in raw] == ["node-unreachable"]
    clock.now += 10.0
    second = await svc.window(60.0, wait=True)  # the long pass it started is stuck
    assert second is not first
    stuck = svc._long_tasks[300.0]
    assert svc._long[300.0][2] is raw  # the last answer, merged
    assert kinds_and_nodes(second.findings) == [("node-unreachable", [N[2]])]
    assert svc.registry.get_sample_value("prober_diagnosis_errors_total", {"rule": "broken"}) in (None, 0.0)
    clock.now += 5.0
    third = await svc.window(60.0, wait=True)  # it does not start a second one
    assert third is not second
    assert svc._long_tasks[300.0] is stuck
    await until(lambda: len(long_passes) == 2)  # the stuck pass reached its rules (in its thread)
    release.set()
    await asyncio.gather(*svc._long_tasks.values())
    assert svc._long[300.0][0] == START + 70.0
    clock.now += 5.0
    await svc.window(60.0, wait=True)  # the pass after it ends counts its failures
    assert svc.registry.get_sample_value("prober_diagnosis_errors_total", {"rule": "broken"}) == 1.0


async def test_a_window_names_the_fault_in_it() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock)
    svc.apply_inventory(inventory())
    svc.ingest(rounds([Fault(kind="node-unreachable", nodes=(N[2],))], seed=1))
    found = (await svc.window(60.0)).findings
    assert kinds_and_nodes(found) == [("node-unreachable", [N[2]])]


async def test_running_keeps_the_default_window_and_its_metrics_fresh() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock, refresh_s=0.05)
    async with svc.running(QueueSource(inventory())):
        await until(lambda: svc.registry.get_sample_value("prober_store_entries") is not None)
        labels = {"kind": "node-unreachable", "node": N[2]}
        assert svc.registry.get_sample_value("prober_finding", labels) is None
        svc.ingest(rounds([Fault(kind="node-unreachable", nodes=(N[2],))], seed=1))
        clock.now += 0.05
        await until(lambda: svc.registry.get_sample_value("prober_finding", labels) == 1)
        await until(lambda: svc.registry.get_sample_value("prober_matrix_window_seconds") == 60.0)


async def test_after_an_inventory_change_the_long_windows_findings_of_departed_nodes_are_left_out() -> None:
    slow = StuckLongWindow()
    clock = Clock(START + 60.0)
    svc = service(clock, rules=[("slow", slow), *NAMED_RULES], refresh_s=5.0, long_refresh_s=10.0)
    svc.apply_inventory(inventory())
    svc.ingest(rounds([Fault(kind="node-unreachable", nodes=(N[2],))], seed=1))
    await svc.window(60.0)
    assert [f.nodes for f, _ in svc._long[300.0][2]] == [[N[2]]]
    tails = _Tails(recent=PairTable.empty(N), latest=PairTable.empty(N))
    assert svc.apply_inventory(inventory([n for n in N if n != N[2]]))
    # Another inventory: a new long pass starts (and is stuck); its last answer is given
    # without the departed node's finding, and kept as it was until the new one ends.
    kept = await svc._long_window(clock.now, 300.0, tails, main_s=60.0, nlb=[], failures=[], cpu=[])
    assert kept == []
    assert 300.0 in svc._long_tasks
    assert [f.nodes for f, _ in svc._long[300.0][2]] == [[N[2]]]
    slow.release.set()
    await asyncio.gather(*svc._long_tasks.values())
    assert svc._long[300.0][1] == tuple(n for n in N if n != N[2])


async def test_a_matrix_view_is_of_the_last_pass_and_built_once_for_every_reader() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock)
    svc.apply_inventory(inventory())
    svc.ingest(rounds())
    first = await svc.window(60.0)
    svc.ingest(rounds(seed=2))  # newer results, same refresh period
    answer = await svc.matrix(60.0, view="full")
    m = answer.matrix
    assert sum(pm.sent for pm in m.paths) == int(first.table.sent.sum())
    assert (m.view, m.window_s, m.generated_at) == ("full", 60.0, clock.now)
    assert m.nodes == list(N)
    assert msgspec.json.decode(answer.body) == msgspec.to_builtins(m)
    again = await asyncio.gather(*(svc.matrix(60.0, view="full") for _ in range(5)))
    assert all(a is answer for a in again)
    assert (await svc.matrix(60.0)) is answer  # auto is full at five nodes: the same view
    node = await svc.matrix(60.0, view="node", node=N[1])
    assert node is not answer
    assert node.matrix.view == "node"
    assert (await svc.matrix(60.0, view="node", node=N[1])) is node
    clock.now += svc.settings.refresh_s
    await svc.window(60.0, wait=True)  # a new pass: new views
    fresh = await svc.matrix(60.0, view="full")
    assert fresh is not answer
    assert sum(pm.sent for pm in fresh.matrix.paths) > sum(pm.sent for pm in m.paths)


async def test_a_view_that_cannot_be_given_is_refused_and_not_kept() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock)
    svc.apply_inventory(inventory())
    svc.ingest(rounds())
    for _ in range(2):
        with pytest.raises(ViewError, match="needs node=NAME"):
            await svc.matrix(60.0, view="node", node="no-such-node")
    assert (await svc.matrix(60.0, view="node", node=N[0])).matrix.view == "node"
    assert list(svc._windows[60.0].asked) == [("node", N[0], FAILING_LIMIT)]  # a refused one is not watched


async def test_a_pass_builds_the_watched_views_before_it_is_published_and_keeps_a_bound() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock)
    svc.apply_inventory(inventory())
    svc.ingest(rounds())
    for n in N:
        await svc.matrix(60.0, view="node", node=n)
    await svc.matrix(60.0, view="zones")
    await svc.matrix(60.0, view="auto")
    st = svc._windows[60.0]
    assert len(st.views) == len(N) + 2 <= MAX_CACHED_VIEWS
    clock.now += svc.settings.refresh_s
    svc.ingest(rounds(seed=3))
    c = await svc.window(60.0, wait=True)  # a new pass
    assert st.views_of is c
    assert sorted(k[0] for k in st.views) == ["full"] + ["node"] * len(N) + ["zones"]
    assert all(f.done() for f in st.views.values())
    zones = st.views["zones", None, 0].result()
    assert zones.matrix.generated_at == c.table.end_ts == clock.now
    assert (await svc.matrix(60.0, view="zones")) is zones  # its reader finds it built
    assert (await svc.matrix(60.0, view="full")) is st.views["full", None, 0].result()  # auto: full
    clock.now += VIEW_WATCH_S + svc.settings.refresh_s  # nobody asked for a minute
    c = await svc.window(60.0, wait=True)
    assert st.views_of is c
    assert st.asked == {}
    assert st.views == {}
    for i in range(MAX_CACHED_VIEWS + 3):
        await svc.matrix(60.0, view="failing", limit=i + 1)
    assert len(st.views) == len(st.asked) == MAX_CACHED_VIEWS
    assert ("failing", None, MAX_CACHED_VIEWS + 3) in st.views  # the most recent are kept
    assert ("failing", None, 1) not in st.asked
    clock.now += svc.settings.refresh_s
    await svc.window(60.0, wait=True)
    assert len(st.views) == MAX_CACHED_VIEWS  # a pass builds at most the bound


async def test_concurrent_readers_of_a_window_share_one_computation() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock)
    svc.apply_inventory(inventory())
    svc.ingest(rounds())
    results = await asyncio.gather(*(svc.window(60.0) for _ in range(5)))
    assert len({id(r) for r in results}) == 1


async def test_at_most_a_few_windows_are_cached() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock)
    svc.apply_inventory(inventory())
    svc.ingest(rounds())
    windows = [10.0 * (i + 1) for i in range(MAX_CACHED_WINDOWS + 1)]
    first = {w: await svc.window(w) for w in windows}
    # the oldest was evicted (recomputed), the most recent ones are still cached
    assert await svc.window(windows[-1]) is first[windows[-1]]
    assert await svc.window(windows[0]) is not first[windows[0]]


async def test_a_new_inventory_recomputes_every_window() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock)
    svc.apply_inventory(inventory())
    svc.ingest(rounds())
    before = await svc.window(60.0)
    assert (await svc.matrix(60.0)).matrix.nodes == list(N)
    assert svc.apply_inventory(inventory(N[:4]))  # N[4] left the cluster
    after = await svc.window(60.0)  # a departed node is not shown: a new pass
    assert after is not before
    assert after.nodes == N[:4]
    assert after.table.nodes == N[:4]  # its results drop out of the tables
    assert (await svc.matrix(60.0)).matrix.nodes == list(N[:4])
    assert svc.registry.get_sample_value("prober_inventory_nodes") == 4


async def test_an_inventory_the_pinglist_builder_refuses_is_ignored() -> None:
    def picky(inv: Inventory, previous: PinglistSource | None) -> PinglistSource:
        if len(inv.nodes) < 3:
            raise ValueError("too few nodes")
        return real_pinglists(inv, previous)

    svc = service(Clock(START), pinglists=picky)
    good = inventory()
    assert svc.apply_inventory(good)
    version = svc.pinglist("agent-pod-node-000")
    assert not svc.apply_inventory(inventory(N[:2]))
    assert svc.inventory == good
    assert svc.node_names() == N
    assert svc.pinglist("agent-pod-node-000") == version


# -- results and pinglists -----------------------------------------------------------------


def probe(ts: float, src: str = N[0], dst: str = N[1], *, ok: bool = True) -> ProbeResult:
    return ProbeResult(
        ts=ts, path="pod-to-pod", src_node=src, src_kind=SrcKind.POD, target=f"pod/{dst}",
        outcome=Outcome.OK if ok else Outcome.TIMEOUT, proto=Proto.HTTP, dst_node=dst,
        latency_s=0.001 if ok else None,
    )  # fmt: skip


def test_ingest_keeps_the_good_lines_and_lists_the_bad() -> None:
    svc = service(Clock(START + 5.0))
    svc.apply_inventory(inventory())
    body = (
        encode_records([probe(START + 1.0)]) + b'{"ts": "yesterday"}\n' + encode_records([probe(START + 2.0)])
    )
    reply = svc.ingest(body)
    assert (reply.accepted, reply.rejected, [e.line for e in reply.errors]) == (2, 1, [2])
    assert [r.ts for r in svc.recent_records()] == [START + 1.0, START + 2.0]
    assert [r.ts for r in svc.recent_records(since=START + 1.0)] == [START + 2.0]
    assert svc.registry.get_sample_value("prober_ingest_rejected_records_total") == 1
    labels = {"path": "pod-to-pod", "outcome": "ok"}
    assert svc.registry.get_sample_value("prober_ingested_probes_total", labels) == 2
    # results are admitted only with an inventory, so their zones are known
    svc.ingest(encode_records([probe(START + 3.0)]))
    svc.flush()  # as a scrape does: the store counts queued results in the histograms then
    zones = {
        "src_zone": C5.shape.zone(C5.shape.zone_index(0)),
        "dst_zone": C5.shape.zone(C5.shape.zone_index(1)),
    }
    assert (
        svc.registry.get_sample_value(
            "prober_zone_probe_duration_seconds_count", {"path": "pod-to-pod", **zones}
        )
        == 3
    )


def test_pinglists_carry_their_version_and_follow_the_inventory() -> None:
    svc = service(Clock(START))
    assert not svc.ready
    assert svc.pinglist(f"agent-pod-{N[0]}") is None
    assert svc.mesh() is None
    agents = [pod_agent(n) for n in N]
    svc.apply_inventory(inventory(agents=agents))
    name = agents[0].name
    doc, mesh_doc = svc.pinglist(name), svc.mesh()
    assert doc is not None
    assert mesh_doc is not None
    head = msgspec.json.decode(gzip.decompress(doc[1]), type=AgentPinglist)
    mesh = msgspec.json.decode(gzip.decompress(mesh_doc[1]), type=Mesh)
    assert (head.version, mesh.version) == (doc[0], mesh_doc[0])
    assert len(assemble(head, mesh).peers) == len(N) - 1
    assert svc.pinglist(name) is doc  # encoded once
    assert svc.pinglist("agent-nobody") is None
    # the same inventory again: the same documents, the same bytes
    svc.apply_inventory(inventory(agents=agents))
    assert svc.pinglist(name) is doc
    assert svc.mesh() is mesh_doc
    # a node more: a new mesh, the newcomer's own part, and no other agent's changes
    before = {a.name: svc.pinglist(a.name) for a in agents}
    bigger = [*N, "node-new"]
    svc.apply_inventory(inventory(bigger, agents=[*agents, pod_agent("node-new")]))
    new_mesh = svc.mesh()
    assert new_mesh is not None
    assert new_mesh[0] != mesh_doc[0]
    assert {a.name: svc.pinglist(a.name) for a in agents} == before
    new_head = svc.pinglist("agent-pod-node-new")
    assert new_head is not None
    joined = assemble(
        msgspec.json.decode(gzip.decompress(new_head[1]), type=AgentPinglist),
        msgspec.json.decode(gzip.decompress(new_mesh[1]), type=Mesh),
    )
    assert sorted(g.node for g in joined.peers) == sorted(N)


class BrokenPinglists:
    """A pinglist source with a bug: builds, but fails to give any agent its part."""

    def __init__(self, inv: Inventory, previous: object) -> None:
        self.good = real_pinglists(inv, previous)

    def agents(self) -> list[str]:
        return self.good.agents()

    def head(self, agent_name: str) -> AgentPinglist | None:
        raise KeyError(agent_name)

    def mesh(self) -> Mesh:
        return self.good.mesh()


def test_a_bug_in_the_pinglists_costs_the_inventory_not_the_collector() -> None:
    built: list[str] = []

    def sometimes_broken(inv: Inventory, previous: PinglistSource | None) -> PinglistSource:
        built.append(inv.version())
        return BrokenPinglists(inv, previous) if len(inv.nodes) > len(N) else real_pinglists(inv, previous)

    svc = service(Clock(START), pinglists=sometimes_broken)
    agents = [pod_agent(n) for n in N]
    good = inventory(agents=agents)
    assert svc.apply_inventory(good)
    doc = svc.pinglist(agents[0].name)
    assert not svc.apply_inventory(inventory([*N, "node-new"], agents=[*agents, pod_agent("node-new")]))
    assert len(built) == 2
    assert svc.inventory == good
    assert svc.pinglist(agents[0].name) is doc


# -- running: the inventory source ---------------------------------------------------------


class QueueSource:
    """An inventory source that yields what the test puts in its queue (or raises it)."""

    def __init__(self, *first: Inventory | Exception) -> None:
        self.queue: asyncio.Queue[Inventory | Exception] = asyncio.Queue()
        for item in first:
            self.queue.put_nowait(item)
        self.closed = 0

    async def updates(self) -> AsyncIterator[Inventory]:
        try:
            while True:
                item = await self.queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed += 1


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - watching the service from outside
            await asyncio.sleep(0.01)


async def test_running_follows_the_source_and_closes_it() -> None:
    svc = service(Clock(START), refresh_s=3600.0)
    source = QueueSource(inventory())
    async with svc.running(source):
        assert svc.node_names() == N
        assert svc.registry.get_sample_value("prober_inventory_source_up") == 1
        smaller = inventory(N[:3])
        source.queue.put_nowait(smaller)
        await until(lambda: svc.inventory == smaller)
        assert svc.registry.get_sample_value("prober_inventory_nodes") == 3
    assert source.closed == 1


@pytest.mark.parametrize(
    ("first", "error"),
    [
        pytest.param(InventoryError("nodes: missing"), "nodes: missing", id="source-fails"),
        pytest.param(inventory(N[:1]), "the first inventory was refused", id="builder-refuses"),
    ],
)
async def test_running_needs_a_first_inventory(first: Inventory | Exception, error: str) -> None:
    def picky(inv: Inventory, previous: PinglistSource | None) -> PinglistSource:
        if len(inv.nodes) < 2:
            raise InventoryError("one node is not a mesh")
        return real_pinglists(inv, previous)

    source = QueueSource(first)
    with pytest.raises(InventoryError, match=error):
        async with service(Clock(START), pinglists=picky).running(source):
            pass
    assert source.closed == 1


# -- sweeps ----------------------------------------------------------------------------------


def reaches_all(src: str, *, failing: str | None = None) -> Callable[[float], list[ProbeResult]]:
    """An agent on ``src`` that probes every other node three times (``failing`` times out)."""

    def results(ts: float) -> list[ProbeResult]:
        return [probe(ts, src, dst, ok=dst != failing) for dst in N if dst != src for _ in range(3)]

    return results


@asynccontextmanager
async def sweeping(agents: Sequence[Agent], **settings: Any) -> AsyncIterator[tuple[CollectorService, Clock]]:
    clock = Clock(START)
    svc = service(clock, refresh_s=3600.0, **settings)
    async with svc.running(QueueSource(inventory(agents=agents))):
        yield svc, clock


def deliver(svc: CollectorService, agent: Agent, results: list[ProbeResult], *, done: bool = True) -> None:
    order = svc.sweep_order(agent.name)
    assert order is not None
    svc.deliver_sweep(order.id, agent.name, encode_records(results), done=done)


async def done(svc: CollectorService, sweep_id: str) -> SweepStatus:
    status = svc.sweep_status(sweep_id)
    async with asyncio.timeout(10):
        while status is not None and status.state == "running":
            await asyncio.sleep(0.01)
            status = svc.sweep_status(sweep_id)
    assert status is not None
    return status


NOT_REACHING = "down, or not reaching the collector"


async def test_a_sweep_reports_its_results_and_says_why_agents_failed() -> None:
    agents = [pod_agent(n) for n in N]
    async with sweeping(agents) as (svc, clock):
        loop = asyncio.get_running_loop()
        started = loop.time()
        sweep = svc.start_sweep(timeout_s=0.5, deadline_s=0.2)
        deliver(svc, agents[0], reaches_all(N[0], failing=N[4])(clock.now))
        deliver(svc, agents[1], reaches_all(N[1], failing=N[4])(clock.now))
        # agents[2] never fetches its pinglist; agents[3] takes the order and says nothing
        assert svc.sweep_order(agents[3].name) == sweep.order
        deliver(svc, agents[4], reaches_all(N[4])(clock.now), done=False)
        status = await done(svc, sweep.id)
        assert loop.time() - started < 0.2 + DEADLINE_GRACE_S + 2.0  # nobody waited on past the deadline
        assert status.state == "done"
        assert (status.agents_total, status.agents_done, status.probes) == (5, 5, 36)
        assert {(f.agent, f.node, f.error) for f in status.agents_failed} == {
            (
                agents[2].name,
                N[2],
                "did not fetch its pinglist within 0.2 s (down, or not reaching the collector)",
            ),
            (agents[3].name, N[3], "took the sweep but delivered no results within 0.2 s"),
            (agents[4].name, N[4], "delivered 12 results but did not finish within 0.2 s"),
        }
        assert (status.timeout_s, status.deadline_s, status.rounds) == (0.5, 0.2, 1)
        assert status.report is not None
        assert kinds_and_nodes(status.report.findings) == [("node-unreachable", [N[4]])]
        assert status.report.matrix.nodes == list(N)
        # the sweep's results are the collector's too
        assert svc.store.table(now=START, window_s=60.0).sent.sum() == 36
        assert svc.registry.get_sample_value("prober_sweeps_total", {"result": "done"}) == 1
        # no more orders once it is over, and no more deliveries
        assert svc.sweep_order(agents[3].name) is None
        with pytest.raises(SweepRefusedError, match="is over"):
            svc.deliver_sweep(sweep.id, agents[3].name, b"", done=True)


async def test_one_sweep_at_a_time_within_the_maxima_and_a_gap_between_sweeps() -> None:
    agents = [pod_agent(N[0])]
    settings = {
        "timeout_s": 3.0,
        "sweep_deadline_max_s": 30.0,
        "sweep_timeout_max_s": 4.0,
        "sweep_min_gap_s": 10.0,
    }
    async with sweeping(agents, **settings) as (svc, clock):
        first = svc.start_sweep(timeout_s=1e9, deadline_s=1e9)
        assert (first.order.timeout_s, first.deadline_s, first.order.until) == (4.0, 30.0, START + 30.0)
        assert all(svc.start_sweep(timeout_s=1.0) is first for _ in range(100))  # they join it
        deliver(svc, agents[0], reaches_all(N[0])(clock.now))
        assert (await done(svc, first.id)).state == "done"
        clock.now += 4.0
        with pytest.raises(SweepTooSoonError) as too_soon:
            svc.start_sweep()
        assert too_soon.value.retry_after_s == pytest.approx(6.0)
        clock.now += 6.0
        second = svc.start_sweep()
        assert second.id != first.id
        assert (second.order.timeout_s, second.deadline_s) == (3.0, 30.0)  # the settings' by default


async def test_an_agent_delivers_its_own_results_within_its_bound() -> None:
    agents = [pod_agent(N[0]), pod_agent(N[1])]
    async with sweeping(agents) as (svc, clock):
        sweep = svc.start_sweep(deadline_s=5.0)
        bound = sweep.records_per_agent
        own = [probe(clock.now, N[0], N[1]) for _ in range(bound + 5)]
        foreign = [probe(clock.now, N[1], N[0]) for _ in range(3)]
        order = svc.sweep_order(agents[0].name)
        assert order is not None
        reply = svc.deliver_sweep(order.id, agents[0].name, encode_records(own + foreign), done=True)
        assert (reply.accepted, reply.rejected) == (bound, 8)
        assert [e.error for e in reply.errors] == [
            f"3 results not from this agent (pod on {N[0]})",
            f"5 results beyond this sweep's {bound} per agent",
        ]
        with pytest.raises(SweepRefusedError, match="already delivered"):
            svc.deliver_sweep(order.id, agents[0].name, b"", done=True)
        with pytest.raises(SweepRefusedError, match="not part of sweep"):
            svc.deliver_sweep(order.id, "agent-z", b"", done=True)


async def test_finished_sweeps_are_kept_a_while() -> None:
    agents = [pod_agent(N[0])]
    async with sweeping(agents, sweeps_kept=2, sweep_min_gap_s=0.0) as (svc, _):
        ids = []
        for _ in range(4):
            ids.append(svc.start_sweep().id)
            deliver(svc, agents[0], [])
            await done(svc, ids[-1])
        kept = [svc.sweep_status(i) is not None for i in ids]
        # a new sweep forgets the oldest finished ones beyond sweeps_kept (itself not counted)
        assert kept == [False, True, True, True]


@pytest.mark.parametrize(
    "agents",
    [
        pytest.param([], id="no-agents"),
        pytest.param([pod_agent(N[0], ready=False)], id="agent-not-ready"),
    ],
)
async def test_a_sweep_needs_a_ready_agent(agents: list[Agent]) -> None:
    async with sweeping(agents) as (svc, _):
        with pytest.raises(NoAgentsError):
            svc.start_sweep()


async def test_a_sweep_needs_a_ready_node() -> None:
    inv = inventory(agents=[pod_agent(N[0])])
    inv = msgspec.structs.replace(
        inv, nodes=[msgspec.structs.replace(n, ready=n.name != N[0]) for n in inv.nodes]
    )
    svc = service(Clock(START), refresh_s=3600.0)
    async with svc.running(QueueSource(inv)):
        with pytest.raises(NoAgentsError):
            svc.start_sweep()


@pytest.mark.parametrize(
    ("timeout_s", "deadline_s", "error"),
    [
        pytest.param(0.0, None, "timeout_s must be more than 0, got 0.0", id="zero-timeout"),
        pytest.param(None, -1.0, "deadline_s must be more than 0, got -1.0", id="negative-deadline"),
        pytest.param(math.nan, None, "timeout_s must be more than 0, got nan", id="nan"),
        pytest.param(None, math.inf, "deadline_s must be more than 0, got inf", id="inf"),
    ],
)
def test_sweep_values_must_be_positive(timeout_s: float | None, deadline_s: float | None, error: str) -> None:
    svc = service(Clock(START))
    with pytest.raises(ValueError, match=error):
        svc.start_sweep(timeout_s=timeout_s, deadline_s=deadline_s)


def test_a_sweep_needs_a_running_service() -> None:
    svc = service(Clock(START))
    svc.apply_inventory(inventory(agents=[pod_agent(N[0])]))
    with pytest.raises(RuntimeError, match="not running"):
        svc.start_sweep()


# -- agents that stop on purpose --------------------------------------------------------------


def peer_timeouts(target_ip: str, times: Sequence[float]) -> bytes:
    return encode_records([
        ProbeResult(
            ts=t, path="pod-to-pod", src_node=N[0], src_kind=SrcKind.POD, target=f"pod/{N[2]}",
            outcome=Outcome.TIMEOUT, proto=Proto.TCP, target_ip=target_ip,
        )
        for t in times
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("after", "stored", "routine"),
    [
        # Its pod marked for deletion: peers' probes of it from then on are routine.
        pytest.param({"ready": False, "stopping": True}, 2, 3, id="stopping"),
        # Not Ready (its node went NotReady): the probes stay evidence of a fault.
        pytest.param({"ready": False}, 5, 0, id="not-ready"),
    ],
)
def test_probes_of_an_agent_that_stopped_on_purpose_are_not_stored(
    after: dict[str, bool], stored: int, routine: int
) -> None:
    clock = Clock(START + 100.0)
    svc = service(clock)
    agent = Agent(name="agent-pod-c", node=N[2], kind=SrcKind.POD, address="100.64.0.3")
    svc.apply_inventory(inventory(agents=[agent]))
    clock.now = START + 110.0
    svc.apply_inventory(inventory(agents=[msgspec.structs.replace(agent, **after)]))
    svc.ingest(peer_timeouts("100.64.0.3", [START + t for t in (105.0, 108.0, 110.0, 112.0, 115.0)]))
    assert int(svc.store.snapshot(now=START + 120.0, window_s=60.0).table().sent.sum()) == stored
    assert svc.registry.get_sample_value("prober_routine_probes_total") == routine


# -- never silently blind -------------------------------------------------------------------


def broken_rule(ctx: Context) -> list[Finding]:
    raise ZeroDivisionError("a bug in a rule")


async def test_a_rule_that_raises_is_counted_and_the_others_still_name_their_fault() -> None:
    clock = Clock(START + 60.0)
    rules = [("broken", broken_rule), *NAMED_RULES]
    svc = CollectorService(
        CollectorSettings(inventory="inventory.yaml"),
        pinglists=real_pinglists,
        registry=CollectorRegistry(),
        clock=clock,
        rules=rules,
    )
    svc.apply_inventory(inventory())
    svc.ingest(rounds([Fault(kind="node-unreachable", nodes=(N[2],))], seed=1))
    c = await svc.window(60.0)
    assert kinds_and_nodes(c.findings) == [("node-unreachable", [N[2]])]
    assert {f.rule for f in c.failures} == {"broken"}
    assert (svc.registry.get_sample_value("prober_diagnosis_errors_total", {"rule": "broken"}) or 0) >= 1
    # an evaluation with a failed rule is not a successful diagnosis
    assert svc.last_diagnosis_ts == 0.0
    assert svc.registry.get_sample_value("prober_last_diagnosis_timestamp_seconds") == 0.0


async def test_a_complete_diagnosis_advances_the_last_success() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock)
    svc.apply_inventory(inventory())
    svc.ingest(rounds())
    c = await svc.window(60.0)
    assert c.failures == ()
    assert svc.last_diagnosis_ts == clock.now
    assert svc.registry.get_sample_value("prober_last_diagnosis_timestamp_seconds") == clock.now
    assert svc.registry.get_sample_value("prober_diagnosis_errors_total", {"rule": "pipeline"}) is None


async def test_the_refresh_exports_the_cpu_time_of_its_pass() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock)
    svc.apply_inventory(inventory())
    svc.ingest(rounds())
    assert svc.registry.get_sample_value("prober_diagnosis_cpu_seconds") == 0.0
    loop = asyncio.create_task(svc.refresh_forever())
    try:
        async with asyncio.timeout(60):
            while not svc.registry.get_sample_value("prober_diagnosis_cpu_seconds"):  # noqa: ASYNC110 - the loop sets it
                await asyncio.sleep(0.05)
    finally:
        loop.cancel()
    # the tables, rules and merge of both windows ran in threads, and their time is counted
    assert svc.last_pass_cpu_s > 0
    assert svc.registry.get_sample_value("prober_diagnosis_cpu_seconds") == svc.last_pass_cpu_s


async def test_the_event_loop_lag_is_sampled_and_a_held_loop_shows_in_it() -> None:
    """Work done on the loop (here 0.3 s of it) delays the sampler's timer: the histogram
    records that wait, which every request and post at that moment waited too."""
    svc = service(Clock(START + 60.0))
    lag = "prober_collector_event_loop_lag_seconds"
    watch = asyncio.create_task(svc.watch_loop())
    try:
        await asyncio.sleep(0.6)  # a quiet loop: two samples or more
        quiet = svc.registry.get_sample_value(f"{lag}_count") or 0
        assert quiet >= 2
        time.sleep(0.3)  # noqa: ASYNC251 - the point: the loop held by work on it
        async with asyncio.timeout(5):
            while (svc.registry.get_sample_value(f"{lag}_count") or 0) == quiet:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        watch.cancel()
    held = (svc.registry.get_sample_value(f"{lag}_count") or 0) - (
        svc.registry.get_sample_value(f"{lag}_bucket", {"le": "0.025"}) or 0
    )
    assert held >= 1  # the sample taken across the held loop was 0.05 s late or more
    assert (svc.registry.get_sample_value(f"{lag}_sum") or 0) >= 0.05


# -- the edge ------------------------------------------------------------------------------


async def test_a_source_over_its_quota_loses_only_its_own_lines() -> None:
    clock = Clock(START + 60.0)
    svc = service(clock, budget_per_s=1.0, ingest_quota_per_s=2.0, ingest_quota_burst_s=5.0)
    svc.apply_inventory(inventory())
    mine = [probe(START + 50.0, N[0], N[1]) for _ in range(15)]
    theirs = [probe(START + 50.0, N[1], N[0]) for _ in range(3)]
    reply = svc.ingest(encode_records(mine + theirs))
    assert (reply.accepted, reply.rejected) == (13, 5)  # N[0]: 10 at once; N[1]: all 3
    assert [e.line for e in reply.errors] == [11, 12, 13, 14, 15]
    assert "over the quota of source node" in reply.errors[0].error
    clock.now += 1.0  # 2 more of N[0]'s a second
    assert svc.ingest(encode_records(mine[:3])).accepted == 2
    assert svc.registry.get_sample_value("prober_ingest_quota_rejected_records_total") == 6


def test_the_raw_records_are_exported_as_they_came_and_only_what_was_stored() -> None:
    """A batch of good lines is kept as it came (its key order and spacing: nothing is
    encoded again); a batch of which a line was not stored is kept as the stored records."""
    clock = Clock(START + 60.0)
    svc = service(clock, budget_per_s=1.0, ingest_quota_per_s=2.0, ingest_quota_burst_s=1.0)
    svc.apply_inventory(inventory())
    as_sent = [
        msgspec.json.encode(probe(START + 50.0)),
        b'{"outcome": "timeout", "ts": %r, "path": "pod-to-pod", "src_node": "%s", '
        b'"src_kind": "pod", "target": "pod/%s", "proto": "http", "dst_node": null}'
        % (START + 51.0, N[1].encode(), N[0].encode()),
    ]
    body = b"\n".join(as_sent)  # no newline after the last line
    assert svc.ingest(body).accepted == 2
    assert svc.recent_jsonl() == body + b"\n"
    # N[0] has one of its 2 at once left: two lines are not stored, so neither is the batch as it came
    over = [probe(START + 52.0 + i) for i in range(3)]
    reply = svc.ingest(b"\n".join(b" " + msgspec.json.encode(r) for r in over))
    assert (reply.accepted, reply.rejected) == (1, 2)
    assert svc.recent_jsonl(since=START + 51.5) == encode_records(over[:1])
    assert [r.ts for r in svc.recent_records()] == [START + 50.0, START + 51.0, START + 52.0]


# -- offline equals online ------------------------------------------------------------------

#: Pair-blocked from 60 s to 120 s of a 200 s span of the 5-node cluster.
BLOCKED = Fault(kind="pair-blocked", nodes=(N[0], N[1]), start_s=60.0, end_s=120.0)


async def _collector_shows(records: Sequence[ProbeResult], end: float) -> list[Finding]:
    """What the collector shows at ``end`` having received the records as they were stamped
    and made its passes every ``refresh_s`` since the first of them."""
    settings = CollectorSettings(inventory="inventory.yaml", ingest_quota_per_s=None)
    passes = 2 * math.ceil((end - records[0].ts) / 10.0)
    clock = Clock(end - 5.0 * passes)
    svc = CollectorService(settings, pinglists=real_pinglists, registry=CollectorRegistry(), clock=clock)
    svc.apply_inventory(inventory())
    fed = 0
    found: list[Finding] = []
    for k in range(passes, -1, -1):
        clock.now = end - 5.0 * k
        batch = []
        while fed < len(records) and records[fed].ts <= clock.now:
            batch.append(records[fed])
            fed += 1
        if batch:
            reply = svc.ingest(encode_records(batch))
            assert reply.accepted == len(batch), reply.errors
        found = (await svc.window(60.0, wait=True)).findings
    return found


@pytest.mark.parametrize(
    "end_s",
    [
        pytest.param(90.0, id="window-half-covered-by-the-fault-on"),
        pytest.param(125.0, id="fault-just-over"),
        pytest.param(150.0, id="window-half-covered-by-the-fault-over"),
        pytest.param(195.0, id="clean-again"),
    ],
)
async def test_prober_diagnose_shows_what_the_collector_shows_at_the_windows_end(end_s: float) -> None:
    from prober.commands.diagnose import diagnose_records
    from prober.stats import Topology

    records = generate(C5, duration_s=200.0, faults=[BLOCKED], seed=2)
    cut = [r for r in records if r.ts <= START + end_s]
    end = cut[-1].ts
    online = await _collector_shows(cut, end)
    inv = inventory()
    offline = diagnose_records(list(cut), window_s=60.0, nodes=list(N), topology=Topology.of(inv)).findings
    assert [(f.kind, f.nodes, f.pairs, f.paths) for f in offline] == [
        (f.kind, f.nodes, f.pairs, f.paths) for f in online
    ]
    blocked = [("pair-blocked", sorted(BLOCKED.nodes))]
    if end_s <= BLOCKED.end_s:
        assert kinds_and_nodes(online) == blocked
    elif end_s - 20 <= BLOCKED.end_s:
        # Just over: still shown, or already cleared by the recent probes that contradict it.
        assert kinds_and_nodes(online) in (blocked, [])
    else:
        assert kinds_and_nodes(online) == []


# -- focused probes -------------------------------------------------------------------------

#: 30 nodes on a cluster budget that leaves room in every agent's --budget (as past ~600 nodes).
C30 = Cluster(n_nodes=30, policy=SchedulePolicy(cluster_budget_per_s=600.0))


def focused_service(clock: Clock) -> CollectorService:
    svc = service(clock, pinglist_factory(C30.policy), cluster_budget_per_s=600.0)
    svc.apply_inventory(C30.inventory())
    return svc


def head_of(svc: CollectorService, agent: str) -> AgentPinglist:
    got = svc.pinglist(agent)
    assert got is not None
    return msgspec.json.decode(gzip.decompress(got[1]), type=AgentPinglist)


async def test_a_pass_with_an_open_question_focuses_only_the_agents_that_answer_it() -> None:
    a, b = C30.nodes[1], C30.nodes[2]
    clock = Clock(START + 60.0)
    svc = focused_service(clock)
    before = {x.name: svc.pinglist(x.name) for x in C30.inventory().agents}
    mesh = svc.mesh()
    svc.ingest(encode_records([probe(START + 30.0, a, b, ok=False)]))
    focus = await svc.ask_from_pass(await svc.window(60.0, wait=True))
    assert [q.key for q in focus.suspects] == [("pair", *sorted((a, b)))]
    answering = {x.name for x in C30.inventory().agents if x.node in (a, b)}
    changed = {name for name, doc in before.items() if svc.pinglist(name) != doc}
    assert changed == answering
    assert svc.mesh() == mesh
    for name in answering:
        other = b if head_of(svc, name).node == a else a
        assert {t.dst_node for t in head_of(svc, name).focus} == {other}

    # Settled: enough successes both ways, and the agents' parts are what they were.
    svc.ingest(encode_records([probe(START + 40.0 + i, x, y) for i in range(8) for x, y in ((a, b), (b, a))]))
    clock.now += 10.0
    focus = await svc.ask_from_pass(await svc.window(60.0, wait=True))
    assert focus.suspects == ()
    assert {name: svc.pinglist(name) for name in before} == before


async def test_focus_outlives_an_inventory_change() -> None:
    a, b = C30.nodes[1], C30.nodes[2]
    svc = focused_service(Clock(START + 60.0))
    svc.ingest(encode_records([probe(START + 30.0, a, b, ok=False)]))
    await svc.ask_from_pass(await svc.window(60.0, wait=True))
    inv = C30.inventory()
    svc.apply_inventory(msgspec.structs.replace(inv, nodes=[n for n in inv.nodes if n.name != C30.nodes[9]]))
    assert [q.key for q in svc.focus.suspects] == [("pair", *sorted((a, b)))]
    agent = next(x.name for x in inv.agents if x.node == a)
    assert len(head_of(svc, agent).focus) == 4


@pytest.mark.parametrize(
    ("ended", "next_at"),
    [
        (2.6, 7.5),  # a pass of 0.1 s at its phase: the next one a refresh later
        (7.1, 12.5),  # less than a tenth of a refresh before a phase point: the one after it
        (7.0, 7.5),  # exactly a tenth of a refresh before one: that one
        (6.9, 7.5),  # a pass of 4.4 s of its 5: the next at its time
        (11.4, 12.5),  # a pass that ran 3.9 s over its refresh: the next phase point with rest
        (12.1, 17.5),  # 4.6 s over, under a tenth of a refresh before the next phase point: the one after
        (0.0, 2.5),
    ],
)
def test_refresh_passes_start_half_a_bucket_past_a_boundary_with_rest_between(
    ended: float, next_at: float
) -> None:
    start = 1_000_000.0  # a multiple of the refresh
    assert next_pass_at(start + ended, 5.0, 2.5) == pytest.approx(start + next_at)
