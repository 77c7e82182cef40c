"""DICOM: pixel data in and out with pydicom; headers de-identified by :mod:`medveil.io.dicom_profile`.

Input may be any transfer syntax pydicom decodes (big endian, implicit VR, RLE, JPEG, JPEG-LS,
JPEG 2000 through the pylibjpeg plugins). Obfuscated output is always written uncompressed as
Explicit VR Little Endian with the geometry of the source (rows, columns, frames, spacing, position,
orientation). Attributes that describe the original values rather than the codes are rewritten so
the object stays valid: an identity rescale (slope 1, intercept 0, type US) where the source had
one, window and LUT attributes removed, and ImageType DERIVED.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medveil.errors import InputError
from medveil.io.image import Format, MedicalImage, check_decoded_size, decoded_budget, register_format

if TYPE_CHECKING:
    import pydicom

# pydicom (and the profile built on it) load on the first DICOM file, so that commands on other
# formats start without them (~0.2 s).

# Modality/VOI LUT, windows and value statistics describe the original values, not the codes.
_VALUE_DEPENDENT = (
    "ModalityLUTSequence", "VOILUTSequence", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
    "VOILUTFunction", "SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue",
    "PixelPaddingRangeLimit", "SmallestPixelValueInSeries", "LargestPixelValueInSeries",
    "RealWorldValueMappingSequence",
)


def _check_inflated_size(path: Path) -> None:
    """Check that a deflated file's dataset, inflated in a stream and thrown away, fits the decoding budget.

    pydicom inflates it whole into memory before it parses anything.
    """
    import zlib

    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    meta = read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian or "FileMetaInformationGroupLength" not in meta:
        return
    budget, inflated = decoded_budget(), 0
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    with open(path, "rb") as fh:
        fh.seek(132 + 12 + int(meta.FileMetaInformationGroupLength))  # preamble, DICM, the group length element
        while inflated <= budget and (block := fh.read(1 << 16)):
            while block and inflated <= budget:  # at most a megabyte out per step, however far it inflates
                inflated += len(inflate.decompress(block, 1 << 20))
                block = inflate.unconsumed_tail
    check_decoded_size(inflated, "deflated DICOM dataset")


def _check_pixel_size(ds: pydicom.Dataset) -> None:
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    sample_bytes = max(1, (int(ds.get("BitsAllocated", 8) or 8) + 7) // 8)
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_decoded_size(rows * columns * frames * samples * sample_bytes,
                       f"DICOM pixel data of {frames} frame(s) {rows}x{columns}x{samples}")


def read_dicom(path: Path) -> MedicalImage:
    """Return a DICOM file's stored pixel values (never rescaled) and its header, within the decoding budget."""
    import pydicom

    _check_inflated_size(path)
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        kind = "float pixel data" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else "no pixel data"
        raise InputError(f"DICOM object holds {kind} (medveil maps integer pixel data)")
    _check_pixel_size(ds)
    pixels = ds.pixel_array  # YBR colour is converted to RGB
    samples = int(ds.get("SamplesPerPixel", 1))
    return MedicalImage(
        pixels=np.ascontiguousarray(pixels),
        format="dicom",
        bits=int(ds.BitsStored),
        channel_axis=-1 if samples > 1 else None,
        meta=ds,
    )


def declares_burned_in_text(ds: pydicom.Dataset) -> bool:
    """Whether the header says the pixels hold text (BurnedInAnnotation YES)."""
    return str(ds.get("BurnedInAnnotation", "")).upper() == "YES"


def _as_little_endian(ds: pydicom.Dataset, character_set) -> None:
    """Decode, at every depth, the elements not read as explicit VR little endian, so pydicom writes them so.

    The others stay as read (decoding a whole header costs more than the rest of a file's obfuscation);
    each element is checked, because files exist whose transfer syntax says explicit VR while their
    elements are implicit. ``character_set`` is the one the elements were read in, which pydicom
    compares with the dataset's own before it writes raw elements as they are.
    """
    def decode(dataset):
        for element in list(dataset.elements()):
            explicit_little = not element.is_raw or (not element.is_implicit_VR and element.is_little_endian)
            if explicit_little and element.VR != "SQ":
                continue
            element = dataset[element.tag]
            if element.VR == "SQ":
                for item in element.value:
                    decode(item)
    decode(ds)
    ds.set_original_encoding(False, True, character_set)


def deidentify(ds: pydicom.Dataset, secret: bytes, *, text_masked: bool = False, copy: bool = True,
               clean_descriptors: bool = True) -> pydicom.Dataset:
    """:func:`medveil.io.dicom_profile.deidentify`."""
    from medveil.io.dicom_profile import deidentify as deidentify_dataset

    return deidentify_dataset(ds, secret, text_masked=text_masked, copy=copy, clean_descriptors=clean_descriptors)


# Set by pydicom's set_pixel_data, and for codes by write_dicom: replaced in the output header, never edited.
_SET_PIXEL_DATA = (
    "NumberOfFrames", "Rows", "Columns", "SamplesPerPixel", "PlanarConfiguration", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData",
)
_PIXEL_DESCRIPTION = ("RescaleSlope", "RescaleIntercept", "RescaleType", "ImageType") + _SET_PIXEL_DATA


def write_dicom(path: Path, image: MedicalImage) -> None:
    """Write ``image`` (its header de-identified, or refused) as Explicit VR Little Endian DICOM at ``path``."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    meta = image.meta
    if meta.get("PatientIdentityRemoved") != "YES":
        raise InputError("refusing to write a DICOM header that was not de-identified")
    # A new header over the same elements, not a deep copy (which cost a tenth of a folder run):
    # every element this function or set_pixel_data sets is taken out first and set anew, so
    # image.meta keeps its own. The source's 128-byte preamble, which may hold anything, is not kept.
    ds = pydicom.Dataset(dict(meta.items()))
    for keyword in (_VALUE_DEPENDENT + _PIXEL_DESCRIPTION) if image.coded else _SET_PIXEL_DATA:
        if keyword in ds:
            del ds[keyword]
    if image.coded and ("RescaleSlope" in meta or "RescaleIntercept" in meta):
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "0", "US"
    if image.coded and "ImageType" in meta:
        image_type = list(meta.ImageType) if isinstance(meta.ImageType, pydicom.multival.MultiValue) else [meta.ImageType]
        ds.ImageType = ["DERIVED"] + image_type[1:]
    photometric = str(meta.PhotometricInterpretation)
    if photometric.startswith("YBR"):
        photometric = "RGB"  # pixel_array converted it on read
    _as_little_endian(ds, meta.original_character_set)
    file_meta = getattr(meta, "file_meta", None)
    ds.file_meta = copy.deepcopy(file_meta) if file_meta is not None else pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_pixel_data(image.pixels, photometric, image.bits, generate_instance_uid=False)
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID"))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def looks_like_dicom(path: Path) -> bool:
    """Tell whether a file has the DICM magic at byte 128 (DICOM files often have no suffix)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


register_format(
    Format("dicom", (".dcm", ".dicom"), read_dicom, write_dicom, "dicom", deidentify=deidentify,
           sniff=looks_like_dicom, declares_burned_in_text=declares_burned_in_text)
)
