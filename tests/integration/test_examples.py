"""The README's local mesh, run exactly as a user runs it: ``examples/loopback-mesh.sh --sweep``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def free_agent_port() -> int:
    """A TCP port free on all six agent addresses, with the UDP port after it free too."""
    while True:
        port = free_port()
        try:
            for net in (10, 11):
                for i in (1, 2, 3):
                    for kind, p in ((socket.SOCK_STREAM, port), (socket.SOCK_DGRAM, port + 1)):
                        with socket.socket(socket.AF_INET, kind) as s:
                            s.bind((f"127.0.{net}.{i}", p))
        except OSError:
            continue
        return port


@pytest.mark.slow
def test_loopback_mesh_script_sweeps_a_healthy_mesh_and_stops_everything() -> None:
    env = {
        **os.environ,
        "PROBER": f"{sys.executable} -m prober",
        "PYTHONPATH": str(ROOT),
        "PROBER_PORT": str(free_port()),
        # its own ports: the same test running elsewhere on this machine is left alone
        "PROBER_AGENT_PORT": str(free_agent_port()),
    }
    script = subprocess.Popen(
        [str(ROOT / "examples" / "loopback-mesh.sh"), "--sweep"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = script.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(script.pid, signal.SIGTERM)  # the script stops what it started
        stdout, stderr = script.communicate(timeout=30)
    out, err = stdout.decode(), stderr.decode()
    assert script.returncode == 0, err
    assert "6 of 6 agents ready" in err
    for path in ("pod-to-pod", "pod-to-host", "host-to-pod", "host-to-host"):
        assert f"{path} " in out
        assert "100 % ok" in out.split(f"{path} ", 1)[1].splitlines()[0]
    assert "No findings" in out
    # Nothing it started is left running.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, check=True).stdout.decode()
    assert f"--port {env['PROBER_PORT']}" not in ps
    assert f"--http-port {env['PROBER_AGENT_PORT']} " not in ps
