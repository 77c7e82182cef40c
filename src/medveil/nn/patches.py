"""Patches of volumes: random crops for training, sliding windows for whole-volume inference (paper PN).

Paper PN trains its 3-D networks on 64³ patches and applies them to whole volumes. Here:

* :class:`RandomPatches` wraps a dataset of ``(input, target)`` tensors and crops a batch of both, at
  one random corner, to a cube of side ``patch`` over their trailing ``dims`` axes (targets without
  those axes, such as a pair's same/different label, pass through);
* :func:`sliding_window` runs a fully convolutional network over a whole ``(B, C, D, H, W)``
  batch window by window and stitches the windows' interiors ("overlap-tile", as the U-Net paper
  does), so that the result equals one whole-volume pass wherever the network's receptive field
  fits inside the margin and its pooling grid is aligned (window starts are multiples of
  ``align``). MONAI's ``sliding_window_inference`` blends overlapping windows instead; blending
  mixes in values computed near a window's edge, which never equal the whole-volume pass.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sized, cast

import torch
from torch.utils.data import Dataset


def window_starts(length: int, patch: int, margin: int, align: int = 1) -> list[int]:
    """Return the starts of windows of ``patch`` along an axis of ``length`` that tile it.

    The windows' interiors (``margin`` off each inner side) tile the axis; starts are multiples of ``align``
    (``length`` and ``patch`` should be too).
    """
    if length <= patch:
        return [0]
    step = max(align, (patch - 2 * margin) // align * align)
    starts = list(range(0, length - patch, step))
    return starts + [length - patch]


def sliding_window(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, patch: int,
                   margin: int | None = None, align: int = 1) -> torch.Tensor:
    """Apply ``function`` over ``x`` ``(B, C, *spatial)`` in windows of side ``patch``; returns ``(B, C', *spatial)``.

    ``function`` must keep the spatial shape (a U-Net, an encoder). Axes shorter than ``patch``
    are zero-padded to it and cropped back. ``margin`` (default ``patch // 4``) voxels of each
    window face that is not on the volume's border are dropped when stitching.
    """
    margin = patch // 4 if margin is None else margin
    spatial = x.shape[2:]
    padding = [max(0, patch - n) for n in spatial]
    if any(padding):
        x = torch.nn.functional.pad(x, [p for n in reversed(padding) for p in (0, n)])
    out: torch.Tensor | None = None
    for tiles in itertools.product(*[_tiles(n, patch, margin, align) for n in x.shape[2:]]):
        y = function(x[_index(slice(start, start + patch) for start, _, _ in tiles)])
        if out is None:
            out = y.new_empty((*y.shape[:2], *x.shape[2:]))
        out[_index(slice(lo, hi) for _, lo, hi in tiles)] = y[_index(slice(lo - start, hi - start)
                                                                     for start, lo, hi in tiles)]
    assert out is not None  # a volume has at least one tile
    return out[_index(slice(0, n) for n in spatial)]


def _index(trailing) -> tuple[Any, ...]:
    """``[..., a, b, c]``: slices of the trailing axes."""
    return (Ellipsis, *trailing)


def _tiles(length: int, patch: int, margin: int, align: int) -> list[tuple[int, int, int]]:
    """Along one axis (at least ``patch`` long).

    Each window's start and the ``[lo, hi)`` it contributes, its interior, reaching the axis' ends where the window
    does.
    """
    return [(start, start if start == 0 else start + margin, length if start + patch == length else start + patch - margin)
            for start in window_starts(length, patch, margin, align)]


def random_corner(shape: tuple[int, ...], patch: int, generator: torch.Generator | None = None) -> tuple[int, ...]:
    """Return a uniformly random corner of a cube of side ``patch`` inside ``shape`` (0 where an axis is shorter)."""
    return tuple(int(torch.randint(0, max(n - patch, 0) + 1, (1,), generator=generator)) for n in shape)


def crop(x: torch.Tensor, corner: tuple[int, ...], patch: int) -> torch.Tensor:
    """``x``'s trailing ``len(corner)`` axes cropped to side ``patch`` at ``corner``."""
    return x[_index(slice(c, c + patch) for c in corner)]


def random_crop(tensors, patch: int, dims: int = 3, generator: torch.Generator | None = None) -> tuple:
    """Crop ``tensors`` at one random corner to side ``patch`` over their trailing ``dims`` axes.

    The first tensor's shape picks the corner; tensors with fewer axes, such as labels, pass through.
    """
    corner = random_corner(tuple(tensors[0].shape[-dims:]), patch, generator)
    return tuple(crop(t, corner, patch) if t.dim() >= dims else t for t in tensors)


class RandomPatches(Dataset):
    """``dataset``'s items cropped to cubes of side ``patch`` over their trailing ``dims`` axes.

    ``dataset`` gathers batches by index (``take``) or gives its whole content as tensors
    (``as_tensors``). A batch is cropped at once, input and target at one corner (as paper PN's
    training loop crops a batch): a fresh corner per batch and epoch, or with ``fixed`` one seeded
    by ``seed`` and the batch's first index, for validation sets (cut in order) that must not change
    between epochs.
    """

    def __init__(self, dataset: Dataset, patch: int, dims: int = 3, fixed: bool = False, seed: int = 0):
        self.dataset, self.patch, self.dims, self.fixed, self.seed = dataset, patch, dims, fixed, seed

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the items ``indices`` gathered and cropped at one corner: ``(b, C, patch, ...)`` and the targets."""
        inner: Any = self.dataset
        x, y = inner.take(indices) if hasattr(inner, "take") else (t[indices] for t in inner.as_tensors())
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(indices[0])) if self.fixed else None
        x, y = random_crop((x, y), self.patch, self.dims, generator)
        return x, y

    def __getitem__(self, i: int):
        x, y = self.take(torch.tensor([i]))
        return x[0], y[0]


def whole_volume(unet: torch.nn.Module, x: torch.Tensor, patch: int | None) -> torch.Tensor:
    """Run a :class:`~medveil.nn.UNet` over a whole batch.

    Directly, or, with ``patch``, by sliding windows of that side, started on its pooling grid.
    """
    if patch is None:
        return unet(x)
    return sliding_window(unet, x, patch, align=2 ** len(cast(Sized, unet.up)))
