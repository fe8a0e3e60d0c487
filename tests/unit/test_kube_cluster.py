"""From recorded Kubernetes API objects to an inventory: decoding, gating, targets, zones, settings."""

from __future__ import annotations

import copy
import ipaddress
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prober.errors import UsageError
from prober.inventory import DnsServer, External, Node, ZoneAddress
from prober.inventory.cluster import (
    AgentState,
    ApiNode,
    ApiPod,
    ApiService,
    KubeSettings,
    attribute_zones,
    build_inventory,
    check_selector,
    gate,
    is_aws_elb_hostname,
    kube_settings_from,
    lb_addresses_of,
    nameservers_from_resolv_conf,
    node_ready,
    parse_dns_server,
    parse_external,
    zone_by_subnet,
)
from prober.model import Proto, SrcKind
from tests import kubeschema

DATA = Path(__file__).parents[1] / "data" / "kube"
T = TypeVar("T")
NLB = "k8s-prober-proberec-3f9d2c1b7a-8e4d5c6b7a9f0e1d.elb.us-east-1.amazonaws.com"
#: The moment the recorded objects were "taken": 08:00:00Z on 2025-11-20.
NOW = datetime(2025, 11, 20, 8, 0, 0, tzinfo=UTC).timestamp()
SETTINGS = KubeSettings()
NODE_A, NODE_B, NODE_C, NODE_D = (f"ip-10-0-{x}.ec2.internal" for x in ("1-10", "2-10", "3-10", "3-20"))


def raw_items(name: str) -> list[dict[str, Any]]:
    doc = json.loads((DATA / name).read_text())
    items: list[dict[str, Any]] = doc["items"]
    return items


def decode(items: list[dict[str, Any]], kind: type[T]) -> dict[str, T]:
    return {i["metadata"]["name"]: msgspec.convert(i, kind) for i in items}


def recorded() -> tuple[dict[str, ApiNode], dict[str, ApiPod], dict[str, ApiService]]:
    return (
        decode(raw_items("nodes.json"), ApiNode),
        decode(raw_items("pods.json"), ApiPod),
        decode(raw_items("services.json"), ApiService),
    )


LB = {
    NLB: [
        ZoneAddress(zone="us-east-1a", address="10.0.1.200"),
        ZoneAddress(zone="us-east-1b", address="10.0.2.200"),
        ZoneAddress(zone="us-east-1c", address="10.0.3.200"),
    ]
}


def test_recorded_objects_decode_to_what_prober_reads() -> None:
    nodes, pods, services = recorded()
    a = nodes[NODE_A]
    assert a.metadata.labels["topology.kubernetes.io/zone"] == "us-east-1a"
    assert [x.type for x in a.status.addresses] == ["InternalIP", "InternalDNS", "Hostname"]
    host = pods["prober-agent-host-q9z4m"]
    assert host.spec.host_network
    assert [(p.name, p.container_port, p.protocol) for p in host.spec.containers[0].ports] == [
        ("http", 18080, "TCP"),
        ("udp", 18081, "UDP"),
    ]
    assert pods["prober-agent-host-2hfxd"].metadata.deletion_timestamp is not None
    assert pods["prober-agent-host-kk7sv"].status.pod_ip == ""
    echo = services["prober-echo"]
    assert echo.spec.cluster_ip == "172.20.113.25"
    assert lb_addresses_of(echo) == [NLB]
    assert services["prober-echo-local"].spec.internal_traffic_policy == "Local"


def test_recorded_cluster_gives_the_gated_inventory() -> None:
    nodes, pods, services = recorded()
    built = build_inventory(nodes, pods, services, lb_addresses=LB, settings=SETTINGS, now=NOW)
    inv = built.inventory
    assert [(n.name, n.zone, n.ready) for n in inv.nodes] == [
        (NODE_A, "us-east-1a", True),
        (NODE_B, "us-east-1b", True),
        (NODE_C, "us-east-1c", True),
        (NODE_D, "us-east-1c", False),  # Ready=Unknown: the kubelet stopped posting status
    ]
    ready = {a.name: a.ready for a in inv.agents}
    assert ready == {
        "prober-agent-pod-7xk2p": True,
        "prober-agent-host-q9z4m": True,
        "prober-agent-pod-m4kq8": False,  # Ready 10 s ago: warming up
        "prober-agent-host-2hfxd": False,  # terminating
        "prober-agent-pod-w8jvn": False,  # readiness probe failing
        "prober-agent-host-5tlzc": True,
        "prober-agent-pod-bz6rt": False,  # its node is not ready
    }  # prober-agent-host-kk7sv is Pending without an IP: not an agent yet
    assert built.agent_states == {
        AgentState.PROBED: 3,
        AgentState.WARMING_UP: 1,
        AgentState.TERMINATING: 1,
        AgentState.NOT_READY: 1,
        AgentState.NODE_NOT_READY: 1,
    }
    # The warm-up of prober-agent-pod-m4kq8 (Ready at 07:59:50) ends at 08:00:20.
    assert built.next_change_at == NOW + 20
    host_a = inv.agent("prober-agent-host-q9z4m")
    assert host_a is not None
    assert (host_a.kind, host_a.address, host_a.http_port, host_a.udp_port) == (
        SrcKind.HOST,
        "10.0.1.10",
        18080,
        18081,
    )
    pod_a = inv.agent("prober-agent-pod-7xk2p")
    assert pod_a is not None
    assert (pod_a.kind, pod_a.address, pod_a.http_port, pod_a.udp_port) == (
        SrcKind.POD,
        "10.0.1.57",
        8080,
        8081,
    )
    assert [(s.name, s.address, s.port, s.local) for s in inv.services] == [
        ("prober-echo", "172.20.113.25", 80, False),
        ("prober-echo-local", "172.20.41.7", 80, True),
    ]
    assert [(p.name, p.port) for p in inv.nodeports] == [("prober-echo", 31480)]
    assert len(inv.nlbs) == 1
    assert inv.nlbs[0].name == "prober-echo"
    assert inv.nlbs[0].port == 80
    assert inv.nlbs[0].addresses == LB[NLB]
    assert built.problems == ()


def test_warm_up_ends_without_an_api_event() -> None:
    nodes, pods, services = recorded()
    later = build_inventory(nodes, pods, services, lb_addresses=LB, settings=SETTINGS, now=NOW + 20)
    agent = later.inventory.agent("prober-agent-pod-m4kq8")
    assert agent is not None
    assert agent.ready
    assert later.next_change_at is None


def test_equal_states_give_equal_versions_in_any_order() -> None:
    nodes, pods, services = recorded()
    one = build_inventory(nodes, pods, services, lb_addresses=LB, settings=SETTINGS, now=NOW).inventory
    rev = build_inventory(
        dict(reversed(nodes.items())),
        dict(reversed(pods.items())),
        dict(reversed(services.items())),
        lb_addresses=LB,
        settings=SETTINGS,
        now=NOW,
    ).inventory
    assert one.version() == rev.version()


def test_departed_node_takes_its_agents_along() -> None:
    nodes, pods, services = recorded()
    del nodes[NODE_A]
    inv = build_inventory(nodes, pods, services, lb_addresses=LB, settings=SETTINGS, now=NOW).inventory
    assert NODE_A not in [n.name for n in inv.nodes]
    assert all(a.node != NODE_A for a in inv.agents)


def _pod(**changes: Any) -> ApiPod:
    raw = copy.deepcopy(
        next(p for p in raw_items("pods.json") if p["metadata"]["name"] == "prober-agent-pod-7xk2p")
    )
    for path, value in changes.items():
        target = raw
        *parents, leaf = path.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return msgspec.convert(raw, ApiPod)


def _ready(status: str, at: str | None) -> list[dict[str, Any]]:
    cond: dict[str, Any] = {"type": "Ready", "status": status}
    if at:
        cond["lastTransitionTime"] = at
    return [{"type": "PodScheduled", "status": "True"}, cond]


READY_NODE = Node(name=NODE_A, address="10.0.1.10", ready=True)


@pytest.mark.parametrize(
    ("pod", "node", "now", "expected"),
    [
        pytest.param(_pod(), READY_NODE, NOW, (AgentState.PROBED, None), id="ready-long-ago"),
        pytest.param(
            _pod(status__conditions=_ready("True", "2025-11-20T07:59:59Z")),
            READY_NODE,
            NOW,
            (AgentState.WARMING_UP, NOW + 29),
            id="ready-1s-ago",
        ),
        pytest.param(
            _pod(status__conditions=_ready("True", "2025-11-20T07:59:30Z")),
            READY_NODE,
            NOW,
            (AgentState.PROBED, None),
            id="warm-up-just-over",
        ),
        pytest.param(
            _pod(status__conditions=_ready("True", None)),
            READY_NODE,
            NOW,
            (AgentState.PROBED, None),
            id="no-time",
        ),
        pytest.param(
            _pod(status__conditions=_ready("False", "2025-11-20T07:00:00Z")),
            READY_NODE,
            NOW,
            (AgentState.NOT_READY, None),
            id="not-ready",
        ),
        pytest.param(
            _pod(status__conditions=[{"type": "PodScheduled", "status": "True"}]),
            READY_NODE,
            NOW,
            (AgentState.NOT_READY, None),
            id="no-ready-condition",
        ),
        pytest.param(
            _pod(metadata__deletionTimestamp="2025-11-20T07:59:59Z"),
            READY_NODE,
            NOW,
            (AgentState.TERMINATING, None),
            id="terminating",
        ),
        pytest.param(
            _pod(),
            Node(name=NODE_A, address="10.0.1.10", ready=False),
            NOW,
            (AgentState.NODE_NOT_READY, None),
            id="node-not-ready",
        ),
    ],
)
def test_gate(pod: ApiPod, node: Node, now: float, expected: tuple[AgentState, float | None]) -> None:
    assert gate(pod, node, SETTINGS, now=now) == expected


def _node(**changes: Any) -> ApiNode:
    raw = copy.deepcopy(raw_items("nodes.json")[0])
    raw["metadata"].update(changes.pop("metadata", {}))
    raw["spec"].update(changes.pop("spec", {}))
    assert not changes
    return msgspec.convert(raw, ApiNode)


@pytest.mark.parametrize(
    ("node", "ready"),
    [
        pytest.param(_node(), True, id="ready"),
        pytest.param(
            _node(metadata={"deletionTimestamp": "2025-11-20T07:59:00Z"}), False, id="being-deleted"
        ),
        pytest.param(
            _node(
                spec={
                    "taints": [
                        {
                            "key": "ToBeDeletedByClusterAutoscaler",
                            "value": "1763625540",
                            "effect": "NoSchedule",
                        }
                    ]
                }
            ),
            False,
            id="cluster-autoscaler-scale-down",
        ),
        pytest.param(
            _node(spec={"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}),
            False,
            id="karpenter-disruption",
        ),
        pytest.param(
            _node(
                spec={
                    "unschedulable": True,
                    "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
                }
            ),
            True,
            id="cordoned-still-probed",
        ),
    ],
)
def test_node_ready(node: ApiNode, ready: bool) -> None:
    assert node_ready(node, SETTINGS) is ready


def test_pod_without_named_ports_is_left_out_and_said_so() -> None:
    nodes, pods, services = recorded()
    raw = copy.deepcopy(raw_items("pods.json")[0])
    raw["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "protocol": "TCP"}]
    pods["prober-agent-pod-7xk2p"] = msgspec.convert(raw, ApiPod)
    built = build_inventory(nodes, pods, services, lb_addresses=LB, settings=SETTINGS, now=NOW)
    assert built.inventory.agent("prober-agent-pod-7xk2p") is None
    assert any("prober-agent-pod-7xk2p" in p and "'http'" in p for p in built.problems)


def test_network_kind_follows_host_network_when_the_label_disagrees() -> None:
    nodes, pods, services = recorded()
    raw = copy.deepcopy(raw_items("pods.json")[0])
    raw["metadata"]["labels"]["prober.dev/network"] = "host"
    pods["prober-agent-pod-7xk2p"] = msgspec.convert(raw, ApiPod)
    built = build_inventory(nodes, pods, services, lb_addresses=LB, settings=SETTINGS, now=NOW)
    agent = built.inventory.agent("prober-agent-pod-7xk2p")
    assert agent is not None
    assert agent.kind is SrcKind.POD
    assert any("hostNetwork" in p for p in built.problems)


def _service(
    name: str,
    spec: dict[str, Any],
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> ApiService:
    meta = {"name": name, "namespace": "prober", "annotations": annotations or {}}
    return msgspec.convert({"metadata": meta, "spec": spec, "status": status or {}}, ApiService)


HTTP = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]


@pytest.mark.parametrize(
    ("svc", "services", "nodeports", "nlbs"),
    [
        pytest.param(
            _service("echo", {"type": "ClusterIP", "clusterIP": "10.96.0.20", "ports": HTTP}),
            [("echo", "10.96.0.20", 80, False)],
            [],
            [],
            id="cluster-ip",
        ),
        pytest.param(
            _service("echo", {"type": "ClusterIP", "clusterIP": "None", "ports": HTTP}),
            [],
            [],
            [],
            id="headless",
        ),
        pytest.param(
            _service(
                "echo",
                {
                    "type": "ClusterIP",
                    "clusterIP": "10.96.0.21",
                    "ports": HTTP,
                    "internalTrafficPolicy": "Local",
                },
            ),
            [("echo", "10.96.0.21", 80, True)],
            [],
            [],
            id="internal-traffic-local",
        ),
        pytest.param(
            _service(
                "echo",
                {"type": "NodePort", "clusterIP": "10.96.0.22", "ports": [{**HTTP[0], "nodePort": 30080}]},
            ),
            [("echo", "10.96.0.22", 80, False)],
            [("echo", 30080, "Cluster")],
            [],
            id="nodeport",
        ),
        pytest.param(
            _service(
                "echo",
                {
                    "type": "LoadBalancer",
                    "clusterIP": "10.96.0.23",
                    "ports": [{**HTTP[0], "nodePort": 30081}],
                },
                {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}},
            ),
            [("echo", "10.96.0.23", 80, False)],
            [("echo", 30081, "Cluster")],
            [("echo", 80, [("zone-x", "192.0.2.7")], "Cluster")],
            id="load-balancer-ip",
        ),
        pytest.param(
            _service(
                "echo",
                {
                    "type": "LoadBalancer",
                    "clusterIP": "10.96.0.26",
                    "ports": [{**HTTP[0], "nodePort": 30083}],
                    "externalTrafficPolicy": "Local",
                },
                {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}},
            ),
            [("echo", "10.96.0.26", 80, False)],
            [("echo", 30083, "Local")],
            [("echo", 80, [("zone-x", "192.0.2.7")], "Local")],
            id="external-traffic-local",
        ),
        pytest.param(
            _service(
                "echo",
                {
                    "type": "LoadBalancer",
                    "clusterIP": "10.96.0.27",
                    "ports": [{**HTTP[0], "nodePort": 30084}],
                },
                {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}},
                {"service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip"},
            ),
            [("echo", "10.96.0.27", 80, False)],
            [("echo", 30084, "Cluster")],
            [("echo", 80, [("zone-x", "192.0.2.7")], "Local")],  # straight to the pods: one hop
            id="nlb-ip-targets",
        ),
        pytest.param(
            _service(
                "echo",
                {
                    "type": "LoadBalancer",
                    "clusterIP": "10.96.0.24",
                    "ports": [{**HTTP[0], "nodePort": 30082}],
                },
            ),
            [("echo", "10.96.0.24", 80, False)],
            [("echo", 30082, "Cluster")],
            [],
            id="load-balancer-pending",
        ),
        pytest.param(
            _service("echo", {"type": "ExternalName", "externalName": "example.com", "ports": HTTP}),
            [],
            [],
            [],
            id="external-name-ignored",
        ),
        pytest.param(
            _service(
                "echo",
                {
                    "type": "ClusterIP",
                    "clusterIP": "10.96.0.25",
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP"},
                        {"name": "metrics", "port": 9090, "protocol": "TCP"},
                        {"name": "http", "port": 8000, "protocol": "TCP"},
                    ],
                },
            ),
            [("echo", "10.96.0.25", 8000, False)],
            [],
            [],
            id="named-port-wins",
        ),
    ],
)
def test_echo_service_targets(
    svc: ApiService,
    services: list[tuple[str, str, int, bool]],
    nodeports: list[tuple[str, int, str]],
    nlbs: list[tuple[str, int, list[tuple[str, str]], str]],
) -> None:
    nodes, _, _ = recorded()
    lbs = {"192.0.2.7": [ZoneAddress(zone="zone-x", address="192.0.2.7")]}
    inv = build_inventory(nodes, {}, {"echo": svc}, lb_addresses=lbs, settings=SETTINGS, now=NOW).inventory
    assert [(s.name, s.address, s.port, s.local) for s in inv.services] == services
    assert [(p.name, p.port, p.external_traffic_policy) for p in inv.nodeports] == nodeports
    assert [
        (n.name, n.port, [(a.zone, a.address) for a in n.addresses], n.external_traffic_policy)
        for n in inv.nlbs
    ] == nlbs


def test_settings_targets_are_passed_through() -> None:
    nodes, pods, services = recorded()
    settings = KubeSettings(
        dns=(
            DnsServer(name="kube-dns", address="172.20.0.10", query="kubernetes.default.svc.cluster.local"),
        ),
        externals=(External(name="api", address="api.example.com", port=443),),
    )
    inv = build_inventory(nodes, pods, services, lb_addresses=LB, settings=settings, now=NOW).inventory
    assert inv.dns == list(settings.dns)
    assert inv.externals == list(settings.externals)


# --- zones of load-balancer addresses ---------------------------------------------------

ZONE_NODES = [
    Node(name="a1", address="10.0.1.10", zone="us-east-1a"),
    Node(name="a2", address="10.0.1.99", zone="us-east-1a"),
    Node(name="b1", address="10.0.2.10", zone="us-east-1b"),
    Node(name="c1", address="10.0.3.10", zone="us-east-1c"),
]


@pytest.mark.parametrize(
    ("address", "zone"),
    [
        pytest.param("10.0.1.200", "us-east-1a", id="same-subnet-a"),
        pytest.param("10.0.2.200", "us-east-1b", id="same-subnet-b"),
        pytest.param("10.0.4.5", "", id="equidistant-ambiguous"),
        pytest.param("54.210.3.7", "", id="public-address"),
        pytest.param("fd00::1", "", id="other-family"),
        pytest.param("not-an-ip", "", id="garbage"),
    ],
)
def test_zone_by_subnet(address: str, zone: str) -> None:
    assert zone_by_subnet(address, ZONE_NODES) == zone


@given(
    st.lists(st.integers(min_value=0, max_value=15), min_size=2, max_size=6, unique=True),
    st.data(),
)
def test_zone_by_subnet_finds_the_subnet_of_any_address(blocks: list[int], data: st.DataObject) -> None:
    """Disjoint /20 subnets, one zone each: every address lands in the zone of its own subnet."""
    nets = {f"zone-{b}": ipaddress.ip_network(f"10.1.{b * 16}.0/20") for b in blocks}
    nodes = [
        Node(name=f"{zone}-{host}", address=str(net[host]), zone=zone)
        for zone, net in nets.items()
        for host in data.draw(st.lists(st.integers(1, net.num_addresses - 2), min_size=1, max_size=3))
    ]
    zone = data.draw(st.sampled_from(sorted(nets)))
    address = str(nets[zone][data.draw(st.integers(1, nets[zone].num_addresses - 2))])
    assert zone_by_subnet(address, nodes) == zone


def test_zonal_names_are_authoritative_and_fill_gaps_by_subnet() -> None:
    got = attribute_zones(
        ["10.0.1.200", "10.0.2.200", "10.0.9.9"],
        {"us-east-1b": ["10.0.1.200"], "us-east-1c": ["10.0.3.200"]},  # zonal answers win over subnets
        ZONE_NODES,
    )
    assert got == [
        ZoneAddress(zone="", address="10.0.9.9"),
        ZoneAddress(zone="us-east-1b", address="10.0.1.200"),
        ZoneAddress(zone="us-east-1b", address="10.0.2.200"),
    ]  # 10.0.3.200 is not in the regional answer: clients never reach it, so it is not probed


@pytest.mark.parametrize(
    ("host", "aws"),
    [
        (NLB, True),
        ("my-lb-1234567890abcdef.elb.eu-west-1.amazonaws.com.", True),
        ("k8s-x-y-0123456789.elb.cn-north-1.amazonaws.com.cn", True),
        ("lb.example.com", False),
        ("elb.amazonaws.com.evil.example", False),
    ],
)
def test_aws_hostnames(host: str, aws: bool) -> None:
    assert is_aws_elb_hostname(host) is aws


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "api=api.example.com:443",
            External(name="api", address="api.example.com", port=443, proto=Proto.TCP),
        ),
        ("web=example.com:80/http", External(name="web", address="example.com", port=80, proto=Proto.HTTP)),
        ("ntp=192.0.2.123:123/UDP", External(name="ntp", address="192.0.2.123", port=123, proto=Proto.UDP)),
        ("v6=[2001:db8::1]:443", External(name="v6", address="2001:db8::1", port=443, proto=Proto.TCP)),
    ],
)
def test_parse_external(spec: str, expected: External) -> None:
    assert parse_external(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("api.example.com:443", "NAME=HOST:PORT"),
        ("api=api.example.com", "needs a port"),
        ("api=api.example.com:99999", "not a port number"),
        ("api=api.example.com:443/icmp", "not one of tcp, http, udp"),
        ("api=api.example.com:443/dns", "not one of tcp, http, udp"),
        ("10.0.0.1=10.0.0.1:443", "must not be an address"),
        ("=host:1", "needs a NAME= prefix"),
        ("v6=[2001:db8::1:443", "expected [IPv6]:PORT"),
    ],
)
def test_bad_external_is_named(spec: str, fragment: str) -> None:
    with pytest.raises(UsageError, match="--external") as info:
        parse_external(spec)
    assert fragment in str(info.value)


def test_parse_dns_server() -> None:
    q = "kubernetes.default.svc.cluster.local"
    assert parse_dns_server("kube-dns=172.20.0.10", query=q) == DnsServer(
        name="kube-dns", address="172.20.0.10", query=q
    )
    assert parse_dns_server("alt=[fd00::53]:5353", query=q) == DnsServer(
        name="alt", address="fd00::53", query=q, port=5353
    )
    with pytest.raises(UsageError, match="not an IP address"):
        parse_dns_server("kube-dns=dns.example.com", query=q)


@pytest.mark.parametrize(
    "selector",
    [
        "app.kubernetes.io/name=prober,app.kubernetes.io/component=agent",
        "app==prober",
        "tier!=frontend",
        "environment in (production, qa)",
        "tier notin (frontend,backend),!canary,partition",
        "app=",  # an empty value: the label is present and empty
    ],
)
def test_valid_selectors(selector: str) -> None:
    assert check_selector(selector, flag="--agent-selector") == selector.strip()


@pytest.mark.parametrize("selector", ["", "=prober", "app=pro ber", "app in prober", "a=b,,c=d", "a=b;c=d"])
def test_invalid_selectors(selector: str) -> None:
    with pytest.raises(UsageError, match=r"--agent-selector: .* is not a label selector"):
        check_selector(selector, flag="--agent-selector")


def test_resolv_conf_nameservers() -> None:
    text = (
        "# written by kubelet\nsearch prober.svc.cluster.local svc.cluster.local cluster.local ec2.internal\n"
        "nameserver 172.20.0.10\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n"
    )
    assert nameservers_from_resolv_conf(text) == ["172.20.0.10", "fe80::1"]


def test_settings_defaults_in_a_cluster() -> None:
    s = kube_settings_from(
        in_cluster_namespace="monitoring\n", resolv_conf="search x\nnameserver 172.20.0.10\noptions ndots:5\n"
    )
    assert s.namespace == "monitoring"
    assert s.dns == (
        DnsServer(name="kube-dns", address="172.20.0.10", query="kubernetes.default.svc.cluster.local"),
    )
    assert s.kubeconfig is None


def test_settings_outside_a_cluster_have_no_implicit_dns() -> None:
    s = kube_settings_from(kubeconfig="/home/me/.kube/config")
    assert s.namespace == "prober"
    assert s.dns == ()
    assert s.kubeconfig == "/home/me/.kube/config"


def test_explicit_flags_win() -> None:
    s = kube_settings_from(
        namespace="probes",
        in_cluster_namespace="prober",
        resolv_conf="nameserver 172.20.0.10\n",
        dns_servers=["node-local=169.254.20.10"],
        dns_query="example.com.",
        externals=["api=api.example.com:443"],
        warmup_s=5,
    )
    assert s.namespace == "probes"
    assert s.dns == (DnsServer(name="node-local", address="169.254.20.10", query="example.com"),)
    assert s.externals == (External(name="api", address="api.example.com", port=443),)
    assert s.warmup_s == 5


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"namespace": "Not_A_Namespace"}, "--namespace"),
        ({"warmup_s": -1.0}, "--warmup"),
        ({"warmup_s": float("nan")}, "--warmup"),
        ({"dns_query": "two words"}, "--dns-query"),
        ({"agent_selector": "app in prober"}, "--agent-selector"),
        ({"echo_selector": "a=b;c"}, "--echo-selector"),
        ({"dns_servers": ["x=10.0.0.1"], "externals": ["x=example.com:1"]}, "unique: x"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        kube_settings_from(**kwargs)
    assert fragment in str(info.value)


# --- the recorded objects are real API objects --------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"), [("nodes.json", "Node"), ("pods.json", "Pod"), ("services.json", "Service")]
)
def test_recorded_lists_match_the_api_schema(name: str, kind: str) -> None:
    doc = json.loads((DATA / name).read_text())
    assert doc["kind"] == f"{kind}List"
    assert doc["metadata"]["resourceVersion"]
    kubeschema.validate(doc)
    for item in doc["items"]:
        assert "kind" not in item  # list items come without kind/apiVersion, as the API sends them
        assert item["metadata"]["resourceVersion"]
        kubeschema.validate({"apiVersion": "v1", "kind": kind, **item})


@pytest.mark.parametrize(
    "name", ["nodes-watch.jsonl", "pods-watch.jsonl", "watch-gone.jsonl", "watch-error.jsonl"]
)
def test_recorded_watch_events_match_the_api_schema(name: str) -> None:
    lines = (DATA / name).read_text().splitlines()
    assert lines
    for line in lines:
        event = json.loads(line)
        kubeschema.validate_as(event, "watchevent-meta-v1")
        assert event["type"] in ("ADDED", "MODIFIED", "DELETED", "ERROR")
        if event["type"] == "ERROR":
            kubeschema.validate_as(event["object"], "status-meta-v1")
        else:
            kubeschema.validate(event["object"])


@pytest.mark.parametrize("name", ["forbidden.json", "unavailable.json"])
def test_recorded_errors_are_status_objects(name: str) -> None:
    kubeschema.validate_as(json.loads((DATA / name).read_text()), "status-meta-v1")


def test_a_node_pod_cidr_is_read_from_its_spec() -> None:
    """spec.podCIDR (bridge CNIs): a node's masqueraded address under externalTrafficPolicy:
    Cluster may be its bridge's, in that range; an EKS node has none."""
    nodes, pods, services = recorded()
    with_cidr = {name: _node(metadata={"name": name}, spec={"podCIDR": "10.244.3.0/24"}) for name in [NODE_A]}
    built = build_inventory(
        {**nodes, **with_cidr}, pods, services, lb_addresses=LB, settings=SETTINGS, now=NOW
    )
    cidrs = {n.name: n.pod_cidr for n in built.inventory.nodes}
    assert cidrs[NODE_A] == "10.244.3.0/24"
    assert {c for name, c in cidrs.items() if name != NODE_A} == {""}
