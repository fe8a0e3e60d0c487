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
the event loop (the report pipeline, :mod:`prober.report`, is pure); readers are
served the last completed pass and never wait for one in progress (only a
window's first reader, and readers after an inventory change, wait for a pass);
pinglists are built and encoded once per inventory in a thread (the loop only serves
bytes); a matrix view is built and encoded in a thread once per pass and served to
every reader of that pass, and the views readers watch are built by each pass before
it is published (:data:`VIEW_WATCH_S`); after each pass of the default window
its open questions (:mod:`prober.diagnose.suspects`) become focused probes in the
pinglists of the agents that can answer them (only their own parts are re-encoded;
the mesh is untouched); an inventory the pinglist builder
refuses is ignored and the last good one stays; one sweep at a time, a minimum gap
between sweeps, deadlines and probe timeouts lowered to the settings' maxima; agents
that fail a sweep are listed, never waited on past its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gzip
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import msgspec
from prometheus_client import CollectorRegistry

from prober import lifecycle
from prober.collector.admission import Admission, EdgeRules, SourceQuotas, admit_batch
from prober.collector.latency_metrics import ZoneLatencyMetrics
from prober.collector.matrix_metrics import MatrixMetrics
from prober.collector.metrics import LOOP_LAG_EVERY_S, CollectorMetrics
from prober.collector.settings import CollectorSettings, schedule_policy
from prober.collector.store import NlbChunk, Store, StoreSettings, nlb_probes_within
from prober.collector.sweep import (
    DEADLINE_GRACE_S,
    Sweep,
    SweepDelivery,
    SweepRefusedError,
    SweepStatus,
    new_sweep_id,
)
from prober.diagnose import (
    NAMED_RULES,
    DiagnosisPolicy,
    Footprint,
    Rule,
    RuleFailure,
    diagnose_recent,
    diagnose_window,
    longer_window_rules,
)
from prober.diagnose.confirm import Confirmation
from prober.diagnose.suspects import SuspectPolicy, suspects
from prober.inventory import Inventory, InventoryError, InventorySource
from prober.lifecycle import AgentStop
from prober.matrix import FAILING_LIMIT, ViewError, auto_view, matrix_view
from prober.model import Finding, Matrix, ProbeResult, SrcKind
from prober.pinglist import (
    AgentPinglist,
    Announced,
    Mesh,
    Question,
    SweepOrder,
    assemble,
    encode_mesh,
    group_digests,
    mesh_delta,
)
from prober.records import MAX_LISTED_REJECTIONS, Rejected
from prober.report import Window, confirmed_pass, evidence_for, replayed_report
from prober.schedule import (
    Focus,
    FocusedPinglists,
    FocusRules,
    PinglistBuilder,
    planned_count,
    sweep_order,
    sweep_plan,
)
from prober.stats import PairTable, Topology

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Windows whose findings are cached at once (each costs a table).
MAX_CACHED_WINDOWS: Final = 4
#: Matrix views kept per window for its last pass (a ``failing`` view is ~2 MB at 1,000 nodes).
MAX_CACHED_VIEWS: Final = 16
#: A view asked for within this long is built by each pass of its window before the pass
#: is published (the web matrix asks every 5 s).
VIEW_WATCH_S: Final = 60.0
#: Pause before a failed inventory source is asked again.
SOURCE_RETRY_S: Final = 5.0
#: The windows' snapshot in ``--state-dir``.
STATE_FILE: Final = "windows.snapshot"
#: Why a record that would add a label to a full key table is rejected.
FULL_TABLE: Final = "the store's label tables are full: a record with a new target cannot be added now"
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


#: How many meshes before the current one an agent can catch up from with a delta
#: (``226 IM Used``) instead of the whole mesh: a node joining, then another, then a
#: third within one of its polls still costs it a delta.
MESH_DELTA_BASES: Final = 4


@dataclass(frozen=True, slots=True)
class EncodedPinglists:
    """Every pinglist document as served: gzip-compressed JSON, each with its version.

    Built off the event loop once per inventory; a document whose version did not change
    keeps its bytes from the inventory before (:func:`encode_pinglists`).
    """

    mesh: tuple[str, bytes]
    heads: dict[str, tuple[str, bytes]]
    #: The delta to the current mesh from each of the last meshes (by their version):
    #: what an agent holding one of them fetches (docs/contracts.md § Pinglist).
    deltas: dict[str, bytes] = field(default_factory=dict)
    #: The current mesh and the ones before it (at most :data:`MESH_DELTA_BASES` of
    #: them): (version, :func:`~prober.pinglist.group_digests` of its ring).
    history: tuple[tuple[str, dict[str, bytes]], ...] = ()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def encode_pinglists(source: PinglistSource, previous: EncodedPinglists | None = None) -> EncodedPinglists:
    """Encode every agent's part and the mesh, reusing the previous bytes of unchanged ones,
    and the mesh's deltas from the meshes before it."""
    mesh = source.mesh()
    if previous is not None and previous.mesh[0] == mesh.version:
        mesh_doc, deltas, history = previous.mesh, previous.deltas, previous.history
    else:
        mesh_doc = (mesh.version, _gzip(encode_mesh(mesh)))
        digests = group_digests(mesh.ring)
        bases = previous.history[:MESH_DELTA_BASES] if previous is not None else ()
        deltas = {}
        for version, base in bases:
            delta = mesh_delta(version, base, mesh, digests)
            if delta is not None:
                deltas[version] = _gzip(msgspec.json.encode(delta))
        history = ((mesh.version, digests), *bases)[: MESH_DELTA_BASES + 1]
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
    return EncodedPinglists(mesh=mesh_doc, heads=heads, deltas=deltas, history=history)


class IngestReply(msgspec.Struct, frozen=True, kw_only=True):
    accepted: int
    rejected: int
    errors: list[Rejected]


#: The least rest between two refresh passes, as a share of ``refresh_s``: a pass that
#: took up to 90% of its refresh is followed by the next at its time (a fault's evidence
#: is read by the first aligned pass that holds it: bench/collector_scale.py measured 3.95 s
#: at the median, 4.98 s at most, at 1,000 nodes in 14 rounds, and 4.59 s and 6.56 s with
#: the 300 s long window full), one that took longer by the next aligned time after this
#: rest.
PASS_REST_SHARE: Final = 0.1


def next_pass_at(now: float, refresh_s: float, phase_s: float) -> float:
    """When the refresh loop's next pass starts after one that ended at ``now``: the first
    instant ``phase_s`` past a multiple of ``refresh_s`` (a bucket boundary, at the
    defaults) that leaves at least :data:`PASS_REST_SHARE` of a refresh of rest.

    Aligned passes read each bucket once its probes' posts are in, so the recent
    sub-window sheds a fault's onset at the first pass it can; the rest keeps a pass
    that outgrows the refresh from running back to back.
    """
    k = math.ceil((now + refresh_s * PASS_REST_SHARE - phase_s) / refresh_s)
    return k * refresh_s + phase_s


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
    """A window's table and findings at one moment (one pass)."""

    at: float
    table: PairTable
    nodes: tuple[str, ...]
    findings: list[Finding]
    #: Rules that raised in this evaluation: their findings are missing from ``findings``.
    failures: tuple[RuleFailure, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Prepared:
    """Focused pinglists built off the loop, for the builder they were built from."""

    builder: PinglistSource | None
    questions: tuple[Question, ...]
    focus: Focus
    encoded: EncodedPinglists | None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tails:
    """A pass's last seconds: ``recent`` and the shorter ``latest`` (``PassSchedule``),
    and what diagnosis found in them (:func:`diagnose_recent`), which the long window
    reads too."""

    recent: PairTable
    latest: PairTable
    found: list[tuple[Finding, Footprint]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MatrixAnswer:
    """A matrix view of one pass and its JSON, encoded once for every reader."""

    matrix: Matrix
    body: bytes


#: A matrix request: the view as asked (``auto`` included), the node, the limit.
ViewRequest = tuple[str, str | None, int]
_ViewFuture = asyncio.Future[MatrixAnswer]


@dataclass(slots=True)
class _WindowState:
    """A window's last completed pass, the pass in progress if any, and its matrix views."""

    result: WindowResult | None = None
    task: asyncio.Task[WindowResult] | None = None
    #: The views of the pass ``views_of``, by the view they resolve to (most recent last).
    views: dict[ViewRequest, _ViewFuture] = field(default_factory=dict)
    views_of: WindowResult | None = None
    #: When each view given was last asked for (the most recent :data:`MAX_CACHED_VIEWS`):
    #: a pass builds those asked for within :data:`VIEW_WATCH_S` before it is published.
    asked: dict[ViewRequest, float] = field(default_factory=dict)
    #: What its passes confirmed so far: what is shown (prober.diagnose.confirm).
    confirmation: Confirmation = field(default_factory=Confirmation)


class CollectorService:
    def __init__(
        self,
        settings: CollectorSettings,
        *,
        pinglists: PinglistFactory,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        diagnosis: DiagnosisPolicy | None = None,
        rules: Sequence[tuple[str, Rule]] = NAMED_RULES,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = CollectorMetrics(self.registry)
        self.matrix_metrics = MatrixMetrics(registry=self.registry)
        self.latency_metrics = ZoneLatencyMetrics(self.registry)
        self.store = Store(
            StoreSettings(
                bucket_s=settings.bucket_s,
                retention_s=settings.retention_s,
                recent_bytes=settings.records_buffer_mib * 2**20,
                nlb_keep_s=settings.passes().long_window_s,
                # What the long window reads of the pair paths: no older bucket's are kept.
                pair_entries=settings.long_window_entries,
                pair_keep_s=settings.window_s,
            )
        )
        self.inventory: Inventory | None = None
        self._clock = clock
        self._policy = diagnosis
        self._rules = rules
        #: When the default window was last diagnosed with every rule answering (0: never).
        self.last_diagnosis_ts = 0.0
        #: CPU seconds the last pass spent in its threads (tables, evidence, rules, merge).
        self.last_pass_cpu_s = 0.0
        self._pinglist_factory = pinglists
        self._builder: PinglistSource | None = None
        self._encoded: EncodedPinglists | None = None
        #: The agents of each (node, network): whose results a batch holds.
        self._agents_by_source: dict[tuple[str, SrcKind], tuple[str, ...]] = {}
        #: Diagnosis' open questions of the last pass, and the focused probes answering them.
        self._questions: tuple[Question, ...] = ()
        self.focus = Focus()
        self._focus_lock = asyncio.Lock()
        self._topology = Topology()
        #: Agents that stopped on purpose: probes of them are not stored (prober.lifecycle).
        self._stops: tuple[AgentStop, ...] = ()
        self._windows: dict[float, _WindowState] = {}
        self._passes: set[asyncio.Task[WindowResult]] = set()
        #: The refresh loop runs (:meth:`refresh_forever`): it alone starts the default
        #: window's passes, at its aligned times, while there is a pass to serve.
        self._refreshing = False
        # A long window's last diagnosis: (at, nodes, findings with their footprints, its CPU s).
        self._long: dict[float, tuple[float, tuple[str, ...], list[tuple[Finding, Footprint]], float]] = {}
        #: The long passes in progress, and the CPU time and rule failures of those that
        #: ended since the last pass took them.
        self._long_tasks: dict[float, asyncio.Task[None]] = {}
        self._long_cpu: list[float] = []
        self._long_failures: list[RuleFailure] = []
        self._sweeps: dict[str, Sweep] = {}
        self._running_sweep: Sweep | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._last_sweep_end: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._updates: AsyncIterator[Inventory] | None = None
        self._edge: EdgeRules | None = None
        self._quotas = SourceQuotas(
            rate_per_s=settings.ingest_quota_per_s,
            burst=(settings.ingest_quota_per_s or 0.0) * settings.ingest_quota_burst_s,
        )

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
            return builder, encode_pinglists(self._focused(builder, self._questions)[0], self._encoded)
        except Exception:
            log.exception("pinglists could not be built; inventory ignored, keeping the last good one")
            return None

    def _switch_inventory(self, inv: Inventory, builder: PinglistSource, encoded: EncodedPinglists) -> bool:
        before = self._encoded
        self._stops = lifecycle.track(
            self._stops, self.inventory, inv, now=self._clock(), keep_s=self.settings.retention_s
        )
        self.inventory = inv
        self._builder = builder
        self._encoded = encoded
        by_source: dict[tuple[str, SrcKind], list[str]] = {}
        for a in inv.agents:
            by_source.setdefault((a.node, a.kind), []).append(a.name)
        self._agents_by_source = {k: tuple(v) for k, v in by_source.items()}
        self.focus = self._focused(builder, self._questions)[1]
        self._topology = Topology.of(inv)
        self.latency_metrics.set_topology(
            self._topology.zones,
            [f"dns/{d.name}" for d in inv.dns] + [f"external/{e.name}" for e in inv.externals],
        )
        self.store.set_nodes([n.name for n in inv.nodes])
        s = self.settings
        self._edge = EdgeRules.of(
            inv, retention_s=s.retention_s, skew_s=s.clock_skew_s, max_rejected=s.max_rejected_lines
        )
        self._quotas.keep_only(self._edge.nodes)
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

    def mesh_delta(self, base: str) -> tuple[str, bytes] | None:
        """The delta to the current mesh from the mesh ``base`` (its version): (the current
        version, gzip-compressed JSON of a :class:`~prober.pinglist.MeshDelta`); None when
        ``base`` is not one of the last :data:`MESH_DELTA_BASES` meshes."""
        encoded = self._encoded
        if encoded is None or (delta := encoded.deltas.get(base)) is None:
            return None
        return encoded.mesh[0], delta

    # -- focused probes -----------------------------------------------------------------------

    def focus_rules(self) -> FocusRules:
        """The bounds of focused probing: the settings' and the schedule's."""
        s = self.settings
        return FocusRules.of(
            schedule_policy(s),
            per_agent=s.focus_per_agent,
            max_suspects=s.suspects_max,
            min_samples=(self._policy or DiagnosisPolicy()).min_samples,
        )

    def _focused(
        self, builder: PinglistSource, questions: Sequence[Question]
    ) -> tuple[PinglistSource, Focus]:
        if not isinstance(builder, PinglistBuilder) or not questions:
            return builder, Focus()
        focus = builder.focus(questions, self.focus_rules())
        return FocusedPinglists(builder, focus), focus

    def ask(self, questions: Sequence[Question]) -> Focus:
        """Serve focused probes for ``questions`` (in order, within the bounds) from now on:
        the agents that answer them get a new own part, every other document keeps its
        bytes. Replaces the last questions; an empty list ends every focus."""
        return self._apply_focus(self._prepare_focus(questions))

    def _prepare_focus(self, questions: Sequence[Question]) -> _Prepared:
        """The documents with focus for ``questions`` (pure given the state: runs in a thread)."""
        builder, encoded = self._builder, self._encoded
        if builder is None:
            return _Prepared(builder=None, questions=tuple(questions), focus=Focus(), encoded=None)
        source, focus = self._focused(builder, questions)
        return _Prepared(
            builder=builder,
            questions=tuple(questions),
            focus=focus,
            encoded=encode_pinglists(source, encoded),
        )

    def _apply_focus(self, prepared: _Prepared) -> Focus:
        self._questions = prepared.questions
        if prepared.encoded is None or prepared.builder is not self._builder:
            return self.focus  # a new inventory meanwhile: it applies the questions itself
        before = {q.key for q in self.focus.suspects}
        self._encoded, self.focus = prepared.encoded, prepared.focus
        if {q.key for q in self.focus.suspects} != before:
            log.info(
                "focused probes: %d questions (%d asked), %d probes a round",
                len(self.focus.suspects),
                len(prepared.questions),
                self.focus.probes,
            )
        return self.focus

    async def ask_from_pass(self, result: WindowResult) -> Focus:
        """The hook from diagnosis to the pinglists: the open questions of a pass (its
        table and findings, :func:`prober.diagnose.suspects.suspects`), asked off the loop."""
        s = self.settings
        pol = self._policy or DiagnosisPolicy()
        sus = SuspectPolicy(
            min_samples=pol.min_samples,
            healthy_ratio=pol.healthy_ratio,
            dead_ratio=pol.dead_ratio,
            max_suspects=s.suspects_max if s.focus_per_agent > 0 else 0,
            max_rounds=s.suspect_rounds,
        )
        async with self._focus_lock:
            questions = await asyncio.to_thread(
                suspects, result.table, result.findings, previous=self._questions, policy=sus
            )
            return self._apply_focus(await asyncio.to_thread(self._prepare_focus, questions))

    # -- results ----------------------------------------------------------------------------

    def ingest(self, body: bytes, *, caller_node: str | None = None) -> IngestReply:
        """A batch of JSONL results: the good lines are stored, the bad ones counted and listed
        (:meth:`admit`, then :meth:`store_admitted`)."""
        return self.store_admitted(self.admit(body, caller_node=caller_node))

    def admit(self, body: bytes, *, caller_node: str | None = None) -> Admission:
        """Decode and check a batch against the edge rules (:mod:`prober.collector.admission`).

        Safe on another thread: it reads only the current rules (an immutable value)
        and the clock. ``caller_node``: the node the caller is bound to, if any.
        """
        rules = self._edge
        if rules is None:
            raise RuntimeError("no inventory yet")
        return admit_batch(body, rules, now=self._clock(), caller_node=caller_node)

    def announcement(self, records: Sequence[ProbeResult]) -> dict[str, Announced]:
        """The pinglist version of each agent whose results ``records`` are, and the sweep
        that wants its results: what the answer to its post tells it (docs/contracts.md
        § Pinglist), so it fetches its pinglist when that changed and not every round."""
        encoded = self._encoded
        if encoded is None:
            return {}
        mesh = encoded.mesh[0]
        out: dict[str, Announced] = {}
        for source in {(r.src_node, r.src_kind) for r in records}:
            for name in self._agents_by_source.get(source, ()):
                head = encoded.heads.get(name)
                if head is not None:
                    order = self.sweep_order(name)
                    out[name] = Announced(f"{head[0]}.{mesh}", None if order is None else order.id)
        return out

    def store_admitted(self, admission: Admission) -> IngestReply:
        """Store an admitted batch within its sources' quotas and the key tables' room."""
        if admission.refused:
            self.metrics.count_ingested([], admission.rejected)
            return IngestReply(accepted=0, rejected=admission.rejected, errors=admission.errors)
        now = self._clock()
        records = admission.records
        within, over = self._quotas.take(records, now=now)
        positions = _without(list(range(len(records))), over)
        fit, full = self.store.admit(within)
        errors = list(admission.errors)
        late: list[tuple[int, str]] = [(i, self._quota_text(records[i].src_node)) for i in over]
        late += [(positions[i], FULL_TABLE) for i in full]
        for i, reason in sorted(late)[: max(0, MAX_LISTED_REJECTIONS - len(errors))]:
            errors.append(Rejected(admission.line_of(i), reason))
        errors.sort(key=lambda e: e.line)
        rejected = admission.rejected + len(late)
        # Probes of agents that stopped on purpose are accepted, counted, never evidence.
        evidence, routine = lifecycle.without_routine(fit, self._stops)
        whole = len(evidence) == len(records)  # the batch as it came is the evidence's lines
        self.store.queue(
            list(evidence),
            now=now,
            jsonl=admission.jsonl if whole else None,
            observe=self.latency_metrics.observe_keys,
        )
        self.metrics.routine_probes.inc(routine)
        self.metrics.count_ingested(fit, rejected)
        if over:
            self.metrics.quota_rejected.inc(len(over))
        return IngestReply(accepted=len(fit), rejected=rejected, errors=errors)

    def flush(self) -> None:
        """Store the results queued for the store (:meth:`Store.queue`) now: before a scrape,
        so that the latency histograms they feed count every result that has arrived."""
        self.store.flush()

    def _quota_text(self, node: str) -> str:
        return (
            f"over the quota of source node {node!r} ({self._quotas.rate_per_s:g} records/s, "
            f"{self._quotas.burst:g} at once)"
        )

    def recent_records(self, *, since: float = -math.inf, limit: int | None = None) -> list[ProbeResult]:
        """Raw results stamped after ``since``, oldest first (from the store's bounded ring)."""
        return self.store.recent(since=since, limit=limit)

    def recent_jsonl(self, *, since: float = -math.inf, limit: int | None = None) -> bytes:
        """:meth:`recent_records` as JSONL, sliced from the ring without decoding it."""
        return self.store.recent_jsonl(since=since, limit=limit)

    # -- findings and matrix ----------------------------------------------------------------

    async def window(self, window_s: float, *, wait: bool = False) -> WindowResult:
        """The window's table and findings from its last completed pass.

        A reader never waits for a diagnosis pass while there is a completed one to
        serve: when that one is older than ``refresh_s`` (or of another inventory's
        nodes), a new pass starts in the background (one at a time per window) and the
        reader gets the last one; the default window's passes are the refresh loop's
        while it runs (:meth:`refresh_forever`), and a reader starts none but the first
        and those after an inventory change. Only those readers wait for a pass (a
        departed node must not be shown); with ``wait`` a reader waits for a result no
        older than ``refresh_s`` (tests do).
        """
        st = self._state(window_s)
        c = st.result
        now = self._clock()
        if c is None or c.nodes != self.node_names():
            return await asyncio.shield(self._start_pass(st, window_s, now))
        owned = self._refreshing and window_s == self.settings.window_s
        if now - c.at >= self.settings.refresh_s and (wait or not owned):
            task = self._start_pass(st, window_s, now)
            if wait:
                return await asyncio.shield(task)
        return c

    def _start_pass(self, st: _WindowState, window_s: float, now: float) -> asyncio.Task[WindowResult]:
        """The window's pass in progress, or a new one from ``now`` (one at a time per window)."""
        task = st.task
        if task is None:
            task = st.task = asyncio.create_task(self._pass(st, window_s, now))
            self._passes.add(task)
            task.add_done_callback(self._pass_done)
        return task

    async def refresh_pass(self) -> WindowResult:
        """The refresh loop's pass of the default window: one from now (or the one in
        progress, which a first reader started), whatever the age of the last; so the
        loop's passes keep their aligned times (:func:`next_pass_at`)."""
        window_s = self.settings.window_s
        return await asyncio.shield(self._start_pass(self._state(window_s), window_s, self._clock()))

    def _state(self, window_s: float) -> _WindowState:
        st = self._windows.get(window_s)
        if st is None:
            st = self._windows[window_s] = _WindowState(
                confirmation=Confirmation(self.settings.passes(window_s).confirm)
            )
            self._evict()
        else:
            self._windows[window_s] = self._windows.pop(window_s)  # most recently used last
        return st

    async def _pass(self, st: _WindowState, window_s: float, now: float) -> WindowResult:
        try:
            nodes = self.node_names()
            failures: list[RuleFailure] = []
            try:
                table, findings = await self._diagnose_window(now, window_s, failures, st.confirmation)
            except Exception:
                self.metrics.diagnosis_errors.labels("pipeline").inc()
                raise
            for f in failures:
                log.error("diagnosis rule %s failed (its findings are missing): %s", f.rule, f.error)
                self.metrics.diagnosis_errors.labels(f.rule).inc()
            if not failures and window_s == self.settings.window_s:
                self.last_diagnosis_ts = now
                self.metrics.last_diagnosis.set(now)
            c = WindowResult(at=now, table=table, nodes=nodes, findings=findings, failures=tuple(failures))
            views = await self._watched_views(st, c)
            if st.result is None or st.result.at <= now:
                st.result = c
                st.views, st.views_of = views, c
            return c
        finally:
            st.task = None

    def _pass_done(self, task: asyncio.Task[WindowResult]) -> None:
        self._passes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a diagnosis pass failed", exc_info=task.exception())

    def _evict(self) -> None:
        """Keep the default window and the most recently read others, ``MAX_CACHED_WINDOWS`` in all."""
        while len(self._windows) > MAX_CACHED_WINDOWS:
            oldest = next(w for w in self._windows if w != self.settings.window_s)
            del self._windows[oldest]

    async def matrix(
        self, window_s: float, *, view: str = "auto", node: str | None = None, limit: int = FAILING_LIMIT
    ) -> MatrixAnswer:
        """The window's matrix as a view a person can look at (:func:`prober.matrix.matrix_view`;
        ``auto`` reads the window's findings) and its JSON, from the window's last pass;
        ``ViewError`` for a view it cannot give.

        A view is built and encoded in a thread once per pass and shared by every reader
        of that pass (at most :data:`MAX_CACHED_VIEWS` a window); a view asked for in the
        last :data:`VIEW_WATCH_S` is built by each new pass before the pass is published.
        """
        c = await self.window(window_s)
        request: ViewRequest = (view, node, limit)
        answer = await self._view(window_s, c, request)  # ViewError: not remembered
        asked = self._state(window_s).asked
        asked.pop(request, None)
        asked[request] = self._clock()  # most recent last, at most MAX_CACHED_VIEWS
        while len(asked) > MAX_CACHED_VIEWS:
            del asked[next(iter(asked))]
        return answer

    async def _view(self, window_s: float, c: WindowResult, request: ViewRequest) -> MatrixAnswer:
        st = self._state(window_s)
        if st.views_of is not c:
            if c is not st.result:
                return await self._build_view(c, _view_key(c, request))  # not the last pass: not kept
            st.views, st.views_of = {}, c
        key = _view_key(c, request)
        task = st.views.pop(key, None)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(self._build_view(c, key))
        st.views[key] = task  # most recently used last
        while len(st.views) > MAX_CACHED_VIEWS:
            del st.views[next(iter(st.views))]
        return await asyncio.shield(task)

    async def _build_view(self, c: WindowResult, key: ViewRequest) -> MatrixAnswer:
        return await asyncio.to_thread(_answer, c, key, self._topology.zones)

    async def _watched_views(self, st: _WindowState, c: WindowResult) -> dict[ViewRequest, _ViewFuture]:
        """The views of pass ``c`` that readers asked for in the last :data:`VIEW_WATCH_S`,
        built in one thread hop before the pass is published, so that its readers find
        them built."""
        now = self._clock()
        for request, asked in list(st.asked.items()):
            if now - asked > VIEW_WATCH_S:
                del st.asked[request]
        keys = list(dict.fromkeys(_view_key(c, r) for r in list(st.asked)[-MAX_CACHED_VIEWS:]))
        if not keys:
            return {}
        zones = self._topology.zones

        def build() -> list[MatrixAnswer | None]:
            built: list[MatrixAnswer | None] = []
            for key in keys:
                try:
                    built.append(_answer(c, key, zones))
                except ViewError:
                    built.append(None)
            return built

        views: dict[ViewRequest, _ViewFuture] = {}
        for key, answer in zip(keys, await asyncio.to_thread(build), strict=True):
            if answer is not None:
                views[key] = done = asyncio.get_running_loop().create_future()
                done.set_result(answer)
        return views

    async def _diagnose_window(
        self, now: float, window_s: float, failures: list[RuleFailure], confirmation: Confirmation
    ) -> tuple[PairTable, list[Finding]]:
        """The window's table, and the findings of the window and of a longer one, as
        ``confirmation`` shows them after this pass (:func:`prober.report.confirmed_pass`).

        Both carry their last seconds as ``recent`` and ``latest`` evidence
        (:class:`prober.report.PassSchedule`, 20 s and 15 s): a fault that began
        or ended inside the window is named by what it is now, not by its diluted
        average. The longer window (``long_window_factor`` times, within retention)
        gives the rate-limited modes their samples; it costs several times the default
        window, so it is diagnosed at most once per ``long_refresh_s``, in the background
        (:meth:`_long_window`), and its last answer merged with every fresher default
        window (whose probes still drop the long window's findings that are over).

        The event loop only takes the store's snapshots (references to sealed bucket
        runs and a copy of the NLB ring); tables, evidence and rules run in a thread,
        whose CPU time is counted in :attr:`last_pass_cpu_s`.
        """
        s = self.settings
        sched = s.passes(window_s)
        longer = min(s.retention_s, window_s * s.long_window_factor)
        cpu: list[float] = []
        recent_snap = self.store.snapshot(now=now, window_s=sched.recent_s)
        latest_snap = self.store.snapshot(now=now, window_s=sched.latest_s)
        main_snap = self.store.snapshot(now=now, window_s=window_s)
        nlb = self.store.nlb_chunks()
        topology, policy, rules = self._topology, self._policy, self._rules

        def main_pass() -> tuple[_Tails, PairTable, list[tuple[Finding, Footprint]]]:
            # The tails serve diagnosis alone; the window's table serves the matrix too.
            recent, latest = recent_snap.table(histogram=False), latest_snap.table(histogram=False)
            table = main_snap.table()
            window = Window(table=table, nlb_probes=nlb_probes_within(nlb, now=now, window_s=window_s))
            [ev] = evidence_for([window], topology=topology, recent=recent, latest=latest)
            found = diagnose_recent(ev, policy=policy, rules=rules, failures=failures)
            tails = _Tails(recent=recent, latest=latest, found=found)
            raw = diagnose_window(ev, policy=policy, rules=rules, failures=failures, recent_found=found)
            return tails, table, raw

        tails, table, raw = await asyncio.to_thread(_thread_cpu, cpu, main_pass)
        per_window = [raw]
        if longer > window_s:
            long_raw = await self._long_window(
                now, longer, tails, main_s=window_s, nlb=nlb, failures=failures, cpu=cpu
            )
            per_window.append(long_raw)
        findings = await asyncio.to_thread(
            _thread_cpu,
            cpu,
            confirmed_pass,
            confirmation,
            now,
            per_window,
            main=table,
            recent=tails.latest,
            policy=self._policy,
        )
        await asyncio.to_thread(_thread_cpu, cpu, trim_heap)
        self.last_pass_cpu_s = sum(cpu)
        return table, findings

    async def _long_window(
        self,
        now: float,
        window_s: float,
        tails: _Tails,
        *,
        main_s: float,
        nlb: Sequence[NlbChunk],
        failures: list[RuleFailure],
        cpu: list[float],
    ) -> list[tuple[Finding, Footprint]]:
        """The long window's last findings with their footprints; a new long pass starts in
        the background when they are older than ``long_refresh_s`` and than the last long
        pass's CPU time over ``long_cpu_share`` (one at a time).

        A pass never waits for the long window, except for its very first answer: at
        1,000 nodes a long pass costs several default windows, and waiting for it would
        hold back the findings of the default window, which name the sudden faults. Its
        CPU time and its rule failures are counted in the pass after it ends. After an
        inventory change, its findings of departed nodes are left out until it is
        diagnosed again.
        """
        nodes = self.node_names()
        last = self._long.get(window_s)
        s = self.settings
        stale = (
            last is None
            or last[1] != nodes
            or now - last[0] >= max(s.long_refresh_s, last[3] / s.long_cpu_share)
        )
        task = self._long_tasks.get(window_s)
        if stale and task is None:
            task = self._long_tasks[window_s] = asyncio.create_task(
                self._long_pass(now, window_s, nodes, tails, main_s=main_s, nlb=nlb)
            )
        if last is None and task is not None:
            await asyncio.shield(task)
            last = self._long.get(window_s)
        cpu.extend(self._long_cpu)
        failures.extend(self._long_failures)
        self._long_cpu.clear()
        self._long_failures.clear()
        if last is None:
            return []
        if last[1] == nodes:
            return last[2]
        present = set(nodes)
        return [(f, fp) for f, fp in last[2] if present.issuperset(f.nodes)]

    async def _long_pass(
        self,
        now: float,
        window_s: float,
        nodes: tuple[str, ...],
        tails: _Tails,
        *,
        main_s: float,
        nlb: Sequence[NlbChunk],
    ) -> None:
        """One diagnosis of the long window (``window_s``, the default window ``main_s``
        times the factor, its pair paths bounded: ``long_window_entries``), in a thread,
        kept in ``_long``; its CPU time and rule failures wait for the next pass. A
        failure as a whole is counted and logged, and the last findings stay."""
        snap = self.store.snapshot(
            now=now, window_s=window_s, entries=self.settings.long_window_entries, pair_s=main_s
        )
        topology, policy, rules = self._topology, self._policy, self._rules
        failures: list[RuleFailure] = []

        def long_pass() -> list[tuple[Finding, Footprint]]:
            window = Window(
                table=snap.table(histogram=False),
                nlb_probes=nlb_probes_within(nlb, now=now, window_s=window_s),
            )
            [ev] = evidence_for([window], topology=topology, recent=tails.recent, latest=tails.latest)
            del window
            # The tails are the default pass's: what it found in them is read, not redone.
            longer = longer_window_rules(rules)
            found = diagnose_window(
                ev, policy=policy, rules=longer, failures=failures, recent_found=tails.found
            )
            del ev
            trim_heap()
            return found

        cpu: list[float] = []
        try:
            raw = await asyncio.to_thread(_thread_cpu, cpu, long_pass)
            self._long_cpu.extend(cpu)
            self._long_failures.extend(failures)
            self._long[window_s] = (now, nodes, raw, sum(cpu))
            while len(self._long) > MAX_CACHED_WINDOWS:
                del self._long[next(iter(self._long))]
        except Exception:
            self.metrics.diagnosis_errors.labels("pipeline").inc()
            log.exception("the long window's diagnosis failed; its last findings stay")
        finally:
            del self._long_tasks[window_s]

    async def refresh_forever(self) -> None:
        """Keep the default window's findings (and their metrics) fresh without any request:
        a pass every ``refresh_s``, at ``refresh_phase_s`` past a bucket boundary
        (:func:`next_pass_at`). While it runs, readers of the default window start no
        pass of their own (:meth:`window`): each bucket is read once its posts are in,
        and a fault's evidence is read by the first aligned pass that holds it."""
        self._refreshing = True
        try:
            await self._refresh_loop()
        finally:
            self._refreshing = False

    async def _refresh_loop(self) -> None:
        after: asyncio.Task[None] | None = None
        try:
            while True:
                started = time.perf_counter()
                try:
                    c = await self.refresh_pass()
                    self.metrics.set_findings(c.findings)
                except Exception:
                    # Counted (rule="pipeline") by window(); prober_last_diagnosis_timestamp_seconds
                    # stops advancing, which the ProberDiagnosisStale alert watches.
                    log.exception("diagnosis failed; the previous findings stay in the metrics")
                else:
                    # The pass's questions and matrix metrics follow it while the loop rests, so
                    # the next pass keeps its time; one pass's follow before the next's.
                    if after is not None:
                        await after
                    after = asyncio.create_task(self._after_pass(c))
                self.metrics.diagnosis_seconds.set(time.perf_counter() - started)
                self.metrics.diagnosis_cpu_seconds.set(self.last_pass_cpu_s)
                self.metrics.set_store(self.store.usage())
                now = self._clock()
                s = self.settings
                await asyncio.sleep(next_pass_at(now, s.refresh_s, s.refresh_phase_s) - now)
        finally:
            if after is not None:
                after.cancel()

    async def watch_loop(self) -> None:
        """Sample how late the event loop runs a timer, every :data:`LOOP_LAG_EVERY_S`,
        into ``prober_collector_event_loop_lag_seconds``: what a request or a post waited
        for the loop at that moment (a pass's thread holding the interpreter, work done on
        the loop). Runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LOOP_LAG_EVERY_S
            await asyncio.sleep(LOOP_LAG_EVERY_S)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - due))

    async def _after_pass(self, c: WindowResult) -> None:
        """What a refresh pass feeds: the focused probes of its open questions and the
        matrix metrics."""
        try:
            await self.ask_from_pass(c)
            await asyncio.to_thread(
                self.matrix_metrics.update,
                c.table,
                topology=self._topology,
                window_s=self.settings.window_s,
                findings=c.findings,
            )
        except Exception:
            log.exception("the pass's focused probes or matrix metrics failed; the previous ones stay")

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
        rules = self._edge
        if rules is None:
            raise SweepRefusedError(503, "no inventory yet")
        now = self._clock()
        # An agent's sweep results pass the same edge as its rounds' results.
        admission = (
            admit_batch(body, rules, now=now)
            if body.strip()
            else Admission(records=[], rejected=0, errors=[])
        )
        records = [] if admission.refused else admission.records
        reply, kept = sweep.deliver(agent, records, admission.rejected, admission.errors, done=done)
        fit, _ = self.store.admit(kept)
        if fit:
            self.store.ingest(fit, now=now, observe=self.latency_metrics.observe_keys)
        self.metrics.count_ingested(fit, reply.rejected + len(kept) - len(fit))
        return reply

    async def _run_sweep(self, sweep: Sweep) -> None:
        try:
            wait = sweep.order.until + DEADLINE_GRACE_S - self._clock()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await sweep.all_done.wait()
            now = self._clock()
            sweep.close(now)
            # As the collector's passes would have shown these results (prober.report).
            sweep.report = await asyncio.to_thread(
                replayed_report,
                sweep.records,
                schedule=self.settings.passes(),
                nodes=self.node_names(),
                topology=self._topology,
                policy=self._policy,
                stops=self._stops,
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

    # -- state across a restart -------------------------------------------------------------

    @property
    def state_file(self) -> Path | None:
        return None if self.settings.state_dir is None else Path(self.settings.state_dir) / STATE_FILE

    def load_state(self) -> bool:
        """Load the windows' snapshot, if there is one; a snapshot that cannot be read, is
        corrupt or is of another store is reported and ignored (the windows start empty)."""
        path = self.state_file
        if path is None or not path.exists():
            return False
        try:
            kept = self.store.load(path.read_bytes(), now=self._clock())
        except (OSError, ValueError) as exc:
            log.warning("state snapshot %s ignored, the windows start empty: %s", path, exc)
            return False
        self._windows.clear()
        log.info("state snapshot %s loaded: %d buckets of results within retention", path, kept)
        return True

    async def save_state(self) -> None:
        """Write the windows' snapshot (atomically: a reader never sees half of one), encoded
        and written in a thread (:meth:`Store.dumper`: at 1,000 nodes ~0.5 CPU-s, which on
        the event loop held every request every 30 s)."""
        path = self.state_file
        if path is None:
            return
        now = self._clock()
        encode = self.store.dumper(now=now)  # on the loop: beside ingest, only the references
        try:
            await asyncio.to_thread(lambda: _write_atomically(path, encode()))
        except OSError as exc:
            log.warning("cannot write the state snapshot %s: %s", path, exc)
            return
        self.metrics.state_saved.set(now)

    async def save_state_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.state_every_s)
            await self.save_state()

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
        self.load_state()
        # An exception from the caller's block is held and re-raised after the task
        # group, so it arrives as itself rather than wrapped in an ExceptionGroup.
        raised: BaseException | None = None
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            loops = [
                tg.create_task(self.follow_inventory(updates, source)),
                tg.create_task(self.refresh_forever()),
                tg.create_task(self.watch_loop()),
            ]
            if self.state_file is not None:
                loops.append(tg.create_task(self.save_state_forever()))
            try:
                yield
            except BaseException as exc:  # noqa: BLE001 - re-raised below, unwrapped
                raised = exc
            finally:
                for task in [*loops, *self._tasks, *self._passes, *self._long_tasks.values()]:
                    task.cancel()
                self._tg = None
                self._running_sweep = None
        await self.save_state()  # a clean stop loses nothing
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


def _view_key(c: WindowResult, request: ViewRequest) -> ViewRequest:
    """The view a request resolves to for the pass ``c`` (``auto`` reads its findings),
    with only the parameters that view reads: requests that give the same view share it."""
    view, node, limit = request
    if view == "auto":
        view = auto_view(len(c.nodes), c.findings)
    return view, node if view == "node" else None, limit if view == "failing" else 0


def _answer(c: WindowResult, key: ViewRequest, zones: Mapping[str, str]) -> MatrixAnswer:
    """The view ``key`` of the pass ``c``, and its JSON."""
    view, node, limit = key
    matrix = matrix_view(
        c.table, view=view, nodes=c.nodes, zones=zones, node=node, limit=limit, findings=c.findings
    )
    return MatrixAnswer(matrix=matrix, body=msgspec.json.encode(matrix))


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC: Final = _libc()
#: glibc's ``malloc_trim``; None under another C library.
_MALLOC_TRIM: Final[Callable[[int], int] | None] = getattr(_LIBC, "malloc_trim", None)
#: glibc's ``mallopt`` and the two parameters :func:`tune_heap` sets (malloc.h).
_MALLOPT: Final[Callable[[int, int], int] | None] = getattr(_LIBC, "mallopt", None)
_M_MMAP_MAX: Final = -4
_M_ARENA_MAX: Final = -8


def trim_heap() -> None:
    """Give the pages a pass freed back to the system (glibc's ``malloc_trim``). A pass
    allocates and frees gigabytes of table columns at 1,000 nodes; without this the
    collector's RSS stays at the high-water mark of its largest pass."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def tune_heap() -> bool:
    """Have glibc carve every block from one heap (one arena, no block of its own
    mapping); True when it took. For the collector's process, before any thread starts.

    A pass's columns of the long window are tens of megabytes each, past glibc's
    largest mmap threshold (32 MiB): each was mapped afresh and faulted in page by page,
    and at 1,000 nodes the kernel's page faults were half the long window's CPU time
    (the findings API's p99 fell from 0.17 s to 0.05 s without them). From one heap, a freed
    column's pages serve the next one; :func:`trim_heap` still gives them back after
    each pass, so the RSS between passes is what it was.
    """
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(_M_ARENA_MAX, 1)) and bool(_MALLOPT(_M_MMAP_MAX, 0))


#: How long a thread may hold the interpreter while another waits for it (Python's
#: default is 5 ms): the collector's event loop waits for it after every poll while a
#: pass runs.
SWITCH_INTERVAL_S: Final = 0.0005


def tune_interpreter() -> None:
    """Hand the interpreter to a waiting thread after :data:`SWITCH_INTERVAL_S` rather than
    5 ms. For the collector's process.

    A pass runs on worker threads for seconds. Each time the event loop comes back
    from polling its sockets it waits for the interpreter, up to the switch interval,
    while the pass holds it. A post, a fetch or a read takes several such turns, and
    the waits queued them behind the passes.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def _thread_cpu(acc: list[float], fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)``, adding the CPU time this thread spent on it to ``acc``: a pass's
    cost without the time it waited for the interpreter or the machine."""
    started = time.thread_time()
    try:
        return fn(*args, **kwargs)
    finally:
        acc.append(time.thread_time() - started)


def _without(positions: list[int], drop: list[int]) -> list[int]:
    """``positions`` without the entries at the indices ``drop`` (sorted)."""
    if not drop:
        return positions
    gone = set(drop)
    return [p for i, p in enumerate(positions) if i not in gone]


def _write_atomically(path: Path, data: bytes | bytearray) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
