"""Privacy evaluation: run attacks against a key and score what they recover.

The target is the hospital's test split (near-duplicate groups kept whole, as in the utility
evaluation). The hospital obfuscates those images; the attacker intercepts them, and beforehand
fits its attack with black-box access to the key and its own images: ``public`` medical images of
other kinds (:mod:`medveil.data.public`), or ``prior`` knowledge, the target dataset's training
and validation splits, which share no near-duplicate group with the test images.

Rows go to ``results.csv`` (merged: a re-run replaces its own rows), with one example figure per
run and ``report.md`` rebuilt from all rows.
"""

from __future__ import annotations

import csv
import platform
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

import medveil
from medveil import metrics
from medveil._files import slug
from medveil.attacks import ATTACKER_DATA, Attack, AttackerView, BlackBox
from medveil.data import ImageDataset, group_split
from medveil.data.public import public_medical_images
from medveil.errors import InputError
from medveil.evaluation.figures import image_grid
from medveil.evaluation.papers import NB_RECONSTRUCTION
from medveil.evaluation.report import markdown_table, number, write_csv
from medveil.keys import Key
from medveil.schemes import Setting, from_key, scheme_class
from medveil.training.loop import seed_everything

ATTACK_COLUMNS = ["dataset", "scheme", "params", "attack", "capability", "attacker_data", "queries", "ssim", "psnr",
                  "ms_ssim", "linkage_top1", "linkage_top5", "linkage_chance"]

def linkage_sets(target_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the indices of the gallery and of the probes, with the groups as identities.

    The gallery is the first image of each test group (the attacker holds its plain image); the probes every other
    image of a group with two or more.
    """
    _, first = np.unique(target_groups, return_index=True)
    probes = np.setdiff1d(np.arange(len(target_groups)), first)
    return np.sort(first), probes


def target_and_attacker_images(dataset: ImageDataset, attacker_data: str, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return the hospital's test images and the attacker's own images, ``(n, H, W[, 3])`` uint8 each."""
    split = group_split(dataset.labels, dataset.groups, seed=split_seed)
    target = dataset.images[split == "test"]
    if attacker_data == "prior":
        return target, dataset.images[split != "test"]
    if attacker_data == "public":
        return target, public_medical_images(dataset.size, rgb=dataset.channels == 3)
    if attacker_data == "none":
        return target, target[:0]
    raise InputError(f"attacker data must be one of {', '.join(ATTACKER_DATA)}, got {attacker_data!r}")


KNOWN_PAIRS = 10  # leaked pairs a known-pairs attacker holds unless told otherwise


def run_attack(attack: Attack, capability: str, key: Key, dataset: ImageDataset, attacker_data: str,
               pairs: int = KNOWN_PAIRS) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Fit ``attack`` on what ``capability`` grants against ``key``, and reconstruct the test images.

    ciphertext-only: the service's whole obfuscated set (every image of ``dataset``, train and test,
    under ``key``) and its labels; known-pairs: ``pairs`` of the hospital's training images with their
    obfuscated versions; oracle: a black box holding ``key``. Returns the result row and the
    ``(target, obfuscated, reconstructed)`` image stacks.
    """
    target, own = target_and_attacker_images(dataset, attacker_data)
    leaked = target_and_attacker_images(dataset, "prior")[1][:pairs] if capability == "known-pairs" else None
    split = group_split(dataset.labels, dataset.groups)
    return attack_images(attack, capability, key, target, own, dataset.name, attacker_data,
                         service_set=(dataset.images, dataset.labels), leaked=leaked, target_groups=dataset.groups[split == "test"],
                         own_labels=dataset.labels[split != "test"] if attacker_data == "prior" else None)


def attack_images(attack: Attack, capability: str, key: Key, target: np.ndarray, own: np.ndarray, dataset_name: str,
                  attacker_data: str, service_set: tuple[np.ndarray, np.ndarray] | None = None,
                  leaked: np.ndarray | None = None, target_groups: np.ndarray | None = None,
                  volumes: bool = False, own_labels: np.ndarray | None = None) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`run_attack` on given arrays.

    The hospital's ``target`` images, the attacker's ``own``; for ciphertext-only attacks the plain ``(images,
    labels)`` the service holds obfuscated (``target`` alone when not given); for known-pairs the ``leaked`` plain
    images, whose obfuscated versions go with them. ``queries`` in the row counts black-box images (oracle) or pairs
    (known-pairs).

    With ``target_groups`` (a patient proxy per target image), the row also scores linkage: each
    probe's reconstruction matched against the plain gallery (:func:`linkage_sets`,
    :func:`medveil.metrics.linkage_topk`); empty where no group has two images. With ``volumes``,
    ``target`` and ``own`` are ``(n, D, H, W)`` volumes and scored in 3-D. An attack with a
    ``linkage_features(images, plain)`` method (features that the obfuscation leaves unchanged, or
    changes in a way the attacker can simulate on its plain images) is also scored by matching those
    of the obfuscated probe with the gallery's; the row keeps the better linkage. ``own_labels`` are
    the labels of ``own`` where the attacker's data are labelled (a guess per label uses them).
    """
    scheme = from_key(key)
    obfuscated = scheme(target)  # what the hospital sends; intercepted, not queried
    view = AttackerView(key.scheme, dict(key.params), own, own_labels=own_labels)
    queries = 0
    # An attack that trains draws its network's first weights from the global generators, which torch
    # seeds at random in every process: seeded here, a cell gives the same row in any process.
    seed_everything(0)
    if capability == "ciphertext-only":
        images, labels = service_set if service_set is not None else (target, None)
        view.obfuscated_set, view.labels = (lambda: scheme(images)), labels  # obfuscated if an attack asks
        attack.fit(view)
    elif capability == "known-pairs":
        if leaked is None or not len(leaked):
            raise InputError("a known-pairs attack needs leaked plain images")
        view.pairs = (leaked, scheme(leaked))
        attack.fit(view)
        queries = len(leaked)
    elif capability == "oracle":
        with BlackBox(key) as black_box:
            view.oracle = black_box
            attack.fit(view)
            queries = black_box.queries
    else:
        raise InputError(f"unknown threat model {capability!r}")
    reconstructed = attack.reconstruct(obfuscated)
    row = {"dataset": dataset_name, "scheme": key.scheme, "params": scheme_class(key.scheme).params_label(key.params),
           "attack": attack.name, "capability": capability, "attacker_data": attacker_data, "queries": queries,
           **metrics.mean_pair_scores(target, reconstructed, volumes=volumes),
           "linkage_top1": "", "linkage_top5": "", "linkage_chance": ""}
    if target_groups is not None:
        gallery, probes = linkage_sets(target_groups)
        if len(probes):
            scores = metrics.linkage_topk(reconstructed[probes], target[gallery], target_groups[probes],
                                          target_groups[gallery])
            features = getattr(attack, "linkage_features", None)
            if features is not None:
                direct = metrics.linkage_topk(features(obfuscated[probes], plain=False),
                                              features(target[gallery], plain=True),
                                              target_groups[probes], target_groups[gallery])
                scores = max(scores, direct, key=lambda s: s["linkage_top1"])
            row.update({k: scores[k] for k in ("linkage_top1", "linkage_top5", "linkage_chance")})
    return row, target, obfuscated, reconstructed


def attack_figure(row: dict, target: np.ndarray, obfuscated: np.ndarray, reconstructed: np.ndarray, path: Path,
                  examples: int = 4) -> Path:
    """Original | obfuscated | reconstructed for a few evenly spaced test images."""
    picks = np.linspace(0, len(target) - 1, examples).astype(int)
    channel_axis = -1 if target.ndim == 4 else None
    return image_grid([[target[i], obfuscated[i], reconstructed[i]] for i in picks],
                      ["original", f"obfuscated ({row['params']})", "reconstructed"],
                      [f"SSIM {metrics.ssim(target[i], reconstructed[i], 255, channel_axis):.3f}" for i in picks],
                      path, title=f"{row['attack']}, attacker data: {row['attacker_data']}")


def evaluate_attack(attack: Attack, capability: str, key: Key, dataset: ImageDataset, attacker_data: str,
                    out_dir: Path, pairs: int = KNOWN_PAIRS) -> dict:
    """:func:`run_attack`, then its row merged into ``out_dir``'s ``results.csv``, a figure and the report."""
    row, target, obfuscated, reconstructed = run_attack(attack, capability, key, dataset, attacker_data, pairs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    attack_figure(row, target, obfuscated, reconstructed, out_dir / f"{_figure_name(row)}.png")
    merge_rows(out_dir / "results.csv", [row])
    write_report(out_dir)
    return row


def _figure_name(row: dict) -> str:
    return slug(row["scheme"], row["params"], row["attack"], row["attacker_data"])


def _row_id(row: dict) -> tuple:
    return tuple(str(row[c]) for c in ("dataset", "scheme", "params", "attack", "attacker_data"))


def merge_rows(path: Path, rows: Sequence[dict]) -> None:
    """Add ``rows`` to the CSV at ``path``, replacing earlier rows of the same run."""
    blank = dict.fromkeys(ATTACK_COLUMNS, "")  # files written before a column existed
    existing = [{**blank, **r} for r in csv.DictReader(open(path))] if path.exists() else []
    new_ids = {_row_id(r) for r in rows}
    write_csv(path, [r for r in existing if _row_id(r) not in new_ids] + list(rows), ATTACK_COLUMNS)


def write_report(out_dir: Path) -> Path:
    """``report.md`` from every row of ``results.csv`` in ``out_dir``."""
    rows = list(csv.DictReader(open(out_dir / "results.csv")))
    rows.sort(key=lambda r: (r["dataset"], r["scheme"], -dict(Setting.from_row(r).params).get("levels", 0),
                             r["attack"], r["attacker_data"]))
    lines = [
        "# What an attacker recovers",
        "",
        f"medveil {medveil.__version__}, torch {torch.__version__}, {platform.machine()}. Target: the hospital's test "
        "split (near-duplicate groups kept whole). Scores compare the attacker's reconstructions with the original "
        "test images (8-bit, data range 255); higher means more recovered. `queries`: images fed to the black box.",
        "",
    ]
    lines += markdown_table([["dataset", "scheme", "params", "attack", "threat model", "attacker data", "queries", "SSIM",
                              "PSNR dB", "MS-SSIM", "linkage top-1 (chance)"]] + [
        [r["dataset"], r["scheme"], r["params"], r["attack"], r.get("capability") or "?", r["attacker_data"],
         r["queries"], number(r["ssim"]), number(r["psnr"], 2), number(r["ms_ssim"]), linkage_text(r)] for r in rows])
    paper = [r for r in rows if r["attack"] == "learned-reconstruction" and r["params"] in NB_RECONSTRUCTION]
    if paper:
        lines += ["", "## Beside paper NB, Table II (learned U-Net reconstruction)", ""]
        lines += markdown_table([["params", "attacker data", "paper SSIM", "our SSIM", "paper PSNR", "our PSNR"]] + [
            [r["params"], r["attacker_data"], number(NB_RECONSTRUCTION[r["params"]]["ssim"]), number(r["ssim"]),
             number(NB_RECONSTRUCTION[r["params"]]["psnr"], 2), number(r["psnr"], 2)] for r in paper])
    lines += ["", "## Examples", ""] + [f"![{_figure_name(r)}]({_figure_name(r)}.png)" for r in rows] + [""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def linkage_text(row: dict | None) -> str:
    """``"top-1 (chance)"`` of an attack row, "–" where it has no linkage score."""
    if not row or row.get("linkage_top1") in (None, ""):
        return "–"
    return f"{number(row['linkage_top1'])} ({number(row['linkage_chance'])})"
