"""The set operations of prober.arrays: each is ``np.unique``, whatever the keys' order."""

from __future__ import annotations

import numpy as np
import pytest

from prober.arrays import IntArray, sorted_unique, stable_order, unique_inverse, unique_keys


@pytest.mark.parametrize(("size", "count"), [(100, 50), (10**6, 3_000), (10**6, 10), (7, 0)])
def test_unique_keys_equals_numpy_unique(size: int, count: int) -> None:
    """By the flag table (keys dense in their range) or by a sort (sparse): either way
    what ``np.unique`` gives."""
    keys = np.random.default_rng(size + count).integers(0, size, count)
    uniq, inv = unique_keys(keys, size)
    want, want_inv = np.unique(keys, return_inverse=True)
    assert np.array_equal(uniq, want)
    assert np.array_equal(inv, want_inv.reshape(-1))


def test_sorted_unique_equals_numpy_unique() -> None:
    rng = np.random.default_rng(3)
    for values in (rng.integers(0, 50, 200), rng.integers(0, 10**6, 5_000), np.zeros(0, dtype=np.int64)):
        assert np.array_equal(sorted_unique(values), np.unique(values))


def _keys(shape: str, rng: np.random.Generator) -> IntArray:
    if shape == "random":
        return rng.integers(0, 2**40, 20_000)
    if shape == "few":
        return rng.integers(0, 7, 20_000)
    if shape == "runs":  # a table's columns: sorted runs, each of one target's rows
        return np.concatenate([np.sort(rng.integers(0, 10**6, rng.integers(1, 500))) for _ in range(80)])
    if shape == "sorted":
        return np.sort(rng.integers(0, 1000, 5_000))
    if shape == "pairs":  # node-pair keys a * n + b, both ways round
        a, b = rng.integers(0, 5000, (2, 30_000))
        return np.concatenate([a * 5000 + b, b * 5000 + a])
    if shape == "negative":
        return rng.integers(-(2**40), 2**40, 20_000)
    if shape == "wide":  # a span of 2**63: beyond int64 once shifted by the least key
        return np.array([2**62, -(2**62), 5, 2**62, -(2**62), 0], dtype=np.int64)
    if shape == "ties":  # few distinct values: the order of equal keys is what a stable sort gives
        return rng.integers(0, 3, 5_000)
    if shape == "one":
        return np.array([42])
    return np.zeros(0, dtype=np.int64)


SHAPES = ["random", "few", "runs", "sorted", "pairs", "negative", "wide", "ties", "one", "empty"]
#: Every shape in int64, and those whose keys fit in int32 in int32 too.
WIDE = ("random", "negative", "wide")
CASES = [(s, np.int64) for s in SHAPES] + [(s, np.int32) for s in SHAPES if s not in WIDE]


@pytest.mark.parametrize(("shape", "dtype"), CASES)
def test_stable_order_equals_numpy_stable_argsort(shape: str, dtype: type) -> None:
    keys: IntArray = _keys(shape, np.random.default_rng(len(shape))).astype(dtype)
    order = stable_order(keys)
    assert order.dtype == np.int64
    assert np.array_equal(order, np.argsort(keys, kind="stable"))


@pytest.mark.parametrize(("shape", "dtype"), CASES)
def test_unique_inverse_equals_numpy_unique(shape: str, dtype: type) -> None:
    keys: IntArray = _keys(shape, np.random.default_rng(len(shape))).astype(dtype)
    uniq, inv = unique_inverse(keys)
    want, want_inv = np.unique(keys, return_inverse=True)
    assert np.array_equal(uniq, want)
    assert np.array_equal(inv, want_inv.reshape(-1))
    assert uniq.dtype == inv.dtype == np.int64
    assert np.array_equal(uniq[inv], keys)
