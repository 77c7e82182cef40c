"""Learned reconstruction (papers NB and VAE): a U-Net trained to undo the obfuscation.

The attacker obfuscates its own images through the black box and trains paper NB's U-Net to map
obfuscated images back to their originals (64×64, batch 128, Adam lr 1e-3, 20 epochs, MSE), then
applies it to intercepted images. Inputs and targets are scaled by 1/255; the output passes
through a sigmoid.
"""

from __future__ import annotations

import numpy as np
import torch
from typing_extensions import override

from medveil.attacks.base import Attack, AttackerView, AttackSpec, register_attack
from medveil.data.pipeline import ImagePairs
from medveil.nn import UNet
from medveil.nn.patches import RandomPatches, whole_volume
from medveil.training.loop import TrainConfig, apply_batched, fit, predict


def attacker_training(epochs: int = 20, progress: bool = True) -> TrainConfig:
    """Paper NB's attacker training: batch 128, Adam lr 1e-3, 20 epochs by default."""
    return TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, progress=progress)


class _SigmoidMSE(torch.nn.Module):
    def forward(self, logits, targets):
        return torch.nn.functional.mse_loss(torch.sigmoid(logits), targets)


def train_reconstructor(inputs: np.ndarray, targets: np.ndarray, config: TrainConfig, width: int = 16,
                        val_fraction: float = 0.1, depth: int = 1, patch: int | None = None) -> tuple[UNet, list[dict]]:
    """Fit a U-Net from ``inputs`` (n, H, W[, C]) uint8 to ``targets`` (n, H, W[, C']) uint8; returns it and its history.

    With ``patch``, inputs and targets are volumes ``(n, D, H, W)``: a 3-D U-Net trains on random
    patches of that side (:class:`~medveil.nn.patches.RandomPatches`).
    """
    n_val = max(1, int(len(inputs) * val_fraction))
    order = np.random.default_rng(config.seed).permutation(len(inputs))  # data order, not key material
    val_idx, train_idx = order[:n_val], order[n_val:]
    volumes = patch is not None

    def data(selection: np.ndarray, fixed: bool):
        pairs = ImagePairs(inputs[selection], targets[selection], volumes=volumes)
        return RandomPatches(pairs, patch, 3, fixed, config.seed) if patch is not None else pairs

    first = data(order[:1], True)[0]
    model = UNet(first[0].shape[0], first[1].shape[0], width=width, depth=depth, dims=3 if volumes else 2)
    result = fit(model, data(train_idx, False), data(val_idx, True), _SigmoidMSE(), config)
    return model, result.history


def run_reconstructor(model: UNet, inputs: np.ndarray, patch: int | None = None) -> np.ndarray:
    """Return the model's reconstructions of ``inputs`` as uint8 ``(n, H, W)``, or ``(n, H, W, C)`` for C > 1 outputs.

    With ``patch``, of volumes ``(n, D, H, W)`` by sliding windows of that side.
    """
    if patch is None:
        # predict's DataLoader draws from torch's global generator, which the next U-Net's initial
        # weights come from: keeping it keeps every later attack in a process as it was.
        outputs = predict(model, ImagePairs(inputs))[0].numpy()
    else:
        model.eval()
        outputs = apply_batched(model, inputs[:, None], batch_size=4, call=lambda m, x: whole_volume(m, x, patch))
    images = (torch.sigmoid(torch.from_numpy(outputs)).numpy() * 255).round().astype(np.uint8)
    return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)


class LearnedReconstruction(Attack):
    """Paper NB's attack: U-Net trained on the attacker's images obfuscated through the black box."""

    name = "learned-reconstruction"

    def __init__(self, config: TrainConfig | None = None, width: int = 16, patch: int | None = None):
        self.config = config or attacker_training()
        self.width = width
        self.patch = patch  # set: volumes, a 3-D U-Net on patches of this side
        self.model: UNet | None = None
        self.history: list[dict] = []

    @override
    def fit(self, view: AttackerView) -> "LearnedReconstruction":
        obfuscated = view.require_oracle(self.name)(view.own)
        self.model, self.history = train_reconstructor(obfuscated, view.own, self.config, self.width, patch=self.patch)
        return self

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the attack first")
        return run_reconstructor(self.model, obfuscated, self.patch)


register_attack(AttackSpec(
    "learned-reconstruction", "oracle", ("public", "prior"), None,
    lambda scheme, params, epochs, progress: LearnedReconstruction(attacker_training(epochs, progress)),
    "paper NB's U-Net, trained on the attacker's images obfuscated through the black box", trains=True))
