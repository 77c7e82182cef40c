"""Epoch time with in-memory ("on-the-fly") obfuscation against plain images, measured in one run.

    python benchmarks/bench_onthefly.py [--images 1024] [--rounds 3]

Builds ``ImageTensors`` over the same uint8 images with and without a scheme and trains paper
NB's CNN (64×64, batch 64) for one epoch on it, construction included in the time, alternating for
``--rounds`` rounds; prints the best time of each and the overhead for each scheme. Goal: <= 2 %.
Epoch times on a shared 2-core machine wobble by several percent, so it also times the
obfuscation alone and prints its share of the plain epoch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import medveil
from medveil.data.pipeline import ImageTensors
from medveil.nn import build_classifier
from medveil.training.loop import TrainConfig, fit


SCHEMES = {"plain": None, "intensity levels=50": ("intensity", {"levels": 50}),
           "skk-smooth block=4": ("skk-smooth", {"block": 4})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)  # benchmark data only
    images = rng.integers(0, 256, (args.images, 64, 64), dtype=np.uint8)
    labels = rng.integers(0, 2, args.images)
    schemes = {name: spec and medveil.from_key(medveil.generate_key(spec[0], **spec[1])) for name, spec in SCHEMES.items()}

    best = {name: float("inf") for name in schemes}
    for _ in range(args.rounds):
        for name, scheme in schemes.items():
            model = build_classifier("cnn", 64)
            start = time.perf_counter()
            data = ImageTensors(images, labels, scheme)
            fit(model, data, None, torch.nn.BCEWithLogitsLoss(), TrainConfig(epochs=1, progress=False))
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"{'plain':<22} {best['plain']:6.2f} s/epoch ({args.images} images)")
    for name, scheme in schemes.items():
        if scheme is None:
            continue
        start = time.perf_counter()
        scheme(images)
        alone = time.perf_counter() - start
        overhead = best[name] / best["plain"] - 1
        print(f"{name:<22} {best[name]:6.2f} s/epoch, overhead {overhead * 100:+.2f} % (goal <= 2 %); "
              f"obfuscation alone {alone * 1e3:.1f} ms = {alone / best['plain'] * 100:.2f} % of the plain epoch")


if __name__ == "__main__":
    main()
