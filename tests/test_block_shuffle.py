"""medveil's block-shuffle scheme, the block-bag server model invariant to it, and the jigsaw attack on it."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

import medveil
from medveil.attacks import AttackerView, attack_spec
from medveil.errors import InputError, ParameterError, SchemeMismatchError
from medveil.keys import Key
from medveil.metrics import ssim
from medveil.nn import BlockBagNet
from medveil.schemes.shuffle import TURNS, to_blocks, turn


def canonical(blocks):
    """Each block as the smallest of its eight turns, sorted: what block-shuffle may not change."""
    return sorted(min(turn(b, t).tobytes() for t in range(TURNS)) for b in blocks)


def test_block_shuffle_keeps_every_block_and_is_deterministic_per_key_and_image(rng):
    key = medveil.generate_key("block-shuffle", block=8)
    scheme = medveil.from_key(key)
    images = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
    out = scheme(images)
    assert out.shape == images.shape and out.dtype == np.uint8 and not np.array_equal(out, images)
    for image, shuffled in zip(images, out):
        assert canonical(to_blocks(image, 8)) == canonical(to_blocks(shuffled, 8))
    assert np.array_equal(scheme(images), out) and np.array_equal(scheme(images[1]), out[1])  # per key and image
    assert not np.array_equal(medveil.from_key(medveil.generate_key("block-shuffle", block=8))(images), out)
    changed = images[0].copy()
    changed[0, 0] ^= 1
    assert scheme.image_key(changed).read(32) != scheme.image_key(images[0]).read(32)  # an unrelated shuffle
    with pytest.raises(SchemeMismatchError):
        medveil.from_key(medveil.generate_key("skk")).__class__(key)  # a key made for another scheme is refused
    with pytest.raises(InputError, match="divisible by 8"):
        scheme(images[:, :30])


def smooth_images(rng, sigmas, side):
    """One smooth random field per blur width in ``sigmas``, ``(len(sigmas), side, side)`` uint8 spanning 0-255."""
    fields = np.stack([gaussian_filter(rng.normal(size=(side, side)), sigma) for sigma in sigmas])
    return ((fields - fields.min()) / np.ptp(fields) * 255).astype(np.uint8)


def test_remap_and_noise_change_each_block_under_the_same_shuffle(rng):
    images = smooth_images(rng, [2.0] * 3, 32)
    secret = b"k" * 32
    shuffled, remapped, noisy = (medveil.from_key(Key.new("block-shuffle", {"block": 8, "channels": 1, **extra}, secret))(images)
                                 for extra in ({}, {"remap": 1}, {"remap": 1, "noise": 4}))
    assert np.array_equal(medveil.from_key(Key.new("block-shuffle", {"block": 8, "channels": 1, "remap": 1}, secret))(images),
                          remapped)  # deterministic per key and image
    for before, after in zip((to_blocks(i, 8) for i in shuffled), (to_blocks(i, 8) for i in remapped)):
        # the same blocks in the same places, each through an increasing curve of its own
        order = np.argsort(before.reshape(len(before), -1), axis=1, kind="stable")
        ranked = np.take_along_axis(after.reshape(len(after), -1).astype(int), order, axis=1)
        assert (np.diff(ranked, axis=1) >= 0).all()
        gains = np.ptp(after, axis=(1, 2)) / np.maximum(np.ptp(before, axis=(1, 2)), 1)
        assert np.ptp(gains) > 0.2  # not one curve for the whole image
    assert not np.array_equal(np.bincount(remapped.ravel(), minlength=256), np.bincount(images.ravel(), minlength=256))
    difference = noisy.astype(float) - remapped
    assert 3 < difference.std() < 5 and abs(difference.mean()) < 0.5


def test_block_shuffle_options_are_checked_and_left_out_when_off():
    assert medveil.generate_key("block-shuffle", block=8, remap=0, noise=0).params == {"block": 8, "channels": 1}
    assert medveil.generate_key("block-shuffle", remap=1, noise=6).params == {"block": 8, "channels": 1, "remap": 1,
                                                                             "noise": 6}
    for bad in ({"remap": 2}, {"noise": 65}, {"noise": -1}):
        with pytest.raises(ParameterError):
            medveil.generate_key("block-shuffle", **bad)


def test_the_block_bag_is_exactly_invariant_to_block_shuffle(rng):
    torch.manual_seed(0)
    model = BlockBagNet(block=8, size=32).eval()
    images = rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)
    shuffled = medveil.from_key(medveil.generate_key("block-shuffle", block=8))(images)
    with torch.no_grad():
        plain_out = model(torch.from_numpy(images[:, None] / 255.0).float())
        shuffled_out = model(torch.from_numpy(shuffled[:, None] / 255.0).float())
        dark = model(torch.zeros(4, 1, 32, 32))
    assert torch.allclose(plain_out, shuffled_out, atol=1e-5)
    assert (plain_out - dark).abs().min() > 1e-3  # and it does read the blocks


def test_the_standardising_block_bag_ignores_each_block_s_level_and_contrast(rng):
    torch.manual_seed(0)
    model = BlockBagNet(block=8, size=32, standardise=0.0).eval()
    images = torch.from_numpy(rng.random((2, 1, 32, 32))).float()
    gains = torch.from_numpy(rng.uniform(0.3, 3, (2, 1, 4, 1, 4, 1))).float()
    offsets = torch.from_numpy(rng.uniform(-1, 1, (2, 1, 4, 1, 4, 1))).float()
    per_block = (images.reshape(2, 1, 4, 8, 4, 8) * gains + offsets).reshape(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(images), model(per_block), atol=1e-4)
        assert not torch.allclose(model(images), model(images.roll(3, dims=3)), atol=1e-4)  # their content counts
    assert medveil.nn.model_spec("matched").build(32, 1, 1, "block-shuffle", {"block": 8, "remap": 1, "noise": 6}).standardise \
        == pytest.approx(6 / 255)


def test_the_jigsaw_puts_a_smooth_image_back_together(rng):
    image = smooth_images(rng, [4], 48)[0]
    shuffled = medveil.from_key(medveil.generate_key("block-shuffle", block=8))(image[None])
    attack = attack_spec("jigsaw").create("block-shuffle", {"block": 8, "channels": 1}, 1, False)
    attack.fit(AttackerView("block-shuffle", {}, own=image[None]))  # prior data: orients the result
    solved = attack.reconstruct(shuffled)
    assert ssim(solved[0], image, 255) > 0.9 > ssim(shuffled[0], image, 255)


def test_block_shuffle_through_the_cli(tmp_path, rng):
    from medveil.cli import app

    runner = CliRunner()
    key = tmp_path / "k.key"
    assert runner.invoke(app, ["keygen", "--scheme", "block-shuffle", "-p", "block=4", "-o", str(key)]).exit_code == 0
    (tmp_path / "in").mkdir()
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    result = runner.invoke(app, ["obfuscate", "--key", str(key), "--burned-in-text", "off", "--keep-names", str(tmp_path / "in"),
                                 str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    original, shuffled = (np.asarray(Image.open(p / "a.png")) for p in (tmp_path / "in", tmp_path / "out"))
    assert canonical(to_blocks(original, 4)) == canonical(to_blocks(shuffled, 4))
    disguised = tmp_path / "d.key"
    made = runner.invoke(app, ["keygen", "--scheme", "block-shuffle", "-p", "block=4", "-p", "remap=1", "-p", "noise=3",
                               "-o", str(disguised)])
    assert made.exit_code == 0, made.output
    assert Key.load(disguised).params == {"block": 4, "channels": 1, "remap": 1, "noise": 3}


@pytest.mark.parametrize("options", [{}, {"remap": 1}, {"remap": 1, "noise": 4}], ids=["shuffle", "remap", "noise"])
def test_block_shuffle_links_to_a_plain_gallery_without_solving_anything(rng, options):
    from medveil.evaluation.privacy import attack_images

    images = smooth_images(rng, np.linspace(0.8, 3, 8), 40)
    target = np.concatenate([images, images])  # every "patient" twice: a gallery image and a probe
    groups = np.concatenate([np.arange(8), np.arange(8)])
    key = Key.new("block-shuffle", {"block": 8, "channels": 1, **options}, b"s" * 32)
    attack = attack_spec("jigsaw").create("block-shuffle", dict(key.params), 1, False)
    row, *_ = attack_images(attack, "ciphertext-only", key, target, target[:0], "test", "none", target_groups=groups)
    assert row["linkage_top1"] >= (0.75 if "noise" in options else 1.0) and row["linkage_chance"] == 1 / 8


def test_the_learned_jigsaw_solves_a_toy_puzzle_exactly(rng):
    """Pieces that say where they belong (a level per place, a ramp that shows the turn): a position prior
    learned from the attacker's own images puts a new image's shuffled pieces back exactly."""
    from medveil.attacks.jigsaw import MIN_PRIOR_IMAGES
    from medveil.training.loop import TrainConfig

    y, x = np.mgrid[0:8, 0:8]
    template = np.block([[12 * (4 * r + c) + x + 2 * y for c in range(4)] for r in range(4)]).astype(float)
    images = np.clip(template[None] * rng.uniform(0.9, 1.1, (MIN_PRIOR_IMAGES + 1, 1, 1))
                     + rng.normal(0, 1, (MIN_PRIOR_IMAGES + 1, 32, 32)), 0, 255).round().astype(np.uint8)
    own, target = images[:-1], images[-1:]
    key = medveil.generate_key("block-shuffle", block=8)
    shuffled = medveil.from_key(key)(target)
    attack = attack_spec("jigsaw").create("block-shuffle", dict(key.params), 100, False, weighted=False)
    attack.config = TrainConfig(epochs=100, batch_size=64, lr=3e-3, progress=False)
    attack.fit(AttackerView("block-shuffle", dict(key.params), own))
    assert np.array_equal(attack.reconstruct(shuffled), target)
    attack.weighted = True
    assert ssim(attack.reconstruct(shuffled)[0], target[0], 255) > 0.95
