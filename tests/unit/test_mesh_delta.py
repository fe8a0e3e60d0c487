"""Mesh deltas: the edits from a mesh an agent holds to the current one (docs/contracts.md
§ Pinglist), applied on the agent to exactly the current mesh, or refused."""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.model import SrcKind
from prober.pinglist import (
    DeltaMismatchError,
    Mesh,
    MeshDelta,
    PlacedGroup,
    apply_delta,
    group_digests,
    mesh_delta,
    mesh_version,
)
from prober.schedule import PinglistBuilder, SchedulePolicy
from tests.inventories import EksCluster

CLUSTER = EksCluster(n_nodes=12, zones=3)
POLICY = SchedulePolicy()


def mesh_of(**inventory: object) -> Mesh:
    return PinglistBuilder(CLUSTER.inventory(**inventory), POLICY).mesh()  # type: ignore[arg-type]


def delta(before: Mesh, after: Mesh) -> MeshDelta:
    d = mesh_delta(before.version, group_digests(before.ring), after, group_digests(after.ring))
    assert d is not None
    return d


def test_the_version_is_the_digest_of_the_mesh_json_without_it() -> None:
    mesh = mesh_of()
    whole = msgspec.json.encode(msgspec.structs.replace(mesh, version=""))
    assert mesh_version(mesh) == hashlib.blake2b(whole, digest_size=8).hexdigest() == mesh.version
    assert mesh_version(msgspec.structs.replace(mesh, ring=mesh.ring[1:])) != mesh.version


@pytest.mark.parametrize(
    ("before", "after", "placed", "removed"),
    [
        pytest.param({"nodes": range(11)}, {}, [11], [], id="a-node-joins"),
        pytest.param({}, {"nodes": [i for i in range(12) if i != 4]}, [], [4], id="a-node-leaves"),
        pytest.param({"nodes": range(1, 11)}, {"nodes": range(2, 12)}, [11], [1], id="one-joins-one-leaves"),
        pytest.param({}, {"generations": {(3, SrcKind.POD): 1}}, [3], [], id="a-pod-restarts-elsewhere"),
        pytest.param({}, {"agents_absent": [(7, SrcKind.HOST)]}, [7], [], id="an-agent-goes"),
        pytest.param({}, {}, [], [], id="nothing"),
    ],
)
def test_a_delta_gives_the_new_mesh_and_carries_only_what_changed(
    before: dict[str, object], after: dict[str, object], placed: list[int], removed: list[int]
) -> None:
    old, new = mesh_of(**before), mesh_of(**after)
    d = delta(old, new)
    assert sorted(p.group.node for p in d.groups) == sorted(CLUSTER.node_name(i) for i in placed)
    assert sorted(d.removed) == sorted(CLUSTER.node_name(i) for i in removed)
    got = apply_delta(old, d)
    assert got == new
    # The groups that did not change are the agent's own objects: no second copy.
    kept = {g.node: g for g in old.ring}
    for g in got.ring:
        if g.node not in {p.group.node for p in d.groups}:
            assert g is kept[g.node]


def test_a_join_costs_its_group_not_the_mesh() -> None:
    cluster = EksCluster(n_nodes=1001, zones=3)
    old = PinglistBuilder(cluster.inventory(nodes=range(1000)), POLICY).mesh()
    new = PinglistBuilder(cluster.inventory(), POLICY).mesh()
    d = delta(old, new)
    assert [p.group.node for p in d.groups] == [cluster.node_name(1000)]
    assert len(msgspec.json.encode(d)) * 200 < len(msgspec.json.encode(new))
    assert apply_delta(old, d) == new


@settings(max_examples=60, deadline=None)
@given(
    st.sets(st.integers(0, 11), max_size=12),
    st.sets(st.integers(0, 11), max_size=12),
)
def test_any_change_of_the_node_set_is_one_delta(before: set[int], after: set[int]) -> None:
    old, new = mesh_of(nodes=before), mesh_of(nodes=after)
    assert apply_delta(old, delta(old, new)) == new


def test_a_delta_for_another_mesh_is_refused() -> None:
    old, new = mesh_of(nodes=range(11)), mesh_of()
    other = mesh_of(nodes=range(10))
    with pytest.raises(DeltaMismatchError, match="the mesh held is"):
        apply_delta(other, delta(old, new))


def test_a_delta_that_does_not_give_its_version_is_refused() -> None:
    old, new = mesh_of(nodes=range(11)), mesh_of()
    d = delta(old, new)
    with pytest.raises(DeltaMismatchError, match="does not give that mesh"):
        apply_delta(
            old, msgspec.structs.replace(d, mesh=msgspec.structs.replace(d.mesh, repeat=d.mesh.repeat + 1))
        )
    with pytest.raises(DeltaMismatchError, match="does not give that mesh"):
        apply_delta(old, msgspec.structs.replace(d, groups=[]))


def test_a_delta_that_places_groups_where_nothing_is_is_refused() -> None:
    old, new = mesh_of(nodes=range(10)), mesh_of()
    d = delta(old, new)
    [a, b] = d.groups
    nowhere = [PlacedGroup(after="node-nowhere", group=a.group)]
    with pytest.raises(DeltaMismatchError, match="not on the ring"):
        apply_delta(old, msgspec.structs.replace(d, groups=nowhere))
    twice = [PlacedGroup(after=a.after, group=a.group), PlacedGroup(after=a.after, group=b.group)]
    with pytest.raises(DeltaMismatchError, match="two groups after"):
        apply_delta(old, msgspec.structs.replace(d, groups=twice))


def test_no_delta_when_the_nodes_that_stay_change_order() -> None:
    old, new = mesh_of(), mesh_of()
    shuffled = msgspec.structs.replace(new, ring=new.ring[::-1])
    assert mesh_delta(old.version, group_digests(old.ring), shuffled, group_digests(shuffled.ring)) is None
