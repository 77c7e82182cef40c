"""Privacy-Net evaluation's outputs: results.csv's columns, the figures and report.md (paper PN, Tables 2-5).

What :func:`medveil.privacynet.evaluate.evaluate_privacynet` measured, written for people: the
tables beside paper PN's figures, the examples and the pair-score distributions.
"""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

import medveil
from medveil._files import slug
from medveil.data.segmentation import SegmentationData, subject_pairs
from medveil.evaluation.figures import image_grid, plot_pair_distributions
from medveil.evaluation.papers import PN_DICE, PN_REIDENTIFICATION, PN_ROBUSTNESS, PN_TRANSFER
from medveil.evaluation.report import markdown_table, mean_std, number, pm
from medveil.privacynet.train import PrivacyNetConfig

REID_COLUMNS = ["reid_msssim_acc", "reid_dadv_acc", "reid_dnew_acc", "reid_map"]

EXAMPLES = 3
LABELS_ROW = "tissue labels"  # the report's reference row; not in results.csv


def label_of(lam: float | None) -> str:
    """How the report and results.csv name a setting: ``plain`` or the λ."""
    return "plain" if lam is None else f"{lam:g}"


def columns(data: SegmentationData) -> list[str]:
    """results.csv's columns: Dice overall and per tissue class (background left out), then re-identification."""
    return ["lambda", "seed", "dice_overall", *[f"dice_{c}" for c in data.class_names[1:]], *REID_COLUMNS]


def view(image: np.ndarray) -> np.ndarray:
    """Return what a figure shows of an image: itself, or a volume's middle axial slice, anterior up."""
    return image if image.ndim == 2 else np.rot90(image[:, :, image.shape[2] // 2])


def attack_figure_name(row: dict) -> str:
    """Return the file name of an attack's figure, from its row."""
    return slug("attack", row["params"], row["attacker_data"]) + ".png"


def write_figures(runs: dict, test: SegmentationData, pairs: np.ndarray, lambdas: list[str], folder: Path) -> None:
    """Write the example images (plain, encoded, segmented) and the pair-score histograms, into ``folder``."""
    shown = [lam for lam in lambdas if (lam, 0) in runs]
    rows = []
    for k in range(min(EXAMPLES, len(test))):
        row = [view(test.images[k]), view(test.masks[k])]
        for lam in shown:
            row += [np.array(runs[lam, 0]["examples"]["encoded"][k]), np.array(runs[lam, 0]["examples"]["predicted"][k])]
        rows.append(row)
    titles = ["original", "tissue labels"] + [t for lam in shown for t in (f"encoded λ={lam}", f"segmented λ={lam}")]
    where = "" if test.dims == 2 else ", middle axial slice of each volume"
    image_grid(rows, titles, [f"subject {test.subjects[k]}" for k in range(len(rows))], folder / "examples.png",
               title=f"Privacy-Net on {test.name} (test subjects, seed 0{where})")
    distributions = [(f"λ={lam}" if lam != "plain" else "plain images", np.array(runs[lam, 0]["pair_msssim"]))
                     for lam in ["plain", *shown] if (lam, 0) in runs]
    plot_pair_distributions(distributions, pairs[:, 2], folder / "msssim.png")


def _over_seeds(rows: list[dict], label: str, column: str) -> tuple[float, float]:
    return mean_std(r.get(column, math.nan) for r in rows if r["lambda"] == label)


def volume_sections(runs: dict, labels: list[str], degradations: Sequence[str]) -> list[str]:
    """Return the report's robustness and transfer tables (mean Dice over seeds), beside paper PN's Tables 5 and 4."""
    def dice(label: str, *path: str) -> dict[str, float] | None:
        found = [run for (lab, _), run in runs.items() if lab == label]
        for step in path:
            found = [run[step] for run in found if step in run]
        return {name: float(np.mean([d[name] for d in found])) for name in found[0]} if found else None

    def has(label: str, part: str) -> bool:
        return any(part in run for (lab, _), run in runs.items() if lab == label)

    robustness = [(label, name, dice(label, *path), number(PN_ROBUSTNESS[name]) if label == "1" and name in PN_ROBUSTNESS
                   else "")
                  for label in labels if has(label, "robustness")
                  for name, path in [("clean", ("dice",)), *[(name, ("robustness", name)) for name in degradations]]]
    transfer = [(label, kind, dice(label, "transfer", kind),
                 " / ".join(map(str, PN_TRANSFER[kind][label])) if label in PN_TRANSFER[kind] else "")
                for label in labels if has(label, "transfer") for kind in ("fixed", "retrained")]
    robustness_intro = [
        "## Robustness (paper PN, Table 5): Dice on degraded test volumes", "",
        "E and S as trained on clean volumes; the test volumes get Rician noise at 15 or 10 dB SNR (σ = mean head "
        "intensity / 10^(SNR/20)) or half their resolution (2×2×2 blocks averaged). Paper PN reports λ = 1 only; its "
        "overall Dice is in the last column.", ""]
    transfer_intro = [
        "## Transfer to another site (paper PN, Table 4): three classes", "",
        "E fixed. `fixed`: S as trained, its outputs merged into three classes (nuclei into GM, both CSFs into CSF); "
        "`retrained`: S retrained on the new site's encoded training volumes. Paper PN: MRBrainS, GM / WM / CSF / "
        "overall.", ""]
    return (_dice_table(robustness_intro, "test volumes", "paper PN (λ = 1)", robustness)
            + _dice_table(transfer_intro, "S", "paper PN GM / WM / CSF / overall", transfer))


def _dice_table(intro: list[str], variant: str, paper: str, rows: list[tuple[str, str, dict | None, str]]) -> list[str]:
    """``intro`` and a table of ``(λ, variant, Dice scores, paper's figure)`` rows; nothing without rows."""
    scored = [(label, name, scores, quoted) for label, name, scores, quoted in rows if scores is not None]
    if not scored:
        return []
    classes = [c for c in scored[0][2] if c != "overall"]
    table = [["λ", variant, "Dice overall", *classes, paper]] + [
        [label, name, number(scores["overall"]), *[number(scores[c]) for c in classes], quoted]
        for label, name, scores, quoted in scored]
    return intro + markdown_table(table) + [""]


def write_report(out_dir: Path, rows: list[dict], attack_rows: list[dict], lambdas: list[str], data: SegmentationData,
            train: SegmentationData, test: SegmentationData, config: PrivacyNetConfig, seconds: float,
            command: str | None, volume_sections: list[str]) -> Path:
    """``out_dir/report.md``: the setup, Dice and re-identification per λ beside paper PN's, the attacks."""
    labels = ["plain", *lambdas]
    seeds = len({r["seed"] for r in rows})
    names = columns(data)
    dice_names = list(data.class_names[1:])
    simulation = ("`medveil.data.segmentation` (MNI152 template, per-subject anatomy, per-scan noise, bias and jitter)"
                  if data.dims == 2 else
                  "`medveil.data.volumes` (MNI152 template in 3-D; identity sources in the data name; per-scan noise, "
                  "bias and jitter)")
    training = "whole images" if data.dims == 2 else f"{config.patch}³ patches, whole volumes by sliding windows"
    lines = [
        "# Privacy-Net: segmentation utility against re-identification", "",
        f"medveil {medveil.__version__}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.machine()}, {torch.get_num_threads()} threads; {seconds / 60:.1f} min for what this run computed.",
        "", f"Command: `{command}`" if command else "", "",
        f"Data: {data.name}, {len(np.unique(data.subjects))} subjects × {len(data) // len(np.unique(data.subjects))} scans "
        f"at {'×'.join(map(str, data.shape))}; {len(np.unique(train.subjects))} subjects train, "
        f"{len(np.unique(test.subjects))} test ({len(test)} {'images' if data.dims == 2 else 'volumes'}, "
        f"{len(subject_pairs(test.subjects))} balanced test pairs). Simulation: {simulation}.",
        f"Training ({training}; U-Nets width {config.width}, depth {config.depth}): pre-training "
        f"{config.pretrain_epochs} epochs (lr {config.pretrain_lr:g}), adversarial {config.epochs} epochs (Adam lr "
        f"{config.lr:g}, {config.batch_pairs} pairs per step); {seeds} seed(s), mean ± std over seeds.", "",
        "## Segmentation (Dice on test subjects) and re-identification (test pairs, 0.5 = chance)", "",
    ]
    lines += markdown_table(
        [["λ", "Dice overall", *dice_names, "MS-SSIM threshold acc", "D_adv acc", "D_new acc", "mAP (D_new)"]]
        + [[label] + [pm(_over_seeds(rows, label, c), 1, 3) for c in names[2:]] for label in [*labels, LABELS_ROW]])
    lines += ["", f"`{LABELS_ROW}`: the same re-identification attacks on the true label maps instead of images. "
              "Whatever S reads off an encoded image a new discriminator can read too, so an encoder that keeps "
              "the segmentation is not expected to push D_new far below this row."]
    lines += ["", "## Beside paper PN (PPMI, 3-D; Tables 2 and 3)", ""]

    def means(label: str, columns: Sequence[str]) -> str:
        return " / ".join(number(_over_seeds(rows, label, c)[0]) for c in columns)

    lines += markdown_table(
        [["λ", "paper Dice overall / GM / WM / CSF int. / ext.", f"ours Dice overall / {' / '.join(dice_names)}",
          "paper re-id (MS-SSIM / D_adv / D_new / mAP)", "ours"]]
        + [[label, " / ".join(map(str, PN_DICE[label])), means(label, names[2:-len(REID_COLUMNS)]),
            PN_REIDENTIFICATION[label], means(label, REID_COLUMNS)] for label in labels if label in PN_DICE])
    lines += ["", "Paper PN's encoded rows of Table 2 print three numbers for four columns in our copy; they are "
              "quoted as printed. Its non-encoded MS-SSIM and D_new accuracies are 0.970 and 0.953.", ""]
    lines += volume_sections
    if attack_rows:
        lines += ["## Learned reconstruction against the encoder as a black box (seed 0)", ""]
        lines += markdown_table([["λ", "attacker data", "queries", "SSIM", "PSNR dB", "MS-SSIM"]] + [
            [r["params"], r["attacker_data"], r["queries"], number(r["ssim"]), number(r["psnr"], 2), number(r["ms_ssim"])]
            for r in attack_rows])
        lines += [""] + [f"![{r['params']} {r['attacker_data']}](figures/{attack_figure_name(r)})"
                         for r in attack_rows] + [""]
    lines += ["## Figures", "", "![examples](figures/examples.png)", "",
              "MS-SSIM between the two images of each test pair, same subject vs different subjects:", "",
              "![msssim](figures/msssim.png)", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
