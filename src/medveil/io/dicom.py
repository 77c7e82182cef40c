"""DICOM: pixel data in and out with pydicom, header de-identification with dicom-anonymizer.

Obfuscated output is always written uncompressed (Explicit VR Little Endian) with the geometry
of the source (rows, columns, frames, spacing, position, orientation) and a header de-identified
by the DICOM PS3.15 Basic Application Level Confidentiality Profile. UIDs are replaced by keyed
HMAC-derived ``2.25.`` UIDs: consistent across the files of one study (and across workers and
resumed runs) under one key, unlinkable to the originals without it. Burned-in text in the pixels
is not detected; the intensity mapping scrambles it along with everything else.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from pathlib import Path

import numpy as np
import pydicom
from dicomanonymizer import simpledicomanonymizer as anonymizer
from pydicom.uid import ExplicitVRLittleEndian

from medveil.errors import InputError
from medveil.io.image import Format, MedicalImage, register_format

PROFILE_VERSION = "dicomfields_2026c"

# Modality/VOI LUT and value statistics describe the original values, not the obfuscated codes.
_VALUE_DEPENDENT = (
    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence", "VOILUTSequence",
    "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction",
    "SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue",
)


def read_dicom(path: Path) -> MedicalImage:
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise InputError("DICOM object holds no pixel data")
    pixels = ds.pixel_array  # YBR colour is converted to RGB
    samples = int(ds.get("SamplesPerPixel", 1))
    return MedicalImage(
        pixels=np.ascontiguousarray(pixels),
        format="dicom",
        bits=int(ds.BitsStored),
        channel_axis=-1 if samples > 1 else None,
        meta=ds,
    )


def keyed_uid(uid: str, secret: bytes) -> str:
    """A DICOM UID derived from ``uid`` under ``secret`` (``2.25.<128-bit integer>``)."""
    digest = hmac.new(secret, uid.encode(), hashlib.sha256).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


def deidentify(ds: pydicom.Dataset, uid_secret: bytes) -> pydicom.Dataset:
    """A de-identified copy of ``ds`` (PS3.15 basic profile, private tags removed, keyed UIDs)."""
    ds = copy.deepcopy(ds)

    def replace_uid(dataset, tag):
        element = dataset.get(tag)
        if element is None:
            return
        if element.VR != "UI":
            anonymizer.empty_element(element)
        elif isinstance(element.value, pydicom.multival.MultiValue):
            element.value = [keyed_uid(str(v), uid_secret) for v in element.value]
        elif element.value:
            element.value = keyed_uid(str(element.value), uid_secret)

    def rules():
        tags = anonymizer.dicom_anonymization_database_selector(PROFILE_VERSION)
        actions = anonymizer.initialize_actions(PROFILE_VERSION)
        actions.update({tag: replace_uid for tag in tags["U_TAGS"] + tags["X_Z_U_STAR_TAGS"]})
        return actions

    anonymizer.anonymize_dataset(ds, delete_private_tags=True, base_rules_gen=rules)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 Basic Profile; pixels obfuscated (medveil)"
    return ds


def write_dicom(path: Path, image: MedicalImage) -> None:
    ds = copy.deepcopy(image.meta)
    if ds.get("PatientIdentityRemoved") != "YES":
        raise InputError("refusing to write a DICOM header that was not de-identified")
    for keyword in _VALUE_DEPENDENT:
        if keyword in ds:
            delattr(ds, keyword)
    photometric = str(ds.PhotometricInterpretation)
    if photometric.startswith("YBR"):
        photometric = "RGB"  # pixel_array converted it on read
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_pixel_data(image.pixels, photometric, image.bits, generate_instance_uid=False)
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID"))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def looks_like_dicom(path: Path) -> bool:
    """True for a file with the DICM magic at byte 128 (DICOM files often have no suffix)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


register_format(
    Format("dicom", (".dcm", ".dicom"), read_dicom, write_dicom, "dicom", deidentify=deidentify, sniff=looks_like_dicom)
)
