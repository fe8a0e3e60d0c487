"""From Kubernetes API objects to an :class:`~prober.inventory.Inventory`: the pure part.

:mod:`prober.inventory.kube` watches nodes, agent pods and echo Services and keeps
the latest object of each; this module turns those objects into the inventory the
collector builds pinglists from. Nothing here does I/O, reads the clock or imports
``kubernetes``, so the gating rules (the top source of false alarms in probe meshes)
are tested as plain functions with ``now`` as an argument.

The API objects are decoded into small msgspec Structs holding only the fields
prober reads: a 5,000-node NodeList is mostly container image lists, and the
generated ``kubernetes`` models are far too slow to build for it. Unknown fields are
ignored, so the Structs also decode what future API versions add.

Lifecycle gating (an agent that is not ``ready`` stays in the inventory, so it still
gets its own pinglist, but nobody probes it):

- only pods in phase ``Running`` with a pod IP, on a node the API knows, are agents;
- an agent is ready when its pod is Ready, not terminating (no deletionTimestamp),
  has been Ready for the warm-up period, and its node is ready;
- a node is ready when its ``Ready`` condition is ``True``, it is not being deleted
  and it carries no taint that announces its removal (cluster autoscaler, Karpenter);
- departed nodes and pods simply drop out.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import msgspec

from prober import settings as declared
from prober.errors import UsageError
from prober.inventory import (
    Agent,
    DnsServer,
    External,
    Inventory,
    Nlb,
    Node,
    NodePort,
    Service,
    TrafficPolicy,
    ZoneAddress,
    check_inventory,
)
from prober.model import Proto, SrcKind

DEFAULT_AGENT_SELECTOR: Final[str] = declared.AGENT_SELECTOR.default
DEFAULT_ECHO_SELECTOR: Final[str] = declared.ECHO_SELECTOR.default
DEFAULT_NETWORK_LABEL: Final = "prober.dev/network"
DEFAULT_DNS_QUERY: Final[str] = declared.DNS_QUERY.default
DEFAULT_NAMESPACE: Final = "prober"
ZONE_LABELS: Final = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
#: Taints that announce a node is about to be removed: its agents stop being probed
#: before the instance disappears, instead of failing for the seconds in between.
DRAINING_TAINTS: Final = (
    "ToBeDeletedByClusterAutoscaler",  # cluster-autoscaler, before it terminates the instance
    "karpenter.sh/disrupted",  # Karpenter v1
    "karpenter.sh/disruption",  # Karpenter before v1
)


# --- API objects, as far as prober reads them ------------------------------------------


class _Api(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Field names follow the API's camelCase; unknown fields are ignored."""


#: The AWS Load Balancer Controller's target type annotation: ``instance`` (the nodes'
#: NodePort) or ``ip`` (the pods themselves).
NLB_TARGET_TYPE = "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"


class ObjectMeta(_Api, frozen=True):
    name: str
    namespace: str = ""
    uid: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    deletion_timestamp: datetime | None = None


class Condition(_Api, frozen=True):
    type: str
    status: str
    last_transition_time: datetime | None = None


class Taint(_Api, frozen=True):
    key: str
    effect: str = ""


class NodeAddress(_Api, frozen=True):
    type: str
    address: str


class NodeSpec(_Api, frozen=True):
    taints: list[Taint] = msgspec.field(default_factory=list)
    #: The node's pod address range (bridge CNIs: kubenet, flannel); "" when unset (VPC CNI).
    pod_cidr: str = msgspec.field(default="", name="podCIDR")


class NodeStatus(_Api, frozen=True):
    addresses: list[NodeAddress] = msgspec.field(default_factory=list)
    conditions: list[Condition] = msgspec.field(default_factory=list)


class ApiNode(_Api, frozen=True):
    metadata: ObjectMeta
    spec: NodeSpec = msgspec.field(default_factory=NodeSpec)
    status: NodeStatus = msgspec.field(default_factory=NodeStatus)


class ContainerPort(_Api, frozen=True):
    container_port: int
    name: str = ""
    protocol: str = "TCP"


class Container(_Api, frozen=True):
    name: str
    ports: list[ContainerPort] = msgspec.field(default_factory=list)


class PodSpec(_Api, frozen=True):
    node_name: str = ""
    host_network: bool = False
    containers: list[Container] = msgspec.field(default_factory=list)


class PodStatus(_Api, frozen=True):
    phase: str = ""
    pod_ip: str = msgspec.field(default="", name="podIP")
    conditions: list[Condition] = msgspec.field(default_factory=list)


class ApiPod(_Api, frozen=True):
    metadata: ObjectMeta
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
    status: PodStatus = msgspec.field(default_factory=PodStatus)


class ServicePort(_Api, frozen=True):
    port: int
    name: str = ""
    protocol: str = "TCP"
    node_port: int = 0


class ServiceSpec(_Api, frozen=True):
    type: str = "ClusterIP"
    cluster_ip: str = msgspec.field(default="", name="clusterIP")
    ports: list[ServicePort] = msgspec.field(default_factory=list)
    internal_traffic_policy: str = ""
    external_traffic_policy: str = ""


class LoadBalancerIngress(_Api, frozen=True):
    hostname: str = ""
    ip: str = ""


class LoadBalancerStatus(_Api, frozen=True):
    ingress: list[LoadBalancerIngress] = msgspec.field(default_factory=list)


class ServiceStatus(_Api, frozen=True):
    load_balancer: LoadBalancerStatus = msgspec.field(default_factory=LoadBalancerStatus)


class ApiService(_Api, frozen=True):
    metadata: ObjectMeta
    spec: ServiceSpec = msgspec.field(default_factory=ServiceSpec)
    status: ServiceStatus = msgspec.field(default_factory=ServiceStatus)


# --- settings --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeSettings:
    """How the collector finds the mesh in a cluster. Every field has a working default."""

    #: kubeconfig file; ``None``: in-cluster config, else ``$KUBECONFIG`` / ``~/.kube/config``.
    kubeconfig: str | None = None
    #: kubeconfig context; ``None``: the file's current context.
    context: str | None = None
    #: where the agent pods and echo Services live (nodes are cluster-wide).
    namespace: str = DEFAULT_NAMESPACE
    #: label selector of the agent pods of both DaemonSets.
    agent_selector: str = DEFAULT_AGENT_SELECTOR
    #: label selector of the echo Services.
    echo_selector: str = DEFAULT_ECHO_SELECTOR
    #: pod label whose value (``pod`` | ``host``) is the agent's network kind.
    network_label: str = DEFAULT_NETWORK_LABEL
    #: container port names that carry the agent's HTTP echo (TCP) and UDP echo (UDP).
    http_port_name: str = "http"
    udp_port_name: str = "udp"
    #: a pod that just became Ready is probed only after this many seconds.
    warmup_s: float = declared.WARMUP.default
    #: after a change, wait this long for more before publishing (a rollout is one update).
    settle_s: float = 1.0
    #: how often load-balancer hostnames are resolved again.
    lb_refresh_s: float = 30.0
    #: one DNS lookup may take this long.
    resolve_timeout_s: float = 5.0
    #: server-side watch timeout (jittered up to 1.5x); a silent broken connection is
    #: noticed at the latest this long (plus ``read_grace_s``) after it broke.
    watch_timeout_s: int = 120
    read_grace_s: float = 15.0
    #: connect and read timeouts of list requests.
    connect_timeout_s: float = 10.0
    list_timeout_s: float = 60.0
    list_page_size: int = 500
    #: retry delays after API errors: exponential with full jitter between these bounds.
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    draining_taints: tuple[str, ...] = DRAINING_TAINTS
    dns: tuple[DnsServer, ...] = ()
    externals: tuple[External, ...] = ()


_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_KEY = rf"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?{_NAME}"
_VALUE = rf"(?:{_NAME})?"
_REQUIREMENT = (
    rf"(?:!\s*{_KEY}"
    rf"|{_KEY}\s*(?:==|=|!=)\s*{_VALUE}"
    rf"|{_KEY}\s+(?:in|notin)\s*\(\s*{_VALUE}(?:\s*,\s*{_VALUE})*\s*\)"
    rf"|{_KEY})"
)
_SELECTOR = re.compile(rf"\s*{_REQUIREMENT}(?:\s*,\s*{_REQUIREMENT})*\s*")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_TARGET_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,62})")


def check_selector(selector: str, *, flag: str) -> str:
    """Reject a malformed label selector up front: the API server would reject every request."""
    if not _SELECTOR.fullmatch(selector):
        raise UsageError(
            f"{flag}: {selector!r} is not a label selector "
            "(e.g. 'app.kubernetes.io/name=prober,tier in (a,b)')"
        )
    return selector.strip()


def _split_host_port(text: str, *, what: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise UsageError(f"{what}: cannot read {text!r} (expected [IPv6]:PORT)")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""  # no colon, or an unbracketed IPv6 address
    if not host:
        raise UsageError(f"{what}: {text!r} has no host")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"{what}: port {port_text!r} in {text!r} is not a port number")
    return host, int(port_text)


def _target_name(name: str, spec: str, *, what: str) -> str:
    if not _TARGET_NAME.fullmatch(name):
        raise UsageError(f"{what}: {spec!r} needs a NAME= prefix of letters, digits, '-', '_' or '.'")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    # Target names become metric labels and matrix columns; an address must never be one.
    raise UsageError(f"{what}: in {spec!r} the NAME must not be an address: name the target")


def parse_external(spec: str) -> External:
    """``NAME=HOST:PORT[/tcp|/http|/udp]``, e.g. ``api=api.example.com:443/tcp``."""
    name, sep, rest = spec.partition("=")
    if not sep:
        raise UsageError(f"--external: {spec!r} is not NAME=HOST:PORT[/PROTO]")
    name = _target_name(name, spec, what="--external")
    address, _, proto_text = rest.partition("/")
    host, port = _split_host_port(address, what="--external")
    if port is None:
        raise UsageError(f"--external: {spec!r} needs a port (NAME=HOST:PORT[/PROTO])")
    try:
        proto = Proto(proto_text.lower() or "tcp")
    except ValueError:
        proto = None
    if proto not in (Proto.TCP, Proto.HTTP, Proto.UDP):
        raise UsageError(f"--external: protocol {proto_text!r} in {spec!r} is not one of tcp, http, udp")
    return External(name=name, address=host, port=port, proto=proto)


def parse_dns_server(spec: str, *, query: str) -> DnsServer:
    """``NAME=ADDR[:PORT]``, e.g. ``kube-dns=10.96.0.10`` or ``upstream=[fd00::53]:53``."""
    name, sep, rest = spec.partition("=")
    if not sep:
        raise UsageError(f"--dns-server: {spec!r} is not NAME=ADDRESS[:PORT]")
    name = _target_name(name, spec, what="--dns-server")
    host, port = _split_host_port(rest, what="--dns-server")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"--dns-server: {host!r} in {spec!r} is not an IP address") from None
    return DnsServer(name=name, address=host, query=query, port=port or 53)


def nameservers_from_resolv_conf(text: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf, in order (malformed lines skipped)."""
    servers = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                servers.append(str(ipaddress.ip_address(fields[1].split("%", 1)[0])))
            except ValueError:
                continue
    return servers


def kube_settings_from(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    agent_selector: str = DEFAULT_AGENT_SELECTOR,
    echo_selector: str = DEFAULT_ECHO_SELECTOR,
    warmup_s: float = declared.WARMUP.default,
    dns_servers: Sequence[str] = (),
    dns_query: str = DEFAULT_DNS_QUERY,
    externals: Sequence[str] = (),
    in_cluster_namespace: str | None = None,
    resolv_conf: str | None = None,
) -> KubeSettings:
    """Check and assemble the settings from command-line values (pure: file contents are arguments).

    ``in_cluster_namespace`` is the content of the service account's namespace file and
    ``resolv_conf`` that of the pod's ``/etc/resolv.conf``; both are ``None`` outside a
    cluster. Without ``--dns-server``, the first resolv.conf nameserver is probed as
    ``kube-dns``: in a pod with ``dnsPolicy: ClusterFirst`` it is the cluster DNS
    Service (or the NodeLocal DNSCache address), exactly what the agents' pods use.
    """
    ns = (namespace or (in_cluster_namespace or "").strip() or DEFAULT_NAMESPACE).strip()
    if not _DNS_LABEL.fullmatch(ns):
        raise UsageError(f"--namespace: {ns!r} is not a namespace name")
    declared.WARMUP.check(warmup_s)
    query = dns_query.strip().rstrip(".")
    if not query or " " in query:
        raise UsageError(f"--dns-query: {dns_query!r} is not a DNS name")
    if dns_servers:
        dns = tuple(parse_dns_server(s, query=query) for s in dns_servers)
    elif resolv_conf is not None and (servers := nameservers_from_resolv_conf(resolv_conf)):
        dns = (DnsServer(name="kube-dns", address=servers[0], query=query),)
    else:
        dns = ()
    ext = tuple(parse_external(s) for s in externals)
    names = [d.name for d in dns] + [e.name for e in ext]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"target names must be unique: {', '.join(dup)}")
    return KubeSettings(
        kubeconfig=kubeconfig or None,
        context=context or None,
        namespace=ns,
        agent_selector=check_selector(agent_selector, flag="--agent-selector"),
        echo_selector=check_selector(echo_selector, flag="--echo-selector"),
        warmup_s=warmup_s,
        dns=dns,
        externals=ext,
    )


# --- gating and assembly ---------------------------------------------------------------


class AgentState(enum.StrEnum):
    """Why an agent is, or is not, probed (the ``state`` label of ``prober_inventory_agent_states``)."""

    PROBED = "probed"
    WARMING_UP = "warming_up"
    NOT_READY = "not_ready"
    TERMINATING = "terminating"
    NODE_NOT_READY = "node_not_ready"


@dataclass(frozen=True, slots=True)
class Built:
    inventory: Inventory
    #: wall-clock time at which gating changes with no API event (a warm-up ends), if any.
    next_change_at: float | None
    agent_states: dict[AgentState, int]
    #: objects left out, and why (for the log).
    problems: tuple[str, ...] = field(default=())


def _condition(conditions: Sequence[Condition], kind: str) -> Condition | None:
    return next((c for c in conditions if c.type == kind), None)


def node_address(node: ApiNode) -> str:
    """The node's first InternalIP (the primary address of its family), or ``""``."""
    return next((a.address for a in node.status.addresses if a.type == "InternalIP"), "")


def node_zone(node: ApiNode) -> str:
    return next((node.metadata.labels[k] for k in ZONE_LABELS if k in node.metadata.labels), "")


def node_ready(node: ApiNode, settings: KubeSettings) -> bool:
    ready = _condition(node.status.conditions, "Ready")
    if ready is None or ready.status != "True" or node.metadata.deletion_timestamp is not None:
        return False
    return not any(t.key in settings.draining_taints for t in node.spec.taints)


def _port(pod: ApiPod, name: str, protocol: str) -> int | None:
    for container in pod.spec.containers:
        for p in container.ports:
            if p.name == name and p.protocol.upper() == protocol:
                return p.container_port
    return None


def _agent_kind(pod: ApiPod, settings: KubeSettings, problems: list[str]) -> SrcKind:
    actual = SrcKind.HOST if pod.spec.host_network else SrcKind.POD
    label = pod.metadata.labels.get(settings.network_label, "")
    if label and label != actual.value:
        problems.append(
            f"pod {pod.metadata.name}: label {settings.network_label}={label!r} but hostNetwork is "
            f"{pod.spec.host_network}; treating it as a {actual.value}-network agent"
        )
    return actual


def lb_addresses_of(service: ApiService) -> list[str]:
    """The hostnames and IPs a LoadBalancer Service's status announces (what to resolve)."""
    if service.spec.type != "LoadBalancer":
        return []
    return [i.hostname or i.ip for i in service.status.load_balancer.ingress if i.hostname or i.ip]


def _echo_port(service: ApiService, name: str) -> ServicePort | None:
    tcp = [p for p in service.spec.ports if p.protocol.upper() == "TCP"]
    return next((p for p in tcp if p.name == name), tcp[0] if tcp else None)


def gate(pod: ApiPod, node: Node, settings: KubeSettings, *, now: float) -> tuple[AgentState, float | None]:
    """Whether a running agent pod on ``node`` is probed now, and when its warm-up ends."""
    ready = _condition(pod.status.conditions, "Ready")
    if pod.metadata.deletion_timestamp is not None:
        return AgentState.TERMINATING, None
    if ready is None or ready.status != "True":
        return AgentState.NOT_READY, None
    if not node.ready:
        return AgentState.NODE_NOT_READY, None
    since = ready.last_transition_time
    warm_at = since.timestamp() + settings.warmup_s if since is not None else now
    if now < warm_at:
        return AgentState.WARMING_UP, warm_at
    return AgentState.PROBED, None


def _nodes(nodes: Mapping[str, ApiNode], settings: KubeSettings, problems: list[str]) -> dict[str, Node]:
    out: dict[str, Node] = {}
    for node in sorted(nodes.values(), key=lambda n: n.metadata.name):
        address = node_address(node)
        if not address:
            problems.append(f"node {node.metadata.name}: no InternalIP address yet; left out")
            continue
        out[node.metadata.name] = Node(
            name=node.metadata.name,
            address=address,
            zone=node_zone(node),
            ready=node_ready(node, settings),
            pod_cidr=node.spec.pod_cidr,
        )
    return out


def _echo_targets(
    services: Mapping[str, ApiService],
    lb_addresses: Mapping[str, Sequence[ZoneAddress]],
    settings: KubeSettings,
    problems: list[str],
) -> tuple[list[Service], list[NodePort], list[Nlb]]:
    """Every echo Service with a cluster IP is a Service target (``local`` with
    ``internalTrafficPolicy: Local``); NodePort and LoadBalancer ones are NodePort
    targets too; a LoadBalancer's resolved ingress addresses make an NLB target."""
    inv_services: list[Service] = []
    nodeports: list[NodePort] = []
    nlbs: list[Nlb] = []
    for svc in sorted(services.values(), key=lambda s: s.metadata.name):
        name, spec = svc.metadata.name, svc.spec
        port = _echo_port(svc, settings.http_port_name)
        if port is None:
            problems.append(f"service {name}: no TCP port; left out")
            continue
        if spec.type in ("ClusterIP", "NodePort", "LoadBalancer") and spec.cluster_ip not in ("", "None"):
            local = spec.internal_traffic_policy == "Local"
            inv_services.append(Service(name=name, address=spec.cluster_ip, port=port.port, local=local))
        # The API server defaults externalTrafficPolicy to Cluster for these types.
        external: TrafficPolicy = "Local" if spec.external_traffic_policy == "Local" else "Cluster"
        if spec.type in ("NodePort", "LoadBalancer") and port.node_port:
            nodeports.append(NodePort(name=name, port=port.node_port, external_traffic_policy=external))
        if spec.type == "LoadBalancer":
            seen: dict[str, ZoneAddress] = {}
            for host_or_ip in lb_addresses_of(svc):
                for za in lb_addresses.get(host_or_ip, ()):
                    seen.setdefault(za.address, za)
            if seen:
                addresses = sorted(seen.values(), key=lambda za: (za.zone, za.address))
                # IP targets: the NLB reaches the echo pods directly, one hop whatever the policy.
                ip_targets = svc.metadata.annotations.get(NLB_TARGET_TYPE) == "ip"
                nlb_policy: TrafficPolicy = "Local" if ip_targets else external
                nlbs.append(
                    Nlb(name=name, addresses=addresses, port=port.port, external_traffic_policy=nlb_policy)
                )
            else:
                problems.append(f"service {name}: load balancer has no resolved address yet")
    return inv_services, nodeports, nlbs


def build_inventory(
    nodes: Mapping[str, ApiNode],
    pods: Mapping[str, ApiPod],
    services: Mapping[str, ApiService],
    *,
    lb_addresses: Mapping[str, Sequence[ZoneAddress]],
    settings: KubeSettings,
    now: float,
) -> Built:
    """The inventory the API objects describe at wall-clock time ``now``.

    ``lb_addresses`` maps each load-balancer hostname (or IP) from a Service's status
    to its resolved, zone-attributed addresses. Output lists are sorted, so equal
    cluster states give equal inventories (and equal pinglist versions).
    """
    problems: list[str] = []
    inv_nodes = _nodes(nodes, settings, problems)
    agents: list[Agent] = []
    states = dict.fromkeys(AgentState, 0)
    next_change: float | None = None
    for pod in pods.values():
        name = pod.metadata.name
        node = inv_nodes.get(pod.spec.node_name)
        if pod.status.phase != "Running" or not pod.status.pod_ip or node is None:
            continue  # not (or no longer) running anywhere we know: nothing to probe or to ask
        http_port = _port(pod, settings.http_port_name, "TCP")
        udp_port = _port(pod, settings.udp_port_name, "UDP")
        if http_port is None or udp_port is None:
            problems.append(
                f"pod {name}: no container port named {settings.http_port_name!r} (TCP) and "
                f"{settings.udp_port_name!r} (UDP); left out"
            )
            continue
        state, warm_at = gate(pod, node, settings, now=now)
        if warm_at is not None:
            next_change = warm_at if next_change is None else min(next_change, warm_at)
        states[state] += 1
        agents.append(
            Agent(
                name=name,
                node=node.name,
                kind=_agent_kind(pod, settings, problems),
                address=pod.status.pod_ip,
                http_port=http_port,
                udp_port=udp_port,
                ready=state is AgentState.PROBED,
                stopping=state is AgentState.TERMINATING,
            )
        )
    agents.sort(key=lambda a: (a.node, a.kind.value, a.name))
    inv_services, nodeports, nlbs = _echo_targets(services, lb_addresses, settings, problems)
    inventory = Inventory(
        nodes=list(inv_nodes.values()),
        agents=agents,
        services=inv_services,
        nodeports=nodeports,
        nlbs=nlbs,
        externals=list(settings.externals),
        dns=list(settings.dns),
    )
    return Built(check_inventory(inventory), next_change, states, tuple(problems))


# --- load-balancer addresses and zones -------------------------------------------------


def is_aws_elb_hostname(hostname: str) -> bool:
    """AWS load balancers answer zonal names: ``<zone>.<name>.elb.<region>.amazonaws.com``."""
    host = hostname.lower().rstrip(".")
    return ".elb." in host and host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def _common_prefix(a: ipaddress.IPv4Address | ipaddress.IPv6Address, b: str) -> int:
    try:
        other = ipaddress.ip_address(b)
    except ValueError:
        return -1
    if other.version != a.version:
        return -1
    return a.max_prefixlen - (int(a) ^ int(other)).bit_length()


def zone_by_subnet(address: str, nodes: Sequence[Node], *, min_prefix_v4: int = 16) -> str:
    """The zone of the nodes whose addresses share the longest prefix with ``address``.

    Subnets are zonal and do not overlap, so an address in subnet S shares at least
    len(S) leading bits with every node in S and fewer with any node outside it: the
    nearest node is in the address's own subnet whenever S holds a node. An NLB in a
    subnet without nodes (public subnets) cannot be placed this way; a tie between
    zones, or fewer than /16 (IPv4) or /48 (IPv6) bits in common, gives ``""``.
    """
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return ""
    minimum = min_prefix_v4 if addr.version == 4 else 48
    best, zones = -1, set()
    for node in nodes:
        bits = _common_prefix(addr, node.address)
        if bits > best:
            best, zones = bits, {node.zone}
        elif bits == best:
            zones.add(node.zone)
    if best < minimum or len(zones) != 1:
        return ""
    return zones.pop()


def attribute_zones(
    addresses: Sequence[str],
    zonal: Mapping[str, Sequence[str]],
    nodes: Sequence[Node],
) -> list[ZoneAddress]:
    """Give each load-balancer address its zone.

    ``addresses`` are what the load balancer's own name resolves to: what clients
    reach, so exactly these are probed. ``zonal`` maps a zone to the addresses its
    zonal DNS name resolved to (AWS: ``us-east-1a.<nlb-hostname>``), which is
    authoritative; addresses no zonal name claims are placed by :func:`zone_by_subnet`.
    """
    claimed: dict[str, str] = {}
    for zone in sorted(zonal):
        for a in zonal[zone]:
            claimed.setdefault(a, zone)
    placed = {a: claimed.get(a) or zone_by_subnet(a, nodes) for a in addresses}
    out = [ZoneAddress(zone=z, address=a) for a, z in placed.items()]
    return sorted(out, key=lambda za: (za.zone, za.address))
