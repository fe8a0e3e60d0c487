"""``prober echo``: the echo servers alone, as the backend of the echo Services, NodePort and NLB."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import click

from prober.agent.settings import OneLineErrors, echo_options, echo_settings_from_params
from prober.errors import UsageError

HELP = """Serve the HTTP and UDP echo of an agent, without probing anything.

The backend of prober's echo Services (ClusterIP, internalTrafficPolicy: Local),
of their NodePort and of the NLB in front of it: a probe through any of them learns
which node answered and which client address that node saw, exactly as from an
agent's echo (same answers: node, kind, name, client address). Run it as its own
DaemonSet on the pod network, so Service endpoints never depend on the agents'
probing, and a same-node backend separate from the calling agent pod exists on
every node (the missing br_netfilter check needs one).

\b
Example:
  prober echo --network pod --node "$NODE_NAME" --name "$POD_NAME" --listen "$POD_IP"

\b
Endpoints (--http-port): GET / (the echo), /metrics, /healthz, /readyz.
UDP echo on --udp-port: datagrams starting with PRB1, answered only when the
reply is no longer than the request.
SIGTERM: /readyz turns 503 first, the echo answers one more second, then stops.
"""


@click.command("echo", cls=OneLineErrors, help=HELP, context_settings={"max_content_width": 100})
@echo_options
def echo(**params: Any) -> None:
    import logging

    from prometheus_client import CollectorRegistry

    from prober import __version__
    from prober.agent.echo import EchoIdentity, EchoState, serve_echo
    from prober.agent.metrics import EchoMetrics, echo_info

    settings = echo_settings_from_params(params)
    registry = CollectorRegistry()
    metrics = EchoMetrics(registry=registry)
    echo_info(registry, node=settings.node, kind=settings.network.value, version=__version__)
    state = EchoState(
        identity=EchoIdentity(node=settings.node, kind=settings.network, agent=settings.name),
        registry=registry,
        metrics=metrics,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve_echo(state, settings.listen, settings.http_port, settings.udp_port, stop)
        except OSError as exc:  # the echo ports could not be bound
            raise UsageError(f"cannot serve on {settings.listen}: {exc.strerror or exc}") from None

    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(main())
