"""NumPy ``.npy`` arrays (no pickles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medveil.errors import InputError
from medveil.io.image import Format, MedicalImage, check_decoded_size, register_format


def read_npy(path: Path) -> MedicalImage:
    """Return a NumPy file's array (no pickles), within the decoding budget."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
        check_decoded_size(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, f"array of shape {shape} {dtype}")
        fh.seek(0)
        pixels = np.lib.format.read_array(fh, allow_pickle=False)
    if pixels.dtype.kind not in "iuf" or pixels.ndim < 2:
        raise InputError(f"expected a numeric array of 2 or more dimensions, got {pixels.dtype} {pixels.shape}")
    return MedicalImage(pixels=pixels, format="npy", bits=8 * pixels.dtype.itemsize)


def write_npy(path: Path, image: MedicalImage) -> None:
    """Write ``image``'s pixels as a NumPy file."""
    with open(path, "wb") as fh:  # np.save(path) would append ".npy" to a temporary name
        np.save(fh, image.pixels, allow_pickle=False)


register_format(Format("npy", (".npy",), read_npy, write_npy, "npy"))
