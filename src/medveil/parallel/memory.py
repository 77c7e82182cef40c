"""How a process allocates: glibc's allocator told to keep image-sized arrays on the heap.

glibc maps every allocation over its mmap threshold anew and unmaps it on free, the kernel zeroing
each page again: a training step's activations (a U-Net's are 34 MB a batch at 64x64) and the
convolutions' work buffers are that size, and the quick benchmark spent 152 s of its 286 s in the
kernel. :data:`MALLOC_THRESHOLDS` keep such arrays on the heap and give memory back once 512 MiB of it
is free at the top. Setting any of them turns glibc's adaptive threshold off, which Dask's nannies do
(``MALLOC_TRIM_THRESHOLD_``), so a LocalCluster's workers get these too (:mod:`medveil.parallel.cluster`).
"""

from __future__ import annotations

import ctypes

MALLOC_THRESHOLDS = {"MALLOC_MMAP_THRESHOLD_": 1 << 28, "MALLOC_TRIM_THRESHOLD_": 1 << 29}
_MALLOPT = {"MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_TRIM_THRESHOLD_": -1}  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


def keep_arrays_on_heap() -> bool:
    """Set this process's :data:`MALLOC_THRESHOLDS` (glibc's ``mallopt``); returns whether the C library took them.

    A ``medveil`` command calls it once; a library caller may (it changes how this whole process
    allocates). Elsewhere than glibc (musl, macOS) it does nothing and returns False.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all([mallopt(_MALLOPT[name], value) == 1 for name, value in MALLOC_THRESHOLDS.items()])
