"""Chosen-plaintext recovery of the intensity mapping through the black box.

One crafted image holding every 8-bit value once (a 16×16 ramp) is fed to the black box; its
output is the whole table ``v -> perm[v] mod N``. For a bijective key the table inverts exactly.
For ``N < 256`` it partitions the 256 values into pre-image sets, one per output value; each
intercepted pixel is then known to lie in its set, and the attack picks a member:

* ``refine=False``: the conditional mean of the set under the attacker's intensity histogram.
* ``refine=True``: a U-Net trained on the attacker's own images (obfuscated locally with the
  recovered table, so no further queries) that sees the set's mean, minimum and maximum at every
  pixel and predicts the original; the prediction is then projected onto the nearest member of
  the pixel's pre-image set, so the reconstruction is always consistent with what was observed.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from typing_extensions import override

from medveil.attacks.base import Attack, AttackerView, AttackSpec, register_attack
from medveil.attacks.reconstruction import attacker_training, run_reconstructor, train_reconstructor
from medveil.errors import InputError, SchemeMismatchError
from medveil.training.loop import TrainConfig

DOMAIN = 256


class ChosenPlaintext(Attack):
    """Recover the table with one query, then reconstruct from the pre-image sets (8-bit images)."""

    name = "chosen-plaintext"

    def __init__(self, refine: bool = False, config: TrainConfig | None = None, width: int = 16):
        self.refine = refine
        self.config = config or attacker_training()
        self.width = width
        self.table: np.ndarray | None = None
        self.history: list[dict] = []
        if refine:
            self.name = "chosen-plaintext+unet"

    @override
    def fit(self, view: AttackerView) -> "ChosenPlaintext":
        attacker_images = view.own
        probe = np.arange(DOMAIN, dtype=np.uint8).reshape(16, 16)
        self.table = view.require_oracle(self.name)(probe).ravel().astype(np.int64)
        prior = np.bincount(attacker_images.ravel(), minlength=DOMAIN).astype(np.float64) + 1.0  # Laplace smoothing
        outputs = self.table.max() + 1
        weight = np.bincount(self.table, weights=prior, minlength=outputs)
        weighted = np.bincount(self.table, weights=prior * np.arange(DOMAIN), minlength=outputs)
        self.conditional_mean = np.divide(weighted, weight, out=np.zeros(outputs), where=weight > 0)
        self.set_min = np.full(outputs, DOMAIN - 1)
        self.set_max = np.zeros(outputs, dtype=np.int64)
        np.minimum.at(self.set_min, self.table, np.arange(DOMAIN))
        np.maximum.at(self.set_max, self.table, np.arange(DOMAIN))
        self.nearest_member = self._nearest_member_table()
        self.model = None
        if self.refine and len(self.partition) < DOMAIN:  # a bijective table leaves the U-Net nothing to choose
            if attacker_images.ndim == 4:
                raise InputError("the refined chosen-plaintext attack handles grayscale images only")
            features = self._features(self.table[attacker_images])
            self.model, self.history = train_reconstructor(features, attacker_images, self.config, self.width)
        return self

    @property
    def partition(self) -> list[np.ndarray]:
        """The pre-image set of each output value (sorted input values)."""
        table = self._fitted_table()
        return [np.flatnonzero(table == k) for k in range(table.max() + 1)]

    def _fitted_table(self) -> np.ndarray:
        if self.table is None:
            raise RuntimeError("fit the attack first")
        return self.table

    def _nearest_member_table(self) -> np.ndarray:
        """``[k, u]``: the member of output ``k``'s pre-image set closest to value ``u``."""
        values = np.arange(DOMAIN)
        table = np.zeros((self._fitted_table().max() + 1, DOMAIN), dtype=np.uint8)
        for k, members in enumerate(self.partition):
            if len(members):
                table[k] = members[np.abs(members[:, None] - values[None, :]).argmin(axis=0)]
        return table

    def _features(self, observed: np.ndarray) -> np.ndarray:
        mean = self.conditional_mean[observed].round().astype(np.uint8)
        return np.stack([mean, self.set_min[observed].astype(np.uint8), self.set_max[observed].astype(np.uint8)], axis=-1)

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        if self.table is None:
            raise RuntimeError("fit the attack first")
        observed = obfuscated.astype(np.int64)
        if not self.refine:
            return self.conditional_mean[observed].round().astype(np.uint8)
        if self.model is None:
            return self.nearest_member[observed, 0]
        predicted = run_reconstructor(self.model, self._features(observed))
        return self.nearest_member[observed, predicted]


class TanakaChosenPlaintext(Attack):
    """Recover Tanaka's block key with crafted images, then decrypt exactly (Chang & Case 2020).

    The scheme's public parameters (``block``, ``channels``) are known; the key is not. One
    all-zero block reveals each slot's negation; ``ceil(log2(slots))`` more blocks, the ``t``-th
    with 15 in every slot whose index has bit ``t`` set, reveal each output slot's source slot bit
    by bit: ``1 + ceil(log2(2·C·M²))`` images in all (6 for grayscale 4×4 blocks).
    """

    name = "chosen-plaintext"

    def __init__(self, block: int, channels: int = 1):
        self.block, self.channels = block, channels
        self.perm: np.ndarray | None = None
        self.flips: np.ndarray | None = None

    @override
    def fit(self, view: AttackerView) -> "TanakaChosenPlaintext":
        from medveil.schemes.learnable import from_slots, to_slots

        m, c = self.block, self.channels
        slots = 2 * c * m * m
        bits = max(1, int(np.ceil(np.log2(slots))))
        index = np.arange(slots)
        probes = np.stack([np.zeros(slots, np.uint8)] + [((index >> t) & 1).astype(np.uint8) * 15 for t in range(bits)])
        shape = (len(probes), m, m) + ((3,) if c == 3 else ())
        layout = ((len(probes),), m, m, m, c)
        images = from_slots(probes[:, None, None, :], layout).reshape(shape)
        observed, _ = to_slots(view.require_oracle(self.name)(images), m, c)
        observed = observed[:, 0, 0, :]
        self.flips = observed[0] == 15
        changed = observed[1:] != observed[0]
        self.perm = (changed.astype(np.int64) << np.arange(bits)[:, None]).sum(axis=0)
        return self

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        from medveil.schemes.learnable import undo_block_scramble

        if self.perm is None or self.flips is None:
            raise RuntimeError("fit the attack first")
        return undo_block_scramble(obfuscated, self.perm, self.flips, self.block, self.channels)


class StructuralChosenPlaintext(Attack):
    """Measure the structural scheme's coordinate warp with step-edge images, then undo it.

    Paper SD argues its pipeline resists chosen-plaintext attacks because the encrypted numbers
    never leave the hospital. But the rendered output still places every boundary where the
    order-preserving map sends it. Feeding ``size - 1`` images that are black left of column
    ``x`` and white right of it reads off that position for every integer ``x`` (the dark area
    per row, in output pixels; edges the vectorizer drops, a few pixels from the border, are
    interpolated); since one map serves both axes, resampling the intercepted image
    through the inverse map restores the vectorized image. What vectorization itself discarded
    stays lost. The public parameters (``size``, ``raster``) are known; the key is not.
    """

    name = "chosen-plaintext"

    def __init__(self, size: int, raster: int, channels: int = 1):
        self.size, self.raster, self.channels = size, raster, channels
        self.positions: np.ndarray | None = None

    @override
    def fit(self, view: AttackerView) -> "StructuralChosenPlaintext":
        columns = np.arange(self.size)
        steps = np.stack([np.broadcast_to(np.where(columns < x, 0, 255).astype(np.uint8), (self.size, self.size))
                          for x in range(1, self.size)])
        if self.channels == 3:
            steps = np.repeat(steps[..., None], 3, axis=-1)
        observed = view.require_oracle(self.name)(steps).astype(np.float64)
        if observed.ndim == 4:
            observed = observed.mean(axis=-1)
        dark = (255 - observed).sum(axis=2).mean(axis=1) / 255  # output pixels left of the edge
        # The vectorizer drops stripes a few pixels thin (near the borders): their edge is not seen.
        seen = np.concatenate([[True], observed.min(axis=(1, 2)) < 128, [True]])
        measured = np.concatenate([[0.0], dark, [float(self.raster)]])
        grid = np.arange(self.size + 1)
        self.positions = np.maximum.accumulate(np.interp(grid, grid[seen], measured[seen]))
        return self

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        if self.positions is None:
            raise RuntimeError("fit the attack first")
        return undo_warp(obfuscated, self.positions, self.size, self.raster)


def undo_warp(obfuscated: np.ndarray, positions: np.ndarray, size: int, raster: int) -> np.ndarray:
    """Resample structural output through the inverse of a measured warp.

    ``positions[x]``: where input coordinate ``x`` (0..``size``) lands, in output pixels; one map
    serves both axes. ``obfuscated``: ``(n, raster, raster[, 3])`` uint8; returns the same shape.
    """
    from scipy.ndimage import map_coordinates

    centres = (np.arange(raster) + 0.5) * size / raster  # in input pixel units
    source = np.interp(centres, np.arange(size + 1), positions) - 0.5  # in output pixels
    rows, cols = np.meshgrid(source, source, indexing="ij")
    colour = obfuscated.ndim == 4
    planes = obfuscated if colour else obfuscated[..., None]
    out = np.stack([np.stack([map_coordinates(img[..., c].astype(np.float64), [rows, cols], order=1, mode="nearest")
                              for c in range(planes.shape[-1])], axis=-1) for img in planes])
    out = np.clip(out.round(), 0, 255).astype(np.uint8)
    return out if colour else out[..., 0]


def chosen_plaintext_attack(scheme: str, params: Mapping[str, Any], refine: bool = False,
                           config: TrainConfig | None = None) -> Attack:
    """Return the chosen-plaintext attack for ``scheme`` with its public ``params`` (the secret stays in the black box)."""
    if scheme == "intensity":
        return ChosenPlaintext(refine=refine, config=config)
    if scheme == "tanaka":
        return TanakaChosenPlaintext(params["block"], params["channels"])
    if scheme == "structural":
        return StructuralChosenPlaintext(params["size"], params["raster"], params["channels"])
    raise SchemeMismatchError(f"no chosen-plaintext attack for the '{scheme}' scheme "
                              "(intensity, tanaka and structural have one)")


register_attack(AttackSpec(
    "chosen-plaintext", "oracle", ("public",), ("intensity", "tanaka", "structural"),
    lambda scheme, params, epochs, progress: chosen_plaintext_attack(scheme, params, False, attacker_training(epochs, progress)),
    "crafted images through the black box reveal the key's effect (intensity table, Tanaka block key, structural warp)"))
register_attack(AttackSpec(
    "chosen-plaintext+unet", "oracle", ("prior",), ("intensity",),
    lambda scheme, params, epochs, progress: chosen_plaintext_attack(scheme, params, True, attacker_training(epochs, progress)),
    "the intensity table from one query, then a U-Net over each pixel's pre-image set", trains=True))
