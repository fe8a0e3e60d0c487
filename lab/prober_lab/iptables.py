"""iptables rule sets for the lab, as ``iptables-restore`` text. Pure.

* Nodes get kube-proxy's rules as kube-proxy writes them (KUBE-SERVICES → KUBE-SVC
  with ``statistic --mode random`` → KUBE-SEP DNAT, KUBE-MARK-MASQ, KUBE-POSTROUTING
  MASQUERADE, KUBE-NODEPORTS → KUBE-EXT), plus the CNI's own NAT: flannel's pod
  masquerade on a bridge node, the VPC CNI's ``AWS-SNAT-CHAIN-0`` on a VPC node.
* NLB nodes get a DNAT from their zone address to a target node's NodePort, and a
  SNAT to their own address unless client-IP preservation is on.
* The router gets the NAT gateway, the flow marks that send replies back to the NLB
  node that forwarded the flow, and the chain faults write their drops into.

Every ``DNAT`` carries ``-p``: iptables-nft refuses ``--to-destination ip:port`` without it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from prober_lab.plan import (
    CLUSTER_CIDR,
    DNS_PORT,
    DNS_SERVER_IP,
    DNS_SERVICE_IP,
    ECHO_HTTP_PORT,
    ECHO_SERVICE,
    ECHO_SERVICE_IP,
    ENI_NODEPORT,
    ENI_NODEPORT_SERVICE,
    EXTERNAL_GW,
    LOCAL_SERVICE,
    LOCAL_SERVICE_IP,
    NLB_PORT,
    NODEPORT,
    SERVICE_PORT,
    VPC_CIDR,
    Cni,
    NlbNode,
    Node,
    Plan,
)

#: The router's chain that faults fill; rewritten whole on every fault change.
FAULT_CHAIN = "PLAB-FAULTS"
#: Targetless counting rules on nodes, read by the lab tests (martian arrivals etc.).
OBSERVE_CHAIN = "PLAB-OBSERVE"
MASQ_MARK = "0x4000"


def chain_suffix(*parts: str) -> str:
    """kube-proxy's chain naming: base32 of a SHA-256 of the service port name, 16 chars."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def _table(name: str, chains: Sequence[str], rules: Sequence[str], *, builtins: Sequence[str]) -> str:
    lines = [f"*{name}"]
    lines += [f":{c} ACCEPT [0:0]" for c in builtins]
    lines += [f":{c} - [0:0]" for c in chains]
    lines += list(rules)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


NAT_BUILTINS = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")
FILTER_BUILTINS = ("INPUT", "FORWARD", "OUTPUT")
MANGLE_BUILTINS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
RAW_BUILTINS = ("PREROUTING", "OUTPUT")


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    node: str
    ip: str


def _statistic_chain(svc_chain: str, seps: Sequence[str], comment: str) -> list[str]:
    """``-m statistic --mode random``: endpoint i of n is taken with probability 1/(n-i)."""
    rules = []
    n = len(seps)
    for i, sep in enumerate(seps):
        if i < n - 1:
            rules.append(
                f'-A {svc_chain} -m comment --comment "{comment}" -m statistic --mode random '
                f"--probability {1 / (n - i):.11f} -j {sep}"
            )
        else:
            rules.append(f'-A {svc_chain} -m comment --comment "{comment}" -j {sep}')
    return rules


def node_rules(plan: Plan, node: Node, *, external_snat: bool = False) -> str:
    """kube-proxy (iptables mode) and CNI NAT rules for one node, for ``iptables-restore``.

    ``external_snat`` is the VPC CNI's ``AWS_VPC_K8S_CNI_EXTERNALSNAT=true``: no node SNAT
    of non-VPC traffic (the NAT gateway does it).
    """
    echo_name = f"default/{ECHO_SERVICE}"
    local_name = f"default/{LOCAL_SERVICE}"
    dns_name = "kube-system/kube-dns:dns"
    svc = f"KUBE-SVC-{chain_suffix(echo_name, 'tcp')}"
    # The echo Service's own endpoints on this node: where its NodePort goes
    # (externalTrafficPolicy: Local) and the whole of the internalTrafficPolicy: Local one.
    svl_echo = f"KUBE-SVL-{chain_suffix(echo_name, 'tcp')}"
    svl = f"KUBE-SVL-{chain_suffix(local_name, 'tcp')}"
    ext = f"KUBE-EXT-{chain_suffix(echo_name, 'tcp')}"
    dns = f"KUBE-SVC-{chain_suffix(dns_name, 'udp')}"
    bridge = plan.cni is Cni.BRIDGE
    endpoints = [Endpoint(node=n.name, ip=n.echo.ip) for n in plan.nodes]

    chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    chains += [svc, svl_echo, svl, ext, dns]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    ]
    if bridge:
        rules += [
            (
                f"-A POSTROUTING -s {CLUSTER_CIDR} -d {CLUSTER_CIDR} "
                '-m comment --comment "flanneld masq" -j RETURN'
            ),
            (
                f"-A POSTROUTING -s {CLUSTER_CIDR} ! -d 224.0.0.0/4 "
                '-m comment --comment "flanneld masq" -j MASQUERADE --random-fully'
            ),
        ]
    else:
        chains.append("AWS-SNAT-CHAIN-0")
        rules.append('-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0')
        rules.append(f'-A AWS-SNAT-CHAIN-0 -d {VPC_CIDR} -m comment --comment "AWS SNAT CHAIN" -j RETURN')
        if not external_snat:
            rules.append(
                '-A AWS-SNAT-CHAIN-0 ! -o vlan+ -m comment --comment "AWS, SNAT" '
                f"-m addrtype ! --dst-type LOCAL -j SNAT --to-source {node.ip} --random-fully"
            )
    rules += [
        f"-A KUBE-MARK-MASQ -j MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --set-xmark {MASQ_MARK}/0x0",
        (
            '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
            "-j MASQUERADE --random-fully"
        ),
    ]
    if bridge:
        rules.append(
            f"-A KUBE-SERVICES ! -s {CLUSTER_CIDR} -d {ECHO_SERVICE_IP}/32 -p tcp "
            f'-m comment --comment "{echo_name} cluster IP" -m tcp --dport {SERVICE_PORT} -j KUBE-MARK-MASQ'
        )
    rules += [
        (
            f"-A KUBE-SERVICES -d {ECHO_SERVICE_IP}/32 -p tcp "
            f'-m comment --comment "{echo_name} cluster IP" -m tcp --dport {SERVICE_PORT} -j {svc}'
        ),
        (
            f"-A KUBE-SERVICES -d {LOCAL_SERVICE_IP}/32 -p tcp "
            f'-m comment --comment "{local_name} cluster IP" -m tcp --dport {SERVICE_PORT} -j {svl}'
        ),
        (
            f"-A KUBE-SERVICES -d {DNS_SERVICE_IP}/32 -p udp "
            f'-m comment --comment "{dns_name} cluster IP" -m udp --dport {DNS_PORT} -j {dns}'
        ),
        (
            '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the '
            'last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
        ),
        f'-A KUBE-NODEPORTS -p tcp -m comment --comment "{echo_name}" -m tcp --dport {NODEPORT} -j {ext}',
    ]
    rules += _external_chain(plan, ext=ext, svc=svc, svl=svl_echo, name=echo_name)
    seps = []
    for ep in endpoints:
        sep = f"KUBE-SEP-{chain_suffix(echo_name, 'tcp', ep.ip)}"
        chains.append(sep)
        seps.append(sep)
        rules += [
            f'-A {sep} -s {ep.ip}/32 -m comment --comment "{echo_name}" -j KUBE-MARK-MASQ',
            (
                f'-A {sep} -p tcp -m comment --comment "{echo_name}" -m tcp '
                f"-j DNAT --to-destination {ep.ip}:{ECHO_HTTP_PORT}"
            ),
        ]
        if ep.node == node.name:
            rules.append(f'-A {svl_echo} -m comment --comment "{echo_name}" -j {sep}')  # Local's
            rules.append(f'-A {svl} -m comment --comment "{local_name}" -j {sep}')
    rules += _statistic_chain(svc, seps, echo_name)
    eni_chains, eni_rules = ([], []) if bridge else _eni_nodeport(node)
    # kube-dns has one endpoint, off the probed nodes (see prober_lab.plan).
    dsep = f"KUBE-SEP-{chain_suffix(dns_name, 'udp', DNS_SERVER_IP)}"
    chains.append(dsep)
    rules += [
        f'-A {dsep} -s {DNS_SERVER_IP}/32 -m comment --comment "{dns_name}" -j KUBE-MARK-MASQ',
        (
            f'-A {dsep} -p udp -m comment --comment "{dns_name}" -m udp '
            f"-j DNAT --to-destination {DNS_SERVER_IP}:{DNS_PORT}"
        ),
    ]
    rules += _statistic_chain(dns, [dsep], dns_name)
    nat = _table("nat", chains + eni_chains, rules + eni_rules, builtins=NAT_BUILTINS)

    raw_rules = [
        f"-A PREROUTING -j {OBSERVE_CHAIN}",
        # A packet from this node's own address arriving from the fabric: the NLB
        # hairpin's martian (counted here; the kernel drops it at routing).
        (
            f"-A {OBSERVE_CHAIN} -i eth0 -m addrtype --src-type LOCAL "
            '-m comment --comment "own address from the fabric (martian)"'
        ),
    ]
    raw = _table("raw", [OBSERVE_CHAIN], raw_rules, builtins=RAW_BUILTINS)
    mangle = ""
    if not bridge:
        # The VPC CNI's NodePort connmark (the fix for amazon-vpc-cni-k8s #75): replies
        # to connections that came in on eth0 are routed by main, not by the pod's ENI table.
        mangle = _table(
            "mangle",
            [],
            [
                (
                    '-A PREROUTING -i eth0 -m comment --comment "AWS, primary ENI" -m addrtype '
                    "--dst-type LOCAL --limit-iface-in -j CONNMARK --set-xmark 0x80/0x80"
                ),
                (
                    '-A PREROUTING -i eni+ -m comment --comment "AWS, primary ENI" '
                    "-j CONNMARK --restore-mark --nfmask 0x80 --ctmask 0x80"
                ),
            ],
            builtins=MANGLE_BUILTINS,
        )
    filt = _table("filter", [], [], builtins=FILTER_BUILTINS)
    return filt + nat + mangle + raw


def _external_chain(plan: Plan, *, ext: str, svc: str, svl: str, name: str) -> list[str]:
    """The echo NodePort's ``KUBE-EXT`` chain, as kube-proxy writes it for the lab's policy.

    * ``Cluster``: every connection from outside is marked for masquerade and sent to
      any endpoint of the Service (``KUBE-SVC``): the echo on another node sees the
      entry node's address (the one its ``eth0`` routes from), one on the entry node
      the address of the interface towards it (``cni0``'s on a bridge node).
    * ``Local``: only this node's endpoint (``KUBE-SVL``), the client address
      preserved; pod (bridge: the cluster CIDR) and node-local callers short-circuit to
      the whole Service, as kube-proxy does.
    """
    if plan.spec.external_traffic_policy == "Cluster":
        return [
            (
                f'-A {ext} -m comment --comment "masquerade traffic for {name} external destinations" '
                "-j KUBE-MARK-MASQ"
            ),
            f"-A {ext} -j {svc}",
        ]
    rules = []
    if plan.cni is Cni.BRIDGE:
        rules.append(
            f"-A {ext} -s {CLUSTER_CIDR} "
            f'-m comment --comment "pod traffic for {name} external destinations" -j {svc}'
        )
    rules += [
        (
            f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {name} '
            'external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ'
        ),
        (
            f'-A {ext} -m comment --comment "route LOCAL traffic for {name} external destinations" '
            f"-m addrtype --src-type LOCAL -j {svc}"
        ),
        f"-A {ext} -j {svl}",
    ]
    return rules


def _eni_nodeport(node: Node) -> tuple[list[str], list[str]]:
    """The secondary-ENI NodePort (externalTrafficPolicy: Local → this node's agent pod).

    Its requests arrive on eth0 and are DNATed to a pod whose policy route leaves by
    eth1: the reverse-path check on eth0 passes only in loose mode, which is why the VPC
    CNI's NodePort support sets ``rp_filter=2`` (amazon-vpc-cni-k8s #75).
    """
    name = f"default/{ENI_NODEPORT_SERVICE}"
    ext = f"KUBE-EXT-{chain_suffix(name, 'tcp')}"
    sep = f"KUBE-SEP-{chain_suffix(name, 'tcp', node.agent.ip)}"
    rules = [
        f'-A KUBE-NODEPORTS -p tcp -m comment --comment "{name}" -m tcp --dport {ENI_NODEPORT} -j {ext}',
        (
            f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {name} external destinations" '
            "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
        ),
        f"-A {ext} -j {sep}",
        f'-A {sep} -s {node.agent.ip}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ',
        (
            f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp '
            f"-j DNAT --to-destination {node.agent.ip}:{ECHO_HTTP_PORT}"
        ),
    ]
    return [ext, sep], rules


@dataclass(frozen=True, slots=True, kw_only=True)
class NlbConfig:
    """What an NLB node does: which nodes it forwards to, and whether it hides the client."""

    preserve_client_ip: bool = False
    targets: tuple[str, ...] = ()  # node names, in plan order


def nlb_rules(plan: Plan, nlb: NlbNode, config: NlbConfig) -> str:
    targets = [plan.node(name) for name in config.targets]
    chain = "NLB-TARGETS"
    rules = [
        (
            f"-A PREROUTING -d {nlb.vip}/32 -p tcp -m tcp --dport {NLB_PORT} "
            f'-m comment --comment "nlb listener" -j {chain}'
        )
    ]
    n = len(targets)
    for i, t in enumerate(targets):
        stat = f"-m statistic --mode random --probability {1 / (n - i):.11f} " if i < n - 1 else ""
        rules.append(
            f'-A {chain} -p tcp -m comment --comment "target {t.name}" {stat}'
            f"-j DNAT --to-destination {t.ip}:{NODEPORT}"
        )
    if not config.preserve_client_ip:
        rules.append(
            f"-A POSTROUTING -m conntrack --ctstate DNAT --ctorigdst {nlb.vip} "
            f'-m comment --comment "client IP preservation off" -j SNAT --to-source {nlb.vip}'
        )
    return _table("nat", [chain], rules, builtins=NAT_BUILTINS)


def router_rules(plan: Plan) -> str:
    filt = _table("filter", [FAULT_CHAIN], [f"-A FORWARD -j {FAULT_CHAIN}"], builtins=FILTER_BUILTINS)
    nat = _table(
        "nat",
        [],
        [
            (
                f'-A POSTROUTING -o {plan.ext_router_if} -m comment --comment "NAT gateway" '
                f"-j SNAT --to-source {EXTERNAL_GW}"
            )
        ],
        builtins=NAT_BUILTINS,
    )
    mangle_rules = [
        f"-A PREROUTING -i {nlb.router_if} -m conntrack --ctstate NEW "
        f'-m comment --comment "flow from nlb {nlb.zone}" -j CONNMARK --set-xmark {nlb.fwmark:#x}/0xff'
        for nlb in plan.nlbs
    ]
    mangle_rules.append(
        '-A PREROUTING -m conntrack --ctdir REPLY -m comment --comment "replies go back to their nlb node" '
        "-j CONNMARK --restore-mark --nfmask 0xff --ctmask 0xff"
    )
    mangle = _table("mangle", [], mangle_rules, builtins=MANGLE_BUILTINS)
    return filt + nat + mangle


def fault_chain_restore(rules: Sequence[str]) -> str:
    """``iptables-restore --noflush`` text that replaces the router's fault chain only."""
    return _table("filter", [FAULT_CHAIN], [f"-A {FAULT_CHAIN} {r}" for r in rules], builtins=())
