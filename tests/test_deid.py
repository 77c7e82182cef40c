"""De-identification a hospital can trust: every depth, every UID, dates, burned-in text, NIfTI, validity."""

import datetime
import multiprocessing
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary, generate_uid
from typer.testing import CliRunner

import medveil
from medveil.io import burned_in
from medveil.cli import app
from medveil.errors import InputError
from medveil.io import obfuscate_file, read_image
from medveil.io.dicom_profile import METHOD_CODES

from conftest import package_dir

needs_tesseract = pytest.mark.skipif(not burned_in.tesseract_available(),
                                     reason="no Tesseract English model (Debian tesseract-ocr-eng; make install adds it)")
needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy is not installed (Debian dicom3tools; make install adds it)")

NESTED_PHI = {"PatientName": "DOE^JANE", "AccessionNumber": "ACC991122", "InstitutionName": "St Elsewhere Clinic",
              "OtherPatientIDs": "MRN-558877", "ReferringPhysicianName": "HOUSE^GREGORY"}


def ct_key(levels=300):
    return medveil.generate_key("intensity", bits=16, signed=True, levels=levels)


def every_element(ds):
    """(depth, element) for every element of ``ds`` at every depth."""
    found = []

    def visit(dataset, depth):
        for element in dataset:
            found.append((depth, element))
            if element.VR == "SQ":
                for item in element.value:
                    visit(item, depth + 1)

    visit(ds, 0)
    return found


def with_nested_phi(src, dst):
    """CT_small with PHI, dates, a private tag and references planted two and three levels down."""
    ds = pydicom.dcmread(src)
    frame = Dataset()
    for keyword, value in NESTED_PHI.items():
        setattr(frame, keyword, value)
    frame.StudyDate, frame.FrameAcquisitionDateTime = "20190304", "20190304101112.5"
    frame.add_new(0x00091010, "LO", "private note about DOE^JANE")
    shared = Dataset()
    shared.FrameContentSequence = Sequence([frame])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    instance = Dataset()
    instance.ReferencedSOPClassUID = ds.SOPClassUID
    instance.ReferencedSOPInstanceUID = generate_uid()
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.ReferencedInstanceSequence = Sequence([instance])
    ds.ReferencedSeriesSequence = Sequence([series])
    ds.save_as(dst)
    return ds


def test_phi_nested_at_any_depth_is_gone_and_dates_stay_valid(tmp_path, dicom_dir):
    planted = with_nested_phi(dicom_dir / "CT_small.dcm", tmp_path / "in.dcm")
    obfuscate_file(tmp_path / "in.dcm", tmp_path / "out.dcm", medveil.from_key(ct_key()), burned_in_text="off")

    raw = (tmp_path / "out.dcm").read_bytes()
    originals = [str(planted.PatientName), str(planted.PatientID)] + list(NESTED_PHI.values())
    for text in originals:
        assert text.encode() not in raw, text
    out = pydicom.dcmread(tmp_path / "out.dcm")
    elements = every_element(out)
    assert max(depth for depth, _ in elements) >= 2
    assert not any(e.tag.is_private for _, e in elements)
    for _, element in elements:
        if element.VR == "DA" and element.value:
            datetime.datetime.strptime(element.value, "%Y%m%d")  # a real date, not 00010101
    frame = out.SharedFunctionalGroupsSequence[0].FrameContentSequence[0]
    assert frame.StudyDate != "20190304" and frame.FrameAcquisitionDateTime.endswith("101112.5")


@pytest.mark.parametrize("name", ["nested", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "SC_rgb_jpeg.dcm"])
def test_obfuscating_and_writing_leave_the_image_read_as_it_was(tmp_path, dicom_dir, name):
    """De-identification and the writer share the header's undecoded elements instead of deep-copying it."""
    from medveil.io import write_image
    from medveil.io.gate import obfuscate_image

    src = tmp_path / "in.dcm"
    if name == "nested":
        with_nested_phi(dicom_dir / "CT_small.dcm", src)
    else:
        shutil.copy(dicom_dir / name, src)
    image = read_image(src)
    bits = min(image.bits, 16)
    key = medveil.generate_key("intensity", bits=bits, signed=image.pixels.dtype.kind == "i", levels=64)
    out = obfuscate_image(image, medveil.from_key(key), burned_in_text="off")
    write_image(tmp_path / "out.dcm", out)
    pristine = pydicom.dcmread(src)
    assert image.meta == pristine and image.meta.file_meta == pristine.file_meta
    assert [(d, e.tag, e.value) for d, e in every_element(image.meta)] == \
        [(d, e.tag, e.value) for d, e in every_element(pristine)]
    write_image(tmp_path / "again.dcm", out)  # the output header, too, survives being written
    assert (tmp_path / "out.dcm").read_bytes() == (tmp_path / "again.dcm").read_bytes()
    assert pydicom.dcmread(tmp_path / "out.dcm").preamble == b"\0" * 128  # the source's may hold anything


def test_no_original_uid_survives_and_references_follow_their_targets(tmp_path, dicom_dir):
    source = pydicom.dcmread(dicom_dir / "CT_small.dcm")
    derived = pydicom.dcmread(dicom_dir / "CT_small.dcm")
    derived.SOPInstanceUID = generate_uid()
    derived.file_meta.MediaStorageSOPInstanceUID = derived.SOPInstanceUID
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    derived.SourceImageSequence = Sequence([reference])
    derived.save_as(tmp_path / "derived.dcm")
    shutil.copy(dicom_dir / "CT_small.dcm", tmp_path / "source.dcm")

    scheme = medveil.from_key(ct_key())
    for name in ("source", "derived"):
        obfuscate_file(tmp_path / f"{name}.dcm", tmp_path / f"{name}-out.dcm", scheme, burned_in_text="off")
    out_source, out_derived = (pydicom.dcmread(tmp_path / f"{n}-out.dcm") for n in ("source", "derived"))

    assert out_derived.SourceImageSequence[0].ReferencedSOPInstanceUID == out_source.SOPInstanceUID
    assert out_derived.StudyInstanceUID == out_source.StudyInstanceUID
    assert out_derived.SourceImageSequence[0].ReferencedSOPClassUID == source.SOPClassUID  # standard UIDs stay
    for original, path in ((source, "source-out.dcm"), (derived, "derived-out.dcm")):
        before = {str(e.value) for _, e in every_element(original) if e.VR == "UI" and e.value} - set(UID_dictionary)
        raw = (tmp_path / path).read_bytes()
        assert before and not any(uid.encode() in raw for uid in before)


def test_dates_shift_by_one_keyed_offset_per_patient(tmp_path, dicom_dir):
    def study(name, patient, date):
        ds = pydicom.dcmread(dicom_dir / "CT_small.dcm")
        ds.PatientID, ds.StudyDate, ds.ContentDate = patient, date, date
        ds.save_as(tmp_path / name)

    study("a1.dcm", "P1", "20200101")
    study("a2.dcm", "P1", "20200311")
    study("b.dcm", "P2", "20200101")
    key = ct_key()
    for name in ("a1", "a2", "b"):
        obfuscate_file(tmp_path / f"{name}.dcm", tmp_path / f"{name}-out.dcm", medveil.from_key(key),
                       burned_in_text="off")
    a1, a2, b = (pydicom.dcmread(tmp_path / f"{n}-out.dcm") for n in ("a1", "a2", "b"))

    def day(value):
        return datetime.datetime.strptime(value, "%Y%m%d").date()

    assert (day(a2.StudyDate) - day(a1.StudyDate)).days == 70  # the interval survives
    assert a1.StudyDate != "20200101" and b.StudyDate != a1.StudyDate  # another patient, another shift
    assert a1.PatientID == a2.PatientID != b.PatientID and a1.PatientID.startswith("MV")
    assert a1.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = {item.CodeValue for item in a1.DeidentificationMethodCodeSequence}
    assert codes == {METHOD_CODES[o][0] for o in ("basic", "modified-dates", "clean-descriptors")}
    assert a1.ImageType[0] == "DERIVED" and (a1.RescaleSlope, a1.RescaleIntercept) == (1, 0)
    assert "PatientBirthDate" not in a1 or not a1.PatientBirthDate


def accepted_test_files(dicom_dir):
    return sorted(p.name for p in dicom_dir.glob("*.dcm"))


def dciodvfy_errors(path):
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return sum(line.startswith("Error") for line in (result.stdout + result.stderr).splitlines())


@needs_dciodvfy
def test_output_validates_no_worse_than_input_for_every_pydicom_test_file(tmp_path, dicom_dir):
    """Every file medveil accepts validates no worse; every file it refuses gets one line naming it."""
    accepted = 0
    for name in accepted_test_files(dicom_dir):
        src = dicom_dir / name
        try:
            image = read_image(src)
            signed = image.pixels.dtype.kind == "i"
            bits = min(max(image.bits, 2), 16)
            key = medveil.generate_key("intensity", bits=bits, signed=signed, levels=min(2 ** bits, 64))
            obfuscate_file(src, tmp_path / name, medveil.from_key(key), burned_in_text="off")
        except InputError as exc:
            assert name in str(exc) and "\n" not in str(exc)
            continue
        accepted += 1
        assert dciodvfy_errors(tmp_path / name) <= dciodvfy_errors(src), name
    assert accepted >= 40


def test_big_endian_dicom_maps_like_its_little_endian_twin(tmp_path, dicom_dir):
    scheme = medveil.from_key(ct_key())
    obfuscate_file(dicom_dir / "MR_small_bigendian.dcm", tmp_path / "be.dcm", scheme, burned_in_text="off")
    obfuscate_file(dicom_dir / "MR_small.dcm", tmp_path / "le.dcm", scheme, burned_in_text="off")
    be, le = pydicom.dcmread(tmp_path / "be.dcm"), pydicom.dcmread(tmp_path / "le.dcm")
    assert be.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert np.array_equal(be.pixel_array, le.pixel_array)


def test_big_endian_npy_maps_like_native(tmp_path, rng):
    values = rng.integers(0, 4096, (16, 16)).astype("<u2")
    np.save(tmp_path / "le.npy", values)
    np.save(tmp_path / "be.npy", values.astype(">u2"))
    scheme = medveil.from_key(medveil.generate_key("intensity", bits=12, levels=100))
    for name in ("le", "be"):
        obfuscate_file(tmp_path / f"{name}.npy", tmp_path / f"{name}-out.npy", scheme, burned_in_text="off")
    assert np.array_equal(np.load(tmp_path / "be-out.npy"), np.load(tmp_path / "le-out.npy"))


@pytest.mark.parametrize("name, reason", [("liver_1frame.dcm", "1-bit"), ("rtdose.dcm", "32-bit")])
def test_binary_masks_and_wide_samples_are_refused_in_one_line(tmp_path, dicom_dir, name, reason):
    scheme = medveil.from_key(ct_key())
    with pytest.raises(InputError, match=reason) as info:
        obfuscate_file(dicom_dir / name, tmp_path / name, scheme, burned_in_text="off")
    assert name in str(info.value) and "\n" not in str(info.value)
    result = CliRunner().invoke(app, ["inspect", str(dicom_dir / name)])
    assert result.exit_code == 0 and "keygen --bits 32" not in result.output and "keygen --bits 1 " not in result.output


def test_nifti_loses_extensions_and_text_but_keeps_geometry(tmp_path):
    src = nib.load(package_dir("nibabel") / "tests" / "data" / "example4d.nii.gz")
    header = src.header.copy()
    header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"patient John Doe, MRN 4711"))
    header["descrip"] = b"John Doe scan"
    header["data_type"] = b"Doe4711"
    planted = nib.Nifti1Image(np.asarray(src.dataobj.get_unscaled()), src.affine, header)
    planted.to_filename(tmp_path / "in.nii")
    obfuscate_file(tmp_path / "in.nii", tmp_path / "out.nii", medveil.from_key(ct_key()), burned_in_text="off")

    assert b"John Doe" not in (tmp_path / "out.nii").read_bytes() and b"Doe4711" not in (tmp_path / "out.nii").read_bytes()
    before, after = nib.load(tmp_path / "in.nii"), nib.load(tmp_path / "out.nii")
    assert len(after.header.extensions) == 0
    assert np.array_equal(after.affine, before.affine)
    assert after.header.get_qform(coded=True)[1] == before.header.get_qform(coded=True)[1]
    assert after.header.get_sform(coded=True)[1] == before.header.get_sform(coded=True)[1]
    assert after.header.get_xyzt_units() == before.header.get_xyzt_units()


def draw_text(plane, lines):
    """``plane`` with ``lines`` ((x, y, text), ...) drawn at its maximum value, as scanners burn them in."""
    canvas = Image.new("L", plane.shape[::-1], 0)
    draw = ImageDraw.Draw(canvas)
    size = max(12, plane.shape[0] // 11)
    for x, y, text in lines:
        draw.text((x, y), text, fill=255, font=ImageFont.load_default(size=size))
    out = plane.copy()
    out[np.asarray(canvas) > 127] = plane.max()
    return out


def read_words(planes):
    return " ".join(box.text for box in burned_in.find_text(planes))


@needs_tesseract
def test_burned_in_name_is_refused_by_default_and_masked_on_request(tmp_path, dicom_dir):
    ds = pydicom.dcmread(dicom_dir / "CT_small.dcm")
    ds.PixelData = draw_text(ds.pixel_array, [(4, 4, "DOE^JOHN"), (4, 108, "MRN 4711")]).tobytes()
    ds.save_as(tmp_path / "text.dcm")
    # A bijective key, so the test can undo the mapping and read what the output really holds.
    scheme = medveil.from_key(medveil.generate_key("intensity", bits=16, signed=True))

    with pytest.raises(InputError, match="text burned into the pixels") as info:
        obfuscate_file(tmp_path / "text.dcm", tmp_path / "refused.dcm", scheme)
    assert "text.dcm" in str(info.value) and not (tmp_path / "refused.dcm").exists()

    obfuscate_file(tmp_path / "text.dcm", tmp_path / "kept.dcm", scheme, burned_in_text="off")
    obfuscate_file(tmp_path / "text.dcm", tmp_path / "masked.dcm", scheme, burned_in_text="mask")
    kept, masked = (pydicom.dcmread(tmp_path / f"{n}.dcm") for n in ("kept", "masked"))
    assert "4711" in read_words(scheme.inverse(kept.pixel_array)[None])  # the check below can fail
    assert "JOHN" not in (plain := read_words(scheme.inverse(masked.pixel_array)[None])) and "4711" not in plain
    assert masked.BurnedInAnnotation == "NO"
    assert METHOD_CODES["clean-pixels"][0] in {item.CodeValue for item in masked.DeidentificationMethodCodeSequence}


@needs_tesseract
def test_header_flag_alone_refuses_and_mask_will_not_pretend(tmp_path, dicom_dir):
    ds = pydicom.dcmread(dicom_dir / "MR_small.dcm")
    ds.BurnedInAnnotation = "YES"
    ds.save_as(tmp_path / "flagged.dcm")
    scheme = medveil.from_key(ct_key())
    for policy, message in (("refuse", "BurnedInAnnotation YES"), ("mask", "OCR finds none")):
        with pytest.raises(InputError, match=message):
            obfuscate_file(tmp_path / "flagged.dcm", tmp_path / f"{policy}.dcm", scheme, burned_in_text=policy)
    obfuscate_file(tmp_path / "flagged.dcm", tmp_path / "off.dcm", scheme, burned_in_text="off")


@needs_tesseract
def test_text_in_png_and_nifti_slices_is_found(tmp_path):
    plane = np.full((128, 128), 40, np.uint8)
    plane[30:100, 30:100] = 120
    Image.fromarray(draw_text(plane, [(4, 4, "DOE^JOHN"), (4, 108, "MRN 4711")])).save(tmp_path / "text.png")
    volume = np.zeros((3, 128, 128), np.int16)  # display planes; stored as NIfTI's (x, y, z)
    volume[1] = draw_text(plane.astype(np.int16), [(4, 4, "DOE^JOHN"), (4, 108, "MRN 4711")])
    stored = np.moveaxis(np.rot90(volume, k=-1, axes=(1, 2)), 0, -1)
    nib.Nifti1Image(np.ascontiguousarray(stored), np.eye(4)).to_filename(tmp_path / "text.nii")
    scheme8 = medveil.from_key(medveil.generate_key("intensity", levels=64))
    with pytest.raises(InputError, match="text burned into the pixels"):
        obfuscate_file(tmp_path / "text.png", tmp_path / "out.png", scheme8)
    with pytest.raises(InputError, match="text burned into the pixels"):
        obfuscate_file(tmp_path / "text.nii", tmp_path / "out.nii", medveil.from_key(ct_key()))
    clean = np.full((128, 128), 40, np.uint8)
    clean[30:100, 30:100] = 120
    assert burned_in.find_text(clean[None]) == []


def test_mask_sets_each_box_to_its_plane_minimum():
    planes = np.arange(2 * 10 * 10, dtype=np.int16).reshape(2, 10, 10) + 5
    box = burned_in.TextBox(plane=1, top=3, left=4, height=2, width=3, text="DOE", confidence=90.0)
    masked = burned_in.mask_text(planes, [box])
    assert (masked[1, 1:7, 2:9] == planes[1].min()).all()  # padded by two pixels each side
    assert np.array_equal(masked[0], planes[0]) and masked[1, 9, 9] == planes[1, 9, 9]


@needs_tesseract
def test_text_on_a_later_page_of_a_long_stack_names_its_plane(monkeypatch):
    monkeypatch.setattr(burned_in, "_PAGE_PIXELS", 400_000)  # two 128x128 planes (both views) per page
    stack = np.full((5, 128, 128), 40, np.uint8)
    stack[:, 30:100, 30:100] = 120
    stack[3] = draw_text(stack[3], [(4, 4, "DOE^JOHN"), (4, 108, "MRN 4711")])
    boxes = burned_in.find_text(stack)
    assert boxes and {box.plane for box in boxes} == {3}


def test_without_tesseracts_model_screening_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(burned_in, "TESSDATA_FOLDERS", ())
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    with pytest.raises(InputError, match="needs Tesseract's English model .*tesseract-ocr-eng"):
        burned_in.find_text(np.zeros((1, 64, 64), np.uint8))


@needs_tesseract
def test_a_forked_worker_reads_text_with_its_own_engine():
    plane = np.full((128, 128), 40, np.uint8)
    plane[30:100, 30:100] = 120
    text = draw_text(plane, [(4, 4, "DOE^JOHN"), (4, 108, "MRN 4711")])[None]
    assert "4711" in read_words(text)  # the parent's engine is loaded before the fork
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        assert pool.submit(read_words, text).result(timeout=60) == read_words(text)


def _implicit_sequence_bytes(tag, items):
    """The value bytes of a sequence as an implicit VR little endian writer stores them (what UN wraps)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    holder = Dataset()
    holder.add_new(tag, "SQ", Sequence(items))
    write_dataset(buffer, holder)
    return buffer.getvalue()[8:]  # without the element's own tag and length


def _element(tag, value, explicit):
    import struct

    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    return head + (b"UN\0\0" if explicit else b"") + struct.pack("<I", len(value)) + value


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit-UN", "implicit"])
def test_un_sequences_free_text_and_frame_labels_are_cleaned(tmp_path, dicom_dir, explicit):
    """Sequences stored as UN are walked like any other; free text the table does not list goes."""
    nested = Dataset()
    nested.PatientName, nested.AccessionNumber, nested.StudyInstanceUID = "DOE^JOHN", "ACC991122", "1.2.3.4.5554321"
    nested.TextValue = "seen by Dr Smith for John Doe"
    ds = pydicom.dcmread(dicom_dir / "CT_small.dcm")
    frame = Dataset()
    frame.FrameContentSequence = Sequence([Dataset()])
    frame.FrameContentSequence[0].FrameLabel = "DOE JOHN 4711"
    ds.PerFrameFunctionalGroupsSequence = Sequence([frame])
    ds.ContentSequence = Sequence([Dataset()])
    ds.ContentSequence[0].TextValue = "history of John Doe"
    if not explicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(tmp_path / "base.dcm", implicit_vr=not explicit, little_endian=True)
    base = (tmp_path / "base.dcm").read_bytes()
    pixel_data = base.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010): the planted elements go before it, in tag order
    planted = (_element(0x0008EEE0, _implicit_sequence_bytes(0x0008EEE0, [nested]), explicit)  # unknown tag
               + _element(0x0008EEE2, b"DOE^JOHN 4711 ", explicit)  # unknown, not a sequence
               + _element(0x00400275, _implicit_sequence_bytes(0x00400275, [nested]), explicit))  # known, stored as UN
    (tmp_path / "in.dcm").write_bytes(base[:pixel_data] + planted + base[pixel_data:])
    read = pydicom.dcmread(tmp_path / "in.dcm")
    assert 0x0008EEE0 in read and 0x00400275 in read  # the file holds what the test means it to
    obfuscate_file(tmp_path / "in.dcm", tmp_path / "out.dcm", medveil.from_key(ct_key()), burned_in_text="off")
    out = (tmp_path / "out.dcm").read_bytes()
    for phi in (b"DOE", b"ACC991122", b"1.2.3.4.5554321", b"Smith", b"John Doe", b"JOHN 4711"):  # digits alone: a keyed UID may hold them
        assert phi not in out, phi
    written = pydicom.dcmread(tmp_path / "out.dcm")
    assert METHOD_CODES["clean-descriptors"][0] in {i.CodeValue for i in written.DeidentificationMethodCodeSequence}


def test_keep_descriptors_reaches_the_folder_runs_workers(tmp_path, dicom_dir):
    """Free text is removed by default; --keep-descriptors keeps it, in worker processes too."""
    from typer.testing import CliRunner

    from medveil.cli import app

    ds = pydicom.dcmread(dicom_dir / "CT_small.dcm")
    ds.PatientName = "DOE^JOHN"
    ds.ContentSequence = Sequence([Dataset()])
    ds.ContentSequence[0].TextValue = "contrast given at 10:32"
    (tmp_path / "in").mkdir()
    for i in range(2):
        ds.save_as(tmp_path / "in" / f"{i}.dcm")
    ct_key().save(tmp_path / "k.key")
    for flags, kept in (([], False), (["--keep-descriptors"], True)):
        out = tmp_path / f"out{len(flags)}"
        done = CliRunner().invoke(app, ["obfuscate", "-k", str(tmp_path / "k.key"), "--workers", "2", "--no-progress",
                                        "--burned-in-text", "off", *flags, str(tmp_path / "in"), str(out)])
        assert done.exit_code == 0, done.output
        written = b"".join(p.read_bytes() for p in out.rglob("*.dcm"))
        assert written.count(b"contrast given") == (2 if kept else 0) and b"DOE" not in written
