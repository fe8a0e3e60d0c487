"""Settings declared once (prober.settings): parsing, ranges, "none", and everything that reads them."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from prober import settings as declared
from prober.agent.settings import AgentSettings, EchoSettings, agent_settings_from, standalone_policy
from prober.collector.settings import CollectorSettings, collector_settings, schedule_policy
from prober.commands.agent import agent
from prober.commands.collector import collector
from prober.commands.diagnose import diagnose
from prober.commands.echo import echo
from prober.commands.kube_options import KubeOptions
from prober.commands.sweep import sweep
from prober.errors import SettingError, UsageError
from prober.model import SrcKind
from prober.options import ENV_KEY, setting_option, setting_options
from prober.schedule import SchedulePolicy
from prober.settings import Setting

#: Every command built from the declarations, with the settings it must offer, in order.
COMMANDS: list[tuple[click.Command, tuple[Setting[Any], ...]]] = [
    (collector, declared.COLLECTOR + declared.KUBE),
    (agent, declared.AGENT),
    (echo, declared.ECHO),
    (sweep, declared.SWEEP),
    (diagnose, declared.DIAGNOSE),
]
IDS = ["collector", "agent", "echo", "sweep", "diagnose"]


# ------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("setting", "text", "expected"),
    [
        pytest.param(declared.INTERVAL, "2.5", 2.5, id="float"),
        pytest.param(declared.INTERVAL, " 0.1 ", 0.1, id="float-at-the-lower-bound"),
        pytest.param(declared.TIMEOUT, "60", 60.0, id="float-at-the-upper-bound"),
        pytest.param(declared.COLLECTOR_PORT, "0", 0, id="int-at-the-lower-bound"),
        pytest.param(declared.COLLECTOR_PORT, "65535", 65535, id="int-at-the-upper-bound"),
        pytest.param(declared.CLUSTER_BUDGET, "none", None, id="none"),
        pytest.param(declared.CLUSTER_BUDGET, " None ", None, id="none-any-case"),
        pytest.param(declared.CLUSTER_BUDGET, "0.5", 0.5, id="a-limit"),
        pytest.param(declared.DIAGNOSE_WINDOW, "NONE", None, id="window-all"),
        pytest.param(declared.WARMUP, "0", 0.0, id="closed-lower-bound"),
    ],
)
def test_parse_accepts(setting: Setting[Any], text: str, expected: float | None) -> None:
    assert setting.parse(text) == expected


@pytest.mark.parametrize(
    ("setting", "text", "message"),
    [
        pytest.param(declared.INTERVAL, "0.05", "--interval must be at least 0.1 s, got 0.05", id="below"),
        pytest.param(declared.TIMEOUT, "61", "--timeout must be from 0.01 to 60 s, got 61", id="above"),
        pytest.param(declared.INTERVAL, "nan", "--interval must be at least 0.1 s, got nan", id="nan"),
        pytest.param(declared.BUDGET, "inf", "--budget must be at least 0.01 probes/s, got inf", id="inf"),
        pytest.param(declared.INTERVAL, "ten", "--interval: 'ten' is not a number", id="not-a-number"),
        pytest.param(declared.INTERVAL, "none", "--interval: 'none' is not a number", id="none-no-limit"),
        pytest.param(declared.COLLECTOR_PORT, "80.5", "--port: '80.5' is not a whole number", id="not-whole"),
        pytest.param(declared.COLLECTOR_PORT, "70000", "--port must be from 0 to 65535, got 70000",
                     id="port"),
        pytest.param(declared.SHARED_BUDGET, "0", "--shared-budget must be greater than 0 probes/s, got 0",
                     id="open-bound"),
        pytest.param(declared.CLUSTER_BUDGET, "0",
                     "--cluster-budget must be greater than 0 probes/s, or none (no limit), got 0",
                     id="zero-is-not-no-limit"),
        pytest.param(declared.CLUSTER_BUDGET, "unlimited",
                     "--cluster-budget: 'unlimited' is not a number nor none (no limit)", id="other-words"),
        pytest.param(declared.CLUSTER_BUDGET, "-1", "got -1", id="negative"),
    ],
)  # fmt: skip
def test_parse_rejects_naming_the_flag(setting: Setting[Any], text: str, message: str) -> None:
    with pytest.raises(SettingError) as exc:
        setting.parse(text)
    assert str(exc.value) == message or message in str(exc.value)
    assert isinstance(exc.value, UsageError)
    assert isinstance(exc.value, ValueError)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_parsing_text_and_checking_a_value_agree(value: float) -> None:
    """The command line (text) and a settings value (a number) are held to one range."""
    for setting in (declared.INTERVAL, declared.TIMEOUT, declared.CLUSTER_BUDGET, declared.WARMUP):
        problem = setting.problem(value)
        if problem is None:
            assert setting.parse(repr(value)) == value
        else:
            with pytest.raises(SettingError) as exc:
                setting.parse(repr(value))
            assert str(exc.value) == f"{setting.flag} {problem}"


@pytest.mark.parametrize(
    ("setting", "range_text", "default"),
    [
        pytest.param(declared.INTERVAL, "at least 0.1 s", "10 s", id="interval"),
        pytest.param(declared.TIMEOUT, "from 0.01 to 60 s", "5 s", id="timeout"),
        pytest.param(declared.CLUSTER_BUDGET, "greater than 0 probes/s, or none (no limit)",
                     "5,000 probes/s", id="cluster-budget"),
        pytest.param(declared.DIAGNOSE_WINDOW, "greater than 0 s, or none (all of it)", "none (all of it)",
                     id="diagnose-window"),
        pytest.param(declared.HTTP_PORT, "from 0 to 65535", "8080", id="port"),
        pytest.param(declared.NETWORK, "pod or host", "required", id="choice"),
        pytest.param(declared.AGENT_NAME, "", "<network>-<node>", id="computed-default"),
        pytest.param(declared.PER_TARGET_METRICS, "", "off", id="flag"),
    ],
)  # fmt: skip
def test_range_and_default_in_words(setting: Setting[Any], range_text: str, default: str) -> None:
    assert (setting.range_text(), setting.default_shown()) == (range_text, default)


def test_the_network_choices_are_the_source_kinds() -> None:
    assert declared.NETWORK.choices == tuple(k.value for k in SrcKind)


# --------------------------------------------------- settings values read the declarations


def _fields_match_defaults(value: object, settings: tuple[Setting[Any], ...]) -> list[str]:
    checked = []
    for s in settings:
        if s.default is None or s.default_text is not None or s.standalone:
            continue  # computed at run time, or unset with a collector
        assert getattr(value, s.field) == s.default, s.field
        checked.append(s.field)
    return checked


def test_settings_values_default_to_the_declared_defaults() -> None:
    assert _fields_match_defaults(SchedulePolicy(), declared.SCHEDULE) == [
        "interval_s", "timeout_s", "budget_per_s", "concurrency", "shared_budget_per_s",
        "nlb_budget_per_node", "cluster_budget_per_s", "large_probe_bytes",
    ]  # fmt: skip
    assert _fields_match_defaults(CollectorSettings(), declared.COLLECTOR) == [
        "listen", "port", "interval_s", "budget_per_s", "timeout_s", "shared_budget_per_s",
        "nlb_budget_per_node", "cluster_budget_per_s", "large_probe_bytes", "window_s", "retention_s",
        "records_buffer_mib", "ingest_quota_per_s",
        "clock_skew_s", "max_connections", "sweep_deadline_max_s", "sweep_timeout_max_s", "sweep_min_gap_s",
        "focus_per_agent", "suspects_max", "suspect_rounds",
    ]  # fmt: skip
    echo_settings = EchoSettings(network=SrcKind.POD, node="a", name="e")
    assert _fields_match_defaults(echo_settings, declared.ECHO) == ["listen", "http_port", "udp_port"]
    agent_settings = AgentSettings(network=SrcKind.POD, node="a", name="p")
    assert _fields_match_defaults(agent_settings, declared.AGENT) == [
        "listen", "http_port", "udp_port", "per_target_metrics",
    ]  # fmt: skip
    kube = KubeOptions()
    assert kube.enabled == declared.KUBERNETES.default
    assert _fields_match_defaults(kube, declared.KUBE[1:]) == [
        "agent_selector", "echo_selector", "warmup_s", "dns_query", "agent_service_account",
    ]  # fmt: skip


def test_a_standalone_agent_gets_the_declared_schedule() -> None:
    s = agent_settings_from({}, ["--network", "pod", "--node", "a", "--inventory", "inv.yaml"])
    assert (s.interval_s, s.budget_per_s, s.timeout_s, s.concurrency) == tuple(
        x.default for x in (declared.INTERVAL, declared.BUDGET, declared.TIMEOUT, declared.CONCURRENCY)
    )
    # No collector, no questions: no room kept for focused probes.
    assert standalone_policy(s) == SchedulePolicy(focus_reserve=0)
    argv = ["--network", "pod", "--node", "a", "--inventory", "inv.yaml", "--interval", "2", "--budget", "3",
            "--timeout", "1", "--concurrency", "4"]  # fmt: skip
    assert standalone_policy(agent_settings_from({}, argv)) == SchedulePolicy(
        interval_s=2.0, budget_per_s=3.0, timeout_s=1.0, concurrency=4, focus_reserve=0
    )
    with pytest.raises(ValueError, match="with --collector"):
        standalone_policy(
            agent_settings_from({}, ["--network", "pod", "--node", "a", "--collector", "http://c"])
        )


def test_the_collector_hands_its_schedule_flags_to_the_pinglists() -> None:
    settings = collector_settings(
        inventory="inv.yaml", interval_s=3.0, timeout_s=1.0, budget_per_s=7.0, shared_budget_per_s=2.0,
        nlb_budget_per_node=0.5, cluster_budget_per_s=None,
    )  # fmt: skip
    assert schedule_policy(settings) == SchedulePolicy(
        interval_s=3.0, timeout_s=1.0, budget_per_s=7.0, shared_budget_per_s=2.0, nlb_budget_per_node=0.5,
        cluster_budget_per_s=None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(lambda: CollectorSettings(interval_s=0.05), "--interval must be at least 0.1 s",
                     id="collector-interval"),
        pytest.param(lambda: CollectorSettings(cluster_budget_per_s=0.0),
                     "--cluster-budget must be greater than 0", id="collector-cluster-budget-zero"),
        pytest.param(lambda: CollectorSettings(window_s=-1.0), "--window must be greater than 0 s",
                     id="window"),
        pytest.param(lambda: CollectorSettings(port=-1), "--port must be from 0 to 65535", id="port"),
        pytest.param(lambda: CollectorSettings(long_cpu_share=0.0),
                     "long_cpu_share must be a share of a core in (0, 1], got 0.0", id="long-cpu-share"),
        pytest.param(lambda: AgentSettings(network=SrcKind.POD, node="a", name="p", http_port=70000),
                     "--http-port must be from 0 to 65535, got 70000", id="agent-port"),
        pytest.param(lambda: AgentSettings(network=SrcKind.POD, node="a", name="p", timeout_s=0.0),
                     "--timeout must be from 0.01 to 60 s", id="agent-timeout"),
        pytest.param(lambda: EchoSettings(network=SrcKind.HOST, node="a", name="e", udp_port=65536),
                     "--udp-port must be from 0 to 65535", id="echo-port"),
        pytest.param(lambda: SchedulePolicy(concurrency=0), "--concurrency must be at least 1", id="policy"),
    ],
)  # fmt: skip
def test_settings_values_check_their_fields_on_construction(build: Any, message: str) -> None:
    with pytest.raises(SettingError, match=re.escape(message)):
        build()


def test_no_limit_is_none_from_the_command_line_to_the_schedule() -> None:
    ctx = collector.make_context("collector", ["--inventory", "inv.yaml", "--cluster-budget", "none"])
    own = {s.field: ctx.params[s.field] for s in declared.COLLECTOR}  # the rest is @kube_options's
    settings = collector_settings(kubernetes=False, **own)
    assert settings.cluster_budget_per_s is None
    policy = schedule_policy(settings)
    assert policy.cluster_budget_per_s is None
    assert policy.agent_budget(1_000_000) == declared.BUDGET.default  # nothing shared out
    limited = schedule_policy(collector_settings(inventory="inv.yaml"))
    assert limited.agent_budget(10_000) == declared.CLUSTER_BUDGET.default / 10_000


def test_zero_is_not_no_limit_on_the_command_line() -> None:
    with pytest.raises(click.UsageError) as exc:
        collector.make_context("collector", ["--inventory", "inv.yaml", "--cluster-budget", "0"])
    assert exc.value.message == "--cluster-budget must be greater than 0 probes/s, or none (no limit), got 0"


LIMIT = replace(declared.CLUSTER_BUDGET, env="PROBER_TEST_LIMIT")


@click.command()
@setting_options((LIMIT,))
def limited(**_: Any) -> None:
    """A command with one limit that has a variable."""


@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [
        pytest.param({"PROBER_TEST_LIMIT": "none"}, [], None, id="variable-none"),
        pytest.param({"PROBER_TEST_LIMIT": "12.5"}, [], 12.5, id="variable-number"),
        pytest.param({"PROBER_TEST_LIMIT": ""}, [], LIMIT.default, id="empty-variable-is-unset"),
        pytest.param({"PROBER_TEST_LIMIT": "none"}, ["--cluster-budget", "7"], 7.0, id="flag-wins"),
        pytest.param({}, ["--cluster-budget", "NONE"], None, id="flag-none"),
    ],
)
def test_no_limit_is_spelled_none_in_a_variable_too(
    env: dict[str, str], argv: list[str], expected: float | None
) -> None:
    parent = click.Context(limited, info_name="prober")
    parent.meta[ENV_KEY] = env
    assert limited.make_context("limited", argv, parent=parent).params == {"cluster_budget_per_s": expected}


def test_a_zero_variable_is_an_error_naming_the_flag() -> None:
    parent = click.Context(limited, info_name="prober")
    parent.meta[ENV_KEY] = {"PROBER_TEST_LIMIT": "0"}
    with pytest.raises(click.UsageError, match=r"--cluster-budget must be greater than 0 .* or none"):
        limited.make_context("limited", [], parent=parent)


# ------------------------------------------------------------------ the commands' options


@pytest.mark.parametrize(("command", "settings"), COMMANDS, ids=IDS)
def test_every_command_offers_exactly_its_declared_settings(
    command: click.Command, settings: tuple[Setting[Any], ...]
) -> None:
    options = [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]
    assert [(o.opts[0], o.envvar, o.name) for o in options] == [(s.flag, s.env, s.field) for s in settings]


@pytest.mark.parametrize(("command", "settings"), COMMANDS, ids=IDS)
def test_help_shows_each_default_with_its_unit_range_and_variable(
    command: click.Command, settings: tuple[Setting[Any], ...]
) -> None:
    result = CliRunner().invoke(command, ["--help"], terminal_width=1000, max_content_width=1000)
    assert result.exit_code == 0, result.output
    ctx = click.Context(command, info_name=command.name)
    records = [p.get_help_record(ctx) for p in command.get_params(ctx) if isinstance(p, click.Option)]
    lines = {spec.split()[0]: text for spec, text in filter(None, records)}
    for flag, text in lines.items():
        assert " ".join(text.split()) in " ".join(result.output.split()), flag  # what --help prints
    for s in settings:
        line = lines[s.flag]
        assert s.described() in line, s.flag
        if s.env:
            assert f"env var: {s.env}" in line, s.flag
        if s.numeric and s.default is not None:
            assert f"default: {s.with_unit(s.default)}" in line, s.flag
        if s.numeric:
            assert s.range_text() in line, s.flag
        if s.required:
            assert "required" in line, s.flag
    if command is collector:
        extras = "[default: 5,000 probes/s; greater than 0 probes/s, or none (no limit)]"
        assert extras in lines["--cluster-budget"]


def test_standalone_only_flags_come_from_the_declarations() -> None:
    argv = ["--network", "pod", "--node", "a", "--collector", "http://c", "--concurrency", "8",
            "--budget", "2"]  # fmt: skip
    with pytest.raises(UsageError, match=re.escape("--budget, --concurrency: standalone only")):
        agent_settings_from({}, argv)
    assert all(s.standalone for s in declared.AGENT_SCHEDULE)
    assert not any(s.standalone for s in declared.SCHEDULE)


def test_declarations_are_unique_per_command() -> None:
    for section in declared.COMMANDS:
        flags = [s.flag for s in section.settings]
        fields = [s.field for s in section.settings]
        assert len(set(flags)) == len(flags), section.title
        assert len(set(fields)) == len(fields), section.title
    for s in {s for section in declared.COMMANDS for s in section.settings}:
        assert s.help.endswith("."), s.flag
        assert s.numeric == (s.low is not None or s.high is not None), s.flag
        if s.numeric and s.default is not None:
            assert s.problem(s.default) is None, s.flag


#: Every declared setting that names a file or a directory (once, by flag).
PATHS = list({s.flag: s for _, ss in COMMANDS for s in ss if s.kind in ("path", "dir")}.values())


@pytest.mark.parametrize("setting", PATHS, ids=[s.flag for s in PATHS])
def test_a_path_setting_takes_what_it_names(setting: Setting[Any], tmp_path: Path) -> None:
    """A file setting refuses a directory and a directory setting a file (--state-dir is
    a directory: the manifests mount an emptyDir there)."""

    @click.command()
    @setting_option(setting)
    def cmd(**values: object) -> None:
        click.echo(values[setting.field])

    (tmp_path / "file").write_text("x")
    right, wrong = (tmp_path, tmp_path / "file") if setting.kind == "dir" else (tmp_path / "file", tmp_path)
    ok = CliRunner().invoke(cmd, [setting.flag, str(right)])
    assert (ok.exit_code, ok.output.strip()) == (0, str(right)), ok.output
    bad = CliRunner().invoke(cmd, [setting.flag, str(wrong)])
    assert bad.exit_code == 2
    assert ("is a directory" if setting.kind == "path" else "is a file") in bad.output


def test_a_setting_shown_as_a_directory_takes_a_directory() -> None:
    assert [s.flag for s in PATHS if (s.metavar == "DIR") != (s.kind == "dir")] == []
