"""A torch Dataset over a folder of medical images, obfuscated on the fly with a key.

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

from torch.utils.data import Dataset

from medveil.errors import InputError
from medveil.io.batch import walk
from medveil.io.gate import Gate
from medveil.io.image import is_supported
from medveil.keys import Key
from medveil.schemes import Scheme
from medveil.transforms import Obfuscate


class ObfuscatedFolder(Dataset):
    """Items ``(codes, label)``: a file's stored samples obfuscated with ``key`` as a tensor, and its class.

    ``codes`` has the file's own shape (``(H, W)``, ``(D, H, W)`` for a volume, ``(H, W, 3)`` for
    colour) and the scheme's output dtype; ``transform`` (e.g. a MONAI ``Compose``) is applied
    after obfuscation. :attr:`files` and :attr:`classes` say what the items are.
    ``burned_in_text`` is the gate's policy for text in a file's pixels (``refuse``: the item raises
    :class:`InputError`; ``mask``; ``off``).
    """

    def __init__(self, root: str | os.PathLike, key: Key | Scheme, transform=None, burned_in_text: str = "refuse"):
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
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def label(self, index: int) -> int:
        parts = self.files[index].relative_to(self.root).parts
        return self.classes.index(parts[0]) if len(parts) > 1 else -1

    def __getitem__(self, index: int):
        import torch

        codes = torch.from_numpy(self.obfuscate(self.gate.read(self.files[index]).pixels))
        return (self.transform(codes) if self.transform else codes), self.label(index)
