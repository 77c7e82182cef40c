"""Table look-up over large integer arrays at close to memory bandwidth.

``numpy`` fancy indexing (``lut[x]``) runs at ~0.4 GB/s on this class of machine because it goes
through the generic gather path with int64 index conversion; a compiled loop over the raw
unsigned values reaches memcpy-like speed. See ``benchmarks/bench_intensity.py``.

Loading numba and the cached parallel loop costs 0.3-1.5 s per process, far more than an image
needs, so the compiled loop (:mod:`medveil.schemes._lut_kernels`) loads only once an array is large enough to
win it back: a volume. Below that, an 8-bit table goes through ``bytearray.translate`` (CPython's
byte loop: 2.4 GB/s on a 2048x2048 radiograph, against 0.4-0.7 for NumPy's lut[x], or 1 through a table of
byte pairs) and a 16-bit one through NumPy's take. In the compiled loop an 8-bit table is applied two
pixels at a time through a 64 K-entry table of byte pairs (128 KB, stays in L2): half the loads and
stores, 4 GB/s a thread. On a CPU with AVX-512 VBMI it maps 64 pixels per instruction triple
instead, faster than memcpy.
"""

from __future__ import annotations

import functools

import numpy as np

# From this many values on (a volume), the compiled parallel loop is used: NumPy's take slows past ~1 M values,
# but the kernel's 1-1.5 s load only pays back over about a gigabyte of look-ups.
KERNEL_MIN_SIZE = 1 << 24


def apply_lut(values: np.ndarray, lut: np.ndarray, out: np.ndarray | None = None,
              invalid: int | None = None) -> np.ndarray:
    """Return ``lut[values]``; raise :class:`LookupError` if ``invalid`` is among the looked-up values.

    Parameters
    ----------
    values : ndarray of uint8 or uint16, any shape
        Indices into ``lut``; every value must be ``< lut.size`` (callers size the table to the
        whole dtype range, so this always holds).
    lut : 1-D ndarray of length ``2**(8*values.itemsize)``
    out : ndarray, optional
        Contiguous array of ``values.shape`` and ``lut.dtype`` to write into.
    invalid : int, optional
        The table's entry for values outside the caller's domain. Checked in the same pass as the
        look-up, so a domain check costs no extra read of the input.
    """
    if values.dtype not in (np.uint8, np.uint16) or lut.size != 1 << (8 * values.itemsize):
        raise ValueError("apply_lut needs uint8/uint16 values and a table covering their whole range")
    src = np.ascontiguousarray(values)
    bytes_to_bytes = invalid is None and lut.dtype == np.uint8 and src.dtype == np.uint8
    if bytes_to_bytes and src.size < KERNEL_MIN_SIZE:
        mapped = np.frombuffer(bytearray(src).translate(lut.tobytes()), np.uint8).reshape(src.shape)
        if out is None:
            return mapped
        out[...] = mapped
        return out
    if out is None:
        out = np.empty(src.shape, dtype=lut.dtype)
    flat_src, flat_out = src.reshape(-1), out.reshape(-1)
    if src.size < KERNEL_MIN_SIZE:
        # "wrap" skips the bounds check (every index is in range) and writes into out unbuffered: 1.5-2x "raise"
        np.take(lut, flat_src, out=flat_out, mode="wrap")
        if invalid is not None and (out == invalid).any():
            raise LookupError("a value outside the table's domain")
        return out
    from medveil.schemes._lut_kernels import PERMUTES_BYTES, gather_bytes_permuting, gather_counting, gather_parallel

    if invalid is not None:
        if gather_counting(flat_src, np.ascontiguousarray(lut), flat_out, lut.dtype.type(invalid)):
            raise LookupError("a value outside the table's domain")
        return out
    if PERMUTES_BYTES and bytes_to_bytes:
        gather_bytes_permuting(flat_src, np.ascontiguousarray(lut), flat_out)
        return out
    if bytes_to_bytes and _even_addresses(flat_src, flat_out):
        whole = flat_src.size - flat_src.size % 2  # two bytes at a time through the pair table: half the loads and stores
        gather_parallel(flat_src[:whole].view(np.uint16), _pair_table_of(lut.tobytes()), flat_out[:whole].view(np.uint16))
        flat_out[whole:] = lut[flat_src[whole:]]
        return out
    gather_parallel(flat_src, np.ascontiguousarray(lut), flat_out)
    return out


def pair_table(lut: np.ndarray) -> np.ndarray:
    """Return the uint16 table mapping two adjacent uint8 values, read as one uint16, to their two mapped bytes.

    Built through byte views, so it is right for either byte order.
    """
    pairs = np.arange(1 << 16, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    return np.ascontiguousarray(lut[pairs]).reshape(-1).view(np.uint16)


@functools.lru_cache(maxsize=8)
def _pair_table_of(lut_bytes: bytes) -> np.ndarray:
    return pair_table(np.frombuffer(lut_bytes, np.uint8))  # made once per key: 0.5 ms, ~5 % of a 64 MB batch


def _even_addresses(*arrays: np.ndarray) -> bool:
    return all(a.ctypes.data % 2 == 0 for a in arrays)
