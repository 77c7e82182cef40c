import csv

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import medveil
from medveil import metrics
from medveil.attacks import BlackBox, ChosenPlaintext, LearnedReconstruction, oracle_view
from medveil.cli import app
from medveil.data import group_split, load_folder
from medveil.evaluation.privacy import ATTACK_COLUMNS
from medveil.keys import Key
from medveil.nn import UNet
from medveil.training.loop import TrainConfig


def smooth_images(rng, n=24, size=16):
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(-1, 1, 3)
        out.append(np.clip(128 + 100 * (a * xx + b * yy + c * xx * yy), 0, 255))
    return np.stack(out).astype(np.uint8)


@pytest.fixture(scope="module")
def keys():
    return {n: medveil.generate_key("intensity", levels=n) for n in (256, 40)}


def test_black_box_obfuscates_counts_and_holds_no_key(keys, rng):
    key = keys[40]
    images = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    with BlackBox(key) as box:
        assert np.array_equal(box(images), medveil.from_key(key)(images))
        box(images[0])
        assert box.queries == 4
        assert not hasattr(box, "__dict__") and not hasattr(box, "key") and not hasattr(box, "scheme")
        reachable = [box._conn, box._process, *vars(box._process).values()]
        text = repr([vars(o) if hasattr(o, "__dict__") else o for o in reachable])
        assert key.to_json() not in text and key.secret.hex() not in text
        with pytest.raises(medveil.InputError, match="16-bit data"):
            box(np.zeros((4, 4), np.uint16))


def test_chosen_plaintext_inverts_a_bijective_key_exactly(keys, rng):
    images = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    with BlackBox(keys[256]) as box:
        attack = ChosenPlaintext().fit(oracle_view(box, images))
        assert box.queries == 1
    recovered = attack.reconstruct(medveil.from_key(keys[256])(images))
    assert np.array_equal(recovered, images)


def test_chosen_plaintext_recovers_the_exact_preimage_partition(keys, rng):
    scheme = medveil.from_key(keys[40])
    with BlackBox(keys[40]) as box:
        attack = ChosenPlaintext().fit(oracle_view(box, rng.integers(0, 256, (4, 16, 16), dtype=np.uint8)))
    truth = {frozenset(np.flatnonzero(scheme.mapping == k).tolist()) for k in range(40)}
    assert {frozenset(s.tolist()) for s in attack.partition} == truth


def test_refined_chosen_plaintext_stays_consistent_with_what_was_seen(keys, rng):
    scheme = medveil.from_key(keys[40])
    own = smooth_images(rng, 32)
    with BlackBox(keys[40]) as box:
        attack = ChosenPlaintext(refine=True, config=TrainConfig(epochs=2, batch_size=16, progress=False)).fit(oracle_view(box, own))
        assert box.queries == 1  # the U-Net trains on locally mapped images
    target = smooth_images(rng, 6)
    observed = scheme(target)
    recovered = attack.reconstruct(observed)
    assert np.array_equal(scheme(recovered), observed)  # every pixel lies in its pre-image set


def test_learned_reconstruction_training_reduces_loss(rng):
    # Four grey levels in 4x4 blocks: four codes to learn. How fast depends on the table, so this
    # plumbing test uses a fixed secret (keys from generate_key are random by design).
    key = Key("intensity", {"bits": 8, "signed": False, "levels": 256}, bytes([4]) * 32)
    levels = np.array([0, 80, 160, 240], dtype=np.uint8)
    own = levels[rng.integers(0, 4, (64, 4, 4))].repeat(4, axis=1).repeat(4, axis=2)
    with BlackBox(key) as box:
        attack = LearnedReconstruction(TrainConfig(epochs=10, batch_size=8, lr=3e-3, progress=False), width=8).fit(oracle_view(box, own))
        assert box.queries == 64
    losses = [h["train_loss"] for h in attack.history]
    assert losses[-1] < 0.5 * losses[0]
    assert attack.reconstruct(medveil.from_key(key)(own[:2])).shape == (2, 16, 16)


@pytest.mark.parametrize("depth", [1, 2])
def test_unet_keeps_the_image_size(depth):
    assert UNet(in_channels=3, out_channels=2, width=4, depth=depth)(torch.zeros(2, 3, 16, 16)).shape == (2, 2, 16, 16)


def test_ms_ssim(rng):
    a = rng.integers(0, 256, (2, 64, 64)).astype(np.uint8)
    assert metrics.ms_ssim(a, a) == pytest.approx([1.0, 1.0])
    assert (metrics.ms_ssim(a, 255 - a) < 0.2).all()
    with pytest.raises(medveil.InputError, match="at least 33 pixels a side"):
        metrics.ms_ssim(a[:, :20, :20], a[:, :20, :20])


def test_attack_cli_writes_rows_in_the_shared_format(tmp_path, rng):
    for label, cls in enumerate(("no", "yes")):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i, img in enumerate(smooth_images(rng, 20, 48)):
            Image.fromarray(img).save(tmp_path / "d" / cls / f"{i}.png")
    runner = CliRunner()
    assert runner.invoke(app, ["keygen", "--scheme", "intensity", "--levels", "30", "-o", str(tmp_path / "k.key")]).exit_code == 0
    args = ["--key", str(tmp_path / "k.key"), "--target", str(tmp_path / "d"), "--attacker-data", "prior",
            "--size", "48", "-o", str(tmp_path / "out"), "--no-progress"]
    result = runner.invoke(app, ["attack", "chosen-plaintext", *args])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["attack", "learned-reconstruction", *args, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert list(rows[0]) == ATTACK_COLUMNS
    data = load_folder(tmp_path / "d", 48)
    prior = int((group_split(data.labels, data.groups) != "test").sum())
    assert [(r["attack"], int(r["queries"])) for r in rows] == [("chosen-plaintext", 1), ("learned-reconstruction", prior)]
    assert (tmp_path / "out" / "report.md").is_file()
    assert len(list((tmp_path / "out").glob("*.png"))) == 2


def test_smooth_unmix_finds_each_skk_smooth_blocks_direction_from_the_set(rng):
    from scipy.ndimage import gaussian_filter

    from medveil.attacks.unmix import block_signs, block_values

    fields = gaussian_filter(rng.normal(size=(300, 64, 64)), sigma=(0, 8, 8))  # smooth, like anatomy across a set
    scheme = medveil.from_key(medveil.generate_key("skk-smooth", block=4))  # a fresh key each run
    negate, _ = scheme.pixel_keys((64, 64))
    filters = scheme.block_filters((64, 64))
    negated = negate[..., 0].reshape(16, 4, 16, 4).sum(axis=(1, 3))
    # blocks whose statistic rises or falls with the grey level: mean and median, with a clear majority
    truth = np.where(negated < 8, 1.0, -1.0)
    clear = (filters <= 1) & (np.abs(negated - 8) >= 3)
    assert clear.sum() > 15

    def found(plain):
        images = ((plain - plain.min()) / np.ptp(plain) * 255).astype(np.uint8)
        reference = images.reshape(300, 16, 4, 16, 4).mean(axis=(2, 4)).mean(axis=0)
        signs, sure = block_signs(block_values(scheme(images), 4), reference)
        return (signs[clear] == truth[clear]).mean(), sure[clear].mean()

    # the set fixes every block's direction up to one sign for all (40 keys: none wrong)
    agree, sure = found(fields)
    assert max(agree, 1 - agree) > 0.9 and sure > 0.9  # and their neighbours agree with the directions found
    # that sign comes from the attacker's mean image, so it needs one with structure, as scans have (a bright
    # middle here; 40 keys: none flipped). Over fields alike on average it is a coin toss, which once made
    # this test fail one run in seven.
    yy, xx = np.mgrid[:64, :64]
    middle = np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 16**2))
    assert found(fields / fields.std() + 3 * middle)[0] > 0.5
