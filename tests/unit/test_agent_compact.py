"""The agent's compact mesh decode: the same value as a plain decode, with equal strings shared."""

from __future__ import annotations

import msgspec
import pytest

from prober.agent.compact import decode_mesh
from prober.pinglist import Mesh, split
from prober.schedule import PinglistBuilder, SchedulePolicy
from tests.inventories import EksCluster


def mesh_of(n_nodes: int) -> Mesh:
    cluster = EksCluster(n_nodes=n_nodes, zones=3)
    inv = cluster.inventory()
    pl = PinglistBuilder(inv, SchedulePolicy()).for_agent(inv.agents[0].name)
    assert pl is not None
    return split(pl)[1]


@pytest.mark.parametrize("n_nodes", [pytest.param(1, id="one-node"), pytest.param(40, id="40-nodes")])
def test_decode_mesh_equals_a_plain_decode(n_nodes: int) -> None:
    mesh = mesh_of(n_nodes)
    body = msgspec.json.encode(mesh)
    assert decode_mesh(body) == msgspec.json.decode(body, type=Mesh) == mesh


def test_equal_strings_and_ports_are_one_object() -> None:
    mesh = decode_mesh(msgspec.json.encode(mesh_of(40)))
    targets = [t for g in mesh.ring for t in g.targets]
    assert len(targets) > 100
    # A peer's node name: once for the group and all its targets.
    for g in mesh.ring:
        assert all(t.dst_node is g.node for t in g.targets if t.dst_node == g.node)
    by_value: dict[object, object] = {}
    for t in targets:
        for value in (t.target, t.ip, t.port):
            assert by_value.setdefault((type(value), value), value) is value
    # Enum members stay members (a StrEnum equals its value; sharing must not swap them).
    assert all(type(t.kind).__name__ == "TargetKind" and type(t.proto).__name__ == "Proto" for t in targets)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{", id="not-json"),
        pytest.param(b'{"version": "v"}', id="missing-fields"),
        pytest.param(
            msgspec.json.encode(
                {**msgspec.to_builtins(mesh_of(3)), "ring": [{"node": "n", "targets": [{}]}]}
            ),
            id="bad-target",
        ),
    ],
)
def test_a_bad_mesh_fails_as_a_plain_decode_does(body: bytes) -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        msgspec.json.decode(body, type=Mesh)
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        decode_mesh(body)
