"""The MLaaS workflow: a real uvicorn server on loopback, the hospital's client, and the server's defences."""

import asyncio
import io
import json
import time
import zipfile
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import medveil
from medveil.training.classification import train_on_images
from medveil.keys import Key
from medveil.data import load_br35h
from medveil.service.client import Client, ServiceError
from medveil.service.server import Limits, create_app, local_server
from medveil.service.store import Store
from medveil.service.tasks import TASKS
from medveil.training.loop import TrainConfig

SIZE = 32


@pytest.fixture(scope="module")
def br35h_subset():
    data = load_br35h(SIZE)
    picks = np.concatenate([np.flatnonzero(data.labels == c)[::25] for c in (0, 1)])  # 60 + 60 images
    return data.subset(np.isin(np.arange(len(data)), picks))


def png_zip(members: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, image in members.items():
            png = io.BytesIO()
            Image.fromarray(image).save(png, "PNG")
            archive.writestr(name, png.getvalue())
    return buffer.getvalue()


def test_end_to_end_on_loopback_matches_local_training_and_stores_no_original(tmp_path, br35h_subset):
    key = medveil.generate_key("intensity", levels=50)
    token = Store(tmp_path / "srv").create_token("hospital")
    with local_server(tmp_path / "srv") as url, Client(url, token, key) as client:
        dataset = client.upload(br35h_subset, "br35h-subset")
        assert dataset["images"] == len(br35h_subset) and dataset["fingerprint"] == key.fingerprint
        job = client.wait(client.train(dataset["id"], epochs=3)["id"], poll=0.5)
        assert job["status"] == "done" and job["progress"] == 1.0
        remote = client.predict(job["model_id"], br35h_subset.images[:20])
        record = client.model(job["model_id"])

    obfuscated = medveil.from_key(key)(br35h_subset.images)
    local, result = train_on_images(obfuscated, br35h_subset.labels, "cnn", TrainConfig(epochs=3, progress=False))
    assert record["val_accuracy"] == pytest.approx(result.best_score)
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.stack([medveil.data.pipeline.minmax(i) for i in obfuscated[:20]]))[:, None]
        local_p = torch.sigmoid(local.eval()(x)).numpy()
    assert np.allclose([p["probability"] for p in remote], local_p, atol=1e-4)

    stored = [np.load(p)["images"] for p in (tmp_path / "srv" / "datasets").glob("*.npz")]
    assert len(stored) == 1 and np.array_equal(stored[0], obfuscated)
    originals = {img.tobytes() for img in br35h_subset.images}
    assert not any(img.tobytes() in originals for img in stored[0])
    assert not list((tmp_path / "srv").rglob("*.png")) and not list((tmp_path / "srv").rglob("*.jpg"))


def test_client_refuses_a_model_trained_under_another_key(tmp_path, br35h_subset):
    token = Store(tmp_path / "srv").create_token("hospital")
    ours, other = medveil.generate_key("skk"), medveil.generate_key("skk")
    with local_server(tmp_path / "srv") as url, Client(url, token, ours) as hospital, Client(url, token, other) as wrong:
        dataset = hospital.upload(br35h_subset.subset(np.arange(len(br35h_subset)) % 4 == 0))
        job = hospital.wait(hospital.train(dataset["id"], epochs=1)["id"], poll=0.2)
        with pytest.raises(medveil.SchemeMismatchError, match="not this key"):
            wrong.predict(job["model_id"], br35h_subset.images[:2])
        assert len(hospital.predict(job["model_id"], br35h_subset.images[:2])) == 2


def train_matched_remotely_and_locally(tmp_path, subset, key, epochs, predicted, while_serving=None):
    """Upload ``subset`` under ``key``, train the matched model on the service and the same one here.

    Returns ``dataset`` and ``record`` (the service's records), ``remote`` and ``local_p`` (the two
    models' probabilities for the first ``predicted`` images), the ``local`` model, its training
    ``result``, and ``extra``: what ``while_serving(client)`` returned.
    """
    token = Store(tmp_path / "srv").create_token("hospital")
    with local_server(tmp_path / "srv") as url, Client(url, token, key) as client:
        dataset = client.upload(subset, "br35h-subset")
        job = client.wait(client.train(dataset["id"], epochs=epochs, model="matched")["id"], poll=0.5)
        assert job["status"] == "done", job["message"]
        remote = [p["probability"] for p in client.predict(job["model_id"], subset.images[:predicted])]
        record = client.model(job["model_id"])
        extra = while_serving(client) if while_serving else None
    obfuscated = medveil.from_key(key)(subset.images)
    local, result = train_on_images(obfuscated, subset.labels, "matched", TrainConfig(epochs=epochs, progress=False),
                                    scheme=key.scheme, params=key.params)
    from medveil.training.classification import model_tensors, predict_probabilities

    local_p, _ = predict_probabilities(local, model_tensors("matched", obfuscated[:predicted], np.zeros(predicted)))
    return SimpleNamespace(dataset=dataset, record=record, remote=remote, local_p=local_p, local=local, result=result,
                           extra=extra)


def test_a_matched_model_learns_the_scheme_from_the_uploaded_public_part(tmp_path, br35h_subset):
    key = medveil.generate_key("intensity", levels=50)

    def upload_without_the_public_part(client):  # an older client
        archive = png_zip({"no/0.png": br35h_subset.images[0], "yes/0.png": br35h_subset.images[1]})
        bare = client.http.post("/datasets", files={"archive": ("d.zip", archive, "application/zip")},
                                data={"fingerprint": key.fingerprint}).json()
        return bare, client.http.post("/jobs", json={"dataset_id": bare["id"], "epochs": 1, "model": "matched"})

    run = train_matched_remotely_and_locally(tmp_path, br35h_subset, key, 2, 10, upload_without_the_public_part)
    bare, refused = run.extra
    assert run.dataset["scheme"] == {"scheme": "intensity", "params": dict(key.params)}  # public, never the secret
    assert type(run.local).__name__ == "CodeEmbeddingCNN" and run.record["val_accuracy"] == pytest.approx(run.result.best_score)
    assert np.allclose(run.remote, run.local_p, atol=1e-4)
    assert bare["scheme"] is None and refused.status_code == 422 and "public scheme" in refused.json()["detail"]


@pytest.mark.parametrize("scheme, params, family", [
    ("warp-smooth", {"size": 16, "raster": SIZE}, "PerPositionCNN"),
    ("block-shuffle", {"block": 8, "remap": 1, "noise": 4}, "BlockBagNet")])
def test_medveil_s_own_schemes_run_through_the_service_with_their_family_model(tmp_path, br35h_subset, scheme, params,
                                                                               family):
    key = medveil.generate_key(scheme, **params)
    run = train_matched_remotely_and_locally(tmp_path, br35h_subset, key, 1, 6)
    assert run.dataset["scheme"] == {"scheme": scheme, "params": dict(key.params)}
    assert type(run.local).__name__ == family
    assert np.allclose(run.remote, run.local_p, atol=1e-4)


@pytest.fixture
def secured(tmp_path):
    app = create_app(tmp_path / "srv", Limits(max_request_bytes=200_000, max_images=50, max_side=64))
    tokens = {t: app.state.store.create_token(t) for t in ("alice", "bob")}
    with TestClient(app) as http:
        yield http, tokens, tmp_path


def _upload(http, token, archive, content_type="application/zip"):
    return http.post("/datasets", headers={"Authorization": f"Bearer {token}"},
                     files={"archive": ("d.zip", archive, content_type)}, data={"fingerprint": "0" * 32})


def test_tokens_and_tenants(secured, rng):
    http, tokens, _ = secured
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/datasets").status_code == 401
    assert http.get("/datasets", headers={"Authorization": "Bearer nope"}).status_code == 401
    images = {f"{c}/{i}.png": rng.integers(0, 256, (16, 16), dtype=np.uint8) for c in ("a", "b") for i in range(3)}
    created = _upload(http, tokens["alice"], png_zip(images))
    assert created.status_code == 201, created.text
    dataset_id = created.json()["id"]
    as_bob = {"Authorization": f"Bearer {tokens['bob']}"}
    theirs = http.get(f"/datasets/{dataset_id}", headers=as_bob)
    missing = http.get(f"/datasets/{'f' * 32}", headers=as_bob)
    assert theirs.status_code == missing.status_code == 404 and theirs.json() == missing.json()
    assert http.post("/jobs", headers=as_bob, json={"dataset_id": dataset_id}).status_code == 404
    assert http.get("/datasets", headers=as_bob).json() == []
    assert [d["id"] for d in http.get("/datasets", headers={"Authorization": f"Bearer {tokens['alice']}"}).json()] == [dataset_id]


def test_limits_and_bad_uploads(secured, rng):
    http, tokens, tmp_path = secured
    token = tokens["alice"]
    noise = {f"{c}/{i}.png": rng.integers(0, 256, (64, 64), dtype=np.uint8) for c in ("a", "b") for i in range(40)}
    assert _upload(http, token, png_zip(noise)).status_code == 413  # > 200 kB
    big = np.zeros((80, 80), np.uint8)
    assert _upload(http, token, png_zip({"a/x.png": big, "b/y.png": big})).status_code == 413  # side
    assert _upload(http, token, png_zip({"a/x.png": np.zeros((8, 8), np.uint8)}), "text/plain").status_code == 415
    assert _upload(http, token, b"not a zip").status_code == 400
    small = np.zeros((8, 8), np.uint8)
    for evil in ("../evil.png", "/abs/evil.png", "a/../../evil.png", "a\\..\\evil.png"):
        response = _upload(http, token, png_zip({evil: small, "b/ok.png": small}))
        assert response.status_code == 400 and "unsafe" in response.json()["detail"]
    assert not list(tmp_path.rglob("evil.png"))
    text = io.BytesIO()
    with zipfile.ZipFile(text, "w") as archive:
        archive.writestr("a/notes.png", b"hello")
        archive.writestr("b/x.png", b"hi")
    response = _upload(http, token, text.getvalue())
    assert response.status_code == 400 and "not a PNG" in response.json()["detail"]


def test_concurrent_predictions_and_a_restart_mid_job(tmp_path, br35h_subset):
    key = medveil.generate_key("intensity", levels=50)
    data_dir = tmp_path / "srv"
    token = Store(data_dir).create_token("hospital")
    with local_server(data_dir) as url, Client(url, token, key) as client:
        dataset = client.upload(br35h_subset)
        model_id = client.wait(client.train(dataset["id"], epochs=1)["id"], poll=0.2)["model_id"]
        obfuscated = client.obfuscate(br35h_subset.images[:1])

        async def burst(n=200):
            png = io.BytesIO()
            Image.fromarray(obfuscated[0]).save(png, "PNG")
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
                responses = await asyncio.gather(*[
                    http.post(f"/models/{model_id}/predict", files=[("files", ("x.png", png.getvalue(), "image/png"))])
                    for _ in range(n)])
            return [r.status_code for r in responses]

        assert asyncio.run(burst()) == [200] * 200
        long_job = client.train(dataset["id"], epochs=60)["id"]
        while client.job(long_job)["epoch"] < 1:
            time.sleep(0.2)
    # The server was killed mid-job; after a restart the job resumes from its checkpoint.
    with local_server(data_dir) as url, Client(url, token, key) as client:
        job = client.job(long_job)
        assert job["status"] in ("queued", "running") and job["message"] == "resumed after a server restart"
        assert job["epoch"] >= 1
        done = client.wait(long_job, poll=0.5)
        assert done["status"] == "done" and done["model_id"]
    with Client(url, token, key) as client, pytest.raises(ServiceError, match="cannot reach"):
        client.job(long_job)  # the server is gone: a clear error, not a traceback


def _patched_zip(rng, how):
    """A two-image archive whose first member is broken in one way a hostile or damaged upload can be."""
    image = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    data = bytearray(png_zip_deflated({"a/x.png": image, "b/y.png": image}))
    central = data.index(b"PK\x01\x02")
    if how == "encrypted":
        data[6] |= 1
        data[central + 8] |= 1
    elif how in ("method9", "method99"):
        method = (9 if how == "method9" else 99).to_bytes(2, "little")
        data[8:10] = method
        data[central + 10: central + 12] = method
    elif how == "crc":
        data[14] ^= 0xFF
        data[central + 16] ^= 0xFF
    elif how == "deflate":
        data[40:60] = bytes(20)
    return bytes(data)


def png_zip_deflated(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, image in members.items():
            png = io.BytesIO()
            Image.fromarray(image).save(png, "PNG", compress_level=0)
            archive.writestr(name, png.getvalue())
    return buffer.getvalue()


@pytest.mark.parametrize("how", ["encrypted", "method9", "method99", "crc", "deflate"])
def test_malformed_archives_answer_400_not_500(secured, rng, how):
    http, tokens, _ = secured
    response = _upload(http, tokens["alice"], _patched_zip(rng, how))
    assert response.status_code == 400, response.text
    assert "a/x.png" in response.json()["detail"] or "not a valid zip" in response.json()["detail"]


def test_what_an_upload_expands_to_is_bounded(tmp_path, rng):
    limits = Limits(max_side=1024, max_decoded_bytes=4 * 1024**2, max_tenant_bytes=5 * 1024**2)
    app = create_app(tmp_path / "srv", limits)
    token = app.state.store.create_token("alice")
    with TestClient(app) as http:
        blank = np.zeros((1024, 1024), np.uint8)
        bomb = png_zip_deflated({f"{c}/{i}.png": blank for c in ("a", "b") for i in range(5)})  # ~10 MiB decoded
        assert len(bomb) < 100_000
        response = _upload(http, token, bomb)
        assert response.status_code == 413 and "expand" in response.json()["detail"]
        lie = io.BytesIO()  # a member far bigger than any PNG the side limit allows
        with zipfile.ZipFile(lie, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("a/x.png", b"\x89PNG" + bytes(8 * 1024**2))
            archive.writestr("b/y.png", b"\x89PNG")
        response = _upload(http, token, lie.getvalue())
        assert response.status_code == 413 and "a/x.png" in response.json()["detail"]
        half = np.zeros((512, 512), np.uint8)
        three = png_zip_deflated({f"{c}/{i}.png": half for c, i in (("a", 0), ("a", 1), ("b", 0), ("b", 1))})
        assert _upload(http, token, three).status_code == 201  # 1 MiB decoded
        assert _upload(http, token, three).status_code == 201
        over = png_zip_deflated({f"{c}/{i}.png": half for c in ("a", "b") for i in range(8)})  # 4 MiB > 3 left
        response = _upload(http, token, over)
        assert response.status_code == 413 and "quota" in response.json()["detail"]


def test_authentication_comes_before_the_body_and_is_documented(secured, rng):
    http, tokens, tmp_path = secured
    garbage = http.post("/datasets", content=b"--x\r\nnot multipart at all", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert garbage.status_code == 401
    assert http.post(f"/models/{'0' * 32}/predict", content=b"x" * 1000).status_code == 401
    spec = http.get("/openapi.json").json()
    upload = spec["paths"]["/datasets"]["post"]["responses"]
    assert {"400", "401", "411", "413", "415"} <= set(upload)
    assert {"401", "404"} <= set(spec["paths"]["/datasets/{dataset_id}"]["get"]["responses"])
    assert (tmp_path / "srv").stat().st_mode & 0o077 == 0


def test_predict_checks_every_header_before_decoding(tmp_path, br35h_subset):
    key = medveil.generate_key("intensity", levels=50)
    app = create_app(tmp_path / "srv")
    token = app.state.store.create_token("h")
    with TestClient(app) as http:
        headers = {"Authorization": f"Bearer {token}"}
        obfuscated = medveil.from_key(key)(br35h_subset.images)
        archive = png_zip({f"{c}/{i}.png": obfuscated[i] for i, c in enumerate(["a", "b"] * 4)})
        dataset = http.post("/datasets", headers=headers, files={"archive": ("d.zip", archive, "application/zip")},
                            data={"fingerprint": key.fingerprint}).json()
        job = http.post("/jobs", headers=headers, json={"dataset_id": dataset["id"], "epochs": 1}).json()
        for _ in range(600):
            if (state := http.get(f"/jobs/{job['id']}", headers=headers).json())["status"] == "done":
                break
            time.sleep(0.1)
        model_id = state["model_id"]

        def png(image):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "PNG")
            return buffer.getvalue()

        good, wide = png(obfuscated[0]), png(np.zeros((SIZE, 4 * SIZE), np.uint8))
        truncated = good[: len(good) // 2]
        files = [("files", ("good.png", good, "image/png")), ("files", ("wide.png", wide, "image/png"))]
        response = http.post(f"/models/{model_id}/predict", headers=headers, files=files)
        assert response.status_code == 400 and "wide.png" in response.json()["detail"]
        response = http.post(f"/models/{model_id}/predict", headers=headers,
                             files=[("files", ("cut.png", truncated, "image/png"))])
        assert response.status_code == 400 and "cut.png" in response.json()["detail"]
        dataset_files = list((tmp_path / "srv" / "datasets").iterdir())
        assert dataset_files and all(p.stat().st_mode & 0o077 == 0 for p in dataset_files)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_or_undocumented_status(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    runner = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if runner is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    token = Store(tmp_path / "srv").create_token("fuzz")
    with local_server(tmp_path / "srv") as url:
        result = subprocess.run([runner, "run", f"{url}/openapi.json", "--checks",
                                 "not_a_server_error,status_code_conformance", "--max-examples", "30",
                                 "--header", f"Authorization: Bearer {token}", "--no-color"],
                                capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:]


def test_docs_render_from_local_assets_with_no_external_url(secured):
    import re

    http = secured[0]
    for page in ("/docs", "/redoc"):
        answer = http.get(page)
        assert answer.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[=:(]\s*['"]([^'"]+)['"]""", answer.text)
        assert urls and not [u for u in urls if re.match(r"(https?:)?//", u)], urls
        for url in urls:  # every asset the page loads is served, without a token
            if not url.startswith("/openapi"):
                assert http.get(url).status_code == 200, url


def test_a_16_bit_ct_folder_goes_through_upload_train_and_predict(tmp_path, rng):
    from typer.testing import CliRunner

    from medveil.cli import app

    scans = tmp_path / "ct"
    for cls, bright in (("clear", 0), ("lesion", 1)):
        (scans / cls).mkdir(parents=True)
        for i in range(16):
            slab = rng.normal(-400, 60, (48, 48))
            if bright:
                slab[10:30, 12:32] += 1400  # a dense lesion: Hounsfield units far beyond 8 bits
            np.save(scans / cls / f"{i}.npy", slab.round().astype(np.int16))
    key_path = tmp_path / "ct.key"
    medveil.generate_key("intensity", bits=16, signed=True, levels=3000).save(key_path)
    token = Store(tmp_path / "srv").create_token("hospital")
    runner = CliRunner()
    with local_server(tmp_path / "srv") as url:
        common = ["client", "--server", url, "--token", token, "--key", str(key_path)]
        upload = runner.invoke(app, common + ["upload", str(scans), "--size", "32"])
        assert upload.exit_code == 0 and "(16-bit codes)" in upload.output, upload.output
        dataset_id = upload.output.split()[1].rstrip(":")
        trained = runner.invoke(app, common + ["train", dataset_id, "--epochs", "2", "--wait"])
        assert trained.exit_code == 0, trained.output
        model_id = trained.output.split("model ")[-1].split()[0].strip(",.")
        job_id = trained.output.split()[1].rstrip(":")
        status = json.loads(runner.invoke(app, common + ["status", "--json", job_id]).output)
        assert status["status"] == "done" and status["model_id"] == model_id
        predicted = runner.invoke(app, common + ["predict", model_id, str(scans / "lesion" / "0.npy"),
                                                 str(scans / "clear" / "0.npy")])
        assert predicted.exit_code == 0 and predicted.output.count("(p=") == 2, predicted.output
    stored = [np.load(p)["images"] for p in (tmp_path / "srv" / "datasets").glob("*.npz")]
    assert stored[0].dtype == np.uint16 and stored[0].shape == (32, 32, 32)
    plain = medveil.data.load_folder(scans, 32, stored=True).images
    assert plain.dtype == np.int16 and plain.min() < -255 and plain.max() > 255  # HU kept, not squeezed to 8 bits
    assert np.array_equal(stored[0], medveil.from_key(Key.load(key_path))(plain))


def test_16_bit_uploads_count_two_bytes_a_sample_and_do_not_mix_with_8_bit(secured, rng):
    http, tokens, tmp_path = secured
    wide = {f"{c}/{i}.png": rng.integers(0, 4096, (16, 16), dtype=np.uint16) for c in "ab" for i in range(3)}
    answer = _upload(http, tokens["alice"], png_zip(wide))
    assert answer.status_code == 201 and answer.json()["bits"] == 16
    store = Store(tmp_path / "srv")
    assert store.stored_bytes("alice") == 6 * 16 * 16 * 2
    mixed = dict(wide, **{"a/8bit.png": rng.integers(0, 256, (16, 16), dtype=np.uint8)})
    refused = _upload(http, tokens["alice"], png_zip(mixed))
    assert refused.status_code == 400 and "one size and mode" in refused.json()["detail"]


def test_a_data_folder_from_before_16_bit_uploads_still_opens(tmp_path):
    import sqlite3

    from medveil.service import store as store_module

    old_schema = store_module.SCHEMA  # the first release had no bits column
    (tmp_path / "srv").mkdir()
    db = sqlite3.connect(tmp_path / "srv" / "medveil-service.sqlite")
    db.executescript(old_schema)
    db.execute("INSERT INTO datasets VALUES ('d1', 'alice', 'old', ?, 10, 64, 1, '[\"a\", \"b\"]', 0)", ("0" * 32,))
    db.commit()
    db.close()
    store = Store(tmp_path / "srv")
    assert store.dataset("alice", "d1")["bits"] == 8 and store.stored_bytes("alice") == 10 * 64 * 64


def test_a_segmentation_job_reaches_the_same_dice_remotely_as_locally(tmp_path):
    from typer.testing import CliRunner

    from medveil.cli import app
    from medveil.data.segmentation import simulate_subjects
    from medveil.training.segmentation import predict_masks, train_segmentation_on_images

    data = simulate_subjects(subjects=8, scans=3, size=32)
    key = medveil.generate_key("intensity", levels=200)
    key_path = key.save(tmp_path / "seg.key")
    token = Store(tmp_path / "srv").create_token("hospital")
    with local_server(tmp_path / "srv") as url, Client(url, token, key) as client:
        dataset = client.upload_segmentation(data.images, data.masks, "simulated")
        assert dataset["task"] == "segmentation" and len(dataset["classes"]) == int(data.masks.max()) + 1
        refused = client._call  # a classifier cannot train on masks
        with pytest.raises(ServiceError, match="422"):
            refused("POST", "/jobs", json={"dataset_id": dataset["id"], "epochs": 1, "model": "cnn"})
        job = client.wait(client.train(dataset["id"], epochs=2)["id"], poll=0.5)
        assert job["status"] == "done" and job["model"] == "unet", job
        record = client.model(job["model_id"])
        remote = client.predict(job["model_id"], data.images[:4])
        np.save(tmp_path / "scan.npy", data.images[0])
        written = CliRunner().invoke(app, ["client", "--server", url, "--token", token, "--key", str(key_path),
                                           "predict", job["model_id"], str(tmp_path / "scan.npy"), "-o",
                                           str(tmp_path / "masks")])
    obfuscated = medveil.from_key(key)(data.images)
    local, result = train_segmentation_on_images(obfuscated, data.masks, len(dataset["classes"]),
                                                 TrainConfig(epochs=2, progress=False))
    assert record["val_dice"] == pytest.approx(result.best_score) and 0 < record["val_dice"] <= 1
    assert np.array_equal(np.stack([p["mask"] for p in remote]), predict_masks(local, obfuscated[:4]))
    assert written.exit_code == 0, written.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "masks" / "scan.mask.png")), remote[0]["mask"])


@pytest.mark.parametrize("how, message", [
    ("missing mask", "every image needs a mask"), ("mask size", "masks must be 8-bit"),
    ("many classes", "at most 16 classes"), ("other folder", "holds images/ and masks/"),
])
def test_segmentation_archives_are_checked_before_anything_is_stored(secured, rng, how, message):
    http, tokens, _ = secured
    members = {f"images/{i}.png": rng.integers(0, 256, (16, 16), dtype=np.uint8) for i in range(3)}
    members |= {f"masks/{i}.png": rng.integers(0, 3, (16, 16), dtype=np.uint8) for i in range(3)}
    if how == "missing mask":
        del members["masks/2.png"]
    elif how == "mask size":
        members["masks/1.png"] = np.zeros((8, 8), np.uint8)
    elif how == "many classes":
        members["masks/0.png"] = np.full((16, 16), 20, np.uint8)
    else:
        members["labels/0.png"] = members.pop("masks/0.png")
    answer = http.post("/datasets", headers={"Authorization": f"Bearer {tokens['alice']}"},
                       files={"archive": ("d.zip", png_zip(members), "application/zip")},
                       data={"fingerprint": "0" * 32, "task": "segmentation"})
    assert answer.status_code == 400 and message in answer.json()["detail"]
    assert http.get("/datasets", headers={"Authorization": f"Bearer {tokens['alice']}"}).json() == []


@pytest.mark.parametrize("zip64", [False, True])
def test_an_archive_declaring_too_many_members_is_refused_before_its_directory_is_parsed(monkeypatch, zip64):
    from fastapi import HTTPException

    from medveil.service import uploads

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        for i in range(150):
            archive.writestr(f"{'ab'[i % 2]}/{i}.png", b"")
    data = buffer.getvalue()
    if zip64:  # the count as a ZIP64 writer records it: 0xFFFF in the end record, the real one in the ZIP64 record
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
            for i in range(150):
                archive.writestr(f"{'ab'[i % 2]}/{i}.png", b"")
            monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 100)  # so closing writes the ZIP64 end records
        data = buffer.getvalue()
        assert b"PK\x06\x06" in data
    monkeypatch.setattr(uploads.zipfile, "ZipFile", lambda *a, **k: pytest.fail("the central directory was parsed"))
    with pytest.raises(HTTPException) as info:
        uploads.read_archive(io.BytesIO(data), Limits(max_images=50), admit=lambda n: None,
                             task=TASKS["classification"])
    assert info.value.status_code == 413 and "declares 150 members" in info.value.detail


def test_member_names_with_dot_segments_are_read_or_refused_not_500(secured, rng):
    http, tokens, _ = secured
    image = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    dotted = png_zip({"./a/0.png": image, "./b/0.png": image, "b/1.png": image})
    response = _upload(http, tokens["alice"], dotted)
    assert response.status_code == 201, response.text
    assert response.json()["images"] == 3
    twice = png_zip({"a/0.png": image, "./a/0.png": image, "b/0.png": image})
    response = _upload(http, tokens["alice"], twice)
    assert response.status_code == 400 and "two members name a/0.png" in response.json()["detail"]


def _concurrently(n, send):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(send, range(n)))


def test_the_quota_holds_under_concurrent_uploads(tmp_path):
    """Twelve uploads of 1 MiB at once against a 5 MiB quota: five are stored, seven answer 413."""
    store = Store(tmp_path / "srv")
    token = store.create_token("alice")
    archive = png_zip_deflated({f"{c}/{i}.png": np.zeros((256, 256), np.uint8) for c in "ab" for i in range(8)})
    with local_server(tmp_path / "srv", options=["--quota-mb", "5"]) as url, httpx.Client(base_url=url, timeout=120) as http:
        answers = _concurrently(12, lambda _: _upload(http, token, archive).status_code)
    assert sorted(answers) == [201] * 5 + [413] * 7, answers
    assert store.stored_bytes("alice") == 5 * 1024**2


def _status_kib(pid, field):
    from pathlib import Path

    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS counters")
def test_peak_memory_under_six_concurrent_uploads_stays_within_one_request_budget(tmp_path):
    """The server shares one decoded-bytes budget across requests: six uploads of 120 MiB decoded at once
    peak at most at twice the idle footprint plus one request's budget (128 MiB)."""
    import os
    from pathlib import Path

    store = Store(tmp_path / "srv")
    token = store.create_token("alice")
    blank = np.zeros((1024, 1024), np.uint8)
    big = png_zip_deflated({f"{c}/{i}.png": blank for c in "ab" for i in range(60)})  # 120 MiB decoded
    small = png_zip_deflated({f"{c}/{i}.png": blank[:64, :64] for c in "ab" for i in range(2)})
    budget = 128
    with local_server(tmp_path / "srv", options=["--request-mb", str(budget), "--total-mb", str(budget)]) as url, \
            httpx.Client(base_url=url, timeout=300) as http:
        pid = int(Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()[-1])
        assert _upload(http, token, small).status_code == 201  # the upload path's imports are loaded
        idle = _status_kib(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak counter starts again from here
        answers = _concurrently(6, lambda _: _upload(http, token, big).status_code)
        peak = _status_kib(pid, "VmHWM")
    assert answers == [201] * 6
    assert peak <= 2 * idle + budget * 1024, f"peak {peak / 1024:.0f} MiB, idle {idle / 1024:.0f} MiB"


def test_records_can_be_deleted_kept_for_a_while_and_tokens_listed_and_revoked(secured, rng):
    from typer.testing import CliRunner

    from medveil.cli import app as cli

    http, tokens, tmp_path = secured
    store = http.app.state.store
    as_alice, as_bob = ({"Authorization": f"Bearer {tokens[t]}"} for t in ("alice", "bob"))
    images = {f"{c}/{i}.png": rng.integers(0, 256, (16, 16), dtype=np.uint8) for c in ("a", "b") for i in range(3)}
    first, second = (_upload(http, tokens["alice"], png_zip(images)).json()["id"] for _ in range(2))
    assert http.delete(f"/datasets/{first}", headers=as_bob).status_code == 404  # not bob's to delete
    assert http.delete(f"/datasets/{first}", headers=as_alice).status_code == 204
    assert http.get(f"/datasets/{first}", headers=as_alice).status_code == 404
    assert not store.dataset_path(first).exists() and store.dataset_path(second).exists()
    job = store.add_job("alice", second, "cnn", 1)  # queued, never run here: its dataset is in use
    assert http.delete(f"/datasets/{second}", headers=as_alice).status_code == 409
    assert http.delete(f"/jobs/{job['id']}", headers=as_alice).status_code == 409
    store.update_job(job["id"], status="failed")
    assert http.delete(f"/jobs/{job['id']}", headers=as_alice).status_code == 204

    store._query("UPDATE datasets SET created = created - 40 * 86400 WHERE id = ?", (second,))
    assert store.purge(older_than_days=30) == 1 and store.datasets("alice") == []

    paths = http.get("/openapi.json").json()["paths"]
    assert all(op.get("tags") for ops in paths.values() for op in ops.values())  # every route in a group
    data = str(tmp_path / "srv")
    listed = CliRunner().invoke(cli, ["token", "list", "--data", data])
    assert listed.exit_code == 0 and len(listed.output.splitlines()) == 2
    assert tokens["bob"] not in listed.output and "bob" in listed.output
    bob_id = next(line.split("\t")[0] for line in listed.output.splitlines() if "\tbob\t" in line)
    assert CliRunner().invoke(cli, ["token", "revoke", bob_id, "--data", data]).exit_code == 0
    assert http.get("/datasets", headers=as_bob).status_code == 401
    again = CliRunner().invoke(cli, ["token", "revoke", bob_id, "--data", data])
    assert again.exit_code == 2 and "no token with id" in again.output


def test_tasks_are_a_registry_the_server_asks():
    from medveil.service.tasks import Task

    assert TASKS.names() == ["classification", "segmentation"]
    with pytest.raises(ValueError, match="registered twice"):
        TASKS.add("segmentation", Task())
    assert {TASKS[name].score for name in TASKS.names()} == {"val_accuracy", "val_dice"}


def _append(http, token, dataset_id, archive, fingerprint="0" * 32):
    return http.post(f"/datasets/{dataset_id}/images", headers={"Authorization": f"Bearer {token}"},
                     files={"archive": ("d.zip", archive, "application/zip")}, data={"fingerprint": fingerprint})


def test_a_dataset_grows_by_appending_and_the_same_images_twice_add_nothing(secured, rng):
    http, tokens, tmp_path = secured
    alice = {"Authorization": f"Bearer {tokens['alice']}"}
    first = {f"tumour/{i}.png": rng.integers(0, 256, (16, 16), dtype=np.uint8) for i in range(3)}
    created = _upload(http, tokens["alice"], png_zip(first))
    assert created.status_code == 201, created.text
    dataset_id = created.json()["id"]
    refused = http.post("/jobs", headers=alice, json={"dataset_id": dataset_id})
    assert refused.status_code == 422 and "two classes" in refused.json()["detail"]

    second = {f"clear/{i + 3}.png": rng.integers(0, 256, (16, 16), dtype=np.uint8) for i in range(2)}
    grown = _append(http, tokens["alice"], dataset_id, png_zip(second | {"tumour/0.png": first["tumour/0.png"]}))
    assert grown.status_code == 200, grown.text
    assert (grown.json()["images"], grown.json()["added"], grown.json()["already_held"]) == (5, 2, 1)
    assert grown.json()["classes"] == ["tumour", "clear"]
    again = _append(http, tokens["alice"], dataset_id, png_zip(second))
    assert (again.json()["images"], again.json()["added"]) == (5, 0)
    with np.load(tmp_path / "srv" / "datasets" / f"{dataset_id}.npz") as stored:
        images, labels = stored["images"], stored["labels"]
    assert np.array_equal(images[3], second["clear/3.png"]) and labels.tolist() == [0, 0, 0, 1, 1]

    third = png_zip({"other/9.png": rng.integers(0, 256, (16, 16), dtype=np.uint8)})
    assert _append(http, tokens["alice"], dataset_id, third).status_code == 400  # a third class
    wrong_size = png_zip({"clear/9.png": rng.integers(0, 256, (24, 24), dtype=np.uint8)})
    assert "dataset's are (16, 1, 8)" in _append(http, tokens["alice"], dataset_id, wrong_size).json()["detail"]
    assert _append(http, tokens["alice"], dataset_id, png_zip(second), "1" * 32).status_code == 400  # another key
    assert _append(http, tokens["bob"], dataset_id, png_zip(second)).status_code == 404  # another tenant's
    assert http.post("/jobs", headers=alice, json={"dataset_id": dataset_id, "epochs": 1}).status_code == 202


def test_an_append_that_could_never_fit_the_budget_is_refused_at_once(tmp_path, rng):
    # the stored dataset is held beside the new images while they are merged: past the whole budget,
    # waiting for memory would end in 503 every time, so it is 413 at once
    limits = Limits(max_decoded_bytes=3000, max_total_decoded_bytes=3000, budget_wait_seconds=60)
    app = create_app(tmp_path / "srv", limits)
    token = app.state.store.create_token("alice")
    with TestClient(app) as http:
        images = lambda k, n: {f"a/{k}-{i}.png": rng.integers(0, 256, (16, 16), dtype=np.uint8) for i in range(n)}
        dataset_id = _upload(http, token, png_zip(images(0, 8))).json()["id"]  # 2048 bytes stored
        grown = _append(http, token, dataset_id, png_zip(images(1, 3)))  # 2048 + 768 held: fits
        assert grown.status_code == 200 and grown.json()["images"] == 11
        started = time.monotonic()
        refused = _append(http, token, dataset_id, png_zip(images(2, 1)))  # 2816 + 256 > 3000
        assert refused.status_code == 413 and "whole decoding budget" in refused.json()["detail"]
        assert time.monotonic() - started < 30


def test_concurrent_appends_to_one_dataset_lose_nothing(tmp_path, rng):
    store = Store(tmp_path / "srv")
    token = store.create_token("alice")
    first = {f"a/{i}.png": rng.integers(0, 256, (16, 16), dtype=np.uint8) for i in range(2)}
    batches = [png_zip({f"b/{k}-{i}.png": rng.integers(0, 256, (16, 16), dtype=np.uint8) for i in range(3)})
               for k in range(8)]
    with local_server(tmp_path / "srv") as url, httpx.Client(base_url=url, timeout=120) as http:
        dataset_id = _upload(http, token, png_zip(first)).json()["id"]
        answers = _concurrently(8, lambda k: _append(http, token, dataset_id, batches[k]).status_code)
        record = http.get(f"/datasets/{dataset_id}", headers={"Authorization": f"Bearer {token}"}).json()
    assert answers == [200] * 8 and record["images"] == 2 + 8 * 3
    with np.load(tmp_path / "srv" / "datasets" / f"{dataset_id}.npz") as data:
        assert len(data["images"]) == len(set(data["names"].tolist())) == 26
