"""``prober collector``: serve pinglists, ingest results, serve the matrix, findings and sweeps."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Any

import click

from prober import settings as declared
from prober.collector.settings import CollectorSettings, collector_settings, schedule_policy
from prober.commands.kube_options import KubeOptions, kube_inventory, kube_options
from prober.errors import UsageError
from prober.options import setting_options

if TYPE_CHECKING:
    from prober.inventory import InventorySource

log = logging.getLogger("prober.collector")


async def run_collector(
    settings: CollectorSettings, source: InventorySource | None = None, *, kube: KubeOptions | None = None
) -> None:
    """Serve until SIGINT/SIGTERM. The inventory comes from ``source`` if given, else from
    the Kubernetes API when ``settings.kubernetes`` (tuned by ``kube``), else from the file
    ``settings.inventory``."""
    from prober.collector.auth import Authenticator
    from prober.collector.http import Collector
    from prober.collector.service import CollectorService
    from prober.credentials import TokenFile, TokenReviewer
    from prober.inventory import InventoryError
    from prober.inventory.static import StaticInventory
    from prober.schedule import pinglist_factory

    policy = schedule_policy(settings)
    service = CollectorService(settings, pinglists=pinglist_factory(policy))
    reviewer: TokenReviewer | None = None
    agent_username: str | None = None
    if source is None and settings.kubernetes:
        from prober.inventory.tokenreview import KubeTokenReviewer

        options = kube or KubeOptions(enabled=True)
        # The source reports its health through the collector's own gauge and registry.
        kube_source = kube_inventory(
            options, registry=service.registry, up_gauge=service.metrics.inventory_up
        )
        # Agents prove who they are with a projected token, which the API server reviews.
        reviewer = KubeTokenReviewer(kube_source.configuration)
        agent_username = (
            f"system:serviceaccount:{kube_source.settings.namespace}:{options.agent_service_account}"
        )
        source = kube_source
    auth = Authenticator(
        token_file=TokenFile(settings.token_file) if settings.token_file else None,
        reviewer=reviewer,
        agent_username=agent_username,
    )
    collector = Collector(service, auth=auth)
    if source is None:
        if settings.inventory is None:
            raise UsageError("no inventory: pass --inventory FILE (or set PROBER_INVENTORY)")
        source = StaticInventory(settings.inventory)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with collector.serving(source, host=settings.listen, port=settings.port) as url:
            log.info("collector serving on %s (window %g s, retention %g s)", url, settings.window_s,
                     settings.retention_s)  # fmt: skip
            if auth.open:
                log.warning(
                    "no credential configured (--token-file, --kubernetes): anyone who reaches this "
                    "collector may post results, read raw records and pinglists and start sweeps"
                )
            await stop.wait()
            log.info("stopping")
    except InventoryError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {settings.listen}:{settings.port}: {exc.strerror or exc}"
        ) from None


@click.command()
@setting_options(declared.COLLECTOR)
@kube_options
def collector(*, kube: KubeOptions, **values: Any) -> None:
    """Run the collector: hands every agent its pinglist, ingests their results,
    and serves the matrix, the findings and on-demand sweeps.

    \b
    API (default port 9090):
      GET  /api/v1/pinglist/{agent}   what an agent probes of its own (ETag)
      GET  /api/v1/mesh               the schedule and peer ring every agent shares (ETag; deltas)
      POST /api/v1/results            JSONL probe results from agents
      GET  /api/v1/report?window=S    {"matrix", "findings"}; also /matrix, /findings
      POST /api/v1/sweeps             probe now (see `prober sweep`); agents learn of
                                      it in their pinglist answer and deliver to
      POST /api/v1/sweeps/{id}/results/{agent}
      GET  /api/v1/records?since=TS   recent raw results (JSONL, for `prober diagnose`)
      GET  /metrics, /healthz, /readyz
    \b
    The inventory comes from a file (--inventory) or from the Kubernetes API
    (--kubernetes: in-cluster service account, or --kubeconfig outside).

    \b
    Examples:
      prober collector --inventory examples/loopback-inventory.yaml --listen 127.0.0.1
      prober collector --kubernetes                         # in the cluster (deploy/)
      prober collector --kubernetes --kubeconfig ~/.kube/config --namespace prober
    """
    settings = collector_settings(kubernetes=kube.enabled, **values)
    from prober.collector.service import tune_heap, tune_interpreter

    # This process is the collector's alone: its heap is tuned for its passes.
    if not tune_heap():
        log.info("heap: not glibc's malloc; large columns are mapped one by one")
    tune_interpreter()
    asyncio.run(run_collector(settings, kube=kube))
