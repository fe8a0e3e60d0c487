"""The collector's settings: one typed value, checked when it is built.

``prober collector`` maps its flags (and their ``PROBER_*`` environment variables)
onto :func:`collector_settings`; tests and the lab build settings the same way. The
flags' defaults, ranges and help are declared once in :mod:`prober.settings`
(:data:`~prober.settings.COLLECTOR`); this value reads its defaults from there and
checks its fields against the same declarations, so a bad value is the same error
(naming the flag) from the command line and from code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prober import settings as declared
from prober.errors import SettingError, UsageError
from prober.report import PassSchedule
from prober.schedule import SchedulePolicy

MIB = 2**20


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectorSettings:
    #: The static inventory file; ``None`` with ``kubernetes``.
    inventory: str | None = None
    #: Discover the inventory from the Kubernetes API instead of a file.
    kubernetes: bool = declared.KUBERNETES.default
    listen: str = declared.COLLECTOR_LISTEN.default
    port: int = declared.COLLECTOR_PORT.default
    # The schedule every agent's pinglist follows (see docs/architecture.md § Schedule).
    interval_s: float = declared.INTERVAL.default
    timeout_s: float = declared.TIMEOUT.default
    budget_per_s: float = declared.BUDGET.default
    shared_budget_per_s: float = declared.SHARED_BUDGET.default
    nlb_budget_per_node: float = declared.NLB_BUDGET.default
    #: Probes/s of the whole mesh (what this collector ingests); ``None``: no limit.
    cluster_budget_per_s: float | None = declared.CLUSTER_BUDGET.default
    #: The large-payload (MTU) probe's answer size; 0: none.
    large_probe_bytes: int = declared.LARGE_PROBE_BYTES.default
    #: The window of the matrix, findings and metrics unless a request asks for another.
    window_s: float = declared.WINDOW.default
    #: How long results are kept: the longest window a request may ask for.
    retention_s: float = declared.RETENTION.default
    #: Memory for the raw results ``GET /api/v1/records`` exports, in MiB.
    records_buffer_mib: int = declared.RECORDS_BUFFER.default
    #: The store's time resolution: half a round at the production schedule, so the
    #: latest sub-window (a round and the bucket in progress) sheds a fault's onset within
    #: 5 s of a round (``prober.report.PassSchedule``).
    bucket_s: float = 5.0
    #: Findings also come from a window this many times longer (within retention), for
    #: the modes whose evidence accrues slowly (DNS timeouts, collisions, hairpin at scale).
    long_window_factor: float = 5.0
    #: A window's findings are recomputed at most this often (the refresh period too).
    refresh_s: float = 5.0
    #: Passes start this long past a multiple of ``refresh_s`` (a bucket boundary): the
    #: agents post every 2 s, so the bucket that just ended is in.
    refresh_phase_s: float = 2.5
    #: The longer window is diagnosed at most this often (it costs several default windows);
    #: its last findings are merged with each refresh of the default window.
    long_refresh_s: float = 10.0
    #: ...and no more often than keeps its passes to this share of a core on average: a
    #: long pass that took c CPU-seconds is followed by the next no sooner than c / share
    #: seconds after it began. Within ``long_window_entries`` a long pass costs ~0.9 CPU-s
    #: at 1,000 nodes and ~1.4 at 5,000 (``bench/collector_pass.py``), which keeps
    #: ``long_refresh_s`` at both; the whole window's 8.5 CPU-s at 1,000 nodes came every
    #: 20 to 40 s.
    long_cpu_share: float = 0.25
    #: The long window's bound, in entries (distinct probe key and outcome a bucket): it
    #: reads its outside and NLB targets whole and its pair paths' (peers, Services,
    #: NodePorts: N² keys) over its newest buckets that fit, never fewer than the default
    #: window's. A 300 s window holds ~2.3 million at 200 nodes (it reads their newest
    #: 260 s) and ~7.4 million at 1,000 (their newest 75 s)
    #: (``prober.report.PassSchedule.long_window_entries``). ``None``: no bound.
    long_window_entries: int | None = 2_000_000
    #: Where the windows' snapshot is kept (``None``: nowhere), and how often it is written.
    state_dir: str | None = declared.STATE_DIR.default
    state_every_s: float = 30.0
    #: The operator credential's file (``None``: none).
    token_file: str | None = declared.COLLECTOR_TOKEN_FILE.default
    #: The largest results batch accepted (413 beyond).
    max_body_bytes: int = 2 * MIB
    #: Results one source node may add per second (``None``: no limit), and how many
    #: seconds' worth it may send at once.
    ingest_quota_per_s: float | None = declared.INGEST_QUOTA.default
    ingest_quota_burst_s: float = 300.0
    #: How far ahead of the collector's clock a result may be stamped.
    clock_skew_s: float = declared.CLOCK_SKEW.default
    #: A batch is refused whole (400) after this many rejected lines.
    max_rejected_lines: int = 100
    #: Batches read and decoded at once; another waits ``ingest_wait_s`` for a turn, then 503.
    ingest_concurrency: int = 4
    ingest_wait_s: float = 5.0
    #: Open connections; a connection beyond is closed at once.
    max_connections: int = declared.MAX_CONNECTIONS.default
    #: A request's headers must arrive within this (from the connection's start or the
    #: previous answer: an idle keep-alive connection is closed after it too), a results
    #: body within ``body_timeout_s``.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    #: How long a sweep runs unless the request says (``prober sweep --timeout`` does).
    sweep_deadline_s: float = declared.SWEEP_TIMEOUT.default
    #: A request's ``deadline_s`` and ``timeout_s`` are lowered to these.
    sweep_deadline_max_s: float = declared.SWEEP_DEADLINE_MAX.default
    sweep_timeout_max_s: float = declared.SWEEP_TIMEOUT_MAX.default
    #: Least time between the end of one sweep and the start of the next.
    sweep_min_gap_s: float = declared.SWEEP_MIN_GAP.default
    #: Finished sweeps kept for ``GET /api/v1/sweeps/{id}``.
    sweeps_kept: int = 20
    #: Focused probes for diagnosis' open questions (docs/contracts.md § Pinglist):
    #: per agent per round, questions cluster-wide, passes an open question is kept.
    focus_per_agent: int = declared.FOCUS_PER_AGENT.default
    suspects_max: int = declared.SUSPECTS_MAX.default
    suspect_rounds: int = declared.SUSPECT_ROUNDS.default

    def passes(self, window_s: float | None = None) -> PassSchedule:
        """How a window (default: ``window_s``) is diagnosed pass after pass: what
        ``prober diagnose`` and sweeps replay (:func:`prober.report.replay_passes`)."""
        w = self.window_s if window_s is None else window_s
        return PassSchedule(
            window_s=w,
            bucket_s=self.bucket_s,
            round_s=self.interval_s,
            long_window_factor=self.long_window_factor,
            refresh_s=self.refresh_s,
            long_refresh_s=self.long_refresh_s,
            retention_s=self.retention_s,
            long_window_entries=self.long_window_entries,
        )

    def __post_init__(self) -> None:
        if self.long_window_entries is not None and self.long_window_entries < 0:
            raise SettingError(f"long_window_entries must be >= 0, got {self.long_window_entries!r}")
        if not 0.0 < self.long_cpu_share <= 1.0:
            raise SettingError(
                f"long_cpu_share must be a share of a core in (0, 1], got {self.long_cpu_share!r}"
            )
        declared.check_fields(self, declared.COLLECTOR)
        if not self.listen:
            raise SettingError("--listen must be an address, e.g. 0.0.0.0 or 127.0.0.1")
        if self.timeout_s >= self.interval_s:
            raise SettingError(
                f"--timeout ({self.timeout_s:g} s) must be shorter than --interval ({self.interval_s:g} s)"
            )
        if self.retention_s < self.bucket_s:
            raise SettingError(
                f"--retention must be at least {self.bucket_s:g} s (one bucket), got {self.retention_s:g}"
            )
        if self.ingest_quota_per_s is not None and self.ingest_quota_per_s < 2 * self.budget_per_s:
            raise SettingError(
                f"--ingest-quota ({self.ingest_quota_per_s:g} records/s) must be at least twice --budget "
                f"({self.budget_per_s:g} probes/s): a node's two agents send that much"
            )
        if self.window_s > self.retention_s:
            raise SettingError(
                f"--window ({self.window_s:g} s) cannot be longer than --retention ({self.retention_s:g} s)"
            )


def collector_settings(
    *, inventory: str | None, kubernetes: bool = False, **values: Any
) -> CollectorSettings:
    """The settings from flag values (``values``: :class:`CollectorSettings` fields); the
    inventory must come from a file or from Kubernetes, not both. A :class:`UsageError`
    names the flag."""
    if kubernetes and inventory:
        raise UsageError("use either --inventory FILE or --kubernetes, not both")
    if not inventory and not kubernetes:
        raise UsageError(
            "no inventory: pass --inventory FILE (or set PROBER_INVENTORY), or --kubernetes in a cluster"
        )
    return CollectorSettings(inventory=inventory, kubernetes=kubernetes, **values)


def schedule_policy(settings: CollectorSettings) -> SchedulePolicy:
    """The schedule the collector's pinglists carry to every agent: its schedule flags."""
    schedule = [s for s in declared.COLLECTOR if s in declared.SCHEDULE]
    return SchedulePolicy(
        **{s.field: getattr(settings, s.field) for s in schedule}, focus_reserve=settings.focus_per_agent
    )
