"""The one gate: every way out of the hospital de-identifies, screens and names the same way."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import medveil
from medveil.cli import app
from medveil.errors import InputError
from medveil.io import batch, obfuscate_tree, read_image
from medveil.io.batch import default_manifest
from medveil.io.gate import ENTRY_POINTS, Gate, pseudonym
from test_deid import draw_text, needs_tesseract

PHI = ("DOE^JOHN", "Smith", "MRN4711", "19650304")  # long enough that no run of compressed pixels spells one
PHI_WORDS = ("DOE", "JOHN", "Smith", "4711", "19650304")  # for names, which are text
PHI_FOLDER, PHI_FILE = "DOE^JOHN_MRN4711", "Smith_John_19650304.png"


def plane(rng, value=120):
    image = np.full((128, 128), 40, np.uint8)
    image[30:100, 30:100] = value
    image[40:90, 40:90] = rng.integers(100, 200, (50, 50), dtype=np.uint8)
    return image


@pytest.fixture
def hospital(tmp_path, rng):
    """A class-per-subfolder folder with PHI in a folder's and a file's name, and one slice with a name drawn in."""
    root = tmp_path / "export"
    for cls in ("no", "yes"):
        for i in range(3):
            folder = root / cls / (PHI_FOLDER if i == 0 else "")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(plane(rng, 100 + 20 * i)).save(folder / (PHI_FILE if i == 0 else f"{cls}{i}.png"))
    text = root / "yes" / PHI_FOLDER / "Doe_John_text.png"
    Image.fromarray(draw_text(plane(rng), [(4, 4, "DOE^JOHN"), (4, 108, "MRN 4711")])).save(text)
    return root, text


def shipped_names(root: Path) -> str:
    return " ".join(p.relative_to(root).as_posix() for p in root.rglob("*"))


def shipped_bytes(root: Path) -> bytes:
    """Every name and every byte below ``root``."""
    return b"".join(p.relative_to(root).as_posix().encode() + (p.read_bytes() if p.is_file() else b"")
                    for p in sorted(root.rglob("*")))


def test_every_entry_point_is_tested_here():
    tested = {"medveil obfuscate FILE", "medveil obfuscate FOLDER (one process, --workers, --scheduler, fsspec URLs)",
              "medveil client upload / Client.upload_folder / upload_segmentation_folder",
              "medveil client predict / Client.predict_files", "medveil.data.ObfuscatedFolder",
              "Client.upload / upload_segmentation / predict (arrays the caller made)",
              "medveil.transforms.Obfuscate / ObfuscateD (an image MONAI's LoadImage read from a file)",
              "medveil deidentify FILE / FOLDER (the gate with obfuscate=False)",
              "medveil gateway / medveil pull (medveil.gateway.Pipeline: spool, gate, forward)"}
    assert set(ENTRY_POINTS) == tested


@needs_tesseract
def test_deidentify_and_the_gateway_stop_text_and_phi_too(tmp_path, hospital, key8, dicom_dir):
    import pydicom

    from medveil.gateway import Pipeline, destination

    root, text = hospital
    key8.save(tmp_path / "k.key")
    result = CliRunner().invoke(app, ["deidentify", str(root), str(tmp_path / "plain"), "-k", str(tmp_path / "k.key"),
                                      "--no-progress"])
    assert result.exit_code == 1 and "text burned into the pixels" in result.output
    assert "6 de-identified" in result.output
    assert not [word for word in PHI_WORDS if word in shipped_names(tmp_path / "plain")]

    ds = pydicom.dcmread(dicom_dir / "CT_small.dcm")
    ds.PatientName, ds.PatientID = "DOE^JOHN", "MRN4711"
    clean = ds.copy()
    clean.save_as(tmp_path / "clean.dcm")
    ds.PixelData = draw_text(ds.pixel_array, [(4, 4, "DOE^JOHN"), (4, 108, "MRN 4711")]).tobytes()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "text.dcm")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x00garbage")
    pipeline = Pipeline(Gate(medveil.from_key(medveil.generate_key("intensity", bits=16, signed=True))),
                        [destination(f"folder:{tmp_path / 'out'}")], tmp_path / "work")
    for name in ("clean", "text", "broken"):
        pipeline.receive((tmp_path / f"{name}.dcm").read_bytes(), "CT01")
    assert pipeline.run_pending() == 0
    pipeline.close()
    assert pipeline.counts() == {"received": 3, "quarantined": 2, "forwarded": 1, "pending": 0}
    reasons = sorted(p.read_text() for p in (tmp_path / "work" / "quarantine").glob("*.txt"))
    assert any("text burned into the pixels" in r for r in reasons)
    assert sorted(json.loads(line).get("reason") for line in (tmp_path / "work" / "audit.jsonl").read_text().splitlines()
                  if "quarantined" in line) == ["burned-in text", "unreadable"]
    shipped = shipped_bytes(tmp_path / "out")
    assert shipped and not [word for word in PHI if word.encode() in shipped]
    assert b"DOE" not in (tmp_path / "work" / "audit.jsonl").read_bytes()


@needs_tesseract
def test_drawn_text_and_phi_names_are_stopped_on_every_path_out(tmp_path, hospital, key8):
    from medveil.data import ImageDataset, ObfuscatedFolder
    from medveil.service.client import Client
    from medveil.service.server import local_server
    from medveil.service.store import Store

    root, text = hospital
    key8.save(tmp_path / "k.key")
    runner = CliRunner()

    # medveil obfuscate FILE, into a folder: refused; a clean PHI-named file leaves under a pseudonym.
    (tmp_path / "one").mkdir()
    refused = runner.invoke(app, ["obfuscate", "-k", str(tmp_path / "k.key"), str(text), str(tmp_path / "one")])
    assert refused.exit_code != 0 and "text burned into the pixels" in refused.output
    written = runner.invoke(app, ["obfuscate", "-k", str(tmp_path / "k.key"), str(root / "no" / PHI_FOLDER / PHI_FILE),
                                  str(tmp_path / "one")])
    assert written.exit_code == 0, written.output
    assert [p.name for p in (tmp_path / "one").iterdir()] == [pseudonym_of(key8, PHI_FILE)]

    # medveil obfuscate FOLDER, in one process and with workers: the text fails, no name or digest ships.
    for workers in (1, 2):
        out = tmp_path / f"folder{workers}"
        report = obfuscate_tree(root, out, medveil.from_key(key8), workers=workers, progress=False)
        assert [rel for rel, _ in report.failed] == [text.relative_to(root).as_posix()], report.failed
        assert len(report.done) == 6
        shipped = shipped_bytes(out)
        assert not [word for word in PHI if word.encode() in shipped]
        assert not [word for word in PHI_WORDS if word in shipped_names(out)]
        for source in root.rglob("*.png"):
            digest = hashlib.sha256(source.read_bytes()).hexdigest()
            assert digest.encode() not in shipped  # the manifest, which holds them, is beside the folder
        assert default_manifest(out).is_file() and not list(out.rglob("*.jsonl"))

    # ObfuscatedFolder: the drawn-text item is refused when it is loaded.
    dataset = ObfuscatedFolder(root, key8)
    loaded = [dataset[i] for i, f in enumerate(dataset.files) if f != text]
    assert len(loaded) == 6
    with pytest.raises(InputError, match="text burned into the pixels") as info:
        dataset[dataset.files.index(text)]
    assert str(text) in str(info.value)

    # the transforms, on what MONAI's LoadImage read: the file goes through the gate.
    from monai.transforms import LoadImaged

    from medveil.transforms import ObfuscateD

    loading = LoadImaged(keys="image")
    with pytest.raises(InputError, match="text burned into the pixels"):
        ObfuscateD("image", key8)(loading({"image": str(text)}))
    assert ObfuscateD("image", key8)(loading({"image": str(root / "no" / PHI_FOLDER / PHI_FILE)}))["image"].shape

    # client upload and predict: the text file stops the upload; names never reach the server.
    token = Store(tmp_path / "srv").create_token("hospital")
    sent: list[bytes] = []
    with local_server(tmp_path / "srv") as url, Client(url, token, key8) as client:
        client.http.event_hooks["request"].append(lambda request: sent.append(request.url.raw_path + request.read()))
        with pytest.raises(InputError, match="text burned into the pixels"):
            client.upload_folder(root, 32)
        drawn = np.asarray(Image.open(text))[None]
        with pytest.raises(InputError, match="text burned into the pixels"):
            client.upload(ImageDataset(np.concatenate([drawn, drawn]), np.array([0, 1]), ["a", "b"], np.array([0, 1]),
                                       ["no", "yes"], root, "arrays"))
        with pytest.raises(InputError, match="text burned into the pixels"):
            client.upload_segmentation(drawn, np.zeros_like(drawn))
        with pytest.raises(InputError, match="text burned into the pixels"):
            client.read_images([text], 32)  # what predict_files reads with
        with pytest.raises(InputError, match="text burned into the pixels"):
            client.upload_segmentation_folder(root / "yes", root / "yes", 32)  # masks: any 8-bit gray image will do
        text.unlink()
        record = client.upload_folder(root, 32)
        assert record["name"] == pseudonym_of(key8, root.name)
        job = client.wait(client.train(record["id"], epochs=1)["id"])
        assert job["status"] == "done", job
        assert len(client.predict_files(job["model_id"], [root / "no" / PHI_FOLDER / PHI_FILE])) == 1
        with pytest.raises(InputError, match="text burned into the pixels"):
            client.predict(job["model_id"], drawn)
    assert sent and not any(word.encode() in request for request in sent for word in PHI + ("export",))
    assert not any(word.encode() in shipped_bytes(tmp_path / "srv") for word in PHI + ("export",))
    assert not [word for word in PHI_WORDS + ("export",) if word in shipped_names(tmp_path / "srv")]


def pseudonym_of(key, rel):
    return Gate(medveil.from_key(key)).name(rel)


def test_pseudonyms_are_keyed_stable_grouped_and_keep_the_suffix(key8):
    secret = key8.stream("io/names").read(32)
    a, b = pseudonym(secret, "DOE^JOHN/s1.dcm"), pseudonym(secret, "DOE^JOHN/s2.dcm")
    assert a.split("/")[0] == b.split("/")[0] and a != b  # one patient's folder stays one folder
    assert a.endswith(".dcm") and pseudonym(secret, "x/brain.nii.gz").endswith(".nii.gz")
    assert pseudonym(secret, "DOE^JOHN/s1.dcm") == a
    assert pseudonym(medveil.generate_key("intensity", levels=50).stream("io/names").read(32), "DOE^JOHN/s1.dcm") != a
    assert "DOE" not in a and Gate(medveil.from_key(key8), keep_names=True).name("DOE^JOHN/s1.dcm") == "DOE^JOHN/s1.dcm"


def test_keep_names_mirrors_and_the_manifest_maps_pseudonyms_back(tmp_path, hospital, key8):
    root, text = hospital
    text.unlink()
    scheme = medveil.from_key(key8)
    report = obfuscate_tree(root, tmp_path / "named", scheme, progress=False, burned_in_text="off")
    records = [json.loads(line) for line in default_manifest(tmp_path / "named").read_text().splitlines()[1:]]
    assert report.ok and sorted(r["source"] for r in records) == sorted(report.done)
    for r in records:
        assert np.array_equal(read_image(tmp_path / "named" / r["output"]).pixels,
                              scheme(read_image(root / r["source"]).pixels))
    again = obfuscate_tree(root, tmp_path / "named", scheme, progress=False, burned_in_text="off")
    assert len(again.skipped) == 6  # the same pseudonyms on a second run
    kept = obfuscate_tree(root, tmp_path / "kept", scheme, progress=False, burned_in_text="off", keep_names=True)
    assert kept.ok and (tmp_path / "kept" / "no" / PHI_FOLDER / PHI_FILE).is_file()


def test_an_output_subfolder_linked_into_the_input_is_refused_before_anything_is_written(tmp_path, hospital, key8):
    root, text = hospital
    text.unlink()
    out = tmp_path / "out"
    scheme = medveil.from_key(key8)
    obfuscate_tree(root, out, scheme, progress=False, burned_in_text="off", keep_names=True)
    for done in (out / "no").rglob("*.png"):
        done.unlink()  # a run to resume, whose subfolder someone replaced with a link into the input
    (out / "no" / PHI_FOLDER).rmdir()
    (out / "no").rmdir()
    (out / "no").symlink_to(root / "no")  # writing out/no/x would write root/no/x
    before = {p: p.read_bytes() for p in root.rglob("*.png")}
    report = obfuscate_tree(root, out, scheme, progress=False, burned_in_text="off", keep_names=True)
    failed = dict(report.failed)
    assert sorted(failed) == sorted(p.relative_to(root).as_posix() for p in (root / "no").rglob("*.png"))
    assert all("outside the output folder" in reason for reason in failed.values())
    assert {p: p.read_bytes() for p in root.rglob("*.png")} == before
    assert not list(root.rglob(".medveil-tmp*"))


def test_hidden_files_are_counted_in_the_summary(tmp_path, hospital, key8):
    root, text = hospital
    text.unlink()
    (root / ".DS_Store").write_bytes(b"x")
    (root / "no" / ".hidden.png").write_bytes(b"x")
    key8.save(tmp_path / "k.key")
    result = CliRunner().invoke(app, ["obfuscate", "-k", str(tmp_path / "k.key"), "--no-progress",
                                      "--burned-in-text", "off", str(root), str(tmp_path / "out")])
    assert result.exit_code == 0 and "2 hidden left out" in result.output, result.output


def npy_folder(root, rng, n):
    root.mkdir()
    for i in range(n):
        np.save(root / f"{i:02d}.npy", rng.integers(0, 256, (16, 16), dtype=np.uint8))
    return root


def test_a_full_disk_on_the_manifest_fails_those_files_and_leaves_no_torn_line(tmp_path, rng, key8):
    """Appending a record that does not fit fails that file in one line; the rest go on; the resume completes."""
    scans = npy_folder(tmp_path / "scans", rng, 40)
    scheme = medveil.from_key(key8)
    manifest = tmp_path / "m.jsonl"
    real_write, budget = os.write, [3000]

    def disk_fills(fd, data):  # the manifest's disk has 3000 bytes left: a record is written short, then nothing
        if os.readlink(f"/proc/self/fd/{fd}") != str(manifest):
            return real_write(fd, data)
        room = max(0, min(len(data), budget[0]))
        if room == 0:
            raise OSError(28, "No space left on device")
        budget[0] -= room
        return real_write(fd, data[:room])

    os.write = disk_fills
    try:
        first = obfuscate_tree(scans, tmp_path / "out", scheme, progress=False, burned_in_text="off", manifest=manifest)
    finally:
        os.write = real_write
    assert first.failed and first.done and len(first.failed) + len(first.done) == 40
    assert all("could not be written" in reason and "\n" not in reason for _, reason in first.failed)
    lines = manifest.read_text().splitlines()
    assert all(json.loads(line) for line in lines) and len(lines) == 1 + len(first.done)
    second = obfuscate_tree(scans, tmp_path / "out", scheme, progress=False, burned_in_text="off", manifest=manifest)
    assert second.ok and len(second.done) == len(first.failed) and len(second.skipped) == len(first.done)
    sources = [json.loads(line)["source"] for line in manifest.read_text().splitlines()[1:]]
    assert sorted(sources) == sorted(p.name for p in scans.iterdir())


def test_a_torn_record_left_by_a_crash_is_removed_on_resume(tmp_path, rng, key8):
    scans = npy_folder(tmp_path / "scans", rng, 4)
    scheme = medveil.from_key(key8)
    obfuscate_tree(scans, tmp_path / "out", scheme, progress=False, burned_in_text="off")
    manifest = default_manifest(tmp_path / "out")
    header, *records = manifest.read_text().splitlines(keepends=True)
    manifest.write_text(header + "".join(records[:-1]) + records[-1][:25])
    again = obfuscate_tree(scans, tmp_path / "out", scheme, progress=False, burned_in_text="off")
    assert len(again.done) == 1 and len(again.skipped) == 3
    assert all(line.endswith("}") for line in manifest.read_text().splitlines())


def test_the_text_policy_is_checked_once_before_any_work(tmp_path, hospital, key8):
    root, _ = hospital
    key8.save(tmp_path / "k.key")
    result = CliRunner().invoke(app, ["obfuscate", "-k", str(tmp_path / "k.key"), "--burned-in-text", "maybe",
                                      str(root), str(tmp_path / "out")])
    assert result.exit_code != 0 and "burned-in text policy" in result.output
    assert not (tmp_path / "out").exists() and not default_manifest(tmp_path / "out").exists()
    with pytest.raises(InputError, match="burned-in text policy"):
        batch.obfuscate_tree(root, tmp_path / "out", medveil.from_key(key8), burned_in_text="maybe")
