"""Segmentation with the one training loop.

What the service trains for a segmentation dataset, and what a hospital runs locally to check it.

Paper PN's segmenter: a U-Net (width 16, two levels) trained with the generalised Dice loss; the
weights kept are those with the best validation Dice (paper PN's overall Dice: class Dice weighted
by class size). Images are obfuscated codes ``(n, S, S)`` (uint8, or uint16 for 12/16-bit keys),
masks class indices ``(n, S, S)`` uint8 in ``[0, classes)``; the masks are the task's labels and
are not obfuscated.
"""

from __future__ import annotations

import numpy as np

from medveil import metrics
from medveil.training.classification import holdout
from medveil.data.pipeline import SegmentationTensors
from medveil.nn import GeneralisedDiceLoss, UNet
from medveil.training.loop import TrainConfig, TrainResult, fit, predict, seed_everything

SEGMENTER = "unet"  # the model name segmentation jobs train (the only one, for now)
WIDTH, DEPTH = 16, 2


def build_segmenter(classes: int) -> UNet:
    """Paper PN's segmenter for ``classes`` classes (background included); input sides divisible by 4."""
    return UNet(in_channels=1, out_channels=classes, width=WIDTH, depth=DEPTH)


def class_names(classes: int) -> tuple[str, ...]:
    """Return the names of ``classes`` mask classes: "0", "1", and so on."""
    return tuple(str(c) for c in range(classes))


def train_segmentation_on_images(images: np.ndarray, masks: np.ndarray, classes: int, config: TrainConfig,
                                 val_fraction: float = 0.15) -> tuple[UNet, TrainResult]:
    """Train on images as they are (already obfuscated) against ``masks``, validating on a seeded hold-out."""
    train_idx, val_idx = holdout(len(images), val_fraction, config.seed)
    seed_everything(config.seed)
    model = build_segmenter(classes)
    names = class_names(classes)

    def val_dice(outputs, targets):
        return metrics.dice_scores(outputs.argmax(dim=1).numpy(), targets.numpy(), names)["overall"]

    result = fit(model, SegmentationTensors(images[train_idx], masks[train_idx]),
                 SegmentationTensors(images[val_idx], masks[val_idx]), GeneralisedDiceLoss(), config, score_fn=val_dice)
    return model, result


def predict_masks(model: UNet, images: np.ndarray) -> np.ndarray:
    """Label maps ``(n, S, S)`` uint8 for images as training saw them."""
    outputs, _ = predict(model, SegmentationTensors(images, np.zeros(images.shape, np.uint8)))
    return outputs.argmax(dim=1).numpy().astype(np.uint8)
