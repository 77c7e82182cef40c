"""The hospital's DICOM flow: a modality (dcmtk's storescu) -> medveil gateway -> a real Orthanc, and
medveil pull from Orthanc; the config file; de-identify only. Orthanc and dcmtk come from Debian
(`make install` adds them); a test that needs one skips, saying so, where it is absent."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

import medveil
from medveil.cli import app
from medveil.errors import InputError
from medveil.gateway import Pipeline, destination
from medveil.gateway.config import load
from medveil.io import Gate
from orthanc import ORTHANC, PHI, STORESCU, WHY_NO_DCMTK, WHY_NO_ORTHANC, Orthanc, ct_study, free_port, wait_for_port
from test_deid import needs_tesseract

needs_orthanc = pytest.mark.skipif(ORTHANC is None, reason=WHY_NO_ORTHANC)
needs_storescu = pytest.mark.skipif(STORESCU is None, reason=WHY_NO_DCMTK)
MEDVEIL = [sys.executable, "-m", "medveil.cli"]
runner = CliRunner()


@pytest.fixture
def key16(tmp_path):
    path = tmp_path / "ct.key"
    medveil.generate_key("intensity", bits=16, signed=True, levels=300).save(path)
    return path


@pytest.fixture
def orthanc(tmp_path):
    node = Orthanc(tmp_path / "orthanc")
    yield node
    node.stop()


@pytest.fixture
def study(tmp_path, dicom_dir):
    return ct_study(tmp_path / "study", dicom_dir / "CT_small.dcm", instances=50, series=2, text_at=7)


def start_gateway(tmp_path, key, orthanc, port, log):
    process = subprocess.Popen(MEDVEIL + ["gateway", "-k", str(key), "--to", orthanc.node, "--workdir",
                                          str(tmp_path / "work"), "--port", str(port), "--calling-ae", "CT01",
                                          "--log-level", "DEBUG", "--log-json"],
                               stderr=log, stdout=log)
    wait_for_port(port)
    return process


def send_all_and_stop(tmp_path, key, orthanc, port, log, study):
    """Start the gateway, send ``study`` with storescu, wait until each instance is sent or quarantined, stop it."""
    gateway = start_gateway(tmp_path, key, orthanc, port, log)
    sent = storescu(port, study)
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: len({r["instance"] for r in journal(tmp_path) if r["event"] in ("sent", "quarantined")})
               == len(study))
    gateway.send_signal(signal.SIGTERM)
    assert gateway.wait(30) == 0


def storescu(port, paths):
    return subprocess.run([STORESCU, "-aet", "CT01", "-aec", "MEDVEIL", "127.0.0.1", str(port)] + [str(p) for p in paths],
                          capture_output=True, text=True)


def journal(tmp_path) -> list[dict]:
    lines = (tmp_path / "work" / "journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def wait_until(condition, seconds=120.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not finish in time")
        time.sleep(0.05)


def secrets_of(paths) -> list[bytes]:
    """Every planted PHI value and every original UID, as bytes to look for (long enough that no keyed UID
    or run of pixels spells one by chance)."""
    found = [value.encode() for value in PHI.values()]
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found += [ds.SOPInstanceUID.encode(), ds.SeriesInstanceUID.encode(), ds.StudyInstanceUID.encode()]
    return sorted(set(found))


def check_delivered(tmp_path, orthanc, study, key):
    """49 instances in Orthanc, de-identified, obfuscated, with keyed UIDs in one study and two series."""
    ids = orthanc.instances()
    assert len(ids) == len(study) - 1
    files = [pydicom.dcmread(io.BytesIO(orthanc.file(i))) for i in ids]
    planted = secrets_of(study)
    for raw in (orthanc.file(i) for i in ids):
        assert not [s for s in planted if s in raw]
    assert {str(ds.PatientName) for ds in files} != {PHI["PatientName"]}
    assert len({ds.StudyInstanceUID for ds in files}) == 1 and files[0].StudyInstanceUID.startswith("2.25.")
    series = {}
    for ds in files:
        series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    assert sorted(len(members) for members in series.values()) == [24, 25]
    scheme = medveil.from_key(medveil.Key.load(key))
    originals = {int(pydicom.dcmread(p).InstanceNumber): pydicom.dcmread(p).pixel_array for p in study}
    for ds in files:  # obfuscated: the key's codes of the original pixels, not the pixels
        assert np.array_equal(ds.pixel_array, scheme(originals[int(ds.InstanceNumber)]))
        assert not np.array_equal(ds.pixel_array, originals[int(ds.InstanceNumber)])
    quarantined = sorted((tmp_path / "work" / "quarantine").glob("*.dcm"))
    assert len(quarantined) == 1 and pydicom.dcmread(quarantined[0]).InstanceNumber == 8  # the slice with text
    logs = b"".join(p.read_bytes() for p in (tmp_path / "work" / "audit.jsonl", tmp_path / "gateway.log"))
    assert not [s for s in planted if s in logs]
    audit = [json.loads(line) for line in (tmp_path / "work" / "audit.jsonl").read_text().splitlines()]
    assert {a["action"] for a in audit} >= {"received", "forwarded", "quarantined"}
    assert {a["study"] for a in audit} == {files[0].StudyInstanceUID}  # the pseudonym the destination sees
    assert [a["reason"] for a in audit if a["action"] == "quarantined"] == ["burned-in text"]


@needs_orthanc
@needs_storescu
@needs_tesseract
def test_a_study_from_a_modality_reaches_orthanc_through_the_gate(tmp_path, orthanc, study, key16):
    with open(tmp_path / "gateway.log", "wb") as log:
        send_all_and_stop(tmp_path, key16, orthanc, free_port(), log, study)
    check_delivered(tmp_path, orthanc, study, key16)
    assert not list((tmp_path / "work" / "spool").iterdir())  # the plain copies go once delivered


@needs_orthanc
@needs_storescu
@needs_tesseract
def test_a_killed_gateway_resumes_with_nothing_lost_or_sent_twice(tmp_path, orthanc, study, key16):
    port = free_port()
    with open(tmp_path / "gateway.log", "wb") as log:
        gateway = start_gateway(tmp_path, key16, orthanc, port, log)
        modality = subprocess.Popen([STORESCU, "-aet", "CT01", "-aec", "MEDVEIL", "127.0.0.1", str(port)]
                                    + [str(p) for p in study], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: sum(r["event"] == "received" for r in journal(tmp_path)) >= 20)
        gateway.send_signal(signal.SIGKILL)  # mid-study: some received, few forwarded
        gateway.wait()
        modality.wait(60)
        at_kill = journal(tmp_path)
        received = sum(r["event"] == "received" for r in at_kill)
        assert received < len(study) and sum(r["event"] == "sent" for r in at_kill) < received
        # the modality sends the whole study again, as one would after an error
        send_all_and_stop(tmp_path, key16, orthanc, port, log, study)
    records = journal(tmp_path)
    forwarded = [r["instance"] for r in records if r["event"] == "sent"]
    assert len(forwarded) == len(set(forwarded)) == len(study) - 1  # each once, none lost
    assert len({r["instance"] for r in records if r["event"] == "received"}) == len(study)
    check_delivered(tmp_path, orthanc, study, key16)


@needs_orthanc
def test_pull_fetches_a_study_from_orthanc_through_the_gate_into_a_folder_and_the_service(tmp_path, orthanc, dicom_dir,
                                                                                          key16):
    from medveil.service.client import Client
    from medveil.service.server import local_server
    from medveil.service.store import Store

    study = ct_study(tmp_path / "study", dicom_dir / "CT_small.dcm", instances=6, series=2)
    other = ct_study(tmp_path / "other", dicom_dir / "CT_small.dcm", instances=2, series=1)
    for path in study + other:
        orthanc.upload(path)
    token = Store(tmp_path / "srv").create_token("hospital")
    with local_server(tmp_path / "srv") as url:
        def pull(uid, label, workdir):
            return runner.invoke(app, ["pull", "--from", orthanc.node, "--study", uid, "-k", str(key16),
                                       "--to", f"folder:{tmp_path / 'out'}",
                                       "--to", f"service:{url}?dataset=cohort&label={label}&size=32",
                                       "--workdir", str(tmp_path / workdir), "--burned-in-text", "off"],
                                 env={"MEDVEIL_TOKEN": token})

        uid = pydicom.dcmread(study[0]).StudyInstanceUID
        result = pull(uid, "tumour", "work")
        assert result.exit_code == 0, result.output
        assert "6 received, 6 forwarded, 0 quarantined, 0 pending" in result.output
        delivered = sorted((tmp_path / "out").rglob("*.dcm"))
        assert len(delivered) == 6 and len({p.parent for p in delivered}) == 2  # STUDY/SERIES/INSTANCE.dcm
        planted = secrets_of(study)
        assert not [s for s in planted for p in delivered if s in p.read_bytes() or s in str(p).encode()]
        check_in_service(tmp_path / "srv", study, key16)
        again = pull(uid, "tumour", "work")  # pulling again forwards nothing twice
        assert again.exit_code == 0 and "6 received, 6 forwarded" in again.output
        assert len(sorted((tmp_path / "out").rglob("*.dcm"))) == 6
        check_in_service(tmp_path / "srv", study, key16)

        cohort = pull(pydicom.dcmread(other[0]).StudyInstanceUID, "clear", "work-clear")  # the other class
        assert cohort.exit_code == 0, cohort.output
        with Client(url, token, medveil.Key.load(key16)) as client:
            (dataset,) = client.datasets()
            assert (dataset["images"], dataset["classes"], dataset["bits"]) == (8, ["tumour", "clear"], 16)
            assert client.wait(client.train(dataset["id"], epochs=1)["id"], poll=0.2)["status"] == "done"


@needs_orthanc
def test_the_gate_forwards_by_stow_rs(tmp_path, orthanc, dicom_dir, key16):
    if not orthanc.has_dicomweb:
        pytest.skip("Orthanc's DICOMweb plugin is not installed (Debian package orthanc-dicomweb)")
    study = ct_study(tmp_path / "study", dicom_dir / "CT_small.dcm", instances=4, series=1)
    pipeline = Pipeline(Gate(medveil.from_key(medveil.Key.load(key16)), "off"), [destination(orthanc.stow)],
                        tmp_path / "work")
    for path in study:
        pipeline.receive(path.read_bytes(), "CT01")
    assert pipeline.run_pending() == 0
    pipeline.close()
    assert len(orthanc.instances()) == 4


def test_a_config_file_is_checked_field_by_field(tmp_path, key16):
    good = tmp_path / "good.toml"
    good.write_text(f'key = "{key16.name}"\nto = ["folder:out"]\n[gate]\nburned_in_text = "mask"\n'
                    '[listen]\nport = 11113\ncalling_aes = ["CT01"]\n')
    config = load(good)
    assert config.key == key16 and config.burned_in_text == "mask" and config.port == 11113
    assert config.merged(port=104, burned_in_text=None).port == 104  # a flag wins; an absent one does not
    result = runner.invoke(app, ["check-config", str(good)])
    assert result.exit_code == 0 and "ok" in result.output
    for text, message in (('[gate]\nburned_in_text = "maybe"\n', "gate.burned_in_text: must be one of"),
                          ("[listen]\nport = 70000\n", "listen.port: must be at most 65535"),
                          ("[listen]\nportt = 1\n", "unknown field listen.portt"),
                          ("[lisen]\nport = 1\n", "unknown section [lisen]"),
                          ('to = ["dicom://ORTHANC@host"]\n', "to: DICOM node"),
                          ('to = ["ftp:x"]\n', "unknown destination kind 'ftp'"),
                          ("[gate]\nobfuscate = 1\n", "gate.obfuscate: must be true or false"),
                          ("key = \n", "not TOML")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(InputError, match=message.replace("[", r"\[")):
            load(bad)
        result = runner.invoke(app, ["check-config", str(bad)])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and "bad.toml" in result.output


def test_deidentify_keeps_the_pixels_and_their_meaning(tmp_path, dicom_dir, key16):
    source = dicom_dir / "CT_small.dcm"
    result = runner.invoke(app, ["deidentify", str(source), str(tmp_path / "out.dcm"), "-k", str(key16)])
    assert result.exit_code == 0, result.output
    before, after = pydicom.dcmread(source), pydicom.dcmread(tmp_path / "out.dcm")
    assert np.array_equal(before.pixel_array, after.pixel_array)
    assert after.RescaleSlope == before.RescaleSlope and after.RescaleIntercept == before.RescaleIntercept
    assert list(after.ImageType) == list(before.ImageType)  # not DERIVED: the values are the scanner's
    assert after.PatientIdentityRemoved == "YES" and str(after.PatientName) != str(before.PatientName)
    assert after.StudyInstanceUID != before.StudyInstanceUID
    obfuscated = tmp_path / "obf.dcm"
    assert runner.invoke(app, ["obfuscate", str(source), str(obfuscated), "-k", str(key16)]).exit_code == 0
    assert pydicom.dcmread(obfuscated).StudyInstanceUID == after.StudyInstanceUID  # one key, one pseudonym


def test_one_pipeline_per_working_folder(tmp_path, key16):
    gate = Gate(medveil.from_key(medveil.Key.load(key16)), "off")
    first = Pipeline(gate, [destination(f"folder:{tmp_path / 'out'}")], tmp_path / "work")
    with pytest.raises(InputError, match="another medveil run"):
        Pipeline(gate, [destination(f"folder:{tmp_path / 'out'}")], tmp_path / "work")
    first.close()
    Pipeline(gate, [destination(f"folder:{tmp_path / 'out'}")], tmp_path / "work").close()  # free again


def service_dataset(data_dir) -> tuple[np.ndarray, list[str]]:
    """The one dataset a test server holds: its images and their member names."""
    stored = list((data_dir / "datasets").glob("*.npz"))
    assert len(stored) == 1, stored
    with np.load(stored[0]) as data:
        return data["images"], data["names"].tolist()


def check_in_service(data_dir, study, key, size=32):
    """Every instance of ``study`` in the service's dataset once, as the key's codes of the plain slice read
    through the gate at ``size``; no planted PHI, no original UID in anything the server stored."""
    from medveil.data import load_image

    images, names = service_dataset(data_dir)
    assert len(images) == len(set(names)) == len(study)
    scheme = medveil.from_key(medveil.Key.load(key))
    expected = {scheme(load_image(p, size, stored=True)).tobytes() for p in study}
    assert {image.tobytes() for image in images} == expected
    planted = secrets_of(study)
    for path in data_dir.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            assert not [s for s in planted if s in raw or s in str(path).encode()], path


def test_the_gateway_adds_each_instance_to_a_service_dataset_once(tmp_path, dicom_dir, key16, monkeypatch):
    from medveil.service.server import local_server
    from medveil.service.store import Store

    study = ct_study(tmp_path / "study", dicom_dir / "CT_small.dcm", instances=6, series=2)
    monkeypatch.setenv("MEDVEIL_TOKEN", Store(tmp_path / "srv").create_token("hospital"))
    gate = Gate(medveil.from_key(medveil.Key.load(key16)), "off")
    with local_server(tmp_path / "srv") as url:
        spec = f"service:{url}?dataset=cohort&label=tumour&size=32"
        pipeline = Pipeline(gate, [destination(spec, gate)], tmp_path / "work")
        for path in study[:4]:
            pipeline.receive(path.read_bytes(), "CT01")
        journal_line = pipeline.journal.append

        def crash(event, *args, **kwargs):  # the service stored the batch; the process dies before the journal says so
            if event == "sent":
                raise KeyboardInterrupt
            return journal_line(event, *args, **kwargs)

        pipeline.journal.append = crash
        with pytest.raises(KeyboardInterrupt):
            pipeline.run_pending()
        pipeline.close()
        assert len(service_dataset(tmp_path / "srv")[0]) == 4
        pipeline = Pipeline(gate, [destination(spec, gate)], tmp_path / "work")
        for path in study[4:]:
            pipeline.receive(path.read_bytes(), "CT01")
        assert pipeline.run_pending() == 0
        assert pipeline.counts() == {"received": 6, "forwarded": 6, "quarantined": 0, "pending": 0}
        pipeline.close()
    check_in_service(tmp_path / "srv", study, key16)
    with pytest.raises(InputError, match="dataset=NAME&label=CLASS&size=N"):
        destination("service:http://127.0.0.1:1?dataset=x&size=32", gate)  # no label
    with pytest.raises(InputError, match="letters, digits"):
        destination("service:http://127.0.0.1:1?dataset=x&label=Doe Jane&size=32", gate)
    monkeypatch.delenv("MEDVEIL_TOKEN")
    with pytest.raises(InputError, match="MEDVEIL_TOKEN"):
        destination("service:http://127.0.0.1:1?dataset=x&label=a&size=32", gate)
    destination("service:http://127.0.0.1:1?dataset=x&label=a&size=32")  # a config check needs no token
