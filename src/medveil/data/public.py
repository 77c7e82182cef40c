"""The "no prior knowledge" attacker's images: public medical images other than the target's.

Paper NB's attacker trained on Medical MNIST, which cannot be downloaded here. In its place, from
packages installed with medveil (nothing fetched):

* nilearn's MNI152 T1 template: coronal and sagittal slices (brain MR, but not the axial view of
  the Br35H target) with enough tissue in them;
* dipy's b0 diffusion slices and nibabel's EPI volume (other MR contrasts);
* pydicom's CT and MR test images;
* scikit-image's retina fundus, microaneurysm, histology, cell and phantom images, as random crops.

Every image is converted to 8-bit (min-max per image) and resized to ``size``×``size``. In
colour (``rgb=True``) the grayscale images get three equal channels and the retina and histology
pictures keep their colour: the attacker does not know how the hospital's images were coloured.
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from medveil.data.samples import package_path
from medveil.io import read_image


def _nifti(path) -> Any:
    """Nibabel's image at ``path`` (a NIfTI: its ``dataobj`` is there, whatever nib.load's declared type)."""
    return nib.load(path)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float64)
    lo, hi = np.percentile(image, 0.5), np.percentile(image, 99.5)
    return (np.clip((image - lo) / max(hi - lo, 1e-9), 0, 1) * 255).round().astype(np.uint8)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(_to_uint8(image)).resize((size, size), Image.Resampling.BILINEAR))


def _slices(volume: np.ndarray, axis: int, min_tissue: float) -> list[np.ndarray]:
    volume = np.moveaxis(np.squeeze(volume), axis, 0)
    threshold = volume.max() * 0.1
    return [np.ascontiguousarray(np.rot90(s)) for s in volume if (s > threshold).mean() >= min_tissue]


def public_medical_images(size: int = 64, crops_per_image: int = 60, seed: int = 0, rgb: bool = False) -> np.ndarray:
    """``(n, size, size)`` uint8 public medical images, ``(n, size, size, 3)`` with ``rgb`` (see the module docstring)."""
    rng = np.random.default_rng(seed)  # crop positions, not key material
    planes: list[np.ndarray] = []
    t1 = np.asarray(_nifti(package_path("nilearn", "datasets", "data",
                                          "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).dataobj)
    for axis in (0, 1):  # sagittal, coronal
        planes += _slices(t1, axis, min_tissue=0.15)
    b0 = np.asarray(_nifti(package_path("dipy", "data", "files", "S0_10slices.nii.gz")).dataobj)
    planes += _slices(b0, 2, min_tissue=0.1)
    epi = np.asarray(_nifti(package_path("nibabel", "tests", "data", "example4d.nii.gz")).dataobj)[..., 0]
    planes += _slices(epi, 2, min_tissue=0.1)
    dicom = package_path("pydicom", "data", "test_files")
    planes += [read_image(dicom / name).pixels for name in ("CT_small.dcm", "MR_small.dcm")]
    images = [_resize(p, size) for p in planes]
    images += [np.fliplr(img) for img in images]
    if rgb:
        images = [np.repeat(img[..., None], 3, axis=-1) for img in images]

    skimage_data = package_path("skimage", "data")
    for name in ("retina.jpg", "microaneurysms.png", "ihc.png", "cell.png", "phantom.png"):
        picture = np.asarray(Image.open(skimage_data / name).convert("RGB" if rgb else "L"))
        h, w = picture.shape[:2]
        for _ in range(crops_per_image):
            side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            images.append(_resize(picture[top:top + side, left:left + side], size))
    return np.stack(images)
