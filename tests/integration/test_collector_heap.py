"""The collector's process: its heap (glibc): with :func:`tune_heap`, a column larger than
glibc's largest mmap threshold comes from the heap, whose freed pages the next column
reuses; without it, from a mapping of its own; and its interpreter's switch interval. Each
case in a process of its own: the tuning is for the whole process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import sys
import numpy as np
from prober.collector.service import tune_heap
if sys.argv[1] == "tuned":
    assert tune_heap()
column = np.ones(64 * 2**20 // 8)  # 64 MiB, twice glibc's largest mmap threshold
at = column.ctypes.data
for line in open("/proc/self/maps"):
    span, *_, name = line.split()
    lo, hi = (int(x, 16) for x in span.split("-"))
    if lo <= at < hi:
        print("heap" if name == "[heap]" else "mapping")
        break
"""

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's malloc on Linux only",
)


def where(mode: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_a_large_column_comes_from_the_heap_once_it_is_tuned() -> None:
    assert where("tuned") == "heap"


def test_without_the_tuning_a_large_column_is_a_mapping_of_its_own() -> None:
    assert where("default") == "mapping"


COMMAND = """
import sys
from click.testing import CliRunner
import prober.commands.collector as command

async def report(settings, kube):
    print("switch interval", sys.getswitchinterval())

command.run_collector = report
print("default", sys.getswitchinterval())
result = CliRunner().invoke(command.collector, ["--inventory", sys.argv[1]], catch_exceptions=False)
print(result.output, end="")
assert result.exit_code == 0, result.output
"""


def test_the_collector_command_hands_the_interpreter_to_waiting_threads_sooner() -> None:
    """`prober collector` lowers the interpreter's switch interval before it starts: its
    event loop waits for a pass's thread at most half a millisecond after each poll, not
    Python's 5 ms (bench/collector_scale.py measures what that does to the posts)."""
    from prober.collector.service import SWITCH_INTERVAL_S

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    inventory = str(ROOT / "examples" / "loopback-inventory.yaml")
    done = subprocess.run(
        [sys.executable, "-c", COMMAND, inventory],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.splitlines() == ["default 0.005", f"switch interval {SWITCH_INTERVAL_S}"]
