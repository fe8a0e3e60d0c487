"""What the collector tells an agent to probe: the pinglist (the Pingmesh pattern).

The collector computes one :class:`Pinglist` per agent from the inventory with the
pure code in :mod:`prober.schedule`; the agent fetches it over HTTP, keeps the last
one while the collector is away, and plans each round from it, again with pure code.
These Structs are the wire format between the two, described field by field in
docs/contracts.md § Pinglist.
"""

from __future__ import annotations

import msgspec

from prober.model import Proto, SrcKind, TargetKind


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
    version: str  # changes whenever anything below changes (served as the ETag)
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
