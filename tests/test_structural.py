import csv

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import medveil
from medveil import metrics
from medveil.attacks import BlackBox, StructuralChosenPlaintext, oracle_view
from medveil.cli import app
from medveil.evaluation.structural import SDIM_COLUMNS
from medveil.keys import Key
from medveil.schemes.structural import OPE_RANGE, order_preserving_map


def disc(size=48, radius=12, centre=(24, 24), fg=220, bg=30):
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2
    return np.where(inside, fg, bg).astype(np.uint8)


def structural(**params):
    return medveil.from_key(medveil.generate_key("structural", **params))


def test_ope_map_is_strictly_increasing_deterministic_per_key_and_key_dependent():
    key, other = (medveil.generate_key("structural") for _ in range(2))
    table = order_preserving_map(key.stream("ope/50"), 151)
    assert table.shape == (151,) and (np.diff(table) > 0).all()
    assert 0 <= table[0] and table[-1] < OPE_RANGE
    assert np.array_equal(table, order_preserving_map(key.stream("ope/50"), 151))
    assert not np.array_equal(table, order_preserving_map(other.stream("ope/50"), 151))
    scheme = medveil.from_key(key)
    values = np.linspace(-10, 60, 500)
    assert (np.diff(scheme.encrypt_coordinates(values)) > 0).all()  # also between grid points
    assert scheme.encrypt_coordinates(np.array([0.0]))[0] == 0  # paper SD's offset E(0)


def test_a_fixed_secret_gives_a_fixed_map():
    # The map must not change with library versions: pin one value for a fixed secret.
    key = Key("structural", {"size": 8, "raster": 16, "channels": 1}, bytes(range(32)))
    mapped = medveil.from_key(key).encrypt_coordinates(np.arange(9.0))
    assert mapped.tolist() == [0, 9112, 11284, 25027, 43390, 50950, 51796, 58091, 65602]


def test_identity_round_trip_of_a_simple_shape_keeps_it():
    scheme = structural(size=48, raster=48)
    shape = disc()
    traced = scheme.deidentify(shape, lambda v: v)
    assert traced.shape == shape.shape
    assert metrics.ssim(shape, traced, 255) > 0.9


def test_scheme_is_deterministic_per_key_and_differs_between_keys(rng):
    images = np.stack([disc(centre=(20 + 4 * i, 24)) for i in range(3)])
    a, b = structural(size=32, raster=40), structural(size=32, raster=40)
    out = a(images)
    assert out.shape == (3, 40, 40) and out.dtype == np.uint8
    assert np.array_equal(out, medveil.from_key(a.key)(images))
    assert np.array_equal(out[1], a(images[1]))
    assert not np.array_equal(out, b(images))
    colour = structural(size=32, raster=40, channels=3)(np.repeat(images[..., None], 3, axis=-1))
    assert colour.shape == (3, 40, 40, 3)


def test_bad_input_and_parameters_are_refused():
    scheme = structural()
    with pytest.raises(medveil.InputError, match="8-bit"):
        scheme(np.zeros((16, 16), np.uint16))
    with pytest.raises(medveil.InputError, match=r"\(\.\.\., H, W, 3\)"):
        structural(channels=3)(np.zeros((16, 16), np.uint8))
    with pytest.raises(medveil.ParameterError, match="raster"):
        medveil.generate_key("structural", raster=4)
    with pytest.raises(medveil.ParameterError, match="takes no parameter levels"):
        medveil.generate_key("structural", levels=3)


def test_sdim_formulas_against_hand_computed_values():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[0, 0] = 255
    assert metrics.l2_norm(a, b) == pytest.approx(0.25)  # sqrt(1/16)
    # Paper SD, Table 2, 32x32 row: SSIM_Dei 0.3477, L2norm_Dei 0.2949 -> DI 0.3213; SSIM_Pos -0.3196 -> SDIM 0.0017.
    assert metrics.deidentification_indicator(0.3477, 0.2949) == pytest.approx(0.3213)
    assert metrics.deidentification_indicator(0.3477, 0.2949, alpha=1) == pytest.approx(0.3477)
    with pytest.raises(medveil.InputError):
        metrics.deidentification_indicator(0.3, 0.2, alpha=2)
    original = np.stack([disc(), disc(radius=8)])
    darker = (original * 0.5).astype(np.uint8)
    scores = metrics.structural_scores(original, original, darker)
    assert scores["ssim_vec"] == pytest.approx(1.0)
    ssim_dei = np.mean([metrics.ssim(o, d, 255) for o, d in zip(original, darker)])
    l2 = np.mean([np.sqrt(np.mean(((o.astype(float) - d) / 255) ** 2)) for o, d in zip(original, darker)])
    assert scores["ssim_dei"] == pytest.approx(ssim_dei) and scores["l2_dei"] == pytest.approx(l2)
    assert scores["ssim_pos"] == pytest.approx(ssim_dei - 1)
    assert scores["sdim"] == pytest.approx(ssim_dei - 1 + 0.5 * ssim_dei + 0.5 * l2)


def test_chosen_plaintext_measures_the_warp_and_undoes_it():
    key = medveil.generate_key("structural", size=32, raster=64)
    scheme = medveil.from_key(key)
    with BlackBox(key) as box:
        attack = StructuralChosenPlaintext(32, 64).fit(oracle_view(box, np.zeros((0, 32, 32), np.uint8)))
        assert box.queries == 31
    truth = scheme.encrypt_coordinates(np.arange(33.0))
    truth = truth / truth[-1] * 64
    error = np.abs(attack.positions - truth)  # in output pixels
    assert error[4:29].max() < 1.5  # near the borders the vectorizer drops thin stripes: interpolated there
    target = np.stack([disc(32, 7, (12, 18)), disc(32, 9, (20, 12))])
    traced = np.stack([scheme.deidentify(t, lambda v: v) for t in target])
    deidentified = scheme(target)
    recovered = attack.reconstruct(deidentified)
    assert metrics.mean_pair_scores(traced, recovered, False)["ssim"] > metrics.mean_pair_scores(traced, deidentified, False)["ssim"]


def test_structural_tune_cli_writes_the_sweep_and_recommends_a_size(tmp_path):
    for label, cls in enumerate(("no", "yes")):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(disc(40, 6 + 3 * i + label, (20, 14 + 4 * i))).save(tmp_path / "d" / cls / f"{i}.png")
    result = CliRunner().invoke(app, ["structural", "tune", "--dataset", str(tmp_path / "d"), "--sizes", "16,24",
                                      "--raster", "32", "--images", "4", "--keys", "2", "--no-progress", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "sdim.csv")))
    assert list(rows[0]) == SDIM_COLUMNS and [r["size"] for r in rows] == ["16", "24"]
    best = min(rows, key=lambda r: float(r["sdim"]))["size"]
    assert f"recommended input size: {best}" in result.output


def test_coordinates_are_rewritten_path_by_path_as_the_plain_loop_does(rng):
    import re

    from medveil.data import load_br35h
    from medveil.schemes.structural import _NUMBER, _PATH, shift_coordinates, vectorize

    def one_path_at_a_time(svg, transform, width, height):  # the reading of the format, written plainly
        parts = []
        for d, fill, tx, ty in _PATH.findall(svg):
            numbers = np.array(_NUMBER.findall(d), dtype=np.float64)
            numbers[0::2] += float(tx)
            numbers[1::2] += float(ty)
            shifted = iter(f"{v:.3f}" for v in transform(numbers))
            parts.append(f'<path d="{_NUMBER.sub(lambda _: next(shifted), d)}" fill="{fill}"/>')
        w, h = transform(np.array([width, height], dtype=np.float64))
        return (f'<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="{w:.3f}" height="{h:.3f}" '
                f'viewBox="0 0 {w:.3f} {h:.3f}">' + "".join(parts) + "</svg>")

    scheme = structural(size=50)
    images = load_br35h(64).images[::300]
    for image in [disc(), *(np.asarray(Image.fromarray(i).resize((50, 50))) for i in images)]:
        svg = vectorize(image)
        assert len(re.findall("<path", svg)) > 1
        for transform in (scheme.encrypt_coordinates, lambda v: v):
            assert shift_coordinates(svg, transform, 50, 50) == one_path_at_a_time(svg, transform, 50, 50)
