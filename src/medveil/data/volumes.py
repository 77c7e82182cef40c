"""3-D brain volumes with tissue labels and subject ids (paper PN's setting), simulated or from NIfTI.

:func:`simulate_volumes` makes :class:`~medveil.data.segmentation.SegmentationData` volumes
``(n, S, S, S)`` from nilearn's MNI152 2009a template (brain-extracted T1, grey- and white-matter
maps at 1 mm), resampled isotropically so the head fills the cube (``S = 48`` gives about 4.2 mm
voxels; the template holds no skull or scalp, so those are drawn, see below). Axes are the
template's: x left→right, y posterior→anterior, z inferior→superior.

Labels, paper PN's five tissue classes plus background:

* ``wm`` and ``gm``: the template's maps; ``csf``: the intracranial region (GM + WM > 0.1,
  filled and closed slice by slice) beyond them, each voxel taking its most probable class;
* ``nuclei`` and the internal/external CSF split are **an honest merge, not an atlas**: the
  template ships no subcortical or ventricle labels, so ``nuclei`` are grey-matter voxels at least
  25 mm inside the intracranial surface and within 30 mm of the midline (caudate, putamen,
  thalamus; deep insular cortex is excluded by the midline bound), and ``csf-internal`` is CSF at
  least 15 mm inside that surface (the ventricles), ``csf-external`` the rest.

Identity lives in up to two places, each a switch (``identity``):

* ``anatomy``: per-subject rotation (±8°), anisotropic scale (0.88-1.12) and a smooth deformation
  (up to ~3.5 voxels) of the whole head: the tissue labels then identify the subject too;
* ``extracerebral``: what the segmentation does not need: skull (dark) and scalp (bright) layers
  drawn around the intracranial surface with per-subject thickness (skull 3-9 mm, scalp 3-8 mm,
  modulated by a smooth per-subject field, ±40 %), scalp brightness, a face-like profile (a nose
  whose size and position are the subject's), and the subject's scanner: a fixed bias field
  (±15 %) and T1 contrast (gamma 0.75-1.33).

Without a source, every subject shares the template's value of it (the mean head and no nose
variation, or the unwarped brain). A **scan** then adds what differs between sessions: a small
rigid jitter (±1°, ±0.5 voxel), a faint deformation (~0.3 voxel), a per-scan bias field (±8 %) and
Rician noise (σ = 3 % of the range); volumes are 8-bit after a per-scan 0.5-99.5 percentile
stretch. All randomness is data simulation, not key material.

:func:`load_nifti_folder` reads the user's own volumes; :func:`save_nifti_folder` writes the same
layout (so a simulation round-trips through NIfTI with its affine).
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from medveil.data.segmentation import SegmentationData, intracranial, smooth_field, template_volumes
from medveil.errors import InputError

CLASS_NAMES_3D = ("background", "wm", "gm", "nuclei", "csf-internal", "csf-external")
IDENTITY_SOURCES = ("anatomy", "extracerebral")
_SKULL, _SCALP = 0.08, 0.85  # T1 intensities relative to white matter


@lru_cache(maxsize=1)
def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the template's T1, GM and WM maps and its intracranial mask."""
    t1, gm, wm = (v / v.max() for v in template_volumes())
    return t1, gm, wm, intracranial(gm, wm)


@lru_cache(maxsize=2)
def _template_labels(spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """T1 ``(X, Y, Z)`` and class probabilities ``(6, X, Y, Z)``, smoothed for ``spacing`` mm."""
    t1, gm, wm, inside = _template()
    depth = ndimage.distance_transform_edt(inside)  # mm from the intracranial surface
    csf = np.clip(inside - gm - wm, 0, 1)
    midline = np.abs(np.arange(inside.shape[0]) - (inside.shape[0] - 1) / 2)[:, None, None]
    deep_gm = (depth >= 25) & (midline <= 30)
    internal = depth >= 15
    probabilities = np.stack([1.0 - inside, wm, gm * ~deep_gm, gm * deep_gm, csf * internal, csf * ~internal])
    sigma = spacing / 2.355  # a Gaussian of one output voxel's FWHM, against aliasing
    smooth = lambda v: ndimage.gaussian_filter(v.astype(np.float32), sigma)
    return smooth(t1), np.stack([smooth(p) for p in probabilities])


def _rotation_scale_3d(rng: np.random.Generator, degrees: float, scale: tuple[float, float]) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-degrees, degrees, 3))
    matrix = np.eye(3)
    for axis, a in enumerate(angles):
        i, j = [k for k in range(3) if k != axis]
        turn = np.eye(3)
        turn[[i, i, j, j], [i, j, i, j]] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
        matrix = matrix @ turn
    return matrix @ np.diag(rng.uniform(*scale, 3))


def simulate_volumes(subjects: int = 40, scans: int = 2, size: int = 48, identity: tuple[str, ...] = IDENTITY_SOURCES,
                     seed: int = 0, contrast: float = 1.0, noise: float = 0.03) -> SegmentationData:
    """Return simulated head MR volumes (see the module docstring): ``subjects × scans`` triples ``(size, size, size)``.

    ``contrast`` (an exponent on every volume's intensities) and ``noise`` (Rician σ, as a share of
    the range) describe the acquisition protocol; other values simulate another site's scanner.
    """
    if subjects < 2 or scans < 2:
        raise InputError(f"re-identification needs at least 2 subjects with 2 scans each, got {subjects} × {scans}")
    unknown = set(identity) - set(IDENTITY_SOURCES)
    if unknown:
        raise InputError(f"unknown identity source(s) {', '.join(sorted(unknown))}; choose from {', '.join(IDENTITY_SOURCES)}")
    inside = _template()[3]
    corners = np.array([np.flatnonzero(inside.any(axis=tuple(k for k in range(3) if k != a)))[[0, -1]] for a in range(3)])
    centre = corners.mean(axis=1)
    spacing = float((corners[:, 1] - corners[:, 0]).max() + 2 * 25) / size  # room for skull, scalp and nose
    t1, probabilities = _template_labels(round(spacing, 1))
    grid = (np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij")) - (size - 1) / 2).reshape(3, -1)
    rng = np.random.default_rng(seed)
    anatomy, extracerebral = "anatomy" in identity, "extracerebral" in identity
    mean_head = _Head(rng, size, spacing, vary=False)

    images, masks, ids = [], [], []
    for subject in range(subjects):
        shape = _rotation_scale_3d(rng, 8, (0.88, 1.12)) if anatomy else np.eye(3)
        warp = (smooth_field(rng, (size,) * 3, rng.uniform(2.0, 3.5), size / 8).reshape(3, -1) if anatomy else 0.0)
        head = _Head(rng, size, spacing, vary=True) if extracerebral else mean_head
        for _ in range(scans):
            jitter = _rotation_scale_3d(rng, 1, (1.0, 1.0))
            points = jitter @ shape @ (grid + warp + smooth_field(rng, (size,) * 3, 0.3, size / 8).reshape(3, -1))
            coords = (points + rng.uniform(-0.5, 0.5, (3, 1))) * spacing + centre[:, None]
            sample = lambda v: ndimage.map_coordinates(v, coords, order=1, mode="constant").reshape((size,) * 3)
            labels = np.argmax([sample(p) for p in probabilities], axis=0).astype(np.uint8)
            image = head.draw(sample(t1), labels != 0)
            bias = np.exp(smooth_field(rng, (size,) * 3, np.log(1.08), size / 3))[0]
            noisy = np.hypot((image * bias) ** contrast + rng.normal(0, noise, image.shape), rng.normal(0, noise, image.shape))
            lo, hi = np.percentile(noisy, (0.5, 99.5))
            images.append((np.clip((noisy - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8))
            masks.append(labels)
            ids.append(subject)
    name = f"mni152-vol{size}-" + ("+".join(identity) or "none") + ("" if (contrast, noise) == (1.0, 0.03) else "-site2")
    return SegmentationData(np.stack(images), np.stack(masks), np.array(ids), name, CLASS_NAMES_3D)


class _Head:
    """One subject's extra-cerebral features and scanner (or the population's mean, ``vary=False``)."""

    def __init__(self, rng: np.random.Generator, size: int, spacing: float, vary: bool):
        pick = (lambda lo, hi: rng.uniform(lo, hi)) if vary else (lambda lo, hi: (lo + hi) / 2)
        self.spacing = spacing
        self.skull_mm, self.scalp_mm, self.scalp = pick(3, 9), pick(3, 8), _SCALP * pick(0.8, 1.15)
        modulation = smooth_field(rng, (size,) * 3, 0.4, size / 6)[0] if vary else 0.0
        self.modulation = 1 + modulation
        self.nose = np.array([pick(-2, 2), pick(8, 16), pick(-6, 6)]) / spacing, pick(6, 14) / spacing
        self.bias = np.exp(smooth_field(rng, (size,) * 3, np.log(1.15), size / 3)[0]) if vary else 1.0
        self.gamma = float(np.exp(pick(np.log(0.75), np.log(1.33))))

    def draw(self, brain: np.ndarray, inside: np.ndarray) -> np.ndarray:
        """Return the head: ``brain`` T1 inside the intracranial mask ``inside``, skull, scalp and nose around it."""
        depth_out = ndimage.distance_transform_edt(~inside) * self.spacing  # mm outside the brain
        skull = self.skull_mm * self.modulation
        scalp = skull + self.scalp_mm * self.modulation
        image = np.where(inside, brain, 0.0)
        image = np.where(~inside & (depth_out <= skull), _SKULL, image)
        image = np.where(~inside & (depth_out > skull) & (depth_out <= scalp), self.scalp, image)
        image = np.maximum(image, self.scalp * self._nose(inside, np.asarray(scalp / self.spacing)))
        return (image * self.bias) ** self.gamma

    def _nose(self, inside: np.ndarray, scalp_voxels: np.ndarray) -> np.ndarray:
        """Return a soft ellipsoid in front of the lower forehead: the face-like profile."""
        x, y, z = np.nonzero(inside)
        level = np.quantile(z, 0.3)
        front = y[np.abs(z - level) <= 1].max() if (np.abs(z - level) <= 1).any() else y.max()
        offset, length = self.nose
        centre = np.array([(x.min() + x.max()) / 2 + offset[0], front + offset[1], level + offset[2]])
        grid = np.indices(inside.shape, dtype=np.float32)
        radii = np.array([length / 3, length / 2, length / 2])[:, None, None, None]
        distance = np.sqrt((((grid - centre[:, None, None, None]) / radii) ** 2).sum(axis=0))
        return np.clip(1.5 - distance, 0, 1) * (1 - inside)


THREE_CLASSES = ("background", "wm", "gm", "csf")
# paper PN, section 4.3.3: "we merged the CSF int. and CSF ext. outputs into a single CSF class, and
# the GM and nuclei outputs into a single GM class"
_MERGED = {"nuclei": "gm", "csf-internal": "csf", "csf-external": "csf"}


def merge_classes(masks: np.ndarray, class_names: tuple[str, ...], into: tuple[str, ...] = THREE_CLASSES) -> np.ndarray:
    """Label maps over ``class_names`` relabelled into ``into`` (nuclei into GM, both CSFs into CSF), same shape."""
    table = np.array([into.index(_MERGED.get(name, name)) for name in class_names], np.uint8)
    return table[masks]


def rician_noise(volumes: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``volumes`` with Rician noise at ``snr_db``: σ = mean head intensity / 10^(SNR/20) (paper PN, Table 5)."""
    x = volumes.astype(np.float64)
    sigma = x[x > 0.1 * x.max()].mean() / 10 ** (snr_db / 20)
    noisy = np.hypot(x + rng.normal(0, sigma, x.shape), rng.normal(0, sigma, x.shape))
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def lower_resolution(volumes: np.ndarray, factor: int = 2) -> np.ndarray:
    """uint8 ``(n, D, H, W)`` volumes averaged over ``factor``³ blocks and brought back to their grid (nearest)."""
    n, *shape = volumes.shape
    blocks = volumes.reshape(n, *[d for s in shape for d in (s // factor, factor)]).mean(axis=(2, 4, 6))
    coarse = blocks.round().astype(np.uint8)
    for axis in (1, 2, 3):
        coarse = np.repeat(coarse, factor, axis=axis)
    return coarse


def simulate_other_site(subjects: int, size: int, identity: tuple[str, ...] = IDENTITY_SOURCES,
                        seed: int = 1) -> SegmentationData:
    """Paper PN's transfer set.

    New subjects from another site's scanner (contrast exponent 1.5, noise 5 %), labelled with three classes
    (:data:`THREE_CLASSES`), ``subjects × 2`` volumes.
    """
    site = simulate_volumes(subjects, 2, size, identity, seed=seed, contrast=1.5, noise=0.05)
    return SegmentationData(site.images, merge_classes(site.masks, site.class_names), site.subjects, site.name,
                            THREE_CLASSES)


def save_nifti_folder(data: SegmentationData, folder: str | Path, spacing: float = 1.0) -> Path:
    """Write ``data``'s volumes as ``images/<k>.nii.gz``, ``labels/<k>.nii.gz`` and ``subjects.csv`` under ``folder``."""
    import nibabel as nib

    if data.dims != 3:
        raise InputError(f"{data.name}: only volumes (n, D, H, W) go to NIfTI, got images of shape {data.shape}")
    folder = Path(folder)
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    rows = []
    for k, (image, mask, subject) in enumerate(zip(data.images, data.masks, data.subjects)):
        name = f"{k:04d}.nii.gz"
        nib.Nifti1Image(image, affine).to_filename(folder / "images" / name)
        nib.Nifti1Image(mask, affine).to_filename(folder / "labels" / name)
        rows.append({"file": name, "subject": int(subject)})
    with open(folder / "subjects.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["file", "subject"])
        writer.writeheader()
        writer.writerows(rows)
    (folder / "classes.txt").write_text("\n".join(data.class_names) + "\n")
    return folder


def load_nifti_folder(folder: str | Path) -> tuple[SegmentationData, list[np.ndarray]]:
    """Volumes from ``folder``.

    ``images/*.nii[.gz]`` (uint8), ``labels/`` (same names, class indices), ``subjects.csv`` (columns ``file``,
    ``subject``) and optionally ``classes.txt`` (one class name per line).

    All volumes must share one shape. Returns the triples and each volume's affine, in CSV order.
    """
    import nibabel as nib

    from medveil.io.nifti import read_nifti

    folder = Path(folder)
    table = folder / "subjects.csv"
    if not table.is_file():
        raise InputError(f"{folder}: no subjects.csv (columns file, subject)")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "subject"} <= set(rows[0]):
        raise InputError(f"{table}: needs columns file and subject and at least one row")
    images, masks, affines = [], [], []
    for row in rows:
        loaded = []
        for sub in ("images", "labels"):
            path = folder / sub / row["file"]
            try:
                volume = read_nifti(path)
            except (OSError, ValueError, InputError, nib.filebasedimages.ImageFileError) as exc:
                raise InputError(f"{path}: not a readable NIfTI volume ({exc})") from None
            loaded.append((volume.pixels, volume.meta.affine))
            if loaded[-1][0].ndim != 3:
                raise InputError(f"{path}: expected a 3-D volume, got shape {loaded[-1][0].shape}")
        (image, affine), (mask, _) = loaded
        if image.dtype != np.uint8:
            raise InputError(f"{folder / 'images' / row['file']}: volumes must be uint8, got {image.dtype}")
        images.append(image)
        masks.append(mask.astype(np.uint8))
        affines.append(affine)
    if len({v.shape for v in images}) > 1:
        raise InputError(f"{folder}: volumes differ in shape ({', '.join(sorted({str(v.shape) for v in images}))})")
    try:
        subjects = np.array([int(row["subject"]) for row in rows])
    except ValueError:
        raise InputError(f"{table}: subject ids must be integers") from None
    names_file = folder / "classes.txt"
    names = tuple(names_file.read_text().split()) if names_file.is_file() else CLASS_NAMES_3D
    return SegmentationData(np.stack(images), np.stack(masks), subjects, folder.name, names), affines
