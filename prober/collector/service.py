"""The collector's service: inventory, pinglists, results, windows and their findings, sweeps.

:class:`CollectorService` holds the collector's state: the last good inventory and
the pinglist builder made from it, the windowed store, each window's last
computed table and findings (a :class:`WindowResult`), and the sweeps. It follows
an :class:`~prober.inventory.InventorySource`, keeps the default window's findings
and metrics fresh, and runs sweeps (agents learn of one in their pinglist answer,
:meth:`CollectorService.sweep_order`, and deliver to
:meth:`CollectorService.deliver_sweep`). The HTTP layer
(:mod:`prober.collector.http`) parses requests, calls it and encodes its answers:
the service never sees a request and imports no HTTP library, so it runs, and is
tested, without sockets. Where the inventory comes from is injected, and so is how
pinglists are built from it (a factory), so the same service runs on a static
file, on the Kubernetes API, in the lab and in tests.

Rules it keeps: one bad result line never costs the good ones; a window's
findings are computed at most once per ``refresh_s``, not per request, and off
the event loop (the report pipeline, :mod:`prober.report`, is pure); pinglists are
built and encoded once per inventory in a thread (the loop only serves bytes), and a
matrix view is built in a thread; an inventory the pinglist builder refuses is
ignored and the last good one stays; one sweep at a time, a minimum gap between
sweeps, deadlines and probe timeouts lowered to the settings' maxima; agents that
fail a sweep are listed, never waited on past its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Final, Protocol

import msgspec
from prometheus_client import CollectorRegistry

from prober.collector.batch import decode_batch
from prober.collector.latency_metrics import ZoneLatencyMetrics
from prober.collector.matrix_metrics import MatrixMetrics
from prober.collector.metrics import CollectorMetrics
from prober.collector.settings import CollectorSettings
from prober.collector.store import Store, StoreSettings
from prober.collector.sweep import (
    DEADLINE_GRACE_S,
    Sweep,
    SweepDelivery,
    SweepRefusedError,
    SweepStatus,
    new_sweep_id,
)
from prober.diagnose import DiagnosisPolicy
from prober.inventory import Inventory, InventoryError, InventorySource
from prober.matrix import FAILING_LIMIT, matrix_view
from prober.model import Finding, Matrix, ProbeResult
from prober.pinglist import AgentPinglist, Mesh, SweepOrder, assemble
from prober.records import Rejected
from prober.report import Window, findings_for, matrix_for, report_from_records
from prober.schedule import planned_count, sweep_order, sweep_plan
from prober.stats import PairTable, Topology

log = logging.getLogger(__name__)

#: Windows whose findings are cached at once (each costs a table).
MAX_CACHED_WINDOWS: Final = 4
#: Pause before a failed inventory source is asked again.
SOURCE_RETRY_S: Final = 5.0
#: Results an agent may deliver to a sweep beyond twice what the sample agent's plan holds.
RECORDS_SLACK: Final = 64
#: The results one sweep plans for (each about 580 bytes in memory until the report is
#: built, so about 150 MB): large clusters sweep fewer rounds' peers to stay within it.
SWEEP_RESULTS_MAX: Final = 250_000


class PinglistSource(Protocol):
    """What the collector needs from a pinglist builder (``prober.schedule.PinglistBuilder``)."""

    def agents(self) -> list[str]:
        """The agents that get a pinglist."""
        ...

    def head(self, agent_name: str) -> AgentPinglist | None:
        """The agent's own part of its pinglist; None for an unknown agent."""
        ...

    def mesh(self) -> Mesh:
        """The part every agent shares."""
        ...


#: Builds the pinglists of an inventory, given the source of the inventory before (or
#: None), so that what did not change keeps its version.
PinglistFactory = Callable[[Inventory, PinglistSource | None], PinglistSource]


@dataclass(frozen=True, slots=True)
class EncodedPinglists:
    """Every pinglist document as served: gzip-compressed JSON, each with its version.

    Built off the event loop once per inventory; a document whose version did not change
    keeps its bytes from the inventory before (:func:`encode_pinglists`).
    """

    mesh: tuple[str, bytes]
    heads: dict[str, tuple[str, bytes]]


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def encode_pinglists(source: PinglistSource, previous: EncodedPinglists | None = None) -> EncodedPinglists:
    """Encode every agent's part and the mesh, reusing the previous bytes of unchanged ones."""
    mesh = source.mesh()
    if previous is not None and previous.mesh[0] == mesh.version:
        mesh_doc = previous.mesh
    else:
        mesh_doc = (mesh.version, _gzip(msgspec.json.encode(mesh)))
    old = previous.heads if previous is not None else {}
    heads: dict[str, tuple[str, bytes]] = {}
    for name in source.agents():
        head = source.head(name)
        if head is None:
            continue
        kept = old.get(name)
        heads[name] = (
            kept
            if kept is not None and kept[0] == head.version
            else (
                head.version,
                _gzip(msgspec.json.encode(head)),
            )
        )
    return EncodedPinglists(mesh=mesh_doc, heads=heads)


class IngestReply(msgspec.Struct, frozen=True, kw_only=True):
    accepted: int
    rejected: int
    errors: list[Rejected]


class NoAgentsError(Exception):
    """A sweep was asked for while the inventory has no ready agent."""


class SweepTooSoonError(Exception):
    """A sweep was asked for within the minimum gap after the last one."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            f"the last sweep ended less than the minimum gap ago: retry in {retry_after_s:.1f} s"
        )
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowResult:
    """A window's table and findings at one moment; the matrix is built on first request."""

    at: float
    table: PairTable
    nodes: tuple[str, ...]
    findings: list[Finding]
    matrix: Matrix | None = None


class CollectorService:
    def __init__(
        self,
        settings: CollectorSettings,
        *,
        pinglists: PinglistFactory,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        diagnosis: DiagnosisPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = CollectorMetrics(self.registry)
        self.matrix_metrics = MatrixMetrics(registry=self.registry)
        self.latency_metrics = ZoneLatencyMetrics(self.registry)
        self.store = Store(StoreSettings(bucket_s=settings.bucket_s, retention_s=settings.retention_s))
        self.inventory: Inventory | None = None
        self._clock = clock
        self._policy = diagnosis
        self._pinglist_factory = pinglists
        self._builder: PinglistSource | None = None
        self._encoded: EncodedPinglists | None = None
        self._topology = Topology()
        self._windows: dict[float, WindowResult] = {}
        self._window_locks: dict[float, asyncio.Lock] = {}
        self._sweeps: dict[str, Sweep] = {}
        self._running_sweep: Sweep | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._last_sweep_end: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._updates: AsyncIterator[Inventory] | None = None

    # -- inventory --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether there is an inventory to serve (pinglists, matrix, sweeps)."""
        return self.inventory is not None

    def apply_inventory(self, inv: Inventory) -> bool:
        """Switch to a new inventory; an inventory the pinglist builder refuses is ignored."""
        prepared = self._prepare_pinglists(inv)
        return prepared is not None and self._switch_inventory(inv, *prepared)

    async def apply_inventory_off_loop(self, inv: Inventory) -> bool:
        """:meth:`apply_inventory`, with the pinglists built and encoded in a thread: the
        event loop only swaps them in (at 5,000 nodes the build alone takes ~0.5 s)."""
        prepared = await asyncio.to_thread(self._prepare_pinglists, inv)
        return prepared is not None and self._switch_inventory(inv, *prepared)

    def _prepare_pinglists(self, inv: Inventory) -> tuple[PinglistSource, EncodedPinglists] | None:
        try:
            builder = self._pinglist_factory(inv, self._builder)
        except (ValueError, InventoryError) as exc:
            log.warning("inventory ignored, keeping the last good one: %s", exc)
            return None
        try:
            return builder, encode_pinglists(builder, self._encoded)
        except Exception:
            log.exception("pinglists could not be built; inventory ignored, keeping the last good one")
            return None

    def _switch_inventory(self, inv: Inventory, builder: PinglistSource, encoded: EncodedPinglists) -> bool:
        before = self._encoded
        self.inventory = inv
        self._builder = builder
        self._encoded = encoded
        self._windows.clear()
        self._topology = Topology(zones={n.name: n.zone for n in inv.nodes})
        self.latency_metrics.set_topology(
            self._topology.zones,
            [f"dns/{d.name}" for d in inv.dns] + [f"external/{e.name}" for e in inv.externals],
        )
        self.store.set_nodes([n.name for n in inv.nodes])
        self.metrics.inventory_nodes.set(len(inv.nodes))
        self.metrics.inventory_agents.set(len(inv.agents))
        changed = sum(
            1 for name, doc in encoded.heads.items() if before is None or before.heads.get(name) != doc
        )
        log.info(
            "inventory: %d nodes, %d agents (version %s); %d agent pinglists changed, mesh %s",
            len(inv.nodes),
            len(inv.agents),
            inv.version(),
            changed,
            "unchanged" if before is not None and before.mesh[0] == encoded.mesh[0] else "changed",
        )
        return True

    async def follow_inventory(self, updates: AsyncIterator[Inventory], source: InventorySource) -> None:
        """Apply every update. When the source fails or ends, keep the last good inventory and
        ask the source again after a pause."""
        while True:
            try:
                async for inv in updates:
                    self.metrics.inventory_up.set(1)
                    await self.apply_inventory_off_loop(inv)
                log.warning("inventory source stopped; restarting it in %g s", SOURCE_RETRY_S)
            except Exception as exc:  # noqa: BLE001 - whatever the source raised, the collector goes on
                log.warning("inventory source failed, keeping the last good inventory: %s", exc)
            self.metrics.inventory_up.set(0)
            await asyncio.sleep(SOURCE_RETRY_S)
            await _close(updates)
            updates = self._updates = source.updates()

    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.inventory.nodes) if self.inventory else ()

    # -- pinglists --------------------------------------------------------------------------

    def pinglist(self, agent: str) -> tuple[str, bytes] | None:
        """The agent's own part of its pinglist: (version, gzip-compressed JSON); None if
        unknown. Encoded once per inventory, off the event loop."""
        return None if self._encoded is None else self._encoded.heads.get(agent)

    def mesh(self) -> tuple[str, bytes] | None:
        """The part of the pinglist every agent shares: (version, gzip-compressed JSON).

        O(nodes): 0.9 MB of JSON at 1,000 nodes (~45 kB gzipped), encoded once per
        inventory for all agents, off the event loop."""
        return None if self._encoded is None else self._encoded.mesh

    # -- results ----------------------------------------------------------------------------

    def ingest(self, body: bytes) -> IngestReply:
        """A batch of JSONL results: the good lines are stored, the bad ones counted and listed."""
        records, rejected, errors = decode_batch(body)
        self.store.ingest(records, now=self._clock())
        self.latency_metrics.observe(records)
        self.metrics.count_ingested(records, rejected)
        return IngestReply(accepted=len(records), rejected=rejected, errors=errors)

    def recent_records(self, *, since: float = -math.inf, limit: int | None = None) -> list[ProbeResult]:
        """Raw results stamped after ``since``, oldest first (from the store's bounded ring)."""
        return self.store.recent(since=since, limit=limit)

    # -- findings and matrix ----------------------------------------------------------------

    async def window(self, window_s: float, *, with_matrix: bool) -> WindowResult:
        """The window's table and findings, recomputed when older than ``refresh_s`` or when
        the inventory's nodes changed; with ``with_matrix``, its matrix too."""
        lock = self._window_locks.setdefault(window_s, asyncio.Lock())
        async with lock:
            now = self._clock()
            c = self._windows.get(window_s)
            if c is None or now - c.at >= self.settings.refresh_s or c.nodes != self.node_names():
                table, findings = await self._diagnose_window(now, window_s)
                c = WindowResult(at=now, table=table, nodes=self.node_names(), findings=findings)
            if with_matrix and c.matrix is None:
                matrix = await asyncio.to_thread(matrix_for, c.table, nodes=c.nodes)
                c = replace(c, matrix=matrix)
            self._windows.pop(window_s, None)
            self._windows[window_s] = c
            while len(self._windows) > MAX_CACHED_WINDOWS:
                oldest = next(iter(self._windows))
                del self._windows[oldest]
                self._window_locks.pop(oldest, None)
            return c

    async def matrix(
        self, window_s: float, *, view: str = "auto", node: str | None = None, limit: int = FAILING_LIMIT
    ) -> Matrix:
        """The window's matrix as a view a person can look at (:func:`prober.matrix.matrix_view`),
        built in a thread from the window's table; ``ViewError`` for a view it cannot give."""
        c = await self.window(window_s, with_matrix=False)
        return await asyncio.to_thread(
            matrix_view, c.table, view=view, nodes=c.nodes, zones=self._topology.zones, node=node, limit=limit
        )

    async def _diagnose_window(self, now: float, window_s: float) -> tuple[PairTable, list[Finding]]:
        """The window's table, and the findings of the window and of a longer one.

        Both carry the last two bucket-widths as ``recent`` evidence: a fault that began
        or ended inside the window is named by what it is now, not by its diluted
        average. The longer window (``long_window_factor`` times, within retention)
        gives the rate-limited modes their samples; the report pipeline merges the two.
        """
        s = self.settings
        recent_s = 2 * s.bucket_s
        longer = min(s.retention_s, window_s * s.long_window_factor)
        lengths = [window_s] + ([longer] if longer > window_s else [])
        recent = await asyncio.to_thread(self.store.snapshot(now=now, window_s=recent_s).table)
        windows = [
            Window(
                table=await asyncio.to_thread(self.store.snapshot(now=now, window_s=w).table),
                nlb_probes=self.store.nlb_probes(now=now, window_s=w),
            )
            for w in lengths
        ]
        findings = await asyncio.to_thread(
            findings_for, windows, topology=self._topology, recent=recent, policy=self._policy
        )
        return windows[0].table, findings

    async def refresh_forever(self) -> None:
        """Keep the default window's findings (and their metrics) fresh without any request."""
        while True:
            started = time.perf_counter()
            try:
                c = await self.window(self.settings.window_s, with_matrix=False)
                self.metrics.set_findings(c.findings)
                await asyncio.to_thread(
                    self.matrix_metrics.update,
                    c.table,
                    topology=self._topology,
                    window_s=self.settings.window_s,
                )
            except Exception:
                log.exception("diagnosis failed; the previous findings stay in the metrics")
            self.metrics.diagnosis_seconds.set(time.perf_counter() - started)
            self.metrics.set_store(self.store.usage())
            await asyncio.sleep(self.settings.refresh_s)

    # -- sweeps -----------------------------------------------------------------------------

    def start_sweep(self, *, timeout_s: float | None = None, deadline_s: float | None = None) -> Sweep:
        """Start a sweep, or return the one in progress (sweeps do not stack).

        ``timeout_s`` is the agents' probe timeout, ``deadline_s`` how long the sweep
        runs (default: the settings'); each is lowered to the settings' maximum. Raises
        ``ValueError`` for a value that is not a positive number, :class:`SweepTooSoonError`
        within the minimum gap after the last sweep, :class:`NoAgentsError` when no
        agent is ready.
        """
        for name, value in (("timeout_s", timeout_s), ("deadline_s", deadline_s)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be more than 0, got {value}")
        if self._running_sweep is not None:
            return self._running_sweep
        if self._tg is None:
            raise RuntimeError("the collector is not running")
        s = self.settings
        now = self._clock()
        if self._last_sweep_end is not None and (wait := self._last_sweep_end + s.sweep_min_gap_s - now) > 0:
            raise SweepTooSoonError(wait)
        inv = self.inventory
        ready_nodes = {n.name for n in inv.nodes if n.ready} if inv else set()
        agents = [a for a in (inv.agents if inv else []) if a.ready and a.node in ready_nodes]
        if not agents or self._builder is None:
            raise NoAgentsError("no ready agents in the inventory: nothing to sweep")
        head = self._builder.head(agents[0].name)
        if head is None:
            raise NoAgentsError("no ready agents in the inventory: nothing to sweep")
        sample = assemble(head, self._builder.mesh())
        timeout = min(timeout_s or s.timeout_s, s.sweep_timeout_max_s)
        deadline = min(deadline_s or s.sweep_deadline_s, s.sweep_deadline_max_s)
        order = sweep_order(
            sample,
            sweep_id=new_sweep_id(),
            now=now,
            deadline_s=deadline,
            timeout_s=timeout,
            agents=len(agents),
            max_results=SWEEP_RESULTS_MAX,
        )
        planned = planned_count(sweep_plan(sample, order))
        sweep = Sweep(
            order,
            agents,
            started_at=now,
            deadline_s=deadline,
            # Agents' pinglists differ a little (same-node and shared targets): room for that.
            records_per_agent=2 * planned + RECORDS_SLACK,
        )
        self._sweeps[sweep.id] = sweep
        finished = [x for x in self._sweeps.values() if x.finished]
        for old in finished[: max(0, len(finished) - s.sweeps_kept)]:
            del self._sweeps[old.id]
        self._running_sweep = sweep
        log.info(
            "sweep %s: %d agents, %d rounds' peers, probe timeout %g s, deadline %g s",
            sweep.id, len(agents), order.rounds, timeout, deadline,
        )  # fmt: skip
        task = self._tg.create_task(self._run_sweep(sweep))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return sweep

    def sweep_order(self, agent: str) -> SweepOrder | None:
        """The running sweep's order for ``agent``, while it still owes its results."""
        sweep = self._running_sweep
        return None if sweep is None else sweep.order_for(agent)

    def deliver_sweep(self, sweep_id: str, agent: str, body: bytes, *, done: bool) -> SweepDelivery:
        """An agent's sweep results (JSONL): kept for the sweep's report and stored like any
        results. Raises :class:`SweepRefusedError` (with the HTTP status) when the sweep does not
        take them."""
        sweep = self._sweeps.get(sweep_id)
        if sweep is None:
            raise SweepRefusedError(404, f"no sweep {sweep_id!r}")
        records, rejected, errors = decode_batch(body) if body.strip() else ([], 0, [])
        reply, kept = sweep.deliver(agent, records, rejected, errors, done=done)
        if kept:
            self.store.ingest(kept, now=self._clock())
            self.latency_metrics.observe(kept)
        self.metrics.count_ingested(kept, reply.rejected)
        return reply

    async def _run_sweep(self, sweep: Sweep) -> None:
        try:
            wait = sweep.order.until + DEADLINE_GRACE_S - self._clock()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await sweep.all_done.wait()
            now = self._clock()
            sweep.close(now)
            sweep.report = await asyncio.to_thread(
                report_from_records,
                sweep.records,
                nodes=self.node_names(),
                topology=self._topology,
                policy=self._policy,
                window_s=max(now - sweep.started_at, 0.0),
                end_ts=now,
            )
            self.metrics.sweeps.labels("done").inc()
        except Exception as exc:
            log.exception("sweep %s failed", sweep.id)
            sweep.closed = True
            sweep.error = f"{type(exc).__name__}: {exc}"
            sweep.finished_at = self._clock()
            self.metrics.sweeps.labels("failed").inc()
        finally:
            if self._running_sweep is sweep:
                self._running_sweep = None
                self._last_sweep_end = self._clock()

    def sweep_status(self, sweep_id: str) -> SweepStatus | None:
        sweep = self._sweeps.get(sweep_id)
        return None if sweep is None else sweep.status()

    # -- lifecycle --------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self, source: InventorySource) -> AsyncIterator[None]:
        """Load the first inventory (its errors propagate), then follow the source, keep the
        default window fresh and run sweeps while the context lasts.

        Leaving the context stops the loops and any sweep in progress, and closes the
        source.
        """
        updates = self._updates = source.updates()
        try:
            first = await anext(updates)
        except BaseException:
            await _close(updates)
            self._updates = None
            raise
        if not await self.apply_inventory_off_loop(first):
            await _close(updates)
            self._updates = None
            raise InventoryError("the first inventory was refused; see the log")
        self.metrics.inventory_up.set(1)
        # An exception from the caller's block is held and re-raised after the task
        # group, so it arrives as itself rather than wrapped in an ExceptionGroup.
        raised: BaseException | None = None
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            loops = [
                tg.create_task(self.follow_inventory(updates, source)),
                tg.create_task(self.refresh_forever()),
            ]
            try:
                yield
            except BaseException as exc:  # noqa: BLE001 - re-raised below, unwrapped
                raised = exc
            finally:
                for task in [*loops, *self._tasks]:
                    task.cancel()
                self._tg = None
                self._running_sweep = None
        # A source may hold threads or watches: let it stop them.
        if self._updates is not None:
            await _close(self._updates)
            self._updates = None
        if raised is not None:
            raise raised


async def _close(updates: AsyncIterator[Inventory]) -> None:
    """Close an inventory source's generator if it is one (ends its watches and threads)."""
    aclose = getattr(updates, "aclose", None)
    if aclose is not None:
        await aclose()
