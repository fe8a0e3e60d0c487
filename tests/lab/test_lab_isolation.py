"""The lab's traffic never leaves its namespaces: no link, address or route ties it to the machine."""

from __future__ import annotations

import ipaddress
import json

import pytest

from prober_lab import netns
from prober_lab.plan import CLUSTER_CIDR, CTL_NET, EXTERNAL_NET, SERVICE_CIDR, VPC_CIDR, Plan

pytestmark = pytest.mark.lab

LAB_NETS = [ipaddress.ip_network(n) for n in (VPC_CIDR, CLUSTER_CIDR, SERVICE_CIDR, EXTERNAL_NET, CTL_NET)]


def _ip_json(*args: str, ns: str | None = None) -> list[dict[str, object]]:
    argv = ["ip", "-j"] + (["-n", ns] if ns else []) + list(args)
    out = netns.run(argv).stdout
    return json.loads(out) if out.strip() else []


def _in_lab(addr: str) -> bool:
    net = ipaddress.ip_network(addr, strict=False)
    return any(net.overlaps(lab) for lab in LAB_NETS) and net.prefixlen > 0


@pytest.mark.parametrize("which", ["bridge", "vpc"])
def test_no_lab_interface_or_peer_outside_the_lab(which: str, bridge_lab: Plan, vpc_lab: Plan) -> None:
    plan = bridge_lab if which == "bridge" else vpc_lab
    namespaces = set(plan.namespaces)
    assert set(netns.namespaces_with_prefix(plan.prefix)) == namespaces
    for ns in namespaces:
        ids = {}
        for line in netns.run(["ip", "-n", ns, "netns", "list-id"]).stdout.splitlines():
            # "nsid 2 (iproute2 netns name: plabtb-vpc)"
            words = line.replace("(", " ").replace(")", " ").split()
            ids[words[1]] = words[-1] if "name:" in words else None
        for link in _ip_json("link", "show", "type", "veth", ns=ns):
            peer_ns = ids.get(str(link.get("link_netnsid")))
            assert peer_ns in namespaces, f"{ns}/{link['ifname']} has its peer outside the lab: {peer_ns}"


def test_root_namespace_has_no_lab_address_route_or_link(bridge_lab: Plan, vpc_lab: Plan) -> None:
    for entry in _ip_json("addr"):
        for a in entry.get("addr_info", []):  # type: ignore[attr-defined]
            assert not _in_lab(f"{a['local']}/{a['prefixlen']}"), (
                f"lab address {a['local']} in the root namespace"
            )
    for route in _ip_json("route", "show", "table", "all"):
        dst = str(route.get("dst", "default"))
        if dst != "default" and ":" not in dst:
            assert not _in_lab(dst if "/" in dst else f"{dst}/32"), (
                f"root namespace routes lab space: {route}"
            )
    lab_ifnames = {n.router_if for p in (bridge_lab, vpc_lab) for n in p.nodes} | {"cni0", "eth1"}
    root_links = {str(link["ifname"]) for link in _ip_json("link")}
    assert not (root_links & (lab_ifnames - {"eth0"}))
    # No veth in the root namespace has its other end in a lab namespace.
    lab_ns = set(bridge_lab.namespaces) | set(vpc_lab.namespaces)
    ids = netns.run(["ip", "netns", "list-id"]).stdout
    for link in _ip_json("link", "show", "type", "veth"):
        nsid = link.get("link_netnsid")
        assert not any(
            f"nsid {nsid} " in line and any(n in line for n in lab_ns) for line in ids.splitlines()
        )


def test_lab_namespaces_route_only_inside_the_lab(bridge_lab: Plan) -> None:
    """Every route in every lab namespace points at a lab interface (no default to the outside)."""
    for ns in bridge_lab.namespaces:
        links = {str(link["ifname"]) for link in _ip_json("link", ns=ns)}
        for route in _ip_json("route", "show", "table", "all", ns=ns):
            dev = route.get("dev")
            if dev is not None:
                assert dev in links, f"{ns}: {route}"
