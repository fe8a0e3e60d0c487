"""``prober sweep`` and ``prober diagnose`` as users run them: output shape and exit status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import msgspec
import pytest

from prober.collector.auth import Authenticator
from prober.commands.sweep import run_sweep
from prober.credentials import TokenFile
from prober.model import Outcome, ProbeResult, Report
from prober.pinglist import SweepOrder
from prober.records import encode_records
from tests.integration.collector_helpers import (
    FakeAgent,
    agent,
    closed_port,
    fake_agents,
    probe,
    running_collector,
    three_nodes,
)

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}


async def prober_async(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "prober",
        *args,
        env=ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def prober(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "prober", *args],
        env=ENV,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def mesh(now: float, *, failing_dst: str | None = None) -> list[ProbeResult]:
    """Three nodes probing each other; probes to ``failing_dst`` time out."""
    nodes = ("node-a", "node-b", "node-c")
    return [
        probe(s, d, Outcome.TIMEOUT if d == failing_dst else Outcome.OK, ts=now + i * 0.01)
        for i, (s, d) in enumerate((s, d) for s in nodes for d in nodes)
    ]


# -- prober sweep -------------------------------------------------------------------------


async def test_sweep_json_is_the_report_and_nothing_else(tmp_path: Path) -> None:
    def results(_: SweepOrder) -> list[ProbeResult]:
        return [r for r in mesh(time.time()) if r.src_node == "node-a"]

    fine = FakeAgent("agent-pod-a", results)
    inv = three_nodes([agent("agent-pod-a", "node-a", 1), agent("agent-pod-b", "node-b", 1)])
    async with running_collector(tmp_path, inv, sweep_min_gap_s=0.0) as (_, url), fake_agents(url, [fine]):
        code, out, err = await prober_async("sweep", "--json", "--collector", url, "--timeout", "2")
        assert code == 0, err
        doc = json.loads(out)
        assert set(doc) == {"matrix", "findings"}
        report = msgspec.json.decode(out, type=Report)
        assert report.findings == []
        assert [(c.src, c.dst) for c in report.matrix.paths[0].cells] == [
            ("node-a", "node-a"), ("node-a", "node-b"), ("node-a", "node-c"),
        ]  # fmt: skip
        assert "agent agent-pod-b on node-b did not sweep: did not fetch its pinglist within 2 s" in err

        code, out, err = await prober_async("sweep", "--collector", url, "--timeout", "2")
        assert code == 0, err
        assert "pod-to-pod" in out
        assert "1 of 2 agents, 3 probes" in out
        assert "No findings" in out


async def test_sweep_waits_out_the_minimum_gap_and_says_when_the_deadline_was_lowered(tmp_path: Path) -> None:
    fine = FakeAgent("agent-pod-a", lambda _: [r for r in mesh(time.time()) if r.src_node == "node-a"])
    inv = three_nodes([agent("agent-pod-a", "node-a", 1)])
    said: list[tuple[int, float | None]] = []

    def on_wait(seconds: int, *, lowered_to: float | None = None) -> None:
        said.append((seconds, lowered_to))

    async with (
        running_collector(tmp_path, inv, sweep_min_gap_s=1.0, sweep_deadline_max_s=3.0) as (_, url),
        fake_agents(url, [fine]),
    ):
        first = await run_sweep(url, deadline_s=60, on_progress=lambda _: None, on_wait=on_wait)
        second = await run_sweep(url, deadline_s=2, on_progress=lambda _: None, on_wait=on_wait)
    assert (first.deadline_s, second.deadline_s) == (3.0, 2.0)
    assert said == [(0, 3.0), (1, None)]  # lowered to 3 s; then waited the gap out (1 s)
    assert first.id != second.id
    assert second.probes == 3


async def test_sweep_presents_the_operator_token(tmp_path: Path) -> None:
    def results(_: SweepOrder) -> list[ProbeResult]:
        return [r for r in mesh(time.time()) if r.src_node == "node-a"]

    (tmp_path / "token").write_text("operator-51f0c2\n")
    auth = Authenticator(token_file=TokenFile(tmp_path / "token"))
    # a static inventory's agents present the same token file
    fine = FakeAgent("agent-pod-a", results, headers={"Authorization": "Bearer operator-51f0c2"})
    inv = three_nodes([agent("agent-pod-a", "node-a", 1)])
    async with (
        running_collector(tmp_path, inv, auth=auth, sweep_min_gap_s=0.0) as (_, url),
        fake_agents(url, [fine]),
    ):
        code, out, err = await prober_async("sweep", "--json", "--collector", url)
        assert (code, out) == (2, "")
        assert "answered 401: a credential is required" in err
        code, out, err = await prober_async("sweep", "--json", "--collector", url, "--token-file",
                                            str(tmp_path / "token"), "--timeout", "5")  # fmt: skip
        assert code == 0, err
        assert msgspec.json.decode(out, type=Report).findings == []


async def test_sweep_with_no_results_is_an_error(tmp_path: Path) -> None:
    inv = three_nodes([agent("agent-pod-a", "node-a", closed_port())])
    async with running_collector(tmp_path, inv) as (_, url):
        code, out, err = await prober_async("sweep", "--json", "--collector", url, "--timeout", "1")
        assert code == 2
        assert out == ""
        assert "the sweep got no results: 1 of 1 agents failed" in err


async def test_sweep_against_no_collector_says_where_and_what_to_check() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code, out, err = await prober_async("sweep", "--json", "--collector", url)
    assert code == 2
    assert out == ""
    [line] = err.strip().splitlines()
    assert url in line
    assert "connection refused" in line
    assert "PROBER_COLLECTOR_URL" in line


# -- prober diagnose ----------------------------------------------------------------------


def test_diagnose_json_shape_and_clean_exit(tmp_path: Path) -> None:
    f = tmp_path / "results.jsonl"
    f.write_bytes(encode_records(mesh(1000.0)))
    code, out, err = prober("diagnose", str(f), "--json")
    assert code == 0, err
    assert set(json.loads(out)) == {"matrix", "findings"}
    report = msgspec.json.decode(out, type=Report)
    assert report.matrix.nodes == ["node-a", "node-b", "node-c"]
    assert report.matrix.paths[0].sent == 9
    assert err == ""


def test_diagnose_reads_stdin_and_renders(tmp_path: Path) -> None:
    code, out, err = prober("diagnose", "-", stdin=encode_records(mesh(1000.0, failing_dst="node-c")))
    assert code == 0, err
    assert "pod-to-pod" in out
    assert "9 probes, 66.6 % ok" in out
    assert "No findings" in out


def test_diagnose_window_keeps_the_end_of_the_recording(tmp_path: Path) -> None:
    f = tmp_path / "results.jsonl"
    f.write_bytes(encode_records([*mesh(1000.0, failing_dst="node-c"), *mesh(2000.0)]))
    code, out, _ = prober("diagnose", str(f), "--json", "--window", "60")
    assert code == 0
    pm = msgspec.json.decode(out, type=Report).matrix.paths[0]
    assert (pm.sent, pm.ok) == (9, 9)


def test_diagnose_bad_line_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "results.jsonl"
    lines = encode_records(mesh(1000.0)).splitlines()
    lines.insert(3, b'{"ts": 1000.0, "path": "pod-to-pod"}')
    f.write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = prober("diagnose", str(f), "--json")
    assert code == 2
    assert out == ""
    [line] = err.strip().splitlines()
    assert line.startswith(f"prober: error: {f}:4: ")
    assert "missing required field" in line


def test_diagnose_missing_or_empty_file_is_an_error(tmp_path: Path) -> None:
    code, _, err = prober("diagnose", str(tmp_path / "nope.jsonl"))
    assert code == 2
    assert "cannot read" in err
    (tmp_path / "empty.jsonl").write_bytes(b"\n")
    code, _, err = prober("diagnose", str(tmp_path / "empty.jsonl"))
    assert code == 2
    assert "no probe results" in err


def test_diagnose_a_record_stamped_ahead_never_moves_the_window(tmp_path: Path) -> None:
    # node-c's last record is stamped an hour ahead (its clock jumped): the window stays
    # on the mesh's time, the record is left out and the warning says so.
    records = mesh(1000.0, failing_dst="node-c")
    records[-1] = msgspec.structs.replace(records[-1], ts=4600.0)
    f = tmp_path / "results.jsonl"
    f.write_bytes(encode_records(records))
    code, out, err = prober("diagnose", str(f), "--json", "--window", "60")
    pm = msgspec.json.decode(out, type=Report).matrix.paths[0]
    assert (pm.sent, pm.ok) == (8, 6)
    assert "warning: left out 1 results stamped more than 20 s after the recording's end" in err
    assert "from node-c" in err
    assert code in (0, 1)


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_diagnose_that_cannot_write_its_report_fails(tmp_path: Path, as_json: bool) -> None:
    f = tmp_path / "results.jsonl"
    f.write_bytes(encode_records(mesh(1000.0)))
    with Path("/dev/full").open("wb") as full:  # every write: ENOSPC
        done = subprocess.run(
            [sys.executable, "-m", "prober", "diagnose", str(f), *(["--json"] if as_json else [])],
            env=ENV, stdout=full, stderr=subprocess.PIPE, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 2
    assert "cannot write the report to standard output: No space left on device" in done.stderr.decode()


def unreachable_node_c() -> list[ProbeResult]:
    """Five nodes, 30 rounds of pod and host peer probes; nothing reaches node-c."""
    nodes = [f"node-{c}" for c in "abcde"]
    out: list[ProbeResult] = []
    t = 1000.0
    for _ in range(30):
        for s in nodes:
            for d in nodes:
                if s == d:
                    continue
                for kind in ("pod", "host"):
                    t += 0.01
                    r = probe(
                        s, d, Outcome.TIMEOUT if d == "node-c" else Outcome.OK, ts=t, path=f"{kind}-to-{kind}"
                    )
                    out.append(msgspec.structs.replace(r, target=f"{kind}/{d}"))
    return out


def test_diagnose_names_the_unreachable_node_and_exits_1(tmp_path: Path) -> None:
    f = tmp_path / "results.jsonl"
    f.write_bytes(encode_records(unreachable_node_c()))
    code, out, err = prober("diagnose", str(f), "--json")
    assert code == 1, err
    report = msgspec.json.decode(out, type=Report)
    assert [(x.kind, x.nodes) for x in report.findings] == [("node-unreachable", ["node-c"])]
    code_text, text, _ = prober("diagnose", str(f))
    assert code_text == 1
    assert "Findings (1)" in text
    assert "node-unreachable" in text
    assert "No findings" not in text


# -- prober collector ---------------------------------------------------------------------


async def test_collector_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    inv = tmp_path / "inventory.yaml"
    inv.write_text("nodes:\n  - {name: node-a, address: 127.0.0.1}\n")
    port = closed_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "prober", "collector", "--inventory", str(inv),
        "--listen", "127.0.0.1", "--port", str(port),
        env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession() as s:
            while True:
                try:
                    async with s.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.1)
            async with s.get(f"http://127.0.0.1:{port}/api/v1/report") as resp:
                assert msgspec.json.decode(await resp.read(), type=Report).matrix.nodes == ["node-a"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert "collector serving on http://127.0.0.1:" in err.decode()


def test_collector_command_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "inventory.yaml"
    bad.write_text("nodes: [{name: node-a}]\n")
    code, _, err = prober("collector", "--inventory", str(bad), "--port", str(closed_port()))
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"prober: error: {bad}: ")
    assert "address" in line
    code, _, err = prober("collector", "--inventory", str(bad), "--window", "2000")
    assert code == 2
    assert "--window (2000 s) cannot be longer than --retention (900 s)" in err
    code, _, err = prober("collector")
    assert code == 2
    assert "no inventory: pass --inventory FILE" in err
