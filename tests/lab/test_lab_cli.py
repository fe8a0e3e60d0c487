"""``prober lab`` as a user runs it: up, status, fault on/off, check, down, run; and its errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prober_lab import netns, runtime
from tests.lab.conftest import CLI2_PREFIX, CLI_PREFIX, lab_processes

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]


def prober(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(runtime.LAB_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "prober", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def test_up_status_fault_check_down(no_leftovers: None) -> None:
    p = ["--prefix", CLI_PREFIX]
    up = prober("lab", "up", "--no-agents", "--nodes", "2", "--fault", "pair-blocked@a,b", *p)
    assert up.returncode == 0, up.stderr
    assert "namespaces" in up.stderr
    try:
        status = prober("lab", "status", "--json", *p)
        state = json.loads(status.stdout)
        assert state["faults"] == ["pair-blocked@node-a,node-b"]
        assert state["cni"] == "bridge"
        checked = prober("lab", "check", "--count", "3", *p)
        assert checked.returncode == 0, checked.stderr
        row_a = next(line for line in checked.stdout.splitlines() if line.startswith("node-a pod"))
        assert row_a.split()[2:4] == ["100%", "0%"]  # pod/node-a, pod/node-b
        off = prober("lab", "fault", "off", "pair-blocked", *p)
        assert off.returncode == 0, off.stderr
        assert "faults on: none" in off.stderr
        wrong = prober("lab", "fault", "on", "snat-asymmetric@node-b", *p)
        assert wrong.returncode == 2
        assert "needs a vpc CNI lab" in wrong.stderr
        assert "Traceback" not in wrong.stderr
        again = prober("lab", "up", "--no-agents", *p)
        assert again.returncode == 2
        assert "already exists" in again.stderr
    finally:
        down = prober("lab", "down", *p)
    assert down.returncode == 0
    assert netns.namespaces_with_prefix(CLI_PREFIX) == []
    assert lab_processes(CLI_PREFIX) == []
    assert prober("lab", "down", *p).returncode == 0  # idempotent
    assert prober("lab", "status", *p).returncode == 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(["--fault", "bridge-netfilter@node-b", "--fault", "snat-asymmetric@node-b"],
                     "cannot share one lab", id="two-cnis"),
        pytest.param(["--cni", "vpc", "--fault", "bridge-netfilter@node-b"], "needs --cni bridge",
                     id="cni-clash"),
        pytest.param(["--fault", "node-isolated@node-q"], "no node 'node-q'", id="unknown-node"),
        pytest.param(["--fault", "packet-loss@b"], "loss rate", id="no-rate"),
    ],
)  # fmt: skip
def test_run_refuses_what_it_cannot_build(args: list[str], fragment: str, no_leftovers: None) -> None:
    r = prober("lab", "run", "--duration", "5", "--prefix", CLI_PREFIX, *args)
    assert r.returncode == 2
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr
    assert netns.namespaces_with_prefix(CLI_PREFIX) == []


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop root")
def test_not_root_is_a_clear_error() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "prober",
         "lab", "up", "--no-agents", "--prefix", CLI_PREFIX],
        capture_output=True, text=True, env=env, cwd="/", timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "needs root" in r.stderr


def test_run_reports_the_fault_window_as_json_and_exits_1(no_leftovers: None) -> None:
    r = prober(
        "lab", "run", "--fault", "node-unreachable@b", "--duration", "12", "--json", "--prefix", CLI_PREFIX,
        timeout=180,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)  # stdout is the report and nothing else
    assert set(report) == {"matrix", "findings"}
    assert report["matrix"]["nodes"] == ["node-a", "node-b", "node-c"]
    assert 12 <= report["matrix"]["window_s"] < 13
    assert [(f["kind"], f["nodes"]) for f in report["findings"]] == [("node-unreachable", ["node-b"])]
    sent = sum(pm["sent"] for pm in report["matrix"]["paths"])
    assert sent > 1000
    assert "faults on: node-unreachable@node-b" in r.stderr
    assert "lab down:" in r.stderr
    assert netns.namespaces_with_prefix(CLI_PREFIX) == []
    assert lab_processes(CLI_PREFIX) == []


def test_run_renders_a_clean_lab_and_exits_0(no_leftovers: None) -> None:
    """A clean lab behind an externalTrafficPolicy: Cluster NodePort (the other runs use Local)."""
    r = prober(
        "lab", "run", "--nodes", "2", "--duration", "8", "--external-traffic-policy", "Cluster",
        "--prefix", CLI_PREFIX, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "prober lab run: 2 nodes, bridge CNI, no faults, externalTrafficPolicy Cluster" in r.stdout
    assert "externalTrafficPolicy Cluster" in r.stderr  # the network's progress line
    assert "pod-to-service" in r.stdout
    assert "No findings" in r.stdout
    assert netns.namespaces_with_prefix(CLI_PREFIX) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupting_run_tears_the_lab_down(sig: signal.Signals, no_leftovers: None) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(runtime.LAB_ENV, None)
    # Started as a shell's background job is (SIGINT ignored, inherited): it must still stop.
    argv = [sys.executable, "-m", "prober", "lab", "run", "--duration", "120", "--prefix", CLI2_PREFIX]
    proc = subprocess.Popen(
        ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *argv],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # wait until the lab is up and probing
            seen.append(line)
            if "ready in" in line:
                break
        assert netns.namespaces_with_prefix(CLI2_PREFIX), "".join(seen)
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "lab down:" in err
    assert "Traceback" not in err
    assert netns.namespaces_with_prefix(CLI2_PREFIX) == []
    assert lab_processes(CLI2_PREFIX) == []
    assert not runtime.state_dir(CLI2_PREFIX).exists()
