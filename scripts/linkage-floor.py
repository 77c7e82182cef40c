"""How far block-shuffle's statistics re-identify Br35H's near-duplicate groups, without any training.

Prints linkage top-1 (and chance) of the test split's probes against a plain gallery of one image per
group (as the bench scores linkage), for features an attacker computes on each image alone:

* how far apart a group's images are;
* on plain images: the 32-bin histogram and the sorted block means and spreads, which any scheme that
  only moves pixels keeps;
* on block-shuffle outputs (M=8) with and without ``remap``, and with ``noise`` σ: the jigsaw attack's
  linkage features (sorted per-block autocorrelations), the gallery simulated under a key of the
  attacker's own where there is noise.

Usage: python scripts/linkage-floor.py [--noise 4,8,12,16]
"""

from __future__ import annotations

import argparse

import numpy as np

import medveil
from medveil import metrics
from medveil.attacks.jigsaw import Jigsaw
from medveil.data import group_split, load_dataset
from medveil.evaluation.privacy import linkage_sets
from medveil.schemes.shuffle import to_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", default="4,8,12,16", help="comma-separated σ values for remap=1")
    args = parser.parse_args()

    data = load_dataset("br35h", 64)
    test = group_split(data.labels, data.groups) == "test"
    images, groups = data.images[test], data.groups[test]
    gallery, probes = linkage_sets(groups)

    def link(probe_features: np.ndarray, gallery_features: np.ndarray) -> str:
        score = metrics.linkage_topk(probe_features, gallery_features, groups[probes], groups[gallery])
        return f"top-1 {score['linkage_top1']:.3f} ({score['linkage_top1'] / score['linkage_chance']:.0f}x chance)"

    def histogram(x: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(image.ravel() // 8, minlength=32) for image in x]).astype(np.float64)

    def block_stats(x: np.ndarray, m: int) -> np.ndarray:
        blocks = np.stack([to_blocks(image, m) for image in x]).astype(np.float64)
        means, spreads = blocks.mean(axis=(2, 3)), blocks.std(axis=(2, 3))
        order = np.argsort(means, axis=1)
        return np.concatenate([np.take_along_axis(means, order, 1), np.take_along_axis(spreads, order, 1)], axis=1)

    print(f"{len(probes)} probes, {len(gallery)} groups in the gallery")
    first = dict(zip(groups[gallery], gallery))
    apart = [np.abs(images[i].astype(np.int64) - images[first[groups[i]]]).mean() for i in probes]
    print("mean absolute difference of a probe from its group's gallery image, grey levels: "
          f"10th percentile {np.percentile(apart, 10):.1f}, median {np.median(apart):.1f}, 90th {np.percentile(apart, 90):.1f}")
    print(f"plain, 32-bin histogram: {link(histogram(images[probes]), histogram(images[gallery]))}")
    for m in (4, 8, 16):
        print(f"plain, sorted block means and spreads, M={m}: {link(block_stats(images[probes], m), block_stats(images[gallery], m))}")
    for params in [{}, {"remap": 1}] + [{"remap": 1, "noise": int(s)} for s in args.noise.split(",")]:
        attack = Jigsaw.for_key_params({"block": 8, **params})
        shuffled = medveil.from_key(medveil.generate_key("block-shuffle", block=8, **params))(images[probes])
        features = link(attack.linkage_features(shuffled, plain=False), attack.linkage_features(images[gallery], plain=True))
        label = " ".join(["block=8"] + [f"{k}={v}" for k, v in params.items()])
        print(f"block-shuffle {label}, jigsaw's linkage features: {features}")


if __name__ == "__main__":
    main()
