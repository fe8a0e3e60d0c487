"""Fault syntax, checks against a lab, CNI choice, and the kernel state each fault sets."""

from __future__ import annotations

import pytest

from prober.diagnose.mode import Arity
from prober.model import FindingKind
from prober_lab.faults import (
    FAULTS,
    Fault,
    FaultError,
    check_faults,
    choose_cni,
    describe_faults,
    fault_effects,
    parse_fault,
)
from prober_lab.plan import Cni, LabSpec, build_plan

BRIDGE3 = build_plan(LabSpec(nodes=3, cni=Cni.BRIDGE))
VPC3 = build_plan(LabSpec(nodes=3, cni=Cni.VPC))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("bridge-netfilter@node-b", Fault(kind=FindingKind.BRIDGE_NETFILTER, nodes=("node-b",)),
                     id="node-b-brnf-off"),
        pytest.param("nlb-hairpin", Fault(kind=FindingKind.NLB_HAIRPIN), id="hairpin"),
        pytest.param("pair-blocked@a,c", Fault(kind=FindingKind.PAIR_BLOCKED, nodes=("node-a", "node-c")),
                     id="pair-short-names"),
        pytest.param("packet-loss@node-b:10%",
                     Fault(kind=FindingKind.PACKET_LOSS, nodes=("node-b",), rate=0.1), id="loss-percent"),
        pytest.param("packet-loss@node-b:0.25",
                     Fault(kind=FindingKind.PACKET_LOSS, nodes=("node-b",), rate=0.25),
                     id="loss-fraction"),
        pytest.param("nlb-5tuple-collision", Fault(kind=FindingKind.NLB_5TUPLE_COLLISION), id="collision"),
        pytest.param("node-isolated@node-a,node-b",
                     Fault(kind=FindingKind.NODE_ISOLATED, nodes=("node-a", "node-b")), id="two-isolated"),
    ],
)  # fmt: skip
def test_parse(text: str, expected: Fault) -> None:
    assert parse_fault(text) == expected
    assert parse_fault(str(expected)) == expected  # str() round-trips


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("bridge-netfiler@node-b", "unknown fault", id="typo"),
        pytest.param("dns-timeouts", "unknown fault", id="a-finding-the-lab-does-not-make"),
        pytest.param("bridge-netfilter", "name the node", id="missing-node"),
        pytest.param("nlb-hairpin@node-a", "takes no @NODE", id="hairpin-with-node"),
        pytest.param("pair-blocked@node-a", "exactly two", id="pair-of-one"),
        pytest.param("pair-blocked@a,a", "named twice", id="pair-same"),
        pytest.param("packet-loss@node-b", "loss rate", id="loss-without-rate"),
        pytest.param("packet-loss@node-b:1.5", "between 0 and 1", id="loss-too-high"),
        pytest.param("packet-loss@node-b:lots", "not a number", id="loss-not-number"),
        pytest.param("node-isolated@node-b:3", "takes no :ARG", id="arg-where-none"),
        pytest.param("node-isolated@", "empty node name", id="empty-node"),
    ],
)
def test_parse_errors_say_what_to_write(text: str, fragment: str) -> None:
    with pytest.raises(FaultError, match=fragment):
        parse_fault(text)


def test_check_against_the_lab() -> None:
    with pytest.raises(FaultError, match="no node 'node-z'"):
        check_faults([parse_fault("node-isolated@node-z")], BRIDGE3)
    with pytest.raises(FaultError, match="needs a vpc CNI lab"):
        check_faults([parse_fault("snat-asymmetric@node-b")], BRIDGE3)
    with pytest.raises(FaultError, match="needs a bridge CNI lab"):
        check_faults([parse_fault("bridge-netfilter@node-b")], VPC3)
    check_faults([parse_fault("nlb-hairpin"), parse_fault("packet-loss@b:5%")], VPC3)


def test_choose_cni() -> None:
    brnf, snat, hairpin = (parse_fault(t) for t in ("bridge-netfilter@b", "snat-asymmetric@b", "nlb-hairpin"))
    assert choose_cni([brnf], None) is Cni.BRIDGE
    assert choose_cni([snat, hairpin], None) is Cni.VPC
    assert choose_cni([hairpin], None) is Cni.BRIDGE
    assert choose_cni([hairpin], Cni.VPC) is Cni.VPC
    with pytest.raises(FaultError, match="cannot share one lab"):
        choose_cni([brnf, snat], None)
    with pytest.raises(FaultError, match="needs --cni vpc"):
        choose_cni([snat], Cni.BRIDGE)


def test_clean_effects_are_the_clean_lab() -> None:
    clean = fault_effects(BRIDGE3, [])
    assert all(dict(v)["net/bridge/bridge-nf-call-iptables"] == "1" for v in clean.node_sysctls.values())
    assert all(not c.preserve_client_ip for c in clean.nlb.values())
    assert all(c.targets == BRIDGE3.node_names for c in clean.nlb.values())  # cross-zone
    assert not any("DROP" in r for r in clean.router_rules)
    vpc = fault_effects(VPC3, [])
    assert all(dict(v)["net/ipv4/conf/eth0/rp_filter"] == "2" for v in vpc.node_sysctls.values())


def test_each_node_fault_touches_only_its_node() -> None:
    e = fault_effects(BRIDGE3, [parse_fault("bridge-netfilter@node-b")])
    assert {n: dict(v)["net/bridge/bridge-nf-call-iptables"] for n, v in e.node_sysctls.items()} == {
        "node-a": "1",
        "node-b": "0",
        "node-c": "1",
    }
    s = fault_effects(VPC3, [parse_fault("snat-asymmetric@node-c")])
    assert {n: dict(v)["net/ipv4/conf/eth0/rp_filter"] for n, v in s.node_sysctls.items()} == {
        "node-a": "2",
        "node-b": "2",
        "node-c": "1",
    }


def test_router_drops() -> None:
    b = BRIDGE3.node("node-b")
    iso = fault_effects(BRIDGE3, [parse_fault("node-isolated@node-b")]).router_rules
    assert any(r.startswith(f"-i {b.router_if} ") and r.endswith("DROP") for r in iso)
    assert any(r.startswith(f"-o {b.router_if} ") and r.endswith("DROP") for r in iso)
    assert iso[:2] == (f"-i {BRIDGE3.ctl_router_if} -j RETURN", f"-o {BRIDGE3.ctl_router_if} -j RETURN")
    unreach = fault_effects(VPC3, [parse_fault("node-unreachable@node-b")]).router_rules
    drops = [r for r in unreach if r.endswith("DROP")]
    assert len(drops) == 2  # eth0 and the secondary ENI
    assert all("--ctstate NEW" in r and r.startswith("-o ") for r in drops)
    pair = fault_effects(BRIDGE3, [parse_fault("pair-blocked@a,b")]).router_rules
    assert sum(r.endswith("DROP") for r in pair) == 2
    loss = fault_effects(BRIDGE3, [parse_fault("packet-loss@b:10%")]).router_rules
    assert sum("--probability 0.100000" in r for r in loss) == 2


def test_nlb_faults() -> None:
    # The hairpin alone: client IP preserved, each zone's NLB node to its own zone's nodes
    # (cross-zone off), so two zone addresses never reach one target: no collisions.
    hairpin = fault_effects(BRIDGE3, [parse_fault("nlb-hairpin")])
    assert all(c.preserve_client_ip for c in hairpin.nlb.values())
    assert {z: c.targets for z, c in hairpin.nlb.items()} == {
        "zone-a": ("node-a", "node-c"),
        "zone-b": ("node-b",),
    }
    # The collision: cross-zone on, every zone's NLB node to every node.
    collide = fault_effects(BRIDGE3, [parse_fault("nlb-5tuple-collision")])
    assert all(c.preserve_client_ip and c.targets == BRIDGE3.node_names for c in collide.nlb.values())
    both = fault_effects(BRIDGE3, [parse_fault("nlb-hairpin"), parse_fault("nlb-5tuple-collision")])
    assert both.nlb == collide.nlb
    at_a = fault_effects(BRIDGE3, [parse_fault("nlb-5tuple-collision@node-a")])
    assert all(c.targets == ("node-a",) for c in at_a.nlb.values())


def test_every_fault_names_its_production_equivalent() -> None:
    text = describe_faults()
    assert set(FAULTS) >= {
        FindingKind.BRIDGE_NETFILTER,
        FindingKind.NLB_HAIRPIN,
        FindingKind.SNAT_ASYMMETRIC,
        FindingKind.NLB_5TUPLE_COLLISION,
        FindingKind.NODE_UNREACHABLE,
        FindingKind.NODE_ISOLATED,
        FindingKind.PAIR_BLOCKED,
        FindingKind.PACKET_LOSS,
    }
    for kind, info in FAULTS.items():
        assert info.kind is kind
        assert info.lab.production
        assert info.lab.usage.startswith(kind.value)
        assert kind.value in text
    assert "bridge-nf-call-iptables" in text
    assert "preserve_client_ip" in text
    assert "AWS_VPC_K8S_CNI_EXTERNALSNAT" in text


_NODES_FOR = {
    Arity.NONE: (),
    Arity.OPTIONAL_ONE: (),
    Arity.ONE_OR_MORE: ("node-b",),
    Arity.PAIR: ("node-a", "node-c"),
    Arity.ZONE_PAIR: ("zone-a", "zone-b"),
    Arity.ONE_ZONE: ("zone-b",),
}


@pytest.mark.parametrize("kind", list(FAULTS), ids=[k.value for k in FAULTS])
def test_every_fault_turns_a_knob(kind: FindingKind) -> None:
    """A failure mode that declares a lab fault must have it built here, or the lab would
    accept ``--fault`` and change nothing."""
    lab = FAULTS[kind].lab
    f = Fault(kind=kind, nodes=_NODES_FOR[lab.arity], rate=0.1 if lab.takes_rate else None)
    nodes, zones = {Arity.ZONE_PAIR: (6, 3), Arity.ONE_ZONE: (9, 3)}.get(lab.arity, (3, None))
    plan = build_plan(LabSpec(nodes=nodes, cni=choose_cni([f], None), zones=zones))
    assert fault_effects(plan, [f]) != fault_effects(plan, [])


@pytest.mark.parametrize("cni", [Cni.BRIDGE, Cni.VPC], ids=["bridge", "vpc"])
def test_pod_network_isolated_blackholes_exactly_the_nodes_pod_addresses(cni: Cni) -> None:
    plan = build_plan(LabSpec(nodes=3, cni=cni))
    clean = fault_effects(plan, []).router_routes
    assert not any("blackhole" in r for r in clean)
    cut = fault_effects(plan, [parse_fault("pod-network-isolated@b")]).router_routes
    b = plan.node("node-b")
    holes = [r for r in cut if "blackhole" in r]
    want = [b.pod_cidr] if cni is Cni.BRIDGE else [f"{p.ip}/32" for p in b.pods]
    assert holes == [f"replace blackhole {p}" for p in want]
    # Every other route is the clean one; switching off is applying the clean set.
    assert [r for r in cut if "blackhole" not in r] == [r for r in clean if not any(p in r for p in want)]
    assert all(b.ip not in r.split()[1] for r in holes)  # the node's own address stays routed


def test_zone_partition_parses_zones_and_drops_between_the_two_sides_only() -> None:
    assert parse_fault("zone-partition@a,c") == Fault(
        kind=FindingKind.ZONE_PARTITION, nodes=("zone-a", "zone-c")
    )
    with pytest.raises(FaultError, match="exactly two zones"):
        parse_fault("zone-partition@zone-a")
    plan = build_plan(LabSpec(nodes=6, cni=Cni.BRIDGE, zones=3))
    rules = fault_effects(plan, [parse_fault("zone-partition@zone-a,zone-b")]).router_rules
    drops = [r for r in rules if "DROP" in r]
    side = {
        z: {n.router_if for n in plan.zone_nodes(z)} | {x.router_if for x in plan.nlbs if x.zone == z}
        for z in plan.zones
    }
    pairs = {(r.split()[1], r.split()[3]) for r in drops}
    assert pairs == {(x, y) for x in side["zone-a"] for y in side["zone-b"]} | {
        (y, x) for x in side["zone-a"] for y in side["zone-b"]
    }
    assert not any(i in r for r in drops for i in side["zone-c"])


@pytest.mark.parametrize(
    ("nodes", "zones", "fault", "message"),
    [
        pytest.param(3, None, "zone-partition@a,b", "needs two nodes in each zone", id="zone-of-one-node"),
        pytest.param(6, 3, "zone-partition@a,d", "no zone 'zone-d'", id="unknown-zone"),
    ],
)
def test_zone_partition_is_refused_where_it_cannot_mean_a_zone(
    nodes: int, zones: int | None, fault: str, message: str
) -> None:
    plan = build_plan(LabSpec(nodes=nodes, cni=Cni.BRIDGE, zones=zones))
    with pytest.raises(FaultError, match=message):
        fault_effects(plan, [parse_fault(fault)])


def test_zones_spread_nodes_in_turn_and_are_checked() -> None:
    plan = build_plan(LabSpec(nodes=6, zones=3))
    assert plan.zones == ("zone-a", "zone-b", "zone-c")
    assert [len(plan.zone_nodes(z)) for z in plan.zones] == [2, 2, 2]
    assert len(plan.nlbs) == 3
    assert build_plan(LabSpec(nodes=4)).zones == ("zone-a", "zone-b", "zone-c")
    with pytest.raises(ValueError, match="--zones must be between 2 and 3"):
        LabSpec(nodes=3, zones=4)
