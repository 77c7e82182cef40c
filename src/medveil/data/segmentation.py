"""Images with tissue masks and subject identities, for the adversarial encoder (paper PN).

:class:`SegmentationData` is the interface: ``(image, mask, subject)`` triples, 2-D images or 3-D
volumes. Users bring their own as a ``.npz`` file (:meth:`SegmentationData.load`) or, for
volumes, a NIfTI folder (:func:`medveil.data.volumes.load_nifti_folder`); the toolkit ships a
2-D simulation (below) and a 3-D one (:mod:`medveil.data.volumes`).

No brain MRI set with subject ids and tissue labels ships offline, so :func:`simulate_subjects`
makes one from nilearn's MNI152 2009a template (T1 plus grey- and white-matter probability maps):

* Labels: background 0, CSF 1, grey matter 2, white matter 3. CSF is what the template's
  intracranial region holds beyond grey and white matter: the head mask (GM + WM > 0.1, holes
  filled, closed) minus the two tissue maps. Each pixel takes the most probable class.
* A **subject** is an anatomy: an axial slice level (±5 voxels around the ventricles), a random
  rotation (±10°) and anisotropic scale (0.88–1.12), a smooth random deformation field (Gaussian-
  filtered noise, up to ~4 px at 64 px) and a T1 contrast (gamma 0.75–1.33).
* A **scan** of that subject keeps all of that and adds what differs between sessions: a small
  rigid jitter (±2°, ±1 px), a faint extra deformation (~0.6 px), a smooth multiplicative bias
  field (±12 %) and Rician noise (σ = 3 % of the range).

Images, masks and labels are resampled together (linear for the T1 and the probability maps);
images are 8-bit after a per-scan 0.5-99.5 percentile stretch. All the randomness is data
simulation from a NumPy generator, not key material.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
from scipy import ndimage

from medveil.data.samples import package_path
from medveil.errors import InputError

CLASS_NAMES = ("background", "csf", "gm", "wm")
_SLICE_LEVEL = 88  # axial voxel index of the MNI 2009a template through the lateral ventricles
_TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


@dataclass(frozen=True)
class SegmentationData:
    """Images or volumes with their masks and subjects.

    ``images`` (n, H, W) or volumes (n, D, H, W) uint8, ``masks`` of the same shape (uint8 class indices into
    ``class_names``), ``subjects`` (n,) int.
    """

    images: np.ndarray
    masks: np.ndarray
    subjects: np.ndarray
    name: str = "data"
    class_names: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self):
        images, masks, subjects = self.images, self.masks, self.subjects
        if images.ndim not in (3, 4):
            raise InputError(f"{self.name}: segmentation images must be (n, H, W) or volumes (n, D, H, W), "
                             f"got shape {images.shape}")
        if images.dtype != np.uint8:
            raise InputError(f"{self.name}: segmentation images must be uint8, got {images.dtype}")
        if masks.shape != images.shape:
            raise InputError(f"{self.name}: masks {masks.shape} do not match images {images.shape}")
        if subjects.shape != (len(images),):
            raise InputError(f"{self.name}: need one subject id per image, got {subjects.shape} for {len(images)} images")
        if len(masks) and (masks.min() < 0 or masks.max() >= len(self.class_names)):
            raise InputError(f"{self.name}: mask values must lie in [0, {len(self.class_names)})")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, ...]:
        """One image's shape: ``(H, W)``, or ``(D, H, W)`` for volumes."""
        return self.images.shape[1:]

    @property
    def dims(self) -> int:
        """2 for images, 3 for volumes."""
        return self.images.ndim - 1

    def subset(self, selection: np.ndarray) -> "SegmentationData":
        """Return the volumes or slices at ``selection`` (indices or a boolean mask), with their masks and subjects."""
        return SegmentationData(self.images[selection], self.masks[selection], self.subjects[selection],
                                self.name, self.class_names)

    def split_by_subject(self, fractions: tuple[float, float] = (0.7, 0.3), seed: int = 0) -> tuple["SegmentationData", ...]:
        """Disjoint subsets by subject (no subject in two of them), in the proportions given."""
        ids = np.unique(self.subjects)
        ids = ids[np.random.default_rng(seed).permutation(len(ids))]
        bounds = np.round(np.cumsum((0,) + tuple(fractions)) / sum(fractions) * len(ids)).astype(int)
        return tuple(self.subset(np.isin(self.subjects, ids[a:b])) for a, b in zip(bounds[:-1], bounds[1:]))

    def save(self, path: str | Path) -> None:
        """Write the set to ``path`` as a compressed ``.npz`` (images, masks, subjects, class names)."""
        np.savez_compressed(path, images=self.images, masks=self.masks, subjects=self.subjects,
                            class_names=np.array(self.class_names))

    @classmethod
    def load(cls, path: str | Path) -> "SegmentationData":
        """Return the triples of a ``.npz`` file.

        It holds ``images`` (n, H, W) or (n, D, H, W) uint8, ``masks`` and ``subjects`` (and optionally
        ``class_names``).
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .npz file ({exc})") from None
        missing = {"images", "masks", "subjects"} - set(arrays)
        if missing:
            raise InputError(f"{path}: missing arrays {', '.join(sorted(missing))}")
        names = tuple(str(n) for n in arrays.get("class_names", CLASS_NAMES))
        return cls(arrays["images"], arrays["masks"].astype(np.uint8), arrays["subjects"].astype(np.int64), path.stem, names)


def subject_pairs(subjects: np.ndarray, seed: int = 0) -> np.ndarray:
    """Balanced pairs ``(k, 3)`` of ``(i, j, same)``: every same-subject pair and as many different-subject ones.

    The different-subject pairs are drawn at random (``seed``); ``same`` is 1 or 0.
    """
    rng = np.random.default_rng(seed)
    n = len(subjects)
    i, j = np.triu_indices(n, k=1)
    same = subjects[i] == subjects[j]
    positives = np.flatnonzero(same)
    negatives = rng.choice(np.flatnonzero(~same), size=min(len(positives), int((~same).sum())), replace=False)
    chosen = np.concatenate([positives, negatives])
    return np.stack([i[chosen], j[chosen], same[chosen].astype(np.int64)], axis=1)


def template_volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nilearn's MNI152 2009a T1, grey- and white-matter maps ``(197, 233, 189)`` at 1 mm, float32 as stored.

    Callers scale them over the part they use (the slice simulation over its slices only).
    """
    def volume(kind: str) -> np.ndarray:
        path = package_path("nilearn", "datasets", "data", _TEMPLATE.format(kind))
        return np.asarray(cast(Any, nib.load(path)).dataobj, dtype=np.float32)

    return volume("t1"), volume("gm"), volume("wm")


def intracranial(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Return the head mask of the tissue maps (GM + WM > 0.1, holes filled, closed), slice by slice along the last axis."""
    planes = np.moveaxis(gm + wm, -1, 0)
    mask = np.stack([ndimage.binary_closing(ndimage.binary_fill_holes(s > 0.1), iterations=3) for s in planes])
    return np.moveaxis(mask, 0, -1)


def _template_slices(levels: range) -> tuple[np.ndarray, np.ndarray]:
    """T1 ``(L, X, Y)`` in [0, 1] and class probabilities ``(L, 4, X, Y)`` of the template's axial ``levels``."""
    t1, gm, wm = (v[:, :, list(levels)].transpose(2, 0, 1) for v in template_volumes())
    t1, gm, wm = t1 / t1.max(), gm / gm.max(), wm / wm.max()
    head = intracranial(gm.transpose(1, 2, 0), wm.transpose(1, 2, 0)).transpose(2, 0, 1)
    csf = np.clip(head - gm - wm, 0, 1)
    background = 1.0 - head
    return t1, np.stack([background, csf, gm, wm], axis=1)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float, sigma: float) -> np.ndarray:
    """Return a ``(len(shape), *shape)`` displacement field whose largest component is about ``amplitude`` pixels."""
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in shape])
    return field * (amplitude / max(np.abs(field).max(), 1e-9))


def _rotation_scale(angle_deg: float, scale: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.diag(scale)


def simulate_subjects(subjects: int = 60, scans: int = 3, size: int = 64, seed: int = 0) -> SegmentationData:
    """Return simulated brain MR slices (see the module docstring): ``subjects × scans`` triples at ``size``×``size``."""
    if subjects < 2 or scans < 2:
        raise InputError(f"re-identification needs at least 2 subjects with 2 scans each, got {subjects} × {scans}")
    rng = np.random.default_rng(seed)
    levels = range(_SLICE_LEVEL - 5, _SLICE_LEVEL + 6)
    t1, probabilities = _template_slices(levels)
    rows, cols = np.nonzero(probabilities[:, 0].min(axis=0) < 0.5)  # the head across all levels
    centre = np.array([(rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2])
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) * 1.08 / size  # template voxels per output pixel
    grid = (np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij")) - (size - 1) / 2).reshape(2, -1)

    images, masks, ids = [], [], []
    for subject in range(subjects):
        level = int(rng.integers(len(levels)))
        anatomy = _rotation_scale(rng.uniform(-10, 10), tuple(rng.uniform(0.88, 1.12, 2)))
        warp = smooth_field(rng, (size, size), rng.uniform(2.0, 4.0), size / 8).reshape(2, -1)
        gamma = float(np.exp(rng.uniform(np.log(0.75), np.log(1.33))))
        for _ in range(scans):
            jitter = _rotation_scale(rng.uniform(-2, 2), (1.0, 1.0))
            points = jitter @ anatomy @ (grid + warp + smooth_field(rng, (size, size), 0.6, size / 8).reshape(2, -1))
            points = points + rng.uniform(-1, 1, (2, 1))
            coords = points * extent + centre[:, None]
            sample = lambda plane: ndimage.map_coordinates(plane, coords, order=1, mode="constant").reshape(size, size)
            image = sample(t1[level]) ** gamma
            bias = np.exp(smooth_field(rng, (size, size), np.log(1.12), size / 3))[0]
            noisy = np.hypot(image * bias + rng.normal(0, 0.03, image.shape), rng.normal(0, 0.03, image.shape))
            lo, hi = np.percentile(noisy, (0.5, 99.5))
            image = (np.clip((noisy - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
            mask = np.argmax([sample(p) for p in probabilities[level]], axis=0).astype(np.uint8)
            images.append(np.rot90(image))  # anterior up, as radiologists view axial slices
            masks.append(np.rot90(mask))
            ids.append(subject)
    return SegmentationData(np.stack(images), np.stack(masks), np.array(ids), f"mni152-sim{size}")
