"""The bench grid's cells as they run now, against the allocator and the per-item loader they replaced.

    python benchmarks/bench_grid.py [--epochs 3] [--device auto|cpu|cuda] [--repeat 1] [--kinds cnn,unet,...]

On Br35H at 64×64 (the full profile's size and split: 2,100 training images), times a fixed
handful of cell kinds:

- ``cnn``: paper NB's CNN on obfuscated images (skk-smooth block=4) with the random affine
  augmentation, as a utility cell trains it;
- ``code-embedding``, ``per-position``, ``patch-embedding``, ``block-bag``: the structure-aware
  server model of each family (``matched``) on its scheme's codes (intensity levels=50, skk-smooth
  block=4, tanaka block=4, block-shuffle block=8), as the full profile's matched cells train them;
- ``unet``: paper NB's attacker U-Net on (obfuscated, plain) pairs, as kerckhoffs-unet,
  learned-reconstruction and the other U-Net attacks train it;
- ``kerckhoffs``: a whole kerckhoffs-unet cell of the grid (skk-smooth block=4, prior data), the
  attacker's images obfuscated under 32 fresh keys and the U-Net trained;
- ``structural``: paper SD's trace-and-render of the training split (per image, on the CPU), over a
  pool of every core (as ``medveil bench`` runs it) against one process.

Each measurement runs in a fresh process, in turn, as:

- *now*: what ``medveil bench`` runs: the dataset's tensors on the device, batches cut there, one
  affine grid per batch (:func:`medveil.training.loop.fit`), and the allocator told to keep
  image-sized arrays on the heap (:func:`medveil.parallel.memory.keep_arrays_on_heap`, as every
  ``medveil`` command does);
- *glibc*: the same with glibc's default allocator, which maps and unmaps every buffer over its
  threshold anew (the kernel zeroing its pages every time);
- *per-item*: that allocator and the per-item loader of before (a DataLoader calling
  ``__getitem__`` per image, normalising and augmenting each on its own).

Prints the median seconds per kind and the ratios against *now*. With ``--device cuda`` it runs on
a GPU unchanged (there the allocator matters less: batches live in GPU memory).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

FAMILIES = {"code-embedding": ("intensity", {"levels": 50}), "per-position": ("skk-smooth", {"block": 4}),
            "patch-embedding": ("tanaka", {"block": 4}), "block-bag": ("block-shuffle", {"block": 8})}
KINDS = ("cnn", *FAMILIES, "unet", "kerckhoffs", "structural")
VARIANTS = {"now": "now", "glibc": "glibc malloc", "per-item": "per-item loader"}


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


def measure(kind: str, variant: str, epochs: int, device: str) -> dict:
    """Time one kind under one variant in this (fresh) process; returns ``{"seconds", ...}``."""
    import torch

    import medveil
    from medveil import parallel
    from medveil.attacks.reconstruction import _SigmoidMSE
    from medveil.data import load_br35h
    from medveil.data.pipeline import ImagePairs, ImageTensors, RandomAffine
    from medveil.nn import UNet, model_spec
    from medveil.training.classification import model_tensors, train_classifier
    from medveil.training.loop import TrainConfig, fit

    if variant == "now":
        from medveil.parallel.memory import keep_arrays_on_heap

        keep_arrays_on_heap()
    per_item = variant == "per-item"
    PerItem = per_item_loader()
    data = load_br35h(64)
    train, val = data.images[:2100], data.images[2100:2550]
    labels, val_labels = data.labels[:2100], data.labels[2100:2550]
    if kind == "structural":
        structural = medveil.from_key(medveil.generate_key("structural", size=50))
        parallel.set_cores(parallel.available_cores())
        every_core = timed(lambda: structural(train))
        parallel.set_cores(1)
        return {"seconds": every_core, "one process": timed(lambda: structural(train))}
    if kind == "kerckhoffs":
        from dataclasses import replace
        from pathlib import Path
        from tempfile import TemporaryDirectory

        from medveil.bench.grid import PROFILES, Cell, run_cell
        from medveil.data import group_split
        from medveil.schemes import Setting

        cell = Cell("attack", Setting("skk-smooth", (("block", 4),)), attack="kerckhoffs-unet", attacker_data="prior")
        profile = replace(PROFILES["full"], attack_epochs=epochs)
        split = group_split(data.labels, data.groups)
        with TemporaryDirectory() as figures:
            return {"seconds": timed(lambda: run_cell(cell, data, split, profile, Path(figures), b"bench" * 8))}
    scheme_name, params = FAMILIES.get(kind, ("skk-smooth", {"block": 4}))
    scheme = medveil.from_key(medveil.generate_key(scheme_name, **params))
    codes, val_codes = scheme(train), scheme(val)
    if kind == "unet":
        pairs = PerItem(codes, targets=train) if per_item else ImagePairs(codes, train)
        return {"seconds": timed(lambda: fit(UNet(1, 1, width=16), pairs, ImagePairs(val_codes, val), _SigmoidMSE(),
                                             TrainConfig(epochs=epochs, batch_size=128, progress=False, device=device)))}
    model = "cnn" if kind == "cnn" else "matched"
    augment = kind == "cnn"  # codes scale: the matched cells train without
    scale = model_spec(model).input
    augmentation = RandomAffine(generator=torch.Generator().manual_seed(0)) if augment else None
    tensors = (PerItem(codes, labels, augment=augment, scale=scale) if per_item
               else ImageTensors(codes, labels, augment=augmentation, scale=scale))
    config = TrainConfig(epochs=epochs, progress=False, device=device)
    return {"seconds": timed(lambda: train_classifier(tensors, model_tensors(model, val_codes, val_labels), model,
                                                      64, 1, config, scheme_name, {**params, "channels": 1}))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"a comma-separated subset of {', '.join(KINDS)}")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "VARIANT"), help=argparse.SUPPRESS)  # one, in this process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.epochs, args.device)))
        return
    print(f"Br35H 64x64, 2100 training images, {args.epochs} epochs, device {args.device}; "
          f"median of {args.repeat} run(s), each in a fresh process, in turn")
    for kind in args.kinds.split(","):
        variants = ("now",) if kind == "structural" else ("now", "glibc") if kind == "kerckhoffs" else tuple(VARIANTS)
        runs: dict[str, list[dict]] = {variant: [] for variant in variants}
        for _ in range(args.repeat):
            for variant in variants:
                out = subprocess.run([sys.executable, __file__, "--measure", kind, variant, "--epochs", str(args.epochs),
                                      "--device", args.device], check=True, capture_output=True, text=True).stdout
                runs[variant].append(json.loads(out.splitlines()[-1]))
        now = statistics.median(r["seconds"] for r in runs["now"])
        if kind == "structural":
            one = statistics.median(r["one process"] for r in runs["now"])
            print(f"  {kind:16s} every core {now:7.1f} s   one process {one:7.1f} s ({one / now:4.2f}x)")
            continue
        line = f"  {kind:16s} now {now:7.1f} s"
        for variant in variants[1:]:
            seconds = statistics.median(r["seconds"] for r in runs[variant])
            line += f"   {VARIANTS[variant]} {seconds:7.1f} s ({seconds / now:4.2f}x)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
