"""The NumPy array types of prober's columnar core, named once, and its sorts.

Pair tables, the matrix, the store and diagnosis pass columns of counts, shares and
masks between them; these aliases say which is which in signatures. The sorts
(:func:`stable_order`, :func:`unique_inverse`, :func:`sorted_unique`, :func:`unique_keys`)
are ``np.argsort`` and ``np.unique`` done the way a window's columns make cheap. Nothing
here does I/O or imports anything but NumPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
#: A column of group numbers kept for a window's rows: int32 where every index fits.
Int32Array = npt.NDArray[np.int32]
#: Probe counts of a table's rows (outcomes, latency bins): int32, half the bytes of a
#: window's widest columns; a window's probes of one key stay far below 2**31, and NumPy
#: sums them (``sum``, ``cumsum``) as int64.
CountArray = npt.NDArray[np.int32]
#: Latency histograms of a table's rows (rows, latency bins): the narrowest unsigned dtype
#: that holds the largest count, or int32 (:func:`prober.aggregation.hist_dtype`). In a
#: large cluster's window a row holds a probe or two, so one byte a bin, where int32 took
#: four. NumPy's ``sum`` and ``cumsum`` widen them; any other sum names its dtype.
HistArray = npt.NDArray[np.integer[Any]]
#: A small code a row (a path's source or target kind): one byte.
Int8Array = npt.NDArray[np.int8]
#: A row's zone (a cluster has far fewer than 32,767 zones): two bytes.
Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def stable_order(keys: IntArray) -> IntArray:
    """``np.argsort(keys, kind="stable")`` of integers, by radix: ``np.lexsort`` of their
    16-bit digits (NumPy sorts 16-bit keys by radix, in linear time), after a check that
    finds a sorted column sorted. NumPy's own stable sort of 64-bit keys is a merge of
    runs: quick on a window's sorted runs, slow on anything else. 2.3 million node-pair
    keys of a 5,000-node minute: 49 ms against 239; 1.4 million random 40-bit keys 37
    against 134; 1,000 sorted runs 33 against 72; a sorted column 1 ms either way."""
    if keys.size < 2 or bool((keys[1:] >= keys[:-1]).all()):
        return np.arange(keys.size, dtype=np.int64)
    low = int(keys.min())
    span = int(keys.max()) - low
    if span >= 2**63:  # beyond int64 once shifted: NumPy's merge sort
        order: IntArray = np.argsort(keys, kind="stable")
        return order
    shifted = keys.astype(np.int64) - low
    digits = [
        ((shifted >> bit) & 0xFFFF).astype(np.uint16) for bit in range(0, max(16, span.bit_length()), 16)
    ]
    result: IntArray = np.lexsort(digits)  # the last key is the first one sorted by: the top digit
    return result


def sorted_unique(values: IntArray) -> IntArray:
    """``np.unique`` of integers by a radix sort (:func:`stable_order`). NumPy 2's default
    (a hash table, then a sort) costs several times as much for the few thousand row
    numbers a claim touches, and 17 times as much for a column of 1.4 million 40-bit keys
    (1.4 s against 83 ms for a quicksort)."""
    s = values[stable_order(values)]
    result: IntArray = s[np.r_[True, s[1:] != s[:-1]]] if s.size else s
    return result


def unique_inverse(keys: IntArray) -> tuple[IntArray, IntArray]:
    """``np.unique(keys, return_inverse=True)`` by a radix sort (:func:`stable_order`):
    ``np.unique``'s quicksort takes several times as long over a window's columns."""
    if keys.size == 0:
        return keys.astype(np.int64), np.zeros(0, dtype=np.int64)
    order = stable_order(keys)
    s = keys[order]
    new = np.empty(s.size, dtype=np.bool_)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    inverse: IntArray = np.empty(keys.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    uniq: IntArray = s[new].astype(np.int64)
    return uniq, inverse


def unique_keys(keys: IntArray, size: int) -> tuple[IntArray, IntArray]:
    """``np.unique(keys, return_inverse=True)`` of keys in ``[0, size)``: without a sort
    (a table of ``size`` flags and ranks) when ``size`` is not large beside the keys, as
    node-pair keys (``size`` = nodes squared) of a window's rows are; else by
    :func:`unique_inverse`."""
    if keys.size == 0 or size > 4 * keys.size + 4096:
        return unique_inverse(keys)
    present = np.zeros(size, dtype=np.bool_)
    present[keys] = True
    rank = np.cumsum(present, dtype=np.int32 if size < 2**31 else np.int64)
    inverse: IntArray = rank[keys].astype(np.int64) - 1
    return np.flatnonzero(present), inverse
