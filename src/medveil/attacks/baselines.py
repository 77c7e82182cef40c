"""Guesses every attack is measured against: what an attacker knows of an image without attacking it.

A reconstruction counts only for what it recovers beyond a guess. Two guesses are registered as
attacks (``baseline=True``), so they run for every setting wherever attacks run:

- ``prior-mean``: the mean of the attacker's own plain images, the same for every target. It needs
  nothing of the obfuscated images, so it stands in every threat model (on Br35H 64×64 it scores
  SSIM 0.23 against the test images: attack figures below that measure the attack, not the scheme).
- ``label-mean``: the mean of the attacker's plain images of the target's label. Ciphertext-only
  only: the service holds every image's label, and finds an intercepted image's among the set it
  holds by its bytes; the attacker's plain data must be labelled (``prior``).

Both give ``(n, H, W[, C])`` uint8, the mean rounded.
"""

from __future__ import annotations

import hashlib

import numpy as np
from typing_extensions import override

from medveil.attacks.base import Attack, AttackerView, AttackSpec, register_attack
from medveil.errors import InputError


def _mean(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64).mean(0).round().astype(np.uint8)


class PriorMean(Attack):
    """The attacker's mean plain image for every target."""

    name = "prior-mean"
    mean: np.ndarray | None = None

    @override
    def fit(self, view: AttackerView) -> "PriorMean":
        own = view.pairs[0] if view.pairs is not None else view.own
        if not len(own):
            raise InputError(f"{self.name} needs plain images of the attacker's own")
        self.mean = _mean(own)
        return self

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        if self.mean is None:
            raise RuntimeError("fit the attack first")
        return np.broadcast_to(self.mean, (len(obfuscated),) + self.mean.shape).copy()


class LabelMean(Attack):
    """The attacker's mean plain image of each target's label, the label read from the service's records."""

    name = "label-mean"

    def __init__(self):
        self.means: dict[int, np.ndarray] = {}
        self.labels: dict[bytes, int] = {}
        self.fallback: np.ndarray | None = None

    @override
    def fit(self, view: AttackerView) -> "LabelMean":
        codes = view.require_obfuscated_set(self.name)
        if view.labels is None or view.own_labels is None or not len(view.own):
            raise InputError(f"{self.name} needs the service's labels and labelled plain images of the attacker's own")
        self.labels = {hashlib.sha256(image.tobytes()).digest(): int(label) for image, label in zip(codes, view.labels)}
        self.means = {int(label): _mean(view.own[view.own_labels == label]) for label in np.unique(view.own_labels)}
        self.fallback = _mean(view.own)
        return self

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        if self.fallback is None:
            raise RuntimeError("fit the attack first")
        return np.stack([self.means.get(self.labels.get(hashlib.sha256(image.tobytes()).digest(), -1), self.fallback)
                         for image in obfuscated])


register_attack(AttackSpec(
    "prior-mean", "ciphertext-only", ("prior",), None, lambda scheme, params, epochs, progress: PriorMean(),
    "the guess: the attacker's mean plain image for every target (what any attack must beat)",
    images_only=True, baseline=True))
register_attack(AttackSpec(
    "label-mean", "ciphertext-only", ("prior",), None, lambda scheme, params, epochs, progress: LabelMean(),
    "the guess with labels: the attacker's mean plain image of each target's label (the service holds the labels)",
    baseline=True))
