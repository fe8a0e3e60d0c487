"""``prober collector``: serve pinglists, ingest results, serve the matrix, findings and sweeps."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

import click

from prober.collector.settings import CollectorSettings, collector_settings
from prober.commands.kube_options import KubeOptions, kube_inventory, kube_options
from prober.errors import UsageError

if TYPE_CHECKING:
    from prober.inventory import InventorySource

log = logging.getLogger("prober.collector")


async def run_collector(
    settings: CollectorSettings, source: InventorySource | None = None, *, kube: KubeOptions | None = None
) -> None:
    """Serve until SIGINT/SIGTERM. The inventory comes from ``source`` if given, else from
    the Kubernetes API when ``settings.kubernetes`` (tuned by ``kube``), else from the file
    ``settings.inventory``."""
    from prober.collector.http import Collector
    from prober.collector.service import CollectorService
    from prober.inventory import InventoryError
    from prober.inventory.static import StaticInventory
    from prober.schedule import PinglistBuilder, SchedulePolicy

    policy = SchedulePolicy(
        interval_s=settings.interval_s,
        timeout_s=settings.timeout_s,
        budget_per_s=settings.budget_per_s,
        shared_budget_per_s=settings.shared_budget_per_s,
        cluster_budget_per_s=settings.cluster_budget_per_s or None,
    )
    collector = Collector(CollectorService(settings, pinglists=lambda inv: PinglistBuilder(inv, policy)))
    if source is None and settings.kubernetes:
        # The source reports its health through the collector's own gauge and registry.
        source = kube_inventory(
            kube or KubeOptions(enabled=True),
            registry=collector.registry,
            up_gauge=collector.metrics.inventory_up,
        )
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
            await stop.wait()
            log.info("stopping")
    except InventoryError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {settings.listen}:{settings.port}: {exc.strerror or exc}"
        ) from None


@click.command()
@click.option(
    "--inventory",
    envvar="PROBER_INVENTORY",
    metavar="FILE",
    help="Inventory file (YAML or JSON): nodes, agents, Services, NLBs, externals. "
    "Re-read when it changes. Env PROBER_INVENTORY.",
)
@click.option(
    "--listen",
    envvar="PROBER_LISTEN",
    default="0.0.0.0",
    show_default=True,
    metavar="ADDR",
    help="Address to serve the API on (env PROBER_LISTEN).",
)
@click.option(
    "--port",
    envvar="PROBER_PORT",
    type=int,
    default=9090,
    show_default=True,
    help="API port (env PROBER_PORT).",
)
@click.option(
    "--interval",
    type=float,
    default=10.0,
    show_default=True,
    metavar="S",
    help="Probe round length every agent follows.",
)
@click.option(
    "--budget",
    type=float,
    default=20.0,
    show_default=True,
    metavar="N",
    help="Most probes per second one agent sends.",
)
@click.option(
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    metavar="S",
    help="Probe timeout (shorter than --interval).",
)
@click.option(
    "--shared-budget",
    type=float,
    default=20.0,
    show_default=True,
    metavar="N",
    help="Probes per second one shared target (Service, NLB, DNS, external) receives from all agents.",
)
@click.option(
    "--cluster-budget",
    type=float,
    default=25_000.0,
    show_default=True,
    metavar="N",
    help="Probes per second of the whole mesh together (every result comes here; one collector "
    "core ingests ~200,000/s). In large clusters each agent gets its share, min(--budget, N / agents). "
    "0: no limit.",
)
@click.option(
    "--window",
    type=float,
    default=60.0,
    show_default=True,
    metavar="S",
    help="Window of the matrix, findings and metrics (requests may ask for another with ?window=).",
)
@click.option(
    "--retention",
    type=float,
    default=900.0,
    show_default=True,
    metavar="S",
    help="How long results are kept: the longest window. Memory grows with it.",
)
@kube_options
def collector(
    *,
    kube: KubeOptions,
    inventory: str | None,
    listen: str,
    port: int,
    interval: float,
    budget: float,
    timeout: float,
    shared_budget: float,
    cluster_budget: float,
    window: float,
    retention: float,
) -> None:
    """Run the collector: hands every agent its pinglist, ingests their results,
    and serves the matrix, the findings and on-demand sweeps.

    \b
    API (default port 9090):
      GET  /api/v1/pinglist/{agent}   what an agent probes (ETag)
      POST /api/v1/results            JSONL probe results from agents
      GET  /api/v1/report?window=S    {"matrix", "findings"}; also /matrix, /findings
      POST /api/v1/sweeps             probe everything now (see `prober sweep`)
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
    settings = collector_settings(
        inventory=inventory,
        kubernetes=kube.enabled,
        listen=listen,
        port=port,
        interval_s=interval,
        timeout_s=timeout,
        budget_per_s=budget,
        shared_budget_per_s=shared_budget,
        cluster_budget_per_s=cluster_budget,
        window_s=window,
        retention_s=retention,
    )
    asyncio.run(run_collector(settings, kube=kube))
