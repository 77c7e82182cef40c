"""NumPy ``.npy`` arrays (no pickles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medveil.errors import InputError
from medveil.io.image import Format, MedicalImage, check_decoded_size, register_format


def read_npy(path: Path) -> MedicalImage:
    declared = np.load(path, mmap_mode="r", allow_pickle=False)  # the header, and the data mapped, not read
    check_decoded_size(declared.nbytes, f"array of shape {declared.shape} {declared.dtype}")
    pixels = np.array(declared)
    if pixels.dtype.kind not in "iuf" or pixels.ndim < 2:
        raise InputError(f"expected a numeric array of 2 or more dimensions, got {pixels.dtype} {pixels.shape}")
    return MedicalImage(pixels=pixels, format="npy", bits=8 * pixels.dtype.itemsize)


def write_npy(path: Path, image: MedicalImage) -> None:
    with open(path, "wb") as fh:  # np.save(path) would append ".npy" to a temporary name
        np.save(fh, image.pixels, allow_pickle=False)


register_format(Format("npy", (".npy",), read_npy, write_npy, "npy"))
