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
endpoint that starts anything).
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from prober.model import Proto, SrcKind, TargetKind

#: On every answer of ``GET /api/v1/pinglist/{agent}`` (200 and 304): the mesh's ETag
#: now, so an agent fetches the mesh only when it changed (one request per interval).
MESH_VERSION_HEADER: Final = "X-Prober-Mesh-Version"


class ProbeTarget(msgspec.Struct, frozen=True, kw_only=True):
    """One thing to probe, and what its result record must say about it."""

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


class PeerGroup(msgspec.Struct, frozen=True, kw_only=True):
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
    #: The large-payload (MTU) probe's answer size in bytes; 0: no large probes.
    large_probe_bytes: int = 0


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
    #: The large-payload (MTU) probe's answer size in bytes; 0 (and an older collector): none.
    large_probe_bytes: int = 0


def peers_after(ring: list[PeerGroup], node: str) -> list[PeerGroup]:
    """The ring starting after ``node``, without it (the whole ring if it is not on it)."""
    for i, group in enumerate(ring):
        if group.node == node:
            return ring[i + 1 :] + ring[:i]
    return list(ring)


def assemble(head: AgentPinglist, mesh: Mesh, *, version: str | None = None) -> Pinglist:
    """The agent's :class:`Pinglist` from its own part and the shared one.

    ``version`` defaults to ``"{head.version}.{mesh.version}"``, which changes whenever
    either part does.
    """
    return Pinglist(
        version=version if version is not None else f"{head.version}.{mesh.version}",
        agent=head.agent,
        node=head.node,
        kind=head.kind,
        interval_s=mesh.interval_s,
        timeout_s=mesh.timeout_s,
        budget_per_s=mesh.budget_per_s,
        concurrency=mesh.concurrency,
        peers=peers_after(mesh.ring, head.node),
        peers_per_round=mesh.peers_per_round,
        local=list(head.local),
        shared=[
            msgspec.structs.replace(g, phase=(head.rank + g.phase) % max(1, g.every)) for g in mesh.shared
        ],
        repeat=mesh.repeat,
        large_probe_bytes=mesh.large_probe_bytes,
    )


def split(pl: Pinglist) -> tuple[AgentPinglist, Mesh]:
    """A pinglist as the two documents that give it back through :func:`assemble` (given
    its version): both carry its version, the mesh's ring is its peers, the rank is 0."""
    head = AgentPinglist(
        version=pl.version, agent=pl.agent, node=pl.node, kind=pl.kind, rank=0, local=pl.local
    )
    mesh = Mesh(
        version=pl.version,
        interval_s=pl.interval_s,
        timeout_s=pl.timeout_s,
        budget_per_s=pl.budget_per_s,
        concurrency=pl.concurrency,
        peers_per_round=pl.peers_per_round,
        repeat=pl.repeat,
        shared=pl.shared,
        ring=pl.peers,
        large_probe_bytes=pl.large_probe_bytes,
    )
    return head, mesh
