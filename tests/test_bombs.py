"""Decompression bombs: small files that declare (or inflate to) gigabytes are refused before they are decoded."""

import shutil
import struct
import subprocess
import sys
import zlib

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile

AS_LIMIT = 1 << 30  # address space of the reading process: the bombs below would need 3-6 GB


def png_bomb(path, side=60000):
    """A PNG whose header declares side x side gray pixels, with one compressed row of data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(side + 1)))
                     + chunk(b"IEND", b""))


def jpeg_bomb(path, side=60000):
    """A 16x16 baseline JPEG whose frame header (SOF0) was rewritten to declare side x side pixels."""
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(path, "JPEG")
    data = bytearray(path.read_bytes())
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = struct.pack(">HH", side, side)
    path.write_bytes(bytes(data))


def tiff_bomb(path, side=50000):
    """A 16x16 TIFF whose width and length tags were rewritten to side x side."""
    tifffile.imwrite(path, np.zeros((16, 16), np.uint16))
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        for name in ("ImageWidth", "ImageLength"):
            tag = tif.pages[0].tags[name]
            data[tag.valueoffset:tag.valueoffset + (2 if tag.dtype == 3 else 4)] = struct.pack(
                "<H" if tag.dtype == 3 else "<I", side)
    path.write_bytes(bytes(data))


def dicom_bomb(path, dicom_dir):
    ds = pydicom.dcmread(dicom_dir / "CT_small.dcm")
    ds.Rows, ds.Columns, ds.NumberOfFrames = 30000, 30000, 3  # the pixel data itself stays 128x128
    ds.save_as(path)


def deflated_bomb(path, dicom_dir):
    """A deflated DICOM whose dataset inflates to 3 GB of zeros in one private element."""
    ds = pydicom.dcmread(dicom_dir / "CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(path.with_suffix(".plain.dcm"), enforce_file_format=True)
    plain = path.with_suffix(".plain.dcm").read_bytes()
    meta_end = 132 + 12 + pydicom.filereader.read_file_meta_info(path.with_suffix(".plain.dcm")).FileMetaInformationGroupLength
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = plain[meta_end:]
    zeros = 3 << 30
    chunks = [deflate.compress(struct.pack("<HH", 0x0009, 0x1010) + b"OB\0\0" + struct.pack("<I", zeros))]
    block = bytes(1 << 24)
    chunks += [deflate.compress(block) for _ in range(zeros >> 24)]
    chunks += [deflate.compress(body), deflate.flush()]
    path.write_bytes(plain[:meta_end] + b"".join(chunks))
    path.with_suffix(".plain.dcm").unlink()


def nifti_bomb(path):
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 400))
    header.set_data_dtype(np.int16)
    with open(path, "wb") as fh:
        header.write_to(fh)
        fh.write(bytes(4 + 1024))  # the extension flag and a little data


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
def test_bombs_in_every_format_are_refused_within_a_memory_cap(tmp_path, dicom_dir):
    files = {"png": tmp_path / "bomb.png", "jpeg": tmp_path / "bomb.jpg", "tiff": tmp_path / "bomb.tif",
             "dicom": tmp_path / "bomb.dcm",
             "deflated": tmp_path / "deflated.dcm", "nifti": tmp_path / "bomb.nii"}
    png_bomb(files["png"])
    jpeg_bomb(files["jpeg"])
    tiff_bomb(files["tiff"])
    dicom_bomb(files["dicom"], dicom_dir)
    deflated_bomb(files["deflated"], dicom_dir)
    nifti_bomb(files["nifti"])
    assert max(f.stat().st_size for f in files.values()) < 16 << 20
    for kind, path in files.items():
        run = subprocess.run(["prlimit", f"--as={AS_LIMIT}", sys.executable, "-c",
                              "import sys; from medveil.io import read_image; read_image(sys.argv[1])", str(path)],
                             capture_output=True, text=True, timeout=120)
        last = run.stderr.strip().splitlines()[-1]
        assert run.returncode != 0 and "over the per-file budget" in last and str(path) in last, (kind, run.stderr[-500:])
        assert "MemoryError" not in run.stderr, kind


def test_the_budget_can_be_lowered_and_a_normal_file_fits_it(tmp_path, dicom_dir, monkeypatch):
    from medveil.errors import InputError
    from medveil.io import read_image

    assert read_image(dicom_dir / "CT_small.dcm").pixels.shape == (128, 128)
    monkeypatch.setenv("MEDVEIL_MAX_DECODED_MB", "0")
    with pytest.raises(InputError, match="over the per-file budget of 0 MB"):
        read_image(dicom_dir / "CT_small.dcm")
    monkeypatch.setenv("MEDVEIL_MAX_DECODED_MB", "lots")
    with pytest.raises(InputError, match="whole number of megabytes"):
        read_image(dicom_dir / "CT_small.dcm")
