"""The collector's web matrix in headless Chromium, against a running collector fed known results.

The collector runs as ``prober collector`` with a three-node inventory and no agents;
the test posts one JSONL batch in which every pod-to-pod pair succeeds except
node-b → node-c, which always times out. The page must draw a 3 x 3 grid, colour
that one cell red (checked on the computed style) and the others green, show counts
and latency on hover, and list the pair-blocked finding the collector reports, with
its evidence and fix. A screenshot is
kept with the test's files; with ``PROBER_UPDATE_SCREENSHOT=1`` it also replaces
``docs/web-matrix.png``.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import time
from pathlib import Path

import aiohttp
import pytest

from prober.model import Outcome, ProbeResult, Proto, SrcKind
from prober.records import encode_records
from tests.integration.mesh import mesh_nodes, partition_probes, running_mesh
from tests.integration.waits import STARTED_S

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

playwright = pytest.importorskip("playwright.async_api", reason="playwright (Python) not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (Debian 'chromium')"),
]

RED = "rgb(198, 40, 40)"
GREEN = "rgb(46, 125, 50)"
FAILING = ("node-b", "node-c")


def batch(nodes: list[str], *, now: float, per_pair: int = 30) -> bytes:
    records = []
    for src in nodes:
        for dst in nodes:
            for i in range(per_pair):
                failed = (src, dst) == FAILING
                records.append(
                    ProbeResult(
                        ts=now - 8 + i * 0.25, path="pod-to-pod", src_node=src, src_kind=SrcKind.POD,
                        target=f"pod/{dst}", proto=Proto.HTTP, dst_node=dst, dst_kind=SrcKind.POD,
                        outcome=Outcome.TIMEOUT if failed else Outcome.OK,
                        latency_s=None if failed else 0.001 + 0.0001 * i,
                    )
                )  # fmt: skip
    return encode_records(records)


async def test_web_matrix_shows_the_failing_pair_in_red(tmp_path: Path) -> None:
    nodes = mesh_nodes(["zone-1", "zone-1", "zone-2"])
    names = [n.name for n in nodes]
    with running_mesh(tmp_path / "mesh", nodes, agents=False, window_s=60) as mesh:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            body = batch(names, now=time.time())
            async with http.post(f"{mesh.collector_url}/api/v1/results", data=body) as resp:
                reply = await resp.json()
                assert reply["rejected"] == 0, reply
            # The collector recomputes a window every few seconds: wait until its matrix
            # holds the whole batch (findings come from the same computation).
            expected = len(body.splitlines())
            deadline = time.monotonic() + STARTED_S
            while True:
                async with http.get(f"{mesh.collector_url}/api/v1/report") as resp:
                    report = await resp.json()
                if sum(p["sent"] for p in report["matrix"]["paths"]) == expected:
                    break
                assert time.monotonic() < deadline, f"the collector never showed all {expected} results"
                await asyncio.sleep(0.5)
            findings: list[dict[str, object]] = report["findings"]
            assert [f["kind"] for f in findings] == ["pair-blocked"], findings
            assert findings[0]["pairs"] == [list(FAILING)]
            async with http.get(f"{mesh.collector_url}/") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
                assert "default-src 'none'" in resp.headers["Content-Security-Policy"]

        async with playwright.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 640})
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                requested: list[str] = []
                page.on("request", lambda r: requested.append(r.url))
                await page.goto(f"{mesh.collector_url}/")
                await page.wait_for_selector("body[data-loaded]", timeout=15_000)
                await page.click('#paths button[data-path="pod-to-pod"]')

                cells = page.locator("#grid .cell")
                assert await cells.count() == len(names) ** 2
                colours = await cells.evaluate_all(
                    "els => els.map(e => [e.dataset.src, e.dataset.dst, getComputedStyle(e).backgroundColor])"
                )
                by_pair = {(s, d): c for s, d, c in colours}
                assert by_pair.pop(FAILING) == RED
                assert set(by_pair.values()) == {GREEN}

                await page.hover(f'#grid .cell[data-src="{FAILING[0]}"][data-dst="{FAILING[1]}"]')
                tip = await page.locator("#tooltip").inner_text()
                assert "node-b → node-c" in tip
                assert "0 / 30 ok" in tip
                assert "timeout 30" in tip
                await page.hover('#grid .cell[data-src="node-a"][data-dst="node-b"]')
                assert "30 / 30 ok" in await page.locator("#tooltip").inner_text()

                listed = page.locator('#findings li[data-kind="pair-blocked"]')
                await listed.wait_for(timeout=15_000)  # the page polls every 5 s
                text = await listed.inner_text()
                assert "node-b -> node-c: 30/30 failed" in text
                assert str(findings[0]["remediation"]) in text
                # clicking the finding outlines its pair in the grid
                await listed.click()
                outlined = await page.locator("#grid .cell.highlight").evaluate_all(
                    "els => els.map(e => [e.dataset.src, e.dataset.dst])"
                )
                assert outlined == [list(FAILING)]

                # the screenshot shows the failing cell's tooltip
                await page.hover(f'#grid .cell[data-src="{FAILING[0]}"][data-dst="{FAILING[1]}"]')
                shot = tmp_path / "web-matrix.png"
                await page.screenshot(path=str(shot))
                if os.environ.get("PROBER_UPDATE_SCREENSHOT") == "1":
                    shutil.copyfile(shot, ROOT / "docs/web-matrix.png")

                # the failing view: the one failing row and column; a row's label opens that node
                await page.select_option("#view", "failing")
                # (expect polls with locators: the page's CSP forbids the eval wait_for_function needs)
                await playwright.expect(page.locator("#grid .cell")).to_have_count(1, timeout=15_000)
                only = await page.locator("#grid .cell").evaluate_all(
                    "els => els.map(e => [e.dataset.src, e.dataset.dst])"
                )
                assert only == [list(FAILING)]
                assert "2 sources and 2 targets not shown" in await page.locator("#summary").inner_text()
                await page.click(f'#grid .row[data-node="{FAILING[0]}"]')
                # node-b's row and column: 5 of the 3 x 3 cells have probes, the other 4 are empty
                await playwright.expect(page.locator("#grid .cell.empty")).to_have_count(4, timeout=15_000)
                assert await page.locator("#view").input_value() == "node"
                assert f"node={FAILING[0]}" in page.url

                assert not errors, errors
                assert all(u.startswith(mesh.collector_url) for u in requested), requested
            finally:
                await browser.close()


async def test_large_matrix_is_drawn_on_a_canvas(tmp_path: Path) -> None:
    # 210 nodes: 44,100 cells, past what the page draws as elements.
    nodes = mesh_nodes(["zone-1"] * 210)
    names = [n.name for n in nodes]
    failing = (names[1], names[2])
    now = time.time()
    records = [
        ProbeResult(
            ts=now - 5, path="pod-to-pod", src_node=src, src_kind=SrcKind.POD, target=f"pod/{dst}",
            proto=Proto.HTTP, dst_node=dst, dst_kind=SrcKind.POD,
            outcome=Outcome.TIMEOUT if (src, dst) == failing else Outcome.OK,
            latency_s=None if (src, dst) == failing else 0.001,
        )
        for src in names
        for dst in names
    ]  # fmt: skip
    with running_mesh(tmp_path / "mesh", nodes, agents=False, window_s=60) as mesh:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for i in range(0, len(records), 4000):  # batches under the 2 MiB body limit
                batch = records[i : i + 4000]
                async with http.post(
                    f"{mesh.collector_url}/api/v1/results", data=io.BytesIO(encode_records(batch))
                ) as resp:
                    assert (await resp.json())["accepted"] == len(batch)
        async with playwright.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1600, "height": 1000})
                await page.goto(f"{mesh.collector_url}/#path=pod-to-pod&view=full")  # auto: failing above 100
                canvas = page.locator("#grid canvas")
                await canvas.wait_for(timeout=30_000)
                assert await page.locator("#grid .cell").count() == 0
                rows = int(await canvas.get_attribute("data-rows") or 0)
                cols = int(await canvas.get_attribute("data-cols") or 0)
                size = int(await canvas.get_attribute("data-size") or 0)
                assert (rows, cols) == (len(names), len(names))
                x, y = names.index(failing[1]) * size, names.index(failing[0]) * size
                pixel = await canvas.evaluate(
                    "(c, [x, y]) => Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data)", [x, y]
                )
                assert pixel == [198, 40, 40, 255]
                pixel = await canvas.evaluate(
                    "(c, [x, y]) => Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data)",
                    [x + size, y],
                )
                assert pixel == [46, 125, 50, 255]
                await canvas.hover(position={"x": x + size / 2, "y": y + size / 2})
                tip = await page.locator("#tooltip").inner_text()
                assert f"{failing[0]} → {failing[1]}" in tip
                assert "0 / 1 ok" in tip
            finally:
                await browser.close()


async def test_a_zone_partition_stands_out_in_the_zone_view(tmp_path: Path) -> None:
    # Three zones of two nodes; every pod-to-pod probe between zone-1 and zone-2 times out,
    # everything else succeeds. The collector names one zone-partition, so `auto` gives the
    # zone view: a 3 x 3 grid whose two cells between zone-1 and zone-2 are red, outlined
    # and carry the finding; the rest green.
    nodes = mesh_nodes(["zone-1", "zone-1", "zone-2", "zone-2", "zone-3", "zone-3"])
    cut = {("zone-1", "zone-2"), ("zone-2", "zone-1")}
    now = time.time()
    records = partition_probes(nodes, cut, start=now - 8, step_s=0.25, count=20)
    with running_mesh(tmp_path / "mesh", nodes, agents=False, window_s=60) as mesh:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            body = encode_records(records)
            async with http.post(f"{mesh.collector_url}/api/v1/results", data=body) as resp:
                assert (await resp.json())["rejected"] == 0
            deadline = time.monotonic() + STARTED_S
            while True:
                async with http.get(f"{mesh.collector_url}/api/v1/report") as resp:
                    report = await resp.json()
                if sum(p["sent"] for p in report["matrix"]["paths"]) == len(records):
                    break
                assert time.monotonic() < deadline, "the collector never showed all the results"
                await asyncio.sleep(0.5)
            assert [(f["kind"], f["zones"]) for f in report["findings"]] == [
                ("zone-partition", ["zone-1", "zone-2"])
            ]
            async with http.get(f"{mesh.collector_url}/api/v1/matrix") as resp:
                assert (await resp.json())["view"] == "zones"  # auto, with a zone finding

        async with playwright.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 640})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(f"{mesh.collector_url}/#path=pod-to-pod")
                await page.wait_for_selector("body[data-loaded]", timeout=15_000)
                assert await page.locator("#view").input_value() == "auto"
                cells = page.locator("#grid .cell.zone")
                await playwright.expect(cells).to_have_count(9, timeout=15_000)
                # the findings arrive with the matrix: the partition's cells are marked
                marked = page.locator('#grid .cell.zone-finding[data-finding="zone-partition"]')
                await playwright.expect(marked).to_have_count(2, timeout=15_000)
                seen = await cells.evaluate_all(
                    "els => els.map(e => [e.dataset.src, e.dataset.dst, getComputedStyle(e).backgroundColor,"
                    " e.classList.contains('zone-finding'), e.textContent])"
                )
                by_pair = {(s, d): (c, f, t) for s, d, c, f, t in seen}
                for pair in cut:
                    colour, flagged, text = by_pair.pop(pair)
                    assert (colour, flagged) == (RED, True)
                    assert text == "0.0 %zone-partition"
                assert {(c, f) for c, f, _ in by_pair.values()} == {(GREEN, False)}
                assert {t for _, _, t in by_pair.values()} == {"100.0 %"}
                assert "source zone" in await page.locator("#axes").inner_text()

                await page.hover('#grid .cell[data-src="zone-1"][data-dst="zone-2"] .ratio')
                tip = await page.locator("#tooltip").inner_text()
                assert "zone-1 → zone-2" in tip
                assert "0 / 80 ok" in tip  # 2 x 2 node pairs, 20 probes each
                assert "finding: zone-partition" in tip
                listed = page.locator('#findings li[data-kind="zone-partition"]')
                assert "zones zone-1 \u2194 zone-2" in await listed.inner_text()
                # rows are zones here: clicking one does not open a node's view
                await page.click('#grid .row[data-node="zone-1"]')
                assert await page.locator("#view").input_value() == "auto"
                assert not errors, errors
            finally:
                await browser.close()
