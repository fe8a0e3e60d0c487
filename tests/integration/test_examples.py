"""The README's local mesh, run exactly as a user runs it: ``examples/loopback-mesh.sh --sweep``."""

from __future__ import annotations

import os
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


@pytest.mark.slow
def test_loopback_mesh_script_sweeps_a_healthy_mesh_and_stops_everything() -> None:
    env = {
        **os.environ,
        "PROBER": f"{sys.executable} -m prober",
        "PYTHONPATH": str(ROOT),
        "PROBER_PORT": str(free_port()),
    }
    done = subprocess.run(
        [str(ROOT / "examples" / "loopback-mesh.sh"), "--sweep"],
        env=env, capture_output=True, timeout=120, check=False, start_new_session=True,
    )  # fmt: skip
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err
    assert "6 of 6 agents ready" in err
    for path in ("pod-to-pod", "pod-to-host", "host-to-pod", "host-to-host"):
        assert f"{path} " in out
        assert "100 % ok" in out.split(f"{path} ", 1)[1].splitlines()[0]
    assert "No findings" in out
    # Nothing it started is left running.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, check=True).stdout.decode()
    assert f"--port {env['PROBER_PORT']}" not in ps
    assert "--listen 127.0.11.1 " not in ps
