"""The agent's compact mesh decode: the same value as a plain decode, with equal strings
shared; and as the document arrives, a peer group a line, never holding it whole."""

from __future__ import annotations

import random
import tracemalloc

import msgspec
import pytest

from prober.agent.compact import MeshLines, decode_mesh
from prober.pinglist import Mesh, encode_mesh, split
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
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        fed(body, 7)


def fed(body: bytes, most: int, seed: int = 0) -> Mesh:
    """``body`` through :class:`MeshLines` in pieces of 1 to ``most`` bytes."""
    rng, lines, at = random.Random(seed), MeshLines(), 0
    while at < len(body):
        n = rng.randint(1, most)
        lines.feed(body[at : at + n])
        at += n
    return lines.finish()


@pytest.mark.parametrize("n_nodes", [1, 40])
@pytest.mark.parametrize("most", [1, 13, 4096, 1 << 30])
def test_the_served_mesh_read_as_it_arrives_equals_a_plain_decode(n_nodes: int, most: int) -> None:
    mesh = mesh_of(n_nodes)
    served = encode_mesh(mesh)
    assert served.count(b"\n") == len(mesh.ring) + 1  # one peer group a line
    assert msgspec.json.decode(served, type=Mesh) == mesh  # still one JSON value
    assert fed(served, most) == mesh
    # Another layout (one line, as a plain encoder writes it) is read whole.
    assert fed(msgspec.json.encode(mesh), most) == mesh
    empty = msgspec.structs.replace(mesh, ring=[])
    assert fed(encode_mesh(empty), most) == empty


CHUNK = 16384


def test_reading_as_it_arrives_never_holds_the_document() -> None:
    served = encode_mesh(mesh_of(1000))
    tracemalloc.start()
    try:
        lines = MeshLines()
        for at in range(0, len(served), CHUNK):
            lines.feed(served[at : at + CHUNK])
        mesh = lines.finish()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(mesh.ring) == 999  # the peers of one agent: all but its own node
    # The peak is the mesh and a chunk or so, where a whole decode adds the ~1 MB document.
    assert peak - held < 4 * CHUNK < len(served) // 4


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda b: b[: b.rindex(b"\n")], id="no-end"),
        pytest.param(lambda b: b.replace(b"},\n{", b"},\n{oops", 1), id="a-bad-group"),
        pytest.param(lambda b: b + b'\n{"node":"n","targets":[]}', id="a-group-after-the-end"),
    ],
)
def test_a_broken_served_mesh_fails_as_a_plain_decode_does(cut: object) -> None:
    body = cut(encode_mesh(mesh_of(5)))  # type: ignore[operator]
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        msgspec.json.decode(body, type=Mesh)
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        fed(body, 64)
