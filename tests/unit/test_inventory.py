"""The static inventory: the documented format parses; every mistake is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from prober.inventory import InventoryError
from prober.inventory.static import load_inventory, parse_inventory
from prober.model import Proto, SrcKind

FULL = """
nodes:
  - {name: node-a, zone: us-east-1a, address: 10.0.1.10}
  - {name: node-b, zone: us-east-1b, address: 10.0.2.10}
agents:
  - {name: pa, node: node-a, kind: pod, address: 10.244.0.5}
  - {name: ha, node: node-a, kind: host, address: 10.0.1.10, http_port: 9080, udp_port: 9081}
services:
  - {name: prober-echo, address: 10.96.0.20}
  - {name: prober-echo-local, address: 10.96.0.21, local: true}
nodeports:
  - {name: prober-echo, port: 30080, external_traffic_policy: Cluster}
nlbs:
  - name: prober-echo
    port: 80
    external_traffic_policy: Cluster
    addresses:
      - {zone: us-east-1a, address: 10.0.1.200}
      - {zone: us-east-1b, address: 10.0.2.200}
externals:
  - {name: example, address: 192.0.2.10, port: 443}
  - {name: api, address: api.example.com, port: 80, proto: http}
dns:
  - {name: kube-dns, address: 10.96.0.10, query: kubernetes.default.svc.cluster.local}
"""


def test_full_format_parses() -> None:
    inv = parse_inventory(FULL)
    assert [n.name for n in inv.nodes] == ["node-a", "node-b"]
    pa = inv.agent("pa")
    assert pa is not None
    assert pa.kind is SrcKind.POD
    assert (pa.http_port, pa.udp_port) == (8080, 8081)
    assert inv.services[1].local
    assert inv.nlbs[0].addresses[1].zone == "us-east-1b"
    assert inv.externals[0].proto is Proto.TCP
    assert inv.externals[1].proto is Proto.HTTP
    assert inv.dns[0].port == 53
    assert (inv.nodeports[0].external_traffic_policy, inv.nlbs[0].external_traffic_policy) == (
        "Cluster",
        "Cluster",
    )


def test_json_is_accepted_too() -> None:
    inv = parse_inventory('{"nodes": [{"name": "n", "address": "10.0.0.1"}]}')
    assert inv.nodes[0].zone == ""


def test_version_is_a_content_hash() -> None:
    assert parse_inventory(FULL).version() == parse_inventory(FULL).version()
    assert parse_inventory(FULL).version() != parse_inventory(FULL.replace("30080", "30081")).version()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("nodes: [", "not valid YAML", id="broken-yaml"),
        pytest.param("- a\n- b\n", "expected a mapping", id="top-level-list"),
        pytest.param("agents: []\n", "missing required field `nodes`", id="no-nodes"),
        pytest.param("nodes: [{name: a}]\n", "missing required field `address`", id="node-without-address"),
        pytest.param(
            "nodes: [{name: a, address: x, colour: red}]\n", "unknown field `colour`", id="typo-field"
        ),
        pytest.param(
            "nodes: [{name: a, address: x}]\nagents: [{name: p, node: a, kind: vm, address: y}]\n",
            "Invalid enum value 'vm'",
            id="bad-agent-kind",
        ),
        pytest.param(
            "nodes: [{name: a, address: x}, {name: a, address: y}]\n",
            "duplicate node names: a",
            id="dup-node",
        ),
        pytest.param(
            "nodes: [{name: a, address: x}]\nagents: [{name: p, node: zz, kind: pod, address: y}]\n",
            "which is not in nodes",
            id="agent-on-unknown-node",
        ),
        pytest.param(
            "nodes: [{name: a, address: x}]\nnlbs: [{name: n, addresses: []}]\n",
            "has no addresses",
            id="empty-nlb",
        ),
        pytest.param(
            "nodes: [{name: a, address: x}]\n"
            "nodeports: [{name: e, port: 1, external_traffic_policy: local}]\n",
            "Invalid enum value 'local'",
            id="bad-traffic-policy",
        ),
        pytest.param(
            "nodes: [{name: a, address: x, pod_cidr: 10.244.0.0/33}]\n",
            "pod_cidr '10.244.0.0/33' is not a CIDR",
            id="bad-pod-cidr",
        ),
    ],
)
def test_mistakes_are_named(text: str, fragment: str) -> None:
    with pytest.raises(InventoryError, match=None) as info:
        parse_inventory(text, source="inv.yaml")
    assert str(info.value).startswith("inv.yaml: ")
    assert fragment in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read inventory"):
        load_inventory(tmp_path / "nope.yaml")


def test_example_inventory_loads() -> None:
    inv = load_inventory(Path(__file__).parents[2] / "examples" / "loopback-inventory.yaml")
    assert len(inv.agents) == 6
