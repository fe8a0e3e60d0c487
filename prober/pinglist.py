"""What the collector tells an agent to probe: the pinglist (the Pingmesh pattern).

The collector computes one :class:`Pinglist` per agent from the inventory with the
pure code in :mod:`prober.schedule`; the agent fetches it over HTTP, keeps the last
one while the collector is away, and plans each round from it, again with pure code.
These Structs are the wire format between the two, described field by field in
docs/contracts.md § Pinglist: each agent fetches its own small part
(:class:`AgentPinglist`) and the part every agent shares (:class:`Mesh`: the
schedule and the peer ring), so that a node joining changes one shared document,
encoded once, and not every agent's pinglist. A sweep reaches an agent the same
way: as a :class:`SweepOrder` in a header of its pinglist answer (agents serve no
endpoint that starts anything). Focused probes reach an agent in its own part too
(``focus``): the collector's questions about a suspect pair of nodes or a node's view
of an outside target (:class:`Question`), for a few rounds, within the agent's budget.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from prober.model import Proto, SrcKind, TargetKind

#: On every answer of ``GET /api/v1/pinglist/{agent}`` (200 and 304): the mesh's ETag
#: now, so an agent fetches the mesh only when it changed (one request per interval).
MESH_VERSION_HEADER: Final = "X-Prober-Mesh-Version"


class ProbeTarget(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One thing to probe, and what its result record must say about it."""

    # gc=False (here and on PeerGroup): no reference cycles through them, and a 5,000-node
    # mesh holds ~25,000: the cyclic collector need not walk them, nor 16 bytes each.

    #: The probe result's ``target`` (docs/contracts.md § Probe result): "pod/node-b",
    #: "host/node-b", "service/prober-echo", "service-local/prober-echo-local",
    #: "nodeport/prober-echo", "nlb/prober-echo", "external/example", "dns/kube-dns".
    target: str
    kind: TargetKind
    ip: str
    port: int
    proto: Proto
    dst_node: str | None = None  # known in advance for pod and host targets
    dst_kind: SrcKind | None = None  # likewise
    zone: str | None = None  # the zone of an NLB address
    query: str | None = None  # the name to resolve, for DNS targets

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.target, self.ip, self.port, self.proto.value)


class PeerGroup(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """All probe targets on one peer node (its pod and host echoes, HTTP and UDP, and
    each NodePort at the node's address)."""

    node: str
    targets: list[ProbeTarget]


class SharedGroup(msgspec.Struct, frozen=True, kw_only=True):
    """Targets every agent probes (Services, NLB zone addresses, DNS, external).

    Fan-in budget: this agent probes the group only in rounds where
    ``(round + phase) % every == 0``, so a shared target receives about
    ``agents / every`` probes per interval however large the cluster is.
    With ``same_source_port`` the probes go out together from one local port
    (the NLB cross-zone 5-tuple collision check).
    """

    name: str
    targets: list[ProbeTarget]
    every: int = 1
    phase: int = 0
    same_source_port: bool = False


class Pinglist(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one agent probes: its :class:`AgentPinglist` joined with the :class:`Mesh`
    (:func:`assemble`). The agent plans its rounds from this; it is not sent whole."""

    version: str  # changes whenever anything below changes
    agent: str
    node: str
    kind: SrcKind
    interval_s: float
    timeout_s: float
    budget_per_s: float  # the most probes per second this agent may send
    concurrency: int  # the most probes in flight at once
    #: Peer nodes in hash-ring order starting after this agent's node. Each round
    #: probes ``peers_per_round`` consecutive groups from a rotating offset, so every
    #: node receives the same number of probes and every pair is covered within
    #: ``ceil(len(peers) / peers_per_round)`` rounds.
    peers: list[PeerGroup]
    peers_per_round: int
    local: list[ProbeTarget]  # same-node targets: probed every round
    shared: list[SharedGroup]
    #: Probes per round of each same-node target and each shared target that is due.
    #: Above 1 only where the fan-in and the agent's budget leave room (small clusters),
    #: so that diagnosis has its samples within two rounds; peers stay at one each.
    repeat: int = 1
    #: Focused probes: each entry is one more probe every round, on top of the schedule
    #: (a target may be listed more than once). Only while diagnosis has a question the
    #: schedule's own sampling is too slow to answer (:class:`Question`); usually empty.
    focus: list[ProbeTarget] = []


class Question(msgspec.Struct, frozen=True, kw_only=True):
    """A question diagnosis cannot settle yet, for the collector to add focused probes for.

    ``pair``: are the nodes ``node`` and ``peer`` blocked from each other? Every agent of
    each probes the other's peer group. ``target``: does ``node`` (one of its networks)
    fail to reach the outside target ``target`` ("external/example", "dns/kube-dns")?
    Every agent of the node probes it. ``failed`` of ``sent`` is the evidence so far
    (the last window); ``asked`` counts the passes the question has been asked, so an
    unanswerable one is dropped after a bound of rounds; ``named``: a finding names it
    already (the probes keep the finding's evidence current while the fault lasts).
    """

    kind: str  # "pair" | "target"
    node: str
    peer: str | None = None
    target: str | None = None
    failed: int = 0
    sent: int = 0
    asked: int = 1
    named: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        """The question, whoever asks it: a pair's nodes in name order."""
        if self.kind == "pair" and self.peer is not None:
            a, b = sorted((self.node, self.peer))
            return ("pair", a, b)
        return (self.kind, self.node, self.target or "")


#: Agents stop launching a sweep's probes this long (plus the probe timeout) before
#: its ``until``, so that the last results are delivered in time.
SWEEP_DELIVERY_MARGIN_S = 2.0

#: The response header of ``GET /api/v1/pinglist/{agent}`` (200 and 304 alike) that
#: carries a :class:`SweepOrder` while a sweep wants this agent's results.
SWEEP_HEADER = "Prober-Sweep"


class SweepOrder(msgspec.Struct, frozen=True, kw_only=True):
    """A sweep, as an agent learns of it: in its pinglist answer, never by a request to it.

    The agent probes its pinglist's same-node targets once, the peer groups of
    ``rounds`` rounds of its schedule starting at round ``round`` (the same ring slice
    on every agent, so every node receives the same number of probes), and the shared
    groups due in round ``round``; it spreads the launches over ``spread_s`` within its
    probe budget and delivers the results by ``until`` (Unix time) to
    ``POST /api/v1/sweeps/{id}/results/{agent}``. docs/contracts.md § Sweep.
    """

    id: str
    round: int
    rounds: int
    timeout_s: float
    spread_s: float
    until: float


_order_decoder = msgspec.json.Decoder(SweepOrder)


def encode_sweep_order(order: SweepOrder) -> str:
    """The :data:`SWEEP_HEADER` value: the order as compact JSON (ASCII only)."""
    return msgspec.json.encode(order).decode("ascii")


def decode_sweep_order(value: str) -> SweepOrder | None:
    """The order in a :data:`SWEEP_HEADER` value, or ``None`` if it is not a usable one."""
    try:
        order = _order_decoder.decode(value.encode("utf-8", "replace"))
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    ok = (
        0 < len(order.id) <= 64
        and order.rounds >= 1
        and 0 < order.timeout_s <= 60
        and 0 <= order.spread_s <= 3600
        and math.isfinite(order.until)
    )
    return order if ok else None


class AgentPinglist(msgspec.Struct, frozen=True, kw_only=True):
    """What is one agent's own: ``GET /api/v1/pinglist/{agent}``.

    Small (its same-node targets and its rank), and it changes only when something of
    this agent's changes: a node joining or leaving elsewhere changes the
    :class:`Mesh`, not this.
    """

    version: str  # a hash of everything below (served as the ETag)
    agent: str
    node: str
    kind: SrcKind
    #: This agent's place on the fan-in stride: its phase in each shared group is
    #: ``(rank + group.phase) mod group.every``.
    rank: int
    local: list[ProbeTarget]
    #: Focused probes (:attr:`Pinglist.focus`); absent from older collectors' answers.
    focus: list[ProbeTarget] = []


class Mesh(msgspec.Struct, frozen=True, kw_only=True):
    """What every agent shares: ``GET /api/v1/mesh``, encoded once for all agents.

    The schedule's parameters (the same for every agent) and the peer ring: every node
    with something to probe, in hash-ring order. An agent's peers are the ring
    starting after its own node.
    """

    version: str  # a hash of everything below (served as the ETag)
    interval_s: float
    timeout_s: float
    budget_per_s: float
    concurrency: int
    peers_per_round: int
    repeat: int
    #: The shared groups; here ``phase`` is the group's own offset, to which each agent
    #: adds its rank.
    shared: list[SharedGroup]
    ring: list[PeerGroup]


def peers_after(ring: list[PeerGroup], node: str) -> list[PeerGroup]:
    """The ring starting after ``node``, without it (the whole ring if it is not on it)."""
    for i, group in enumerate(ring):
        if group.node == node:
            return ring[i + 1 :] + ring[:i]
    return list(ring)


def assemble(head: AgentPinglist, mesh: Mesh, *, version: str | None = None) -> Pinglist:
    """The agent's :class:`Pinglist` from its own part and the shared one.

    ``version`` defaults to ``"{head.version}.{mesh.version}"``, which changes whenever
    either part does. The agent's budget is the mesh's plus its focused probes per
    interval: the collector gives focus only to agents whose budget has that room.
    """
    extra = len(head.focus) / mesh.interval_s if mesh.interval_s > 0 else 0.0
    return Pinglist(
        version=version if version is not None else f"{head.version}.{mesh.version}",
        agent=head.agent,
        node=head.node,
        kind=head.kind,
        interval_s=mesh.interval_s,
        timeout_s=mesh.timeout_s,
        budget_per_s=mesh.budget_per_s + extra,
        concurrency=mesh.concurrency,
        peers=peers_after(mesh.ring, head.node),
        peers_per_round=mesh.peers_per_round,
        local=list(head.local),
        shared=[
            msgspec.structs.replace(g, phase=(head.rank + g.phase) % max(1, g.every)) for g in mesh.shared
        ],
        repeat=mesh.repeat,
        focus=list(head.focus),
    )


def split(pl: Pinglist) -> tuple[AgentPinglist, Mesh]:
    """A pinglist as the two documents that give it back through :func:`assemble` (given
    its version): both carry its version, the mesh's ring is its peers, the rank is 0."""
    head = AgentPinglist(
        version=pl.version, agent=pl.agent, node=pl.node, kind=pl.kind, rank=0, local=pl.local, focus=pl.focus
    )
    extra = len(pl.focus) / pl.interval_s if pl.interval_s > 0 else 0.0
    mesh = Mesh(
        version=pl.version,
        interval_s=pl.interval_s,
        timeout_s=pl.timeout_s,
        budget_per_s=pl.budget_per_s - extra,
        concurrency=pl.concurrency,
        peers_per_round=pl.peers_per_round,
        repeat=pl.repeat,
        shared=pl.shared,
        ring=pl.peers,
    )
    return head, mesh
