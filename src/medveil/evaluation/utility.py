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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import medveil
from medveil import metrics
from medveil._atomic import write_json
from medveil.data import ImageDataset, group_split, resize_images, save_split, split_summary
from medveil.data.pipeline import ImageTensors, RandomAffine
from medveil.evaluation import write_csv
from medveil.keys import Key
from medveil.figures import image_grid, plot_utility
from medveil.classification import predict_probabilities, train_classifier
from medveil.schemes import Scheme, from_key, generate_key, scheme_class
from medveil.train import TrainConfig

RESULT_COLUMNS = ["dataset", "scheme", "params", "model", "seed", "accuracy", "f1", "auc", "ssim", "psnr"]

# Published utility figures: (paper, scheme, params, metric, value). Paper NB, Table I: coronary
# angiography RCA/LCA at 128x128, test accuracy (its SSIM/PSNR are for one example frame). Paper LE,
# Tables 2-3: brain-tumour MRI, DenseNet-121 at 256x256, F1 (block=1 is SKK). Paper SD, Table 3: CIFAR-10
# de-identified to 224x224 from the input size given, Inception-ResNet-v2, accuracy (no plain baseline given).
PAPER_REFERENCES = [
    ("NB", "plain", "", "accuracy", 0.9473),
    ("NB", "intensity", "levels=256", "accuracy", 0.8348),
    ("NB", "intensity", "levels=150", "accuracy", 0.8447),
    ("NB", "intensity", "levels=50", "accuracy", 0.8405),
    ("NB", "intensity", "levels=45", "accuracy", 0.7977),
    ("NB", "intensity", "levels=256", "ssim", 0.0109),
    ("NB", "intensity", "levels=150", "ssim", 0.0368),
    ("NB", "intensity", "levels=50", "ssim", 0.0940),
    ("NB", "intensity", "levels=45", "ssim", 0.0147),
    ("LE", "plain", "", "f1", 0.9836),
    ("LE", "skk", "", "f1", 0.9336),
    ("LE", "skk-smooth", "block=1", "f1", 0.9336),
    ("LE", "skk-smooth", "block=3", "f1", 0.9097),
    ("LE", "skk-smooth", "block=4", "f1", 0.8930),
    ("LE", "skk-smooth", "block=5", "f1", 0.8685),
    ("SD", "structural", "size=32", "accuracy", 0.8126),
    ("SD", "structural", "size=50", "accuracy", 0.8710),
    ("SD", "structural", "size=64", "accuracy", 0.8748),
]


@dataclass(frozen=True)
class Setting:
    """``scheme="plain"`` (no obfuscation), a registered scheme with its key parameters, or one given key.

    Without ``key`` every run draws a fresh key; with it every run uses that key (schemes whose
    keys must be trained, such as ``vae``, are evaluated this way).
    """

    scheme: str
    params: tuple[tuple[str, Any], ...] = ()
    key: Key | None = field(default=None, compare=False, repr=False)

    @classmethod
    def for_key(cls, key: Key) -> "Setting":
        setting = cls.from_row({"scheme": key.scheme, "params": scheme_class(key.scheme).params_label(key.params)})
        return replace(setting, key=key)

    @classmethod
    def from_row(cls, row: dict) -> "Setting":
        params = tuple((k, int(v) if v.lstrip("-").isdigit() else v)
                       for k, v in (part.split("=", 1) for part in row["params"].split(";") if part))
        return cls(row["scheme"], params)

    @property
    def params_text(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.params)

    @property
    def label(self) -> str:
        return self.scheme if not self.params else f"{self.scheme} {self.params_text}"

    def build_scheme(self, channels: int = 1) -> Scheme | None:
        """A scheme with a fresh in-memory key for images of ``channels`` channels, or ``None`` for plain.

        Schemes with a ``channels`` parameter get it from the data unless the setting fixes it.
        """
        if self.scheme == "plain":
            return None
        if self.key is not None:
            return from_key(self.key)
        params = dict(self.params)
        if "channels" in scheme_class(self.scheme).validate_params({}):
            params.setdefault("channels", channels)
        return from_key(generate_key(self.scheme, **params))


def settings_for(scheme: str, grid: dict[str, Sequence[Any]], include_plain: bool = True) -> list[Setting]:
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
    train = ImageTensors(parts["train"].images, parts["train"].labels, scheme, augmentation)
    val = ImageTensors(parts["val"].images, parts["val"].labels, scheme)
    test = ImageTensors(parts["test"].images, parts["test"].labels, scheme)

    started = time.perf_counter()
    model, result = train_classifier(train, val, model_name, test.images.shape[1], dataset.channels, config)
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
            name = f"{setting.label.replace(' ', '_').replace(';', '_').replace('=', '')}-{model}-seed{seed}"
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
            config.checkpoint.unlink()
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
        entry = {"setting": setting, "runs": len(runs)}
        for metric in ("accuracy", "f1", "auc", "ssim", "psnr"):
            values = np.array([float(r[metric]) for r in runs], dtype=float)
            entry[metric] = (float(np.mean(values)), float(np.std(values)))
        summary.append(entry)
    return summary


def _pm(value: tuple[float, float], scale: float = 1.0, digits: int = 2) -> str:
    mean, std = value
    return "–" if math.isnan(mean) else f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


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
        "| split | images | groups | " + " | ".join(dataset.classes) + " |",
        "|---|---|---|" + "---|" * len(dataset.classes),
    ]
    for name, info in sizes.items():
        lines.append(f"| {name} | {info['images']} | {info['groups']} | " + " | ".join(str(info[c]) for c in dataset.classes) + " |")
    lines += [
        "",
        "## Results (test set, mean ± std over seeds)",
        "",
        "| setting | runs | accuracy % | F1 % | AUC | SSIM vs original | PSNR dB |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in summary:
        lines.append(f"| {entry['setting'].label} | {entry['runs']} | {_pm(entry['accuracy'], 100)} | {_pm(entry['f1'], 100)} | "
                     f"{_pm(entry['auc'], 1, 3)} | {_pm(entry['ssim'], 1, 4)} | {_pm(entry['psnr'], 1, 2)} |")
    ours = {(e["setting"].scheme, e["setting"].params_text): e for e in summary}
    schemes = {e["setting"].scheme for e in summary} - {"plain"}
    papers = {paper for paper, scheme, *_ in PAPER_REFERENCES if scheme in schemes}
    references = [r for r in PAPER_REFERENCES if r[0] in papers and (r[1], r[2]) in ours]
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
            "| paper | setting | metric | paper | ours | paper drop | our drop |",
            "|---|---|---|---|---|---|---|",
        ]
        for paper, scheme, params, metric, value in references:
            entry = ours[(scheme, params)]
            plain_ref = next((v for p, s_, _, m, v in PAPER_REFERENCES if p == paper and s_ == "plain" and m == metric), None)
            plain_ours = ours.get(("plain", ""))
            scale = 1 if metric == "ssim" else 100
            mine = entry[metric][0] * scale
            paper_drop = f"{(plain_ref - value) * scale:.2f}" if plain_ref is not None and scheme != "plain" else "–"
            our_drop = (f"{plain_ours[metric][0] * scale - mine:.2f}" if plain_ours and scheme != "plain"
                        and metric != "ssim" else "–")
            fmt = ".4f" if metric == "ssim" else ".2f"
            lines.append(f"| {paper} | {entry['setting'].label} | {metric} | {value * scale:{fmt}} | {mine:{fmt}} | "
                         f"{paper_drop if metric != 'ssim' else '–'} | {our_drop} |")
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
