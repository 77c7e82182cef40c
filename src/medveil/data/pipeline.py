"""Torch datasets that obfuscate in memory, normalise, and augment after obfuscation.

The order is the service's reality: the hospital obfuscates the stored 8-bit image with its key;
everything after (min-max scaling to ``[0, 1]``, shifts, flips, rotations) is done on obfuscated
images only, by whoever trains. Augmentation resamples with nearest neighbour so it moves
obfuscated codes around without inventing values between them.

Each dataset here also gives its whole content as tensors (``as_tensors()``), normalised once, so
that the training loop (:func:`medveil.training.loop.fit`) keeps them on the device and cuts
batches from them, augmenting a whole batch in one call (:meth:`RandomAffine.batch`): no Python
runs per item.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medveil.schemes.base import Scheme


def minmax(image: np.ndarray) -> np.ndarray:
    """Scale one image to ``[0, 1]`` float32 (constant images become zeros)."""
    image = image.astype(np.float32)
    lo, hi = image.min(), image.max()
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


class RandomAffine:
    """Random shift, horizontal flip and rotation of a ``(C, H, W)`` tensor, nearest-neighbour.

    Parameters: ``shift`` (fraction of the size), ``degrees`` (max rotation either way), ``flip``
    (probability of a left-right flip). Randomness comes from the given torch generator (data
    augmentation, not key material).
    """

    def __init__(self, shift: float = 0.1, degrees: float = 15.0, flip: float = 0.5, generator: torch.Generator | None = None):
        self.shift, self.degrees, self.flip = shift, degrees, flip
        self.generator = generator

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """One image ``(C, H, W)`` moved by a random affine (see :meth:`batch`)."""
        return self.batch(image[None])[0]

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """Each image of ``(B, C, H, W)`` moved by its own draw, in one grid for the batch, on its device."""
        u = torch.rand(len(images), 4, generator=self.generator).to(images.device, images.dtype)
        angle = (2 * u[:, 0] - 1) * math.radians(self.degrees)
        shift = (2 * u[:, 1:3] - 1) * 2 * self.shift  # affine_grid spans [-1, 1]
        sx = torch.where(u[:, 3] < self.flip, -1.0, 1.0).to(images.dtype)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([sx * cos, -sin, shift[:, 0]], 1), torch.stack([sx * sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


class ImageTensors(Dataset):
    """``(image, label)`` pairs from uint8 images, optionally obfuscated in memory (no files written).

    Parameters
    ----------
    images : ndarray, (n, H, W) or (n, H, W, 3) uint8
    labels : ndarray, (n,) int
    scheme : Scheme, optional
        Applied to the stored images before normalisation, once, in one batch call: every scheme
        is deterministic per key, and vectorised over a batch it costs far less than per item.
    augment : callable, optional
        Applied to the normalised ``(C, H, W)`` tensor.
    scale : str
        ``"minmax"`` (paper NB): each image scaled to ``[0, 1]``, colour images with one minimum and
        maximum over all channels; ``"codes"``: each value divided by its type's largest, so that
        models that read codes (:mod:`medveil.nn.structured`) get them back exactly.

    Items: ``(float32 tensor (C, H, W) in [0, 1], float32 label tensor)``, C = 1 or 3.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, scheme: Scheme | None = None, augment=None,
                 scale: str = "minmax"):
        if scale not in ("minmax", "codes"):
            raise ValueError(f"scale is 'minmax' or 'codes', got {scale!r}")
        self.images = images if scheme is None else scheme(images)
        self.labels, self.augment, self.scale = labels, augment, scale

    def __len__(self) -> int:
        return len(self.labels)

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item, normalised (not augmented): ``(n, C, H, W)`` float32 and the labels ``(n,)`` float32."""
        return self._normalised

    @cached_property
    def _normalised(self) -> tuple[torch.Tensor, torch.Tensor]:  # once per dataset, for items and batches alike
        x = torch.from_numpy(channels_first(self.images).astype(np.float32))
        if self.scale == "minmax":  # per image, over all its channels, as minmax() does
            lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
            x = torch.where(hi > lo, (x - lo) / torch.where(hi > lo, hi - lo, 1.0), 0.0)
        else:
            x = x / np.iinfo(self.images.dtype).max
        return x, torch.from_numpy(np.asarray(self.labels, np.float32))

    def __getitem__(self, i: int):
        x, y = self.as_tensors()
        return (self.augment(x[i]) if self.augment is not None else x[i]), y[i]


class ImagePairs(Dataset):
    """``(input, target)`` float tensors ``(C, H, W)`` in ``[0, 1]`` from uint8 arrays ``(n, H, W[, C])``.

    With ``volumes`` the arrays are single-channel volumes ``(n, D, H, W)`` and the tensors
    ``(1, D, H, W)``. Without targets, the target is the input's first channel (a placeholder for
    prediction).
    """

    def __init__(self, inputs: np.ndarray, targets: np.ndarray | None = None, volumes: bool = False):
        layout = (lambda a: a[:, None]) if volumes else channels_first
        self.inputs = torch.from_numpy(layout(inputs).astype(np.float32) / 255)
        self.targets = None if targets is None else torch.from_numpy(layout(targets).astype(np.float32) / 255)

    def __len__(self) -> int:
        return len(self.inputs)

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item: inputs and targets as whole tensors."""
        return self.inputs, self.inputs[:, :1] if self.targets is None else self.targets

    def __getitem__(self, i: int):
        return self.inputs[i], self.inputs[i][:1] if self.targets is None else self.targets[i]


class SegmentationTensors(Dataset):
    """Items ``(image, mask)`` from ``(n, H, W)`` images and masks.

    ``image`` is ``(1, H, W)`` float in ``[0, 1]``, ``mask`` ``(H, W)`` int64 class indices; volumes ``(n, D, H,
    W)`` give ``(1, D, H, W)`` and ``(D, H, W)``.

    Images are uint8 or uint16 (16-bit codes), scaled by their type's largest value.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray):
        self.images = torch.from_numpy(images.astype(np.float32)[:, None] / np.iinfo(images.dtype).max)
        self.masks = torch.from_numpy(masks.astype(np.int64))

    def __len__(self) -> int:
        return len(self.images)

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item: images and masks as whole tensors."""
        return self.images, self.masks

    def __getitem__(self, i: int):
        return self.images[i], self.masks[i]


def channels_first(images: np.ndarray) -> np.ndarray:
    """Channel-last ``(n, H, W[, C])`` numpy images as channel-first ``(n, C, H, W)``."""
    return images[:, None] if images.ndim == 3 else np.ascontiguousarray(images.transpose(0, 3, 1, 2))
