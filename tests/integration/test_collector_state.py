"""A restarted collector keeps its windows: the snapshot in ``--state-dir``, on a real collector.

A ``kill -9`` is the state the last periodic snapshot left: the test copies the snapshot
file while the first collector runs (nothing written at exit), and starts a second
collector on the copy.
"""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import time
from pathlib import Path

import aiohttp
import pytest

from prober.records import encode_records
from tests.integration.collector_helpers import running_collector
from tests.synth import Cluster, Fault, generate

C5 = Cluster(n_nodes=5)
UNREACHABLE = Fault(kind="node-unreachable", nodes=(C5.nodes[2],))
EXPECTED = [("node-unreachable", [C5.nodes[2]])]


async def findings(s: aiohttp.ClientSession, url: str) -> list[tuple[str, list[str]]]:
    async with s.get(f"{url}/api/v1/findings") as resp:
        return [(f["kind"], f["nodes"]) for f in (await resp.json())["findings"]]


async def test_a_collector_killed_and_restarted_keeps_its_windows(tmp_path: Path) -> None:
    records = generate(C5, rounds=6, faults=[UNREACHABLE], seed=2, start_ts=time.time() - 60.0)
    state, crashed = tmp_path / "state", tmp_path / "crashed"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        running_collector(tmp_path / "a", C5.inventory(), state_dir=str(state), state_every_s=0.2) as (
            first,
            url,
        ),
        aiohttp.ClientSession() as s,
    ):
        for i in range(0, len(records), 3000):
            body = io.BytesIO(encode_records(records[i : i + 3000]))
            async with s.post(f"{url}/api/v1/results", data=body) as resp:
                assert resp.status == 200
        posted = time.time()
        for _ in range(100):  # a periodic snapshot after the last post (every 0.2 s here)
            if (first.registry.get_sample_value("prober_state_saved_timestamp_seconds") or 0) > posted:
                break
            await asyncio.sleep(0.05)
        shutil.copytree(state, crashed)  # what a kill -9 now would leave
    async with (
        running_collector(tmp_path / "b", C5.inventory(), state_dir=str(crashed)) as (_, url),
        aiohttp.ClientSession() as s,
    ):
        for _ in range(50):
            if await findings(s, url) == EXPECTED:
                break
            await asyncio.sleep(0.1)
        assert await findings(s, url) == EXPECTED


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"prober-store\n\x00garbage", id="corrupt"),
        pytest.param(b"{}", id="foreign"),
    ],
)
async def test_a_corrupt_or_foreign_snapshot_is_reported_and_ignored(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "windows.snapshot").write_bytes(content)
    caplog.set_level(logging.WARNING, logger="prober.collector.service")
    async with (
        running_collector(tmp_path, C5.inventory(), state_dir=str(tmp_path / "state")) as (_, url),
        aiohttp.ClientSession() as s,
    ):
        assert await findings(s, url) == []
        async with s.get(f"{url}/readyz") as resp:
            assert resp.status == 200
    assert any("state snapshot" in r.message and "ignored" in r.message for r in caplog.records)
    # and the collector's own snapshot replaced it at exit
    assert (tmp_path / "state" / "windows.snapshot").read_bytes().startswith(b"prober-store\n")
