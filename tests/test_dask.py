"""Folder runs on a Dask distributed cluster (LocalCluster on loopback, 2 worker processes)."""

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medveil
from medveil.io import obfuscate_tree
from medveil.io import files as files_io
from medveil.io import remote as remote_io
from medveil.io.batch import default_manifest

distributed = pytest.importorskip("distributed")


def make_scans(root, rng, n, size=24):
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"img{i:03d}.png")
    return root


def outputs(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def manifest_records(root):
    records = [json.loads(line) for line in default_manifest(root).read_text().splitlines()[1:]]
    return sorted((r["source"], r["sha256"], r["output_sha256"]) for r in records)


def test_a_folder_through_dask_matches_a_local_run_and_its_manifest(tmp_path, rng, monkeypatch):
    scans = make_scans(tmp_path / "scans", rng, 8)
    scheme = medveil.from_key(medveil.generate_key("intensity", levels=50))
    local = obfuscate_tree(scans, tmp_path / "local", scheme, progress=False, burned_in_text="off")
    remote = obfuscate_tree(scans, tmp_path / "dask", scheme, workers=2, progress=False, burned_in_text="off",
                            scheduler="local")
    assert local.ok and remote.ok and sorted(remote.done) == sorted(local.done)
    assert outputs(tmp_path / "dask") == outputs(tmp_path / "local")
    assert manifest_records(tmp_path / "dask") == manifest_records(tmp_path / "local")
    shipped = {r["source"]: r["output"] for r in map(json.loads, default_manifest(tmp_path / "dask").read_text().splitlines()[1:])}
    (tmp_path / "dask" / shipped[local.done[0]]).write_bytes(b"")  # an output a power cut left empty

    def reads_here(path):  # workers read the files; this process only keeps the manifest
        raise AssertionError(f"the client read {path}")

    monkeypatch.setattr(files_io, "sha256_file", reads_here)
    again = obfuscate_tree(scans, tmp_path / "dask", scheme, workers=2, progress=False, burned_in_text="off",
                           scheduler="local")
    assert again.done == [local.done[0]] and len(again.skipped) == 7  # resumes as a local run does
    assert outputs(tmp_path / "dask") == outputs(tmp_path / "local")


def test_a_worker_killed_mid_run_loses_nothing_and_duplicates_nothing(tmp_path, rng):
    scans = make_scans(tmp_path / "scans", rng, 12, size=96)
    scheme = medveil.from_key(medveil.generate_key("intensity", levels=50))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        pids = list(client.run(os.getpid).values())

        def slow_files():  # a local function, so Dask sends it by value; each file then takes 0.2 s or more
            from medveil.io import batch

            def slow(*args, **kwargs):
                time.sleep(0.2)
                return fast(*args, **kwargs)

            fast, batch.Gate.write = batch.Gate.write, slow

        client.run(slow_files)
        result = {}
        run = threading.Thread(target=lambda: result.update(report=obfuscate_tree(
            scans, tmp_path / "out", scheme, progress=False, burned_in_text="off", scheduler=cluster.scheduler_address)))
        run.start()
        manifest = default_manifest(tmp_path / "out")
        deadline = time.monotonic() + 120
        while not (manifest.exists() and len(manifest.read_text().splitlines()) > 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(manifest.read_text().splitlines()) < 12  # mid-run: some files done, most not
        os.kill(pids[0], signal.SIGKILL)
        run.join(timeout=300)
    report = result["report"]
    assert report.ok and len(report.done) == 12, report.failed
    records = manifest_records(tmp_path / "out")
    assert len(records) == 12 and len({r[0] for r in records}) == 12
    assert not list((tmp_path / "out").rglob(".medveil-tmp*"))
    local = obfuscate_tree(scans, tmp_path / "local", scheme, progress=False, burned_in_text="off")
    assert local.ok and outputs(tmp_path / "out") == outputs(tmp_path / "local")


def test_the_bench_through_dask_gives_the_same_cells_as_a_serial_run(tmp_path, rng):
    from medveil.bench import Profile, run_grid
    from medveil.schemes import Setting
    from test_bench import tiny_dataset

    data = tiny_dataset(tmp_path / "d", rng)
    profile = Profile("test", size=48, epochs=1, seeds=1, attack_epochs=1, settings=(
        Setting("plain"), Setting("intensity", (("levels", 50),)), Setting("skk")),
        attacks=frozenset({"code-cooccurrence", "leading-bit", "known-pairs", "chosen-plaintext"}))  # oracle: a child process
    serial = run_grid(data, profile, tmp_path / "serial", progress=False, threads=1)
    (tmp_path / "dask").mkdir()
    shutil.copy(tmp_path / "serial" / "bench.secret", tmp_path / "dask" / "bench.secret")  # the same keys
    remote = run_grid(data, profile, tmp_path / "dask", progress=False, threads=1, scheduler="local", workers=2)
    assert [r["status"] for r in serial] == [r["status"] for r in remote] == ["done"] * len(serial)
    assert len(serial) >= 6

    def cells(root):
        return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k != "seconds"}
                for p in sorted((root / "cells").glob("*.json"))}

    assert cells(tmp_path / "dask") == cells(tmp_path / "serial")
    fingerprints = [r["result"]["key"] for r in serial if r["cell"].setting.scheme != "plain"]
    assert len(set(fingerprints)) == len(fingerprints)  # every cell its own key
    figures = sorted(p.name for p in (tmp_path / "dask" / "figures").iterdir())
    assert figures == sorted(p.name for p in (tmp_path / "serial" / "figures").iterdir()) and figures


def test_fsspec_urls_memory_and_file_give_a_local_run_s_bytes(tmp_path, rng, monkeypatch):
    import io

    import fsspec

    memory = fsspec.filesystem("memory")
    scans = make_scans(tmp_path / "scans", rng, 6)
    for path in sorted(scans.rglob("*.png")):
        memory.pipe(f"/medveil-test/scans/{path.relative_to(scans).as_posix()}", path.read_bytes())
    memory.pipe("/medveil-test/scans/b/broken.png", b"not a png")
    scheme = medveil.from_key(medveil.generate_key("intensity", levels=50))
    local = obfuscate_tree(scans, tmp_path / "local", scheme, progress=False, burned_in_text="off")
    kept = tmp_path / "memory.manifest.jsonl"  # the record stays local; nothing but outputs is uploaded
    try:
        remote = obfuscate_tree("memory://medveil-test/scans", "memory://medveil-test/out", scheme, progress=False, manifest=kept,
                                burned_in_text="off")
        assert sorted(remote.done) == sorted(local.done) and len(remote.failed) == 1
        assert remote.failed[0][1].startswith("memory://medveil-test/scans/b/broken.png: ")  # the URL, not a temporary
        got = {p[len("/medveil-test/out/"):]: memory.cat_file(p) for p in memory.find("/medveil-test/out")
               if p.endswith(".png")}
        assert got == outputs(tmp_path / "local")
        assert all(p.endswith(".png") for p in memory.find("/medveil-test/out"))
        manifest = kept.read_text()
        records = sorted((r["source"], r["sha256"], r["output_sha256"]) for r in map(json.loads, manifest.splitlines()[1:]))
        assert records == manifest_records(tmp_path / "local")
        again = obfuscate_tree("memory://medveil-test/scans", "memory://medveil-test/out", scheme, progress=False, manifest=kept,
                               burned_in_text="off")
        assert not again.done and len(again.skipped) == 6
        named = {json.loads(line)["source"]: json.loads(line)["output"] for line in manifest.splitlines()[1:]}
        Image.open(io.BytesIO(got[named["a/img001.png"]])).verify()
        memory.pipe(f"/medveil-test/out/{named['a/img001.png']}", b"changed")
        hashed, sha256_file = [], files_io.sha256_file

        def counted(path):
            hashed.append(Path(path))
            return sha256_file(path)

        for module in (files_io, remote_io):
            monkeypatch.setattr(module, "sha256_file", counted)
        redo = obfuscate_tree("memory://medveil-test/scans", "memory://medveil-test/out", scheme, progress=False, manifest=kept,
                              burned_in_text="off")
        assert redo.done == ["a/img001.png"] and len(redo.skipped) == 5
        staged_sources = [path for path in hashed if path.parent.name == "in"]
        assert len(staged_sources) == 7 == len(set(staged_sources))  # each source (broken.png too) hashed once
    finally:
        memory.rm("/medveil-test", recursive=True)
    # file:// URLs are local folders, on Dask workers too.
    url = obfuscate_tree(scans.as_uri(), (tmp_path / "url").as_uri(), scheme, workers=2, progress=False,
                         burned_in_text="off", scheduler="local")
    assert url.ok and outputs(tmp_path / "url") == outputs(tmp_path / "local")


def test_a_local_folder_into_a_remote_one_goes_through_staging(tmp_path, rng):
    import fsspec

    memory = fsspec.filesystem("memory")
    scans = make_scans(tmp_path / "scans", rng, 4)
    scheme = medveil.from_key(medveil.generate_key("intensity", levels=50))
    obfuscate_tree(scans, tmp_path / "local", scheme, progress=False, burned_in_text="off")
    try:
        with pytest.raises(medveil.errors.InputError, match="needs --manifest"):
            obfuscate_tree(scans, "memory://medveil-test-2/out", scheme, progress=False, burned_in_text="off")
        mixed = obfuscate_tree(scans, "memory://medveil-test-2/out", scheme, progress=False, burned_in_text="off",
                               manifest=tmp_path / "mixed.jsonl")
        assert mixed.ok and len(mixed.done) == 4
        assert {p[len("/medveil-test-2/out/"):]: memory.cat_file(p) for p in memory.find("/medveil-test-2/out")
                if p.endswith(".png")} == outputs(tmp_path / "local")
        memory.pipe("/medveil-test-2/other/x.txt", b"x")
        with pytest.raises(medveil.errors.InputError, match="not empty and its manifest"):
            obfuscate_tree(scans, "memory://medveil-test-2/other", scheme, progress=False, burned_in_text="off",
                           manifest=tmp_path / "other.jsonl")
    finally:
        memory.rm("/medveil-test-2", recursive=True)


def test_local_workers_keep_image_sized_arrays_off_mmap():
    from medveil.parallel.cluster import dask_client
    from medveil.parallel.memory import MALLOC_THRESHOLDS

    with dask_client("local", 1) as client:
        environs = client.run(lambda: {name: os.environ.get(name) for name in MALLOC_THRESHOLDS})
    assert list(environs.values()) == [{name: str(value) for name, value in MALLOC_THRESHOLDS.items()}]
