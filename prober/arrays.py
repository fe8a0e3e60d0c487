"""The NumPy array types of prober's columnar core, named once, and its set operations.

Pair tables, the matrix, the store and diagnosis pass columns of counts, shares and
masks between them; these aliases say which is which in signatures. The set operations
(:func:`unique_inverse`, :func:`sorted_unique`, :func:`unique_keys`) are ``np.unique``
done the way a window's columns make cheap. Nothing here does I/O or imports anything
but NumPy.
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


def sorted_unique(values: IntArray) -> IntArray:
    """``np.unique`` of integers by a stable sort. NumPy 2's default (a hash table, then a
    sort) costs several times as much for the few thousand row numbers a claim touches,
    and ~10 times as much for a window's column of 40-bit keys (1.4 s for 1.4 million).
    The stable sort (a merge of sorted runs) takes a sorted column in one pass: 0.8 ms
    for 1.4 million, where NumPy's default sort takes 74."""
    s = np.sort(values, kind="stable")
    result: IntArray = s[np.r_[True, s[1:] != s[:-1]]] if s.size else s
    return result


def unique_inverse(keys: IntArray) -> tuple[IntArray, IntArray]:
    """``np.unique(keys, return_inverse=True)`` by a stable sort.

    A window's rows are sorted by their probe key, so the keys a diagnosis groups them
    by (a server group, a node pair, a stream) come in long sorted runs, which NumPy's
    stable sort (a merge of runs) sorts several times faster than ``np.unique``'s
    quicksort: 181 ms against 42 for the 1.4 million rows of a 1,000-node minute.
    """
    if keys.size == 0:
        return keys.astype(np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
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
