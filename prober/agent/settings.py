"""The agent's (and the echo's) settings: one frozen value, parsed by a pure function from env and argv.

``prober agent`` and :func:`agent_settings_from` share one set of click options (and
``prober echo`` and :func:`echo_settings_from` the echo's part of it), built from the
declarations in :mod:`prober.settings` (:data:`~prober.settings.AGENT`,
:data:`~prober.settings.ECHO`), so the command line, the environment variables (each
option's ``PROBER_*`` variable), the defaults, the valid ranges and the tests cannot
disagree. Environment variables are read from the mapping given, not from
``os.environ``, which keeps parsing pure; the real command passes ``os.environ``.
Precedence: command line, then environment, then default.

Nothing here reads files or opens sockets: whether the inventory file can be read is
the command's business, at start-up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from prober import settings as declared
from prober.errors import UsageError
from prober.model import SrcKind
from prober.options import ENV_KEY, setting_options
from prober.schedule import SchedulePolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """Everything ``prober agent`` needs to run. Standalone schedule knobs are ``None``
    with a collector: the collector's pinglist carries them. Checked on construction
    (:data:`prober.settings.AGENT`): a bad value raises a ``SettingError`` naming its flag."""

    network: SrcKind
    node: str
    name: str
    listen: str = declared.LISTEN.default
    http_port: int = declared.HTTP_PORT.default
    udp_port: int = declared.UDP_PORT.default
    source_ip: str | None = None
    collector: str | None = None
    #: The credential presented to the collector (``--token-file``).
    token_file: Path | None = None
    inventory: Path | None = None
    interval_s: float | None = None
    budget_per_s: float | None = None
    timeout_s: float | None = None
    concurrency: int | None = None
    per_target_metrics: bool = declared.PER_TARGET_METRICS.default
    results_file: Path | None = None

    def __post_init__(self) -> None:
        declared.check_fields(self, declared.AGENT)


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoSettings:
    """Everything ``prober echo`` needs: who it is and where its echo listens."""

    network: SrcKind
    node: str
    name: str
    listen: str = declared.LISTEN.default
    http_port: int = declared.HTTP_PORT.default
    udp_port: int = declared.UDP_PORT.default

    def __post_init__(self) -> None:
        declared.check_fields(self, declared.ECHO)


agent_options = setting_options(declared.AGENT)
"""The options of ``prober agent``."""

echo_options = setting_options(declared.ECHO)
"""The options of ``prober echo``: the agent's identity and echo ports, nothing about probing."""


def _ip(value: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise UsageError(f"{flag}: {value!r} is not an IP address") from None


def _node(params: Mapping[str, Any]) -> str:
    node = str(params["node"]).strip()
    if not node:
        raise UsageError(f"{declared.NODE.flag} must not be empty")
    return node


def standalone_policy(settings: AgentSettings) -> SchedulePolicy:
    """A standalone agent's schedule (``--inventory``): its schedule flags, the rest default."""
    if settings.collector is not None:
        raise ValueError("with --collector the schedule comes from the collector's pinglist")
    # No collector, no questions: the whole budget goes to the schedule.
    return SchedulePolicy(
        **{s.field: getattr(settings, s.field) for s in declared.AGENT_SCHEDULE}, focus_reserve=0
    )


def echo_settings_from_params(params: Mapping[str, Any]) -> EchoSettings:
    """``prober echo``'s settings from parsed click parameters."""
    node = _node(params)
    return EchoSettings(
        network=SrcKind(params["network"]),
        node=node,
        name=params.get("name") or f"echo-{node}",
        listen=_ip(params["listen"], declared.LISTEN.flag),
        http_port=params["http_port"],
        udp_port=params["udp_port"],
    )


def settings_from_params(params: Mapping[str, Any]) -> AgentSettings:
    """Cross-option checks and defaults, from parsed click parameters."""
    network = SrcKind(params["network"])
    node = _node(params)
    name = params.get("name") or f"{network.value}-{node}"
    collector = params.get("collector")
    inventory = params.get("inventory")
    if not collector and not inventory:
        raise UsageError("one of --collector URL or --inventory FILE is required")
    if collector and inventory:
        raise UsageError("use either --collector or --inventory, not both")
    if collector:
        parts = urlsplit(collector)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"--collector: {collector!r} is not an http(s):// URL")
        given = [s.flag for s in declared.AGENT_SCHEDULE if params.get(s.field) is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: standalone only; with --collector the pinglist sets them")
    schedule = {
        s.field: None if collector else (s.default if params.get(s.field) is None else params[s.field])
        for s in declared.AGENT_SCHEDULE
    }
    source_ip = params.get("source_ip")
    results_file = params.get("results_file")
    token_file = params.get("token_file")
    if token_file and not collector:
        raise UsageError("--token-file: only with --collector (it is the credential sent to it)")
    return AgentSettings(
        network=network,
        node=node,
        name=name,
        listen=_ip(params["listen"], declared.LISTEN.flag),
        http_port=params["http_port"],
        udp_port=params["udp_port"],
        source_ip=_ip(source_ip, declared.SOURCE_IP.flag) if source_ip else None,
        collector=collector.rstrip("/") if collector else None,
        token_file=Path(token_file) if token_file else None,
        inventory=Path(inventory) if inventory else None,
        per_target_metrics=bool(params.get("per_target_metrics")),
        results_file=Path(results_file) if results_file else None,
        **schedule,
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


@click.command("echo", cls=OneLineErrors)
@echo_options
def _echo_parser(**_: Any) -> None:
    """Parses ``prober echo`` arguments for :func:`echo_settings_from`."""


def _parse(command: click.Command, env: Mapping[str, str], argv: Sequence[str]) -> dict[str, Any]:
    parent = click.Context(command, info_name="prober")
    parent.meta[ENV_KEY] = env
    assert command.name is not None
    return command.make_context(command.name, list(argv), parent=parent).params


def agent_settings_from(env: Mapping[str, str], argv: Sequence[str]) -> AgentSettings:
    """Parse ``prober agent`` arguments and ``PROBER_*`` variables; raises ``UsageError``."""
    return settings_from_params(_parse(_parser, env, argv))


def echo_settings_from(env: Mapping[str, str], argv: Sequence[str]) -> EchoSettings:
    """Parse ``prober echo`` arguments and ``PROBER_*`` variables; raises ``UsageError``."""
    return echo_settings_from_params(_parse(_echo_parser, env, argv))
