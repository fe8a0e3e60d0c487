"""Synthetic probe results that follow prober's real schedule, at production shape and scale.

Diagnosis is tested on these records, so they must look like what a collector receives
from a production mesh. Three parts:

**Who probes what, and when, is prober's own code.** The cluster is an EKS-like
inventory (:mod:`tests.inventories`); the collector's pinglists come from
:class:`~prober.schedule.PinglistBuilder` with the production :class:`SchedulePolicy`
(10 s rounds, 5 s timeout, 20 probes/s per agent, 5,000/s cluster-wide but never fewer
than 3 peers a round, 20/s per shared target), and every agent plans every round with
:func:`~prober.schedule.plan_round` and its own ``random.Random``. A record's ``ts``
is the round's start plus the offset the agent's round loop starts it at (the planned
one, or that of the probe due within half a second before it,
:func:`~prober.schedule.launch_offsets`). So ``k``, the fan-in stride, ``repeat`` and
the same-source-port NLB groups (every zone address from one port) are the real ones
at every cluster size.

**What happens to a probe is a network model.** Faults act on packets and
connections the way the lab's kernel knobs do (``lab/prober_lab/faults.py``):

* ``node-unreachable`` drops new connections into the node across the fabric (from
  peers and from the NLB), ``node-isolated`` every packet in and out of it,
  ``pair-blocked`` every packet between two nodes (``one_way``: new connections from
  ``nodes[0]`` to ``nodes[1]`` only, a stateful rule); none touches traffic that stays
  on a node;
* ``pod-network-isolated`` drops every packet to and from the node's pod addresses
  across the fabric (the route to its pod CIDR gone): probes into its pods from other
  nodes (pod and host agents, Service picks of its echo pod) and its pods' probes to
  other nodes' pods (peers, Service picks elsewhere) time out. Its pods' traffic that
  the node masquerades to its own address is untouched: with ``variant="kubenet"``
  (the default) everything leaving the cluster CIDR (other nodes' addresses, their
  NodePorts, the NLB, DNS, the external target); with ``variant="vpc"`` (pod
  addresses are VPC addresses, SNAT only outside the VPC) only the external target.
  NodePort and NLB probes *into* the node work: they arrive at its own address and
  its echo pod is local, except a node's own NodePort, which kube-proxy balances
  over every echo pod for in-node callers (unmasqueraded for pod callers); the node's
  host network and same-node probes work;
* ``zone-partition`` drops every packet between two zones: a probe times out when
  its source and the node it enters are on the two sides, when an NLB probe's
  source and the NLB address's zone are, or the address's zone and the node it
  forwards to; DNS and the external target are regional and stay reachable;
* ``zone-degraded`` is packet-loss on every node of one zone (``zones=(z,)``, ``rate``
  per direction at each of its nodes' interfaces): a probe between two of its nodes
  passes two lossy links, one to or from another zone one;
* ``packet-loss`` drops each packet through the node with chance ``rate`` per
  direction: a TCP handshake is retried at 1 s and 3 s (the kernel's SYN backoff)
  within the 5 s timeout, data after 0.2 s, 0.6 s, ...; UDP gets no second chance;
* ``nlb-hairpin`` (client-IP preservation) times out NLB probes the NLB sends to the
  client's own node; ``nlb-5tuple-collision`` resets a probe of a same-source-port
  group that reaches the same target as one of its group that got there first (the
  order of arrival is random; ``variant="retransmit"``: it completes a SYN
  retransmit, 1 s, later);
* ``bridge-netfilter`` times out pod probes DNATed to a backend on the pod's own
  node (the Service, ``service-local``, the node's own NodePort);
  ``snat-asymmetric`` times out one network of a node to the external target
  (``variant`` ``pod``, ``host``), or (``nodeport``) its pod to other nodes' NodePorts;
  ``dns-timeouts`` times out DNS queries at ``rate``;
* for the localizer, faults no rule names: ``pod-agent-down`` (the node's pod agent
  sends nothing and its ports refuse; its readiness still passes, so it stays in the
  pinglists), ``service-down`` (the ClusterIP black-holed) and ``nlb-address-down``
  (one zone address black-holed).

Healthy paths fail at a background rate (``Cluster.noise``, default 0.05% timeouts as
on healthy production clusters, plus rare refused and reset), settable per path.
Latency: tens of microseconds on a node, sub-millisecond within a zone, about a
millisecond across zones; an HTTP probe is two round trips plus the echo's time.

Balancers: kube-proxy sends a Service probe to any node's echo pod (uniformly), a
node's own NodePort probed from the node to any echo too (in-node callers skip
``externalTrafficPolicy: Local``), another node's NodePort to that node's echo
(``Local``, the deployed policy). The NLB forwards a zone address's probe to any
registered node (cross-zone load balancing) or to one of that zone's nodes; its
health checks register a new node, and deregister a departing one, ``nlb_health_lag_s``
late (faults do not deregister a node). DNS and the external target are outside the
mesh: only the source node's own interface is on their path. With
``external_traffic_policy="Cluster"`` a NodePort or NLB probe takes two hops: the
node it entered forwards it to any echo, SNATed to its own address (diagnosis of it:
``tests/unit/test_diagnose_traffic_policy.py``).

**Lifecycle.** Faults have a start and an end inside the span. :class:`RollingRestart`
restarts an agent DaemonSet ``max_unavailable`` pods at a time (deploy/base: 10%);
each pod is down ``down_s``: it sends nothing, its echo answers one second after
SIGTERM, then refuses while its sandbox is torn down, then (a pod address released)
times out; a host agent's port refuses until its successor listens. The new pod has
a new name (and, on the pod network, a new address) and is probed only after the
collector's warm-up. :class:`DrainNode` taints a node for removal (it leaves the
pinglists; its own agents keep their last pinglist) and terminates it later;
:class:`AddNode` adds nodes. The collector's inventory follows the cluster with its
gating (warm-up, settle time), every change gives new pinglists from
``PinglistBuilder``, and each agent picks the new one up at its next fetch (once per
interval, at its own phase), so for a while agents probe with different pinglists,
as in production.

Speed: plans come from the real code, one ``plan_round`` per agent per round;
everything per probe after that is numpy (see ``bench/synth_speed.py``).

Pure: no traffic, no clock (times are the span's), no global randomness (every draw
comes from ``seed``): equal arguments give equal records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from prober.arrays import BoolArray, FloatArray, IntArray
from prober.diagnose import diagnose
from prober.diagnose.catalogue import BY_KIND
from prober.diagnose.policy import DiagnosisPolicy
from prober.diagnose.suspects import SuspectPolicy, suspects
from prober.inventory import Agent, Inventory, TrafficPolicy
from prober.lifecycle import AgentStop
from prober.model import Finding, FindingKind, Outcome, ProbeResult, Proto, SrcKind, TargetKind, path_of
from prober.pinglist import Pinglist, ProbeTarget, Question
from prober.report import evidence_from_records
from prober.schedule import (
    FocusRules,
    PinglistBuilder,
    PlannedProbe,
    SchedulePolicy,
    focus_catch_up,
    is_due,
    launch_offsets,
    plan_round,
    round_index,
    round_peer_indices,
    round_start,
    stagger_s,
)
from prober.stats import Evidence, Topology
from tests.inventories import EksCluster

#: Every failure mode a rule names: the catalogue's but the localizer's, in the order
#: findings are listed.
KINDS = tuple(k.value for k in FindingKind if k in BY_KIND and k != FindingKind.UNEXPLAINED)
#: Faults no rule names, for the localizer: a node's pod agent down (refuses, sends
#: nothing), the ClusterIP Service black-holed, one NLB zone address black-holed.
UNNAMED_KINDS = ("pod-agent-down", "service-down", "nlb-address-down")

#: The faults the network model below knows (a new failure mode needs its model here).
MODELLED = frozenset({
    "node-unreachable", "node-isolated", "pair-blocked", "packet-loss", "nlb-hairpin", "nlb-5tuple-collision",
    "bridge-netfilter", "snat-asymmetric", "dns-timeouts", "pod-network-isolated", "zone-partition",
    "mtu-blackhole", "zone-degraded", *UNNAMED_KINDS,
})  # fmt: skip

#: Where generated spans start by default: a round boundary (10 s rounds).
START_TS: Final = 1_763_856_000.0

SERVICE = "service/prober-echo"
SERVICE_LOCAL = "service-local/prober-echo-local"
NODEPORT = "nodeport/prober-echo"
NLB = "nlb/prober-echo"
EXTERNAL = "external/example"
DNS = "dns/kube-dns"

#: After SIGTERM the echo keeps answering this long (``/readyz`` fails first).
READINESS_GRACE_S: Final = 1.0
#: Then the pod's ports refuse (RST, ICMP port unreachable) until its sandbox is gone.
TEARDOWN_S: Final = 2.0
#: The kernel's TCP retransmission timeouts: SYN at 1 s, then doubling; data from 0.2 s.
SYN_RTO_S: Final = 1.0
DATA_RTO_S: Final = 0.2
EPHEMERAL_PORTS: Final = (32768, 60999)  # net.ipv4.ip_local_port_range


_TK: Final = {k: i for i, k in enumerate(TargetKind)}
_PROTO: Final = {p: i for i, p in enumerate(Proto)}
_PATHS: Final = [path_of(s, t) for s in SrcKind for t in TargetKind]  # index: src * 8 + target
_OUTCOMES: Final = tuple(Outcome)
_OC: Final = {o: i for i, o in enumerate(_OUTCOMES)}
_OK, _TIMEOUT, _REFUSED, _RESET, _STALLED = (
    _OC[o] for o in (Outcome.OK, Outcome.TIMEOUT, Outcome.REFUSED, Outcome.RESET, Outcome.STALLED)
)
_INF: Final = math.inf


# ---------------------------------------------------------------------------- faults


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """A fault, active from ``start_s`` to ``end_s`` after the span's start (default: all of it)."""

    kind: str
    nodes: tuple[str, ...] = ()
    rate: float = 0.0  # packet-loss, zone-degraded: per direction; dns-timeouts: per query
    #: snat-asymmetric: "pod" (default), "host", "nodeport"; collision: "retransmit";
    #: pod-network-isolated: "kubenet" (default), "vpc"; mtu-blackhole: "" (the nodes' links),
    #: "pair" (only between its two nodes).
    variant: str = ""
    one_way: bool = False  # pair-blocked: only nodes[0] -> nodes[1]
    zone: int = 0  # nlb-address-down: which zone address
    zones: tuple[int, ...] = ()  # zone-partition: the two zones (indices); zone-degraded: the one
    start_s: float = 0.0
    end_s: float = _INF

    def __post_init__(self) -> None:
        if self.kind not in KINDS + UNNAMED_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.kind not in MODELLED:
            raise ValueError(
                f"{self.kind!r} is in the catalogue but tests/synth.py has no network model for it"
            )
        if self.kind == "mtu-blackhole" and self.variant == "pair" and len(self.nodes) != 2:
            raise ValueError("mtu-blackhole between a pair needs exactly two nodes")
        if self.kind == "pair-blocked" and len(self.nodes) != 2:
            raise ValueError("pair-blocked needs exactly two nodes")
        if self.kind == "zone-partition" and (len(set(self.zones)) != 2 or self.nodes):
            raise ValueError("zone-partition needs two zones and no nodes")
        if self.kind == "zone-degraded" and (len(self.zones) != 1 or self.nodes or not 0 < self.rate < 1):
            raise ValueError("zone-degraded needs one zone, no nodes and a rate in (0, 1)")


# ------------------------------------------------------------------- lifecycle events


@dataclass(frozen=True, slots=True, kw_only=True)
class RollingRestart:
    """A rolling restart of one agent DaemonSet, beginning ``start_s`` into the span.

    ``max_unavailable`` pods at a time (a share of the DaemonSet, rounded up, as the
    DaemonSet controller does; deploy/base sets 10%), in an order of the seed's
    choosing; each pod is down ``down_s`` (SIGTERM to its successor Ready), and the
    next batch begins when the last one is Ready.
    """

    kind: SrcKind = SrcKind.POD
    start_s: float = 0.0
    down_s: float = 20.0
    max_unavailable: float = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainNode:
    """A node marked for removal ``at_s`` into the span (the autoscaler's taint), terminated
    ``terminate_after_s`` later."""

    node: str
    at_s: float
    terminate_after_s: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AddNode:
    """``count`` new nodes whose agent and echo pods are Ready ``at_s`` into the span.

    They take the next node indices of the cluster (see :meth:`Cluster.added_node`).
    """

    at_s: float
    count: int = 1


Event = RollingRestart | DrainNode | AddNode


# --------------------------------------------------------------------------- cluster


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """An EKS-like cluster, prober's schedule over it, and how its network behaves when healthy."""

    n_nodes: int
    zones: int = 3
    policy: SchedulePolicy = field(default_factory=SchedulePolicy)
    #: Background failure rates of a healthy path, per probe.
    noise: float = 0.0005  # timeouts
    refused_noise: float = 0.00002
    reset_noise: float = 0.00002  # TCP only
    #: Per-path timeout rates that replace ``noise``, e.g. (("pod-to-dns", 0.002),).
    path_noise: tuple[tuple[str, float], ...] = ()
    #: NLB cross-zone load balancing (else each zone address forwards to its zone's nodes).
    cross_zone: bool = True
    #: The echo Service's externalTrafficPolicy ("Local", as deployed, or "Cluster").
    external_traffic_policy: str = "Local"
    #: Whether the inventory says so (else diagnosis infers it from what the echo saw).
    policy_known: bool = True
    #: Names and addresses (tests.inventories.EksCluster).
    seed: int = 0
    region: str = "us-east-1"
    #: The collector: warm-up before a new agent is probed, settle time before publishing.
    warmup_s: float = 30.0
    settle_s: float = 1.0
    #: The NLB's health checks register a new node, and deregister a departing one, this late.
    nlb_health_lag_s: float = 20.0

    def __post_init__(self) -> None:
        if self.external_traffic_policy not in ("Local", "Cluster"):
            raise ValueError(
                f"external_traffic_policy must be Local or Cluster, got {self.external_traffic_policy!r}"
            )
        for name in ("noise", "refused_noise", "reset_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a share in [0, 1]")

    @property
    def shape(self) -> EksCluster:
        return _shape(self.n_nodes, self.zones, self.seed, self.region)

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes' names, sorted (as the Kubernetes source lists them)."""
        return tuple(sorted(self.shape.node_names))

    @property
    def interval_s(self) -> float:
        return self.policy.interval_s

    @property
    def timeout_s(self) -> float:
        return self.policy.timeout_s

    def inventory(self) -> Inventory:
        return self.shape.inventory()

    @property
    def builder(self) -> PinglistBuilder:
        """The pinglists of the whole cluster, all agents ready."""
        return _builder(self.shape, self.policy, _initial_key(self.shape))

    @property
    def k(self) -> int:
        """Peer nodes each agent probes per round."""
        return self.builder.peers_per_round

    @property
    def every(self) -> int:
        """Fan-in stride: agents probe each shared target every this many rounds."""
        return self.builder.shared_every

    @property
    def repeat(self) -> int:
        """Probes per round of each same-node target and each due shared target."""
        return self.builder.repeat

    @property
    def n_zones(self) -> int:
        return self.zones

    def index(self, node: str) -> int:
        """The node's index in the cluster's shape (zone ``index % zones``)."""
        return _node_index(self.shape)[node]

    def zone(self, node: str) -> str:
        return self.shape.zone(self.shape.zone_index(self.index(node)))

    def node_ip(self, node: str) -> str:
        return self.shape.node_address(self.index(node))

    def nlb_ip(self, zone: int) -> str:
        return self.shape.nlb_address(zone)

    def last_reached(self, node: str, *, start_ts: float = START_TS) -> str:
        """The peer the rotation reaches last from ``node``, counting from ``start_ts``'s round.

        Round ``r`` probes ``k`` consecutive peers from position ``(r k) mod (N - 1)`` of the
        node's peer list (the hash ring after it), so from round ``r0`` on the position
        before ``(r0 k) mod (N - 1)`` comes last: ``ceil((N - 1) / k)`` rounds in.
        """
        pl = self.builder.for_agent(self.shape.agent_name(self.index(node), SrcKind.POD))
        if pl is None or not pl.peers:
            raise ValueError(f"{node} has no peers")
        first = (round_index(start_ts, self.interval_s) * pl.peers_per_round) % len(pl.peers)
        return pl.peers[(first - 1) % len(pl.peers)].node

    def reached(self, node: str, rounds_in: int, *, start_ts: float = START_TS) -> str:
        """The first peer the rotation from ``node`` reaches ``rounds_in`` rounds after
        ``start_ts``'s round: a blocked pair whose first probes come then."""
        pl = self.builder.for_agent(self.shape.agent_name(self.index(node), SrcKind.POD))
        if pl is None or not pl.peers:
            raise ValueError(f"{node} has no peers")
        r = round_index(start_ts, self.interval_s) + rounds_in
        return pl.peers[round_peer_indices(r, pl.peers_per_round, len(pl.peers))[0]].node

    def probes_in_round(self, node: str, group: str, rounds_in: int, *, start_ts: float = START_TS) -> bool:
        """Whether ``node``'s pod agent probes the shared group named ``group`` (an outside
        target: "external/example") ``rounds_in`` rounds after ``start_ts``'s round: its
        fan-in phase comes round once every ``every`` rounds."""
        pl = self.builder.for_agent(self.shape.agent_name(self.index(node), SrcKind.POD))
        if pl is None:
            raise ValueError(f"{node} has no pod agent")
        r = round_index(start_ts, self.interval_s) + rounds_in
        return any(g.name == group and is_due(g, r) for g in pl.shared)

    def added_node(self, k: int = 0) -> str:
        """The name of the ``k``-th node an :class:`AddNode` adds."""
        return self.shape.node_name(self.n_nodes + k)

    def topology(self, nodes: Iterable[str] | None = None) -> Topology:
        names = self.nodes if nodes is None else nodes
        shape = self.shape
        nodes_ = list(names)
        policies: dict[str, TrafficPolicy] = (
            {shape.nlb_address(z): "Cluster" for z in range(shape.zones)}
            if self.external_traffic_policy == "Cluster"
            else {shape.nlb_address(z): "Local" for z in range(shape.zones)}
        )
        return Topology(
            zones={n: shape.zone(shape.zone_index(_index_of(shape, n))) for n in nodes_},
            nlb_policies=policies if self.policy_known else {},
            node_addresses={shape.node_address(_index_of(shape, n)): n for n in nodes_},
        )


@functools.cache
def _shape(n_nodes: int, zones: int, seed: int, region: str) -> EksCluster:
    return EksCluster(n_nodes=n_nodes, zones=zones, seed=seed, region=region)


@functools.cache
def _node_index(shape: EksCluster) -> dict[str, int]:
    return {shape.node_name(i): i for i in range(shape.n_nodes)}


def _index_of(shape: EksCluster, name: str) -> int:
    i = _node_index(shape).get(name)
    if i is not None:
        return i
    for j in range(shape.n_nodes, shape.n_nodes + 4096):  # added nodes
        if shape.node_name(j) == name:
            return j
    raise KeyError(name)


# An inventory state: (node index, ready) per node, (node, kind, generation, ready) per agent.
_Key = tuple[tuple[tuple[int, bool], ...], tuple[tuple[int, str, int, bool], ...]]


def _initial_key(shape: EksCluster) -> _Key:
    nodes = tuple((i, True) for i in range(shape.n_nodes))
    agents = tuple((i, k.value, 0, True) for i in range(shape.n_nodes) for k in shape.kinds)
    return nodes, agents


def _inventory_of(shape: EksCluster, key: _Key) -> Inventory:
    nodes = [shape.node(i, ready=ready) for i, ready in key[0]]
    agents = [shape.agent(i, SrcKind(k), generation=g, ready=ready) for i, k, g, ready in key[1]]
    base = shape.inventory(nodes=())
    return msgspec.structs.replace(
        base,
        nodes=sorted(nodes, key=lambda n: n.name),
        agents=sorted(agents, key=lambda a: (a.node, a.kind.value, a.name)),
    )


@functools.lru_cache(maxsize=32)
def _builder(shape: EksCluster, policy: SchedulePolicy, key: _Key) -> PinglistBuilder:
    return PinglistBuilder(_inventory_of(shape, key), policy)


# ----------------------------------------------------------------------------- world


@dataclass(slots=True)
class _NodeLife:
    index: int
    ready_from: float = -_INF  # Ready, with its echo pod serving
    tainted_at: float = _INF  # marked for removal
    gone_at: float = _INF  # the instance terminated

    def exists(self, t: float) -> bool:
        return self.ready_from <= t < self.gone_at

    def ready(self, t: float) -> bool:
        return self.ready_from <= t < min(self.tainted_at, self.gone_at)


@dataclass(slots=True)
class _Instance:
    """One agent pod: it answers from ``running_from`` and sends nothing from ``stop_at``."""

    id: int
    node: int
    kind: SrcKind
    generation: int
    agent: Agent
    running_from: float = -_INF
    stop_at: float = _INF
    joined_at: float = _INF  # its first round (after its first pinglist and its stagger); never: inf

    def listed(self, t: float) -> bool:
        """The pod object is Running with an address (terminating pods too)."""
        return self.running_from <= t < self.stop_at + READINESS_GRACE_S + TEARDOWN_S

    def answers(self, t: float) -> bool:
        return self.running_from <= t < self.stop_at + READINESS_GRACE_S


def _hash(*parts: object) -> int:
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def agent_rng(seed: int, agent: str) -> random.Random:
    """The agent's own random source (its round plans' jitter and order), as the generator seeds it."""
    return random.Random(_hash(seed, agent, "rng"))


class _World:
    """Nodes and agent pods over time, and the collector's inventory versions."""

    def __init__(self, cluster: Cluster, events: Sequence[Event], *, t0: float, seed: int) -> None:
        self.cluster = cluster
        shape = cluster.shape
        self.shape = shape
        self.nodes: dict[int, _NodeLife] = {i: _NodeLife(i) for i in range(shape.n_nodes)}
        self.instances: list[_Instance] = []
        self.current: dict[tuple[int, SrcKind], _Instance] = {}
        for i in range(shape.n_nodes):
            for kind in shape.kinds:
                self._start(i, kind, 0, -_INF)
        added = 0
        for ev in events:
            if isinstance(ev, AddNode):
                for _ in range(ev.count):
                    i = shape.n_nodes + added
                    added += 1
                    self.nodes[i] = _NodeLife(i, ready_from=t0 + ev.at_s)
                    for kind in shape.kinds:
                        self._start(i, kind, 0, t0 + ev.at_s)
        for ev in events:
            if isinstance(ev, DrainNode):
                life = self.nodes[_index_of(shape, ev.node)]
                life.tainted_at = t0 + ev.at_s
                life.gone_at = t0 + ev.at_s + ev.terminate_after_s
                for kind in shape.kinds:
                    inst = self.current[(life.index, kind)]
                    inst.stop_at = min(inst.stop_at, life.gone_at)
        for ev in events:
            if isinstance(ev, RollingRestart):
                self._rolling_restart(ev, t0=t0, seed=seed)

    def _start(self, node: int, kind: SrcKind, generation: int, at: float) -> _Instance:
        agent = self.shape.agent(node, kind, generation=generation)
        inst = _Instance(id=len(self.instances), node=node, kind=kind, generation=generation, agent=agent,
                         running_from=at)  # fmt: skip
        self.instances.append(inst)
        self.current[(node, kind)] = inst
        return inst

    def _rolling_restart(self, ev: RollingRestart, *, t0: float, seed: int) -> None:
        start = t0 + ev.start_s
        pods = [inst for (_, kind), inst in sorted(self.current.items()) if kind is ev.kind]
        pods = [p for p in pods if p.running_from <= start < p.stop_at]
        random.Random(_hash(seed, "rollout", ev.kind.value)).shuffle(pods)
        batch = max(1, math.ceil(ev.max_unavailable * len(pods) - 1e-9))
        for b in range(0, len(pods), batch):
            at = start + (b // batch) * ev.down_s
            for old in pods[b : b + batch]:
                gone = self.nodes[old.node].gone_at
                if at >= gone:
                    continue
                old.stop_at = at
                new = self._start(old.node, old.kind, old.generation + 1, at + ev.down_s)
                new.stop_at = gone

    # ---- what the collector sees --------------------------------------------------

    def inventory_key(self, t: float) -> _Key:
        """The inventory at ``t`` as far as pinglists go: its ready nodes and ready agents.

        Nodes and agents that are listed but not ready (warming up, terminating, on a node
        marked for removal) change no pinglist, so they are left out of the key.
        """
        warmup = self.cluster.warmup_s
        nodes = tuple((i, True) for i, life in sorted(self.nodes.items()) if life.ready(t))
        agents = tuple(
            sorted(
                (inst.node, inst.kind.value, inst.generation, True)
                for inst in self.instances
                if inst.running_from + warmup <= t < inst.stop_at and self.nodes[inst.node].ready(t)
            )
        )
        return nodes, agents

    def versions(self) -> list[tuple[float, _Key]]:
        """(publish time, inventory state): the collector publishes ``settle_s`` after the
        last of a burst of changes."""
        times: set[float] = set()
        for life in self.nodes.values():
            times.update((life.ready_from, life.tainted_at, life.gone_at))
        for inst in self.instances:
            times.update((
                inst.running_from, inst.running_from + self.cluster.warmup_s, inst.stop_at,
                inst.stop_at + READINESS_GRACE_S + TEARDOWN_S,
            ))  # fmt: skip
        changes = sorted(t for t in times if math.isfinite(t))
        out: list[tuple[float, _Key]] = [(-_INF, self.inventory_key(-_INF))]
        settle = self.cluster.settle_s
        last_change: float | None = None
        for t in changes:
            key = self.inventory_key(t)
            if last_change is not None and t - last_change < settle:
                out[-1] = (t + settle, key)  # one burst: published once it settles
            elif key != out[-1][1]:
                out.append((t + settle, key))
            else:
                continue
            last_change = t
        return out


# ---------------------------------------------------------------------- the schedule


@dataclass(slots=True)
class _Targets:
    """Every probe target seen in a plan, numbered, with what the network model needs."""

    index: dict[int, int] = field(default_factory=dict)  # id(ProbeTarget) -> target number
    keep: list[ProbeTarget] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    proto: list[int] = field(default_factory=list)
    label: list[str] = field(default_factory=list)
    ip: list[str] = field(default_factory=list)
    port: list[int] = field(default_factory=list)
    peer: list[int] = field(default_factory=list)  # node index of a pod/host target, else -1
    peer_kind: list[int] = field(default_factory=list)  # 0 pod, 1 host, -1
    owner: list[int] = field(default_factory=list)  # node whose address it is (NodePort), else -1
    zone: list[int] = field(default_factory=list)  # NLB zone index, else -1
    endpoint: list[int] = field(default_factory=list)  # (ip, port) of a pod/host target, else -1
    endpoints: dict[tuple[str, int], int] = field(default_factory=dict)


class _Schedule:
    """Every agent's plans over the span, flattened into probe rows."""

    def __init__(
        self,
        world: _World,
        *,
        t0: float,
        t1: float,
        seed: int,
        focus: Mapping[str, Sequence[ProbeTarget]] | None = None,
        focus_only: bool = False,
        focus_from_s: Mapping[str, float] | None = None,
    ) -> None:
        cluster = world.cluster
        self.world = world
        self.policy = cluster.policy
        interval = cluster.interval_s
        shape = world.shape
        self.address_node = {shape.node_address(i): i for i in world.nodes}
        self.zone_index = {shape.zone(z): z for z in range(shape.zones)}
        clock = time.perf_counter
        self.spent = {"pinglists": 0.0, "plans": 0.0, "rows": 0.0}
        start = clock()
        versions = [(p, key) for p, key in world.versions() if p < t1]  # later ones are never used
        self.builders = [_builder(shape, cluster.policy, key) for _, key in versions]
        self.spent["pinglists"] += clock() - start
        published = [p for p, _ in versions]
        self.targets = _Targets()
        self._ts: list[FloatArray] = []
        self._inst: list[IntArray] = []
        self._tids: list[IntArray] = []
        self._pairs: list[IntArray] = []
        self._pair_count = 0
        r0 = round_index(t0, interval)
        r_end = math.ceil(t1 / interval - 1e-9)
        for inst in world.instances:
            if inst.running_from >= t1 or inst.stop_at <= t0:
                continue
            name = inst.agent.name
            if focus_only and not (focus and name in focus):
                continue
            phase = (_hash(seed, name, "fetch") >> 11) / float(1 << 53) * interval
            adopted = [
                -_INF if not math.isfinite(p) else phase + interval * math.ceil((p - phase) / interval)
                for p in published
            ]
            start = clock()
            pinglists = _Pinglists(name, self.builders)
            self.spent["pinglists"] += clock() - start
            first = next((a for a, has in zip(adopted, pinglists.has, strict=True) if has), None)
            if first is None:
                continue  # never got a pinglist: never probed
            inst.joined_at = (
                max(inst.running_from, first + stagger_s(name, interval))
                if math.isfinite(first)
                else (inst.running_from)
            )
            lo, hi = max(inst.joined_at, t0), min(inst.stop_at, t1)
            if lo >= hi:
                continue
            rng = agent_rng(seed, name)
            probes: list[PlannedProbe] = []
            starts: list[float] = []
            counts: list[int] = []
            start = clock()
            for r in range(max(r0, round_index(lo, interval)), min(r_end, round_index(hi, interval) + 1)):
                begin = round_start(r, interval)
                pl = _in_force(adopted, pinglists, begin)
                if pl is None:
                    continue
                if focus and name in focus:
                    pl = msgspec.structs.replace(pl, focus=list(focus[name]))
                if focus_only:
                    pl = msgspec.structs.replace(pl, peers=[], local=[], shared=[], large_probe_bytes=0)
                if focus_from_s is not None and name in focus_from_s:
                    plan = focus_catch_up([], pl, elapsed_s=focus_from_s[name], rng=rng)
                else:
                    plan = plan_round(pl, r, rng)
                # Started as the agent's round loop starts them: those due close together at once.
                launch = launch_offsets([p.offset_s for p in plan])
                plan = [dataclasses.replace(p, offset_s=o) for p, o in zip(plan, launch, strict=True)]
                probes.extend(plan)
                starts.append(begin)
                counts.append(len(plan))
            self.spent["plans"] += clock() - start
            start = clock()
            if probes:
                self._add(inst.id, probes, starts=starts, counts=counts, lo=lo, hi=hi)
            self.spent["rows"] += clock() - start
        self.ts = np.concatenate(self._ts) if self._ts else np.zeros(0)
        self.inst = np.concatenate(self._inst) if self._inst else np.zeros(0, dtype=np.int64)
        self.tid = np.concatenate(self._tids) if self._tids else np.zeros(0, dtype=np.int64)
        self.pair = np.concatenate(self._pairs) if self._pairs else np.zeros(0, dtype=np.int64)
        del self._ts, self._inst, self._tids, self._pairs

    def drop(self, mask: BoolArray) -> None:
        """Forget the rows in ``mask`` (probes that were never sent)."""
        keep = ~mask
        self.ts, self.inst, self.tid, self.pair = (
            self.ts[keep],
            self.inst[keep],
            self.tid[keep],
            self.pair[keep],
        )

    def _add(
        self,
        inst: int,
        probes: list[PlannedProbe],
        *,
        starts: list[float],
        counts: list[int],
        lo: float,
        hi: float,
    ) -> None:
        """One agent's planned probes as rows: one per target (a same-source-port group is a group)."""
        n = len(probes)
        offsets, targets_of, together_l = zip(
            *[(p.offset_s, p.targets, p.same_source_port) for p in probes], strict=True
        )
        at = np.repeat(np.asarray(starts), counts) + np.asarray(offsets)
        together = np.asarray(together_l, dtype=np.bool_)
        index = self.targets.index
        if together.any():
            sizes = np.fromiter(map(len, targets_of), np.int64, n)
            pair = np.full(n, -1, dtype=np.int64)
            pair[together] = self._pair_count + np.arange(int(together.sum()))
            self._pair_count += int(together.sum())
            targets = [t for ts in targets_of for t in ts]
            at, pair = np.repeat(at, sizes), np.repeat(pair, sizes)
        else:
            targets = [ts[0] for ts in targets_of]
            pair = np.full(n, -1, dtype=np.int64)
        ids = list(map(id, targets))
        if not index.keys() >= set(ids):  # targets no plan held before (new pinglists)
            for t in targets:
                if id(t) not in index:
                    self._register(t)
        tids = np.fromiter(map(index.__getitem__, ids), np.int64, len(ids))
        keep = (at >= lo) & (at < hi)
        self._ts.append(at[keep])
        self._tids.append(tids[keep])
        self._pairs.append(pair[keep])
        self._inst.append(np.full(int(keep.sum()), inst, dtype=np.int64))

    def _register(self, t: ProbeTarget) -> int:
        tg = self.targets
        n = len(tg.keep)
        tg.index[id(t)] = n
        tg.keep.append(t)  # keeps id(t) unique while the index lives
        tg.kind.append(_TK[t.kind])
        tg.proto.append(_PROTO[t.proto])
        tg.label.append(t.target)
        tg.ip.append(t.ip)
        tg.port.append(t.port)
        peer = t.kind in (TargetKind.POD, TargetKind.HOST) and t.dst_node is not None
        tg.peer.append(_index_of(self.world.shape, t.dst_node) if peer and t.dst_node else -1)
        tg.peer_kind.append((0 if t.dst_kind is SrcKind.POD else 1) if peer else -1)
        tg.owner.append(self.address_node.get(t.ip, -1) if t.kind is TargetKind.NODEPORT else -1)
        tg.zone.append(self.zone_index.get(t.zone or "", -1) if t.kind is TargetKind.NLB else -1)
        tg.endpoint.append(tg.endpoints.setdefault((t.ip, t.port), len(tg.endpoints)) if peer else -1)
        return n


class _Pinglists:
    """One agent's pinglist in each inventory version, built when first needed."""

    def __init__(self, agent: str, builders: Sequence[PinglistBuilder]) -> None:
        self.agent = agent
        self.builders = builders
        self.has = [b.version_of(agent) is not None for b in builders]  # O(1): no pinglist built
        self.built: dict[int, Pinglist | None] = {}

    def get(self, version: int) -> Pinglist | None:
        if version not in self.built:
            self.built[version] = self.builders[version].for_agent(self.agent)
        return self.built[version]


def _in_force(adopted: Sequence[float], pinglists: _Pinglists, at: float) -> Pinglist | None:
    """The pinglist an agent plans round ``at`` with: the last one it fetched (a 404 keeps the one before)."""
    for v in range(len(adopted) - 1, -1, -1):
        if adopted[v] <= at and pinglists.has[v]:
            return pinglists.get(v)
    return None


# ------------------------------------------------------------------ the network model


@dataclass(frozen=True, slots=True)
class _Active:
    """A fault resolved to node indices, with its window in absolute time."""

    fault: Fault
    nodes: IntArray
    start: float
    end: float

    def on(self, ts: FloatArray) -> BoolArray:
        result: BoolArray = (ts >= self.start) & (ts < self.end)
        return result


#: Round-trip times (median, seconds) and the spread of their log-normal jitter.
RTT_SAME_NODE_S: Final = 0.00005
RTT_SAME_ZONE_S: Final = 0.00025
RTT_CROSS_ZONE_S: Final = 0.0009
NLB_EXTRA_S: Final = 0.00015
ECHO_SERVICE_S: Final = 0.0002
DNS_ANSWER_S: Final = 0.0008
EXTERNAL_RTT_S: Final = 0.0025
JITTER_SIGMA: Final = 0.25
#: A small share of probes is slow for reasons of its own (scheduling, GC): +1..20 ms.
SLOW_SHARE: Final = 0.002


def _cut(zones: tuple[int, ...], z1: IntArray, z2: IntArray) -> BoolArray:
    """Rows whose two zones are the two sides of a partition."""
    za, zb = zones
    result: BoolArray = ((z1 == za) & (z2 == zb)) | ((z1 == zb) & (z2 == za))
    return result


class _Outcomes:
    """What happened to every probe row: outcome, latency, serving node, what the echo saw."""

    def __init__(self, sched: _Schedule, faults: Sequence[Fault], *, t0: float, seed: int) -> None:
        world, cluster = sched.world, sched.world.cluster
        shape = world.shape
        g = np.random.default_rng(_hash(seed, "network") % (1 << 63))
        self.g = g
        tg = sched.targets
        ts, tid = sched.ts, sched.tid
        n_rows = ts.size
        inst_node = np.array([i.node for i in world.instances], dtype=np.int64)
        inst_kind = np.array([0 if i.kind is SrcKind.POD else 1 for i in world.instances], dtype=np.int64)
        s = inst_node[sched.inst]
        sk = inst_kind[sched.inst]
        tk = np.asarray(tg.kind, dtype=np.int64)[tid]
        proto = np.asarray(tg.proto, dtype=np.int64)[tid]
        peer = np.asarray(tg.peer, dtype=np.int64)[tid]
        owner = np.asarray(tg.owner, dtype=np.int64)[tid]
        nlb_zone = np.asarray(tg.zone, dtype=np.int64)[tid]
        n_index = max(world.nodes) + 1
        zone_of = np.array([shape.zone_index(i) for i in range(n_index)], dtype=np.int64)
        gone_at = np.full(n_index, _INF)
        for i, life in world.nodes.items():
            gone_at[i] = life.gone_at

        def kind(*kinds: TargetKind) -> BoolArray:
            result: BoolArray = np.isin(tk, [_TK[k] for k in kinds])
            return result

        is_peer = kind(TargetKind.POD, TargetKind.HOST)
        is_service = kind(TargetKind.SERVICE)
        is_local_service = kind(TargetKind.SERVICE_LOCAL)
        is_nodeport = kind(TargetKind.NODEPORT)
        is_nlb = kind(TargetKind.NLB)
        outside = kind(TargetKind.DNS, TargetKind.EXTERNAL)
        own_nodeport = is_nodeport & (owner == s)
        two_hop = cluster.external_traffic_policy == "Cluster"

        # ---- where each probe goes: entry node e (first hop), serving node d ----------
        endpoints = self._choose(ts, world, g, nlb=False, zone=None)
        e = np.full(n_rows, -1, dtype=np.int64)
        d = np.full(n_rows, -1, dtype=np.int64)
        e[is_peer], d[is_peer] = peer[is_peer], peer[is_peer]
        e[is_service], d[is_service] = endpoints[is_service], endpoints[is_service]
        e[is_local_service], d[is_local_service] = s[is_local_service], s[is_local_service]
        remote_np = is_nodeport & ~own_nodeport
        e[remote_np] = owner[remote_np]
        d[remote_np] = endpoints[remote_np] if two_hop else owner[remote_np]
        e[own_nodeport], d[own_nodeport] = s[own_nodeport], endpoints[own_nodeport]
        picked = np.full(n_rows, -1, dtype=np.int64)
        for z in range(shape.zones):
            rows = is_nlb & (nlb_zone == z)
            if rows.any():
                picked[rows] = self._choose(ts[rows], world, g, nlb=True, zone=z)
        e[is_nlb] = picked[is_nlb]
        d[is_nlb] = endpoints[is_nlb] if two_hop else picked[is_nlb]
        # A own-NodePort probe kube-proxy kept on the node never leaves it; one sent
        # elsewhere goes straight to that node's echo.
        e[own_nodeport] = d[own_nodeport]

        # Hop 1: source -> entry (across the fabric unless it stays on the node; through
        # the NLB always). Hop 2 (externalTrafficPolicy: Cluster): entry -> serving node.
        net1 = (e >= 0) & ((e != s) | is_nlb)
        net2 = (
            (e >= 0) & (d >= 0) & (d != e) & ((remote_np | is_nlb) if two_hop else np.zeros(n_rows, np.bool_))
        )
        lost_target = (e < 0) & ~outside | (d < 0) & ~outside  # no endpoint to send to

        actives = self._resolve(cluster, faults, t0=t0)
        timeout = np.zeros(n_rows, dtype=np.bool_)
        keep = np.ones(n_rows, dtype=np.float64)  # chance a packet survives one direction
        preserve = np.zeros(n_rows, dtype=np.bool_)  # NLB client-IP preservation in force
        collision = np.zeros(n_rows, dtype=np.int64)  # 1: collide with a reset, 2: a retransmit
        refused_agent = np.zeros(n_rows, dtype=np.bool_)
        stalled = np.zeros(n_rows, dtype=np.bool_)  # connected, then the answer never came
        large = proto == _PROTO[Proto.HTTP_LARGE]
        for a in actives:
            f = a.fault
            on = a.on(ts)
            if not on.any():
                continue
            x = a.nodes
            if f.kind == "node-isolated":
                timeout |= on & (
                    net1 & (np.isin(s, x) | np.isin(e, x))
                    | net2 & (np.isin(e, x) | np.isin(d, x))
                    | outside & np.isin(s, x)
                )
            elif f.kind == "node-unreachable":
                timeout |= on & (net1 & np.isin(e, x) | net2 & np.isin(d, x))
            elif f.kind == "pair-blocked":
                na, nb = int(x[0]), int(x[1])
                fwd1 = (s == na) & (e == nb)
                fwd2 = (e == na) & (d == nb)
                if not f.one_way:
                    fwd1 |= (s == nb) & (e == na)
                    fwd2 |= (e == nb) & (d == na)
                timeout |= on & (net1 & ~is_nlb & fwd1 | net2 & fwd2)
            elif f.kind == "pod-network-isolated":
                peer_kind = np.asarray(tg.peer_kind, dtype=np.int64)[tid]
                # A node's own NodePort sends its in-node callers to any echo pod (Local is
                # for callers from elsewhere): across the fabric to X's pod address.
                into_pod = (
                    (is_peer & (peer_kind == 0) | is_service | own_nodeport) & np.isin(d, x) & ~np.isin(s, x)
                )
                into_pod |= net2 & np.isin(d, x) & ~np.isin(e, x)
                from_pod = (sk == 0) & np.isin(s, x)
                # Its pods' own NodePort: kube-proxy sends pod callers to any endpoint unmasqueraded.
                to_pods = (is_peer & (peer_kind == 0) & (e != s)) | ((is_service | own_nodeport) & (d != s))
                if f.variant == "vpc":  # pod addresses are VPC addresses: SNAT only outside the VPC
                    to_pods |= (is_peer & (e != s)) | remote_np | is_nlb | kind(TargetKind.DNS)
                timeout |= on & (into_pod | from_pod & to_pods)
            elif f.kind == "zone-partition":
                zs_, ze_, zd_ = zone_of[s], zone_of[np.maximum(e, 0)], zone_of[np.maximum(d, 0)]
                timeout |= on & (
                    net1 & ~is_nlb & _cut(f.zones, zs_, ze_)
                    | is_nlb & (e >= 0) & (_cut(f.zones, zs_, nlb_zone) | _cut(f.zones, nlb_zone, ze_))
                    | net2 & _cut(f.zones, ze_, zd_)
                )
            elif f.kind == "mtu-blackhole":
                # A hop on X's link with a smaller MTU, its ICMP fragmentation-needed
                # filtered: every segment larger than it is lost, both ways, so a large
                # answer to or from X never completes; everything small passes.
                if f.variant == "pair":  # a hop between two nodes only (a peering, a VPN)
                    na, nb = int(x[0]), int(x[1])
                    hop = net1 & (((s == na) & (e == nb)) | ((s == nb) & (e == na)))
                else:
                    hop = net1 & (np.isin(s, x) | np.isin(e, x)) | net2 & (np.isin(e, x) | np.isin(d, x))
                stalled |= on & large & hop
            elif f.kind == "zone-degraded":
                drop = 1.0 - f.rate
                x = np.flatnonzero(zone_of == f.zones[0])
                for hop, at in ((net1, s), (net1, e), (net2, e), (net2, d), (outside, s)):
                    keep = np.where(on & hop & np.isin(at, x), keep * drop, keep)
            elif f.kind == "packet-loss":
                drop = 1.0 - f.rate
                for hop, at in ((net1, s), (net1, e), (net2, e), (net2, d), (outside, s)):
                    keep = np.where(on & hop & np.isin(at, x), keep * drop, keep)
            elif f.kind == "nlb-hairpin":
                preserve |= on
                timeout |= on & is_nlb & (e == s)
            elif f.kind == "nlb-5tuple-collision":
                preserve |= on
                collision[on] = 2 if f.variant == "retransmit" else 1
            elif f.kind == "bridge-netfilter":
                dnat_local = (is_service & (d == s)) | is_local_service | (own_nodeport & (d == s))
                timeout |= on & (sk == 0) & np.isin(s, x) & dnat_local
            elif f.kind == "snat-asymmetric":
                mine = on & np.isin(s, x)
                variant = f.variant or "pod"
                if variant == "nodeport":
                    timeout |= mine & (sk == 0) & remote_np
                else:
                    timeout |= mine & (sk == (0 if variant == "pod" else 1)) & kind(TargetKind.EXTERNAL)
            elif f.kind == "dns-timeouts":
                dns = on & kind(TargetKind.DNS)
                timeout |= dns & (g.random(n_rows) < f.rate)
            elif f.kind == "pod-agent-down":
                pod_ep = is_peer & (np.asarray(tg.peer_kind, dtype=np.int64)[tid] == 0)
                refused_agent |= on & pod_ep & np.isin(peer, x)
            elif f.kind == "service-down":
                timeout |= on & is_service
            elif f.kind == "nlb-address-down":
                timeout |= on & is_nlb & (nlb_zone == f.zone)

        # ---- the agents at the far end: up, gone, restarting -------------------------
        state = self._endpoint_states(sched, world)
        gone = (e >= 0) & (ts >= gone_at[np.maximum(e, 0)]) | (d >= 0) & (ts >= gone_at[np.maximum(d, 0)])
        timeout |= lost_target | gone & ~is_peer | (state == _TIMEOUT)
        refused = ~timeout & ((state == _REFUSED) | refused_agent)

        # ---- loss: the handshake's retries and the data's ----------------------------
        tcp = np.isin(proto, [_PROTO[Proto.HTTP], _PROTO[Proto.TCP], _PROTO[Proto.HTTP_LARGE]])
        http = np.isin(proto, [_PROTO[Proto.HTTP], _PROTO[Proto.HTTP_LARGE]])
        exchange = keep * keep  # one packet each way
        lossy = exchange < 1.0
        extra = np.zeros(n_rows, dtype=np.float64)
        limit = cluster.timeout_s
        syn_at = [0.0]
        while syn_at[-1] + SYN_RTO_S * 2 ** (len(syn_at) - 1) < limit:
            syn_at.append(syn_at[-1] + SYN_RTO_S * 2 ** (len(syn_at) - 1))
        attempts = np.asarray(syn_at)
        if lossy.any():
            idx = np.flatnonzero(lossy)
            p = exchange[idx]
            hs_fail = g.geometric(p) - 1  # failed handshakes before one gets through
            data_fail = np.minimum(g.geometric(p) - 1, 30)
            is_tcp = tcp[idx]
            late = np.where(hs_fail < attempts.size, attempts[np.minimum(hs_fail, attempts.size - 1)], _INF)
            # HTTP sends a request after the handshake; a bare TCP probe only connects.
            retry = np.where(http[idx], DATA_RTO_S * (2.0**data_fail - 1.0), 0.0)
            extra[idx] = np.where(is_tcp, late + retry, np.where(hs_fail == 0, 0.0, _INF))

        # ---- latency -----------------------------------------------------------------
        zs, ze, zd = zone_of[s], zone_of[np.maximum(e, 0)], zone_of[np.maximum(d, 0)]
        rtt = np.where(net1, np.where(zs == ze, RTT_SAME_ZONE_S, RTT_CROSS_ZONE_S), RTT_SAME_NODE_S)
        rtt = rtt + np.where(net2, np.where(ze == zd, RTT_SAME_ZONE_S, RTT_CROSS_ZONE_S), 0.0)
        rtt = rtt + np.where(is_nlb, NLB_EXTRA_S, 0.0)
        base = np.where(http, 2.0 * rtt + ECHO_SERVICE_S, rtt + 0.00005)
        base = np.where(kind(TargetKind.DNS), DNS_ANSWER_S, base)
        base = np.where(kind(TargetKind.EXTERNAL), EXTERNAL_RTT_S, base)
        base = base * g.lognormal(0.0, JITTER_SIGMA, n_rows)
        base = base + np.where(g.random(n_rows) < SLOW_SHARE, g.uniform(0.001, 0.02, n_rows), 0.0)
        latency = base + extra
        timeout |= ~refused & (latency >= limit)

        outcome = np.full(n_rows, _OK, dtype=np.int64)
        outcome[stalled] = _STALLED
        outcome[timeout] = _TIMEOUT
        outcome[refused] = _REFUSED

        # ---- background noise of a healthy network -----------------------------------
        path = sk * len(TargetKind) + tk
        rate = np.full(n_rows, cluster.noise)
        for name, r in cluster.path_noise:
            rate[path == _PATHS.index(name)] = r
        u = g.random(n_rows)
        ok = outcome == _OK
        outcome[ok & (u < rate)] = _TIMEOUT
        band = u - rate
        outcome[ok & (band >= 0) & (band < cluster.refused_noise)] = _REFUSED
        band = band - cluster.refused_noise
        outcome[ok & tcp & (band >= 0) & (band < cluster.reset_noise)] = _RESET

        # ---- same-source-port groups through one target (5-tuple collision) ------------
        # A group holds every NLB zone address, sent at once from one port; its SYNs reach
        # the targets in no particular order, and one that reaches the same target node as
        # an earlier one of its group collides with it.
        grouped = np.flatnonzero(sched.pair >= 0)
        if grouped.size and collision.any():
            order = grouped[np.lexsort((g.random(grouped.size), sched.pair[grouped]))]
            starts = np.flatnonzero(np.r_[True, np.diff(sched.pair[order]) != 0])
            sizes = np.diff(np.r_[starts, order.size])
            for size in np.unique(sizes).tolist():
                members = np.stack([order[starts[sizes == size] + j] for j in range(size)], axis=1)
                fine = (outcome[members] == _OK) & (collision[members] > 0)
                for j in range(1, size):
                    later = members[:, j]
                    # The NLB delivers both flows to the node it picked (the entry): that is
                    # where one 5-tuple arrives twice, whichever echo then serves it.
                    hit = fine[:, j] & (fine[:, :j] & (e[members[:, :j]] == e[later][:, None])).any(axis=1)
                    reset = later[hit & (collision[later] == 1)]
                    outcome[reset] = _RESET
                    late = later[hit & (collision[later] == 2)]
                    latency[late] += SYN_RTO_S
                    outcome[late[latency[late] >= limit]] = _TIMEOUT

        self.outcome = outcome
        self.latency = latency
        self.serving = d
        self.src_node = s
        self.src_kind = sk
        self.tkind = tk
        # What the echo saw as the client's address (on success).
        self.seen = np.zeros(n_rows, dtype=np.int64)  # 0: the source, 1: the target address, 2: entry node,
        self.seen[is_nlb & ~preserve] = 1  # 3: source node: the NLB's own address without preservation
        if two_hop:
            # kube-proxy masquerades every outside connection (KUBE-EXT: KUBE-MARK-MASQ), to its
            # own echo too: the entry node's address (a VPC CNI node routes to its pods from it).
            self.seen[remote_np | is_nlb] = 2
        self.seen[own_nodeport & (d != s)] = 3  # kube-proxy masquerades in-node callers sent away
        self.entry = e

    @staticmethod
    def _resolve(cluster: Cluster, faults: Sequence[Fault], *, t0: float) -> list[_Active]:
        shape = cluster.shape
        out = []
        for f in faults:
            nodes = np.array([_index_of(shape, n) for n in f.nodes], dtype=np.int64)
            out.append(_Active(fault=f, nodes=nodes, start=t0 + f.start_s, end=t0 + f.end_s))
        return out

    @staticmethod
    def _choose(
        ts: FloatArray, world: _World, g: np.random.Generator, *, nlb: bool, zone: int | None
    ) -> IntArray:
        """A uniformly chosen echo (kube-proxy) or registered node (the NLB) for each probe."""
        lag = world.cluster.nlb_health_lag_s
        lives = list(world.nodes.values())
        if nlb:
            spans = [(life.ready_from + lag, life.tainted_at + lag) for life in lives]
        else:
            spans = [(life.ready_from, life.gone_at) for life in lives]
        zoned = nlb and not world.cluster.cross_zone
        in_zone = [not zoned or world.shape.zone_index(life.index) == zone for life in lives]
        cuts = sorted({t for span in spans for t in span if math.isfinite(t)})
        bounds = np.asarray([-_INF, *cuts], dtype=np.float64)
        epoch = np.searchsorted(bounds, ts, side="right") - 1
        out = np.full(ts.size, -1, dtype=np.int64)
        u = g.random(ts.size)
        for k, start in enumerate(bounds.tolist()):
            rows = epoch == k
            if not rows.any():
                continue
            at = start if math.isfinite(start) else -1e300
            pool = np.array(
                [
                    life.index
                    for life, (a, b), z in zip(lives, spans, in_zone, strict=True)
                    if z and a <= at < b
                ],
                dtype=np.int64,
            )
            if pool.size:
                out[rows] = pool[np.minimum((u[rows] * pool.size).astype(np.int64), pool.size - 1)]
        return out

    @staticmethod
    def _endpoint_states(sched: _Schedule, world: _World) -> IntArray:
        """OK, REFUSED or TIMEOUT of each peer probe's far end, from the pods' lifetimes."""
        tg = sched.targets
        n_rows = sched.ts.size
        state = np.full(n_rows, _OK, dtype=np.int64)
        by_endpoint: dict[int, list[_Instance]] = {}
        owners: dict[tuple[str, int], list[_Instance]] = {}
        for inst in world.instances:
            for port in (inst.agent.http_port, inst.agent.udp_port):
                owners.setdefault((inst.agent.address, port), []).append(inst)
        for key, ep in tg.endpoints.items():
            insts = owners.get(key, [])
            if insts and all(not math.isfinite(i.running_from) and i.stop_at == _INF for i in insts):
                node = insts[0].node
                if world.nodes[node].gone_at == _INF:
                    continue  # always up
            by_endpoint[ep] = insts
        if not by_endpoint:
            return state
        ep_of_row = np.asarray(tg.endpoint, dtype=np.int64)[sched.tid]
        rows = np.flatnonzero(np.isin(ep_of_row, list(by_endpoint)))
        if rows.size == 0:
            return state
        order = rows[np.argsort(ep_of_row[rows], kind="stable")]
        eps = ep_of_row[order]
        splits = np.flatnonzero(np.diff(eps)) + 1
        for group in np.split(order, splits):
            insts = by_endpoint[int(ep_of_row[group[0]])]
            state[group] = _piecewise_state(insts, world, sched.ts[group])
        return state


def _piecewise_state(insts: Sequence[_Instance], world: _World, ts: FloatArray) -> IntArray:
    """The state of one (address, port) over time: answered by one of ``insts``, refusing, or silent."""
    if not insts:
        return np.full(ts.size, _TIMEOUT, dtype=np.int64)
    node = world.nodes[insts[0].node]
    host = insts[0].kind is SrcKind.HOST
    cuts = {node.gone_at}
    for i in insts:
        cuts.update(
            (i.running_from, i.stop_at + READINESS_GRACE_S, i.stop_at + READINESS_GRACE_S + TEARDOWN_S)
        )
    bounds = [-_INF, *sorted(t for t in cuts if math.isfinite(t))]

    def at(t: float) -> int:
        if t >= node.gone_at:
            return _TIMEOUT
        if any(i.answers(t) for i in insts):
            return _OK
        if host:
            return _REFUSED  # the node is up; nothing listens on the port
        if any(
            i.stop_at + READINESS_GRACE_S <= t < i.stop_at + READINESS_GRACE_S + TEARDOWN_S for i in insts
        ):
            return _REFUSED  # the process is gone, its network namespace not yet
        return _TIMEOUT  # the address is not (or no longer) a pod's

    states = np.array([at(b if math.isfinite(b) else -1e300) for b in bounds], dtype=np.int64)
    return states[np.searchsorted(np.asarray(bounds), ts, side="right") - 1]


# ------------------------------------------------------------------------- the records


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLife:
    """One agent pod's life (wall-clock times; infinite: before or after the span)."""

    name: str
    node: str
    kind: SrcKind
    address: str
    running_from: float  # its echo answers
    stop_at: float  # SIGTERM: it sends nothing more, answers one second more
    joined_at: float  # its first round (first pinglist, then its stagger); inf: none in the span


@dataclass(frozen=True, slots=True, kw_only=True)
class Generated:
    """Records of a generated span, with the nodes and topology to read them with."""

    records: list[ProbeResult]
    nodes: tuple[str, ...]  # every node that existed in the span, sorted
    topology: Topology
    start_ts: float
    end_ts: float
    agents: tuple[AgentLife, ...]
    #: What the collector's inventory says of the agents that stopped on purpose.
    stops: tuple[AgentStop, ...] = ()


def simulate(
    cluster: Cluster,
    *,
    rounds: int | None = None,
    duration_s: float | None = None,
    faults: Sequence[Fault] = (),
    events: Sequence[Event] = (),
    seed: int = 0,
    start_ts: float = START_TS,
    fault_rounds: tuple[int, int] | None = None,
    timings: dict[str, float] | None = None,
    focus: Mapping[str, Sequence[ProbeTarget]] | None = None,
    focus_only: bool = False,
    focus_from_s: Mapping[str, float] | None = None,
) -> Generated:
    """Records of ``rounds`` rounds (or ``duration_s`` seconds) from ``start_ts``'s round on.

    ``focus``: each named agent's focused probes (``Pinglist.focus``, as the collector's
    :meth:`~prober.schedule.PinglistBuilder.focus` gives them) in every round of the span.
    ``focus_only``: those focused probes alone (what a live run adds to records generated
    before it, once the collector has asked for them). ``focus_from_s`` (with
    ``focus_only``): the named agents learned of their ``focus`` that many seconds into
    the span's round, and probe it from then on in that round, as an agent does
    (:func:`~prober.schedule.focus_catch_up`).

    ``fault_rounds=(lo, hi)`` puts every fault in rounds ``lo`` to ``hi - 1`` of the span
    (instead of each fault's own ``start_s``/``end_s``). ``timings``, if given, receives
    the seconds each phase took (pinglists, plans, rows, network, records).
    """
    interval = cluster.interval_s
    if (rounds is None) == (duration_s is None):
        raise ValueError("give rounds or duration_s")
    if focus_from_s is not None and not focus_only:
        raise ValueError("focus_from_s is for focused probes alone (focus_only)")
    span = rounds * interval if rounds is not None else float(duration_s or 0.0)
    t0 = round_start(round_index(start_ts, interval), interval)
    t1 = t0 + span
    if fault_rounds is not None:
        lo, hi = fault_rounds
        faults = [_window(f, lo * interval, hi * interval) for f in faults]
    clock = time.perf_counter
    with _gc_paused():
        world = _World(cluster, events, t0=t0, seed=seed)
        sched = _Schedule(
            world, t0=t0, t1=t1, seed=seed, focus=focus, focus_only=focus_only, focus_from_s=focus_from_s
        )
        sched.drop(_silenced(sched, world, faults, t0=t0))
        start = clock()
        out = _Outcomes(sched, faults, t0=t0, seed=seed)
        network = clock() - start
        start = clock()
        records = _records(sched, out, world)
        made = clock() - start
    if timings is not None:
        timings.update(
            pinglists=sched.spent["pinglists"], plans=sched.spent["plans"], rows=sched.spent["rows"],
            network=network, records=made,
        )  # fmt: skip
    names = sorted(
        {
            world.shape.node_name(i)
            for i, life in world.nodes.items()
            if life.ready_from < t1 and life.gone_at > t0
        }
    )
    lives = tuple(
        AgentLife(
            name=i.agent.name,
            node=i.agent.node,
            kind=i.kind,
            address=i.agent.address,
            running_from=i.running_from,
            stop_at=i.stop_at,
            joined_at=i.joined_at,
        )
        for i in world.instances
    )
    return Generated(
        records=records,
        nodes=tuple(names),
        topology=cluster.topology(names),
        start_ts=t0,
        end_ts=t1,
        agents=lives,
        stops=_stops(world),
    )


def _stops(world: _World) -> tuple[AgentStop, ...]:
    """The inventory's view of each agent pod that stopped: its pod marked for deletion at
    SIGTERM (or gone with its node), until an agent of the same network at its address is
    listed Ready again (after the collector's warm-up)."""
    out = []
    for old in world.instances:
        if not math.isfinite(old.stop_at):
            continue
        back = [
            i.running_from + world.cluster.warmup_s
            for i in world.instances
            if i.agent.address == old.agent.address and i.kind is old.kind and i.running_from > old.stop_at
        ]
        out.append(
            AgentStop(address=old.agent.address, kind=old.kind, at=old.stop_at, until=min(back, default=_INF))
        )
    return tuple(out)


def _silenced(sched: _Schedule, world: _World, faults: Sequence[Fault], *, t0: float) -> BoolArray:
    """Rows a ``pod-agent-down`` agent would have sent: a dead agent sends nothing."""
    mask = np.zeros(sched.ts.size, dtype=np.bool_)
    for f in faults:
        if f.kind != "pod-agent-down":
            continue
        down = [
            inst.id
            for inst in world.instances
            if inst.kind is SrcKind.POD and world.shape.node_name(inst.node) in f.nodes
        ]
        mask |= np.isin(sched.inst, down) & (sched.ts >= t0 + f.start_s) & (sched.ts < t0 + f.end_s)
    return mask


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while millions of acyclic objects (plans, records) are
    made: the collector's passes over the growing heap cost as much as making them."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _window(f: Fault, start: float, end: float) -> Fault:
    return replace(f, start_s=start, end_s=end)


def _objects(values: Sequence[object]) -> npt.NDArray[np.object_]:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _records(sched: _Schedule, out: _Outcomes, world: _World) -> list[ProbeResult]:
    """One record per row, in time order. Every field is a column first (numpy object
    arrays), so the loop is the records' construction and nothing else."""
    shape = world.shape
    tg = sched.targets
    n_rows = sched.ts.size
    g = out.g
    order = np.argsort(sched.ts, kind="stable")
    n_index = max(world.nodes) + 1
    names = _objects([shape.node_name(i) if i in world.nodes else "" for i in range(n_index)] + [None])
    addresses = _objects([shape.node_address(i) if i in world.nodes else "" for i in range(n_index)])

    ports = g.integers(EPHEMERAL_PORTS[0], EPHEMERAL_PORTS[1] + 1, n_rows)
    pair = sched.pair
    paired = np.flatnonzero(pair >= 0)
    if paired.size:
        by_pair = np.zeros(int(pair.max()) + 1, dtype=np.int64)
        by_pair[pair[paired]] = ports[paired]  # one source port for both probes of a pair
        ports[paired] = by_pair[pair[paired]]

    ok = out.outcome == _OK
    tid = sched.tid
    peer_kind = np.asarray(tg.peer_kind, dtype=np.int64)[tid]
    named = (peer_kind >= 0) | (ok & (out.serving >= 0))
    dst = _objects(list(names))[np.where(named, out.serving, n_index)]
    kinds = _objects([SrcKind.POD, SrcKind.HOST, None])
    dst_kind = kinds[np.where(peer_kind >= 0, peer_kind, np.where(named, 0, 2))]
    src_ip = _objects([i.agent.address for i in world.instances])[sched.inst]
    target_ip = _objects(tg.ip)[tid]
    seen = np.where(
        out.seen == 0, src_ip,
        np.where(out.seen == 1, target_ip, np.where(out.seen == 2, addresses[np.maximum(out.entry, 0)],
                                                    addresses[out.src_node])),
    )  # fmt: skip
    seen[~ok] = None
    latency = out.latency.astype(object)
    latency[~ok] = None
    columns = (
        sched.ts,
        _objects(_PATHS)[out.src_kind * len(TargetKind) + out.tkind],
        names[out.src_node],
        kinds[out.src_kind],
        src_ip,
        ports,
        _objects(tg.label)[tid],
        target_ip,
        np.asarray(tg.port, dtype=np.int64)[tid],
        _objects([t.proto for t in tg.keep])[tid],
        dst,
        dst_kind,
        _objects(_OUTCOMES)[out.outcome],
        latency,
        seen,
    )
    record = ProbeResult
    return [
        record(ts=ts, path=path, src_node=src, src_kind=sk, src_ip=sip, src_port=port, target=target,
               target_ip=tip, target_port=tport, proto=proto, dst_node=d, dst_kind=dk, outcome=oc,
               latency_s=lat, seen_src_ip=seen_ip)
        for ts, path, src, sk, sip, port, target, tip, tport, proto, d, dk, oc, lat, seen_ip in zip(
            *(c[order].tolist() for c in columns), strict=True
        )
    ]  # fmt: skip


def generate(
    cluster: Cluster,
    *,
    rounds: int | None = None,
    duration_s: float | None = None,
    faults: Sequence[Fault] = (),
    events: Sequence[Event] = (),
    seed: int = 0,
    start_ts: float = START_TS,
    fault_rounds: tuple[int, int] | None = None,
) -> list[ProbeResult]:
    """The records of :func:`simulate`, sorted by time."""
    return simulate(
        cluster, rounds=rounds, duration_s=duration_s, faults=faults, events=events, seed=seed,
        start_ts=start_ts, fault_rounds=fault_rounds,
    ).records  # fmt: skip


# ------------------------------------------------------------------ the closed loop


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopRound:
    """One round of :func:`closed_loop`: what the pass after it named and asked."""

    index: int  # rounds since the span's start
    found: frozenset[tuple[str, frozenset[str]]]
    suspects: tuple[Question, ...]  # the questions the pass asked (taken by the pinglists)
    focus_probes: int  # focused probes this round sent, all agents together
    probes: int  # every probe this round sent
    focused_agents: int = 0  # agents whose own pinglist part the pass changed (the mesh never)


def closed_loop(
    cluster: Cluster,
    *,
    rounds: int,
    faults: Sequence[Fault] = (),
    seed: int = 0,
    focus: FocusRules | None = None,
    window_rounds: int = 2,
    lag_rounds: int = 1,
    start_ts: float = START_TS,
    stop: Callable[[frozenset[tuple[str, frozenset[str]]]], bool] | None = None,
) -> list[LoopRound]:
    """Rounds of the mesh with the collector's suspect loop closed, one round at a time.

    Each round is generated with the real schedule (:func:`simulate`) and the focused
    probes in force; after it, the last ``window_rounds`` rounds are diagnosed (the last
    round as the ``recent`` evidence, as the collector's passes do), the
    questions of that pass come from :func:`prober.diagnose.suspects.suspects` (with the
    pass before's), and :meth:`~prober.schedule.PinglistBuilder.focus` turns them into
    focused pinglist entries that the agents probe from ``lag_rounds`` rounds later (the
    collector's pass and the agents' next fetch take up to a round). ``focus=None``: no
    focused probes (the schedule alone). ``stop``: end early once the findings satisfy it.
    """
    interval = cluster.interval_s
    t0 = round_start(round_index(start_ts, interval), interval)
    builder = cluster.builder
    pol = DiagnosisPolicy()
    sus_pol = SuspectPolicy(min_samples=pol.min_samples, healthy_ratio=pol.healthy_ratio,
                            dead_ratio=pol.dead_ratio,
                            max_suspects=focus.max_suspects if focus is not None else 0)  # fmt: skip
    pending: list[tuple[int, dict[str, list[ProbeTarget]]]] = []
    window: list[list[ProbeResult]] = []
    asked: list[Question] = []
    out: list[LoopRound] = []
    for r in range(rounds):
        in_force: dict[str, list[ProbeTarget]] = {}
        for at, heads in pending:
            if at <= r:
                in_force = heads
        gen = simulate(
            cluster, rounds=1, start_ts=t0 + r * interval, seed=seed * 7919 + r, focus=in_force,
            faults=[dataclasses.replace(f, start_s=f.start_s - r * interval, end_s=f.end_s - r * interval)
                    for f in faults],
        )  # fmt: skip
        window = [*window[-(window_rounds - 1) :], gen.records] if window_rounds > 1 else [gen.records]
        records = [x for w in window for x in w]
        ev = evidence_from_records(
            records, topology=cluster.topology(), nodes=cluster.nodes, stops=gen.stops,
            recent_s=interval if window_rounds > 1 else None,
        )  # fmt: skip
        findings = diagnose(ev, policy=pol)
        found = frozenset(named(findings))
        taken: tuple[Question, ...] = ()
        changed = 0
        if focus is not None:
            asked = suspects(ev.table, findings, previous=asked, policy=sus_pol)
            chosen = builder.focus(asked, focus)
            taken = chosen.suspects
            last = pending[-1][1] if pending else {}
            now = {a: list(h.focus) for a, h in chosen.heads.items()}
            changed = sum(1 for a in {*last, *now} if last.get(a) != now.get(a))
            pending.append((r + 1 + lag_rounds, now))
        focused = sum(len(v) for v in in_force.values())
        out.append(
            LoopRound(
                index=r,
                found=found,
                suspects=taken,
                focus_probes=focused,
                probes=len(gen.records),
                focused_agents=changed,
            )
        )
        if stop is not None and stop(found):
            break
    return out


def first_round(loop: Sequence[LoopRound], expected: set[tuple[str, frozenset[str]]]) -> int | None:
    """The first round (1-based: rounds of evidence) after which every expected finding is named."""
    for lr in loop:
        if expected <= lr.found:
            return lr.index + 1
    return None


# ----------------------------------------------------------------- what tests compare


def expected_findings(cluster: Cluster, faults: Sequence[Fault]) -> set[tuple[str, frozenset[str]]]:
    """What diagnosis must name for these faults: (kind, nodes)."""
    out: set[tuple[str, frozenset[str]]] = set()
    for f in faults:
        if f.kind == "nlb-hairpin":
            # Every client is hairpinned; an isolated node has no NLB success to show it.
            isolated = {x for g in faults if g.kind == "node-isolated" for x in g.nodes}
            out.add((f.kind, frozenset(cluster.nodes) - isolated))
        elif f.kind in ("nlb-5tuple-collision", "dns-timeouts", "zone-partition", "zone-degraded"):
            out.add((f.kind, frozenset()))
        else:
            out.add((f.kind, frozenset(f.nodes)))
    return out


def evidence(
    cluster: Cluster,
    *,
    rounds: int,
    faults: Sequence[Fault] = (),
    events: Sequence[Event] = (),
    seed: int = 0,
    fault_rounds: tuple[int, int] | None = None,
    recent_rounds: int | None = None,
) -> Evidence:
    """Evidence over a generated window (with ``recent`` over its last rounds if asked)."""
    gen = simulate(cluster, rounds=rounds, faults=faults, events=events, seed=seed, fault_rounds=fault_rounds)
    recent_s = None if recent_rounds is None else recent_rounds * cluster.interval_s
    return evidence_from_records(
        gen.records, topology=gen.topology, nodes=gen.nodes, recent_s=recent_s, stops=gen.stops
    )


def completed_at(r: ProbeResult, *, timeout_s: float) -> float:
    """When the agent has a result: its probe's end (a timed-out one a timeout after its
    stamp; a refused or reset one at once). Its reporter delivers it at its next flush."""
    if r.latency_s is not None:
        return r.ts + r.latency_s
    return r.ts + (timeout_s if r.outcome is Outcome.TIMEOUT else 0.0)


def named(findings: Iterable[Finding]) -> set[tuple[str, frozenset[str]]]:
    """(kind, nodes) of each finding: what property tests compare."""
    return {(f.kind, frozenset(f.nodes)) for f in findings}


def heal(
    records: Sequence[ProbeResult], where: Callable[[ProbeResult], bool], share: float, *, seed: int
) -> list[ProbeResult]:
    """Turn ``share`` of the failed records matching ``where`` into fast successes (peer probes)."""
    rng = random.Random(seed)
    out = []
    for r in records:
        if r.outcome is not Outcome.OK and r.dst_node is not None and where(r) and rng.random() < share:
            out.append(msgspec.structs.replace(r, outcome=Outcome.OK, latency_s=0.001, seen_src_ip=r.src_ip))
        else:
            out.append(r)
    return out


def break_(records: Sequence[ProbeResult], where: Callable[[ProbeResult], bool]) -> list[ProbeResult]:
    """Make every record matching ``where`` a timeout (balanced targets lose their serving node)."""
    out = []
    for r in records:
        if not (where(r) and r.outcome is Outcome.OK):
            out.append(r)
            continue
        keep_dst = r.path.endswith(("-to-pod", "-to-host"))
        out.append(
            msgspec.structs.replace(
                r,
                outcome=Outcome.TIMEOUT,
                latency_s=None,
                seen_src_ip=None,
                dst_node=r.dst_node if keep_dst else None,
                dst_kind=r.dst_kind if keep_dst else None,
            )
        )
    return out
