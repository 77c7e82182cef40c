"""Table look-up over large integer arrays at close to memory bandwidth.

``numpy`` fancy indexing (``lut[x]``) runs at ~0.4 GB/s on this class of machine because it goes
through the generic gather path with int64 index conversion; a compiled loop over the raw
unsigned values reaches memcpy-like speed. See ``benchmarks/bench_intensity.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


# Below this many values, waking the thread pool costs more than the look-ups (one 64x64 image
# took ~100 us in parallel against ~5 us serially).
PARALLEL_MIN_SIZE = 1 << 18


@njit(parallel=True, boundscheck=False, nogil=True, cache=True)
def _gather_parallel(src, lut, dst):
    for i in prange(src.size):
        dst[i] = lut[src[i]]


@njit(boundscheck=False, nogil=True, cache=True)
def _gather_serial(src, lut, dst):
    for i in range(src.size):
        dst[i] = lut[src[i]]


def apply_lut(values: np.ndarray, lut: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Return ``lut[values]``.

    Parameters
    ----------
    values : ndarray of uint8 or uint16, any shape
        Indices into ``lut``; every value must be ``< lut.size`` (callers size the table to the
        whole dtype range, so this always holds).
    lut : 1-D ndarray of length ``2**(8*values.itemsize)``
    out : ndarray, optional
        Contiguous array of ``values.shape`` and ``lut.dtype`` to write into.
    """
    if values.dtype not in (np.uint8, np.uint16) or lut.size != 1 << (8 * values.itemsize):
        raise ValueError("apply_lut needs uint8/uint16 values and a table covering their whole range")
    src = np.ascontiguousarray(values)
    if out is None:
        out = np.empty(src.shape, dtype=lut.dtype)
    gather = _gather_parallel if src.size >= PARALLEL_MIN_SIZE else _gather_serial
    gather(src.reshape(-1), np.ascontiguousarray(lut), out.reshape(-1))
    return out
