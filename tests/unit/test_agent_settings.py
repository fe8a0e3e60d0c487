"""``prober agent`` settings: flags, PROBER_* variables, defaults and one-line errors (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prober.agent.settings import AgentSettings, agent_settings_from
from prober.errors import UsageError
from prober.model import SrcKind

BASE = ["--network", "pod", "--node", "node-a", "--collector", "http://collector:9090/"]
C = ["--collector", "http://c"]


def test_minimal_collector_agent_gets_documented_defaults() -> None:
    s = agent_settings_from({}, BASE)
    assert s == AgentSettings(
        network=SrcKind.POD, node="node-a", name="pod-node-a", collector="http://collector:9090"
    )
    assert (s.listen, s.http_port, s.udp_port) == ("0.0.0.0", 8080, 8081)
    assert s.interval_s is None  # the collector's pinglist sets the schedule


def test_everything_from_the_environment() -> None:
    env = {
        "PROBER_NETWORK": "host",
        "PROBER_NODE_NAME": "node-b",
        "PROBER_AGENT_NAME": "prober-agent-host-x7k2p",
        "PROBER_LISTEN": "127.0.0.2",
        "PROBER_HTTP_PORT": "18080",
        "PROBER_UDP_PORT": "18081",
        "PROBER_SOURCE_IP": "127.0.0.2",
        "PROBER_INVENTORY": "inv.yaml",
        "PROBER_PER_TARGET_METRICS": "true",
        "PROBER_RESULTS_FILE": "out.jsonl",
    }
    s = agent_settings_from(env, [])
    assert s == AgentSettings(
        network=SrcKind.HOST, node="node-b", name="prober-agent-host-x7k2p", listen="127.0.0.2",
        http_port=18080, udp_port=18081, source_ip="127.0.0.2", inventory=Path("inv.yaml"),
        interval_s=10.0, budget_per_s=20.0, timeout_s=5.0, concurrency=64,
        per_target_metrics=True, results_file=Path("out.jsonl"),
    )  # fmt: skip


def test_flags_win_over_environment_and_empty_variables_are_unset() -> None:
    env = {"PROBER_NODE_NAME": "from-env", "PROBER_NETWORK": "host", "PROBER_LISTEN": ""}
    s = agent_settings_from(env, [*BASE, "--node", "from-flag"])
    assert (s.node, s.network, s.listen) == ("from-flag", SrcKind.POD, "0.0.0.0")


def test_standalone_schedule_flags() -> None:
    argv = ["--network", "host", "--node", "n", "--inventory", "i.yaml", "--interval", "2", "--budget",
            "500", "--timeout", "1.5", "--concurrency", "256"]  # fmt: skip
    s = agent_settings_from({}, argv)
    assert (s.interval_s, s.budget_per_s, s.timeout_s, s.concurrency) == (2.0, 500.0, 1.5, 256)


@pytest.mark.parametrize(
    ("env", "argv", "fragment"),
    [
        pytest.param({}, ["--node", "a", *C], "--network", id="network-missing"),
        pytest.param({}, ["--network", "pod", *C], "--node", id="node-missing"),
        pytest.param({}, ["--network", "vm", "--node", "a", *C], "'vm'", id="bad-network"),
        pytest.param({}, ["--network", "pod", "--node", "a"], "one of --collector", id="no-src"),
        pytest.param({}, [*BASE, "--inventory", "i.yaml"], "not both", id="both-sources"),
        pytest.param({}, [*BASE, "--interval", "5"], "--interval: standalone only", id="interval-w-coll"),
        pytest.param({}, [*BASE, "--http-port", "70000"], "70000", id="port-range"),
        pytest.param({"PROBER_UDP_PORT": "x"}, BASE, "'x'", id="bad-env-port"),
        pytest.param({}, [*BASE, "--listen", "eth0"], "--listen: 'eth0' is not an IP", id="listen-not-ip"),
        pytest.param({}, [*BASE, "--source-ip", "10.0.0.300"], "--source-ip", id="source-ip"),
        pytest.param({}, ["--network", "pod", "--node", "a", "--collector", "collector:9090"], "http(s)://",
                     id="collector-no-scheme"),
        pytest.param({}, [*BASE, "--frobnicate"], "--frobnicate", id="unknown-flag"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_usage_error(env: dict[str, str], argv: list[str], fragment: str) -> None:
    with pytest.raises(UsageError) as exc:
        agent_settings_from(env, argv)
    message = str(exc.value)
    assert fragment in message
    assert "\n" not in message
