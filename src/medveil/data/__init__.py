"""Datasets: real medical images that ship inside installed packages (see ``shared/DATA.md``) and users' folders."""

from medveil.data.datasets import (
    ImageDataset,
    group_split,
    load_br35h,
    load_dataset,
    load_folder,
    load_image,
    near_duplicate_groups,
    pseudo_colour,
    resize_images,
    save_split,
    split_summary,
)
from medveil.data.samples import copy_samples, package_path

__all__ = [
    "ImageDataset",
    "copy_samples",
    "group_split",
    "load_br35h",
    "load_dataset",
    "load_folder",
    "load_image",
    "near_duplicate_groups",
    "package_path",
    "pseudo_colour",
    "resize_images",
    "save_split",
    "split_summary",
]
