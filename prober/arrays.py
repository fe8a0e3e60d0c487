"""The NumPy array types of prober's columnar core, named once.

Pair tables, the matrix, the store and diagnosis pass columns of counts, shares and
masks between them; these aliases say which is which in signatures. Types only:
nothing here allocates, does I/O or imports anything but NumPy.
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
