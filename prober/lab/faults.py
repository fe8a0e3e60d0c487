"""Lab faults: the ``KIND[@NODE[,NODE]][:ARG]`` syntax, its checks, and what each fault sets.

Pure. :func:`parse_fault` reads one ``--fault`` value, :func:`check_faults` holds a set
of faults against a lab (node names, CNI mode), :func:`choose_cni` picks the CNI a set
of faults needs, and :func:`fault_effects` turns the active set into the complete
fault-relevant kernel state of the lab: node sysctls, each NLB node's behaviour and
the router's drop rules. The executor applies that state whole, so switching a fault
off is applying the state without it.

Each fault is made with the knob that causes it in production; ``FAULTS`` says which.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prober.errors import UsageError
from prober.lab.iptables import NlbConfig
from prober.lab.plan import Cni, Node, Plan
from prober.lab.topology import Sysctl, node_eth0_rp_filter


class FaultKind(enum.StrEnum):
    BRIDGE_NETFILTER = "bridge-netfilter"
    NLB_HAIRPIN = "nlb-hairpin"
    SNAT_ASYMMETRIC = "snat-asymmetric"
    NLB_5TUPLE_COLLISION = "nlb-5tuple-collision"
    NODE_UNREACHABLE = "node-unreachable"
    NODE_ISOLATED = "node-isolated"
    PAIR_BLOCKED = "pair-blocked"
    PACKET_LOSS = "packet-loss"


class Arity(enum.Enum):
    NONE = "none"  # no @NODE
    ONE_OR_MORE = "one-or-more"  # @NODE[,NODE...]: the fault on each
    PAIR = "pair"  # @A,B
    OPTIONAL_ONE = "optional-one"  # [@NODE]


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultInfo:
    kind: FaultKind
    usage: str
    arity: Arity
    needs_cni: Cni | None
    takes_rate: bool
    what: str
    production: str


FAULTS: dict[FaultKind, FaultInfo] = {
    f.kind: f
    for f in (
        FaultInfo(
            kind=FaultKind.BRIDGE_NETFILTER,
            usage="bridge-netfilter@NODE",
            arity=Arity.ONE_OR_MORE,
            needs_cni=Cni.BRIDGE,
            takes_rate=False,
            what="net.bridge.bridge-nf-call-iptables=0 on NODE: same-bridge replies skip conntrack, "
            "so a pod's ClusterIP connection to a backend on its own node is never un-DNATed",
            production="br_netfilter not loaded (or bridge-nf-call-iptables=0) on a bridge CNI node "
            "(flannel, kubenet, kops; docs/incidents.md#kops-flannel-br-netfilter)",
        ),
        FaultInfo(
            kind=FaultKind.NLB_HAIRPIN,
            usage="nlb-hairpin",
            arity=Arity.NONE,
            needs_cni=None,
            takes_rate=False,
            what="the NLB forwards with the client's own address (no SNAT), each zone's NLB node to "
            "its own zone's nodes (cross-zone off, the NLB default); a client whose node the NLB picks "
            "gets the reply straight from its own node and never completes",
            production="NLB target group attribute preserve_client_ip.enabled=true (the default for "
            "instance targets) with in-cluster clients of the NLB (docs/incidents.md#eks-nlb-hairpin)",
        ),
        FaultInfo(
            kind=FaultKind.SNAT_ASYMMETRIC,
            usage="snat-asymmetric@NODE",
            arity=Arity.ONE_OR_MORE,
            needs_cni=Cni.VPC,
            takes_rate=False,
            what="strict rp_filter on NODE's eth0 while the node SNATs pod traffic to eth0's address: "
            "replies for the secondary-ENI pod fail the reverse-path check (pod 0%, node 100%); "
            "so do NodePort requests for it (the lab's NodePort 30081, amazon-vpc-cni-k8s #75)",
            production="AWS VPC CNI AWS_VPC_K8S_CNI_EXTERNALSNAT=false with net.ipv4.conf.eth0.rp_filter=1 "
            "and pods on a secondary ENI (ip rule from <pod> lookup 2; "
            "docs/incidents.md#eks-migration-cross-wired, docs/incidents.md#vpc-cni-externalsnat-rp-filter)",
        ),
        FaultInfo(
            kind=FaultKind.NLB_5TUPLE_COLLISION,
            usage="nlb-5tuple-collision[@NODE]",
            arity=Arity.OPTIONAL_ONE,
            needs_cni=None,
            takes_rate=False,
            what="client-IP preservation on with cross-zone load balancing: one client port through two "
            "zones' NLB nodes to the same target arrives there as one 5-tuple twice. In-cluster clients "
            "also hairpin in this configuration (diagnosis names both). With @NODE every NLB node "
            "forwards to NODE only, so every same-port pair collides",
            production="NLB cross-zone load balancing on plus preserve_client_ip.enabled=true "
            "(docs/incidents.md#istio-nlb-cross-zone)",
        ),
        FaultInfo(
            kind=FaultKind.NODE_UNREACHABLE,
            usage="node-unreachable@NODE",
            arity=Arity.ONE_OR_MORE,
            needs_cni=None,
            takes_rate=False,
            what="new inbound connections to NODE dropped at the fabric; its own outbound traffic and "
            "replies still flow",
            production="a stateful security group or NACL without the inbound rule",
        ),
        FaultInfo(
            kind=FaultKind.NODE_ISOLATED,
            usage="node-isolated@NODE",
            arity=Arity.ONE_OR_MORE,
            needs_cni=None,
            takes_rate=False,
            what="everything to and from NODE dropped at the fabric (the collector stays reachable)",
            production="a node cut off: ENI detached, route table or NACL denying both ways",
        ),
        FaultInfo(
            kind=FaultKind.PAIR_BLOCKED,
            usage="pair-blocked@NODE,NODE",
            arity=Arity.PAIR,
            needs_cni=None,
            takes_rate=False,
            what="traffic between the two nodes dropped both ways; each still reaches everyone else",
            production="a security group rule missing between two node groups, or an MTU black hole",
        ),
        FaultInfo(
            kind=FaultKind.PACKET_LOSS,
            usage="packet-loss@NODE:RATE",
            arity=Arity.ONE_OR_MORE,
            needs_cni=None,
            takes_rate=True,
            what="each packet to or from NODE dropped with probability RATE (0.1 or 10%) at the fabric "
            "(iptables statistic: this lab needs no netem)",
            production="a lossy link, a failing NIC or an overloaded conntrack/NAT device",
        ),
    )
}


class FaultError(UsageError, ValueError):
    """A fault that cannot be built; the message says what to change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    kind: FaultKind
    nodes: tuple[str, ...] = ()
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


def parse_fault(text: str) -> Fault:
    """``KIND[@NODE[,NODE]][:ARG]`` → :class:`Fault`; raises :class:`FaultError`."""
    spec = text.strip()
    head, _, arg = spec.partition(":")
    kind_text, at, nodes_text = head.partition("@")
    try:
        kind = FaultKind(kind_text.strip())
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise FaultError(f"unknown fault {kind_text!r} in {text!r}; known faults: {known}") from None
    info = FAULTS[kind]
    nodes = tuple(_node_name(n) for n in nodes_text.split(",")) if at else ()
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
    if info.arity is Arity.OPTIONAL_ONE and len(nodes) > 1:
        raise FaultError(f"{text!r}: name at most one target node")
    rate: float | None = None
    if info.takes_rate:
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
    if kinds.count(FaultKind.NLB_5TUPLE_COLLISION) > 1:
        raise FaultError("nlb-5tuple-collision can be on only once")


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultEffects:
    """The complete fault-relevant state of a lab (clean values where no fault applies)."""

    node_sysctls: dict[str, tuple[Sysctl, ...]]
    nlb: dict[str, NlbConfig]  # by zone
    router_rules: tuple[str, ...]


def _router_ifs(plan: Plan, node: Node) -> list[str]:
    ifs = [node.router_if]
    if plan.cni is Cni.VPC:
        ifs.append(node.router_eni_if)
    return ifs


def fault_effects(plan: Plan, faults: Sequence[Fault]) -> FaultEffects:
    check_faults(faults, plan)
    active = {f.kind for f in faults}

    def on(kind: FaultKind, node: str) -> bool:
        return any(f.kind is kind and node in f.nodes for f in faults)

    sysctls: dict[str, tuple[Sysctl, ...]] = {}
    for n in plan.nodes:
        values: list[Sysctl] = []
        if plan.cni is Cni.BRIDGE:
            brnf = "0" if on(FaultKind.BRIDGE_NETFILTER, n.name) else "1"
            values.append(("net/bridge/bridge-nf-call-iptables", brnf))
        rp = 1 if on(FaultKind.SNAT_ASYMMETRIC, n.name) else node_eth0_rp_filter(plan)
        values.append(("net/ipv4/conf/eth0/rp_filter", str(rp)))
        sysctls[n.name] = tuple(values)

    preserve = bool(active & {FaultKind.NLB_HAIRPIN, FaultKind.NLB_5TUPLE_COLLISION})
    # Cross-zone load balancing (every zone's NLB node forwards to every node) except for
    # the hairpin alone, which keeps each zone to its own nodes: without cross-zone, two
    # zone addresses never reach one target, so the hairpin shows without collisions.
    cross_zone = FaultKind.NLB_5TUPLE_COLLISION in active or FaultKind.NLB_HAIRPIN not in active
    nlb: dict[str, NlbConfig] = {}
    for z in plan.nlbs:
        targets = plan.node_names if cross_zone else tuple(n.name for n in plan.zone_nodes(z.zone))
        for f in faults:
            if f.kind is FaultKind.NLB_5TUPLE_COLLISION and f.nodes:
                targets = (f.nodes[0],)
        nlb[z.zone] = NlbConfig(preserve_client_ip=preserve, targets=targets)

    # The collector's network is out of band: faults never cut reporting.
    rules = [f"-i {plan.ctl_router_if} -j RETURN", f"-o {plan.ctl_router_if} -j RETURN"]
    for f in faults:
        comment = f'-m comment --comment "{f}"'
        if f.kind is FaultKind.NODE_ISOLATED:
            for name in f.nodes:
                for i in _router_ifs(plan, plan.node(name)):
                    rules += [f"-i {i} {comment} -j DROP", f"-o {i} {comment} -j DROP"]
        elif f.kind is FaultKind.NODE_UNREACHABLE:
            for name in f.nodes:
                for i in _router_ifs(plan, plan.node(name)):
                    rules.append(f"-o {i} -m conntrack --ctstate NEW {comment} -j DROP")
        elif f.kind is FaultKind.PAIR_BLOCKED:
            a, b = (plan.node(n) for n in f.nodes)
            for ia in _router_ifs(plan, a):
                for ib in _router_ifs(plan, b):
                    rules += [f"-i {ia} -o {ib} {comment} -j DROP", f"-i {ib} -o {ia} {comment} -j DROP"]
        elif f.kind is FaultKind.PACKET_LOSS:
            assert f.rate is not None
            stat = f"-m statistic --mode random --probability {f.rate:.6f}"
            for name in f.nodes:
                for i in _router_ifs(plan, plan.node(name)):
                    rules += [f"-i {i} {stat} {comment} -j DROP", f"-o {i} {stat} {comment} -j DROP"]
    return FaultEffects(node_sysctls=sysctls, nlb=nlb, router_rules=tuple(rules))


def describe_faults() -> str:
    """The ``--fault`` help text: every fault, what it does and its production equivalent."""
    return "\n".join(f"{i.usage}: {i.what}. In production: {i.production}." for i in FAULTS.values())
