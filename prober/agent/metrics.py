"""The agent's Prometheus metrics, declared once over a registry the caller owns.

Names are the ones docs/architecture.md lists (dashboards and rules rely on them).
Label sets stay bounded per agent whatever the cluster size: node names and paths,
never an IP or a URL. Counters only, by path and outcome: latency distributions come
from the collector, by path and zone pair (``prober_zone_probe_duration_seconds``),
so an agent costs a few dozen series, not ~170. Per-target counters
(one series per destination node) exist only with ``--per-target-metrics``, and the
series of destinations that left the pinglist are removed so a churning cluster does
not grow the agent's memory or Prometheus' series count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

from prober.model import OUTSIDE_KINDS, Outcome, ProbeResult
from prober.pinglist import Pinglist

#: ``dst_node`` label of a per-target series whose serving node is unknown (a Service
#: or NLB probe that failed before any echo answered).
UNKNOWN_DST = "unknown"


def pinglist_targets(pl: Pinglist) -> int:
    """How many distinct targets a pinglist names (what ``prober_pinglist_targets`` shows)."""
    n = len(pl.local)
    n += sum(len(g.targets) for g in pl.peers)
    n += sum(len(g.targets) for g in pl.shared)
    return n


def dst_label(result: ProbeResult) -> str:
    """The per-target ``dst_node`` label: the serving node, or the target name outside the mesh."""
    if result.target_kind in OUTSIDE_KINDS:
        return result.target
    return result.dst_node or UNKNOWN_DST


def pinglist_dst_labels(pl: Pinglist) -> set[str]:
    """Every ``dst_node`` label value a probe of this pinglist can legitimately produce.

    Balanced targets (Service, NodePort, NLB) may be served by any node, so every node
    the pinglist knows (its own and its peers) stays; outside targets keep their name.
    """
    labels = {pl.node, UNKNOWN_DST}
    labels.update(g.node for g in pl.peers)
    for t in pl.local:
        labels.add(t.target if t.kind in OUTSIDE_KINDS else (t.dst_node or pl.node))
    for s in pl.shared:
        for t in s.targets:
            if t.kind in OUTSIDE_KINDS:
                labels.add(t.target)
            elif t.dst_node:
                labels.add(t.dst_node)
    return labels


class EchoMetrics:
    """The echo servers' series: what ``prober echo`` exports, and part of every agent's."""

    def __init__(self, *, registry: CollectorRegistry) -> None:
        # No ``*_created`` sample beside every counter: it doubles the series for nothing
        # a rate() needs (process-wide; the collector does the same).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.echo_requests = Counter(
            "prober_echo_requests",
            "Echo requests answered, by protocol.",
            ["proto"],
            registry=registry,
        )
        self.echo_dropped = Counter(
            "prober_echo_dropped_datagrams",
            "UDP echo datagrams not answered, by reason (malformed, oversize, amplification).",
            ["reason"],
            registry=registry,
        )
        self.http_closed = Counter(
            "prober_http_closed_connections",
            "HTTP connections closed by the server's bounds, by reason (header_timeout, body_timeout, "
            "over_cap).",
            ["reason"],
            registry=registry,
        )


def echo_info(registry: CollectorRegistry, *, node: str, kind: str, version: str) -> Gauge:
    """``prober_echo_info{node,kind,version}`` = 1: an echo-only process (``prober echo``)."""
    info = Gauge(
        "prober_echo_info",
        "Constant 1: which node and network this echo (prober echo) serves on, and its version.",
        ["node", "kind", "version"],
        registry=registry,
    )
    info.labels(node=node, kind=kind, version=version).set(1)
    return info


class AgentMetrics(EchoMetrics):
    """Every series the agent exports. Methods are cheap: they sit on the probe hot path."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        node: str,
        kind: str,
        version: str,
        per_target: bool = False,
    ) -> None:
        super().__init__(registry=registry)
        self.node = node
        self.per_target = per_target
        self.probes = Counter(
            "prober_probes",
            "Probes sent, by path and outcome.",
            ["path", "src_node", "outcome"],
            registry=registry,
        )
        self.target_probes = Counter(
            "prober_target_probes",
            "Probes sent, by path, destination node and outcome (only with --per-target-metrics).",
            ["path", "src_node", "dst_node", "outcome"],
            registry=registry,
        )
        self.buffer_records = Gauge(
            "prober_report_buffer_records",
            "Results waiting to be delivered to the collector.",
            registry=registry,
        )
        self.dropped_records = Counter(
            "prober_report_dropped_records",
            "Results dropped (oldest first) because the buffer was full while the collector was away.",
            registry=registry,
        )
        self.batches = Counter(
            "prober_report_batches",
            "Result batches sent to the collector, by result (ok, failed: retried later, "
            "rejected: the collector refused the batch as a whole).",
            ["result"],
            registry=registry,
        )
        self.pinglist_targets = Gauge(
            "prober_pinglist_targets",
            "Targets on the current pinglist.",
            registry=registry,
        )
        self.pinglist_age = Gauge(
            "prober_pinglist_age_seconds",
            "Seconds since the pinglist was last confirmed by the collector (or built locally).",
            registry=registry,
        )
        self.info = Gauge(
            "prober_agent_info",
            "Constant 1: which node and network this agent probes from, and its version.",
            ["node", "kind", "version"],
            registry=registry,
        )
        self.info.labels(node=node, kind=kind, version=version).set(1)
        self.overruns = Counter(
            "prober_round_overruns",
            "Planned probes not sent because their round ended before the budget or the "
            "concurrency limit let them start.",
            registry=registry,
        )
        # Pre-bound children: labels() is a dict lookup plus a lock, too slow per probe.
        self._probe_children: dict[tuple[str, Outcome], Counter] = {}
        self._target_keys: set[tuple[str, str, str]] = set()

    def observe(self, result: ProbeResult) -> None:
        """Count one probe result (the round loop calls this for every probe)."""
        key = (result.path, result.outcome)
        child = self._probe_children.get(key)
        if child is None:
            child = self.probes.labels(result.path, self.node, result.outcome.value)
            self._probe_children[key] = child
        child.inc()
        if self.per_target:
            dst = dst_label(result)
            self._target_keys.add((result.path, dst, result.outcome.value))
            self.target_probes.labels(result.path, self.node, dst, result.outcome.value).inc()

    def set_pinglist(self, pl: Pinglist) -> None:
        """A new pinglist: update its gauges and forget per-target series it no longer covers."""
        self.pinglist_targets.set(pinglist_targets(pl))
        if self.per_target:
            self.retain_targets(pinglist_dst_labels(pl))

    def retain_targets(self, dst_labels: Iterable[str]) -> None:
        """Remove every per-target series whose ``dst_node`` is not in ``dst_labels``."""
        keep = set(dst_labels)
        for key in [k for k in self._target_keys if k[1] not in keep]:
            path, dst, outcome = key
            self.target_probes.remove(path, self.node, dst, outcome)
            self._target_keys.discard(key)

    def track_pinglist_age(self, age_s: Callable[[], float]) -> None:
        """Have ``prober_pinglist_age_seconds`` computed at scrape time."""
        self.pinglist_age.set_function(age_s)
