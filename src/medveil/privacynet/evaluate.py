"""Privacy-Net evaluation (paper PN, Tables 2-3): segmentation utility against re-identification.

Images (2-D) or volumes (3-D, paper PN's setting: networks trained on patches, applied by sliding
windows; see :mod:`medveil.privacynet.train`); every score below is computed on whole images or volumes.

Subjects are split 70/30 (no subject on both sides). Per seed, the networks are pre-trained once
on the plain training images (:func:`~medveil.privacynet.pretrain`); that gives the
``plain`` row: S trained on, and D trained without any encoder (so it is the non-encoded D_new).
S gets as many further epochs at the adversarial learning rate as the encoded runs' S does, so
the plain Dice is not lower merely for shorter training. Each λ then trains the three networks adversarially from those weights and
is scored on the test subjects through its key (the encoder as the hospital runs it, 8-bit out):

* Dice per tissue class and overall (size-weighted) of S on the encoded test images;
* re-identification of test pairs (balanced same/different subject): the best threshold on
  MS-SSIM, D_adv (the discriminator trained with the encoder), D_new (a new discriminator trained
  from scratch on the fixed encoded training images) and the retrieval mAP of D_new's embedding;
* for the first seed, the learned U-Net reconstruction attack against the encoder as a black box,
  with the plain training images as the attacker's prior data, and with public images (for volumes,
  the transfer experiment's other site: no public head volumes ship offline).

On volumes two more of paper PN's experiments run for every setting (plain and each λ):

* robustness (its Table 5): Dice of the same E and S on the test volumes degraded by Rician noise
  at 15 and 10 dB SNR and by halving the resolution (:mod:`medveil.data.volumes`);
* transfer (its Table 4), given a ``transfer`` set from another site with three classes: Dice of
  the fixed E and S with S's outputs merged into three classes (nuclei into GM, both CSFs into
  CSF), then of S retrained on the new site's encoded training volumes (E stays fixed).

A reference row, ``tissue labels``, re-identifies pairs from the true label maps alone (MS-SSIM
and a new D, trained the same way). Whatever S can read off an encoded image, a D_new can read
too, so an encoder that keeps the segmentation is not expected to hide identity the labels carry.

Each (λ, seed) and each λ's attacks are cached as ``runs/*.json`` in the output folder (a re-run
computes only what is missing; the attacks load the encoders from their key files);
``results.csv``, ``attacks.csv``, the figures and ``report.md`` are rebuilt from them.
Keys (the encoders' weights) go to ``keys_dir``, never into the report folder.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from medveil import metrics
from medveil._files import write_json
from medveil.attacks import LearnedReconstruction, attacker_training
from medveil.attacks.reidentify import discriminator_accuracy, msssim_reidentification, retrieval_map, train_discriminator
from medveil.data.pipeline import SegmentationTensors
from medveil.data.public import public_medical_images
from medveil.data.segmentation import SegmentationData, subject_pairs
from medveil.data.volumes import lower_resolution, merge_classes, rician_noise
from medveil.errors import InputError
from medveil.evaluation.privacy import ATTACK_COLUMNS, attack_figure, attack_images
from medveil.keys import Key
from medveil.nn.patches import RandomPatches
from medveil.privacynet.report import (EXAMPLES, LABELS_ROW, REID_COLUMNS, attack_figure_name, columns, label_of, view,
                                       volume_sections, write_figures, write_report)
from medveil.privacynet.train import (PrivacyNetConfig, check_trainable, pretrain, segment, segmentation_loss,
                                train_privacynet, training_patch)
from medveil.evaluation.report import write_csv
from medveil.schemes import from_key
from medveil.schemes.adversarial import WEIGHTS_SUFFIX, create_adversarial_key
from medveil.training.loop import TrainConfig, fit


def _scores(segmenter, images: np.ndarray, data: SegmentationData, pairs: np.ndarray, patch: int | None) -> dict:
    dice = metrics.dice_scores(segment(segmenter, images, patch), data.masks, data.class_names)
    msssim_acc, msssim = msssim_reidentification(images, pairs, volumes=data.dims == 3)
    return {"dice": dice, "reid_msssim_acc": msssim_acc, "pair_msssim": msssim.tolist()}


DEGRADATIONS = {"noise 15 dB": lambda v, rng: rician_noise(v, 15, rng), "noise 10 dB": lambda v, rng: rician_noise(v, 10, rng),
                "half resolution": lambda v, rng: lower_resolution(v, 2)}


def _robustness(encode: Callable, segmenter, test: SegmentationData, patch: int, seed: int) -> dict:
    """Dice of ``segmenter`` on ``encode``d test volumes after each of :data:`DEGRADATIONS`."""
    rng = np.random.default_rng(seed)  # simulated degradation, not key material
    return {name: metrics.dice_scores(segment(segmenter, encode(degrade(test.images, rng)), patch), test.masks,
                                      test.class_names) for name, degrade in DEGRADATIONS.items()}


def _transfer(encode: Callable, segmenter, source_names: tuple[str, ...], transfer: SegmentationData,
              config: PrivacyNetConfig) -> dict:
    """Dice on another site's volumes: S fixed (outputs merged into the site's classes), then S retrained there."""
    patch = config.patch
    site_train, site_test = transfer.split_by_subject((0.7, 0.3), seed=0)
    encoded_train, encoded_test = encode(site_train.images), encode(site_test.images)
    merged = merge_classes(segment(segmenter, encoded_test, patch), source_names, transfer.class_names)
    fixed = metrics.dice_scores(merged, site_test.masks, transfer.class_names)
    retrained = copy.deepcopy(segmenter)
    old = retrained.out
    retrained.out = type(old)(old.in_channels, len(transfer.class_names), 1)
    into = merge_classes(np.arange(len(source_names)), source_names, transfer.class_names)  # old class -> new class
    rows = [int(np.flatnonzero(into == c)[0]) for c in range(len(transfer.class_names))]
    with torch.no_grad():  # each new class starts from the first old class merged into it
        retrained.out.weight.copy_(old.weight[rows])
        retrained.out.bias.copy_(old.bias[rows])
    fit(retrained, RandomPatches(SegmentationTensors(encoded_train, site_train.masks), patch, 3, seed=config.seed), None,
        segmentation_loss(3), TrainConfig(epochs=config.pretrain_epochs, batch_size=4, lr=config.pretrain_lr,
                                          seed=config.seed, progress=config.progress))
    return {"fixed": fixed,
            "retrained": metrics.dice_scores(segment(retrained, encoded_test, patch), site_test.masks, transfer.class_names)}


def _volume_experiments(encode: Callable, segmenter, train: SegmentationData, test: SegmentationData,
                        transfer: SegmentationData | None, config: PrivacyNetConfig) -> dict:
    """Robustness and transfer (volumes only; nothing for images)."""
    if train.dims != 3:
        return {}
    out = {"robustness": _robustness(encode, segmenter, test, config.patch, config.seed)}
    if transfer is not None:
        out["transfer"] = _transfer(encode, segmenter, train.class_names, transfer, config)
    return out


def _run_plain(net, train: SegmentationData, test: SegmentationData, pairs: np.ndarray, config: PrivacyNetConfig,
               transfer: SegmentationData | None) -> dict:
    """Return the non-encoded baseline: S trained on plain images as long as the encoded runs train theirs."""
    segmenter = copy.deepcopy(net.segmenter)  # pre-trained; now the adversarial phase's schedule, without E and D
    patch = training_patch(train, config)
    tensors = SegmentationTensors(train.images, train.masks)
    fit(segmenter, tensors if patch is None else RandomPatches(tensors, patch, 3, seed=config.seed), None,
        segmentation_loss(train.dims),
        TrainConfig(epochs=config.epochs, batch_size=2 * config.batch_pairs, lr=config.lr, seed=config.seed,
                    progress=config.progress))
    out = _scores(segmenter, test.images, test, pairs, patch)
    out |= {"reid_dadv_acc": math.nan, "reid_dnew_acc": discriminator_accuracy(net.discriminator, test.images, pairs),
            "reid_map": retrieval_map(net.discriminator, test.images, test.subjects),
            **_volume_experiments(lambda v: v, segmenter, train, test, transfer, config)}
    return out


def _run_labels(train: SegmentationData, test: SegmentationData, pairs: np.ndarray, config: PrivacyNetConfig) -> dict:
    """Re-identification from the true tissue label maps (shown as 8-bit images): the identity S's output carries."""
    scale = 255 // (len(train.class_names) - 1)
    train_labels, test_labels = train.masks * np.uint8(scale), test.masks * np.uint8(scale)
    msssim_acc, _ = msssim_reidentification(test_labels, pairs)
    return {"reid_msssim_acc": msssim_acc, "reid_dadv_acc": math.nan,
            **_new_discriminator_scores(train_labels, train, test_labels, test, pairs, config)}


def _new_discriminator_scores(train_images: np.ndarray, train: SegmentationData, test_images: np.ndarray,
                              test: SegmentationData, pairs: np.ndarray, config: PrivacyNetConfig) -> dict:
    """D_new: a discriminator trained from scratch on fixed training images, scored on the test pairs."""
    # On whole images or volumes: the attacker holds them whole.
    new = train_discriminator(train_images, train.subjects, TrainConfig(
        epochs=config.pretrain_epochs, batch_size=32 if train.dims == 2 else 8, lr=config.pretrain_lr, seed=config.seed,
        progress=config.progress))
    return {"reid_dnew_acc": discriminator_accuracy(new, test_images, pairs),
            "reid_map": retrieval_map(new, test_images, test.subjects)}


def _run_setting(base, lam: float | None, train: SegmentationData, test: SegmentationData, pairs: np.ndarray,
                 config: PrivacyNetConfig, keys_dir: Path, transfer: SegmentationData | None) -> dict:
    """Return the plain baseline (``lam`` None) or one λ, from the pre-trained ``base``, with its run time in seconds."""
    started = time.perf_counter()
    result = (_run_plain(base, train, test, pairs, config, transfer) if lam is None else
              _run_lambda(base, lam, train, test, pairs, config, keys_dir, transfer))
    return result | {"seconds": time.perf_counter() - started}


def _run_lambda(base, lam: float, train: SegmentationData, test: SegmentationData, pairs: np.ndarray,
                config: PrivacyNetConfig, keys_dir: Path, transfer: SegmentationData | None) -> dict:
    config = replace(config, lam=lam)
    net, history = train_privacynet(base, train, config)
    key_path = _key_path(keys_dir, train, lam, config.seed)
    for stale in (key_path, key_path.with_name(key_path.name + WEIGHTS_SUFFIX)):
        stale.unlink(missing_ok=True)  # an interrupted run's key for a result that was never recorded
    patch = training_patch(train, config)
    key = create_adversarial_key(net.encoder, key_path, train.shape[0] if patch is None else patch, lam)
    encoder = from_key(key)
    encoded_train, encoded_test = encoder(train.images), encoder(test.images)
    out = _scores(net.segmenter, encoded_test, test, pairs, patch)
    out |= {"reid_dadv_acc": discriminator_accuracy(net.discriminator, encoded_test, pairs),
            **_new_discriminator_scores(encoded_train, train, encoded_test, test, pairs, config), "history": history,
            "key_fingerprint": key.fingerprint,
            "examples": {"encoded": [view(v).tolist() for v in encoded_test[:EXAMPLES]],
                         "predicted": [view(v).tolist() for v in segment(net.segmenter, encoded_test[:EXAMPLES], patch)]},
            **_volume_experiments(encoder, net.segmenter, train, test, transfer, config)}
    return out


def _key_path(keys_dir: Path, data: SegmentationData, lam: float, seed: int) -> Path:
    return keys_dir / f"{data.name}-lambda{lam:g}-seed{seed}.key"


def _attacks(key: Key, train: SegmentationData, test: SegmentationData, epochs: int, figures_dir: Path,
             config: PrivacyNetConfig, transfer: SegmentationData | None) -> list[dict]:
    """Return the learned reconstruction with prior data (the plain training images) and with public ones.

    Public images are other medical images for 2-D; for volumes (no public head volumes ship
    offline) the other site's volumes of the transfer experiment, when given. Both attackers get
    about the same number of optimisation steps: ``epochs`` passes over the larger set, and
    proportionally more passes over the smaller one. On volumes the attacker's U-Net is 3-D and
    trains on patches, as the encoder did.
    """
    patch = training_patch(train, config)
    sources = [("prior", train.images)]
    if patch is None:
        sources.append(("public", public_medical_images(test.shape[0])))
    elif transfer is not None:
        sources.append(("public", transfer.images))
    largest = max(len(own) for _, own in sources)
    rows = []
    for attacker_data, own in sources:
        passes = epochs * max(1, round(largest / len(own)))
        training = attacker_training(passes, progress=config.progress)
        if patch is not None:
            training = replace(training, batch_size=8)
        attack = LearnedReconstruction(training, width=16 if patch is None else config.width, patch=patch)
        row, target, obfuscated, reconstructed = attack_images(attack, "oracle", key, test.images, own, test.name,
                                                               attacker_data, volumes=patch is not None)
        views = [np.stack([view(v) for v in a[:3]]) for a in (target, obfuscated, reconstructed)]
        attack_figure(row, views[0], views[1], views[2], figures_dir / attack_figure_name(row), examples=3)
        rows.append(row)
    return rows


def evaluate_privacynet(data: SegmentationData, lambdas: Sequence[float], seeds: int, out_dir: Path, keys_dir: Path,
                        config: PrivacyNetConfig, attack_epochs: int = 12, command: str | None = None,
                        transfer: SegmentationData | None = None) -> list[dict]:
    """Run (or load from cache) the plain baseline and every λ for every seed; write the report. Returns the rows.

    ``transfer``: volumes from another site, labelled with classes that ``data``'s merge into
    (:func:`medveil.data.volumes.merge_classes`), for the transfer experiment.
    """
    check_trainable(data, config)  # bad input fails here, not after an hour of training
    if min(data.shape) < metrics.MS_SSIM_MIN_SIDE:
        raise InputError(f"{data.name}: re-identification by MS-SSIM needs images of at least "
                         f"{metrics.MS_SSIM_MIN_SIDE} pixels a side, got {'x'.join(map(str, data.shape))}")
    train, test = data.split_by_subject((0.7, 0.3), seed=0)
    pairs = subject_pairs(test.subjects, seed=0)
    if not pairs[:, 2].any() or pairs[:, 2].all():
        raise InputError(f"{data.name}: the test subjects give no same-subject or no different-subject pairs; "
                         "re-identification needs several subjects with at least 2 images each")
    out_dir, keys_dir = Path(out_dir), Path(keys_dir)
    for folder in (out_dir / "runs", out_dir / "figures", keys_dir):
        folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs: dict[tuple[str, int], dict] = {}
    for seed in range(seeds):
        seeded = replace(config, seed=seed)
        paths = {lam: out_dir / "runs" / f"lambda-{label_of(lam)}-seed{seed}.json" for lam in [None, *lambdas]}
        base = None if all(path.exists() for path in paths.values()) else pretrain(train, seeded)
        for lam, path in paths.items():
            runs[label_of(lam), seed] = _cached(path, lambda: _run_setting(base, lam, train, test, pairs, seeded, keys_dir, transfer))
    label_rows = [{"lambda": LABELS_ROW, "seed": seed,
                   **_cached(out_dir / "runs" / f"labels-seed{seed}.json",
                             lambda: _run_labels(train, test, pairs, replace(config, seed=seed)))}
                  for seed in range(seeds)]
    attack_rows: list[dict] = []
    for lam in lambdas:  # against the first seed's encoders, loaded from their key files
        attack_rows += _cached(out_dir / "runs" / f"attacks-lambda-{lam:g}.json",
                               lambda: _attacks(Key.load(_key_path(keys_dir, train, lam, 0)), train, test, attack_epochs,
                                                out_dir / "figures", config, transfer))
    rows = [_row(label, seed, run, data) for (label, seed), run in runs.items()]
    write_csv(out_dir / "results.csv", rows, columns(data))
    write_csv(out_dir / "attacks.csv", attack_rows, ATTACK_COLUMNS)
    write_figures(runs, test, pairs, [label_of(lam) for lam in lambdas], out_dir / "figures")
    write_report(out_dir, rows + label_rows, attack_rows, [label_of(lam) for lam in lambdas], data, train, test, config,
                 time.perf_counter() - started, command,
                 volume_sections(runs, ["plain", *map(label_of, lambdas)], list(DEGRADATIONS)))
    return rows


def _cached(path: Path, compute: Callable[[], Any]) -> Any:
    """Return the JSON value at ``path``, made by ``compute()`` and written first if missing: a resumed run redoes only that.

    A fresh result is read back from its file too, so a resumed run reports exactly what a whole one does.
    """
    if not path.exists():
        write_json(path, compute())
    return json.loads(path.read_text())


def _row(label: str, seed: int, run: dict, data: SegmentationData) -> dict:
    dice = run["dice"]
    return {"lambda": label, "seed": seed, "dice_overall": dice["overall"],
            **{f"dice_{c}": dice.get(c, math.nan) for c in data.class_names[1:]}, **{k: run[k] for k in REID_COLUMNS}}


