"""medveil's warp-smooth composition: structural, then skk-smooth, under one key."""

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

import medveil
from medveil.errors import ParameterError, SchemeMismatchError
from medveil.keys import Key
from medveil.schemes import SKKSmooth, StructuralDeidentification, WarpSmooth


@pytest.fixture
def images(rng):
    fields = np.stack([gaussian_filter(rng.normal(size=(48, 48)), 3) for _ in range(3)])
    return ((fields - fields.min()) / np.ptp(fields) * 255).astype(np.uint8)


def test_warp_smooth_is_structural_then_skk_smooth_each_under_a_key_of_its_own(images):
    key = medveil.generate_key("warp-smooth", size=24, raster=32, block=4)
    scheme = medveil.from_key(key)
    out = scheme(images)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    assert np.array_equal(medveil.from_key(Key.from_json(key.to_json()))(images), out)  # deterministic per key
    assert not np.array_equal(medveil.from_key(medveil.generate_key("warp-smooth", size=24, raster=32))(images), out)
    assert isinstance(scheme.structural, StructuralDeidentification) and isinstance(scheme.smooth, SKKSmooth)
    assert np.array_equal(scheme.smooth(scheme.structural(images)), out)
    secrets = {key.secret, scheme.structural.key.secret, scheme.smooth.key.secret}
    assert len(secrets) == 3  # neither stage's key is the file's, nor the other's
    drawn = scheme.structural(images)
    assert np.abs(out.astype(int) - drawn).mean() > 15  # skk-smooth changes the drawing: half its positions negated


def test_warp_smooth_refuses_other_keys_and_bad_parameters():
    with pytest.raises(SchemeMismatchError):
        WarpSmooth(medveil.generate_key("skk-smooth"))
    with pytest.raises(ParameterError, match="divisible"):
        medveil.generate_key("warp-smooth", raster=30, block=4)
    with pytest.raises(ParameterError):
        medveil.generate_key("warp-smooth", channels=3)


def test_warp_smooth_through_the_cli(tmp_path, images):
    from medveil.cli import app

    runner = CliRunner()
    key = tmp_path / "k.key"
    made = runner.invoke(app, ["keygen", "--scheme", "warp-smooth", "-p", "size=16", "-p", "raster=32", "-o", str(key)])
    assert made.exit_code == 0, made.output
    (tmp_path / "in").mkdir()
    Image.fromarray(images[0]).save(tmp_path / "in" / "a.png")
    result = runner.invoke(app, ["obfuscate", "--key", str(key), "--burned-in-text", "off", "--keep-names", str(tmp_path / "in"),
                                 str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert np.array_equal(written, medveil.from_key(Key.load(key))(images[0]))
