"""NIfTI-1/2 (``.nii``, ``.nii.gz``) with nibabel: stored values in, same affine and header out.

nibabel loads on the first NIfTI file, so that commands on other formats start without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from medveil.errors import InputError
from medveil.io.image import Format, MedicalImage, check_decoded_size, register_format

if TYPE_CHECKING:
    import nibabel as nib

# Free-text header fields where a site may have written identifying notes.
_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name", "data_type")


def read_nifti(path: Path) -> MedicalImage:
    """Return a NIfTI file's stored values (unscaled) and its header and affine, within the decoding budget."""
    import nibabel as nib

    img = nib.load(path)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"not a NIfTI image ({type(img).__name__})")
    shape, dtype = img.header.get_data_shape(), img.header.get_data_dtype()
    check_decoded_size(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, f"NIfTI of shape {shape} {dtype}")
    pixels = np.asarray(cast(Any, img.dataobj).get_unscaled())  # stored integers, not scl_slope-scaled floats
    return MedicalImage(pixels=pixels, format="nifti", bits=8 * pixels.dtype.itemsize, meta=img)


def deidentify(img: nib.Nifti1Image, secret: bytes = b"", *, text_masked: bool = False,
               copy: bool = True, clean_descriptors: bool = True) -> nib.Nifti1Image:
    """Return a copy of ``img`` without header extensions and with the free-text fields cleared.

    Extensions are comments, DICOM headers, any free text; the affine, qform/sform codes and units are kept. NIfTI
    has no UIDs to remap, so neither ``secret`` nor ``text_masked`` changes anything here; its text fields hold
    nothing but free text, so they go whatever ``clean_descriptors`` says; and the header is always copied (it is
    small), whatever ``copy`` says.
    """
    header = img.header.copy()
    header.extensions.clear()
    for name in _TEXT_FIELDS:
        if name in header:
            header[name] = b""
    return type(img)(img.dataobj, img.affine, header)


def write_nifti(path: Path, image: MedicalImage) -> None:
    """Write ``image`` as NIfTI with its source's affine, qform and sform (scaling reset for codes)."""
    src = image.meta
    header = src.header.copy()
    header.set_data_dtype(image.pixels.dtype)
    if image.coded:
        header.set_slope_inter(1.0, 0.0)  # the mapped codes are not physical values
    out = type(src)(image.pixels, src.affine, header)
    out.set_qform(*src.get_qform(coded=True))
    out.set_sform(*src.get_sform(coded=True))
    out.to_filename(path)


register_format(Format("nifti", (".nii", ".nii.gz"), read_nifti, write_nifti, "nifti", deidentify=deidentify))
