"""The one training loop: classification now, segmentation and reconstruction reuse it.

:func:`fit` trains with Adam, keeps the weights that scored best on validation, and can resume
from its checkpoint file after an interruption. Everything it needs about the task comes in as
arguments: the model, the datasets (items are ``(input, target)`` tensors), a loss and,
optionally, a validation score where higher is better (default: minus the validation loss).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sized, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from medveil._files import atomic_path
from medveil.nn.device import on_device, resolve_device


@dataclass
class TrainConfig:
    """Settings of :func:`fit` (defaults are paper NB's: Adam, lr 1e-3, batch 64, 30 epochs)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    checkpoint: Path | None = None  # resume from / save to this file every epoch
    progress: bool = True
    threads: int | None = None  # torch intra-op threads; None: all cores
    device: str | None = None  # "auto", "cpu", "cuda"; None: the process default (medveil.nn.device)
    on_epoch: Callable[[dict], None] | None = None  # called with each epoch's history record


@dataclass
class TrainResult:
    """What :func:`fit` did: the history per epoch and the best epoch and its score."""

    history: list[dict] = field(default_factory=list)  # one {"epoch", "train_loss", "val_loss", "val_score"} per epoch
    best_epoch: int = -1
    best_score: float = -float("inf")


def seed_everything(seed: int) -> None:
    """Fix the seeds of torch, NumPy and ``random`` for reproducible training (never for keys)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict(model: nn.Module, data: Dataset, batch_size: int = 256,
            device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated model outputs and targets over ``data``, in order, without gradients, on the CPU.

    The model runs on ``device`` (default: the process default) and is left where it was.
    """
    model.eval()
    outputs, targets = [], []
    with torch.no_grad(), on_device(model, resolve_device(device)) as where:
        for x, y in batches(data, batch_size, where):
            outputs.append(model(_fast_layout(x)).cpu())
            targets.append(y.cpu())
    return torch.cat(outputs), torch.cat(targets)


def batches(data: Dataset, batch_size: int, device: torch.device,
            generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(input, target)`` batches of ``data`` on ``device``, shuffled by ``generator`` when one is given.

    A dataset that gives its whole content as tensors (``data.as_tensors()``, as every one in
    :mod:`medveil.data.pipeline` does) is moved to the device once and cut there, and its
    ``augment``, where it has one, moves a whole batch at once (its ``batch`` form,
    :meth:`~medveil.data.pipeline.RandomAffine.batch`). A dataset that gathers a batch by index
    (``data.take(indices)``: pairs of one image tensor, patches cropped at once) is asked a batch at
    a time. Any other dataset, or one whose augmentation has no batch form, goes through a
    DataLoader, item by item.
    """
    item_augment = getattr(data, "augment", None)
    augment = getattr(item_augment, "batch", None)
    if hasattr(data, "take"):
        order = _order(len(cast(Sized, data)), generator)
        for start in range(0, len(order), batch_size):
            x, y = data.take(order[start:start + batch_size])
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return
    if not hasattr(data, "as_tensors") or (item_augment is not None and augment is None):
        for x, y in DataLoader(data, batch_size=batch_size, shuffle=generator is not None, generator=generator):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return
    inputs, targets = (t.to(device) for t in data.as_tensors())
    order = _order(len(inputs), generator).to(device)
    for start in range(0, len(inputs), batch_size):
        chosen = order[start:start + batch_size]
        x = inputs[chosen]
        yield (augment(x) if augment is not None else x), targets[chosen]


def _order(length: int, generator: torch.Generator | None) -> torch.Tensor:
    """Return the items' order for one pass: shuffled by ``generator`` (as a DataLoader's sampler draws it), or as stored."""
    return torch.randperm(length, generator=generator) if generator is not None else torch.arange(length)


def apply_batched(module: nn.Module, images: np.ndarray, batch_size: int = 256,
                  call: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
                  device: str | torch.device | None = None) -> np.ndarray:
    """Run ``module`` (or ``call(module, x)``) over uint8 images ``(n, C, H, W)``, without gradients.

    Images go in ``batch_size`` at a time as float in [0, 1], on ``device`` (default: the process
    default; schemes pass ``"cpu"``). Returns the outputs concatenated, float32 ``(n, ...)`` on the
    CPU; for ``n = 0`` the module sees one empty batch, so the output still has its shape. The
    module must already be in eval mode; it is left where it was.
    """
    call = call or (lambda m, x: m(x))
    x = torch.from_numpy(np.ascontiguousarray(images))
    with torch.no_grad(), on_device(module, resolve_device(device)) as where:
        return torch.cat([call(module, _fast_layout(x[k:k + batch_size].to(where).float() / 255)).cpu()
                          for k in range(0, max(len(x), 1), batch_size)]).numpy()


def fit(model: nn.Module, train: Dataset, val: Dataset | None, loss_fn: Callable, config: TrainConfig,
        score_fn: Callable[[torch.Tensor, torch.Tensor], float] | None = None) -> TrainResult:
    """Train ``model`` in place and leave it holding its best-on-validation weights.

    Parameters
    ----------
    model : nn.Module
    train, val : Dataset of ``(input, target)`` tensor pairs; ``val`` may be ``None`` (then the
        last epoch is kept).
    loss_fn : callable ``(outputs, targets) -> scalar tensor``
    config : TrainConfig
    score_fn : callable ``(outputs, targets) -> float`` on the whole validation set (CPU tensors),
        higher is better; default ``-loss_fn``.

    The model trains on ``config.device`` and is back where it was (the CPU) on return.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    result, best_state, start = TrainResult(), copy.deepcopy(model.state_dict()), 0
    # channels-last convolutions measured ~1.4x faster on the development machine's CPU, 1.8x in 3-D
    model.to(memory_format=_CHANNELS_LAST[5 if any(isinstance(m, nn.Conv3d) for m in model.modules()) else 4])  # type: ignore[call-overload]  # torch's stubs omit Module.to's keyword form
    with on_device(model, resolve_device(config.device)) as device:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)  # made on the device: its state lives there
        if config.checkpoint and Path(config.checkpoint).exists():
            state = torch.load(config.checkpoint, weights_only=False, map_location=device)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"].cpu())
            torch.set_rng_state(state["torch_rng"].cpu())
            result, best_state, start = state["result"], state["best_model"], state["epoch"] + 1

        bar = tqdm(range(start, config.epochs), desc="training", unit="epoch", disable=not config.progress,
                   initial=start, total=config.epochs)
        for epoch in bar:
            model.train()
            total, count = 0.0, 0
            for x, y in batches(train, config.batch_size, device, generator):
                optimizer.zero_grad()
                loss = loss_fn(model(_fast_layout(x)), y)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(x)
                count += len(x)
            record = {"epoch": epoch, "train_loss": total / count}
            if val is not None:
                outputs, targets = predict(model, val, device=device)
                record["val_loss"] = float(loss_fn(outputs, targets))
                record["val_score"] = score_fn(outputs, targets) if score_fn else -record["val_loss"]
            score = record.get("val_score", float(epoch))
            if score > result.best_score:
                result.best_score, result.best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
            result.history.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{record.get('val_score', float('nan')):.3f}")
            if config.checkpoint:
                _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                              "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                              "result": result, "best_model": best_state}, Path(config.checkpoint))
            if config.on_epoch:
                config.on_epoch(record)
        model.load_state_dict(best_state)
    return result


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _fast_layout(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=_CHANNELS_LAST[x.dim()]) if x.dim() in _CHANNELS_LAST else x


def _save_atomic(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
