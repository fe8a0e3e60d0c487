"""The wire contracts every part of prober speaks: probe results, findings, matrices.

These types are the stable interface described in docs/contracts.md. Agents emit
``ProbeResult`` records, the collector and ``prober diagnose`` read them, diagnosis
emits ``Finding`` values and the collector serves ``Matrix`` documents. They are
msgspec Structs so that decoding *is* validation: a record that is missing a field
or has the wrong type never reaches the statistics.

Nothing here does I/O, reads the clock or imports anything outside the standard
library and msgspec.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final

import msgspec


class Outcome(enum.StrEnum):
    """How one probe ended. Diagnosis depends on the difference between them."""

    OK = "ok"
    TIMEOUT = "timeout"  # nothing came back in time: a drop somewhere (SYN, SYN-ACK, datagram)
    REFUSED = "refused"  # RST to our SYN, or ICMP port unreachable: host up, nobody listening
    RESET = "reset"  # connection established, then reset by the peer or a middlebox
    UNREACHABLE = "unreachable"  # ICMP host/net unreachable, or no route from here
    DNS_ERROR = "dns_error"  # resolver answered with an error (SERVFAIL, NXDOMAIN, ...)
    BAD_RESPONSE = "bad_response"  # something answered, but not with a valid echo/DNS reply


#: Column order of outcome counts in every columnar array (store, pair tables).
OUTCOMES: Final[tuple[Outcome, ...]] = tuple(Outcome)
OUTCOME_INDEX: Final[dict[Outcome, int]] = {o: i for i, o in enumerate(OUTCOMES)}


class SrcKind(enum.StrEnum):
    """The network an agent lives on: a pod network namespace, or the node's own."""

    POD = "pod"
    HOST = "host"


class TargetKind(enum.StrEnum):
    POD = "pod"
    HOST = "host"
    SERVICE = "service"
    SERVICE_LOCAL = "service-local"  # internalTrafficPolicy: Local, always the same node
    NODEPORT = "nodeport"
    NLB = "nlb"
    EXTERNAL = "external"
    DNS = "dns"


#: Targets whose serving node is known before the probe is sent.
PEER_KINDS: Final[frozenset[TargetKind]] = frozenset({TargetKind.POD, TargetKind.HOST})
#: Targets served by whichever node a load balancer picks; dst_node comes from the echo.
BALANCED_KINDS: Final[frozenset[TargetKind]] = frozenset(
    {TargetKind.SERVICE, TargetKind.SERVICE_LOCAL, TargetKind.NODEPORT, TargetKind.NLB}
)
#: Targets outside the mesh: no node serves them, the matrix column is the target name.
OUTSIDE_KINDS: Final[frozenset[TargetKind]] = frozenset({TargetKind.EXTERNAL, TargetKind.DNS})


class Proto(enum.StrEnum):
    TCP = "tcp"  # TCP connect only (external targets without an echo)
    HTTP = "http"  # HTTP GET of an echo: identifies the serving node
    UDP = "udp"  # one datagram to a UDP echo
    DNS = "dns"  # one A query over UDP


def path_of(src_kind: SrcKind | str, target_kind: TargetKind | str) -> str:
    """``pod`` + ``nlb`` → ``pod-to-nlb``: the name every metric, matrix and rule uses."""
    return f"{SrcKind(src_kind).value}-to-{TargetKind(target_kind).value}"


#: Every valid path, in a fixed order (the index used by columnar stores).
PATHS: Final[tuple[str, ...]] = tuple(path_of(s, t) for s in SrcKind for t in TargetKind)
PATH_INDEX: Final[dict[str, int]] = {p: i for i, p in enumerate(PATHS)}
#: path -> (source kind, target kind). A lookup, not parsing: every decoded record
#: validates its path, and enum construction costs more than the rest of decoding.
_PATH_PARTS: Final[dict[str, tuple[SrcKind, TargetKind]]] = {
    path_of(s, t): (s, t) for s in SrcKind for t in TargetKind
}


def split_path(path: str) -> tuple[SrcKind, TargetKind]:
    """Inverse of :func:`path_of`; raises ``ValueError`` for an unknown path."""
    parts = _PATH_PARTS.get(path)
    if parts is None:
        raise ValueError(f"unknown path {path!r}; expected one of {', '.join(PATHS)}")
    return parts


#: Upper bounds (seconds) of the latency histogram, shared by the agent's Prometheus
#: histogram and every pair table. The 0.9/1.1 and 2.9/3.1 pairs isolate the first
#: and second TCP SYN retransmit (1 s, then 2 s more): a success that needed a
#: retransmit is a lost packet, not a slow server.
LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    0.9, 1.1, 2.0, 2.9, 3.1, 5.0, 7.5, 10.0,
)  # fmt: skip


#: The longest node name (a Kubernetes node name is a DNS subdomain: 253 characters).
MAX_NAME_CHARS: Final = 253
#: The longest ``target`` (``{kind}/{name}`` or ``{kind}/{name}/{detail}``).
MAX_TARGET_CHARS: Final = 512
#: The longest latency a probe can report: far beyond any probe timeout.
MAX_LATENCY_S: Final = 3600.0

#: A node name, 1 to 253 characters. Which characters: the inventory's
#: (:class:`prober.inventory.Node`); the collector admits only inventory nodes.
NodeName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]
#: A target, ``{kind}/{name}[/{detail}]``; the collector admits only the inventory's.
TargetName = Annotated[str, msgspec.Meta(min_length=3, max_length=MAX_TARGET_CHARS)]
#: An address: an IPv4 or IPv6 address or a DNS name (an external target's).
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Latency = Annotated[float, msgspec.Meta(ge=0, le=MAX_LATENCY_S)]
#: Unix time in seconds: finite and not negative.
Timestamp = Annotated[float, msgspec.Meta(ge=0, le=1e11)]


class ProbeResult(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One probe, as agents send it and as JSONL files store it (docs/contracts.md § Probe result).

    ``dst_node`` is the node that served the probe: known in advance for pod/host
    targets, taken from the echo's answer for Service/NodePort/NLB targets, ``None``
    when the probe failed before anyone answered.
    """

    # gc=False: scalars only, never part of a reference cycle; untracked by the cyclic
    # collector, one is created per probe (agent) and held by the million (collector).

    ts: Timestamp
    path: str
    src_node: NodeName
    src_kind: SrcKind
    target: TargetName
    outcome: Outcome
    proto: Proto
    src_ip: Address | None = None
    target_ip: Address | None = None
    target_port: Port | None = None
    dst_node: NodeName | None = None
    dst_kind: SrcKind | None = None
    latency_s: Latency | None = None
    seen_src_ip: Address | None = None
    src_port: Port | None = None

    def __post_init__(self) -> None:
        src, _ = split_path(self.path)
        if src is not self.src_kind:
            raise ValueError(f"path {self.path!r} does not start with src_kind {self.src_kind.value!r}")
        if self.outcome is Outcome.OK and self.latency_s is None:
            raise ValueError("latency_s is required when outcome is 'ok'")
        if self.latency_s is not None and not 0 <= self.latency_s <= MAX_LATENCY_S:
            raise ValueError(f"latency_s must be from 0 to {MAX_LATENCY_S:g}, got {self.latency_s}")
        if not self.src_node:
            raise ValueError("src_node must not be empty")

    @property
    def target_kind(self) -> TargetKind:
        return split_path(self.path)[1]


class FindingKind(enum.StrEnum):
    """The failure modes diagnosis names, in the order findings are listed.

    Each has exactly one :class:`~prober.diagnose.mode.FailureMode` in
    :mod:`prober.diagnose.catalogue`: its rule, its fix and its alert.
    """

    ZONE_PARTITION = "zone-partition"
    ZONE_DEGRADED = "zone-degraded"
    NLB_HAIRPIN = "nlb-hairpin"
    BRIDGE_NETFILTER = "bridge-netfilter"
    SNAT_ASYMMETRIC = "snat-asymmetric"
    NLB_5TUPLE_COLLISION = "nlb-5tuple-collision"
    NODE_UNREACHABLE = "node-unreachable"
    NODE_ISOLATED = "node-isolated"
    POD_NETWORK_ISOLATED = "pod-network-isolated"
    PAIR_BLOCKED = "pair-blocked"
    PACKET_LOSS = "packet-loss"
    DNS_TIMEOUTS = "dns-timeouts"
    UNEXPLAINED = "unexplained"


class Suspect(msgspec.Struct, frozen=True, kw_only=True):
    component: str  # e.g. "node-ingress/node-b", "nlb-zone/zone-a", "service/prober-echo"
    score: float  # share of the unexplained failures this component explains, 0..1


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """A named failure mode with where it is, how sure we are, why, and the fix.

    Each field and each kind: docs/contracts.md § Finding.
    """

    kind: FindingKind  # encoded as its string value
    severity: str  # "critical" | "warning" | "info"
    nodes: list[str]
    pairs: list[tuple[str, str]]
    paths: list[str]
    confidence: float
    evidence: str
    remediation: str
    #: Ranked suspect components, set by the localizer for ``kind == FindingKind.UNEXPLAINED``.
    suspects: list[Suspect] = msgspec.field(default_factory=list)
    #: The availability zones the finding is between (``zone-partition``: the two zones); empty otherwise.
    zones: list[str] = msgspec.field(default_factory=list)
    #: When it was first shown in its current run of passes (Unix seconds): set by the
    #: collector's confirmation and its replay (``prober diagnose``, sweeps); None otherwise.
    since: float | None = None


class Cell(msgspec.Struct, frozen=True, kw_only=True):
    """One (source node, destination) cell of a path's matrix over a window.

    ``dst`` is the serving node for in-mesh targets, the target name for external and
    DNS targets, and ``None`` for failures that no node answered (Service/NLB probes
    that timed out: the balancer's choice is unknown).
    """

    src: str
    dst: str | None
    sent: int
    ok: int
    outcomes: dict[str, int]  # failed outcomes only, e.g. {"timeout": 3}
    ratio: float | None  # ok / sent, None when sent == 0
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None


class PathMatrix(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    sources: list[str]  # row labels: source nodes (the source kind is the path's)
    targets: list[str]  # column labels; cells with dst None are listed apart
    cells: list[Cell]
    sent: int
    ok: int
    #: Sources and targets with probes in the window that this view leaves out.
    hidden_sources: int = 0
    hidden_targets: int = 0


class Matrix(msgspec.Struct, frozen=True, kw_only=True):
    window_s: float
    generated_at: float
    nodes: list[str]
    paths: list[PathMatrix]
    #: "full" (every node), "zones" (rows and columns are zones), "failing" (only the
    #: rows and columns with failures) or "node" (one node's row and column).
    view: str = "full"


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """What ``--json`` prints for sweep, diagnose and lab run (docs/contracts.md § Command line)."""

    matrix: Matrix
    findings: list[Finding]
