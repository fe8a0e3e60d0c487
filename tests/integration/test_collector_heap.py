"""The collector's heap (glibc): with :func:`tune_heap`, a column larger than glibc's
largest mmap threshold comes from the heap, whose freed pages the next column reuses;
without it, from a mapping of its own. Each case in a process of its own: the tuning is
for the whole process."""

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
