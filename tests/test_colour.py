"""Colour through the whole evaluation: datasets, the training pipeline, metrics and attacks."""

import csv

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import medveil
from medveil import metrics
from medveil.attacks import BlackBox, LearnedReconstruction, MinimumDifference, oracle_view
from medveil.cli import app
from medveil.data import load_folder, pseudo_colour
from medveil.data.pipeline import ImageTensors
from medveil.training.loop import TrainConfig


def write_classes(root, rng, n=12, size=24, rgb=False):
    for label, cls in enumerate(("no", "yes")):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 80, (size, size) + ((3,) if rgb else ())).astype(np.uint8) + (120 if label else 0)
            Image.fromarray(img).save(root / cls / f"{i}.png")


def test_pseudo_colour_renders_distinct_channels_and_keeps_labels(tmp_path, rng):
    write_classes(tmp_path / "d", rng)
    gray = load_folder(tmp_path / "d", 16)
    colour = pseudo_colour(gray, "viridis")
    assert colour.images.shape == gray.images.shape + (3,) and colour.channels == 3
    assert colour.name == "d-viridis" and np.array_equal(colour.labels, gray.labels)
    assert not np.array_equal(colour.images[..., 0], colour.images[..., 1])
    brighter = gray.images[0] > gray.images[0].min()  # viridis' green rises with the value
    assert colour.images[0][..., 1][brighter].mean() > colour.images[0][..., 1][~brighter].mean()
    with pytest.raises(medveil.InputError, match="colormap"):
        pseudo_colour(gray, "no-such-map")
    with pytest.raises(medveil.InputError, match="already in colour"):
        pseudo_colour(colour)


def test_rgb_folder_keeps_its_colour(tmp_path, rng):
    write_classes(tmp_path / "d", rng, rgb=True)
    data = load_folder(tmp_path / "d", 16, rgb=True)
    assert data.images.shape == (24, 16, 16, 3) and data.channels == 3
    assert load_folder(tmp_path / "d", 16).images.shape == (24, 16, 16)


def test_colour_tensors_are_channel_first(rng):
    images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x, _ = ImageTensors(images, np.array([0, 1]))[1]
    assert x.shape == (3, 8, 8)
    assert np.allclose(x[2].numpy() * (images[1].max() - images[1].min()) + images[1].min(), images[1][..., 2])


def test_colour_pair_scores(rng):
    a = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    assert metrics.mean_pair_scores(a, a)["ssim"] == pytest.approx(1.0)
    scores = metrics.mean_pair_scores(a, 255 - a)
    assert scores["ssim"] < 0 and scores["ms_ssim"] < 0.2


def test_min_difference_on_colour_skk_beats_the_ciphertext(rng):
    yy, xx = np.mgrid[:32, :32]
    smooth = np.stack([40 + 3 * xx, 60 + 2 * yy, 200 - 2 * xx], axis=-1).astype(np.uint8)[None]
    key = medveil.generate_key("skk", channels=3)
    encrypted = medveil.from_key(key)(smooth)
    recovered = MinimumDifference().reconstruct(encrypted)
    assert recovered.shape == smooth.shape
    # Up to one global negation and channel order, neighbours agree: the structure comes back.
    assert metrics.ssim(smooth[0], encrypted[0], 255, -1) < 0.3
    assert np.abs(np.diff(encrypted[0].astype(int), axis=1)).mean() > 40
    assert np.abs(np.diff(recovered[0].astype(int), axis=1)).mean() < 8


def test_learned_reconstruction_outputs_colour(rng):
    own = rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    with BlackBox(medveil.generate_key("skk", channels=3)) as box:
        attack = LearnedReconstruction(TrainConfig(epochs=1, batch_size=8, progress=False), width=4).fit(oracle_view(box, own))
    assert attack.model.out.out_channels == 3
    assert attack.reconstruct(own[:2]).shape == (2, 16, 16, 3)


def test_utility_cli_on_a_colour_dataset(tmp_path, rng):
    write_classes(tmp_path / "d", rng, n=10)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["evaluate", "utility", "--dataset", str(tmp_path / "d"), "--colour", "magma",
                                      "--size", "16", "--scheme", "skk", "--seeds", "1", "--epochs", "1",
                                      "--no-progress", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["dataset"], r["scheme"]) for r in rows] == [("d-magma", "plain"), ("d-magma", "skk")]
    assert abs(float(rows[1]["ssim"])) < 0.5


def test_attack_cli_on_a_colour_dataset(tmp_path, rng):
    write_classes(tmp_path / "d", rng, n=8)
    runner = CliRunner()
    assert runner.invoke(app, ["keygen", "--scheme", "skk", "--channels", "3", "-o", str(tmp_path / "k.key")]).exit_code == 0
    result = runner.invoke(app, ["attack", "minimum-difference", "--key", str(tmp_path / "k.key"), "--target",
                                 str(tmp_path / "d"), "--colour", "viridis", "--size", "48", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert [(r["dataset"], r["params"]) for r in rows] == [("d-viridis", "channels=3")]


def test_a_key_is_never_laid_over_the_wrong_axes(tmp_path, rng):
    """A grayscale key on an RGB file used to treat (H, W, 3) as H images of W x 3, silently."""
    from PIL import Image

    from medveil.errors import InputError
    from medveil.io import Gate

    gray = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "gray-as-rgb.png")  # as Br35H's JPEGs are
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    scheme = medveil.from_key(medveil.generate_key("skk-smooth", block=4))
    gate = Gate(scheme, "off")
    gate.write(tmp_path / "gray-as-rgb.png", tmp_path / "out.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), scheme(gray))
    with pytest.raises(InputError, match="colour image, but this skk-smooth key is for grayscale images; .*channels=3"):
        gate.write(tmp_path / "colour.png", tmp_path / "refused.png")
    colour_key = medveil.from_key(medveil.generate_key("skk-smooth", block=4, channels=3))
    with pytest.raises(InputError, match="grayscale image, but this skk-smooth key is for colour images"):
        Gate(colour_key, "off").write(tmp_path / "out.png", tmp_path / "again.png")
