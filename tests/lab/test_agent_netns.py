"""Probe outcomes that need a packet filter: a blackhole, ICMP unreachables, a lost SYN.

Each test builds its own network namespace (``pagt-...``, only its own ``lo``), adds
iptables rules there and runs the probe inside it, so no packet ever leaves it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from prober.model import Outcome, ProbeResult
from prober.records import decode_record

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]


def _have_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces and iptables rules"
    for tool in ("ip", "iptables"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            return f"needs {tool}"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    reason = _have_netns()
    if reason:
        pytest.skip(reason)
    name = f"pagt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def iptables(ns: str, *rule: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "iptables", "-w", *rule], check=True)


def probe_in(ns: str, proto: str, port: int, timeout_s: float, *extra: str) -> ProbeResult:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.lab.agent_probe_main",
         proto, "127.0.0.1", str(port), str(timeout_s), *extra],
        capture_output=True, check=True, env=env, cwd=ROOT, timeout=30,
    )  # fmt: skip
    return decode_record(out.stdout.strip())


@pytest.mark.parametrize("proto", ["tcp", "http", "udp", "dns"])
def test_blackhole_is_timeout(netns: str, proto: str) -> None:
    iptables(
        netns, "-A", "INPUT", "-p", "tcp" if proto in ("tcp", "http") else "udp", "--dport", "9", "-j", "DROP"
    )
    r = probe_in(netns, proto, 9, 0.5)
    assert r.outcome is Outcome.TIMEOUT
    assert r.latency_s is None
    assert r.src_port  # the source port of the lost SYN or datagram is on record


@pytest.mark.parametrize(
    ("proto", "reject_with"),
    [
        pytest.param("tcp", "icmp-host-unreachable", id="tcp-host"),
        pytest.param("tcp", "icmp-net-unreachable", id="tcp-net"),
        pytest.param("http", "icmp-admin-prohibited", id="http-admin"),
        pytest.param("udp", "icmp-host-unreachable", id="udp-host"),
    ],
)
def test_icmp_unreachable_is_unreachable(netns: str, proto: str, reject_with: str) -> None:
    l4 = "udp" if proto == "udp" else "tcp"
    iptables(netns, "-A", "OUTPUT", "-p", l4, "--dport", "9", "-j", "REJECT", "--reject-with", reject_with)
    assert probe_in(netns, proto, 9, 2.0).outcome is Outcome.UNREACHABLE


def test_tcp_reset_to_syn_is_refused(netns: str) -> None:
    iptables(netns, "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "REJECT", "--reject-with", "tcp-reset")
    assert probe_in(netns, "tcp", 9, 2.0).outcome is Outcome.REFUSED


def test_a_lost_syn_is_a_latency_not_a_failure(netns: str) -> None:
    """Drop the first SYN only: the retransmit 1 s later succeeds within the 5 s default timeout."""
    iptables(netns, "-A", "INPUT", "-p", "tcp", "--syn", "--dport", "9", "-m", "statistic",
             "--mode", "nth", "--every", "1000", "--packet", "0", "-j", "DROP")  # fmt: skip
    r = probe_in(netns, "tcp", 9, 5.0, "--listen")
    assert r.outcome is Outcome.OK
    assert r.latency_s is not None
    assert r.latency_s > 0.9  # the 0.9-1.1 s histogram bucket: one retransmit
