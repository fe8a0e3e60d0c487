"""Who is where: nodes, agents and the shared targets they probe.

The inventory is read only by the collector, which turns it into one pinglist per
agent (see :mod:`prober.schedule`). Agents never read cluster state, so the API
server sees one watch per resource, not one per node.

Two sources produce an :class:`Inventory`: a static YAML/JSON file
(:mod:`prober.inventory.static`) and the Kubernetes API (:mod:`prober.inventory.kube`,
the only module that imports ``kubernetes``). Both implement
:class:`InventorySource`.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Literal, Protocol

import msgspec

from prober.model import Proto, SrcKind
from prober.settings import HTTP_PORT, UDP_PORT

#: A node's name, and an agent's, Service's, NLB's, external's or DNS server's: 1 to 253
#: letters, digits, ``.``, ``_`` and ``-`` (a Kubernetes name fits). Results name nodes
#: and targets by these, so the collector's labels have this alphabet too.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._-]+$")]


class Node(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    address: str  # the node's primary (VPC) address
    zone: str = ""
    ready: bool = True
    #: Its pod address range (``spec.podCIDR``; bridge CNIs), "" if none. Under
    #: externalTrafficPolicy: Cluster a node masquerades what it forwards to its own echo
    #: pod to its bridge's address in this range: diagnosis reads it back to the node.
    pod_cidr: str = ""


class Agent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    node: Name
    kind: SrcKind
    address: str
    http_port: int = HTTP_PORT.default
    udp_port: int = UDP_PORT.default
    ready: bool = True
    #: Its pod is being deleted (a rollout, a drain): probes of it from now on are
    #: routine, not evidence (see :mod:`prober.lifecycle`). Implies not ready.
    stopping: bool = False


class Service(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A ClusterIP Service in front of the pod-network echo agents."""

    name: Name
    address: str
    port: int = 80
    #: internalTrafficPolicy: Local: always served on the caller's node (path *-to-service-local).
    local: bool = False


#: A Service's ``externalTrafficPolicy``: ``Cluster`` (the Kubernetes default) sends a
#: NodePort's or load balancer's traffic on to any node's endpoint, SNATed to the node it
#: entered; ``Local`` serves it on the node it entered, with the client's address.
TrafficPolicy = Literal["Cluster", "Local"]


class NodePort(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A NodePort of the echo Service, probed on every node's address."""

    name: Name
    port: int
    #: The Service's externalTrafficPolicy; None: not said (a static inventory without it).
    external_traffic_policy: TrafficPolicy | None = None


class ZoneAddress(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    zone: str
    address: str


class Nlb(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A network load balancer in front of the echo NodePort: one address per zone."""

    name: Name
    addresses: list[ZoneAddress]
    port: int = 80
    #: The externalTrafficPolicy of the Service behind it (instance targets reach its NodePort).
    external_traffic_policy: TrafficPolicy | None = None


class External(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An endpoint outside the cluster (address may be an IP or a DNS name)."""

    name: Name
    address: str
    port: int
    proto: Proto = Proto.TCP


class DnsServer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    address: str
    query: str
    port: int = 53


class Inventory(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    nodes: list[Node]
    agents: list[Agent] = msgspec.field(default_factory=list)
    services: list[Service] = msgspec.field(default_factory=list)
    nodeports: list[NodePort] = msgspec.field(default_factory=list)
    nlbs: list[Nlb] = msgspec.field(default_factory=list)
    externals: list[External] = msgspec.field(default_factory=list)
    dns: list[DnsServer] = msgspec.field(default_factory=list)

    def version(self) -> str:
        """A short content hash: equal inventories have equal versions (pinglist ETags)."""
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()[:16]

    def agent(self, name: str) -> Agent | None:
        return next((a for a in self.agents if a.name == name), None)


class InventoryError(ValueError):
    """An inventory that cannot be used, with a message that says where and why."""


def check_inventory(inv: Inventory) -> Inventory:
    """Cross-field checks that types cannot express; returns ``inv`` or raises."""
    names = [n.name for n in inv.nodes]
    dup = sorted(n for n, count in Counter(names).items() if count > 1)
    if dup:
        raise InventoryError(f"duplicate node names: {', '.join(dup)}")
    known = set(names)
    dup = sorted(n for n, count in Counter(a.name for a in inv.agents).items() if count > 1)
    if dup:
        raise InventoryError(f"duplicate agent names: {', '.join(dup)}")
    for a in inv.agents:
        if a.node not in known:
            raise InventoryError(f"agent {a.name!r} is on node {a.node!r}, which is not in nodes")
    for n in inv.nodes:
        if n.pod_cidr:
            try:
                ipaddress.ip_network(n.pod_cidr)
            except ValueError:
                raise InventoryError(f"node {n.name!r}: pod_cidr {n.pod_cidr!r} is not a CIDR") from None
    for nlb in inv.nlbs:
        if not nlb.addresses:
            raise InventoryError(f"nlb {nlb.name!r} has no addresses")
    return inv


class InventorySource(Protocol):
    """Where the collector learns the inventory from.

    ``updates`` yields the current inventory as soon as it is known, then a new one
    each time it changes, and never ends on its own. A source that loses its backend
    keeps quiet (the collector keeps the last good inventory) and says so in its log
    and metrics.
    """

    def updates(self) -> AsyncIterator[Inventory]: ...
