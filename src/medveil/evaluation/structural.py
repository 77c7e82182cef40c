"""Choosing the structural scheme's input size by SDIM (paper SD, Table 2), without training a model.

For each candidate input size, a sample of the user's images goes through vectorization alone and
through the whole de-identification with a few fresh keys; :func:`medveil.metrics.structural_scores`
compares both with the originals at the output size. The size with the lowest SDIM is recommended.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, cast

import numpy as np
from tqdm import tqdm

from medveil import metrics
from medveil.data import ImageDataset, resize_images
from medveil.evaluation.papers import SD_SDIM
from medveil.evaluation.report import markdown_table, number, write_csv
from medveil.schemes import from_key, generate_key
from medveil.schemes.structural import StructuralDeidentification

SDIM_COLUMNS = ["dataset", "size", "ssim_vec", "ssim_dei", "ssim_pos", "l2_dei", "di", "sdim"]

def sdim_sweep(dataset: ImageDataset, sizes: Sequence[int], raster: int = 64, images: int = 200,
               alpha: float = 0.5, keys: int = 3, progress: bool = True) -> list[dict]:
    """One row of :data:`SDIM_COLUMNS` per input size, over ``images`` evenly spaced images.

    Each size is scored with ``keys`` fresh keys and the measures averaged: how much a single
    key's warp hides varies a lot from key to key, and the recommendation should not ride on one draw.
    """
    picks = np.linspace(0, len(dataset) - 1, min(images, len(dataset))).astype(int)
    sample = dataset.images[picks]
    originals = resize_images(sample, raster)
    identity = lambda values: values  # noqa: E731  (vectorization only: coordinates unchanged)
    rows = []
    for size in tqdm(sizes, desc="SDIM sweep", disable=not progress):
        schemes = [from_key(generate_key("structural", size=size, raster=raster, channels=dataset.channels))
                   for _ in range(keys)]
        vectorized = np.stack([cast(StructuralDeidentification, schemes[0]).deidentify(img, identity) for img in sample])
        per_key = [metrics.structural_scores(originals, vectorized, scheme(sample), alpha) for scheme in schemes]
        rows.append({"dataset": dataset.name, "size": size, **{m: float(np.mean([k[m] for k in per_key])) for m in per_key[0]}})
    return rows


def recommended_size(rows: Sequence[dict]) -> int:
    """Return the input size with the lowest SDIM."""
    return int(min(rows, key=lambda r: r["sdim"])["size"])


def write_sweep(out_dir: Path, rows: Sequence[dict], raster: int, alpha: float, command: str | None = None) -> Path:
    """``sdim.csv`` and ``report.md`` (with paper SD's Table 2 beside ours) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "sdim.csv", ({k: (f"{v:.5f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows),
              SDIM_COLUMNS)
    best = recommended_size(rows)
    lines = [f"# Structural de-identification: SDIM by input size ({rows[0]['dataset']}, output {raster}×{raster}, α = {alpha})",
             "", f"Command: `{command}`" if command else "", "",
             "Lower SDIM is better (paper SD eq. 6). Paper SD: CIFAR-10, output 224×224, imagetracerjs + pyope + "
             "ImageMagick; ours: vtracer + keyed OPE table + resvg. L2norm is the RMS difference on the [0, 1] scale.",
             ""]
    table = [["size", "SSIM_Vec", "SSIM_Dei", "SSIM_Pos", "L2norm_Dei", "DI", "SDIM", "paper SD SDIM"]]
    for r in rows:
        mark = " **(lowest)**" if int(r["size"]) == best else ""
        table.append([f"{r['size']}{mark}"] + [number(r[m], 4) for m in ("ssim_vec", "ssim_dei", "ssim_pos", "l2_dei", "di", "sdim")]
                     + [number(SD_SDIM.get(int(r["size"])), 4)])
    lines += markdown_table(table)
    lines += ["", f"Recommended input size: **{best}×{best}**.", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
