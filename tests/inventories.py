"""EKS-like inventories for tests and benchmarks: the shape prober meets in production.

:class:`EksCluster` describes a cluster of nodes spread over availability zones the
way an EKS cluster with the AWS VPC CNI lays them out, and builds it as a real
:class:`~prober.inventory.Inventory` (what the collector builds pinglists from):

* nodes in per-zone VPC subnets (zone ``z``: ``10.0.{32 z}.0/19``, AWS's first four
  and last address reserved), named as EC2 names them (``ip-10-0-37-142.ec2.internal``
  in us-east-1, ``ip-10-0-37-142.<region>.compute.internal`` elsewhere), listed by
  name as the Kubernetes source lists them;
* pods from a per-zone pod subnet of the ``100.64.0.0/10`` secondary CIDR (custom
  networking, zone ``z``: ``100.{64 + z}.0.0/16``) with a ``/28`` prefix per node
  (prefix delegation): the node's pod CIDR;
* one pod-network agent (``prober-agent-pod-x7k2q``, ports 8080/8081) and one
  host-network agent (``prober-agent-host-q9z4m``, the node's address, 18080/18081)
  per node, as ``deploy/base`` runs them; a restarted agent pod (``generation`` > 0)
  has a new name and a new address in the node's prefix;
* the echo ClusterIP Service ``prober-echo``, the ``internalTrafficPolicy: Local``
  Service ``prober-echo-local`` (service CIDR ``172.20.0.0/16``), the echo NodePort,
  an internal NLB with one address per zone (in that zone's node subnet), kube-dns
  and one external target.

Addresses and names are a pure function of ``seed`` and the node's index, so a node
added later (index ``n_nodes`` and up) gets fresh ones without disturbing the rest.
Nothing here sends traffic: the addresses are for inventories, not for sockets
(integration tests on loopback build their own).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

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
    check_inventory,
)
from prober.model import Proto, SrcKind

#: The random-suffix alphabet of generated Kubernetes names (no vowels, no 0/1/3).
SUFFIX_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
ZONE_LETTERS: Final = "abcdef"
MAX_ZONES: Final = len(ZONE_LETTERS)

#: Node subnets: zone z is 10.0.{32 z}.0/19.
_NODE_SUBNET_BITS: Final = 13
#: Usable node offsets in a zone subnet: AWS reserves the first four and the last
#: address; the top 16 hold the NLB's address.
_NODE_FIRST: Final = 4
_NODE_SLOTS: Final = (1 << _NODE_SUBNET_BITS) - _NODE_FIRST - 1 - 16
#: Pod subnets: zone z is 100.{64 + z}.0.0/16, cut into /28 prefixes (one per node).
_PREFIXES_PER_ZONE: Final = 1 << 12

POD_PORTS: Final = (8080, 8081)
HOST_PORTS: Final = (18080, 18081)  # hostNetwork: the node's ports (deploy/base/agent-host.yaml)
ECHO_SERVICE: Final = "prober-echo"
ECHO_LOCAL_SERVICE: Final = "prober-echo-local"
SERVICE_PORT: Final = 80
NODE_PORT: Final = 31480
DNS_QUERY: Final = "kubernetes.default.svc.cluster.local"


def _hash(*parts: object) -> int:
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@functools.cache
def _coprime_step(modulus: int, seed: int, what: str) -> int:
    """A multiplier coprime with ``modulus``: ``j -> (a j + b) mod m`` is then a bijection."""
    a = _hash(seed, what, "step") % modulus | 1
    while _gcd(a, modulus) != 1:
        a += 2
    return a


@functools.cache
def _offset(modulus: int, seed: int, zone: int, what: str) -> int:
    return _hash(seed, zone, what, "offset") % modulus


def _dotted(value: int) -> str:
    return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


_SUFFIX_SPACE: Final = len(SUFFIX_ALPHABET) ** 5
#: Generations of one agent pod with distinct names (and addresses: 16 per prefix).
MAX_GENERATIONS: Final = 16


def k8s_suffix(index: int, *, seed: int = 0) -> str:
    """A generated-name suffix (``x7k2q``): distinct for distinct ``index`` (a bijection of
    ``index mod 27**5``), random-looking like the API server's."""
    a = _coprime_step(_SUFFIX_SPACE, seed, "suffix")
    h = (a * index + _hash(seed, "suffix", "offset")) % _SUFFIX_SPACE
    out = []
    for _ in range(5):
        h, r = divmod(h, len(SUFFIX_ALPHABET))
        out.append(SUFFIX_ALPHABET[r])
    return "".join(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class EksCluster:
    """An EKS-like cluster of ``n_nodes`` over ``zones`` availability zones (see the module doc).

    Node ``i`` is in zone ``i % zones``. :meth:`inventory` builds the inventory of any
    set of node indices (nodes added later have indices ``n_nodes`` and up).
    """

    n_nodes: int
    zones: int = 3
    region: str = "us-east-1"
    seed: int = 0
    #: Agent networks present on every node.
    kinds: tuple[SrcKind, ...] = (SrcKind.POD, SrcKind.HOST)
    #: With the echo Services, NodePort, NLB, kube-dns and the external target.
    shared: bool = True
    #: Every address moved onto 127.0.0.0/8 (the names stay the VPC ones), for tests
    #: that run real agents on loopback: 10.0.a.b -> 127.0.a.b (nodes, NLB),
    #: 100.s.a.b -> 127.s.a.b (pods), 172.20.a.b -> 127.20.a.b (Services, kube-dns),
    #: the external target 127.203.0.10.
    loopback: bool = False

    def __post_init__(self) -> None:
        if self.n_nodes < 1:
            raise ValueError(f"n_nodes must be at least 1, got {self.n_nodes}")
        if not 1 <= self.zones <= MAX_ZONES:
            raise ValueError(f"zones must be 1 to {MAX_ZONES}, got {self.zones}")

    # ---- zones ------------------------------------------------------------------------

    def zone(self, z: int) -> str:
        """The zone name: ``us-east-1a``, ``us-east-1b``, ..."""
        return f"{self.region}{ZONE_LETTERS[z]}"

    def zone_index(self, i: int) -> int:
        return i % self.zones

    def node_subnet(self, z: int) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.0.{32 * z}.0/19")

    def pod_subnet(self, z: int) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"100.{64 + z}.0.0/16")

    # ---- nodes ------------------------------------------------------------------------

    def _slot(self, i: int, modulus: int, what: str) -> int:
        z, j = self.zone_index(i), i // self.zones
        if j >= modulus:
            raise ValueError(f"node {i}: a zone holds at most {modulus} nodes here")
        a = _coprime_step(modulus, self.seed * 31 + z, what)
        return (a * j + _offset(modulus, self.seed, z, what)) % modulus

    def _at(self, address: str) -> str:
        return "127." + address.split(".", 1)[1] if self.loopback else address

    def _vpc_address(self, i: int) -> str:
        offset = _NODE_FIRST + self._slot(i, _NODE_SLOTS, "node")
        return _dotted((10 << 24) + (32 * self.zone_index(i) << 8) + offset)

    def node_address(self, i: int) -> str:
        return self._at(self._vpc_address(i))

    def node_name(self, i: int) -> str:
        """EC2's private DNS name of the node's VPC address (also with ``loopback``)."""
        vpc = self._vpc_address(i)
        domain = "ec2.internal" if self.region == "us-east-1" else f"{self.region}.compute.internal"
        return f"ip-{vpc.replace('.', '-')}.{domain}"

    def _prefix_base(self, i: int) -> int:
        return (
            (100 << 24) + ((64 + self.zone_index(i)) << 16) + 16 * self._slot(i, _PREFIXES_PER_ZONE, "prefix")
        )

    def pod_cidr(self, i: int) -> ipaddress.IPv4Network:
        """The node's ``/28`` pod prefix."""
        return ipaddress.IPv4Network(f"{_dotted(self._prefix_base(i))}/28")

    def node(self, i: int, *, ready: bool = True) -> Node:
        return Node(
            name=self.node_name(i),
            address=self.node_address(i),
            zone=self.zone(self.zone_index(i)),
            ready=ready,
        )

    @property
    def node_names(self) -> tuple[str, ...]:
        """The first ``n_nodes`` nodes' names, by index."""
        return tuple(self.node_name(i) for i in range(self.n_nodes))

    # ---- agents -----------------------------------------------------------------------

    def agent_name(self, i: int, kind: SrcKind, generation: int = 0) -> str:
        if not 0 <= generation < MAX_GENERATIONS:
            raise ValueError(f"generation must be 0 to {MAX_GENERATIONS - 1}, got {generation}")
        index = (i * MAX_GENERATIONS + generation) * 2 + (kind is SrcKind.HOST)
        return f"prober-agent-{kind.value}-{k8s_suffix(index, seed=self.seed)}"

    def agent_address(self, i: int, kind: SrcKind, generation: int = 0) -> str:
        """A host agent has the node's address; a pod agent an address of the node's prefix,
        a new one for each generation (the CNI does not hand a released address out at once)."""
        if kind is SrcKind.HOST:
            return self.node_address(i)
        first = _hash(self.seed, i, "pod-address") % 16
        return self._at(_dotted(self._prefix_base(i) + (first + 7 * generation) % 16))

    def agent(self, i: int, kind: SrcKind, *, generation: int = 0, ready: bool = True) -> Agent:
        http, udp = HOST_PORTS if kind is SrcKind.HOST else POD_PORTS
        return Agent(
            name=self.agent_name(i, kind, generation),
            node=self.node_name(i),
            kind=kind,
            address=self.agent_address(i, kind, generation),
            http_port=http,
            udp_port=udp,
            ready=ready,
        )

    # ---- shared targets ---------------------------------------------------------------

    @property
    def service_address(self) -> str:
        return self._at("172.20.113.25")

    @property
    def local_service_address(self) -> str:
        return self._at("172.20.41.7")

    @property
    def dns_address(self) -> str:
        return self._at("172.20.0.10")  # kube-dns: the tenth address of EKS's 172.20.0.0/16 service CIDR

    @property
    def external_address(self) -> str:
        return "127.203.0.10" if self.loopback else "192.0.2.10"

    def nlb_address(self, z: int) -> str:
        """The internal NLB's address in zone ``z`` (in the top of that zone's node subnet)."""
        net = self.node_subnet(z)
        return self._at(str(net[net.num_addresses - 2 - _hash(self.seed, z, "nlb") % 16]))

    def services(self) -> list[Service]:
        return [
            Service(name=ECHO_SERVICE, address=self.service_address, port=SERVICE_PORT),
            Service(
                name=ECHO_LOCAL_SERVICE, address=self.local_service_address, port=SERVICE_PORT, local=True
            ),
        ]

    def nodeports(self) -> list[NodePort]:
        return [NodePort(name=ECHO_SERVICE, port=NODE_PORT)]

    def nlbs(self) -> list[Nlb]:
        addresses = [ZoneAddress(zone=self.zone(z), address=self.nlb_address(z)) for z in range(self.zones)]
        return [Nlb(name=ECHO_SERVICE, addresses=addresses, port=SERVICE_PORT)]

    def dns(self) -> list[DnsServer]:
        return [DnsServer(name="kube-dns", address=self.dns_address, query=DNS_QUERY)]

    def externals(self) -> list[External]:
        return [External(name="example", address=self.external_address, port=443, proto=Proto.TCP)]

    # ---- the inventory ----------------------------------------------------------------

    def inventory(
        self,
        nodes: Iterable[int] | None = None,
        *,
        nodes_not_ready: Iterable[int] = (),
        agents_not_ready: Iterable[tuple[int, SrcKind]] = (),
        generations: Mapping[tuple[int, SrcKind], int] | None = None,
        agents_absent: Iterable[tuple[int, SrcKind]] = (),
    ) -> Inventory:
        """The inventory of nodes ``nodes`` (default: ``range(n_nodes)``).

        ``nodes_not_ready``, ``agents_not_ready`` (node index, kind) gate as the
        Kubernetes source does; ``generations`` picks which incarnation of an agent
        pod runs (default 0); ``agents_absent`` leaves agents out (no pod running).
        """
        indices = sorted(set(range(self.n_nodes) if nodes is None else nodes))
        not_ready = set(nodes_not_ready)
        agents_off = set(agents_not_ready)
        absent = set(agents_absent)
        gens = generations or {}
        node_list = sorted((self.node(i, ready=i not in not_ready) for i in indices), key=lambda n: n.name)
        agents = [
            self.agent(i, kind, generation=gens.get((i, kind), 0), ready=(i, kind) not in agents_off)
            for i in indices
            for kind in self.kinds
            if (i, kind) not in absent
        ]
        agents.sort(key=lambda a: (a.node, a.kind.value, a.name))
        if not self.shared:
            return check_inventory(Inventory(nodes=node_list, agents=agents))
        return check_inventory(
            Inventory(
                nodes=node_list,
                agents=agents,
                services=self.services(),
                nodeports=self.nodeports(),
                nlbs=self.nlbs(),
                dns=self.dns(),
                externals=self.externals(),
            )
        )


def eks_inventory(n_nodes: int, **shape: object) -> Inventory:
    """The inventory of an :class:`EksCluster` of ``n_nodes`` (``shape``: its other fields)."""
    return EksCluster(n_nodes=n_nodes, **shape).inventory()  # type: ignore[arg-type]
