"""The agent's settings: one frozen value, parsed by a pure function from env and argv.

``prober agent`` and :func:`agent_settings_from` share one set of click options, so
the command line, the environment variables (each option's ``PROBER_*`` variable)
and the tests cannot disagree. Environment variables are read from the mapping
given, not from ``os.environ``, which keeps parsing pure; the real command passes
``os.environ``. Precedence: command line, then environment, then default.

Nothing here reads files or opens sockets: whether the inventory file can be read is
the command's business, at start-up.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from prober.errors import UsageError
from prober.model import SrcKind

_ENV_KEY = "prober.env"

DEFAULT_INTERVAL_S = 10.0
DEFAULT_BUDGET_PER_S = 20.0
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_CONCURRENCY = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """Everything ``prober agent`` needs to run. Standalone schedule knobs are ``None``
    with a collector: the collector's pinglist carries them."""

    network: SrcKind
    node: str
    name: str
    listen: str = "0.0.0.0"
    http_port: int = 8080
    udp_port: int = 8081
    source_ip: str | None = None
    collector: str | None = None
    inventory: Path | None = None
    interval_s: float | None = None
    budget_per_s: float | None = None
    timeout_s: float | None = None
    concurrency: int | None = None
    per_target_metrics: bool = False
    results_file: Path | None = None


class _EnvOption(click.Option):
    """An option whose environment variable comes from ``ctx.meta`` when parsing is pure."""

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        env: Mapping[str, str] = ctx.meta.get(_ENV_KEY, os.environ)
        if isinstance(self.envvar, str):
            value = env.get(self.envvar)
            return value or None  # an empty variable counts as unset
        return None


def _opt(*decls: str, **kwargs: Any) -> Callable[[click.decorators.FC], click.decorators.FC]:
    kwargs.setdefault("show_envvar", "envvar" in kwargs)
    return click.option(*decls, cls=_EnvOption, **kwargs)


def agent_options(f: click.decorators.FC) -> click.decorators.FC:
    """The options of ``prober agent`` (applied bottom-up, listed here top-down)."""
    options = [
        _opt("--network", type=click.Choice(["pod", "host"]), envvar="PROBER_NETWORK", required=True,
             help="Which network this agent probes from: the pod network or the node's own."),
        _opt("--node", metavar="NAME", envvar="PROBER_NODE_NAME", required=True,
             help="The node this agent runs on (in Kubernetes: spec.nodeName)."),
        _opt("--name", metavar="NAME", envvar="PROBER_AGENT_NAME",
             help="This agent's name in the inventory. Default: <network>-<node>; "
                  "in Kubernetes: the pod name."),
        _opt("--listen", metavar="ADDR", envvar="PROBER_LISTEN", default="0.0.0.0", show_default=True,
             help="Address the HTTP and UDP echo bind to."),
        _opt("--http-port", metavar="N", type=click.IntRange(0, 65535), envvar="PROBER_HTTP_PORT",
             default=8080, show_default=True, help="HTTP echo, /metrics, /healthz, /readyz, /sweep."),
        _opt("--udp-port", metavar="N", type=click.IntRange(0, 65535), envvar="PROBER_UDP_PORT",
             default=8081, show_default=True, help="UDP echo."),
        _opt("--source-ip", metavar="ADDR", envvar="PROBER_SOURCE_IP",
             help="Bind probes to this local address (e.g. a loopback mesh, one ENI). "
                  "Default: routing picks."),
        _opt("--collector", metavar="URL", envvar="PROBER_COLLECTOR_URL",
             help="Collector base URL: the pinglist comes from it, results go to it."),
        _opt("--inventory", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
             envvar="PROBER_INVENTORY",
             help="Standalone: build the pinglist from this inventory file (YAML/JSON)."),
        _opt("--interval", "interval_s", metavar="S", type=click.FloatRange(min=0.1),
             help=f"Standalone: seconds per probe round [default: {DEFAULT_INTERVAL_S:g}]."),
        _opt("--budget", "budget_per_s", metavar="N", type=click.FloatRange(min=0.01),
             help=f"Standalone: most probes per second [default: {DEFAULT_BUDGET_PER_S:g}]."),
        _opt("--timeout", "timeout_s", metavar="S", type=click.FloatRange(min=0.01, max=60),
             help=f"Standalone: probe timeout in seconds [default: {DEFAULT_TIMEOUT_S:g}; "
                  "keeps 1 s and 3 s SYN retransmits visible as latency]."),
        _opt("--concurrency", metavar="N", type=click.IntRange(min=1),
             help=f"Standalone: most probes in flight [default: {DEFAULT_CONCURRENCY}]."),
        _opt("--per-target-metrics", is_flag=True, envvar="PROBER_PER_TARGET_METRICS",
             help="Also export prober_target_probes_total per destination node "
                  "(series grow with the cluster)."),
        _opt("--results-file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
             envvar="PROBER_RESULTS_FILE",
             help="Append every result to this JSONL file (for prober diagnose)."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _ip(value: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise UsageError(f"{flag}: {value!r} is not an IP address") from None


def settings_from_params(params: Mapping[str, Any]) -> AgentSettings:
    """Cross-option checks and defaults, from parsed click parameters."""
    network = SrcKind(params["network"])
    node = str(params["node"]).strip()
    if not node:
        raise UsageError("--node must not be empty")
    name = params.get("name") or f"{network.value}-{node}"
    collector = params.get("collector")
    inventory = params.get("inventory")
    if not collector and not inventory:
        raise UsageError("one of --collector URL or --inventory FILE is required")
    if collector and inventory:
        raise UsageError("use either --collector or --inventory, not both")
    standalone = {
        "--interval": params.get("interval_s"),
        "--budget": params.get("budget_per_s"),
        "--timeout": params.get("timeout_s"),
        "--concurrency": params.get("concurrency"),
    }
    if collector:
        parts = urlsplit(collector)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"--collector: {collector!r} is not an http(s):// URL")
        given = [flag for flag, value in standalone.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: standalone only; with --collector the pinglist sets them")
    source_ip = params.get("source_ip")
    return AgentSettings(
        network=network,
        node=node,
        name=name,
        listen=_ip(params["listen"], "--listen"),
        http_port=params["http_port"],
        udp_port=params["udp_port"],
        source_ip=_ip(source_ip, "--source-ip") if source_ip else None,
        collector=collector.rstrip("/") if collector else None,
        inventory=inventory,
        interval_s=None if collector else (params.get("interval_s") or DEFAULT_INTERVAL_S),
        budget_per_s=None if collector else (params.get("budget_per_s") or DEFAULT_BUDGET_PER_S),
        timeout_s=None if collector else (params.get("timeout_s") or DEFAULT_TIMEOUT_S),
        concurrency=None if collector else (params.get("concurrency") or DEFAULT_CONCURRENCY),
        per_target_metrics=bool(params.get("per_target_metrics")),
        results_file=params.get("results_file"),
    )


class OneLineErrors(click.Command):
    """A click command whose usage errors are one line (``prober: error: ...``, exit 2)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            message = " ".join(exc.format_message().split())
            raise UsageError(f"{message} (see: prober {self.name} --help)") from None


@click.command("agent", cls=OneLineErrors)
@agent_options
def _parser(**_: Any) -> None:
    """Parses ``prober agent`` arguments for :func:`agent_settings_from`."""


def agent_settings_from(env: Mapping[str, str], argv: Sequence[str]) -> AgentSettings:
    """Parse ``prober agent`` arguments and ``PROBER_*`` variables; raises ``UsageError``."""
    parent = click.Context(_parser, info_name="prober")
    parent.meta[_ENV_KEY] = env
    ctx = _parser.make_context("agent", list(argv), parent=parent)
    return settings_from_params(ctx.params)
