"""Where medveil trains and predicts: ``cpu``, ``cuda`` (or ``cuda:N``), or ``auto`` (CUDA when torch sees it).

Models, batches and losses go to the device; keys and obfuscation never do. A key must give the
same bytes on every machine, and a GPU's floating point need not match the CPU's, so schemes run
their look-ups and networks (``vae``, ``adversarial``) on the CPU whatever is chosen here.

The choice is a process-wide default, as torch's own default dtype is: the CLI sets it once per
command (``--device``), and everything that trains or predicts (:func:`medveil.training.loop.fit`,
:func:`~medveil.training.loop.predict`, :func:`~medveil.training.loop.apply_batched`, Privacy-Net's alternating
updates) uses it unless handed a device of its own.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from medveil.errors import InputError

CHOICES = ("auto", "cpu", "cuda")

_default = "auto"


def set_default_device(name: str) -> None:
    """Make ``name`` (one of :data:`CHOICES`, or ``cuda:N``) what :func:`resolve_device` gives when asked for none."""
    global _default
    _check_name(name)
    _default = name


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return the :class:`torch.device` for ``device`` (default: the process default, ``auto`` unless set).

    ``auto`` is CUDA when torch sees a CUDA device, else the CPU. Asking for ``cuda`` where there
    is none raises :class:`InputError`. Choosing CUDA also turns on torch's deterministic
    algorithms, so a GPU run repeats itself (it does not repeat a CPU run's last digits).
    """
    if isinstance(device, torch.device):
        return device
    name = _default if device is None else device
    _check_name(name)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError(f"--device {name}: torch sees no CUDA device here (a CPU build, or no GPU); "
                         "use --device cpu or auto")
    _deterministic_cuda()
    return torch.device("cuda" if name == "auto" else name)


@contextmanager
def on_device(module: nn.Module, device: torch.device) -> Iterator[torch.device]:
    """Move ``module`` to ``device`` for the block, then back to where its parameters were.

    Modules live on the CPU between calls, where keys are saved and schemes apply them.
    """
    origin = next(module.parameters(), torch.empty(0)).device
    module.to(device)
    try:
        yield device
    finally:
        module.to(origin)


def _check_name(name: str) -> None:
    base, _, index = name.partition(":")
    if base not in CHOICES or (index and (base != "cuda" or not index.isdigit())):
        raise InputError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")


def _deterministic_cuda() -> None:
    # cuBLAS reads this when it first initialises; without it deterministic matmuls raise.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
