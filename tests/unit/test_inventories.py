"""The EKS-like inventory builder: production names and addresses, valid inventories, stable growth."""

from __future__ import annotations

import ipaddress
import re

import pytest

from prober.inventory import check_inventory
from prober.model import SrcKind
from prober.schedule import PinglistBuilder, SchedulePolicy
from tests.inventories import EksCluster, eks_inventory


def test_names_and_addresses_look_like_eks() -> None:
    c = EksCluster(n_nodes=6)
    inv = c.inventory()
    for node in inv.nodes:
        assert re.fullmatch(r"ip-10-0-\d{1,3}-\d{1,3}\.ec2\.internal", node.name)
        assert node.name == f"ip-{node.address.replace('.', '-')}.ec2.internal"
        assert node.zone in ("us-east-1a", "us-east-1b", "us-east-1c")
    assert [n.name for n in inv.nodes] == sorted(n.name for n in inv.nodes)
    for agent in inv.agents:
        assert re.fullmatch(
            rf"prober-agent-{agent.kind.value}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", agent.name
        )
    other = EksCluster(n_nodes=2, region="eu-west-1").inventory()
    assert all(n.name.endswith(".eu-west-1.compute.internal") for n in other.nodes)
    assert {n.zone for n in other.nodes} == {"eu-west-1a", "eu-west-1b"}


def test_nodes_pods_and_nlb_live_in_their_zones_subnets() -> None:
    c = EksCluster(n_nodes=30)
    inv = c.inventory()
    zone_index = {c.zone(z): z for z in range(3)}
    node_of = {n.name: n for n in inv.nodes}
    for node in inv.nodes:
        z = zone_index[node.zone]
        address = ipaddress.IPv4Address(node.address)
        assert address in c.node_subnet(z)
        offset = int(address) - int(c.node_subnet(z).network_address)
        assert 4 <= offset < c.node_subnet(z).num_addresses - 1  # AWS's reserved addresses
    for agent in inv.agents:
        node = node_of[agent.node]
        i = next(i for i in range(30) if c.node_name(i) == agent.node)
        if agent.kind is SrcKind.HOST:
            assert agent.address == node.address
            assert (agent.http_port, agent.udp_port) == (18080, 18081)
        else:
            assert ipaddress.IPv4Address(agent.address) in c.pod_cidr(i)
            assert c.pod_cidr(i).subnet_of(c.pod_subnet(zone_index[node.zone]))
            assert (agent.http_port, agent.udp_port) == (8080, 8081)
    [nlb] = inv.nlbs
    for za in nlb.addresses:
        assert ipaddress.IPv4Address(za.address) in c.node_subnet(zone_index[za.zone])
        assert za.address not in {n.address for n in inv.nodes}


def test_shared_targets_are_the_deployed_ones() -> None:
    inv = eks_inventory(3)
    assert [(s.name, s.local) for s in inv.services] == [("prober-echo", False), ("prober-echo-local", True)]
    assert all(
        ipaddress.IPv4Address(s.address) in ipaddress.IPv4Network("172.20.0.0/16") for s in inv.services
    )
    assert [n.name for n in inv.nodeports] == ["prober-echo"]
    assert 30000 <= inv.nodeports[0].port <= 32767
    assert [(d.name, d.address) for d in inv.dns] == [("kube-dns", "172.20.0.10")]
    assert len(inv.externals) == 1
    assert [len(n.addresses) for n in inv.nlbs] == [3]


@pytest.mark.parametrize("n", [1, 3, 1000, 5000])
def test_every_name_and_address_is_unique(n: int) -> None:
    inv = EksCluster(n_nodes=n).inventory()
    assert check_inventory(inv) is inv
    assert len({x.address for x in inv.nodes}) == n
    assert len({a.address for a in inv.agents}) == 2 * n
    assert len({a.name for a in inv.agents}) == 2 * n


def test_added_nodes_and_restarted_pods_get_fresh_names_and_addresses() -> None:
    c = EksCluster(n_nodes=20)
    first = c.inventory()
    grown = c.inventory(range(24))
    assert first.nodes == [n for n in grown.nodes if n.name in {m.name for m in first.nodes}]
    assert len({n.address for n in grown.nodes}) == 24
    restarted = c.inventory(generations={(3, SrcKind.POD): 1, (3, SrcKind.HOST): 1})
    before = {(a.node, a.kind): a for a in first.agents}
    after = {(a.node, a.kind): a for a in restarted.agents}
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {(c.node_name(3), SrcKind.POD), (c.node_name(3), SrcKind.HOST)}
    pod = (c.node_name(3), SrcKind.POD)
    assert after[pod].name != before[pod].name
    assert after[pod].address != before[pod].address
    host = (c.node_name(3), SrcKind.HOST)
    assert after[host].address == before[host].address  # the node's own address


def test_gating_and_absence() -> None:
    c = EksCluster(n_nodes=4)
    inv = c.inventory(
        nodes_not_ready=[1], agents_not_ready=[(2, SrcKind.POD)], agents_absent=[(3, SrcKind.HOST)]
    )
    assert [n.ready for n in inv.nodes if n.name == c.node_name(1)] == [False]
    assert [a.ready for a in inv.agents if a.name == c.agent_name(2, SrcKind.POD)] == [False]
    assert c.agent_name(3, SrcKind.HOST) not in {a.name for a in inv.agents}
    assert len(inv.agents) == 7


def test_the_schedule_builds_pinglists_for_it() -> None:
    b = PinglistBuilder(eks_inventory(50), SchedulePolicy())
    assert len(b.agents()) == 100
    pl = b.for_agent(b.agents()[0])
    assert pl is not None
    assert len(pl.peers) == 49
    assert {g.name.split("/")[0] for g in pl.shared} == {"service", "nlb", "dns", "external"}


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="n_nodes"):
        EksCluster(n_nodes=0)
    with pytest.raises(ValueError, match="zones"):
        EksCluster(n_nodes=3, zones=7)
    with pytest.raises(ValueError, match="generation"):
        EksCluster(n_nodes=3).agent_name(0, SrcKind.POD, generation=16)
