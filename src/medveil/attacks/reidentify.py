"""Re-identification: whether a pair of (encoded) images shows the same subject (paper PN, Table 2).

Three attackers, each on image pairs with subject ids:

* :func:`msssim_reidentification`: one threshold on the pair's MS-SSIM, the best possible one.
* a Siamese discriminator (:class:`~medveil.nn.SiameseDiscriminator`) trained with the one
  training loop on labelled pairs (:func:`train_discriminator`), scored by its accuracy on unseen
  subjects' pairs (:func:`discriminator_accuracy`);
* retrieval with that discriminator's embedding: mean average precision (:func:`retrieval_map`).

Images are ``(n, H, W)`` uint8 throughout, or volumes ``(n, D, H, W)``; pairs are the ``(i, j, same)``
rows of :func:`medveil.data.segmentation.subject_pairs`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from medveil import metrics
from medveil.data.segmentation import subject_pairs
from medveil.nn import SiameseDiscriminator, pair_accuracy
from medveil.nn.patches import RandomPatches
from medveil.training.loop import TrainConfig, apply_batched, fit, predict, seed_everything


class PairTensors(Dataset):
    """Items ``(pair, same)`` from uint8 images and ``(k, 3)`` pairs.

    ``pair`` is ``(2, H, W)`` float in ``[0, 1]`` (volumes: ``(2, D, H, W)``), ``same`` float 0/1.
    """

    def __init__(self, images: np.ndarray, pairs: np.ndarray):
        self.images = torch.from_numpy(images.astype(np.float32) / 255)
        self.pairs = torch.from_numpy(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def take(self, ks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the pairs ``ks`` (indices) gathered at once: ``(b, 2, H, W)`` and ``(b,)``."""
        i, j, same = self.pairs[ks].unbind(1)
        return torch.stack([self.images[i], self.images[j]], 1), same.float()

    def __getitem__(self, k: int):
        x, same = self.take(torch.tensor([k]))
        return x[0], same[0]


def msssim_reidentification(images: np.ndarray, pairs: np.ndarray, volumes: bool = False) -> tuple[float, np.ndarray]:
    """Best-threshold accuracy of MS-SSIM (3-D with ``volumes``) as a same-subject test, and the pairs' MS-SSIM ``(k,)``."""
    scores = metrics.ms_ssim(images[pairs[:, 0]], images[pairs[:, 1]], volumes=volumes)
    return metrics.best_threshold_accuracy(scores, pairs[:, 2]), scores


def train_discriminator(images: np.ndarray, subjects: np.ndarray, config: TrainConfig,
                        model: SiameseDiscriminator | None = None, val_fraction: float = 0.15,
                        patch: int | None = None) -> SiameseDiscriminator:
    """Train ``model`` (a new one, seeded by ``config.seed``, by default) on balanced pairs of ``images``.

    A ``val_fraction`` of the subjects is held out for choosing the best epoch (by pair accuracy).
    Volumes ``(n, D, H, W)`` get a 3-D discriminator; with ``patch`` it trains on pairs of patches
    cropped at one random place (:class:`~medveil.nn.patches.RandomPatches`).
    """
    ids = np.unique(subjects)
    held_out = np.random.default_rng(config.seed).choice(ids, max(2, int(round(len(ids) * val_fraction))), replace=False)
    val = np.isin(subjects, held_out)
    if model is None:
        seed_everything(config.seed)
        model = SiameseDiscriminator(dims=images.ndim - 1)

    def data(selection: np.ndarray, fixed: bool):
        pairs = PairTensors(images[selection], subject_pairs(subjects[selection], config.seed))
        return pairs if patch is None else RandomPatches(pairs, patch, images.ndim - 1, fixed, config.seed)

    fit(model, data(~val, False), data(val, True), torch.nn.BCEWithLogitsLoss(), config, score_fn=pair_accuracy)
    model.eval()
    return model


def discriminator_accuracy(model: SiameseDiscriminator, images: np.ndarray, pairs: np.ndarray) -> float:
    """Share of ``pairs`` whose same/different label the discriminator gets right."""
    return pair_accuracy(*predict(model, PairTensors(images, pairs)))


def embeddings(model: SiameseDiscriminator, images: np.ndarray) -> np.ndarray:
    """Return the discriminator's embedding ``(n, d)`` of each image."""
    model.eval()
    return apply_batched(model, images[:, None], call=SiameseDiscriminator.embed)


def retrieval_map(model: SiameseDiscriminator, images: np.ndarray, subjects: np.ndarray) -> float:
    """Mean average precision of finding a subject's other images by distance in ``model``'s embedding."""
    return metrics.mean_average_precision(embeddings(model, images), subjects)
