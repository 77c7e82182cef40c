"""Figures a person looks at: originals beside their obfuscated or reconstructed versions."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_grid(rows: Sequence[Sequence[np.ndarray]], column_titles: Sequence[str], row_titles: Sequence[str],
               path: Path, title: str | None = None) -> Path:
    """Save a grid of images: one row per example, one column per version (e.g. original | obfuscated).

    Each image is shown min-max scaled on its own (as a model sees it after normalisation).
    """
    n_rows, n_cols = len(rows), len(column_titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.4 * n_cols, 2.4 * n_rows + (0.4 if title else 0)), squeeze=False)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(_display(img), cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=10)
            if c == 0:
                ax.set_ylabel(row_titles[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _display(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float64)
    lo, hi = img.min(), img.max()
    scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return scaled[..., :3] if scaled.ndim == 3 else scaled


def plot_utility(summary: Sequence[dict], path: Path, title: str = "") -> Path:
    """Bar chart of test accuracy (mean ± std over seeds) per setting; ``summary`` as from ``summarise``."""
    labels = [entry["setting"].label.replace(" ", "\n") for entry in summary]
    means = [entry["accuracy"][0] * 100 for entry in summary]
    stds = [np.nan_to_num(entry["accuracy"][1]) * 100 for entry in summary]  # one seed: no error bar
    fig, ax = plt.subplots(figsize=(1.3 * len(summary) + 2, 3.6))
    bars = ax.bar(range(len(summary)), means, yerr=stds, capsize=4, color="#4C78A8")
    ax.bar_label(bars, labels=[f"{m:.1f}" for m in means], padding=3, fontsize=8)
    ax.set_xticks(range(len(summary)), labels, fontsize=8)
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(40, 105)
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_tradeoff(points: Sequence[tuple[str, float, float, float]], path: Path, title: str = "",
                  thresholds: Sequence[tuple[float, str]] = (), loss: str = "ssim") -> Path:
    """Return utility against privacy loss: ``(label, loss, accuracy %, accuracy std)`` per point, and the frontier.

    ``loss``: ``"ssim"`` (what the strongest attack recovers, 0-1), ``"gain"`` (what it recovers beyond
    the guess, SSIM over the attacker's mean image) or ``"linkage"`` (its top-1
    re-identification as a multiple of chance, on a log axis). The frontier joins the points no
    other point beats on both axes (less lost and more accurate); ``thresholds`` ``(x, label)`` are
    drawn as dotted lines, each named in the legend.
    """
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    for label, x, y, err in points:
        ax.errorbar(x, y, yerr=np.nan_to_num(err), fmt="o", capsize=3)  # one seed: no error bar
    front = pareto_front([(x, y) for _, x, y, _ in points])
    if len(front) > 1:
        ax.step(*zip(*front), where="post", color="black", lw=0.8, alpha=0.6, label="frontier")
    for (threshold, name), colour in zip(thresholds, ("tab:olive", "tab:orange", "tab:red")):
        ax.axvline(threshold, color=colour, lw=0.9, ls=":", label=name)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    if loss == "linkage":
        ax.set_xscale("log")
        ax.set_xlim(1, 2 * max([x for _, x, _, _ in points] + [1]))
    else:
        ax.set_xlim(-0.3 if loss == "gain" else -0.05, 1.05)
    ax.autoscale_view()  # labels are measured against the final limits
    # Labels of nearby points would print over each other: each takes the nearest free place, right or
    # left of its point, then further below or above.
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg's canvas, the one used here
    taken: list = []
    for label, x, y, _ in sorted(points, key=lambda p: (-p[2], p[1])):
        places = [(side * 5, 4 + direction * 10 * step, "left" if side > 0 else "right")
                  for step in range(len(points) + 1) for direction in (-1, 1) for side in (1, -1)]
        for dx, dy, align in places:
            text = ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8, ha=align)
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in taken):
                break
            text.remove()
        taken.append(box)
    ax.set_xlabel({"ssim": "what the strongest attack recovers (mean SSIM to the originals)",
                   "gain": "what the strongest attack recovers beyond the guess (SSIM over the attacker's mean image)",
                   "linkage": "patients re-identified by the strongest attack (top-1, × chance)"}[loss])
    ax.set_ylabel("test accuracy % (utility)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Return the ``(loss, gain)`` points that no other has both lower loss and higher gain than, by increasing loss."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def plot_pair_distributions(scores: Sequence[tuple[str, np.ndarray]], same: np.ndarray, path: Path) -> Path:
    """Histograms of pair scores (e.g. MS-SSIM), same subject against different subjects, one panel per setting.

    ``scores``: ``(title, (k,) scores)`` per panel; ``same``: ``(k,)`` 0/1 for the pairs (paper PN, Fig. 2).
    """
    same = np.asarray(same).astype(bool)
    fig, axes = plt.subplots(1, len(scores), figsize=(3.2 * len(scores), 2.8), squeeze=False)
    for ax, (title, values) in zip(axes[0], scores):
        bins = np.linspace(min(values.min(), 0.0), 1.0, 31)
        ax.hist(values[same], bins=bins, alpha=0.6, color="#d62728", label="same subject")
        ax.hist(values[~same], bins=bins, alpha=0.6, color="#1f77b4", label="different subjects")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("MS-SSIM of the pair", fontsize=8)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)
