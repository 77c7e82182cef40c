"""medveil's block-shuffle scheme, the block-bag server model invariant to it, and the jigsaw attack on it."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

import medveil
from medveil.attacks import AttackerView, attack_spec
from medveil.errors import InputError, SchemeMismatchError
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
    assert not np.array_equal(scheme.image_key(changed)[0], scheme.image_key(images[0])[0])  # an unrelated shuffle
    with pytest.raises(SchemeMismatchError):
        medveil.from_key(medveil.generate_key("skk")).__class__(key)  # a key made for another scheme is refused
    with pytest.raises(InputError, match="divisible by 8"):
        scheme(images[:, :30])


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


def test_the_jigsaw_puts_a_smooth_image_back_together(rng):
    field = gaussian_filter(rng.normal(size=(48, 48)), 4)
    image = ((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)
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
    result = runner.invoke(app, ["obfuscate", "--key", str(key), "--burned-in-text", "off", str(tmp_path / "in"),
                                 str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    original, shuffled = (np.asarray(Image.open(p / "a.png")) for p in (tmp_path / "in", tmp_path / "out"))
    assert canonical(to_blocks(original, 4)) == canonical(to_blocks(shuffled, 4))


def test_block_shuffle_links_to_a_plain_gallery_without_solving_anything(rng):
    from medveil.evaluation.privacy import attack_images

    images = np.stack([gaussian_filter(rng.normal(size=(40, 40)), 2) for _ in range(8)])
    images = ((images - images.min()) / np.ptp(images) * 255).astype(np.uint8)
    target = np.concatenate([images, images])  # every "patient" twice: a gallery image and a probe
    groups = np.concatenate([np.arange(8), np.arange(8)])
    key = medveil.generate_key("block-shuffle", block=8)
    attack = attack_spec("jigsaw").create("block-shuffle", dict(key.params), 1, False)
    row, *_ = attack_images(attack, "ciphertext-only", key, target, target[:0], "test", "none", target_groups=groups)
    assert row["linkage_top1"] == 1.0 and row["linkage_chance"] == 1 / 8
