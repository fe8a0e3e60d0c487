"""``prober agent`` as users run it: a subprocess, flags, signals, exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prober.model import Outcome
from prober.records import read_records
from tests.integration.test_agent_reporter import free_port
from tests.integration.waits import STARTED_S

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def prober(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prober", *args], capture_output=True, text=True, env=ENV, cwd=ROOT,
        timeout=30, check=False,
    )  # fmt: skip


def test_help_teaches_with_examples() -> None:
    out = prober("agent", "--help")
    assert out.returncode == 0
    for fragment in ("--network", "PROBER_NODE_NAME", "--collector", "--inventory",
                     "prober agent --network pod", "GET only", "SIGTERM"):  # fmt: skip
        assert fragment in out.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(["--network", "pod"], "--node", id="missing-node"),
        pytest.param(["--network", "pod", "--node", "a", "--collector", "ftp://x"], "http(s)://", id="url"),
        pytest.param(["--network", "pod", "--node", "a", "--inventory", "/nonexistent/inv.yaml"],
                     "cannot read inventory /nonexistent/inv.yaml", id="unreadable-inventory"),
        pytest.param(["--network", "pod", "--node", "a", "--inventory", "examples/loopback-inventory.yaml"],
                     "agent 'pod-a' is not in the inventory", id="unknown-agent"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    out = prober("agent", *args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("prober: error:")
    assert fragment in lines[0]


@pytest.mark.slow
def test_two_standalone_agents_probe_each_other_and_stop_cleanly_on_sigterm(tmp_path: Path) -> None:
    ports = {n: (free_port(), free_port()) for n in ("a", "b")}
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        "nodes:\n"
        "  - {name: node-a, address: 127.0.0.2}\n"
        "  - {name: node-b, address: 127.0.0.3}\n"
        "agents:\n"
        f"  - {{name: host-node-a, node: node-a, kind: host, address: 127.0.0.2, http_port: {ports['a'][0]}, "
        f"udp_port: {ports['a'][1]}}}\n"
        f"  - {{name: host-node-b, node: node-b, kind: host, address: 127.0.0.3, http_port: {ports['b'][0]}, "
        f"udp_port: {ports['b'][1]}}}\n"
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for n, ip in (("a", "127.0.0.2"), ("b", "127.0.0.3")):
            procs[n] = subprocess.Popen(
                [sys.executable, "-m", "prober", "agent", "--network", "host", "--node", f"node-{n}",
                 "--inventory", str(inv), "--listen", ip, "--source-ip", ip, "--http-port", str(ports[n][0]),
                 "--udp-port", str(ports[n][1]), "--interval", "1", "--timeout", "1",
                 "--results-file", str(tmp_path / f"{n}.jsonl")],
                env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip

        def peers_ok() -> bool:
            for n, other in (("a", "node-b"), ("b", "node-a")):
                path = tmp_path / f"{n}.jsonl"
                if not path.exists() or not path.read_bytes().endswith(b"\n"):
                    return False
                if not any(r.dst_node == other and r.outcome is Outcome.OK for r in read_records(path)):
                    return False
            return True

        deadline = time.monotonic() + STARTED_S
        while not peers_ok():
            assert all(p.poll() is None for p in procs.values()), "an agent exited early"
            assert time.monotonic() < deadline, "agents did not probe each other"
            time.sleep(0.2)
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            assert p.wait(timeout=15) == 0
            assert p.stderr is not None
            assert b"shutdown: done" in p.stderr.read()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
            for stream in (p.stdout, p.stderr):
                if stream is not None:
                    stream.close()
    a = read_records(tmp_path / "a.jsonl")
    assert {r.src_ip for r in a} == {"127.0.0.2"}
    # What node-b's echo saw, in every answer (a probe sent before node-b listened, or
    # cut short by the stop, has no answer and no seen address).
    assert {r.seen_src_ip for r in a if r.dst_node == "node-b" and r.outcome is Outcome.OK} == {"127.0.0.2"}
