"""Image classifiers. Both return one logit per image for binary tasks (``num_outputs=1``).

The sigmoid + binary cross-entropy of paper NB is applied as ``BCEWithLogitsLoss`` in training
(the same function, computed stably); :func:`torch.sigmoid` of the output is the probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn
from typing_extensions import override

from medveil.plugins import Registry


class SeedCNN(nn.Module):
    """Paper NB's classifier: four conv layers (5×5, 3×3, 5×5, 3×3), average pooling, SELU, two FC layers.

    Input ``(B, in_channels, size, size)`` float in ``[0, 1]``, ``size`` divisible by 16;
    output ``(B,)`` logits (``(B, num_outputs)`` when ``num_outputs > 1``).
    """

    def __init__(self, size: int = 64, in_channels: int = 1, width: int = 16, hidden: int = 64, num_outputs: int = 1):
        super().__init__()
        if size % 16:
            raise ValueError(f"SeedCNN needs a size divisible by 16, got {size}")
        chans = [in_channels, width, 2 * width, 2 * width, 4 * width]
        layers = []
        for i, k in enumerate((5, 3, 5, 3)):
            layers += [nn.Conv2d(chans[i], chans[i + 1], k, padding=k // 2), nn.SELU(), nn.AvgPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(chans[-1] * (size // 16) ** 2, hidden), nn.SELU(), nn.Linear(hidden, num_outputs)
        )
        self.num_outputs = num_outputs

    @override
    def forward(self, x):
        out = self.head(self.features(x))
        return out.squeeze(1) if self.num_outputs == 1 else out


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class SmallResNet(nn.Module):
    """A ResNet with three stages of two basic blocks (16/32/64 channels): the "any standard model" check.

    Input ``(B, in_channels, H, W)``; output ``(B,)`` logits (or ``(B, num_outputs)``).
    """

    def __init__(self, in_channels: int = 1, width: int = 16, num_outputs: int = 1):
        super().__init__()
        w = [width, 2 * width, 4 * width]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True))
        blocks, cin = [], w[0]
        for i, cout in enumerate(w):
            blocks += [_BasicBlock(cin, cout, 1 if i == 0 else 2), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_outputs))
        self.num_outputs = num_outputs

    @override
    def forward(self, x):
        out = self.head(self.blocks(self.stem(x)))
        return out.squeeze(1) if self.num_outputs == 1 else out


@dataclass(frozen=True)
class ModelSpec:
    """A server model.

    ``build(size, in_channels, num_outputs) -> nn.Module`` taking ``(B, C, size, size)`` floats in ``[0, 1]`` and
    giving logits as :class:`SeedCNN` does; ``summary`` is one line for people.

    ``input``: ``"minmax"`` (paper NB: each image scaled to ``[0, 1]``) or ``"codes"`` (each value
    divided by its type's largest, so the model can read the exact codes back). ``uses_scheme``:
    ``build`` also takes the obfuscation's public scheme name and parameters
    (``build(size, in_channels, num_outputs, scheme, params)``; ``scheme`` is ``None`` for plain images).
    ``schemes``: the schemes it is made for (``None``: any images, plain ones included); the
    benchmark trains it on those only.
    """

    name: str
    build: Callable[..., nn.Module]
    summary: str
    input: str = "minmax"
    uses_scheme: bool = False
    schemes: tuple[str, ...] | None = None


_MODELS: Registry[ModelSpec] = Registry("model", "medveil.models")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a server model (utility evaluation, bench and service train it by name); a name is taken once."""
    return _MODELS.add(spec.name, spec)


def available_models() -> list[str]:
    """Names of every registered server model (plugins' included), sorted."""
    return _MODELS.names()


def model_spec(name: str) -> ModelSpec:
    """Return the registered server model ``name``; a one-line error names the choices."""
    return _MODELS[name]


def build_classifier(name: str, size: int, in_channels: int = 1, num_outputs: int = 1, scheme: str | None = None,
                     params: Mapping[str, Any] | None = None) -> nn.Module:
    """Return the registered model ``name`` (``"cnn"``: paper NB's, ``"resnet"``, ``"matched"``, or a plugin's) for ``size`` images.

    ``scheme`` and ``params``: the public name and parameters of the obfuscation the images went
    through (``None`` for plain images), for models that learn its structure.
    """
    spec = _MODELS[name]
    if spec.uses_scheme:
        return spec.build(size, in_channels, num_outputs, scheme, dict(params or {}))
    return spec.build(size, in_channels, num_outputs)


register_model(ModelSpec("cnn", lambda size, channels, outputs: SeedCNN(size, channels, num_outputs=outputs),
                         "paper NB's CNN: four conv layers, SELU, two fully connected layers"))
register_model(ModelSpec("resnet", lambda size, channels, outputs: SmallResNet(in_channels=channels, num_outputs=outputs),
                         "a small ResNet (three stages of two basic blocks)"))
