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

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from prober import settings as declared
from prober.options import setting_options

if TYPE_CHECKING:
    from prober.inventory.kube import KubernetesInventory

R = TypeVar("R")


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeOptions:
    """The raw flag values (defaults: :data:`prober.settings.KUBE`); :func:`kube_inventory` checks them."""

    enabled: bool = declared.KUBERNETES.default
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    agent_selector: str = declared.AGENT_SELECTOR.default
    echo_selector: str = declared.ECHO_SELECTOR.default
    warmup_s: float = declared.WARMUP.default
    dns_servers: tuple[str, ...] = ()
    dns_query: str = declared.DNS_QUERY.default
    externals: tuple[str, ...] = ()
    agent_service_account: str = declared.AGENT_SERVICE_ACCOUNT.default


def kube_options(command: Callable[..., R]) -> Callable[..., R]:
    """Add the Kubernetes flags; the command receives them as ``kube: KubeOptions``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        values = {s.field: kwargs.pop(s.field) for s in declared.KUBE}
        values["enabled"] = values.pop(declared.KUBERNETES.field)
        for repeated in (declared.DNS_SERVERS, declared.EXTERNALS):
            values[repeated.field] = tuple(values[repeated.field])
        return command(*args, kube=KubeOptions(**values), **kwargs)

    decorated: Callable[..., R] = setting_options(declared.KUBE)(wrapper)
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
