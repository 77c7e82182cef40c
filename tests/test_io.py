import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

import medveil
from medveil.errors import InputError
from medveil.io import obfuscate_file, obfuscate_image, output_name, read_image, write_image

from conftest import package_dir

PHI = ["PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "ReferringPhysicianName", "StudyDate"]


def ct_key():
    return medveil.generate_key("intensity", bits=16, signed=True, levels=300)


def test_dicom_output_is_valid_deidentified_and_keeps_geometry(tmp_path, dicom_dir):
    src = dicom_dir / "CT_small.dcm"
    original = pydicom.dcmread(src)
    scheme = medveil.from_key(ct_key())
    obfuscate_file(src, tmp_path / "ct.dcm", scheme)

    out = pydicom.dcmread(tmp_path / "ct.dcm")
    assert np.array_equal(out.pixel_array, scheme(original.pixel_array))
    for keyword in ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness"):
        assert out.get(keyword) == original.get(keyword), keyword
    for keyword in PHI:
        if keyword in original and original.get(keyword):
            assert out.get(keyword) != original.get(keyword), keyword
    assert out.PatientIdentityRemoved == "YES"
    assert not any(element.tag.is_private for element in out)
    assert out.StudyInstanceUID != original.StudyInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert (out.RescaleSlope, out.RescaleIntercept) == (1, 0)  # the codes are not Hounsfield units
    assert out.BitsStored == 16 and out.PixelRepresentation == 0


def test_uids_are_consistent_per_key_and_differ_between_keys(tmp_path, dicom_dir):
    key_a, key_b = ct_key(), ct_key()
    src = dicom_dir / "CT_small.dcm"
    for name, key in (("a1.dcm", key_a), ("a2.dcm", key_a), ("b.dcm", key_b)):
        obfuscate_file(src, tmp_path / name, medveil.from_key(key))
    a1, a2, b = (pydicom.dcmread(tmp_path / n) for n in ("a1.dcm", "a2.dcm", "b.dcm"))
    assert a1.StudyInstanceUID == a2.StudyInstanceUID != b.StudyInstanceUID


def test_dicom_without_suffix_is_recognised(tmp_path, dicom_dir):
    shutil.copy(dicom_dir / "MR_small.dcm", tmp_path / "IM0001")
    assert read_image(tmp_path / "IM0001").format == "dicom"


def test_multiframe_dicom_keeps_its_frames(tmp_path, dicom_dir):
    src = dicom_dir / "SC_rgb_rle_2frame.dcm"
    image = read_image(src)
    assert image.pixels.shape[0] == 2 and image.channel_axis == -1
    obfuscate_file(src, tmp_path / "mf.dcm", medveil.from_key(medveil.generate_key("intensity", levels=40)))
    assert pydicom.dcmread(tmp_path / "mf.dcm").pixel_array.shape == image.pixels.shape


def test_nifti_keeps_affine_and_header_geometry(tmp_path):
    src = package_dir("nibabel") / "tests" / "data" / "example4d.nii.gz"
    scheme = medveil.from_key(ct_key())
    obfuscate_file(src, tmp_path / "vol.nii.gz", scheme)
    before, after = nib.load(src), nib.load(tmp_path / "vol.nii.gz")
    assert np.array_equal(after.affine, before.affine)
    assert after.header.get_zooms() == before.header.get_zooms()
    assert np.array_equal(np.asarray(after.dataobj), scheme(np.asarray(before.dataobj.get_unscaled())))
    assert after.header["descrip"].item() == b""


@pytest.mark.parametrize("dtype, shape", [(np.uint8, (20, 30)), (np.uint8, (20, 30, 3)), (np.uint16, (20, 30))])
def test_png_round_trip(tmp_path, rng, dtype, shape):
    pixels = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.pixels.dtype == dtype and np.array_equal(image.pixels, pixels)
    write_image(tmp_path / "b.png", image)
    assert np.array_equal(read_image(tmp_path / "b.png").pixels, pixels)


def test_tiff_stack_and_npy_round_trip(tmp_path, rng):
    stack = rng.integers(0, 4096, (3, 16, 16)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    np.save(tmp_path / "a.npy", stack)
    scheme = medveil.from_key(medveil.generate_key("intensity", bits=12, levels=100))
    for name in ("s.tif", "a.npy"):
        obfuscate_file(tmp_path / name, tmp_path / f"out-{name}", scheme)
        assert np.array_equal(read_image(tmp_path / f"out-{name}").pixels, scheme(stack))


def test_jpeg_is_written_as_lossless_png(tmp_path, rng):
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "a.jpg")
    assert output_name("x/a.jpg").as_posix() == "x/a.png"
    scheme = medveil.from_key(medveil.generate_key("intensity", levels=64))
    image = read_image(tmp_path / "a.jpg")
    obfuscate_file(tmp_path / "a.jpg", tmp_path / "a.png", scheme)
    assert np.array_equal(read_image(tmp_path / "a.png").pixels, scheme(image.pixels))
    assert obfuscate_image(image, scheme).format == "png"


def test_corrupt_truncated_and_unsupported_files_name_the_file(tmp_path, dicom_dir):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "notes.txt").write_text("hello")
    png = tmp_path / "cut.png"
    Image.fromarray(np.zeros((64, 64), np.uint8) + 7).save(png)
    png.write_bytes(png.read_bytes()[:60])
    cases = [
        (tmp_path / "bad.png", "cannot read png"),
        (png, "cannot read png"),
        (dicom_dir / "MR_truncated.dcm", "cannot read dicom"),
        (tmp_path / "notes.txt", "unsupported format '.txt'"),
        (tmp_path / "missing.png", "no such file"),
    ]
    for path, message in cases:
        with pytest.raises(InputError, match=message) as info:
            read_image(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_single_file_never_overwrites(tmp_path, rng, key8):
    np.save(tmp_path / "a.npy", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    scheme = medveil.from_key(key8)
    with pytest.raises(InputError, match="already exists"):
        obfuscate_file(tmp_path / "a.npy", tmp_path / "a.npy", scheme)


def test_formats_are_a_registry_that_refuses_a_name_or_suffix_twice():
    from medveil.errors import InputError
    from medveil.io.image import FORMATS, Format, format_named, register_format

    assert {"dicom", "nifti", "png", "jpeg", "tiff", "npy"} <= set(FORMATS.names())
    with pytest.raises(ValueError, match="registered twice"):
        register_format(Format("png", (".apng",), format_named("png").read, None, "png"))
    with pytest.raises(ValueError, match="suffix .dcm is already dicom's"):
        register_format(Format("other-dicom", (".dcm",), format_named("dicom").read, None, "dicom"))
    with pytest.raises(InputError, match="unknown format 'heic'"):
        format_named("heic")
    assert "apng" not in FORMATS.names() and "other-dicom" not in FORMATS.names()
