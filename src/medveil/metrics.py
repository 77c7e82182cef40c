"""Metrics.

Similarity between an original and an obfuscated or reconstructed image, classification, segmentation (Dice) and
re-identification (best-threshold accuracy, retrieval mAP).

SSIM and PSNR come from scikit-image. The data range they need is chosen by
:func:`pair_data_range`: 255 for 8-bit images (the convention of the papers we compare with), and
for wider data the joint range the two images actually span, since a nominal 65535 for 12-bit
CT in 16-bit containers shrinks every difference and makes any two scans look alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, roc_curve

from medveil.errors import InputError, MedveilError
from medveil.io import MedicalImage, is_supported, output_name, read_image
from medveil.io.batch import walk


def ssim(a: np.ndarray, b: np.ndarray, data_range: float, channel_axis: int | None = None) -> float:
    """Mean SSIM of two same-shaped 2-D images (``(H, W)``, or ``(H, W, C)`` with ``channel_axis=-1``)."""
    _check_pair(a, b)
    spatial = a.shape[:2]
    if min(spatial) < 7:
        raise InputError(f"SSIM needs images of at least 7x7 pixels, got {spatial[0]}x{spatial[1]}")
    return float(
        structural_similarity(
            a.astype(np.float64), b.astype(np.float64), data_range=data_range, channel_axis=channel_axis
        )
    )


def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """PSNR in dB of ``b`` against reference ``a``; ``inf`` for identical images."""
    _check_pair(a, b)
    if np.array_equal(a, b):
        return math.inf
    return float(peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64), data_range=data_range))


def compare_images(original: MedicalImage, other: MedicalImage) -> dict[str, float]:
    """SSIM (mean over 2-D planes) and PSNR between two images of one scan.

    A grayscale picture stored as RGB (three equal channels) is compared as the grayscale image the
    gate obfuscated it as (:func:`medveil.io.gate.fit_channels`).
    """
    if (original.channel_axis is None) != (other.channel_axis is None):
        original, other = original.gray_if_equal_channels(), other.gray_if_equal_channels()
    a, b = original.planes(), other.planes()
    _check_pair(a, b)
    data_range = pair_data_range(a, b, max(original.bits, other.bits))
    channel_axis = -1 if original.channel_axis is not None else None
    return {
        "ssim": float(np.mean([ssim(pa, pb, data_range, channel_axis) for pa, pb in zip(a, b)])),
        "psnr": psnr(a, b, data_range),
    }


MS_SSIM_MIN_SIDE = 2 * 16 + 1  # five scales with the smallest (3-pixel) window


def ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, volumes: bool = False) -> np.ndarray:
    """MS-SSIM (five scales, standard weights; pytorch-msssim) of each pair in two ``(n, H, W)`` stacks.

    Colour stacks ``(n, H, W, 3)`` score the mean over channels; with ``volumes`` the stacks are
    ``(n, D, H, W)`` volumes, scored with 3-D windows (pytorch-msssim's 5-D path).

    The library requires images wider than 16 × (window - 1) pixels; the standard 11-pixel window
    thus needs 161 pixels. Smaller images use the largest odd window that fits (3 for 64×64, 7 for
    128×128), with the usual Gaussian sigma of 1.5. Returns an ``(n,)`` float array.
    """
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    _check_pair(a, b)
    colour = a.ndim == 4 and not volumes
    spatial = a.shape[1:4] if volumes else a.shape[1:3]
    win_size = max((w for w in range(3, 12, 2) if min(spatial) > (w - 1) * 16), default=None)
    if win_size is None:
        raise InputError(f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIDE} pixels a side, "
                         f"got {'x'.join(map(str, spatial))}")
    x, y = (torch.from_numpy(v.astype(np.float32)) for v in (a, b))
    x, y = (v.permute(0, 3, 1, 2) if colour else v[:, None] for v in (x, y))
    return _ms_ssim(x, y, data_range=data_range, size_average=False, win_size=win_size).numpy().astype(np.float64)


def mean_pair_scores(originals: np.ndarray, others: np.ndarray, with_ms_ssim: bool = True,
                     volumes: bool = False) -> dict[str, float]:
    """Mean SSIM, PSNR (over finite values) and, if asked, MS-SSIM over pairs of 8-bit images.

    ``(n, H, W)`` grayscale or ``(n, H, W, 3)`` colour (SSIM averaged over channels); with
    ``volumes``, ``(n, D, H, W)`` volumes (3-D SSIM and MS-SSIM windows).
    """
    channel_axis = -1 if originals.ndim == 4 and not volumes else None
    ssims = [ssim(a, b, 255, channel_axis) for a, b in zip(originals, others)]
    psnrs = [p for p in (psnr(a, b, 255) for a, b in zip(originals, others)) if math.isfinite(p)]
    scores = {"ssim": float(np.mean(ssims)), "psnr": float(np.mean(psnrs)) if psnrs else math.inf}
    if with_ms_ssim:
        scores["ms_ssim"] = float(np.mean(ms_ssim(originals, others, volumes=volumes)))
    return scores


def l2_norm(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised L2 distance of two 8-bit images: ``||a - b||_2 / sqrt(size)`` on the ``[0, 1]`` scale.

    Paper SD reports "normalised" L2 norms without saying how; this root-mean-square form lies in
    ``[0, 1]`` like SSIM, so the two can be mixed in :func:`deidentification_indicator`.
    """
    _check_pair(a, b)
    diff = (a.astype(np.float64) - b.astype(np.float64)) / 255
    return float(np.sqrt(np.mean(diff**2)))


def deidentification_indicator(ssim_dei: float, l2_dei: float, alpha: float = 0.5) -> float:
    """Paper SD eq. 5: ``DI(α) = α·SSIM_Dei + (1 − α)·L2norm_Dei``."""
    if not 0 <= alpha <= 1:
        raise InputError(f"alpha must lie in [0, 1], got {alpha}")
    return alpha * ssim_dei + (1 - alpha) * l2_dei


def structural_scores(originals: np.ndarray, vectorized: np.ndarray, deidentified: np.ndarray,
                      alpha: float = 0.5) -> dict[str, float]:
    """Paper SD's measures over a set of 8-bit images, all ``(n, H, W[, 3])`` at one size.

    ``originals`` are resized to the output size; ``vectorized`` went through vectorization and
    rasterization only; ``deidentified`` through the whole pipeline. Returns the means
    ``ssim_vec``, ``ssim_dei``, ``l2_dei``, and ``ssim_pos = ssim_dei − ssim_vec`` (eq. 4),
    ``di`` (eq. 5) and ``sdim = ssim_pos + di`` (eq. 6). Lower SDIM: better de-identification
    for the utility kept.
    """
    channel_axis = -1 if originals.ndim == 4 else None
    ssim_vec = float(np.mean([ssim(a, b, 255, channel_axis) for a, b in zip(originals, vectorized)]))
    ssim_dei = float(np.mean([ssim(a, b, 255, channel_axis) for a, b in zip(originals, deidentified)]))
    l2_dei = float(np.mean([l2_norm(a, b) for a, b in zip(originals, deidentified)]))
    di = deidentification_indicator(ssim_dei, l2_dei, alpha)
    ssim_pos = ssim_dei - ssim_vec
    return {"ssim_vec": ssim_vec, "ssim_dei": ssim_dei, "ssim_pos": ssim_pos, "l2_dei": l2_dei, "di": di,
            "sdim": ssim_pos + di}


def classification_scores(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, F1 (positive class 1) and ROC AUC of binary predictions.

    ``labels``: (n,) 0/1; ``probabilities``: (n,) predicted probability of class 1.
    """
    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    auc = roc_auc_score(labels, probabilities) if len(np.unique(labels)) == 2 else math.nan
    return {
        "accuracy": float((predicted == labels).mean()),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "auc": float(auc),
    }


def dice_scores(predicted: np.ndarray, truth: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float]:
    """Dice per foreground class (every class but index 0) and overall, over ``(n, H, W)`` label maps.

    Each class's Dice ``2|P∩T| / (|P| + |T|)`` is averaged over the images where the class appears
    in the truth or the prediction. ``overall`` is paper PN's: the mean of the class Dice scores
    weighted by each class's size in the truth. Keys: ``class_names[1:]`` and ``"overall"``.
    """
    _check_pair(predicted, truth)
    scores, sizes = {}, []
    for label, name in enumerate(class_names[1:], start=1):
        p, t = (predicted == label), (truth == label)
        intersection = (p & t).sum(axis=(1, 2))
        total = p.sum(axis=(1, 2)) + t.sum(axis=(1, 2))
        present = total > 0
        scores[name] = float(np.mean(2 * intersection[present] / total[present])) if present.any() else math.nan
        sizes.append(t.sum())
    weights = np.array(sizes, dtype=np.float64)
    values = np.array(list(scores.values()))
    known = ~np.isnan(values)
    scores["overall"] = float(np.average(values[known], weights=weights[known])) if weights[known].sum() else math.nan
    return scores


def best_threshold_accuracy(scores: np.ndarray, same: np.ndarray) -> float:
    """Return the best accuracy of "same subject" decided by one threshold on pair ``scores`` (paper PN, Table 2).

    Either direction counts (high score = same, or low score = same), as an attacker who has seen
    labelled pairs would choose. ``same``: (n,) 0/1.
    """
    same = np.asarray(same).astype(int)
    positives, negatives = same.sum(), len(same) - same.sum()
    if not positives or not negatives:
        raise InputError("best-threshold accuracy needs both same-subject and different-subject pairs")
    fpr, tpr, _ = roc_curve(same, scores)
    accuracy = (tpr * positives + (1 - fpr) * negatives) / len(same)
    return float(max(accuracy.max(), 1 - accuracy.min()))


def mean_average_precision(embeddings: np.ndarray, subjects: np.ndarray) -> float:
    """Return the retrieval mAP (paper PN, eq. 8): each item queries all others ranked by Euclidean distance.

    An item's AP is the mean of precision@k over the ranks k of its same-subject items; items
    with no other item of their subject are skipped. ``embeddings`` (n, d), ``subjects`` (n,).
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    distances = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
    precisions = []
    for i in range(len(embeddings)):
        others = np.arange(len(embeddings)) != i
        relevant = subjects[others] == subjects[i]
        if relevant.any():
            precisions.append(average_precision_score(relevant, -distances[i, others]))
    if not precisions:
        raise InputError("mAP needs at least one subject with two items")
    return float(np.mean(precisions))


def linkage_topk(probes: np.ndarray, gallery: np.ndarray, probe_ids: np.ndarray, gallery_ids: np.ndarray,
                 k: int = 5) -> dict[str, float]:
    """Re-identification: match each probe to the gallery by normalised correlation.

    ``probes`` ``(m, H, W[, C])`` (an attacker's reconstructions) and ``gallery`` ``(g, H, W[, C])``
    (plain images it holds, one per identity ``gallery_ids``); ``probe_ids`` name each probe's true
    identity, which must be in the gallery. Returns top-1 and top-``k`` accuracy and their chance
    levels (1/g and k/g).
    """
    def unit(x):
        flat = x.reshape(len(x), -1).astype(np.float64)
        flat -= flat.mean(axis=1, keepdims=True)
        return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)

    similarity = unit(probes) @ unit(gallery).T
    truth = np.searchsorted(gallery_ids, probe_ids) if np.all(np.diff(gallery_ids) > 0) else \
        np.array([int(np.flatnonzero(gallery_ids == p)[0]) for p in probe_ids])
    true_score = similarity[np.arange(len(probes)), truth]
    rank = (similarity > true_score[:, None]).sum(axis=1)  # 0: the true identity scored best
    g = len(gallery)
    return {"linkage_top1": float((rank < 1).mean()), f"linkage_top{k}": float((rank < k).mean()),
            "linkage_chance": 1.0 / g, f"linkage_chance_top{k}": min(1.0, k / g)}


def pair_data_range(a: np.ndarray, b: np.ndarray, bits: int) -> float:
    """Return the data range for comparing ``a`` with ``b`` when their samples have up to ``bits`` bits."""
    if bits <= 8:
        return 255.0
    lo = min(float(a.min()), float(b.min()))
    hi = max(float(a.max()), float(b.max()))
    return max(hi - lo, 1.0)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}")


def compare_trees(originals: Path, others: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Compare each supported file below ``originals`` with its counterpart below ``others``.

    Counterparts are found through the folder run's manifest (``others.manifest.jsonl`` beside
    ``others``) where there is one, since outputs carry keyed pseudonyms; otherwise by relative path,
    with the renaming obfuscation applies (JPEG -> PNG). Returns ``(rows, problems)``: one row
    ``{"file", "ssim", "psnr"}`` per pair, and one line per file that is missing or unreadable.
    """
    originals, others = Path(originals), Path(others)
    rows: list[dict[str, Any]] = []
    unwalkable: list[tuple[str, str]] = []
    files = walk(originals, unwalkable)
    problems = [reason for _, reason in unwalkable]
    counterpart_of = counterparts(originals, others)
    for rel in files:
        if not is_supported(originals / rel):
            continue
        counterpart = counterpart_of(rel)
        if not counterpart.is_file():
            problems.append(f"{counterpart}: missing (counterpart of {originals / rel})")
            continue
        try:
            scores = compare_images(read_image(originals / rel), read_image(counterpart))
        except MedveilError as exc:
            problems.append(f"{originals / rel}: {exc}")
            continue
        rows.append({"file": rel.as_posix(), **scores})
    return rows, problems


def counterparts(originals: Path, others: Path):
    """Return a function giving, for a relative path below ``originals``, its counterpart's path below ``others``.

    Through the manifest of the folder run that wrote ``others`` where it is beside it; else by name.
    """
    from medveil.io.manifest import default_manifest, read_manifest

    originals, others = Path(originals), Path(others)
    manifest = default_manifest(others)
    entries = read_manifest(manifest)[1] if manifest.is_file() else {}

    def counterpart(rel: str | Path) -> Path:
        rel = Path(rel).as_posix()
        return others / (entries[rel]["output"] if rel in entries else output_name(rel, originals / rel))

    return counterpart
