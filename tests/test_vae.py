import csv
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import medveil
from medveil.attacks import BlackBox
from medveil.cli import app
from medveil.nn import ConvVAE, VAELoss
from medveil.schemes.vae import create_vae_key
from medveil.training.vae import train_vae
from medveil.training.loop import TrainConfig


def blobs(rng, n=48, size=16):
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx = rng.integers(4, size - 4, 2)
        out.append(np.where((yy - cy) ** 2 + (xx - cx) ** 2 < 12, 220, 30) + rng.integers(0, 20, (size, size)))
    return np.stack(out).astype(np.uint8)


@pytest.fixture(scope="module")
def trained():
    images = blobs(np.random.default_rng(0))
    model, history = train_vae(images, TrainConfig(epochs=4, batch_size=16, lr=3e-3, progress=False), latent=8)
    return images, model, history


def test_vae_training_lowers_the_loss_and_eval_is_deterministic(trained):
    images, model, history = trained
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    x = ImagePairsInput(images[:4])
    first, second = model(x), model(x)
    assert model.training is False and np.array_equal(first.detach().numpy(), second.detach().numpy())
    assert float(VAELoss(model)(first, x).detach()) > 0


def ImagePairsInput(images):
    import torch

    return torch.from_numpy(images[:, None].astype(np.float32) / 255)


def test_vae_key_and_weights_are_written_together_and_obfuscation_is_deterministic(tmp_path, trained):
    images, model, _ = trained
    key = create_vae_key(model, tmp_path / "owner.key", levels=20, size=16, channels=1)
    weights = tmp_path / "owner.key.vae.pt"
    assert oct(os.stat(weights).st_mode & 0o777) == "0o600" and oct(os.stat(tmp_path / "owner.key").st_mode & 0o777) == "0o600"
    scheme = medveil.from_key(key)
    out = scheme(images[:6])
    assert out.shape == (6, 16, 16) and out.dtype == np.uint8 and out.max() < 20
    assert np.array_equal(out, medveil.from_key(medveil.Key.load(tmp_path / "owner.key"))(images[:6]))
    assert np.array_equal(out[2], scheme(images[2]))
    with BlackBox(key) as box:  # the key travels to another process with its weights file
        assert np.array_equal(box(images[:6]), out)
    with pytest.raises(medveil.KeyFileError, match="already exists"):
        create_vae_key(model, tmp_path / "owner.key", levels=20, size=16, channels=1)


def test_wrong_or_missing_weights_for_a_key_are_errors(tmp_path, trained):
    images, model, _ = trained
    create_vae_key(model, tmp_path / "a.key", levels=20, size=16, channels=1)
    create_vae_key(ConvVAE(16, 1, 8), tmp_path / "b.key", levels=20, size=16, channels=1)
    (tmp_path / "a.key.vae.pt").write_bytes((tmp_path / "b.key.vae.pt").read_bytes())
    with pytest.raises(medveil.SchemeMismatchError, match="do not belong"):
        medveil.from_key(medveil.Key.load(tmp_path / "a.key"))
    (tmp_path / "b.key.vae.pt").unlink()
    with pytest.raises(medveil.KeyFileError, match="missing"):
        medveil.from_key(medveil.Key.load(tmp_path / "b.key"))
    with pytest.raises(medveil.ParameterError, match="vae train"):
        medveil.generate_key("vae", levels=20)


def test_wrong_image_shape_is_refused(tmp_path, trained):
    _, model, _ = trained
    scheme = medveil.from_key(create_vae_key(model, tmp_path / "k.key", levels=20, size=16, channels=1))
    with pytest.raises(medveil.InputError, match=r"\(\.\.\., 16, 16\)"):
        scheme(np.zeros((2, 24, 24), np.uint8))


def test_vae_train_cli_and_utility_with_the_key(tmp_path):
    rng = np.random.default_rng(1)
    for label, cls in enumerate(("no", "yes")):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i, img in enumerate(blobs(rng, 10, 24)):
            Image.fromarray(img // (2 - label)).save(tmp_path / "d" / cls / f"{i}.png")
    runner = CliRunner()
    result = runner.invoke(app, ["vae", "train", "--dataset", str(tmp_path / "d"), "--size", "16", "--levels", "30",
                                 "--latent", "8", "--epochs", "1", "--no-progress", "-o", str(tmp_path / "v.key")])
    assert result.exit_code == 0, result.output
    assert "held-out images: SSIM" in result.output
    result = runner.invoke(app, ["evaluate", "utility", "--dataset", str(tmp_path / "d"), "--size", "16", "--key",
                                 str(tmp_path / "v.key"), "--seeds", "1", "--epochs", "1", "--no-progress",
                                 "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert [(r["scheme"], r["params"]) for r in rows] == [("plain", ""), ("vae", "levels=30")]
