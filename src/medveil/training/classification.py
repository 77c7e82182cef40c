"""Binary image classification with the one training loop: what the utility evaluation and the service train.

Paper NB's setting: one logit per image, sigmoid + binary cross-entropy, Adam; the weights kept are
those with the best validation accuracy.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from medveil import metrics
from medveil.nn import build_classifier, model_spec
from medveil.training.loop import TrainConfig, TrainResult, fit, predict, seed_everything


def train_classifier(train: Dataset, val: Dataset | None, model_name: str, size: int, channels: int,
                     config: TrainConfig, scheme: str | None = None, params: Mapping[str, Any] | None = None,
                     ) -> tuple[torch.nn.Module, TrainResult]:
    """Train ``model_name`` (a registered server model) on ``(image (C, size, size), label)`` items; returns it and its history.

    ``scheme`` and ``params`` are the obfuscation's public name and parameters, for models that
    learn its structure. The initial weights come from ``config.seed`` too, so a run repeats
    exactly in another process.
    """
    seed_everything(config.seed)
    model = build_classifier(model_name, size, in_channels=channels, scheme=scheme, params=params)

    def val_accuracy(outputs, targets):
        return metrics.classification_scores(targets.numpy(), torch.sigmoid(outputs).numpy())["accuracy"]

    result = fit(model, train, val, torch.nn.BCEWithLogitsLoss(), config, score_fn=val_accuracy)
    return model, result


def predict_probabilities(model: torch.nn.Module, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities of class 1, labels)`` over ``data``, both ``(n,)``."""
    outputs, targets = predict(model, data)
    return torch.sigmoid(outputs).numpy(), targets.numpy()


def holdout(n: int, fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return indices ``(train, val)`` holding out ``fraction`` of ``n`` items, shuffled with ``seed`` (data order only)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_on_images(images: np.ndarray, labels: np.ndarray, model_name: str, config: TrainConfig,
                    val_fraction: float = 0.15, scheme: str | None = None,
                    params: Mapping[str, Any] | None = None) -> tuple[torch.nn.Module, TrainResult]:
    """Train on images ``(n, S, S[, 3])`` as they are (already obfuscated), validating on a seeded hold-out.

    What the service runs for an uploaded dataset, and what a hospital runs locally to check it.
    ``scheme`` and ``params``: the obfuscation's public name and parameters (for models that use them).
    """
    train_idx, val_idx = holdout(len(images), val_fraction, config.seed)
    channels = 3 if images.ndim == 4 else 1
    return train_classifier(model_tensors(model_name, images[train_idx], labels[train_idx]),
                            model_tensors(model_name, images[val_idx], labels[val_idx]),
                            model_name, images.shape[1], channels, config, scheme, params)


def model_tensors(model_name: str, images: np.ndarray, labels: np.ndarray) -> Dataset:
    """``images`` and ``labels`` as the server model ``model_name`` takes them (its declared input scaling)."""
    from medveil.data.pipeline import ImageTensors

    return ImageTensors(images, labels, scale=model_spec(model_name).input)
