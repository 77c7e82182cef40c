"""Privacy-Net training (paper PN), in 2-D or 3-D: what makes an :class:`~medveil.schemes.AdversarialEncoder` key.

Three networks train together on images or volumes with tissue masks and subject ids
(:class:`~medveil.data.segmentation.SegmentationData`):

* the **encoder** E, a U-Net whose sigmoid output is an image of the input's size;
* the **segmenter** S, a U-Net segmenting E's output (generalised Dice loss);
* the **discriminator** D, a Siamese network telling whether two encoded images show the same
  subject (binary cross-entropy).

Paper PN's game (eq. 1): E and S minimise ``L_seg - λ L_dis``, D minimises ``L_dis``. Training
(:func:`train_privacynet`) alternates the two updates on each batch of pairs, as in paper PN's
Algorithm 1 (Adam, lr 1e-4): :func:`update_encoder_segmenter` moves E and S only,
:func:`update_discriminator` moves D only, on encodings detached from E. Before that,
:func:`pretrain` initialises E as an auto-encoder and trains S and D on the plain images
(paper PN, section 3.3), with the one training loop at lr 1e-3 to save CPU time.

On volumes ``(n, D, H, W)`` all three networks are 3-D (paper PN; its discriminator is a 3-D
DenseNet, ours the small Siamese CNN) and train on cubes of side ``config.patch`` cropped at one
random place per batch (for a pair, the same place in both volumes, so D compares like with
like); whole volumes go through E and S by sliding windows (:func:`medveil.nn.patches.sliding_window`).
Images train whole.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from medveil.attacks.reconstruction import train_reconstructor
from medveil.attacks.reidentify import train_discriminator
from medveil.training.classification import holdout
from medveil.data.pipeline import SegmentationTensors
from medveil.data.segmentation import SegmentationData, subject_pairs
from medveil.nn.device import resolve_device
from medveil.errors import InputError
from medveil.nn import GeneralisedDiceLoss, SiameseDiscriminator, UNet, pair_accuracy
from medveil.nn.patches import RandomPatches, random_crop, whole_volume
from medveil.schemes.adversarial import encode
from medveil.training.loop import TrainConfig, apply_batched, fit, seed_everything


@dataclass
class PrivacyNetConfig:
    """Settings of :func:`pretrain` and :func:`train_privacynet`."""

    lam: float = 1.0
    epochs: int = 20  # adversarial epochs
    pretrain_epochs: int = 10
    batch_pairs: int = 16
    lr: float = 1e-4  # paper PN
    pretrain_lr: float = 1e-3
    width: int = 16
    depth: int = 2
    patch: int = 32  # side of the training cubes for volumes (paper PN: 64); images train whole
    seed: int = 0
    progress: bool = True


class PrivacyNet(nn.Module):
    """The encoder, segmenter and discriminator trained together."""

    def __init__(self, classes: int, width: int = 16, depth: int = 2, dims: int = 2):
        super().__init__()
        self.encoder = UNet(1, 1, width, depth, dims)
        self.segmenter = UNet(1, classes, width, depth, dims)
        self.discriminator = SiameseDiscriminator(width, dims=dims)


def update_encoder_segmenter(net: PrivacyNet, optimizer: torch.optim.Optimizer, xi, xj, yi, yj, same,
                             lam: float) -> dict[str, float]:
    """One step of E and S on ``L_seg(i) + L_seg(j) - λ L_dis`` (paper PN eq. 5); ``optimizer`` holds E's and S's parameters."""
    optimizer.zero_grad()
    ei, ej = encode(net.encoder, xi), encode(net.encoder, xj)
    seg_loss = segmentation_loss(yi.dim() - 1)
    seg = seg_loss(net.segmenter(ei), yi) + seg_loss(net.segmenter(ej), yj)
    dis = nn.functional.binary_cross_entropy_with_logits(net.discriminator.compare(ei, ej), same)
    (seg - lam * dis).backward()
    optimizer.step()
    return {"seg_loss": seg.item() / 2, "dis_loss_es": dis.item()}


def update_discriminator(net: PrivacyNet, optimizer: torch.optim.Optimizer, xi, xj, same) -> dict[str, float]:
    """One step of D on ``L_dis`` of the current encodings, detached from E (paper PN eqs. 6-7).

    Paper PN scales this gradient by λ; with Adam a constant scale changes nothing, so it is left out.
    """
    optimizer.zero_grad()
    with torch.no_grad():
        ei, ej = encode(net.encoder, xi), encode(net.encoder, xj)
    logits = net.discriminator.compare(ei, ej)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, same)
    loss.backward()
    optimizer.step()
    return {"dis_loss": loss.item(), "dis_accuracy": pair_accuracy(logits, same)}


def segmentation_loss(dims: int) -> GeneralisedDiceLoss:
    """S's loss: paper PN's generalised Dice, plus cross-entropy for volumes (see :class:`~medveil.nn.GeneralisedDiceLoss`)."""
    return GeneralisedDiceLoss(cross_entropy=1.0 if dims == 3 else 0.0)


def check_trainable(data: SegmentationData, config: PrivacyNetConfig) -> None:
    """Raise :class:`InputError` unless the U-Nets can halve ``data``'s images ``depth`` times.

    Images must be square; for volumes, the volumes and the training cubes must halve.
    """
    step = 2**config.depth
    if data.dims == 2:
        height, width = data.shape
        if height != width or height % step:
            raise InputError(f"{data.name}: Privacy-Net needs square images with a side divisible by "
                             f"2**depth = {step}, got {height}x{width}")
    elif any(n % step for n in (*data.shape, config.patch)) or config.patch > min(data.shape):
        raise InputError(f"{data.name}: Privacy-Net needs volume sides and a patch side divisible by 2**depth = {step}, "
                         f"and the patch no larger than the volume; got {'x'.join(map(str, data.shape))} "
                         f"and patch {config.patch}")


def training_patch(data: SegmentationData, config: PrivacyNetConfig) -> int | None:
    """Return the side of the cubes the networks train on and slide over: ``config.patch`` for volumes, None for images."""
    return config.patch if data.dims == 3 else None


def pretrain(data: SegmentationData, config: PrivacyNetConfig) -> PrivacyNet:
    """E as an auto-encoder, S and D on the plain images (or patches of the volumes) of ``data``."""
    check_trainable(data, config)
    seed_everything(config.seed)
    net = PrivacyNet(len(data.class_names), config.width, config.depth, data.dims)
    patch = training_patch(data, config)
    steps = TrainConfig(epochs=config.pretrain_epochs, batch_size=32 if patch is None else 4, lr=config.pretrain_lr,
                        seed=config.seed, progress=config.progress)
    net.encoder, _ = train_reconstructor(data.images, data.images, steps, config.width, depth=config.depth, patch=patch)
    train_idx, val_idx = holdout(len(data), 0.15, config.seed)

    def tissues(selection: np.ndarray, fixed: bool):
        tensors = SegmentationTensors(data.images[selection], data.masks[selection])
        return tensors if patch is None else RandomPatches(tensors, patch, 3, fixed, config.seed)

    fit(net.segmenter, tissues(train_idx, False), tissues(val_idx, True), segmentation_loss(data.dims), steps)
    train_discriminator(data.images, data.subjects, steps, model=net.discriminator, patch=patch)
    return net


def train_privacynet(net: PrivacyNet, data: SegmentationData, config: PrivacyNetConfig) -> tuple[PrivacyNet, list[dict]]:
    """Paper PN's alternating training from ``net`` (left untouched; a trained copy is returned) on ``data``.

    Each epoch draws fresh balanced pairs (:func:`~medveil.data.segmentation.subject_pairs`) and,
    per batch of ``config.batch_pairs`` pairs, updates E and S, then D (for volumes, on cubes cropped
    at one random place per batch). Returns the trained copy and one record of mean losses and D's
    training accuracy per epoch.
    """
    seed_everything(config.seed)
    net = copy.deepcopy(net)
    device = resolve_device()
    net.to(device).train()
    opt_es = torch.optim.Adam([*net.encoder.parameters(), *net.segmenter.parameters()], lr=config.lr)
    opt_d = torch.optim.Adam(net.discriminator.parameters(), lr=config.lr)
    tensors = SegmentationTensors(data.images, data.masks)
    images, masks = tensors.images.to(device), tensors.masks.to(device)
    rng = np.random.default_rng(config.seed)  # pair sampling and order, not key material
    patch = training_patch(data, config)
    generator = torch.Generator().manual_seed(config.seed)
    cut = (lambda *xs: xs) if patch is None else (lambda *xs: random_crop(xs, patch, 3, generator))
    history = []
    for epoch in tqdm(range(config.epochs), desc=f"privacy-net λ={config.lam:g}", unit="epoch", disable=not config.progress):
        pairs = subject_pairs(data.subjects, seed=int(rng.integers(2**32)))
        pairs = pairs[rng.permutation(len(pairs))]
        totals: dict[str, float] = {}
        for start in range(0, len(pairs), config.batch_pairs):
            i, j, same = torch.from_numpy(pairs[start:start + config.batch_pairs]).T
            xi, xj, yi, yj = cut(images[i], images[j], masks[i], masks[j])
            same = same.float().to(device)
            record = update_encoder_segmenter(net, opt_es, xi, xj, yi, yj, same, config.lam)
            record |= update_discriminator(net, opt_d, xi, xj, same)
            for name, value in record.items():
                totals[name] = totals.get(name, 0.0) + value * len(i)
        history.append({"epoch": epoch, **{name: value / len(pairs) for name, value in totals.items()}})
    net.to("cpu").eval()
    return net, history


def segment(segmenter: nn.Module, images: np.ndarray, patch: int | None = None) -> np.ndarray:
    """Return the segmenter's label map ``(n, H, W)`` uint8 for uint8 images ``(n, H, W)`` (encoded or plain).

    With ``patch``, of volumes ``(n, D, H, W)`` by sliding windows of that side.
    """
    segmenter.eval()
    outputs = apply_batched(segmenter, images[:, None], batch_size=256 if patch is None else 4,
                            call=lambda m, x: whole_volume(m, x, patch))
    return outputs.argmax(axis=1).astype(np.uint8)
