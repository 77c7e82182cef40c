"""The bench grid's training, with whole-tensor batches on the device, against the per-item loader it replaces.

    python benchmarks/bench_grid.py [--epochs 3] [--device auto|cpu|cuda] [--repeat 1]

On Br35H at 64×64 (the full profile's size and split), times a fixed handful of cell kinds:

- ``utility cnn``: paper NB's CNN on obfuscated images (skk-smooth block=4) with the random
  affine augmentation, as a utility cell trains it;
- ``utility matched``: the structured server model on the same codes (no augmentation: codes scale);
- ``U-Net attack``: paper NB's attacker U-Net on (obfuscated, plain) pairs, as kerckhoffs-unet,
  learned-reconstruction and known-pairs' refinements train it;
- ``structural``: paper SD's trace-and-render of the training split (per image, on the CPU), over a
  pool of every core (as ``medveil bench`` runs it) against one process (as it ran before).

Each kind runs twice in the same process, in turn: through :func:`medveil.training.loop.fit`
as the grid runs it now (the dataset's tensors on the device, batches cut there, one affine grid per
batch) and through the per-item loader it replaces (a DataLoader calling ``__getitem__`` per image,
normalising and augmenting each on its own). Prints seconds per kind and the ratio. With ``--device
cuda`` it runs on a GPU unchanged.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time


def per_item_loader():
    """The per-item dataset class, made here so that a spawned worker importing this script (as
    structural's pool does) pays for no torch import."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.utils.data import Dataset

    from medveil.data.pipeline import minmax

    class PerItem(Dataset):
        """The loader this replaces, as it was (main at b307e63): each item normalised on its own in NumPy,
        moved on its own (one affine grid per image), and handed to a DataLoader one at a time."""

        def __init__(self, images, labels=None, targets=None, augment: bool = False, scale: str = "minmax"):
            self.images, self.labels, self.targets, self.scale = images, labels, targets, scale
            self.generator = torch.Generator().manual_seed(0) if augment else None

        def __len__(self) -> int:
            return len(self.images)

        def _affine(self, image: torch.Tensor) -> torch.Tensor:
            u = torch.rand(4, generator=self.generator)
            angle = math.radians((2 * u[0].item() - 1) * 15.0)
            tx, ty = ((2 * u[1:3] - 1) * 2 * 0.1).tolist()
            sx = -1.0 if u[3].item() < 0.5 else 1.0
            cos, sin = math.cos(angle), math.sin(angle)
            theta = torch.tensor([[sx * cos, -sin, tx], [sx * sin, cos, ty]], dtype=image.dtype)
            grid = F.affine_grid(theta[None], [1, *image.shape], align_corners=False)
            return F.grid_sample(image[None], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]

        def __getitem__(self, i: int):
            image = self.images[i]
            if self.targets is not None:  # (input, target) pairs, as ImagePairs gave them
                return (torch.from_numpy(image.astype(np.float32) / 255)[None],
                        torch.from_numpy(self.targets[i].astype(np.float32) / 255)[None])
            x = torch.from_numpy(minmax(image) if self.scale == "minmax" else image.astype(np.float32) / 255)[None]
            if self.generator is not None:
                x = self._affine(x)
            return x, torch.tensor(float(self.labels[i]))

    return PerItem


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    import torch

    import medveil
    from medveil import parallel
    from medveil.attacks.reconstruction import _SigmoidMSE
    from medveil.data import load_br35h
    from medveil.data.pipeline import ImagePairs, ImageTensors, RandomAffine
    from medveil.nn import UNet
    from medveil.training.classification import train_classifier
    from medveil.training.loop import TrainConfig, fit

    PerItem = per_item_loader()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    data = load_br35h(64)
    train, val = data.images[:2100], data.images[2100:2550]
    labels, val_labels = data.labels[:2100], data.labels[2100:2550]
    scheme = medveil.from_key(medveil.generate_key("skk-smooth", block=4))
    codes, val_codes = scheme(train), scheme(val)
    config = TrainConfig(epochs=args.epochs, progress=False, device=args.device)

    def utility(model: str, augment: bool, per_item: bool):
        scale = "codes" if model == "matched" else "minmax"
        augmentation = RandomAffine(generator=torch.Generator().manual_seed(0)) if augment else None
        tensors = (PerItem(codes, labels, augment=augment, scale=scale) if per_item
                   else ImageTensors(codes, labels, augment=augmentation, scale=scale))
        return lambda: train_classifier(tensors,
                                        ImageTensors(val_codes, val_labels, scale=scale), model, 64, 1, config,
                                        "skk-smooth", {"block": 4, "channels": 1})

    def unet(per_item: bool):
        pairs = PerItem(codes, targets=train) if per_item else ImagePairs(codes, train)
        return lambda: fit(UNet(1, 1, width=16), pairs, ImagePairs(val_codes, val),
                           _SigmoidMSE(), TrainConfig(epochs=args.epochs, batch_size=128, progress=False,
                                                      device=args.device))

    kinds = {"utility cnn": lambda p: utility("cnn", True, p), "utility matched": lambda p: utility("matched", False, p),
             "U-Net attack": unet}
    print(f"Br35H 64x64, {len(train)} training images, {args.epochs} epochs, device {args.device}; "
          f"median of {args.repeat} run(s), in turn")
    for name, make in kinds.items():
        now, before = [], []
        for _ in range(args.repeat):
            now.append(timed(make(False)))
            before.append(timed(make(True)))
        a, b = statistics.median(now), statistics.median(before)
        print(f"  {name:16s} whole tensors {a:7.1f} s   per-item loader {b:7.1f} s   {b / a:5.2f}x faster")
    structural = medveil.from_key(medveil.generate_key("structural", size=50))
    every_core, one = [], []
    for _ in range(args.repeat):
        parallel.set_cores(parallel.available_cores())
        every_core.append(timed(lambda: structural(train)))
        parallel.set_cores(1)
        one.append(timed(lambda: structural(train)))
    a, b = statistics.median(every_core), statistics.median(one)
    print(f"  {'structural':16s} {parallel.available_cores()} processes {a:7.1f} s   one process {b:7.1f} s   "
          f"{b / a:5.2f}x faster")


if __name__ == "__main__":
    main()
