"""Utility evaluation: train a classifier on obfuscated images and measure what accuracy survives.

For each setting (``plain``, or a scheme with parameters) and each seed, a fresh key is drawn
(held in memory only), the training, validation and test images are obfuscated in memory with
it, a classifier is trained with the one training loop, and the test images are scored. Seeds
therefore vary the key as well as the initialisation and data order. Results go to
``results.csv`` (one row per run), with ``split.csv``, ``report.md`` and figures beside it. A
re-run with the same output folder skips runs already finished and resumes a run that was cut
short from its checkpoint.
"""

from __future__ import annotations

import itertools
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import medveil
from medveil import metrics
from medveil._files import write_json
from medveil.data import ImageDataset, group_split, resize_images, save_split, split_summary
from medveil.data.pipeline import ImageTensors, RandomAffine
from medveil.evaluation.figures import image_grid, plot_utility
from medveil.nn import model_spec
from medveil.training.classification import predict_probabilities, train_classifier
from medveil.evaluation.papers import UTILITY as PAPER_UTILITY
from medveil.evaluation.report import markdown_table, mean_std, pm, write_csv
from medveil.schemes import scheme_class
from medveil.schemes.setting import Setting
from medveil.training.loop import TrainConfig

RESULT_COLUMNS = ["dataset", "scheme", "params", "model", "seed", "accuracy", "f1", "auc", "ssim", "psnr"]

def settings_for(scheme: str, grid: Mapping[str, Sequence[Any]], include_plain: bool = True) -> list[Setting]:
    """``plain`` plus one setting per combination of the ``grid`` values of ``scheme``'s parameters.

    ``settings_for("intensity", {"levels": [256, 50]})``; an empty grid gives the scheme's defaults.
    """
    settings = [Setting("plain")] if include_plain else []
    names = sorted(grid)
    for values in itertools.product(*(grid[n] for n in names)):
        settings.append(Setting(scheme, tuple(zip(names, values))))
    return settings


def run_one(dataset: ImageDataset, split: np.ndarray, setting: Setting, seed: int, model_name: str,
            config: TrainConfig, augment: bool) -> dict:
    """Train and test one classifier; returns the result row plus training details."""
    scheme = setting.build_scheme(dataset.channels)
    parts = {name: dataset.subset(split == name) for name in ("train", "val", "test")}
    augmentation = RandomAffine(generator=torch.Generator().manual_seed(seed)) if augment else None
    scale = model_spec(model_name).input
    train = ImageTensors(parts["train"].images, parts["train"].labels, scheme, augmentation, scale)
    val = ImageTensors(parts["val"].images, parts["val"].labels, scheme, scale=scale)
    test = ImageTensors(parts["test"].images, parts["test"].labels, scheme, scale=scale)

    started = time.perf_counter()
    model, result = train_classifier(train, val, model_name, test.images.shape[1], dataset.channels, config,
                                     scheme.name if scheme else None, scheme.key.params if scheme else None)
    probabilities, labels = predict_probabilities(model, test)
    scores = metrics.classification_scores(labels, probabilities)
    similarity = {"ssim": math.nan, "psnr": math.nan}
    if scheme is not None:  # test.images already holds the obfuscated test split, maybe at another size
        originals = resize_images(parts["test"].images, test.images.shape[1])
        similarity = metrics.mean_pair_scores(originals, test.images, with_ms_ssim=False)
    row = {"dataset": dataset.name, "scheme": setting.scheme, "params": setting.params_text, "model": model_name,
           "seed": seed, **scores, "ssim": similarity["ssim"], "psnr": similarity["psnr"]}
    details = {"best_epoch": result.best_epoch, "train_seconds": time.perf_counter() - started,
               "history": result.history, "key_fingerprint": scheme.key.fingerprint if scheme else None}
    return {"row": row, "details": details}


def evaluate_utility(dataset: ImageDataset, settings: Sequence[Setting], seeds: int, out_dir: Path,
                     model: str = "cnn", epochs: int = 30, augment: bool = False, split_seed: int = 0,
                     progress: bool = True, command: str | None = None) -> list[dict]:
    """Run every (setting, seed), write results and the report into ``out_dir``; returns the rows."""
    out_dir = Path(out_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    split = group_split(dataset.labels, dataset.groups, seed=split_seed)
    save_split(out_dir / "split.csv", dataset, split)

    rows = []
    for setting in settings:
        for seed in range(seeds):
            name = f"{setting.slug}-{model}-seed{seed}"
            done = out_dir / "runs" / f"{name}.json"
            if done.exists():
                rows.append(json.loads(done.read_text())["row"])
                continue
            if progress:
                print(f"[{setting.label} | {model} | seed {seed}]", file=sys.stderr)
            config = TrainConfig(epochs=epochs, seed=seed, progress=progress,
                                 checkpoint=out_dir / "checkpoints" / f"{name}.pt")
            outcome = run_one(dataset, split, setting, seed, model, config, augment)
            write_json(done, outcome)
            (out_dir / "checkpoints" / f"{name}.pt").unlink(missing_ok=True)
            rows.append(outcome["row"])

    # The folder accumulates: results and report cover every finished run in it, in the order run.
    finished = sorted((out_dir / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    all_rows = [json.loads(p.read_text())["row"] for p in finished]
    given = {s: s for s in settings}  # these carry their keys, where they have one
    all_settings = list(dict.fromkeys(given.get(s, s) for s in (Setting.from_row(r) for r in all_rows)))
    write_csv(out_dir / "results.csv",
              ({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in all_rows),
              RESULT_COLUMNS)
    write_report(out_dir, dataset, split, all_settings, all_rows, model, epochs, augment, command)
    return rows


def summarise(rows: Sequence[dict], settings: Sequence[Setting]) -> list[dict]:
    """Mean and standard deviation over seeds of each metric, per setting, in ``settings`` order."""
    summary = []
    for setting in settings:
        runs = [r for r in rows if r["scheme"] == setting.scheme and r["params"] == setting.params_text]
        if not runs:
            continue
        summary.append({"setting": setting, "runs": len(runs),
                        **{metric: mean_std(r[metric] for r in runs) for metric in ("accuracy", "f1", "auc", "ssim", "psnr")}})
    return summary


def write_report(out_dir: Path, dataset: ImageDataset, split: np.ndarray, settings: Sequence[Setting],
                 rows: Sequence[dict], model: str, epochs: int, augment: bool, command: str | None) -> Path:
    """``report.md`` with the tables, the comparison with paper NB and the figures."""
    summary = summarise(rows, settings)
    sizes = split_summary(dataset, split)
    size = dataset.size
    lines = [
        f"# Utility of obfuscated images: {dataset.name}, {size}×{size}, model `{model}`",
        "",
        f"Command: `{command}`" if command else "",
        "",
        f"medveil {medveil.__version__}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.machine()} with {torch.get_num_threads()} threads; {epochs} epochs, Adam lr 1e-3, batch 64, "
        f"best-on-validation accuracy checkpoint; augmentation after obfuscation: {'on' if augment else 'off'}.",
        "Each seed draws a fresh key, so the spread covers key choice as well as initialisation.",
        "",
        "## Split (near-duplicate groups kept whole, stratified by class)",
        "",
    ]
    lines += markdown_table([["split", "images", "groups", *dataset.classes]] + [
        [name, info["images"], info["groups"], *(info[c] for c in dataset.classes)] for name, info in sizes.items()])
    lines += ["", "## Results (test set, mean ± std over seeds)", ""]
    lines += markdown_table([["setting", "runs", "accuracy %", "F1 %", "AUC", "SSIM vs original", "PSNR dB"]] + [
        [e["setting"].label, e["runs"], pm(e["accuracy"], 100), pm(e["f1"], 100), pm(e["auc"], 1, 3), pm(e["ssim"], 1, 4),
         pm(e["psnr"], 1, 2)] for e in summary])
    ours = {(e["setting"].scheme, e["setting"].params_text): e for e in summary}
    schemes = {e["setting"].scheme for e in summary} - {"plain"}
    papers = {paper for paper, scheme, *_ in PAPER_UTILITY if scheme in schemes}
    references = [r for r in PAPER_UTILITY if r[0] in papers and (r[1], r[2]) in ours]
    if references:
        lines += [
            "",
            "## Beside the published figures",
            "",
            "Same methods, other data, models and image sizes (paper NB: coronary angiograms, 128×128, its own CNN;",
            "paper LE: a brain-tumour MRI mix with random 80:20 splits, DenseNet-121 at 256×256; paper SD: CIFAR-10,",
            "10 classes, Inception-ResNet-v2 at 224×224). Compare trends, not digits. Drops are in points from the",
            "same source's plain baseline.",
            "",
        ]
        table = [["paper", "setting", "metric", "paper", "ours", "paper drop", "our drop"]]
        for paper, scheme, params, metric, value in references:
            entry = ours[(scheme, params)]
            plain_ref = next((v for p, s_, _, m, v in PAPER_UTILITY if p == paper and s_ == "plain" and m == metric), None)
            plain_ours = ours.get(("plain", ""))
            scale = 1 if metric == "ssim" else 100
            mine = entry[metric][0] * scale
            paper_drop = f"{(plain_ref - value) * scale:.2f}" if plain_ref is not None and scheme != "plain" else "–"
            our_drop = (f"{plain_ours[metric][0] * scale - mine:.2f}" if plain_ours and scheme != "plain"
                        and metric != "ssim" else "–")
            fmt = ".4f" if metric == "ssim" else ".2f"
            table.append([paper, entry["setting"].label, metric, f"{value * scale:{fmt}}", f"{mine:{fmt}}",
                          paper_drop if metric != "ssim" else "–", our_drop])
        lines += markdown_table(table)
    grid_path = _example_grid(out_dir, dataset, split, settings)
    plot_path = plot_utility(summary, out_dir / "accuracy.png", title=f"{dataset.name} {size}×{size}, {model}")
    lines += ["", "## Figures", "", f"![examples]({grid_path.name})", "", f"![accuracy]({plot_path.name})", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def _example_grid(out_dir: Path, dataset: ImageDataset, split: np.ndarray, settings: Sequence[Setting],
                  examples: int = 3) -> Path:
    test = dataset.subset(split == "test")
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in range(len(dataset.classes))][:examples]
    picks += [i for i in range(len(test)) if i not in picks][: examples - len(picks)]
    schemes = [(s.label, s.build_scheme(dataset.channels)) for s in settings
               if s.key or s.scheme == "plain" or not scheme_class(s.scheme).trained_key]  # trained keys: only if at hand
    rows = [[test.images[i] if sch is None else sch(test.images[i]) for _, sch in schemes] for i in picks]
    titles = ["original" if sch is None else label for label, sch in schemes]
    row_titles = [f"{test.files[i]}" for i in picks]
    return image_grid(rows, titles, row_titles, out_dir / "examples.png")
