"""Lab faults: the ``KIND[@NODE[,NODE]][:ARG]`` syntax, its checks, and what each fault sets.

Pure. :func:`parse_fault` reads one ``--fault`` value, :func:`check_faults` holds a set
of faults against a lab (node names, CNI mode), :func:`choose_cni` picks the CNI a set
of faults needs, and :func:`fault_effects` turns the active set into the complete
fault-relevant kernel state of the lab: node sysctls, each NLB node's behaviour,
the router's drop rules and its routes to the pod addresses. The executor applies
that state whole, so switching a fault off is applying the state without it.

Each fault is made with the knob that causes it in production. Which faults there
are, their syntax and what they turn are declared with the failure mode each
provokes (its ``lab_fault``, :mod:`prober.diagnose.catalogue`); ``FAULTS`` reads them,
and this module builds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prober.diagnose.catalogue import BY_KIND
from prober.diagnose.mode import Arity, LabFault
from prober.errors import UsageError
from prober.model import FindingKind
from prober_lab.iptables import NlbConfig
from prober_lab.plan import Cni, Node, Plan
from prober_lab.topology import Sysctl, node_eth0_rp_filter, pod_routes


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultInfo:
    """A lab fault: the finding it provokes and how it is written and built (its mode's :class:`LabFault`)."""

    kind: FindingKind
    lab: LabFault
    needs_cni: Cni | None


#: Every fault the lab can switch on: one per failure mode that declares a ``lab_fault``,
#: in the order findings are listed.
FAULTS: dict[FindingKind, FaultInfo] = {
    k: FaultInfo(kind=k, lab=lab, needs_cni=None if lab.cni is None else Cni(lab.cni))
    for k in FindingKind
    if (lab := BY_KIND[k].lab_fault) is not None
}


class FaultError(UsageError, ValueError):
    """A fault that cannot be built; the message says what to change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    kind: FindingKind  # the finding the fault provokes
    nodes: tuple[str, ...] = ()  # the nodes after @ (zone-partition: the two zones; zone-degraded: the one)
    rate: float | None = None

    def __str__(self) -> str:
        text = self.kind.value
        if self.nodes:
            text += "@" + ",".join(self.nodes)
        if self.rate is not None:
            text += f":{self.rate:g}"
        return text


def _node_name(text: str) -> str:
    text = text.strip()
    if len(text) == 1 and text.isalpha():
        return f"node-{text.lower()}"
    return text


def _rate(text: str) -> float:
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise FaultError(f"rate {text!r} is not a number (use 0.1 or 10%)") from None
    if not 0 < value < 1:
        raise FaultError(f"rate {text!r} must be between 0 and 1 (exclusive), or 0% to 100%")
    return value


def _zone_name(text: str) -> str:
    text = text.strip()
    if len(text) == 1 and text.isalpha():
        return f"zone-{text.lower()}"
    return text


def fault_kind(text: str) -> FindingKind | None:
    """The kind of the lab fault named ``text`` (``packet-loss``), None if the lab has none."""
    name = text.strip()
    return next((k for k in FAULTS if k.value == name), None)


def parse_fault(text: str) -> Fault:
    """``KIND[@NODE[,NODE]][:ARG]`` → :class:`Fault`; raises :class:`FaultError`."""
    spec = text.strip()
    head, _, arg = spec.partition(":")
    kind_text, at, nodes_text = head.partition("@")
    kind = fault_kind(kind_text)
    if kind is None:
        known = ", ".join(k.value for k in FAULTS)
        raise FaultError(f"unknown fault {kind_text!r} in {text!r}; known faults: {known}")
    info = FAULTS[kind].lab
    name = _zone_name if info.arity in {Arity.ZONE_PAIR, Arity.ONE_ZONE} else _node_name
    nodes = tuple(name(n) for n in nodes_text.split(",")) if at else ()
    if any(not n for n in nodes):
        raise FaultError(f"{text!r}: empty node name; expected {info.usage}")
    if len(set(nodes)) != len(nodes):
        raise FaultError(f"{text!r}: a node is named twice")
    if info.arity is Arity.NONE and nodes:
        raise FaultError(f"{text!r}: {kind} applies to the whole NLB and takes no @NODE")
    if info.arity is Arity.ONE_OR_MORE and not nodes:
        raise FaultError(f"{text!r}: name the node, e.g. {kind}@node-b")
    if info.arity is Arity.PAIR and len(nodes) != 2:
        raise FaultError(f"{text!r}: name exactly two nodes, e.g. {kind}@node-a,node-b")
    if info.arity is Arity.ZONE_PAIR and len(nodes) != 2:
        raise FaultError(f"{text!r}: name exactly two zones, e.g. {kind}@zone-a,zone-b")
    if info.arity is Arity.ONE_ZONE and len(nodes) != 1:
        raise FaultError(f"{text!r}: name exactly one zone, e.g. {kind}@zone-b")
    if info.arity is Arity.OPTIONAL_ONE and len(nodes) > 1:
        raise FaultError(f"{text!r}: name at most one target node")
    rate: float | None = None
    if info.takes_rate:
        if not arg and info.default_rate is not None:
            arg = f"{info.default_rate:g}"
        if not arg:
            raise FaultError(f"{text!r}: give the loss rate, e.g. {kind}@node-b:10%")
        rate = _rate(arg)
    elif arg:
        raise FaultError(f"{text!r}: {kind} takes no :ARG")
    return Fault(kind=kind, nodes=nodes, rate=rate)


def choose_cni(faults: Iterable[Fault], requested: Cni | None) -> Cni:
    """The CNI mode the faults need; ``requested`` wins if it fits, else a clear error."""
    needs: dict[Cni, list[str]] = {}
    for f in faults:
        cni = FAULTS[f.kind].needs_cni
        if cni is not None:
            needs.setdefault(cni, []).append(str(f))
    if len(needs) > 1:
        detail = "; ".join(f"{', '.join(fs)} need --cni {cni}" for cni, fs in needs.items())
        raise FaultError(f"these faults cannot share one lab: {detail}; run them in separate labs")
    if requested is not None:
        for cni, fs in needs.items():
            if cni is not requested:
                raise FaultError(f"{', '.join(fs)} needs --cni {cni}, but --cni {requested} was asked for")
        return requested
    return next(iter(needs), Cni.BRIDGE)


def check_faults(faults: Sequence[Fault], plan: Plan) -> None:
    """Raise :class:`FaultError` unless every fault can be built in this lab."""
    known = plan.node_names
    for f in faults:
        if FAULTS[f.kind].lab.arity in {Arity.ZONE_PAIR, Arity.ONE_ZONE}:
            _check_zones(f, plan)
            continue
        for n in f.nodes:
            if n not in known:
                raise FaultError(f"{f}: no node {n!r} in this lab (nodes: {', '.join(known)})")
        need = FAULTS[f.kind].needs_cni
        if need is not None and need is not plan.cni:
            raise FaultError(
                f"{f} needs a {need} CNI lab, this lab runs --cni {plan.cni}; "
                f"start one with: prober lab up --cni {need}"
            )
    kinds = [f.kind for f in faults]
    if kinds.count(FindingKind.NLB_5TUPLE_COLLISION) > 1:
        raise FaultError("nlb-5tuple-collision can be on only once")


def _check_zones(f: Fault, plan: Plan) -> None:
    for z in f.nodes:
        if z not in plan.zones:
            raise FaultError(f"{f}: no zone {z!r} in this lab (zones: {', '.join(plan.zones)})")
        need = 2 if f.kind is FindingKind.ZONE_PARTITION else 3
        if len(plan.zone_nodes(z)) < need:
            what = "a zone partition needs two nodes in each zone" if need == 2 else "a degraded zone, three"
            raise FaultError(
                f"{f}: {z} has {len(plan.zone_nodes(z))} node(s); {what} (a zone of fewer is its nodes' "
                f"fault): start the lab with more --nodes, e.g. "
                f"prober lab up --nodes {need * len(plan.zones)} --zones {len(plan.zones)}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultEffects:
    """The complete fault-relevant state of a lab (clean values where no fault applies)."""

    node_sysctls: dict[str, tuple[Sysctl, ...]]
    nlb: dict[str, NlbConfig]  # by zone
    router_rules: tuple[str, ...]
    #: ``ip route replace`` arguments for the router's main table: every node's pod routes.
    router_routes: tuple[str, ...]


def _router_ifs(plan: Plan, node: Node) -> list[str]:
    ifs = [node.router_if]
    if plan.cni is Cni.VPC:
        ifs.append(node.router_eni_if)
    return ifs


def _zone_ifs(plan: Plan, zone: str) -> list[str]:
    ifs = [i for n in plan.zone_nodes(zone) for i in _router_ifs(plan, n)]
    return ifs + [nlb.router_if for nlb in plan.nlbs if nlb.zone == zone]


def fault_effects(plan: Plan, faults: Sequence[Fault]) -> FaultEffects:
    check_faults(faults, plan)
    active = {f.kind for f in faults}

    def on(kind: FindingKind, node: str) -> bool:
        return any(f.kind is kind and node in f.nodes for f in faults)

    sysctls: dict[str, tuple[Sysctl, ...]] = {}
    for n in plan.nodes:
        values: list[Sysctl] = []
        if plan.cni is Cni.BRIDGE:
            brnf = "0" if on(FindingKind.BRIDGE_NETFILTER, n.name) else "1"
            values.append(("net/bridge/bridge-nf-call-iptables", brnf))
        rp = 1 if on(FindingKind.SNAT_ASYMMETRIC, n.name) else node_eth0_rp_filter(plan)
        values.append(("net/ipv4/conf/eth0/rp_filter", str(rp)))
        sysctls[n.name] = tuple(values)

    preserve = bool(active & {FindingKind.NLB_HAIRPIN, FindingKind.NLB_5TUPLE_COLLISION})
    # Cross-zone load balancing (every zone's NLB node forwards to every node) except for
    # the hairpin alone, which keeps each zone to its own nodes: without cross-zone, two
    # zone addresses never reach one target, so the hairpin shows without collisions.
    cross_zone = FindingKind.NLB_5TUPLE_COLLISION in active or FindingKind.NLB_HAIRPIN not in active
    nlb: dict[str, NlbConfig] = {}
    for z in plan.nlbs:
        targets = plan.node_names if cross_zone else tuple(n.name for n in plan.zone_nodes(z.zone))
        for f in faults:
            if f.kind is FindingKind.NLB_5TUPLE_COLLISION and f.nodes:
                targets = (f.nodes[0],)
        nlb[z.zone] = NlbConfig(preserve_client_ip=preserve, targets=targets)

    # The collector's network is out of band: faults never cut reporting.
    rules = [f"-i {plan.ctl_router_if} -j RETURN", f"-o {plan.ctl_router_if} -j RETURN"]
    for f in faults:
        comment = f'-m comment --comment "{f}"'
        if f.kind is FindingKind.NODE_ISOLATED:
            for name in f.nodes:
                for i in _router_ifs(plan, plan.node(name)):
                    rules += [f"-i {i} {comment} -j DROP", f"-o {i} {comment} -j DROP"]
        elif f.kind is FindingKind.NODE_UNREACHABLE:
            for name in f.nodes:
                for i in _router_ifs(plan, plan.node(name)):
                    rules.append(f"-o {i} -m conntrack --ctstate NEW {comment} -j DROP")
        elif f.kind is FindingKind.PAIR_BLOCKED:
            a, b = (plan.node(n) for n in f.nodes)
            for ia in _router_ifs(plan, a):
                for ib in _router_ifs(plan, b):
                    rules += [f"-i {ia} -o {ib} {comment} -j DROP", f"-i {ib} -o {ia} {comment} -j DROP"]
        elif f.kind is FindingKind.ZONE_PARTITION:
            # Each side: its nodes' interfaces and its NLB node's; DNS and the external
            # server are regional (replicas in every zone) and stay reachable.
            za, zb = (_zone_ifs(plan, z) for z in f.nodes)
            for ia in za:
                for ib in zb:
                    rules += [f"-i {ia} -o {ib} {comment} -j DROP", f"-i {ib} -o {ia} {comment} -j DROP"]
        elif f.kind is FindingKind.ZONE_DEGRADED:
            # Every interface of the zone's nodes loses packets both ways: a probe between
            # two of its nodes crosses two lossy links, one to another zone crosses one.
            assert f.rate is not None
            stat = f"-m statistic --mode random --probability {f.rate:.6f}"
            for node in plan.zone_nodes(f.nodes[0]):
                for i in _router_ifs(plan, node):
                    rules += [f"-i {i} {stat} {comment} -j DROP", f"-o {i} {stat} {comment} -j DROP"]
        elif f.kind is FindingKind.PACKET_LOSS:
            assert f.rate is not None
            stat = f"-m statistic --mode random --probability {f.rate:.6f}"
            for name in f.nodes:
                for i in _router_ifs(plan, plan.node(name)):
                    rules += [f"-i {i} {stat} {comment} -j DROP", f"-o {i} {stat} {comment} -j DROP"]
    # A route the fabric lost is a blackhole route: its packets are dropped without a word.
    routes = [
        f"replace {r}"
        for n in plan.nodes
        for r in pod_routes(plan, n, routed=not on(FindingKind.POD_NETWORK_ISOLATED, n.name))
    ]
    return FaultEffects(node_sysctls=sysctls, nlb=nlb, router_rules=tuple(rules), router_routes=tuple(routes))


def describe_faults() -> str:
    """The ``--fault`` help text: every fault, what it does and its production equivalent."""
    return "\n".join(
        f"{i.lab.usage}: {i.lab.what}. In production: {i.lab.production}." for i in FAULTS.values()
    )
