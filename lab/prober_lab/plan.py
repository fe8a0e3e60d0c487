"""The lab's address plan: every namespace, interface, address, MAC and route, as values.

Pure: from a :class:`LabSpec` (node count, CNI mode, name prefix) to a :class:`Plan`
that the executor (:mod:`prober_lab.netns`) turns into ``ip``/``iptables`` calls and
that the inventory, the fault rules and the tests read. Nothing here touches the
kernel, so the whole topology is unit-tested without root.

The shape follows a small AWS cluster:

* a VPC router namespace (the VPC fabric) with one point-to-point link per node ENI,
  per NLB node, to the external network and to the control namespace;
* one namespace per node (``eth0`` in its zone's /20 subnet; in VPC-CNI mode also a
  secondary ENI ``eth1`` whose pods are policy-routed with ``from <pod> lookup 2``);
* per node two pods: the pod-network agent and an echo backend (the Services' and the
  NodePort's endpoint). Two pods are needed because a pod that reaches *itself*
  through a ClusterIP is masqueraded by kube-proxy's hairpin rule and never shows the
  missing ``br_netfilter`` symptom; another pod on the same bridge does;
* one NLB node namespace per zone (separate conntrack tables, as separate NLB nodes
  have), an external server outside the VPC, and a control namespace for the collector;
* the cluster DNS (kube-dns's endpoint) in a namespace of its own in zone-a, as CoreDNS
  on a system node: the node faults never touch it, so a DNS failure in the lab is the
  source's own (its node isolated, its packets lost), as the DNS rule assumes. A DNS
  server on every node would fail a share of every node's queries whenever any one
  node is faulty, and a DNS answer does not say which server gave it.

Addresses are fixed by position, so a lab of N nodes always looks the same.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Final, get_args

from prober.inventory import TrafficPolicy

#: Every name the lab creates starts with this, so teardown touches nothing else.
DEFAULT_PREFIX: Final = "plab"
MIN_NODES: Final = 2
MAX_NODES: Final = 16
#: Zones: each a /20 of the VPC (172.31.(16k).0/20) below the collector's 172.31.250.0/24.
MIN_ZONES: Final = 2
MAX_ZONES: Final = 6

VPC_CIDR: Final = "172.31.0.0/16"
CLUSTER_CIDR: Final = "10.244.0.0/16"  # bridge mode pod CIDRs, one /24 per node
SERVICE_CIDR: Final = "10.96.0.0/12"
EXTERNAL_NET: Final = "198.51.100.0/24"  # TEST-NET-2: outside the VPC, only inside the lab
EXTERNAL_GW: Final = "198.51.100.1"  # the router's public side, also the NAT gateway address
EXTERNAL_IP: Final = "198.51.100.10"
#: The cluster DNS server's own address (kube-dns's one endpoint), in zone-a's subnet.
DNS_SERVER_IP: Final = "172.31.14.53"
DNS_GW: Final = "172.31.0.1"  # zone-a's router address
CTL_NET: Final = "172.31.250.0/24"
CTL_GW: Final = "172.31.250.1"
COLLECTOR_IP: Final = "172.31.250.10"
COLLECTOR_PORT: Final = 9090
#: The gateway a VPC-CNI pod routes through (the host side of its veth answers for it).
POD_GW: Final = "169.254.1.1"

ECHO_SERVICE_IP: Final = "10.96.0.20"
LOCAL_SERVICE_IP: Final = "10.96.0.21"
DNS_SERVICE_IP: Final = "10.96.0.10"
SERVICE_PORT: Final = 80
ECHO_HTTP_PORT: Final = 8080  # the echo's and the agents' HTTP port (Service targetPort)
ECHO_UDP_PORT: Final = 8081
DNS_PORT: Final = 53
EXTERNAL_PORT: Final = 80
#: The echo Service's NodePort: probed on every node and the NLB's target port. Its
#: externalTrafficPolicy is the lab's (``LabSpec.external_traffic_policy``): Local (as in
#: deploy/base) answers on the node it entered, with the client's address; Cluster (the
#: Kubernetes default) forwards to any node's echo, masqueraded to the entry node.
NODEPORT: Final = 30080
#: The lab's externalTrafficPolicy when none is asked for: deploy/base's.
DEFAULT_TRAFFIC_POLICY: Final[TrafficPolicy] = "Local"
TRAFFIC_POLICIES: Final[tuple[TrafficPolicy, ...]] = get_args(TrafficPolicy)
#: VPC CNI labs only: a NodePort (externalTrafficPolicy: Local) whose endpoint on every
#: node is a pod on the secondary ENI (the agent pod's echo), the NodePort variant of
#: amazon-vpc-cni-k8s #75: strict rp_filter on eth0 drops its requests. Not in the
#: agents' inventory; the lab's own client and tests probe it.
ENI_NODEPORT: Final = 30081
ENI_NODEPORT_SERVICE: Final = "prober-echo-eni"
NLB_PORT: Final = 80
#: The name every probe's DNS query asks for; the lab's DNS answers with the echo ClusterIP.
DNS_QUERY: Final = "prober-echo.default.svc.cluster.local"

ECHO_SERVICE: Final = "prober-echo"
LOCAL_SERVICE: Final = "prober-echo-local"

#: The secondary ENI's route table (``from <pod> lookup 2``), as the VPC CNI numbers it.
ENI_TABLE: Final = 2


class Cni(enum.StrEnum):
    """How pods are wired: a Linux bridge (flannel/kops) or VPC addresses (AWS VPC CNI)."""

    BRIDGE = "bridge"
    VPC = "vpc"


@dataclass(frozen=True, slots=True, kw_only=True)
class LabSpec:
    nodes: int = 3
    cni: Cni = Cni.BRIDGE
    prefix: str = DEFAULT_PREFIX
    #: Availability zones; None: two for two or three nodes, else three (:func:`zone_count`).
    zones: int | None = None
    #: The echo NodePort's (and so the NLB's) externalTrafficPolicy.
    external_traffic_policy: TrafficPolicy = DEFAULT_TRAFFIC_POLICY

    def __post_init__(self) -> None:
        if self.external_traffic_policy not in TRAFFIC_POLICIES:
            raise ValueError(
                f"--external-traffic-policy must be one of {', '.join(TRAFFIC_POLICIES)}, "
                f"got {self.external_traffic_policy!r}"
            )
        if not MIN_NODES <= self.nodes <= MAX_NODES:
            raise ValueError(f"--nodes must be between {MIN_NODES} and {MAX_NODES}, got {self.nodes}")
        if self.zones is not None and not MIN_ZONES <= self.zones <= min(MAX_ZONES, self.nodes):
            raise ValueError(
                f"--zones must be between {MIN_ZONES} and {min(MAX_ZONES, self.nodes)} "
                f"(every zone needs a node: --nodes {self.nodes}), got {self.zones}"
            )
        if not self.prefix.isalnum() or len(self.prefix) > 6:
            raise ValueError(f"prefix must be 1-6 letters or digits, got {self.prefix!r}")

    @property
    def zone_count(self) -> int:
        return zone_count(self.nodes) if self.zones is None else self.zones


@dataclass(frozen=True, slots=True, kw_only=True)
class Pod:
    name: str  # "agent" or "echo"
    node: str
    ns: str
    ip: str
    prefixlen: int  # 24 on a bridge, 32 with VPC addresses
    gateway: str
    mac: str
    host_if: str  # the host side of the pod's veth, in the node namespace
    host_mac: str
    #: VPC CNI: the pod's address lives on the secondary ENI (``from <ip> lookup 2``).
    on_secondary_eni: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    name: str  # node-a, node-b, ...
    index: int
    zone: str
    ns: str
    ip: str  # eth0, the primary ENI
    mac: str
    gateway: str  # the zone subnet's router address
    subnet: str  # the zone's /20
    router_if: str  # the router's side of eth0
    router_mac: str
    #: VPC CNI secondary ENI (eth1); empty in bridge mode.
    eni_ip: str
    eni_mac: str
    router_eni_if: str
    router_eni_mac: str
    #: Bridge mode: the node's pod CIDR and the address of cni0 in it.
    pod_cidr: str
    bridge_ip: str
    agent: Pod
    echo: Pod

    @property
    def pods(self) -> tuple[Pod, Pod]:
        return (self.agent, self.echo)

    @property
    def letter(self) -> str:
        return self.name.removeprefix("node-")


@dataclass(frozen=True, slots=True, kw_only=True)
class NlbNode:
    """One zone's NLB node: its own namespace and conntrack, holding that zone's address."""

    zone: str
    index: int  # 1-based; also the router's connmark and route table offset for its flows
    ns: str
    vip: str
    mac: str
    gateway: str
    router_if: str
    router_mac: str

    @property
    def fwmark(self) -> int:
        return self.index

    @property
    def table(self) -> int:
        return 100 + self.index


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    spec: LabSpec
    router_ns: str
    ext_ns: str
    ctl_ns: str
    zones: tuple[str, ...]
    nodes: tuple[Node, ...]
    nlbs: tuple[NlbNode, ...]
    ext_router_if: str
    ext_mac: str
    ext_router_mac: str
    dns_ns: str
    dns_router_if: str
    dns_mac: str
    dns_router_mac: str
    ctl_router_if: str
    ctl_mac: str
    ctl_router_mac: str

    @property
    def cni(self) -> Cni:
        return self.spec.cni

    @property
    def prefix(self) -> str:
        return self.spec.prefix

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the lab, router first (creation order)."""
        out = [self.router_ns, self.ext_ns, self.ctl_ns, self.dns_ns]
        for n in self.nodes:
            out += [n.ns, n.agent.ns, n.echo.ns]
        out += [nlb.ns for nlb in self.nlbs]
        return tuple(out)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def zone_nodes(self, zone: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.zone == zone)


def node_name(index: int) -> str:
    return f"node-{chr(ord('a') + index)}"


def zone_count(nodes: int) -> int:
    """Two zones for two or three nodes, three from four nodes on: always at least two."""
    return 2 if nodes <= 3 else 3


def mac_for(*parts: str) -> str:
    """A stable, locally administered unicast MAC for one interface of the lab."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def _addr(net: str, offset: int) -> str:
    return str(ipaddress.ip_network(net)[offset])


def build_plan(spec: LabSpec) -> Plan:
    p = spec.prefix
    zones = tuple(f"zone-{chr(ord('a') + k)}" for k in range(spec.zone_count))
    router_ns = f"{p}-vpc"
    nodes: list[Node] = []
    for i in range(spec.nodes):
        name = node_name(i)
        letter = name.removeprefix("node-")
        k = i % len(zones)
        base = 16 * k  # zone k's /20 is 172.31.(16k).0/20
        subnet = f"172.31.{base}.0/20"
        gateway = f"172.31.{base}.1"
        ns = f"{p}-{name}"
        if spec.cni is Cni.BRIDGE:
            pod_cidr = f"10.244.{i}.0/24"
            bridge_ip = f"10.244.{i}.1"
            pods = [
                Pod(
                    name=pod,
                    node=name,
                    ns=f"{ns}-{pod}",
                    ip=f"10.244.{i}.{10 + j}",
                    prefixlen=24,
                    gateway=bridge_ip,
                    mac=mac_for(p, name, pod, "eth0"),
                    host_if=f"veth-{pod}",
                    host_mac=mac_for(p, name, pod, "host"),
                )
                for j, pod in enumerate(("agent", "echo"))
            ]
            eni_ip = eni_mac = router_eni_if = router_eni_mac = ""
        else:
            pod_cidr = bridge_ip = ""
            # The echo lives on the primary ENI, the agent on the secondary ENI: the
            # agent's traffic takes the policy route the snat-asymmetric fault breaks.
            pods = [
                Pod(
                    name=pod,
                    node=name,
                    ns=f"{ns}-{pod}",
                    ip=f"172.31.{base + (2 if pod == 'agent' else 1)}.{10 + i}",
                    prefixlen=32,
                    gateway=POD_GW,
                    mac=mac_for(p, name, pod, "eth0"),
                    host_if=f"eni-{pod}",
                    host_mac=mac_for(p, name, pod, "host"),
                    on_secondary_eni=pod == "agent",
                )
                for pod in ("agent", "echo")
            ]
            eni_ip = f"172.31.{base}.{100 + i}"
            eni_mac = mac_for(p, name, "eth1")
            router_eni_if = f"to-{letter}-eni"
            router_eni_mac = mac_for(p, "vpc", name, "eth1")
        nodes.append(
            Node(
                name=name,
                index=i,
                zone=zones[k],
                ns=ns,
                ip=f"172.31.{base}.{10 + i}",
                mac=mac_for(p, name, "eth0"),
                gateway=gateway,
                subnet=subnet,
                router_if=f"to-{letter}",
                router_mac=mac_for(p, "vpc", name, "eth0"),
                eni_ip=eni_ip,
                eni_mac=eni_mac,
                router_eni_if=router_eni_if,
                router_eni_mac=router_eni_mac,
                pod_cidr=pod_cidr,
                bridge_ip=bridge_ip,
                agent=pods[0],
                echo=pods[1],
            )
        )
    nlbs = tuple(
        NlbNode(
            zone=zone,
            index=k + 1,
            ns=f"{p}-nlb-{zone.removeprefix('zone-')}",
            vip=f"172.31.{16 * k + 15}.200",
            mac=mac_for(p, "nlb", zone),
            gateway=f"172.31.{16 * k}.1",
            router_if=f"to-nlb-{zone.removeprefix('zone-')}",
            router_mac=mac_for(p, "vpc", "nlb", zone),
        )
        for k, zone in enumerate(zones)
    )
    return Plan(
        spec=spec,
        router_ns=router_ns,
        ext_ns=f"{p}-ext",
        ctl_ns=f"{p}-ctl",
        zones=zones,
        nodes=tuple(nodes),
        nlbs=nlbs,
        ext_router_if="to-ext",
        ext_mac=mac_for(p, "ext"),
        ext_router_mac=mac_for(p, "vpc", "ext"),
        dns_ns=f"{p}-dns",
        dns_router_if="to-dns",
        dns_mac=mac_for(p, "dns"),
        dns_router_mac=mac_for(p, "vpc", "dns"),
        ctl_router_if="to-ctl",
        ctl_mac=mac_for(p, "ctl"),
        ctl_router_mac=mac_for(p, "vpc", "ctl"),
    )
