"""The compiled gather loop behind :func:`medveil._lut.apply_lut` (numba; loaded only for large arrays)."""

from numba import njit, prange


@njit(parallel=True, boundscheck=False, nogil=True, cache=True)
def gather_parallel(src, lut, dst):
    for i in prange(src.size):
        dst[i] = lut[src[i]]



@njit(parallel=True, boundscheck=False, nogil=True, cache=True)
def gather_counting(src, lut, dst, invalid):
    """:func:`gather_parallel` that also counts the looked-up values equal to ``invalid``, in the same pass."""
    hits = 0
    for i in prange(src.size):
        value = lut[src[i]]
        dst[i] = value
        hits += value == invalid
    return hits
