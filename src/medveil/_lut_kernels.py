"""The compiled gather loop behind :func:`medveil._lut.apply_lut` (numba; loaded only for large arrays)."""

from numba import njit, prange


@njit(parallel=True, boundscheck=False, nogil=True, cache=True)
def gather_parallel(src, lut, dst):
    for i in prange(src.size):
        dst[i] = lut[src[i]]

