"""Unmixing skk-smooth's blocks from the service's own set, then a U-Net.

An attack written against skk-smooth's structure, and so against warp-smooth's last stage.

skk-smooth negates a keyed half of the pixels and then keeps one keyed statistic (mean, median,
max or min) of each M×M block. Within a block of even grey level v, what comes out is a fixed
keyed function of v: rising (v, or an affine v + k(255 - 2v)/M²), falling (255 - v, or an
affine with negative slope), or folded (max or min of v and 255 - v). The key is the same for
every image the service holds, and neighbouring blocks of a medical image rise and fall together
across a collection (a brain's edge moves by a few pixels from slice to slice; warp-smooth's
structural drawing keeps its regions flat, which helps). So, ciphertext-only:

1. per block, standardise its value over the set (this undoes each block's offset and slope);
2. find each block's direction (+1 rising, -1 falling) as the signs that best agree with the
   correlations between neighbouring blocks over the set: the leading eigenvector of the block
   graph weighted by those correlations (a spectral relaxation of the sign assignment);
   the one sign left free is chosen so that the set's mean agrees with the attacker's mean plain
   image;
3. flip the falling blocks, give each block the mean and spread its place has in the attacker's
   plain images, and hand the result to a U-Net trained, under fresh keys of the attacker's own,
   on the same unmixing of its own images.

A folded block (max or min over mixed negations) has no direction: where its grey levels stay on
one side of mid-grey it behaves as a rising or falling one, elsewhere the U-Net gets its value as
the service holds it and its sureness. Inputs ``(n, H, W)`` uint8, one channel (skk-smooth with
``channels=1``, warp-smooth).

Measured on Br35H 64×64 (prior data, 12 epochs; README and docs/results/bench-full/cards.csv):
the directions come out right for 95-99 % of the blocks whose value follows the image, but the
U-Net's images recover no more than the guess (SSIM 0.23-0.26 against 0.23-0.25): what is left
after the directions, one value per block mixed by four keyed statistics, is not enough.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import numpy as np
from typing_extensions import override

from medveil.attacks.base import Attack, AttackerView, AttackSpec, register_attack
from medveil.attacks.reconstruction import attacker_training, run_reconstructor, train_reconstructor
from medveil.errors import InputError
from medveil.keys import derive_secret
from medveil.plugins import Parameter
from medveil.training.loop import TrainConfig

NAME = "smooth-unmix"
FRESH_KEYS = 8


def block_values(images: np.ndarray, block: int) -> np.ndarray:
    """Each block's value, ``(n, ceil(H/M), ceil(W/M))`` float (skk-smooth makes a block one value)."""
    return images[:, ::block, ::block].astype(np.float64)


def block_signs(values: np.ndarray, reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each block's direction and how sure it is, both ``(bh, bw)``, from ``values`` ``(n, bh, bw)`` over a set.

    The direction is +1 or -1; the sureness, in [0, 1], is how far its neighbours' correlations
    agree with it (near 0 for a block that moves with none of them). ``reference``
    ``(bh, bw)`` (the attacker's mean plain image at block resolution) picks the free global sign, which
    needs a mean image with structure, as scans have (over images alike on average it is a coin toss);
    without it the majority of blocks is taken to rise.
    """
    n, bh, bw = values.shape
    z = _standardised(values)
    weights = np.zeros((bh * bw, bh * bw))
    index = np.arange(bh * bw).reshape(bh, bw)
    flat = z.reshape(n, -1)
    for a, b in ((index[:, :-1], index[:, 1:]), (index[:-1, :], index[1:, :]),
                 (index[:-1, :-1], index[1:, 1:]), (index[:-1, 1:], index[1:, :-1])):
        corr = (flat[:, a.ravel()] * flat[:, b.ravel()]).mean(axis=0)
        weights[a.ravel(), b.ravel()] = corr
        weights[b.ravel(), a.ravel()] = corr
    _, vectors = np.linalg.eigh(weights)
    signs = np.where(vectors[:, -1] < 0, -1.0, 1.0)
    if reference is not None:
        mean = values.mean(axis=0).ravel()
        if np.corrcoef(signs * (mean - mean.mean()), reference.ravel())[0, 1] < 0:
            signs = -signs
    elif signs.sum() < 0:
        signs = -signs
    agreeing = (weights * signs[None, :]).sum(axis=1) * signs
    sure = np.clip(agreeing / np.maximum(np.abs(weights).sum(axis=1), 1e-9), 0, 1)
    return signs.reshape(bh, bw), sure.reshape(bh, bw)


def unmix(images: np.ndarray, block: int, plain_mean: np.ndarray, plain_std: np.ndarray) -> np.ndarray:
    """Undo each block's direction, offset and slope in ``images`` (a set under one key): ``(n, H, W, 3)`` uint8.

    The first channel is in the grey levels of the attacker's plain images (``plain_mean``/``plain_std`` at block
    resolution), shrunk towards the plain mean where the direction is unsure; the second is that sureness; the third
    the blocks' values as the service holds them (a folded block's value still says how far from mid-grey it is).
    """
    values = block_values(images, block)
    signs, sure = block_signs(values, plain_mean)
    restored = sure * signs * _standardised(values) * plain_std + plain_mean
    channels = np.stack([restored, np.broadcast_to(sure * 255, restored.shape), values], axis=-1)
    full = channels.repeat(block, axis=1).repeat(block, axis=2)[:, :images.shape[1], :images.shape[2]]
    return full.clip(0, 255).round().astype(np.uint8)


def _standardised(values: np.ndarray) -> np.ndarray:
    spread = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


class SmoothUnmix(Attack):
    """Spectral unmixing of skk-smooth's blocks over the set, then a U-Net (see the module docstring)."""

    name = NAME

    def __init__(self, scheme: str, params: Mapping[str, Any], config: TrainConfig | None = None,
                 keys: int = FRESH_KEYS, width: int = 16):
        self.scheme, self.params = scheme, dict(params)
        self.config = config or attacker_training()
        self.keys, self.width = keys, width
        self.block = int(self.params["block"])
        self.plain: tuple[np.ndarray, np.ndarray] | None = None
        self._service_set: np.ndarray | None = None
        self.history: list[dict] = []

    @override
    def fit(self, view: AttackerView) -> "SmoothUnmix":
        from medveil.schemes import Setting, from_key

        view.require_obfuscated_set(self.name)
        if not view.own.size:
            raise InputError(f"{self.name} maps blocks to the grey levels of the attacker's own plain images: "
                             "give it public or prior data")
        if view.own.ndim != 3:
            raise InputError(f"{self.name} unmixes one channel; got images of shape {view.own.shape[1:]}")
        setting = Setting(self.scheme, tuple(sorted(self.params.items())))
        # The attacker's own keys, made from its seed so that a run repeats; they protect nothing.
        attacker_secret = hashlib.sha256(f"{NAME}-attacker/{self.config.seed}".encode()).digest()
        order = np.random.default_rng(self.config.seed).permutation(len(view.own))  # data order, not key material
        self.plain = None
        inputs, targets = [], []
        for index, group in enumerate(np.array_split(order, min(self.keys, len(order)))):
            obfuscated = from_key(setting.new_key(secret=derive_secret(attacker_secret, str(index))))(view.own[group])
            if self.plain is None:
                self.plain = self._plain_statistics(view.own, obfuscated.shape[1:])
            inputs.append(unmix(obfuscated, self.block, *self.plain))
            targets.append(view.own[group])
        self.model, self.history = train_reconstructor(np.concatenate(inputs), np.concatenate(targets), self.config,
                                                       self.width)
        self._service_set = view.require_obfuscated_set(self.name) if view.obfuscated_set is not None else None
        return self

    def _plain_statistics(self, own: np.ndarray, raster: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Return the attacker's plain images' mean and spread per block, at the obfuscated raster's block grid."""
        from skimage.transform import resize

        scaled = own if own.shape[1:] == raster else np.stack(
            [resize(image, raster, order=1, preserve_range=True) for image in own])
        n, h, w = scaled.shape
        m = self.block
        padded = np.full((n, -(-h // m) * m, -(-w // m) * m), np.nan)
        padded[:, :h, :w] = scaled
        means = np.nanmean(padded.reshape(n, padded.shape[1] // m, m, padded.shape[2] // m, m), axis=(2, 4))
        return means.mean(axis=0), means.std(axis=0)

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        if self.plain is None or self._service_set is None:
            raise RuntimeError("fit the attack first")
        # The directions come from the service's whole set under the key; the images asked for are among them.
        whole = np.concatenate([self._service_set, obfuscated])
        unmixed = unmix(whole, self.block, *self.plain)[len(self._service_set):]
        return run_reconstructor(self.model, unmixed)


register_attack(AttackSpec(
    NAME, "ciphertext-only", ("prior",), ("skk-smooth", "warp-smooth"),
    lambda scheme, params, epochs, progress, keys=FRESH_KEYS: SmoothUnmix(
        scheme, params, attacker_training(epochs, progress), keys=keys),
    "finds each skk-smooth block's keyed direction from how neighbouring blocks move together across the service's "
    "set, flips and rescales them, then a U-Net trained under the attacker's own keys",
    parameters=(Parameter("keys", int, FRESH_KEYS, "fresh keys the attacker's images are split over"),),
    written_for=("skk-smooth", "warp-smooth"), trains=True))
