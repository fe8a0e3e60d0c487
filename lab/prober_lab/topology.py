"""What to tell the kernel, per namespace: ``ip -batch`` lines and sysctls. Pure.

The executor runs, in order: one root-level batch that creates the namespaces and
every veth pair directly inside them (no interface ever exists in the root
namespace), the sysctls, then one ``ip -n NS -batch`` per namespace, then the
iptables rules (:mod:`prober_lab.iptables`). Doing it as a few batches rather than
hundreds of ``ip`` calls is what keeps a lab's setup under a second.

Kernel knobs are set explicitly in every namespace, never inherited:

* ``rp_filter``: the effective value is ``max(all, interface)``. Nodes run strict (1)
  like Amazon Linux; in VPC-CNI mode ``eth0`` is loose (2), as the VPC CNI sets it
  when it SNATs (the snat-asymmetric fault sets it back to 1).
* ``proxy_arp`` with ``proxy_delay=0`` on the router: nodes ARP for peers in their
  subnet and the router answers, as the VPC fabric does; the default delay of 0.8 s
  would time out first attempts.
* Permanent neighbour entries for every gateway and every address the router delivers
  to: AWS never ARPs an instance, and strict ``rp_filter`` also filters ARP.
* ``send_redirects=0`` on the router: the fabric never redirects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prober_lab.plan import (
    COLLECTOR_IP,
    CTL_GW,
    DNS_GW,
    DNS_SERVER_IP,
    ENI_TABLE,
    EXTERNAL_GW,
    EXTERNAL_IP,
    POD_GW,
    Cni,
    Node,
    Plan,
    Pod,
    mac_for,
)

Sysctl = tuple[str, str]  # path under /proc/sys, value


@dataclass(frozen=True, slots=True, kw_only=True)
class NsSetup:
    ns: str
    sysctls: tuple[Sysctl, ...]
    ip_batch: tuple[str, ...]


#: The MTU of every lab link: a VPC's jumbo frames (9001 on Nitro instances).
FABRIC_MTU: Final = 9001


def create_batch(plan: Plan) -> list[str]:
    """Root-level ``ip -batch``: the namespaces, then every veth with both ends placed."""
    lines = [f"netns add {ns}" for ns in plan.namespaces]

    def veth(ns_a: str, if_a: str, mac_a: str, ns_b: str, if_b: str, mac_b: str) -> str:  # noqa: PLR0917
        # Jumbo frames on every link, as in a VPC (the ENA's 9001): an MTU fault lowers one.
        return (
            f"link add {if_a} address {mac_a} netns {ns_a} mtu {FABRIC_MTU} type veth "
            f"peer name {if_b} address {mac_b} netns {ns_b} mtu {FABRIC_MTU}"
        )

    r = plan.router_ns
    for n in plan.nodes:
        lines.append(veth(r, n.router_if, n.router_mac, n.ns, "eth0", n.mac))
        if plan.cni is Cni.VPC:
            lines.append(veth(r, n.router_eni_if, n.router_eni_mac, n.ns, "eth1", n.eni_mac))
        lines += [veth(n.ns, pod.host_if, pod.host_mac, pod.ns, "eth0", pod.mac) for pod in n.pods]
    lines += [veth(r, nlb.router_if, nlb.router_mac, nlb.ns, "eth0", nlb.mac) for nlb in plan.nlbs]
    lines.append(veth(r, plan.ext_router_if, plan.ext_router_mac, plan.ext_ns, "eth0", plan.ext_mac))
    lines.append(veth(r, plan.dns_router_if, plan.dns_router_mac, plan.dns_ns, "eth0", plan.dns_mac))
    lines.append(veth(r, plan.ctl_router_if, plan.ctl_router_mac, plan.ctl_ns, "eth0", plan.ctl_mac))
    return lines


def delete_batch(plan: Plan) -> list[str]:
    """Deleting a namespace deletes its interfaces (and the veth peers with them)."""
    return [f"netns del {ns}" for ns in plan.namespaces]


def _conf(iface: str, key: str, value: int | str) -> Sysctl:
    return (f"net/ipv4/conf/{iface}/{key}", str(value))


def _base(forward: int, rp_filter: int, ifaces: tuple[str, ...]) -> list[Sysctl]:
    out = [("net/ipv4/ip_forward", str(forward))]
    for iface in ("all", "default", "lo", *ifaces):
        out.append(_conf(iface, "rp_filter", rp_filter))
        out.append(_conf(iface, "accept_redirects", 0))
    return out


def router_router_ifs(plan: Plan) -> tuple[str, ...]:
    ifs: list[str] = []
    for n in plan.nodes:
        ifs.append(n.router_if)
        if plan.cni is Cni.VPC:
            ifs.append(n.router_eni_if)
    ifs += [nlb.router_if for nlb in plan.nlbs]
    ifs += [plan.ext_router_if, plan.dns_router_if, plan.ctl_router_if]
    return tuple(ifs)


def _router(plan: Plan) -> NsSetup:
    ifs = router_router_ifs(plan)
    sysctls = _base(1, 0, ifs)
    for iface in ("all", *ifs):
        sysctls.append(_conf(iface, "send_redirects", 0))
    for iface in ifs:
        sysctls.append(_conf(iface, "proxy_arp", 1))
        sysctls.append((f"net/ipv4/neigh/{iface}/proxy_delay", "0"))
    ip = ["link set lo up"]

    def link(iface: str, gw_cidr: str) -> None:
        ip.append(f"addr add {gw_cidr} dev {iface}")
        ip.append(f"link set {iface} up")

    def host(addr: str, iface: str, mac: str) -> None:
        ip.append(f"route add {addr}/32 dev {iface} scope link")
        ip.append(f"neigh replace {addr} lladdr {mac} dev {iface} nud permanent")

    for n in plan.nodes:
        link(n.router_if, f"{n.gateway}/32")
        host(n.ip, n.router_if, n.mac)
        if plan.cni is Cni.VPC:
            link(n.router_eni_if, f"{n.gateway}/32")
            host(n.eni_ip, n.router_eni_if, n.eni_mac)
            # The fabric delivers a pod's address to the ENI that owns it.
            for pod in n.pods:
                mac, iface = pod_router_mac(n, pod), pod_router_if(n, pod)
                ip.append(f"neigh replace {pod.ip} lladdr {mac} dev {iface} nud permanent")
        # The pod routes twice: in main, where a fault may take them away
        # (pod_routes), and in the collector's table, so that its replies to pod
        # agents always get back: the collector's network is out of band.
        for route in pod_routes(plan, n, routed=True):
            ip.append(f"route add {route}")
            ip.append(f"route add {route} table {CTL_TABLE}")
    ip.append(f"rule add iif {plan.ctl_router_if} lookup {CTL_TABLE} priority {CTL_RULE_PRIORITY}")
    for nlb in plan.nlbs:
        link(nlb.router_if, f"{nlb.gateway}/32")
        host(nlb.vip, nlb.router_if, nlb.mac)
        # Replies of flows an NLB node forwarded go back to that NLB node (connmark →
        # fwmark → this table): the fabric's flow tracking that client-IP preservation
        # relies on.
        ip.append(f"route add default via {nlb.vip} dev {nlb.router_if} onlink table {nlb.table}")
        ip.append(f"rule add fwmark {nlb.fwmark:#x}/0xff lookup {nlb.table} priority 100")
    link(plan.dns_router_if, f"{DNS_GW}/32")
    host(DNS_SERVER_IP, plan.dns_router_if, plan.dns_mac)
    link(plan.ext_router_if, f"{EXTERNAL_GW}/24")
    ip.append(f"neigh replace {EXTERNAL_IP} lladdr {plan.ext_mac} dev {plan.ext_router_if} nud permanent")
    link(plan.ctl_router_if, f"{CTL_GW}/24")
    ip.append(f"neigh replace {COLLECTOR_IP} lladdr {plan.ctl_mac} dev {plan.ctl_router_if} nud permanent")
    return NsSetup(ns=plan.router_ns, sysctls=tuple(sysctls), ip_batch=tuple(ip))


#: The router's table for traffic from the collector's network, and the rule that picks it.
CTL_TABLE: Final = 250
CTL_RULE_PRIORITY: Final = 90


def pod_router_if(n: Node, pod: Pod) -> str:
    """VPC CNI: the router interface the fabric delivers a pod's address to (the ENI that owns it)."""
    return n.router_eni_if if pod.on_secondary_eni else n.router_if


def pod_router_mac(n: Node, pod: Pod) -> str:
    return n.eni_mac if pod.on_secondary_eni else n.mac


def pod_routes(plan: Plan, n: Node, *, routed: bool) -> list[str]:
    """The router's routes to node ``n``'s pod addresses (``ip route`` arguments).

    ``routed=False`` gives the same prefixes as blackhole routes: what the fabric does
    with an address its route table has no route for (the VPC drops it silently).
    """
    if plan.cni is Cni.BRIDGE:
        prefixes = [n.pod_cidr]
        via = [f"via {n.ip} dev {n.router_if}"]
    else:
        prefixes = [f"{pod.ip}/32" for pod in n.pods]
        via = [f"dev {pod_router_if(n, pod)} scope link" for pod in n.pods]
    if not routed:
        return [f"blackhole {p}" for p in prefixes]
    return [f"{p} {v}" for p, v in zip(prefixes, via, strict=True)]


def node_eth0_rp_filter(plan: Plan) -> int:
    """Clean value: strict on a bridge node, loose where the VPC CNI SNATs (it sets 2)."""
    return 1 if plan.cni is Cni.BRIDGE else 2


def _node(plan: Plan, n: Node) -> NsSetup:
    pod_ifs = tuple(p.host_if for p in n.pods)
    ifs: tuple[str, ...] = ("eth0", *pod_ifs)
    ifs = (*ifs, "cni0") if plan.cni is Cni.BRIDGE else (*ifs, "eth1")
    sysctls = _base(1, 1, tuple(i for i in ifs if i != "cni0"))
    sysctls.append(_conf("eth0", "rp_filter", node_eth0_rp_filter(plan)))
    if plan.cni is Cni.BRIDGE:
        sysctls.append(("net/bridge/bridge-nf-call-iptables", "1"))
    ip = [
        "link set lo up",
        f"addr add {n.ip}/20 dev eth0",
        "link set eth0 up",
        f"neigh replace {n.gateway} lladdr {n.router_mac} dev eth0 nud permanent",
        f"route add default via {n.gateway} dev eth0",
    ]
    if plan.cni is Cni.BRIDGE:
        ip += [
            f"link add cni0 address {_bridge_mac(n)} type bridge",
            f"addr add {n.bridge_ip}/24 dev cni0",
            "link set cni0 up",
        ]
        for pod in n.pods:
            ip += [
                f"link set {pod.host_if} master cni0",
                # kubelet's --hairpin-mode=hairpin-veth: a pod may reach itself via a Service
                f"link set {pod.host_if} type bridge_slave hairpin on",
                f"link set {pod.host_if} up",
            ]
    else:
        ip += [
            # The secondary ENI: no route in main; its own table, as the VPC CNI sets it up.
            f"addr add {n.eni_ip}/20 dev eth1 noprefixroute",
            "link set eth1 up",
            f"neigh replace {n.gateway} lladdr {n.router_eni_mac} dev eth1 nud permanent",
            f"route add {n.gateway} dev eth1 scope link table {ENI_TABLE}",
            f"route add default via {n.gateway} dev eth1 table {ENI_TABLE}",
            "rule add fwmark 0x80/0x80 lookup main priority 1024",
        ]
        for pod in n.pods:
            ip += [
                f"link set {pod.host_if} up",
                f"route add {pod.ip}/32 dev {pod.host_if} scope link",
                f"neigh replace {pod.ip} lladdr {pod.mac} dev {pod.host_if} nud permanent",
                f"rule add to {pod.ip} lookup main priority 512",
            ]
            if pod.on_secondary_eni:
                ip.append(f"rule add from {pod.ip} lookup {ENI_TABLE} priority 1536")
    return NsSetup(ns=n.ns, sysctls=tuple(sysctls), ip_batch=tuple(ip))


def _bridge_mac(n: Node) -> str:
    # A fixed bridge MAC: a bridge otherwise takes the lowest port MAC and changes with it.
    return mac_for(n.ns, "cni0")


def _pods(plan: Plan, n: Node) -> list[NsSetup]:
    out = []
    for pod in n.pods:
        ip = ["link set lo up", f"addr add {pod.ip}/{pod.prefixlen} dev eth0", "link set eth0 up"]
        if plan.cni is Cni.VPC:
            ip += [
                f"route add {POD_GW} dev eth0 scope link",
                f"neigh replace {POD_GW} lladdr {pod.host_mac} dev eth0 nud permanent",
            ]
        ip.append(f"route add default via {pod.gateway} dev eth0")
        out.append(NsSetup(ns=pod.ns, sysctls=tuple(_base(0, 0, ("eth0",))), ip_batch=tuple(ip)))
    return out


def _stub(ns: str, addr_cidr: str, gateway: str, gw_mac: str, *, forward: int) -> NsSetup:
    ip = [
        "link set lo up",
        f"addr add {addr_cidr} dev eth0",
        "link set eth0 up",
        f"neigh replace {gateway} lladdr {gw_mac} dev eth0 nud permanent",
    ]
    if addr_cidr.endswith("/32"):
        ip.append(f"route add {gateway} dev eth0 scope link")
    ip.append(f"route add default via {gateway} dev eth0")
    return NsSetup(ns=ns, sysctls=tuple(_base(forward, 0, ("eth0",))), ip_batch=tuple(ip))


def namespace_setups(plan: Plan) -> list[NsSetup]:
    """Per-namespace sysctls and ``ip -batch`` lines, router first."""
    out = [_router(plan)]
    for n in plan.nodes:
        out.append(_node(plan, n))
        out += _pods(plan, n)
    for nlb in plan.nlbs:
        out.append(_stub(nlb.ns, f"{nlb.vip}/32", nlb.gateway, nlb.router_mac, forward=1))
    out.append(_stub(plan.ext_ns, f"{EXTERNAL_IP}/24", EXTERNAL_GW, plan.ext_router_mac, forward=0))
    out.append(_stub(plan.dns_ns, f"{DNS_SERVER_IP}/32", DNS_GW, plan.dns_router_mac, forward=0))
    out.append(_stub(plan.ctl_ns, f"{COLLECTOR_IP}/24", CTL_GW, plan.ctl_router_mac, forward=0))
    return out
