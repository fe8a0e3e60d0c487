"""The static inventory a lab hands its collector: who is where, from the address plan. Pure."""

from __future__ import annotations

from collections.abc import Collection

import msgspec
import yaml

from prober.inventory import (
    Agent,
    DnsServer,
    External,
    Inventory,
    Nlb,
    Node,
    NodePort,
    Service,
    ZoneAddress,
)
from prober.model import Proto, SrcKind
from prober_lab.plan import (
    DNS_QUERY,
    DNS_SERVICE_IP,
    ECHO_HTTP_PORT,
    ECHO_SERVICE,
    ECHO_SERVICE_IP,
    ECHO_UDP_PORT,
    EXTERNAL_IP,
    EXTERNAL_PORT,
    LOCAL_SERVICE,
    LOCAL_SERVICE_IP,
    NLB_PORT,
    NODEPORT,
    SERVICE_PORT,
    Plan,
)

EXTERNAL_NAME = "example"
DNS_NAME = "kube-dns"


def agent_name(kind: SrcKind, node: str) -> str:
    return f"agent-{kind.value}-{node.removeprefix('node-')}"


def lab_inventory(plan: Plan, *, stopping: Collection[str] = ()) -> Inventory:
    """The lab's inventory; the agents named in ``stopping`` are being replaced (a rollout:
    Kubernetes discovery reads it from the pod's deletion mark)."""
    policy = plan.spec.external_traffic_policy
    agents = []
    for n in plan.nodes:
        for kind, address in ((SrcKind.POD, n.agent.ip), (SrcKind.HOST, n.ip)):
            name = agent_name(kind, n.name)
            agents.append(
                Agent(
                    name=name,
                    node=n.name,
                    kind=kind,
                    address=address,
                    http_port=ECHO_HTTP_PORT,
                    udp_port=ECHO_UDP_PORT,
                    ready=name not in stopping,
                    stopping=name in stopping,
                )
            )
    return Inventory(
        nodes=[Node(name=n.name, address=n.ip, zone=n.zone, pod_cidr=n.pod_cidr) for n in plan.nodes],
        agents=agents,
        services=[
            Service(name=ECHO_SERVICE, address=ECHO_SERVICE_IP, port=SERVICE_PORT),
            Service(name=LOCAL_SERVICE, address=LOCAL_SERVICE_IP, port=SERVICE_PORT, local=True),
        ],
        # The NodePort's externalTrafficPolicy is the lab's, and so is the NLB's (its
        # instance targets are that NodePort).
        nodeports=[NodePort(name=ECHO_SERVICE, port=NODEPORT, external_traffic_policy=policy)],
        nlbs=[
            Nlb(
                name=ECHO_SERVICE,
                port=NLB_PORT,
                external_traffic_policy=policy,
                addresses=[ZoneAddress(zone=nlb.zone, address=nlb.vip) for nlb in plan.nlbs],
            )
        ],
        externals=[External(name=EXTERNAL_NAME, address=EXTERNAL_IP, port=EXTERNAL_PORT, proto=Proto.HTTP)],
        dns=[DnsServer(name=DNS_NAME, address=DNS_SERVICE_IP, query=DNS_QUERY)],
    )


def inventory_yaml(inv: Inventory) -> str:
    header = "# Written by `prober lab up`: the lab's nodes, agents and shared targets.\n"
    return header + yaml.safe_dump(msgspec.to_builtins(inv), sort_keys=False)
