"""The lab's address plan and kernel instructions: unique, isolated, and what docs/incidents.md describes."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prober.inventory import check_inventory
from prober_lab.inventory import lab_inventory
from prober_lab.iptables import NlbConfig, chain_suffix, nlb_rules, node_rules, router_rules
from prober_lab.plan import (
    CLUSTER_CIDR,
    DNS_SERVER_IP,
    EXTERNAL_NET,
    MAX_NODES,
    MIN_NODES,
    NODEPORT,
    TRAFFIC_POLICIES,
    VPC_CIDR,
    Cni,
    LabSpec,
    build_plan,
)
from prober_lab.topology import create_batch, namespace_setups

specs = st.builds(
    LabSpec,
    nodes=st.integers(MIN_NODES, MAX_NODES),
    cni=st.sampled_from(list(Cni)),
    external_traffic_policy=st.sampled_from(TRAFFIC_POLICIES),
)


def _addresses(plan_spec: LabSpec) -> list[str]:
    plan = build_plan(plan_spec)
    out = []
    for n in plan.nodes:
        out.append(n.ip)
        if n.eni_ip:
            out.append(n.eni_ip)
        out += [p.ip for p in n.pods]
    out += [nlb.vip for nlb in plan.nlbs]
    return out


@given(specs)
def test_every_address_and_mac_is_unique(spec: LabSpec) -> None:
    addrs = _addresses(spec)
    assert len(addrs) == len(set(addrs))
    plan = build_plan(spec)
    macs = [n.mac for n in plan.nodes] + [p.mac for n in plan.nodes for p in n.pods]
    macs += [p.host_mac for n in plan.nodes for p in n.pods] + [n.router_mac for n in plan.nodes]
    assert len(macs) == len(set(macs))
    assert all(int(m.split(":")[0], 16) & 0b11 == 0b10 for m in macs)  # locally administered unicast


@given(specs)
def test_addresses_live_in_the_lab_ranges_and_zone_subnets(spec: LabSpec) -> None:
    plan = build_plan(spec)
    vpc, cluster = ipaddress.ip_network(VPC_CIDR), ipaddress.ip_network(CLUSTER_CIDR)
    for n in plan.nodes:
        subnet = ipaddress.ip_network(n.subnet)
        assert ipaddress.ip_address(n.ip) in subnet
        assert ipaddress.ip_address(n.gateway) in subnet
        for pod in n.pods:
            home = vpc if spec.cni is Cni.VPC else cluster
            assert ipaddress.ip_address(pod.ip) in home
    for nlb in plan.nlbs:
        assert ipaddress.ip_address(nlb.vip) in ipaddress.ip_network(plan.zone_nodes(nlb.zone)[0].subnet)
    assert not ipaddress.ip_network(EXTERNAL_NET).overlaps(vpc)


@given(specs)
def test_names_fit_the_kernel_and_carry_the_prefix(spec: LabSpec) -> None:
    plan = build_plan(spec)
    assert all(ns.startswith(f"{spec.prefix}-") for ns in plan.namespaces)
    assert len(plan.namespaces) == len(set(plan.namespaces))
    ifnames = [n.router_if for n in plan.nodes] + [n.router_eni_if for n in plan.nodes if n.router_eni_if]
    ifnames += [p.host_if for n in plan.nodes for p in n.pods] + [nlb.router_if for nlb in plan.nlbs]
    assert all(0 < len(i) <= 15 for i in ifnames)


@pytest.mark.parametrize("nodes", [2, 3, 4, 8])
def test_nodes_are_named_in_order_and_zones_are_at_least_two(nodes: int) -> None:
    plan = build_plan(LabSpec(nodes=nodes))
    assert plan.node_names == tuple(f"node-{c}" for c in "abcdefgh"[:nodes])
    assert len({n.zone for n in plan.nodes}) >= 2
    assert len(plan.nlbs) == len(plan.zones)


@pytest.mark.parametrize(
    ("nodes", "prefix"),
    [pytest.param(1, "plab", id="one-node"), pytest.param(17, "plab", id="too-many"),
     pytest.param(3, "p-lab", id="dash-in-prefix"), pytest.param(3, "", id="empty-prefix")],
)  # fmt: skip
def test_bad_specs_are_refused(nodes: int, prefix: str) -> None:
    with pytest.raises(ValueError, match=r"nodes|prefix"):
        LabSpec(nodes=nodes, prefix=prefix)


def test_no_interface_is_ever_created_in_the_root_namespace() -> None:
    plan = build_plan(LabSpec(nodes=3, cni=Cni.VPC))
    links = [line for line in create_batch(plan) if line.startswith("link add")]
    assert links
    for line in links:
        words = line.split()
        # both ends name their namespace: `link add X ... netns A type veth peer name Y ... netns B`
        assert words.count("netns") == 2, line
        assert all(words[i + 1].startswith("plab-") for i, w in enumerate(words) if w == "netns")


def test_sysctls_are_explicit_in_every_namespace() -> None:
    plan = build_plan(LabSpec(nodes=3, cni=Cni.BRIDGE))
    setups = {s.ns: dict(s.sysctls) for s in namespace_setups(plan)}
    assert set(setups) == set(plan.namespaces)
    for ns, sysctls in setups.items():
        assert "net/ipv4/ip_forward" in sysctls, ns
        assert "net/ipv4/conf/all/rp_filter" in sysctls, ns
    router = setups[plan.router_ns]
    assert router["net/ipv4/ip_forward"] == "1"
    for n in plan.nodes:
        assert router[f"net/ipv4/conf/{n.router_if}/proxy_arp"] == "1"
        assert router[f"net/ipv4/neigh/{n.router_if}/proxy_delay"] == "0"
        assert setups[n.ns]["net/bridge/bridge-nf-call-iptables"] == "1"


def test_vpc_nodes_have_the_secondary_eni_policy_routing() -> None:
    """The VPC CNI's rules and tables of docs/incidents.md#vpc-cni-externalsnat-rp-filter."""
    plan = build_plan(LabSpec(nodes=2, cni=Cni.VPC))
    setup = next(s for s in namespace_setups(plan) if s.ns == plan.nodes[0].ns)
    n = plan.nodes[0]
    batch = "\n".join(setup.ip_batch)
    assert f"rule add from {n.agent.ip} lookup 2 priority 1536" in batch
    assert f"rule add to {n.agent.ip} lookup main priority 512" in batch
    assert f"route add default via {n.gateway} dev eth1 table 2" in batch
    assert f"addr add {n.eni_ip}/20 dev eth1 noprefixroute" in batch
    assert f"from {n.echo.ip} lookup" not in batch  # the primary-ENI pod has no policy route
    assert dict(setup.sysctls)["net/ipv4/conf/eth0/rp_filter"] == "2"  # what the VPC CNI sets


def test_kube_proxy_rules_balance_evenly_and_dnat_with_a_protocol() -> None:
    plan = build_plan(LabSpec(nodes=4))
    rules = node_rules(plan, plan.nodes[1])
    svc = f"KUBE-SVC-{chain_suffix('default/prober-echo', 'tcp')}"
    probs = [
        float(line.split("--probability ")[1].split()[0])
        for line in rules.splitlines()
        if line.startswith(f"-A {svc}") and "--probability" in line
    ]
    assert probs == pytest.approx([1 / 4, 1 / 3, 1 / 2])
    for line in rules.splitlines():
        if "DNAT" in line:
            assert " -p tcp " in line or " -p udp " in line, line
    # the Local chains (the Local Service, the NodePort's externalTrafficPolicy: Local)
    # jump only to this node's endpoint
    own = f"KUBE-SEP-{chain_suffix('default/prober-echo', 'tcp', plan.nodes[1].echo.ip)}"
    svl = [line for line in rules.splitlines() if line.startswith("-A KUBE-SVL-")]
    assert len(svl) == 2
    assert all(line.endswith(f"-j {own}") for line in svl)
    assert "KUBE-MARK-MASQ" in rules
    assert "--mode random" in rules


def test_the_nodeport_is_external_traffic_policy_local_as_deployed() -> None:
    """Node X's NodePort is answered by X's own echo (deploy/: externalTrafficPolicy: Local);
    pod and node-local callers go to any endpoint, as kube-proxy sends them."""
    plan = build_plan(LabSpec(nodes=3))
    rules = node_rules(plan, plan.nodes[0]).splitlines()
    ext = f"KUBE-EXT-{chain_suffix('default/prober-echo', 'tcp')}"
    svc = f"KUBE-SVC-{chain_suffix('default/prober-echo', 'tcp')}"
    svl = f"KUBE-SVL-{chain_suffix('default/prober-echo', 'tcp')}"
    want = f'-A KUBE-NODEPORTS -p tcp -m comment --comment "default/prober-echo" -m tcp --dport {NODEPORT}'
    assert [line for line in rules if line.startswith("-A KUBE-NODEPORTS")] == [f"{want} -j {ext}"]
    chain = [line for line in rules if line.startswith(f"-A {ext} ")]
    assert chain[-1] == f"-A {ext} -j {svl}"  # traffic from elsewhere: this node's echo only
    assert all(line.endswith(f"-j {svc}") or "KUBE-MARK-MASQ" in line for line in chain[:-1])
    assert "MASQUERADE" not in "".join(chain)  # the client address is kept


@pytest.mark.parametrize("cni", list(Cni))
def test_the_nodeport_under_cluster_forwards_to_any_echo_masqueraded(cni: Cni) -> None:
    """externalTrafficPolicy: Cluster as kube-proxy writes it: every connection from outside is
    marked for masquerade (KUBE-POSTROUTING then SNATs it to the address it leaves by) and goes
    to any node's endpoint; no chain keeps it on the node."""
    plan = build_plan(LabSpec(nodes=3, cni=cni, external_traffic_policy="Cluster"))
    rules = node_rules(plan, plan.nodes[0]).splitlines()
    ext = f"KUBE-EXT-{chain_suffix('default/prober-echo', 'tcp')}"
    svc = f"KUBE-SVC-{chain_suffix('default/prober-echo', 'tcp')}"
    chain = [line for line in rules if line.startswith(f"-A {ext} ")]
    assert len(chain) == 2
    assert chain[0].endswith("-j KUBE-MARK-MASQ")
    assert " -s " not in chain[0]
    assert "addrtype" not in chain[0]
    assert chain[1] == f"-A {ext} -j {svc}"
    assert any("KUBE-POSTROUTING" in line and "MASQUERADE" in line for line in rules)
    # The Service chain picks among every node's echo.
    seps = [line for line in rules if line.startswith(f"-A {svc} ")]
    assert len(seps) == 3


@pytest.mark.parametrize("policy", TRAFFIC_POLICIES)
def test_the_lab_inventory_carries_the_traffic_policy(policy: str) -> None:
    plan = build_plan(LabSpec(nodes=2, external_traffic_policy=policy))  # type: ignore[arg-type]
    inv = lab_inventory(plan)
    assert [p.external_traffic_policy for p in inv.nodeports] == [policy]
    assert [n.external_traffic_policy for n in inv.nlbs] == [policy]


def test_an_unknown_traffic_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="--external-traffic-policy must be one of Cluster, Local"):
        LabSpec(external_traffic_policy="Sideways")  # type: ignore[arg-type]


def test_kube_dns_is_one_endpoint_off_the_probed_nodes() -> None:
    plan = build_plan(LabSpec(nodes=3, cni=Cni.VPC))
    assert plan.dns_ns in plan.namespaces
    assert ipaddress.ip_address(DNS_SERVER_IP) in ipaddress.ip_network(plan.nodes[0].subnet)
    for n in plan.nodes:
        dnat = [line for line in node_rules(plan, n).splitlines() if "DNAT" in line and "-p udp" in line]
        assert len(dnat) == 1
        assert dnat[0].endswith(f"--to-destination {DNS_SERVER_IP}:53")
    router = next(s for s in namespace_setups(plan) if s.ns == plan.router_ns)
    assert f"route add {DNS_SERVER_IP}/32 dev {plan.dns_router_if} scope link" in router.ip_batch


def test_vpc_node_snat_and_external_snat() -> None:
    plan = build_plan(LabSpec(nodes=2, cni=Cni.VPC))
    n = plan.nodes[0]
    assert f"SNAT --to-source {n.ip}" in node_rules(plan, n)
    assert "SNAT --to-source" not in node_rules(plan, n, external_snat=True)
    assert "flanneld" not in node_rules(plan, n)


def test_nlb_snats_unless_client_ip_is_preserved() -> None:
    plan = build_plan(LabSpec(nodes=3))
    nlb = plan.nlbs[0]
    off = nlb_rules(plan, nlb, NlbConfig(preserve_client_ip=False, targets=plan.node_names))
    on = nlb_rules(plan, nlb, NlbConfig(preserve_client_ip=True, targets=plan.node_names))
    assert f"SNAT --to-source {nlb.vip}" in off
    assert "SNAT" not in on
    assert on.count("DNAT --to-destination") == 3
    single = nlb_rules(plan, nlb, NlbConfig(preserve_client_ip=True, targets=("node-c",)))
    assert "--probability" not in single
    assert f"DNAT --to-destination {plan.node('node-c').ip}:{NODEPORT}" in single


def test_router_sends_nlb_replies_back_to_their_nlb_node() -> None:
    plan = build_plan(LabSpec(nodes=3))
    rules = router_rules(plan)
    for nlb in plan.nlbs:
        assert f"-i {nlb.router_if} -m conntrack --ctstate NEW" in rules
    assert "--restore-mark" in rules
    assert "NAT gateway" in rules


@given(specs)
def test_the_lab_inventory_is_valid_and_complete(spec: LabSpec) -> None:
    plan = build_plan(spec)
    inv = check_inventory(lab_inventory(plan))
    assert [n.name for n in inv.nodes] == list(plan.node_names)
    assert len(inv.agents) == 2 * spec.nodes
    assert [s.local for s in inv.services] == [False, True]
    assert len(inv.nlbs[0].addresses) == len(plan.zones)
