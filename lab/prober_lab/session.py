"""What ``prober lab run`` and ``prober lab demo`` do with a running lab: exact windows, reports.

A report covers exactly the time one fault set was in force. The collector's own
windows (``/api/v1/report?window=S``) end now and are cut on its 5 s buckets, so
one that straddles a fault switch mixes two states, and diagnosis reads a fault
that began inside a window as a partial one (a node that died halfway looks lossy).
The lab knows to the millisecond when it switched, so it takes the raw results of
exactly ``[since, until)`` from the collector (``GET /api/v1/records?since=TS``,
polled as it goes so the collector's bounded record ring never drops any) and
reports them here with the collector's own pipeline (:mod:`prober.report`), with
the lab's zones. Results reach the collector up to a flush interval plus a probe
timeout after they were stamped; :func:`delivery_lag_s` is how long to wait for them.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import msgspec

from prober.inventory import TrafficPolicy
from prober.model import Finding, Matrix, ProbeResult, Report
from prober.report import report_from_records
from prober.stats import Topology
from prober_lab import runtime
from prober_lab.faults import Fault, parse_fault
from prober_lab.inventory import lab_inventory
from prober_lab.netns import LabError
from prober_lab.plan import DEFAULT_TRAFFIC_POLICY, Cni, LabSpec, Plan, node_name

Say = Callable[[str], None]
#: Wait this many seconds, showing what for; calls ``tick`` now and then while waiting.
Wait = Callable[[float, str, Callable[[], None]], None]

#: The agents' reporter sends a batch at least this often (ReporterPolicy.flush_interval_s).
AGENT_FLUSH_S = 2.0
#: Each poll of the collector asks again for the results of the last this many seconds:
#: batches arrive out of order (agents flush independently), and duplicates are dropped.
POLL_OVERLAP_S = 15.0

_records = msgspec.json.Decoder(ProbeResult)


def delivery_lag_s(timeout_s: float) -> float:
    """How long after ``until`` every result stamped before it has reached the collector."""
    return AGENT_FLUSH_S + timeout_s + 0.6


class RecordTap:
    """The probe results stamped in one window, collected from the lab's collector as they come."""

    def __init__(self, plan: Plan, since: float) -> None:
        self.plan = plan
        self.since = since
        self._seen: set[ProbeResult] = set()
        self._polled_at: float | None = None

    def poll(self) -> int:
        """Fetch what arrived since the last poll (with overlap); returns how many were new."""
        start = self.since if self._polled_at is None else max(self.since, self._polled_at - POLL_OVERLAP_S)
        now = time.time()
        body = runtime.collector_get(self.plan, f"/api/v1/records?since={start!r}", timeout_s=30.0)
        try:
            got = _records.decode_lines(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise LabError(f"the lab's collector sent results this prober cannot read: {exc}") from None
        before = len(self._seen)
        self._seen.update(r for r in got if r.ts >= self.since)
        self._polled_at = now
        return len(self._seen) - before

    def records(self, until: float) -> list[ProbeResult]:
        """Every result stamped in ``[since, until)``, oldest first (poll once more first)."""
        self.poll()
        return sorted((r for r in self._seen if r.ts < until), key=lambda r: r.ts)


def lab_report(plan: Plan, records: Sequence[ProbeResult], *, since: float, until: float) -> Report:
    """Matrix and findings of exactly these results, as the collector would compute them."""
    return report_from_records(
        records,
        nodes=plan.node_names,
        topology=Topology.of(lab_inventory(plan)),
        window_s=max(until - since, 0.0),
        end_ts=until,
    )


def report_json(report: Report) -> bytes:
    """The ``--json`` shape, ``{"matrix": ..., "findings": [...]}`` (docs/contracts.md § Command line)."""
    return msgspec.json.encode({"matrix": report.matrix, "findings": report.findings})


def failing_paths_only(matrix: Matrix) -> tuple[Matrix, int]:
    """The matrix with only the paths that had a failure, and how many all-ok paths were left out."""
    failing = [pm for pm in matrix.paths if pm.ok < pm.sent]
    return msgspec.structs.replace(matrix, paths=failing), len(matrix.paths) - len(failing)


def probe_results(tap: RecordTap, *, until: float) -> list[ProbeResult]:
    records = tap.records(until)
    if not records:
        log = runtime.state_dir(tap.plan.prefix) / "logs"
        raise LabError(f"the lab's agents reported no probe results in the window; see the logs in {log}")
    return records


def run(
    spec: LabSpec,
    faults: Sequence[Fault],
    opts: runtime.UpOptions,
    *,
    duration_s: float,
    say: Say,
    wait: Wait,
) -> Report:
    """Build a lab with ``faults`` on, probe for ``duration_s``, tear it down; the window's report."""
    try:
        state = runtime.up(spec, faults, opts, progress=say)
        plan = state.plan
        tap = RecordTap(plan, state.faults_since)
        until = state.faults_since + duration_s
        wait(until - time.time(), f"probing for {duration_s:g} s", _poller(tap))
        wait(until + delivery_lag_s(opts.timeout_s) - time.time(), "collecting the last results", _nothing)
        records = probe_results(tap, until=until)
        say(f"diagnosing {len(records):,} probe results")
        return lab_report(plan, records, since=tap.since, until=until)
    finally:
        runtime.down(spec.prefix, progress=say)


def _poller(tap: RecordTap) -> Callable[[], None]:
    last = [time.monotonic()]

    def tick() -> None:
        if time.monotonic() - last[0] >= 10.0:
            tap.poll()
            last[0] = time.monotonic()

    return tick


def _nothing() -> None:
    return None


# --- the demo -----------------------------------------------------------------------


#: An expectation that names every node of the lab (the NLB faults are everyone's).
EVERY_NODE: tuple[str, ...] = ("*",)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scene:
    title: str
    cni: Cni
    faults: tuple[str, ...]
    story: str
    #: What diagnosis should say: finding kind -> the nodes it names.
    expect: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: This scene probes this many demo steps (the collision rule needs same-source-port NLB probe groups).
    steps: float = 1.0
    #: The lab this scene needs, when not the demo's: (nodes, zones).
    shape: tuple[int, int] | None = None
    #: The echo NodePort's (and the NLB's) externalTrafficPolicy in this scene's lab.
    policy: TrafficPolicy = DEFAULT_TRAFFIC_POLICY


SCENES: tuple[Scene, ...] = (
    Scene(
        title="a clean cluster",
        cni=Cni.BRIDGE,
        faults=(),
        story="Every path from every node should succeed, and diagnosis should find nothing.",
    ),
    Scene(
        title="br_netfilter missing on node-b (docs/incidents.md#kops-flannel-br-netfilter)",
        cni=Cni.BRIDGE,
        faults=("bridge-netfilter@node-b",),
        story="bridge-nf-call-iptables=0 on node-b: a pod's ClusterIP connection to a backend on "
        "node-b gets its SYN-ACK straight across cni0 from the backend's own address and answers "
        "with RST. Pod to pod works; only Services served on the caller's own node fail.",
        expect={"bridge-netfilter": ("node-b",)},
    ),
    Scene(
        title="NLB hairpin with client-IP preservation (docs/incidents.md#eks-nlb-hairpin)",
        cni=Cni.BRIDGE,
        faults=("nlb-hairpin",),
        story="The NLB keeps the client's address: when it picks the client's own node, the reply "
        "never goes back through the NLB. NLB probes fail exactly when the serving node would be "
        "the client's own.",
        expect={"nlb-hairpin": EVERY_NODE},
    ),
    Scene(
        title="node-c unreachable (a security group without the inbound rule)",
        cni=Cni.BRIDGE,
        faults=("node-unreachable@node-c",),
        story="New connections to node-c are dropped at the fabric; node-c's own connections "
        "and their replies still flow. A column of the matrix, not a row.",
        expect={"node-unreachable": ("node-c",)},
    ),
    Scene(
        title="node-b's pod network cut off (the route to its pod CIDR lost)",
        cni=Cni.BRIDGE,
        faults=("pod-network-isolated@node-b",),
        story="The fabric has no route to node-b's pod CIDR any more (kubenet past the VPC route "
        "table's 50 routes): node-b's pods reach no other node and no other node reaches them, "
        "while node-b's own address, its NodePort and its pods' same-node probes all work.",
        expect={"pod-network-isolated": ("node-b",)},
    ),
    Scene(
        title="an MTU black hole on node-b's link (jumbo frames across a 1500 hop, ICMP filtered)",
        cni=Cni.BRIDGE,
        faults=("mtu-blackhole@node-b",),
        story="The lab's links carry 9001-byte jumbo frames, as a VPC does; node-b's link now takes "
        "1500 and the fabric drops the ICMP fragmentation-needed that would tell the senders. Every "
        "small probe passes; the large-payload probes to and from node-b connect, then stall.",
        expect={"mtu-blackhole": ("node-b",)},
    ),
    Scene(
        title="NLB hairpin behind externalTrafficPolicy: Cluster (the Kubernetes default)",
        cni=Cni.BRIDGE,
        policy="Cluster",
        faults=("nlb-hairpin",),
        story="Now every node forwards NodePort traffic to any node's echo, masqueraded to its own "
        "address. The hairpin still breaks every probe the NLB sends into the client's own node, but "
        "its echo may answer through another node: the echo's view of the client address says which "
        "node the NLB picked, and that node is never the client's own.",
        expect={"nlb-hairpin": EVERY_NODE},
    ),
    Scene(
        title="node-a and node-b cut off from each other, behind externalTrafficPolicy: Cluster",
        cni=Cni.BRIDGE,
        policy="Cluster",
        faults=("pair-blocked@node-a,node-b",),
        story="A NodePort or NLB probe from node-c that enters node-a and is forwarded to node-b's "
        "echo crosses the blocked pair: those failures are the pair's, and node-c, which is healthy, "
        "is not named.",
        expect={"pair-blocked": ("node-a", "node-b")},
    ),
    Scene(
        title="VPC CNI SNAT with strict rp_filter, cross-wired (docs/incidents.md#eks-migration-cross-wired)",
        cni=Cni.VPC,
        faults=("snat-asymmetric@node-b",),
        story="node-b SNATs its pods' external traffic to eth0 while the pod's replies are "
        "policy-routed via eth1: strict rp_filter drops them. node-b's pod cannot reach the "
        "external server; node-b itself can, and so can every other node's pod.",
        expect={"snat-asymmetric": ("node-b",)},
    ),
    Scene(
        title="NLB cross-zone 5-tuple collision (docs/incidents.md#istio-nlb-cross-zone)",
        cni=Cni.VPC,
        faults=("nlb-5tuple-collision",),
        story="Cross-zone load balancing with client-IP preservation: one client port through two "
        "zones' NLB nodes to the same target arrives there as one 5-tuple twice, and one of the "
        "two connections dies. In-cluster clients hairpin too in this configuration.",
        expect={"nlb-5tuple-collision": (), "nlb-hairpin": EVERY_NODE},
        steps=2.0,
    ),
    Scene(
        title="zone-a and zone-b partitioned (a NACL change between two zones' subnets)",
        cni=Cni.BRIDGE,
        faults=("zone-partition@zone-a,zone-b",),
        story="Six nodes in three zones. Nothing gets between zone-a and zone-b any more, on any path, "
        "while each zone works inside and both still reach zone-c: one finding between the two zones, "
        "not a blocked pair for each of their node pairs and loss on every balanced probe that crossed.",
        expect={"zone-partition": ()},
        shape=(6, 3),
    ),
    Scene(
        title="zone-a degraded (a tenth of the packets lost on every one of its nodes' links)",
        cni=Cni.BRIDGE,
        faults=("zone-degraded@zone-a:10%",),
        story="Six nodes in two zones of three. Every interface of zone-a's nodes drops a tenth of "
        "the packets: probes between zone-a's nodes and to and from zone-b fail or retry, zone-b "
        "inside is clean. One finding naming the zone, not packet loss on each of its nodes.",
        expect={"zone-degraded": ()},
        shape=(6, 2),
    ),
)


def scenes_for(nodes: int) -> tuple[Scene, ...]:
    """The scenes, with "every node" expectations sized to the lab."""
    names = tuple(node_name(i) for i in range(nodes))
    return tuple(
        replace(s, expect={k: names if v == EVERY_NODE else v for k, v in s.expect.items()}) for s in SCENES
    )


def verdict(findings: Sequence[Finding], expect: Mapping[str, tuple[str, ...]]) -> tuple[bool, str]:
    """Whether diagnosis named exactly the expected kinds and nodes, and a line saying so."""
    got: dict[str, tuple[str, ...]] = {f.kind: tuple(sorted(f.nodes)) for f in findings}
    want = {k: tuple(sorted(v)) for k, v in expect.items()}

    def text(d: dict[str, tuple[str, ...]]) -> str:
        parts = [k + (f" on {', '.join(v)}" if v else "") for k, v in sorted(d.items())]
        return ", ".join(parts) or "nothing"

    if got == want and len(findings) == len(want):
        return True, f"diagnosis: {text(got)}, as expected"
    return False, f"diagnosis: {text(got)}; expected {text(want)}"


@dataclass(slots=True, kw_only=True)
class _Pending:
    index: int
    scene: Scene
    tap: RecordTap
    until: float


Show = Callable[[Report, str, bool], None]


def run_demo(
    *,
    nodes: int,
    step_s: float,
    prefix: str,
    say: Say,
    out: Say,
    show: Show,
    wait: Wait,
) -> bool:
    """Each scene in turn; one lab per CNI mode, faults switched between scenes.

    The next scene's faults go on the moment a scene's time is up, and the finished
    scene's report is fetched while the next one probes (its last results need a
    moment to arrive). Returns whether every scene was diagnosed as expected.
    """
    scenes = scenes_for(nodes)
    opts = runtime.UpOptions(agents=True)
    lag = delivery_lag_s(opts.timeout_s)
    state: runtime.LabState | None = None
    all_ok = True
    pending: _Pending | None = None

    def finish(p: _Pending) -> None:
        nonlocal all_ok
        wait(p.until + lag - time.time(), "collecting the last results", _nothing)
        records = probe_results(p.tap, until=p.until)
        report = lab_report(p.tap.plan, records, since=p.tap.since, until=p.until)
        ok, line = verdict(report.findings, p.scene.expect)
        all_ok &= ok
        title = f"{p.index}/{len(scenes)}: {p.scene.title} ({p.until - p.tap.since:.0f} s)"
        show(report, title, p.index == 1)
        out(("✓ " if ok else "✗ ") + line)

    try:
        for i, scene in enumerate(scenes, 1):
            n_nodes, n_zones = scene.shape or (nodes, None)
            lab = (scene.cni.value, n_nodes, n_zones, scene.policy)
            if state is None or (state.cni, state.nodes, state.zones, state.external_traffic_policy) != lab:
                if pending is not None:
                    runtime.set_faults(prefix, [])
                    finish(pending)
                    pending = None
                if state is not None:
                    runtime.down(prefix, progress=say)
                say(
                    f"\n== building a {scene.cni} CNI lab with {n_nodes} nodes, "
                    f"externalTrafficPolicy {scene.policy}"
                )
                spec = LabSpec(
                    nodes=n_nodes,
                    cni=scene.cni,
                    prefix=prefix,
                    zones=n_zones,
                    external_traffic_policy=scene.policy,
                )
                state = runtime.up(spec, [], opts, progress=say)
                # The agents' first round starts within one round of start-up (their stagger).
                wait(state.faults_since + 2 * opts.interval_s - time.time(), "warming up", _nothing)
            faults: list[Fault] = [parse_fault(f) for f in scene.faults]
            state = runtime.set_faults(prefix, faults)
            tap = RecordTap(state.plan, state.faults_since)
            if pending is not None:
                finish(pending)
            out(f"\n=== {i}/{len(scenes)}: {scene.title}")
            out(textwrap.fill(f"faults: {', '.join(scene.faults) or 'none'}. {scene.story}", width=100))
            until = state.faults_since + step_s * scene.steps
            wait(until - time.time(), f"probing {scene.title}", _poller(tap))
            # Every probe of the scene is done before the next faults go on.
            wait(until + opts.timeout_s - time.time(), "", _nothing)
            pending = _Pending(index=i, scene=scene, tap=tap, until=until)
        if pending is not None:
            runtime.set_faults(prefix, [])
            finish(pending)
    finally:
        runtime.down(prefix, progress=say)
    return all_ok
