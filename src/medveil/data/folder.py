"""A torch Dataset over a folder of medical images, obfuscated on the fly with a key, MONAI-style.

Any file medveil reads (DICOM, NIfTI, PNG/JPEG/TIFF, NPY) below ``root`` is an item, in a stable
order; hidden files, links that lead outside regular files and unsupported files are left out (as
``medveil obfuscate`` does). Files in a first-level subfolder get that subfolder's index among the
sorted subfolders as their label (torchvision's ImageFolder convention); files directly in
``root`` get -1. Nothing is written: each item passes the gate (:class:`medveil.io.gate.Gate`:
checked, screened for burned-in text) and is obfuscated in memory, in the worker that loads it, so
a DataLoader with workers does both in parallel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from medveil.errors import InputError
from medveil.io.batch import walk
from medveil.io.gate import Gate, fit_channels
from medveil.io.image import is_supported
from medveil.keys import Key
from medveil.schemes import Scheme
from medveil.transforms import Obfuscate


class ObfuscatedFolder(Dataset):
    """Items ``{"image": codes, "label": class}``, channel first as MONAI's dictionary transforms expect.

    ``image`` is a file's stored samples obfuscated with ``key``: a tensor ``(1, H, W)``,
    ``(1, D, H, W)`` for a volume, ``(3, H, W)`` for colour, of the scheme's output dtype.

    Parameters
    ----------
    root : path
        The folder; first-level subfolders are the classes.
    key : Key or Scheme
        What obfuscates.
    pre_transform : callable, optional
        Applied to the plain stored values, channel first (a numpy array), before obfuscation: a
        resize to one size belongs here (``monai.transforms.Resize(..., mode="nearest")``), since
        resizing codes would interpolate between them. It must give whole numbers of the file's
        range (nearest-neighbour, crops, flips); non-integer values are refused with the file named.
    transform : callable, optional
        Applied to the item dict after obfuscation (MONAI ``Compose`` of dictionary transforms on
        the codes: flips, crops, intensity-free augmentation).
    burned_in_text : str
        The gate's policy for text in a file's pixels (``refuse``: the item raises
        :class:`InputError`; ``mask``; ``off``).

    Images of several sizes cannot share a batch: :meth:`loader` says so in one line naming two of
    the sizes (give ``pre_transform``), where PyTorch's own collate fails on tensor sizes.
    :attr:`files` and :attr:`classes` say what the items are.
    """

    def __init__(self, root: str | os.PathLike, key: Key | Scheme, transform: Callable | None = None,
                 burned_in_text: str = "refuse", pre_transform: Callable | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: not a folder")
        self.files = [self.root / rel for rel in walk(self.root) if is_supported(self.root / rel)]
        if not self.files:
            raise InputError(f"{self.root}: no image medveil reads below this folder")
        self.classes = sorted({f.relative_to(self.root).parts[0] for f in self.files
                               if len(f.relative_to(self.root).parts) > 1})
        self.obfuscate = Obfuscate(key)
        self.gate = Gate(self.obfuscate.scheme, burned_in_text)
        self.transform, self.pre_transform = transform, pre_transform

    def __len__(self) -> int:
        return len(self.files)

    def label(self, index: int) -> int:
        """Return the class index of file ``index``, or -1 outside a class folder.

        The index is its top folder's place in :attr:`classes`.
        """
        parts = self.files[index].relative_to(self.root).parts
        return self.classes.index(parts[0]) if len(parts) > 1 else -1

    def __getitem__(self, index: int) -> dict:
        import torch

        image = fit_channels(self.gate.read(self.files[index]), self.obfuscate.scheme)
        colour = image.channel_axis is not None
        plain = np.moveaxis(image.pixels, -1, 0) if colour else image.pixels[None]
        if self.pre_transform is not None:
            plain = self._whole(np.asarray(self.pre_transform(plain)), image.pixels.dtype, index)
        codes = self.obfuscate(np.moveaxis(plain, 0, -1) if colour else plain[0])
        item = {"image": torch.from_numpy(np.ascontiguousarray(np.moveaxis(codes, -1, 0) if colour else codes[None])),
                "label": self.label(index)}
        return self.transform(item) if self.transform is not None else item

    def _whole(self, values: np.ndarray, dtype: np.dtype, index: int) -> np.ndarray:
        if values.dtype.kind == "f":
            if not np.array_equal(values, np.round(values)):
                raise InputError(f"{self.files[index]}: pre_transform gave non-integer values (an interpolating "
                                 "resize?); use nearest-neighbour so that the key maps stored values")
            info = np.iinfo(dtype)
            if values.size and (values.min() < info.min or values.max() > info.max):
                raise InputError(f"{self.files[index]}: pre_transform gave values outside {dtype}'s range")
        return values.astype(dtype, copy=False)

    def collate(self, items: list[dict]) -> dict:
        """Items into one batch; images of different sizes are one line naming two of their files."""
        from torch.utils.data import default_collate

        shapes = [tuple(item["image"].shape) for item in items]
        if len(set(shapes)) > 1:
            first, other = shapes[0], next(s for s in shapes if s != shapes[0])
            raise InputError(f"{self.root}: images of different sizes in one batch ({'x'.join(map(str, first))} and "
                             f"{'x'.join(map(str, other))}); give ObfuscatedFolder(pre_transform=...) a resize "
                             "(nearest-neighbour) to one size, or batch_size=1")
        return default_collate(items)

    def loader(self, **options):
        """Return a ``torch.utils.data.DataLoader`` over this folder with :meth:`collate`.

        ``options`` go to the loader: batch_size, num_workers, shuffle, ...
        """
        from torch.utils.data import DataLoader

        return DataLoader(self, collate_fn=self.collate, **options)
