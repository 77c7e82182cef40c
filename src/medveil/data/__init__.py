"""Datasets: real medical images that ship inside installed packages (see ``shared/DATA.md``) and users' folders.

Names are imported on first use: ``datasets`` pulls SciPy and scikit-image and ``folder`` pulls
torch, and a command such as ``medveil samples`` or ``obfuscate`` needs neither.
"""

import importlib

_HOMES = {
    "ImageDataset": "datasets", "group_split": "datasets", "load_br35h": "datasets", "load_dataset": "datasets",
    "load_folder": "datasets", "load_image": "datasets", "near_duplicate_groups": "datasets",
    "pseudo_colour": "datasets", "resize_images": "datasets", "save_split": "datasets", "split_summary": "datasets",
    "load_mask": "datasets", "copy_samples": "samples", "package_path": "samples", "ObfuscatedFolder": "folder",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
