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

import hashlib
import math
from collections.abc import Iterator
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
    #: The large-payload (MTU) probe's answer size in bytes; 0: no large probes.
    large_probe_bytes: int = 0
    #: Focused probes: each entry is one more probe every round, on top of the schedule
    #: (a target may be listed more than once). Only while diagnosis has a question the
    #: schedule's own sampling is too slow to answer (:class:`Question`); usually empty.
    focus: list[ProbeTarget] = []
    #: How often the agent posts its results (:class:`Mesh`).
    report_interval_s: float = 2.0


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


#: The response header of ``POST /api/v1/results`` (200) that names, for each agent whose
#: results the batch held, the version of its pinglist now and the sweep that wants its
#: results, if any (:func:`encode_announcement`): an agent fetches its pinglist when
#: either is news to it, instead of asking every round (docs/contracts.md § Pinglist).
PINGLIST_HEADER: Final = "Prober-Pinglist"
#: The most bytes of agents' entries one announcement carries; past it, the agents left
#: out learn of a change at their next poll.
ANNOUNCEMENT_MAX_BYTES: Final = 4096


class Announced(msgspec.Struct, frozen=True):
    """What a results answer says of one agent's pinglist."""

    version: str  # the joined pinglist version, ``{agent pinglist version}.{mesh version}``
    sweep: str | None = None  # the id of the sweep that wants its results


def encode_announcement(entries: dict[str, Announced]) -> str:
    """``name="version"`` (with ``;sweep="id"`` while a sweep wants its results), comma
    separated, at most :data:`ANNOUNCEMENT_MAX_BYTES` of them, in name order."""
    parts: list[str] = []
    size = 0
    for name in sorted(entries):
        a = entries[name]
        part = f'{name}="{a.version}"' + (f';sweep="{a.sweep}"' if a.sweep is not None else "")
        size += len(part) + 2
        if size > ANNOUNCEMENT_MAX_BYTES:
            break
        parts.append(part)
    return ", ".join(parts)


def decode_announcement(raw: str) -> dict[str, Announced]:
    """The entries of a :data:`PINGLIST_HEADER`; a malformed entry is left out."""
    out: dict[str, Announced] = {}
    for item in raw.split(","):
        name, eq, rest = item.strip().partition("=")
        if not eq or not name:
            continue
        fields = rest.split(";")
        version = fields[0].strip().strip('"')
        sweep = None
        for f in fields[1:]:
            key, eq2, value = f.strip().partition("=")
            if eq2 and key == "sweep":
                sweep = value.strip().strip('"') or None
        if version:
            out[name] = Announced(version=version, sweep=sweep)
    return out


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
    #: The large-payload (MTU) probe's answer size in bytes; 0 (and an older collector): none.
    large_probe_bytes: int = 0
    #: How often each agent posts its results, in seconds (an older collector: 2). Every
    #: post costs the collector ~0.26 ms beyond its results, so a large mesh posts less
    #: often (:meth:`~prober.schedule.SchedulePolicy.report_interval`).
    report_interval_s: float = 2.0


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
        large_probe_bytes=mesh.large_probe_bytes,
        focus=list(head.focus),
        report_interval_s=mesh.report_interval_s,
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
        large_probe_bytes=pl.large_probe_bytes,
        report_interval_s=pl.report_interval_s,
    )
    return head, mesh


# -- mesh deltas ---------------------------------------------------------------------------

#: The instance manipulation (RFC 3229) an agent names in ``A-IM`` to accept a
#: :class:`MeshDelta` in place of the whole mesh; the answer is ``226 IM Used`` with
#: ``IM`` naming it and ``Delta-Base`` the version it applies to.
MESH_DELTA_IM: Final = "prober-mesh-delta"


class PlacedGroup(msgspec.Struct, frozen=True, kw_only=True):
    """A peer group of a :class:`MeshDelta`, with its place on the new ring."""

    #: The node the group follows on the new ring; None: it is the ring's first.
    after: str | None
    group: PeerGroup


class MeshDelta(msgspec.Struct, frozen=True, kw_only=True):
    """How to get the mesh ``mesh.version`` from the mesh ``base`` an agent holds: the new
    :class:`Mesh` but its ring (the schedule and the shared groups are small), and the
    ring's edits. The ring keeps the order of the nodes that stay (a hash ring only
    inserts and removes). docs/contracts.md § Pinglist."""

    base: str
    #: The new mesh, its ``ring`` empty: the edits below give it.
    mesh: Mesh
    #: Nodes of the base ring that are not on the new one.
    removed: list[str] = []
    #: Groups new or changed since the base, in new-ring order.
    groups: list[PlacedGroup] = []


#: Where the ring's groups go in the JSON of a :class:`Mesh`.
_RING_SLOT: Final = b'"ring":[]'


def _mesh_parts(mesh: Mesh, version: str) -> tuple[bytes, Iterator[bytes], bytes]:
    """The JSON of ``mesh`` (with ``version``) in three: up to the ring's ``[``, each
    peer group's, and from the ring's ``]`` on. Never the whole at once."""
    frame = msgspec.json.encode(msgspec.structs.replace(mesh, version=version, ring=[]))
    at = frame.rindex(_RING_SLOT) + len(_RING_SLOT) - 1  # just before the ring's "]"
    encoder = msgspec.json.Encoder()
    return frame[:at], (encoder.encode(g) for g in mesh.ring), frame[at:]


def mesh_version(mesh: Mesh) -> str:
    """The version of ``mesh``: blake2b (8 bytes, hex) of its JSON with ``version`` empty.

    Hashed a peer group at a time, so a 5,000-node mesh is never encoded whole: the same
    digest as ``blake2b(msgspec.json.encode(replace(mesh, version="")))``.
    """
    head, groups, tail = _mesh_parts(mesh, "")
    h = hashlib.blake2b(head, digest_size=8)
    for i, group in enumerate(groups):
        if i:
            h.update(b",")
        h.update(group)
    h.update(tail)
    return h.hexdigest()


def encode_mesh(mesh: Mesh) -> bytes:
    """``mesh`` as served: its JSON with one peer group a line.

    The first line ends with the ring's ``[``, each peer group is one line (its ``,``
    at the end), and the last line starts with the ring's ``]``: still one JSON value
    that any JSON parser reads, and one an agent decodes line by line as it arrives
    (:class:`prober.agent.compact.MeshLines`), never holding the whole document.
    """
    head, groups, tail = _mesh_parts(mesh, mesh.version)
    return b"\n".join([head, b",\n".join(groups), tail]) if mesh.ring else head + b"\n" + tail


def group_digests(ring: list[PeerGroup]) -> dict[str, bytes]:
    """Each node's peer group on ``ring`` as a digest of its JSON (what a delta compares)."""
    encoder = msgspec.json.Encoder()
    return {g.node: hashlib.blake2b(encoder.encode(g), digest_size=16).digest() for g in ring}


def mesh_delta(
    base_version: str, base: dict[str, bytes], mesh: Mesh, now: dict[str, bytes]
) -> MeshDelta | None:
    """The delta from the mesh ``base_version`` (its ring as :func:`group_digests`, in ring
    order) to ``mesh`` (``now``: its own digests); None when the nodes that stay do not keep
    their order, which a hash ring never does (the agent then fetches the whole mesh)."""
    kept_before = [node for node in base if node in now]
    kept_now = [g.node for g in mesh.ring if g.node in base]
    if kept_before != kept_now:
        return None
    placed: list[PlacedGroup] = []
    after: str | None = None
    for g in mesh.ring:
        if base.get(g.node) != now[g.node]:
            placed.append(PlacedGroup(after=after, group=g))
        after = g.node
    return MeshDelta(
        base=base_version,
        mesh=msgspec.structs.replace(mesh, ring=[]),
        removed=[node for node in base if node not in now],
        groups=placed,
    )


class DeltaMismatchError(ValueError):
    """A :class:`MeshDelta` that does not apply to the mesh held, or does not give its version."""


def apply_delta(mesh: Mesh, delta: MeshDelta) -> Mesh:
    """The mesh ``delta.mesh.version`` from ``mesh`` (version ``delta.base``), sharing the groups
    that did not change; checked against ``delta.mesh.version`` (:func:`mesh_version`).

    Raises :class:`DeltaMismatchError` when the delta is not for this mesh or its result
    is not the version it promises (the agent then fetches the whole mesh).
    """
    if mesh.version != delta.base:
        raise DeltaMismatchError(f"a delta from mesh {delta.base!r}, but the mesh held is {mesh.version!r}")
    gone = set(delta.removed) | {p.group.node for p in delta.groups}
    # On the new ring a node has one successor: the group placed after it, if any.
    following: dict[str | None, PeerGroup] = {}
    for placed in delta.groups:
        if placed.after in following:
            raise DeltaMismatchError(f"a delta places two groups after {placed.after!r}")
        following[placed.after] = placed.group
    ring: list[PeerGroup] = []

    def emit_after(node: str | None) -> None:
        while (group := following.pop(node, None)) is not None:
            ring.append(group)
            node = group.node

    emit_after(None)
    for group in mesh.ring:
        if group.node not in gone:
            ring.append(group)
            emit_after(group.node)
    if following:
        raise DeltaMismatchError(
            f"a delta places groups after nodes not on the ring: {sorted(map(str, following))[:3]}"
        )
    out = msgspec.structs.replace(delta.mesh, ring=ring)
    if mesh_version(out) != out.version:
        raise DeltaMismatchError(f"the delta to mesh {out.version!r} does not give that mesh")
    return out
