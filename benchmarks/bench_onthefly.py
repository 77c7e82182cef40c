"""Epoch time with on-the-fly obfuscation against plain images, measured in one run.

    python benchmarks/bench_onthefly.py [--images 1024] [--rounds 3]

Trains paper NB's CNN (64×64, batch 64) for one epoch over the same uint8 images, once through
``ImageTensors`` without a scheme and once with the intensity scheme applied per item, alternating
for ``--rounds`` rounds, and prints the best epoch time of each and the overhead. Goal: <= 2 %.
Epoch times on a shared 2-core machine wobble by several percent, so it also times the
obfuscation calls alone over the same images and prints their share of the plain epoch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import medveil
from medveil.data.pipeline import ImageTensors
from medveil.nn import build_classifier
from medveil.train import TrainConfig, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)  # benchmark data only
    images = rng.integers(0, 256, (args.images, 64, 64), dtype=np.uint8)
    labels = rng.integers(0, 2, args.images)
    scheme = medveil.from_key(medveil.generate_key("intensity", levels=50))
    datasets = {"plain": ImageTensors(images, labels), "on-the-fly intensity": ImageTensors(images, labels, scheme)}

    best = {name: float("inf") for name in datasets}
    for _ in range(args.rounds):
        for name, data in datasets.items():
            model = build_classifier("cnn", 64)
            start = time.perf_counter()
            fit(model, data, None, torch.nn.BCEWithLogitsLoss(), TrainConfig(epochs=1, progress=False))
            best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        print(f"{name:<22} {seconds:6.2f} s/epoch ({args.images} images)")
    overhead = best["on-the-fly intensity"] / best["plain"] - 1
    print(f"overhead {overhead * 100:+.2f} % (goal <= 2 %): {'met' if overhead <= 0.02 else 'NOT met'}")

    start = time.perf_counter()
    for image in images:
        scheme(image)
    alone = time.perf_counter() - start
    print(f"obfuscation calls alone: {alone * 1e3:.1f} ms per epoch ({alone / args.images * 1e6:.1f} us/image), "
          f"{alone / best['plain'] * 100:.2f} % of the plain epoch")


if __name__ == "__main__":
    main()
