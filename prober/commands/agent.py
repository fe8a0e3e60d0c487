"""``prober agent``: run one probe agent (one per node per network)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import Iterator
from typing import Any

import click

from prober.agent.settings import (
    AgentSettings,
    OneLineErrors,
    agent_options,
    settings_from_params,
    standalone_policy,
)
from prober.errors import UsageError

HELP = """Run a probe agent: echo servers, probes on schedule, metrics, reporting.

One agent runs per node per network: --network pod (a DaemonSet on the pod
network) and --network host (a DaemonSet with hostNetwork). Each serves an HTTP
echo and a UDP echo that say which node answered and which client address they
saw, probes the targets of its pinglist within a probe budget (a new connection
and source port per probe), exports Prometheus metrics on /metrics and sends its
results to the collector.

\b
With a collector (the pinglist and schedule come from it):
  prober agent --network pod --node "$NODE_NAME" --name "$POD_NAME" \\
      --collector http://prober-collector:9090

\b
Standalone, from an inventory file, results to a JSONL file:
  prober agent --network host --node node-a --name agent-host-a \\
      --inventory examples/loopback-inventory.yaml \\
      --listen 127.0.10.1 --http-port 18080 --udp-port 18081 \\
      --source-ip 127.0.10.1 --results-file results.jsonl
  prober diagnose results.jsonl

\b
Endpoints (--http-port), GET only: / (echo), /metrics, /healthz, /readyz.
UDP echo on --udp-port. Sweeps come from the collector, in the pinglist answer.
SIGTERM: /readyz turns 503, a sweep stops, probes in flight finish, results are flushed.
"""


#: While the agent's libraries load (bench/agent_throughput.py --mesh-nodes 1000: peak
#: RSS 42.2 -> 39 MB; the goal is 40):
#: - aiohttp makes two TLS client contexts at import, and each reads the system's CA
#:   bundle (~1 MB apiece). The agent talks TLS only to an https:// collector and makes
#:   its own context for it (:func:`prober.agent.runner.collector_tls`), so these two
#:   load an empty file instead.
#: - frozenlist's compiled extension pulls in the C++ runtime (~1 MB); aiohttp keeps its
#:   signals in frozen lists and, per request, only asks whether one is empty, so the
#:   pure-Python one is enough.
_IMPORT_ENVIRON: dict[str, str] = {"SSL_CERT_FILE": os.devnull, "FROZENLIST_NO_EXTENSIONS": "1"}


@contextlib.contextmanager
def _lean_imports() -> Iterator[None]:
    """Import under :data:`_IMPORT_ENVIRON`, then put the environment back as it was."""
    saved = {name: os.environ.get(name) for name in _IMPORT_ENVIRON}
    os.environ.update(_IMPORT_ENVIRON)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


@click.command("agent", cls=OneLineErrors, help=HELP, context_settings={"max_content_width": 100})
@agent_options
def agent(**params: Any) -> None:
    import logging
    import random

    with _lean_imports():
        from prometheus_client import CollectorRegistry

        from prober.agent.runner import AgentRuntime, follow_inventory, pinglist_from_inventory
        from prober.inventory import InventoryError

    settings: AgentSettings = settings_from_params(params)
    feed = None
    if settings.inventory is not None:
        from prober.inventory.static import load_inventory

        policy = standalone_policy(settings)
        try:
            inv = load_inventory(settings.inventory)
            pinglist_from_inventory(inv, policy, settings.name)
        except InventoryError as exc:
            raise UsageError(str(exc)) from None
        inventory_path = settings.inventory

        async def feed(holder: Any) -> None:
            await follow_inventory(holder, inventory_path, policy, settings.name, first=inv)

    if settings.results_file is not None:
        try:
            with settings.results_file.open("ab"):
                pass
        except OSError as exc:
            raise UsageError(f"--results-file {settings.results_file}: {exc.strerror or exc}") from None

    async def main() -> None:
        # Everything loaded so far lives as long as the process: out of the cyclic
        # collector's sight, so its full passes walk only what probing creates.
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runtime = AgentRuntime(settings, registry=CollectorRegistry(), rng=random.Random())
        try:
            await runtime.run(stop, feed=feed)
        except OSError as exc:  # the echo ports could not be bound
            raise UsageError(f"cannot serve on {settings.listen}: {exc.strerror or exc}") from None

    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(main())
