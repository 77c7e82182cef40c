import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medveil
from medveil.errors import InputError
from medveil.io import batch, obfuscate_tree, read_image
from medveil.io.batch import default_manifest


def tree_hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def scans(tmp_path, rng, dicom_dir):
    root = tmp_path / "scans"
    for i in range(6):
        folder = root / ("a" if i % 2 else "b") / "deep"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(folder / f"img{i}.png")
    np.save(root / "arr.npy", rng.integers(0, 256, (2, 16, 16), dtype=np.uint8))
    return root


def run(src, dst, key, **kwargs):
    """A folder run that mirrors the names (the tests of pseudonyms say keep_names=False)."""
    kwargs.setdefault("keep_names", True)
    return obfuscate_tree(src, dst, medveil.from_key(key), progress=False, **kwargs)


def test_tree_is_mirrored_and_originals_untouched(tmp_path, scans, key8):
    before = tree_hashes(scans)
    report = run(scans, tmp_path / "out", key8)
    assert report.ok and len(report.done) == 7
    assert tree_hashes(scans) == before
    scheme = medveil.from_key(key8)
    for rel in before:
        assert np.array_equal(read_image(tmp_path / "out" / rel).pixels, scheme(read_image(scans / rel).pixels))


def test_interrupted_run_resumes_without_redoing_or_duplicating(tmp_path, scans, key8, monkeypatch):
    out = tmp_path / "out"
    real = batch.Gate.write
    calls = []

    def dies_on_fourth(gate, src, dst, overwrite=False, durable=True):
        calls.append(src)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(gate, src, dst, overwrite, durable)

    monkeypatch.setattr(batch.Gate, "write", dies_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        run(scans, out, key8)
    monkeypatch.setattr(batch.Gate, "write", real)

    report = run(scans, out, key8)
    assert len(report.skipped) == 3 and len(report.done) == 4 and report.ok
    lines = default_manifest(out).read_text().splitlines()
    sources = [json.loads(line)["source"] for line in lines[1:]]
    assert sorted(sources) == sorted(set(sources)) and len(sources) == 7
    again = run(scans, out, key8)
    assert len(again.skipped) == 7 and not again.done


def test_changed_source_is_redone_and_stale_temporaries_removed(tmp_path, scans, key8, rng):
    out = tmp_path / "out"
    run(scans, out, key8)
    (out / "a" / ".medveil-tmp-dead-img1.png").write_bytes(b"partial")
    Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(scans / "a" / "deep" / "img1.png")
    report = run(scans, out, key8)
    assert report.done == ["a/deep/img1.png"]
    assert not list(out.rglob(".medveil-tmp-*"))


def test_other_key_into_same_output_is_refused(tmp_path, scans, key8):
    run(scans, tmp_path / "out", key8)
    with pytest.raises(InputError, match="records a run with key"):
        run(scans, tmp_path / "out", medveil.generate_key("intensity", levels=50))


def test_bad_files_are_listed_while_good_ones_complete(tmp_path, scans, key8, dicom_dir):
    (scans / "notes.txt").write_text("x")
    (scans / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    shutil.copy(dicom_dir / "CT_small.dcm", scans / "ct.dcm")  # 16-bit data, 8-bit key
    report = run(scans, tmp_path / "out", key8)
    failed = dict(report.failed)
    assert set(failed) == {"notes.txt", "broken.png", "ct.dcm"}
    assert "unsupported format" in failed["notes.txt"]
    assert "cannot read png" in failed["broken.png"]
    assert "this key maps 8-bit ones; a key for them: medveil keygen --scheme intensity --bits 16" in failed["ct.dcm"]
    assert len(report.done) == 7


def test_empty_overlapping_and_foreign_outputs_are_refused(tmp_path, scans, key8):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no files"):
        run(tmp_path / "empty", tmp_path / "out", key8)
    with pytest.raises(InputError, match="must lie outside"):
        run(scans, scans / "out", key8)
    with pytest.raises(InputError, match="must lie outside"):
        run(scans, scans, key8)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("someone's file")
    with pytest.raises(InputError, match="not empty"):
        run(scans, tmp_path / "busy", key8)


def test_workers_give_the_same_output(tmp_path, scans, key8):
    run(scans, tmp_path / "one", key8)
    report = run(scans, tmp_path / "two", key8, workers=2)
    assert report.ok
    one, two = tree_hashes(tmp_path / "one"), tree_hashes(tmp_path / "two")
    assert one == two


def test_the_cli_forks_its_workers_and_they_give_the_same_output(tmp_path, scans, key8):
    import subprocess
    import sys

    probe = ("import medveil.cli; from medveil import parallel; print(parallel.pool_context().get_start_method()); "
             "import torch; print(parallel.pool_context().get_start_method())")
    started = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert started.stdout.split() == ["fork", "spawn"]  # a process with torch's thread pool spawns them
    key8.save(tmp_path / "k.key")
    subprocess.run([sys.executable, "-m", "medveil.cli", "obfuscate", "--key", str(tmp_path / "k.key"), "--workers", "2",
                    "--no-progress", "--keep-names", str(scans), str(tmp_path / "forked")], check=True, capture_output=True)
    run(scans, tmp_path / "one", key8)
    one, forked = tree_hashes(tmp_path / "one"), tree_hashes(tmp_path / "forked")
    assert one == forked


def test_emptied_or_truncated_outputs_are_redone_on_resume(tmp_path, scans, key8):
    out = tmp_path / "out"
    run(scans, out, key8)
    whole = tree_hashes(out)
    (out / "arr.npy").write_bytes(b"")
    cut = out / "a" / "deep" / "img1.png"
    cut.write_bytes(cut.read_bytes()[:40])
    report = run(scans, out, key8)
    assert sorted(report.done) == ["a/deep/img1.png", "arr.npy"] and len(report.skipped) == 5
    assert tree_hashes(out) == whole


def test_what_a_power_cut_can_leave_is_found_and_redone_once(tmp_path, scans, key8):
    """Outputs and records are not synced one by one; a power cut may lose records or leave outputs short."""
    out = tmp_path / "out"
    run(scans, out, key8)
    whole = tree_hashes(out)
    header, *records = default_manifest(out).read_text().splitlines(keepends=True)
    lost, torn = json.loads(records[-1])["source"], json.loads(records[-2])["source"]
    default_manifest(out).write_text(header + "".join(records[:-2]) + records[-2][:30])  # one record torn, one lost
    short = json.loads(records[0])
    (out / short["output"]).write_bytes(b"")
    report = run(scans, out, key8)
    assert sorted(report.done) == sorted({lost, torn, short["source"]}) and report.ok
    assert tree_hashes(out) == whole
    lines = default_manifest(out).read_text().splitlines()[1:]
    assert all(line.endswith("}") for line in lines)  # the torn record is gone from the file
    latest = {entry["source"]: entry for entry in map(json.loads, (line for line in lines if line.endswith("}")))}
    assert len(latest) == 7
    for entry in latest.values():
        assert entry["sha256"] == hashlib.sha256((scans / entry["source"]).read_bytes()).hexdigest()
        assert entry["output_sha256"] == hashlib.sha256((out / entry["output"]).read_bytes()).hexdigest()
    assert len(run(scans, out, key8).skipped) == 7


def test_suffixless_dicom_in_a_folder_run_from_any_directory(tmp_path, dicom_dir, monkeypatch):
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(dicom_dir / "MR_small.dcm", scans / "IM0001")
    monkeypatch.chdir(tmp_path.parent)  # the relative name alone points nowhere from here
    key = medveil.generate_key("intensity", bits=16, signed=True, levels=100)
    report = run(scans, tmp_path / "out", key, burned_in_text="off")
    assert report.ok and report.done == ["IM0001"] and (tmp_path / "out" / "IM0001").is_file()


def test_links_fifos_and_unreadable_entries_are_listed_not_followed(tmp_path, scans, key8):
    import os

    (scans / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (scans / "loop.png").symlink_to(scans / "loop.png")
    (scans / "zero.npy").symlink_to("/dev/zero")
    os.mkfifo(scans / "pipe.png")
    (scans / "linked-folder").symlink_to(scans / "a")
    report = run(scans, tmp_path / "out", key8)  # would hang on the FIFO or /dev/zero if it opened them
    failed = dict(report.failed)
    assert len(report.done) == 7
    assert set(failed) == {"dangling.png", "loop.png", "zero.npy", "pipe.png", "linked-folder"}
    assert all("\n" not in reason and str(scans) in reason for reason in failed.values())


def test_an_empty_manifest_left_by_a_full_disk_does_not_lock_the_folder(tmp_path, scans, key8):
    out = tmp_path / "out"
    default_manifest(out).write_bytes(b"")
    assert run(scans, out, key8).ok and len(json.loads(default_manifest(out).read_text().splitlines()[0])) == 4


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_holds_it(tmp_path, scans, key8):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(f"{default_manifest(out)}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        with pytest.raises(InputError, match="another medveil run \\(pid 4242\\)"):
            run(scans, out, key8)
    assert run(scans, out, key8).ok  # the lock goes with its holder


def test_workers_exit_when_the_run_is_killed(tmp_path, rng, key8):
    import os
    import signal
    import subprocess
    import sys
    import time


    scans = tmp_path / "many"
    scans.mkdir()
    for i in range(1500):
        np.save(scans / f"{i:04d}.npy", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    key8.save(tmp_path / "k.key")
    main = subprocess.Popen([sys.executable, "-m", "medveil.cli", "obfuscate", "--key", str(tmp_path / "k.key"),
                             "--workers", "2", "--burned-in-text", "off", "--no-progress", str(scans),
                             str(tmp_path / "out")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children(pid):
        try:
            return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except FileNotFoundError:
            return []

    deadline = time.monotonic() + 60
    while len(children(main.pid)) < 2 and time.monotonic() < deadline:  # two workers (spawned ones also start a resource tracker)
        time.sleep(0.1)
    left_behind = children(main.pid)
    assert main.poll() is None and len(left_behind) >= 2, "the run ended before it could be killed"
    os.kill(main.pid, signal.SIGKILL)
    main.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
              for pid in left_behind) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [pid for pid in left_behind
             if Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
    assert not alive


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs: a disk that really fills up."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_in_one_line_and_the_rerun_completes_once(tmp_path, rng, key8, small_tmpfs):
    from typer.testing import CliRunner

    from medveil.cli import app

    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (96, 96), dtype=np.uint8)).save(scans / f"{i:02d}.png")  # ~9 KiB each
    key8.save(tmp_path / "k.key")
    filler = small_tmpfs / "filler"
    filler.write_bytes(bytes(200 * 1024))  # leaves room for some outputs, not all
    out = small_tmpfs / "out"
    args = ["obfuscate", "--key", str(tmp_path / "k.key"), "--burned-in-text", "off", "--no-progress", "--keep-names",
            str(scans), str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code in (1, 2) and "Traceback" not in first.output
    assert any("No space left" in line for line in first.output.splitlines())
    filler.unlink()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    sources = [json.loads(line)["source"] for line in default_manifest(out).read_text().splitlines()[1:]]
    assert sorted(set(sources)) == sorted(p.name for p in scans.iterdir())
    for rel in sources:
        assert np.array_equal(read_image(out / rel).pixels, medveil.from_key(key8)(read_image(scans / rel).pixels))


def test_unreadable_files_and_folders_are_listed_for_an_unprivileged_user(tmp_path, rng, key8):
    import os
    import subprocess
    import sys
    import tempfile

    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the folder walk as the user nobody")
    shared = Path(tempfile.mkdtemp(prefix="medveil-perm-"))
    try:
        os.chmod(shared, 0o777)
        scans = shared / "scans"
        (scans / "locked").mkdir(parents=True)
        for name in ("ok.png", "secret.png", "locked/inside.png"):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(scans / name)
        key8.save(shared / "k.key")
        for path in [scans, scans / "ok.png", shared / "k.key"]:
            os.chown(path, 65534, 65534)
        os.chmod(scans / "secret.png", 0)
        os.chmod(scans / "locked", 0)
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "medveil.cli",
             "obfuscate", "--key", str(shared / "k.key"), "--burned-in-text", "off", "--no-progress", str(scans),
             str(shared / "out")], capture_output=True, text=True, timeout=120, cwd=shared,
            env={**os.environ, "HOME": str(shared), "NUMBA_CACHE_DIR": str(shared / "numba")})
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(shared)], check=False)
        shutil.rmtree(shared, ignore_errors=True)
    assert result.returncode == 1, result.stderr
    assert "1 obfuscated" in result.stdout
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 2 and any("secret.png" in line for line in failed) and any("locked" in line for line in failed)
    assert "Traceback" not in result.stderr
