"""The collector's Kubernetes flags, as one click decorator and one value.

``@kube_options`` adds ``--kubernetes`` and the flags that tune discovery to a
command and hands the command a single ``kube: KubeOptions`` argument;
:func:`kube_inventory` turns it into the inventory source. Importing this module
does not import ``kubernetes`` (a second or two of start-up): only
:func:`kube_inventory` does, and only when ``--kubernetes`` is given.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click
from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from prober.inventory.cluster import DEFAULT_AGENT_SELECTOR, DEFAULT_DNS_QUERY, DEFAULT_ECHO_SELECTOR

if TYPE_CHECKING:
    from prober.inventory.kube import KubernetesInventory

R = TypeVar("R")


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeOptions:
    """The raw flag values; :func:`kube_inventory` checks them."""

    enabled: bool = False
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    agent_selector: str = DEFAULT_AGENT_SELECTOR
    echo_selector: str = DEFAULT_ECHO_SELECTOR
    warmup_s: float = 30.0
    dns_servers: tuple[str, ...] = ()
    dns_query: str = DEFAULT_DNS_QUERY
    externals: tuple[str, ...] = ()


#: (KubeOptions field, click parameter name, option)
_OPTIONS: list[tuple[str, str, Callable[[Any], Any]]] = [
    (
        "enabled",
        "kubernetes",
        click.option(
            "--kubernetes",
            is_flag=True,
            envvar="PROBER_KUBERNETES",
            help="Discover nodes, agents and echo Services from the Kubernetes API (in-cluster "
            "service account by default).",
        ),
    ),
    (
        "kubeconfig",
        "kubeconfig",
        click.option(
            "--kubeconfig",
            type=click.Path(dir_okay=False),
            envvar="PROBER_KUBECONFIG",
            help="With --kubernetes, outside a cluster: the kubeconfig to use "
            "[default: in-cluster, else $KUBECONFIG or ~/.kube/config].",
        ),
    ),
    (
        "context",
        "kube_context",
        click.option(
            "--kube-context",
            envvar="PROBER_KUBE_CONTEXT",
            metavar="NAME",
            help="The kubeconfig context [default: its current context].",
        ),
    ),
    (
        "namespace",
        "namespace",
        click.option(
            "--namespace",
            envvar="PROBER_NAMESPACE",
            metavar="NS",
            help="Where the agent pods and echo Services live [default: the collector's own "
            "namespace in a cluster, else prober].",
        ),
    ),
    (
        "agent_selector",
        "agent_selector",
        click.option(
            "--agent-selector",
            envvar="PROBER_AGENT_SELECTOR",
            default=DEFAULT_AGENT_SELECTOR,
            show_default=True,
            metavar="SELECTOR",
            help="Label selector of the agent pods (both DaemonSets). Their network kind comes from "
            "hostNetwork (and the prober.dev/network label); their ports from the container ports "
            "named http (TCP) and udp (UDP).",
        ),
    ),
    (
        "echo_selector",
        "echo_selector",
        click.option(
            "--echo-selector",
            envvar="PROBER_ECHO_SELECTOR",
            default=DEFAULT_ECHO_SELECTOR,
            show_default=True,
            metavar="SELECTOR",
            help="Label selector of the echo Services (ClusterIP, internalTrafficPolicy: Local, "
            "NodePort, LoadBalancer).",
        ),
    ),
    (
        "warmup_s",
        "warmup",
        click.option(
            "--warmup",
            type=click.FloatRange(min=0),
            envvar="PROBER_WARMUP",
            default=30.0,
            show_default=True,
            metavar="SECONDS",
            help="Probe a new agent only this long after its pod became Ready.",
        ),
    ),
    (
        "dns_servers",
        "dns_server",
        click.option(
            "--dns-server",
            multiple=True,
            envvar="PROBER_DNS_SERVERS",
            metavar="NAME=ADDR[:PORT]",
            help="A DNS server to probe (repeatable; the env var takes a space-separated list) "
            "[default in a cluster: kube-dns=<the collector's resolv.conf nameserver>].",
        ),
    ),
    (
        "dns_query",
        "dns_query",
        click.option(
            "--dns-query",
            envvar="PROBER_DNS_QUERY",
            default=DEFAULT_DNS_QUERY,
            show_default=True,
            metavar="NAME",
            help="The name DNS probes ask for.",
        ),
    ),
    (
        "externals",
        "external",
        click.option(
            "--external",
            multiple=True,
            envvar="PROBER_EXTERNALS",
            metavar="NAME=HOST:PORT[/tcp|http|udp]",
            help="An endpoint outside the cluster to probe (repeatable; the env var takes a "
            "space-separated list).",
        ),
    ),
]


def kube_options(command: Callable[..., R]) -> Callable[..., R]:
    """Add the Kubernetes flags; the command receives them as ``kube: KubeOptions``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        values = {name: kwargs.pop(param) for name, param, _ in _OPTIONS}
        values["dns_servers"] = tuple(values["dns_servers"])
        values["externals"] = tuple(values["externals"])
        return command(*args, kube=KubeOptions(**values), **kwargs)

    decorated: Callable[..., R] = wrapper
    for _, _, option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated


def kube_inventory(
    options: KubeOptions, *, registry: CollectorRegistry = REGISTRY, up_gauge: Gauge | None = None
) -> KubernetesInventory:
    """The inventory source the flags describe; raises ``UsageError`` on bad values.

    ``up_gauge``: a ``prober_inventory_source_up`` gauge the caller already registered
    in ``registry``; the source then drives it rather than registering its own.
    """
    from prober.inventory.kube import kube_inventory_from

    return kube_inventory_from(
        kubeconfig=options.kubeconfig,
        context=options.context,
        namespace=options.namespace,
        agent_selector=options.agent_selector,
        echo_selector=options.echo_selector,
        warmup_s=options.warmup_s,
        dns_servers=options.dns_servers,
        dns_query=options.dns_query,
        externals=options.externals,
        registry=registry,
        up_gauge=up_gauge,
    )
