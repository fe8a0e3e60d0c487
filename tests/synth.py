"""A synthetic cluster: probe results for N nodes with chosen faults, following prober's schedule.

What it models, so diagnosis is tested against the shape real records have:

* one pod-network and one host-network agent per node;
* rounds of ``interval_s``; each agent probes ``k`` peers per round from a rotating
  window over the ring (every node receives exactly k peer visits per round), and
  on each peer: its pod and host echoes over HTTP and UDP and its NodePort;
* same-node targets every round: the node's other agent (HTTP, UDP), the
  ``service-local`` Service and the node's own NodePort;
* shared targets at a fan-in stride (each agent every ``every`` rounds, phase from
  its index): the ClusterIP Service (HTTP, UDP, backend chosen uniformly among the
  nodes' pod agents), each NLB zone address (HTTP, the NLB picks a node: any node
  with cross-zone on, else one of the address's zone), DNS and an external target;
* every ``pair_every`` rounds an agent sends two NLB probes to two zone addresses
  from one source port at once (the collision check).

Faults act on packets and connections the way the lab's kernel knobs do:
``node-unreachable`` drops new inbound connections, ``node-isolated`` everything in
and out, ``pair-blocked`` new connections from A to B (and B to A unless one-way),
``packet-loss`` drops each packet through the node with the given chance per
direction (TCP retries the SYN after 1 s and 3 s within the probe timeout),
``nlb-hairpin`` fails NLB probes the NLB sends back to the client's node,
``bridge-netfilter`` fails pod-to-Service probes whose backend is on the node and
pod-to-service-local, ``snat-asymmetric`` fails one network of a node to the
external target (or, variant ``nodeport``, the pod to other nodes' NodePorts),
``nlb-5tuple-collision`` resets the second probe of a pair when both went to one
target (variant ``retransmit``: it succeeds a SYN retransmit later, as with a probe
timeout over a second), ``dns-timeouts`` times out DNS queries at the given rate. Background noise
fails any probe with a small chance. Three faults no rule names exercise the
localizer: ``pod-agent-down`` (the node's pod agent refuses and sends nothing),
``service-down`` and ``nlb-address-down``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from prober.diagnose.catalogue import BY_KIND
from prober.model import Finding, FindingKind, Outcome, ProbeResult, Proto, SrcKind
from prober.stats import Evidence, Topology

#: Every failure mode a rule names: the catalogue's but the localizer's, in the order
#: findings are listed.
KINDS = tuple(k.value for k in FindingKind if k in BY_KIND and k != FindingKind.UNEXPLAINED)
#: Faults no rule names, for the localizer: a node's pod agent down (refuses, sends
#: nothing), the ClusterIP Service black-holed, one NLB zone address black-holed.
UNNAMED_KINDS = ("pod-agent-down", "service-down", "nlb-address-down")

_TARGET_KINDS = ("pod", "host", "service", "service-local", "nodeport", "nlb", "external", "dns")
SERVICE = "service/prober-echo"
SERVICE_LOCAL = "service-local/prober-echo-local"
NODEPORT = "nodeport/prober-echo"
NLB = "nlb/prober-echo"
EXTERNAL = "external/example"
DNS = "dns/kube-dns"


#: emit(ts, src, kind, target kind, target, proto, latency or None, target ip, port, dst, dst kind,
#:      src port=None, outcome=None)
Emit = Callable[..., None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    kind: str
    nodes: tuple[str, ...] = ()
    rate: float = 0.0  # packet-loss: per direction; dns-timeouts: per query
    variant: str = ""  # snat-asymmetric: "pod" (default), "host", "nodeport"; collision: "retransmit"
    one_way: bool = False  # pair-blocked: only nodes[0] -> nodes[1]
    zone: int = 0  # nlb-address-down: which zone address

    def __post_init__(self) -> None:
        if self.kind not in KINDS + UNNAMED_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    n_nodes: int
    zones: int = 3
    peers_per_round: int = 5  # k, capped at n_nodes - 1
    shared_budget: int = 50  # probes per round each shared target receives, cluster-wide
    pair_every: int = 3
    interval_s: float = 10.0
    timeout_s: float = 2.0
    noise: float = 0.0005
    cross_zone: bool = True

    @property
    def nodes(self) -> tuple[str, ...]:
        width = max(3, len(str(self.n_nodes - 1)))
        return tuple(f"node-{i:0{width}d}" for i in range(self.n_nodes))

    @property
    def k(self) -> int:
        return max(1, min(self.n_nodes - 1, self.peers_per_round))

    @property
    def every(self) -> int:
        """Fan-in stride: agents probe each shared target every this many rounds."""
        return max(1, math.ceil(2 * self.n_nodes / self.shared_budget))

    @property
    def n_zones(self) -> int:
        return max(1, min(self.zones, self.n_nodes))

    def zone(self, i: int) -> str:
        return f"zone-{i % self.n_zones}"

    def topology(self) -> Topology:
        return Topology(zones={name: self.zone(i) for i, name in enumerate(self.nodes)})


def node_ip(i: int) -> str:
    return f"172.20.{i // 256}.{i % 256}"


def pod_ip(i: int) -> str:
    return f"10.{100 + i // 256}.{i % 256}.10"


def nlb_ip(z: int) -> str:
    return f"172.31.200.{10 + z}"


@dataclass(slots=True)
class _State:
    """Which faults are active, resolved to node indices."""

    unreachable: set[int] = field(default_factory=set)
    isolated: set[int] = field(default_factory=set)
    blocked: set[tuple[int, int]] = field(default_factory=set)
    loss: dict[int, float] = field(default_factory=dict)
    hairpin: bool = False
    collision: bool = False
    collision_retransmit: bool = False
    bridge: set[int] = field(default_factory=set)
    snat: dict[int, str] = field(default_factory=dict)
    dns_timeout: float = 0.0
    pod_down: set[int] = field(default_factory=set)
    service_down: bool = False
    zone_down: set[int] = field(default_factory=set)


def _state(cluster: Cluster, faults: Iterable[Fault]) -> _State:
    index = {name: i for i, name in enumerate(cluster.nodes)}
    st = _State()
    for f in faults:
        ids = [index[n] for n in f.nodes]
        if f.kind == "node-unreachable":
            st.unreachable.update(ids)
        elif f.kind == "node-isolated":
            st.isolated.update(ids)
        elif f.kind == "pair-blocked":
            a, b = ids
            st.blocked.add((a, b))
            if not f.one_way:
                st.blocked.add((b, a))
        elif f.kind == "packet-loss":
            for i in ids:
                st.loss[i] = f.rate
        elif f.kind == "nlb-hairpin":
            st.hairpin = True
        elif f.kind == "nlb-5tuple-collision":
            st.collision = True
            st.collision_retransmit = f.variant == "retransmit"
        elif f.kind == "bridge-netfilter":
            st.bridge.update(ids)
        elif f.kind == "snat-asymmetric":
            for i in ids:
                st.snat[i] = f.variant or "pod"
        elif f.kind == "dns-timeouts":
            st.dns_timeout = f.rate
        elif f.kind == "pod-agent-down":
            st.pod_down.update(ids)
        elif f.kind == "service-down":
            st.service_down = True
        elif f.kind == "nlb-address-down":
            st.zone_down.add(f.zone)
    return st


class _Sim:
    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.c = cluster
        self.rng = rng
        self.nodes = cluster.nodes
        self.st = _State()

    # -- packets and connections ------------------------------------------------

    def _pass(self, a: int, b: int) -> bool:
        """One packet from node a to node b (a != b) survives the lossy nodes."""
        loss = self.st.loss
        if not loss:
            return True
        p = (1.0 - loss.get(a, 0.0)) * (1.0 - loss.get(b, 0.0))
        return p >= 1.0 or self.rng.random() < p

    def _opens(self, a: int, b: int) -> bool:
        """Can a new connection from node a reach node b at all?"""
        st = self.st
        if a in st.isolated or b in st.isolated or b in st.unreachable:
            return False
        return (a, b) not in st.blocked

    def tcp(self, a: int, b: int) -> float | None:
        """Latency of a TCP exchange a -> b across the network, None on timeout."""
        if not self._opens(a, b):
            return None
        base = 0.0005 + self.rng.random() * 0.0015
        t = 0.0
        for syn_at in (0.0, 1.0, 3.0):
            if syn_at >= self.c.timeout_s:
                return None
            if self._pass(a, b) and self._pass(b, a):
                t = syn_at
                break
        else:
            return None
        while not (self._pass(a, b) and self._pass(b, a)):  # request and response, RTO ~0.2 s
            t += 0.2
            if t >= self.c.timeout_s:
                return None
        return t + base

    def udp(self, a: int, b: int) -> float | None:
        if not self._opens(a, b):
            return None
        if self._pass(a, b) and self._pass(b, a):
            return 0.0003 + self.rng.random() * 0.001
        return None

    def outside(self, a: int) -> bool:
        """Node a reaches something outside the cluster and back (no node in between)."""
        if a in self.st.isolated:
            return False
        keep = 1.0 - self.st.loss.get(a, 0.0)
        return keep >= 1.0 or self.rng.random() < keep * keep

    @staticmethod
    def local() -> float:
        return 0.0002


def generate(
    cluster: Cluster,
    *,
    rounds: int,
    faults: Sequence[Fault] = (),
    seed: int = 0,
    start_ts: float = 1_763_856_000.0,
    fault_rounds: tuple[int, int] | None = None,
) -> list[ProbeResult]:
    """Records of ``rounds`` probe rounds; faults are active in ``fault_rounds`` (default: all)."""
    rng = random.Random(seed)
    sim = _Sim(cluster, rng)
    active = _state(cluster, faults)
    quiet = _State()
    nodes = cluster.nodes
    n = cluster.n_nodes
    k = cluster.k
    every = cluster.every
    zones = cluster.n_zones
    by_zone = [[i for i in range(n) if i % zones == z] for z in range(zones)]
    out: list[ProbeResult] = []
    lo, hi = fault_rounds if fault_rounds is not None else (0, rounds)

    paths = {(kind, tk): f"{kind.value}-to-{tk}" for kind in SrcKind for tk in _TARGET_KINDS}
    src_ips = {SrcKind.POD: [pod_ip(i) for i in range(n)], SrcKind.HOST: [node_ip(i) for i in range(n)]}
    noise = cluster.noise
    interval = cluster.interval_s

    def emit(  # noqa: PLR0917 - positional on purpose: one probe per line at the call sites
        ts: float,
        src: int,
        kind: SrcKind,
        tkind: str,
        target: str,
        proto: Proto,
        latency: float | None,
        target_ip: str,
        port: int,
        dst: int | None,
        dst_kind: SrcKind | None,
        src_port: int | None = None,
        outcome: Outcome | None = None,
    ) -> None:
        if latency is not None and noise and rng.random() < noise:
            latency = None
        if dst is not None and dst_kind is SrcKind.POD and dst in sim.st.pod_down:
            latency, outcome = None, Outcome.REFUSED  # the node answers; nobody listens
        if outcome is None:
            outcome = Outcome.OK if latency is not None else Outcome.TIMEOUT
        ok = outcome is Outcome.OK
        named = ok or tkind in ("pod", "host")  # peers are known in advance; others only on success
        src_ip = src_ips[kind][src]
        out.append(
            ProbeResult(
                ts=ts,
                path=paths[(kind, tkind)],
                src_node=nodes[src],
                src_kind=kind,
                src_ip=src_ip,
                target=target,
                target_ip=target_ip,
                target_port=port,
                proto=proto,
                dst_node=nodes[dst] if dst is not None and named else None,
                dst_kind=dst_kind if named else None,
                outcome=outcome,
                latency_s=latency if ok else None,
                seen_src_ip=src_ip if ok else None,
                src_port=src_port,
            )
        )

    for r in range(rounds):
        sim.st = active if lo <= r < hi else quiet
        t0 = start_ts + r * interval
        for i in range(n):
            for kind in (SrcKind.POD, SrcKind.HOST):
                if kind is SrcKind.POD and i in sim.st.pod_down:
                    continue  # a dead agent sends nothing
                _round(sim, emit, r, i, kind=kind, t0=t0, k=k, every=every, zones=zones, by_zone=by_zone)
    return out


def _round(
    sim: _Sim,
    emit: Emit,
    r: int,
    i: int,
    *,
    kind: SrcKind,
    t0: float,
    k: int,
    every: int,
    zones: int,
    by_zone: list[list[int]],
) -> None:
    """One agent's probes in round r: peers, same-node targets, shared targets, the NLB pair."""
    c, rng, st, nodes = sim.c, sim.rng, sim.st, sim.nodes
    n = c.n_nodes

    def at() -> float:
        return t0 + rng.random() * c.interval_s

    # Peers: k consecutive ring neighbours from a rotating offset.
    for j in range(k):
        b = (i + 1 + (r * k + j) % (n - 1)) % n if n > 1 else i
        for tk, dk in (("pod", SrcKind.POD), ("host", SrcKind.HOST)):
            tip = pod_ip(b) if dk is SrcKind.POD else node_ip(b)
            emit(at(), i, kind, tk, f"{tk}/{nodes[b]}", Proto.HTTP, sim.tcp(i, b), tip, 8080, b, dk)
            emit(at(), i, kind, tk, f"{tk}/{nodes[b]}", Proto.UDP, sim.udp(i, b), tip, 8081, b, dk)
        lat = sim.tcp(i, b)
        if kind is SrcKind.POD and st.snat.get(i) == "nodeport":
            lat = None
        emit(at(), i, kind, "nodeport", NODEPORT, Proto.HTTP, lat, node_ip(b), 30080, b, SrcKind.POD)

    # Same node, every round: the other agent, service-local, the own NodePort.
    other = SrcKind.HOST if kind is SrcKind.POD else SrcKind.POD
    oip = node_ip(i) if other is SrcKind.HOST else pod_ip(i)
    label = f"{other.value}/{nodes[i]}"
    emit(at(), i, kind, other.value, label, Proto.HTTP, sim.local(), oip, 8080, i, other)
    emit(at(), i, kind, other.value, label, Proto.UDP, sim.local(), oip, 8081, i, other)
    broken = kind is SrcKind.POD and i in st.bridge  # pod -> ClusterIP -> pod on the same bridge
    lat = None if broken else sim.local()
    emit(at(), i, kind, "service-local", SERVICE_LOCAL, Proto.HTTP, lat, "10.96.0.11", 80, i, SrcKind.POD)
    emit(at(), i, kind, "nodeport", NODEPORT, Proto.HTTP, sim.local(), node_ip(i), 30080, i, SrcKind.POD)

    phase = (2 * i + (kind is SrcKind.HOST)) % every
    if (r + phase) % every == 0:
        # ClusterIP Service: kube-proxy picks any node's pod agent.
        for proto, port in ((Proto.HTTP, 80), (Proto.UDP, 81)):
            b = rng.randrange(n)
            if b == i:
                lat = None if broken else sim.local()
            else:
                lat = sim.tcp(i, b) if proto is Proto.HTTP else sim.udp(i, b)
            if st.service_down:
                lat = None
            emit(at(), i, kind, "service", SERVICE, proto, lat, "10.96.0.10", port, b, SrcKind.POD)
        # NLB: one probe per zone address, each from its own source port.
        for z in range(zones):
            b, lat = _nlb(sim, by_zone, i, z)
            port = rng.randrange(32768, 61000)
            emit(at(), i, kind, "nlb", NLB, Proto.HTTP, lat, nlb_ip(z), 80, b, SrcKind.POD, port)
        lat = 0.004 if sim.outside(i) and rng.random() >= st.dns_timeout else None
        emit(at(), i, kind, "dns", DNS, Proto.DNS, lat, "10.96.0.53", 53, None, None)
        lat = 0.02 if sim.outside(i) and st.snat.get(i) != kind.value else None
        emit(at(), i, kind, "external", EXTERNAL, Proto.TCP, lat, "203.0.113.10", 443, None, None)

    if zones >= 2 and (r + phase) % c.pair_every == 0:
        # Two zone addresses at once from one source port: the 5-tuple collision check.
        z1, z2 = rng.sample(range(zones), 2)
        port = rng.randrange(32768, 61000)
        t = at()
        b1, lat1 = _nlb(sim, by_zone, i, z1)
        b2, lat2 = _nlb(sim, by_zone, i, z2)
        collide = st.collision and lat1 is not None and lat2 is not None and b1 == b2
        if collide and st.collision_retransmit and lat2 is not None:
            lat2, collide = lat2 + 1.0, False  # the SYN retransmit, once the first flow is gone
        emit(t, i, kind, "nlb", NLB, Proto.HTTP, lat1, nlb_ip(z1), 80, b1, SrcKind.POD, port)
        emit(t + 0.001, i, kind, "nlb", NLB, Proto.HTTP, None if collide else lat2, nlb_ip(z2), 80, b2,
             SrcKind.POD, port, Outcome.RESET if collide else None)  # fmt: skip


def _nlb(sim: _Sim, by_zone: list[list[int]], i: int, z: int) -> tuple[int, float | None]:
    """The NLB picks a target node for a probe from node i to zone address z."""
    pool = range(sim.c.n_nodes) if sim.c.cross_zone else by_zone[z]
    b = sim.rng.choice(pool)
    st = sim.st
    if (st.hairpin and b == i) or z in st.zone_down:
        return b, None
    if i in st.isolated:
        return b, None
    if b == i:  # out to the NLB and back in: a new inbound connection to node i
        return b, 0.001 if i not in st.unreachable and sim.outside(i) else None
    return b, sim.tcp(i, b)


def expected_findings(cluster: Cluster, faults: Sequence[Fault]) -> set[tuple[str, frozenset[str]]]:
    """What diagnosis must name for these faults: (kind, nodes)."""
    out: set[tuple[str, frozenset[str]]] = set()
    for f in faults:
        if f.kind == "nlb-hairpin":
            # Every client is hairpinned; an isolated node has no NLB success to show it.
            isolated = {x for g in faults if g.kind == "node-isolated" for x in g.nodes}
            out.add((f.kind, frozenset(cluster.nodes) - isolated))
        elif f.kind in ("nlb-5tuple-collision", "dns-timeouts"):
            out.add((f.kind, frozenset()))
        else:
            out.add((f.kind, frozenset(f.nodes)))
    return out


def evidence(
    cluster: Cluster,
    *,
    rounds: int,
    faults: Sequence[Fault] = (),
    seed: int = 0,
    fault_rounds: tuple[int, int] | None = None,
    recent_rounds: int | None = None,
) -> Evidence:
    """Evidence over a generated window (with ``recent`` over its last rounds if asked)."""
    records = generate(cluster, rounds=rounds, faults=faults, seed=seed, fault_rounds=fault_rounds)
    recent_s = None if recent_rounds is None else recent_rounds * cluster.interval_s
    return Evidence.from_records(records, topology=cluster.topology(), nodes=cluster.nodes, recent_s=recent_s)


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
