"""The collector's Kubernetes flags: parsed from the command line and the environment."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from prober.commands.kube_options import KubeOptions, kube_inventory, kube_options
from prober.errors import UsageError


@click.command()
@click.option("--port", type=int, default=9090)
@kube_options
def collector(port: int, kube: KubeOptions) -> None:
    click.echo(repr((port, kube)))


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, KubeOptions | None, str]:
    seen: list[KubeOptions] = []

    @click.command()
    @kube_options
    def cmd(kube: KubeOptions) -> None:
        seen.append(kube)

    result = CliRunner().invoke(cmd, args, env=env or {})
    return result.exit_code, seen[0] if seen else None, result.output


def test_defaults() -> None:
    code, kube, _ = run([])
    assert code == 0
    assert kube == KubeOptions()


def test_flags() -> None:
    code, kube, out = run(
        [
            "--kubernetes",
            "--kubeconfig", "/home/me/.kube/config",
            "--kube-context", "prod",
            "--namespace", "probes",
            "--agent-selector", "app=agent",
            "--echo-selector", "app=echo",
            "--warmup", "5",
            "--dns-server", "kube-dns=172.20.0.10",
            "--dns-server", "node-local=169.254.20.10",
            "--dns-query", "example.com",
            "--external", "api=api.example.com:443",
        ]
    )  # fmt: skip
    assert code == 0, out
    assert kube == KubeOptions(
        enabled=True,
        kubeconfig="/home/me/.kube/config",
        context="prod",
        namespace="probes",
        agent_selector="app=agent",
        echo_selector="app=echo",
        warmup_s=5.0,
        dns_servers=("kube-dns=172.20.0.10", "node-local=169.254.20.10"),
        dns_query="example.com",
        externals=("api=api.example.com:443",),
    )


def test_environment() -> None:
    code, kube, out = run(
        [],
        env={
            "PROBER_KUBERNETES": "1",
            "PROBER_NAMESPACE": "prober",
            "PROBER_WARMUP": "12.5",
            "PROBER_DNS_SERVERS": "kube-dns=172.20.0.10 alt=10.0.0.2",
            "PROBER_EXTERNALS": "a=a.example.com:443 b=b.example.com:80/http",
        },
    )
    assert code == 0, out
    assert kube is not None
    assert kube.enabled
    assert kube.namespace == "prober"
    assert kube.warmup_s == 12.5
    assert kube.dns_servers == ("kube-dns=172.20.0.10", "alt=10.0.0.2")
    assert kube.externals == ("a=a.example.com:443", "b=b.example.com:80/http")


def test_other_options_of_the_command_still_arrive() -> None:
    result = CliRunner().invoke(collector, ["--port", "9191", "--kubernetes"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("(9191, KubeOptions(enabled=True")


def test_help_teaches_every_flag() -> None:
    result = CliRunner().invoke(collector, ["--help"])
    for flag in (
        "--kubernetes",
        "--kubeconfig",
        "--kube-context",
        "--namespace",
        "--agent-selector",
        "--echo-selector",
        "--warmup",
        "--dns-server",
        "--dns-query",
        "--external",
    ):
        assert flag in result.output
    assert "prober.dev/network" in result.output


def test_negative_warmup_is_a_usage_error() -> None:
    code, kube, out = run(["--warmup", "-1"])
    assert code == 2
    assert kube is None
    assert "--warmup" in out


def test_bad_values_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--external"):
        kube_inventory(KubeOptions(enabled=True, externals=("nope",)), registry=CollectorRegistry())
    with pytest.raises(UsageError, match="cannot configure the Kubernetes client"):
        kube_inventory(
            KubeOptions(enabled=True, kubeconfig=str(tmp_path / "missing")), registry=CollectorRegistry()
        )
