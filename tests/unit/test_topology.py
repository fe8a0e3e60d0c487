"""Topology: what diagnosis reads from the inventory, and the node behind a client address."""

from __future__ import annotations

import pytest

from prober.inventory import Inventory, Nlb, Node, ZoneAddress
from prober.stats import Topology

INV = Inventory(
    nodes=[
        Node(name="node-a", address="172.31.0.10", zone="zone-a", pod_cidr="10.244.0.0/24"),
        Node(name="node-b", address="172.31.16.11", zone="zone-b", pod_cidr="10.244.1.0/24"),
        Node(name="node-c", address="172.31.0.12", zone="zone-a"),
    ],
    nlbs=[
        Nlb(
            name="echo",
            external_traffic_policy="Cluster",
            addresses=[ZoneAddress(zone="zone-a", address="172.31.15.200")],
        ),
        Nlb(name="other", addresses=[ZoneAddress(zone="zone-a", address="172.31.15.201")]),
    ],
)


@pytest.mark.parametrize(
    ("address", "node"),
    [
        pytest.param("172.31.16.11", "node-b", id="node-address"),
        pytest.param("10.244.0.1", "node-a", id="bridge-address-in-pod-range"),
        pytest.param("10.244.1.77", "node-b", id="pod-in-pod-range"),
        pytest.param("10.244.2.1", None, id="no-such-range"),
        pytest.param("172.31.15.200", None, id="the-nlb-itself"),
        pytest.param("not-an-address", None, id="garbage"),
        pytest.param(None, None, id="nothing-seen"),
    ],
)
def test_node_at(address: str | None, node: str | None) -> None:
    assert Topology.of(INV).node_at(address) == node


def test_of_an_inventory() -> None:
    topo = Topology.of(INV)
    assert topo.zones == {"node-a": "zone-a", "node-b": "zone-b", "node-c": "zone-a"}
    assert topo.nlb_policies == {"172.31.15.200": "Cluster"}  # "other" does not say
    assert topo.nodes_at(["172.31.0.12", "10.244.0.9", "172.31.0.12"]) == ["node-c", "node-a", "node-c"]
