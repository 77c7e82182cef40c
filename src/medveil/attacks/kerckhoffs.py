"""The Kerckhoffs learned attack: a U-Net trained under many fresh keys, told what the set looks like.

The algorithm and its parameters are public; only the key is secret. So the service can draw
keys of its own, obfuscate its own plain images under them, and train a network to undo the
scheme *whatever the key*: no oracle, no pair. What a network cannot learn from one image is the
key's per-position part (which pixels SKK negates, which statistic skk-smooth keeps where); but
the service holds thousands of images under the one key, and their per-position mean and spread
carry that part. So the network sees each obfuscated image together with the mean and standard
deviation, at every position, of the set it came from:

- training: the attacker's images are split into ``keys`` groups, each obfuscated under its own
  fresh key; each group's statistics come from that group;
- attack: the statistics come from the service's whole obfuscated set under the hospital's key.

Paper NB's U-Net and training (:func:`medveil.attacks.reconstruction.train_reconstructor`);
inputs ``(n, H, W)`` or ``(n, H, W, 3)`` uint8, three times the channels after the statistics.
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

FRESH_KEYS = 16


def set_statistics(obfuscated: np.ndarray) -> np.ndarray:
    """Per-position mean and twice the standard deviation over a set, ``(H, W[, C], 2)`` uint8."""
    values = obfuscated.astype(np.float32)
    stats = np.stack([values.mean(axis=0), 2 * values.std(axis=0)], axis=-1)
    return stats.clip(0, 255).round().astype(np.uint8)


def with_statistics(obfuscated: np.ndarray, statistics: np.ndarray) -> np.ndarray:
    """Each image of ``obfuscated`` stacked with ``statistics`` on the channel axis, ``(n, H, W, 3C)``."""
    images = obfuscated if obfuscated.ndim == 4 else obfuscated[..., None]
    stats = statistics.reshape(*images.shape[1:-1], -1)
    return np.concatenate([images, np.broadcast_to(stats, (len(images), *stats.shape))], axis=-1)


class Kerckhoffs(Attack):
    """U-Net trained under fresh keys of the public scheme and parameters (see the module docstring)."""

    name = "kerckhoffs-unet"

    def __init__(self, scheme: str, params: Mapping[str, Any], config: TrainConfig | None = None,
                 keys: int = FRESH_KEYS, width: int = 16):
        self.scheme, self.params = scheme, dict(params)
        self.config = config or attacker_training()
        self.keys, self.width = keys, width
        self.statistics: np.ndarray | None = None
        self.history: list[dict] = []

    @override
    def fit(self, view: AttackerView) -> "Kerckhoffs":
        from medveil.schemes import Setting, from_key

        service_set = view.require_obfuscated_set(self.name)
        if not view.own.size:
            raise InputError(f"{self.name} trains on the attacker's own plain images: give it public or prior data")
        order = np.random.default_rng(self.config.seed).permutation(len(view.own))  # data order, not key material
        inputs, targets = [], []
        # The attacker's own keys, made from its seed so that a run repeats; they protect nothing.
        attacker_secret = hashlib.sha256(f"kerckhoffs-attacker/{self.config.seed}".encode()).digest()
        setting = Setting(self.scheme, tuple(sorted(self.params.items())))
        for index, group in enumerate(np.array_split(order, min(self.keys, len(order)))):
            key = setting.new_key(secret=derive_secret(attacker_secret, str(index)))
            obfuscated = from_key(key)(view.own[group])
            inputs.append(with_statistics(obfuscated, set_statistics(obfuscated)))
            targets.append(view.own[group])
        self.statistics = set_statistics(service_set)
        self.model, self.history = train_reconstructor(np.concatenate(inputs), np.concatenate(targets), self.config,
                                                       self.width)
        return self

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        if self.statistics is None:
            raise RuntimeError("fit the attack first")
        return run_reconstructor(self.model, with_statistics(obfuscated, self.statistics))


# Schemes whose keys are drawn, not trained (vae and adversarial keys carry trained weights).
register_attack(AttackSpec(
    "kerckhoffs-unet", "ciphertext-only", ("public", "prior"),
    ("intensity", "tanaka", "skk", "skk-smooth", "structural", "block-shuffle", "warp-smooth"),
    lambda scheme, params, epochs, progress, keys=FRESH_KEYS: Kerckhoffs(scheme, params, attacker_training(epochs, progress),
                                                                         keys=keys),
    "U-Net trained on the attacker's images under many fresh keys of the public scheme, fed the set's statistics",
    parameters=(Parameter("keys", int, FRESH_KEYS, "fresh keys the attacker's images are split over"),), trains=True))
