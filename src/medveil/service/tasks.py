"""What the service learns.

A registry of tasks, each saying how its archives are laid out, how its models train, load and answer.

- ``classification``: ``CLASS/NAME.png`` in two class folders (or one, to be appended to); a class
  per image; the server models of :mod:`medveil.nn` (``cnn`` by default); the validation accuracy.

- ``segmentation``: ``images/NAME.png`` with ``masks/NAME.png`` beside each (8-bit class indices
  below :data:`MAX_MASK_CLASSES`); a label map per image; paper PN's U-Net; the validation Dice.

The server and its archive reader ask the task instead of branching on its name; a plugin adds a
task through the ``medveil.service_tasks`` entry-point group.
"""

from __future__ import annotations

import base64
import io
from typing import Callable

import numpy as np
from typing_extensions import override

from medveil.errors import InputError
from medveil.plugins import Registry
from medveil.service.limits import http_error

MAX_MASK_CLASSES = 16


class Task:
    """One kind of dataset and model. Subclasses set the attributes and implement the methods."""

    name: str
    score: str  # the validation score's name in a model's record
    entries_per_image: int  # archive members per image (an image and its mask: 2)
    grayscale_only: bool = False

    def models(self) -> tuple[str, list[str]]:
        """Return the default model and every model a job may train."""
        raise NotImplementedError

    def check_model(self, model: str, dataset: dict) -> None:
        """Refuse (HTTP 422) a model this dataset cannot train."""
        default, choices = self.models()
        if model not in choices:
            raise http_error(422, f"a {self.name} job trains one of {', '.join(choices)}, not {model!r}")

    def check_folders(self, folders: list[str]) -> None:
        """Refuse (HTTP 400) an archive whose top-level folders are not this task's layout."""
        raise NotImplementedError

    def merge(self, held: list[str], labels: np.ndarray, classes: list[str]) -> tuple[np.ndarray, list[str]]:
        """Labels and classes of images appended to a dataset whose classes are ``held``.

        The labels renumbered into the merged class list (HTTP 400 if the dataset cannot hold them).
        """
        raise NotImplementedError

    def is_image(self, folder: str) -> bool:
        """Whether members of ``folder`` are the images (the rest are labels)."""
        return True

    def check_labels(self, layouts: dict, names: list[str], shape: tuple) -> None:
        """Refuse (HTTP 400), from the members' headers alone, labels that do not fit the images."""

    def labels(self, folders: list[str], image_folders: list[str], names: list[str], shape: tuple,
               decode: Callable[[list[tuple[str, str]], tuple, np.dtype], np.ndarray]) -> tuple[np.ndarray, list[str]]:
        """Return the images' labels (archive order) and the class names.

        ``decode(members, shape, dtype)`` decodes archive members (``(folder, name)``) whose headers
        :meth:`check_labels` passed.
        """
        raise NotImplementedError

    def train(self, images: np.ndarray, labels: np.ndarray, dataset: dict, job: dict, config):
        """``(model, result)`` trained on a stored dataset."""
        raise NotImplementedError

    def build(self, record: dict):
        """Return an untrained network of a stored model's kind, to load its weights into."""
        raise NotImplementedError

    def predictions(self, record: dict, net, images: np.ndarray, names: list[str]) -> list[dict]:
        """One answer per image of a predict request."""
        raise NotImplementedError


class Classification(Task):
    """Two class folders, a class per image, the server models of :mod:`medveil.nn`."""

    name, score, entries_per_image = "classification", "val_accuracy", 1

    @override
    def models(self) -> tuple[str, list[str]]:
        from medveil.nn import available_models

        return "cnn", available_models()

    @override
    def check_model(self, model: str, dataset: dict) -> None:
        from medveil.nn import model_spec

        super().check_model(model, dataset)
        if len(dataset["classes"]) != 2:
            raise http_error(422, f"binary classification trains on two classes; this dataset holds "
                                  f"{len(dataset['classes'])} ({', '.join(dataset['classes'])}): append images of the "
                                  "other class first")
        if model_spec(model).uses_scheme and not dataset["scheme"]:
            raise http_error(422, f"{model} learns the obfuscation's structure from the key's public scheme and "
                                  "parameters, which this dataset was uploaded without (medveil client upload sends them)")

    @override
    def check_folders(self, folders: list[str]) -> None:
        if not 1 <= len(folders) <= 2:
            raise http_error(400, f"binary classification needs one or two class folders, got {len(folders)}")

    @override
    def merge(self, held, labels, classes):
        merged = held + [c for c in classes if c not in held]
        if len(merged) > 2:
            raise http_error(400, f"binary classification: the dataset holds {', '.join(held)}; "
                                  f"cannot add {', '.join(c for c in classes if c not in held)}")
        return np.array([merged.index(classes[i]) for i in labels], np.int64), merged

    @override
    def labels(self, folders, image_folders, names, shape, decode):
        return np.array([folders.index(folder) for folder in image_folders], np.int64), folders

    @override
    def train(self, images, labels, dataset, job, config):
        from medveil.training.classification import train_on_images

        return train_on_images(images, labels, job["model"], config, **(dataset["scheme"] or {}))  # scheme=, params=

    @override
    def build(self, record):
        from medveil.nn import build_classifier

        return build_classifier(record["model"], record["size"], in_channels=record["channels"],
                                **(record["scheme"] or {}))

    @override
    def predictions(self, record, net, images, names):
        from medveil.training.classification import model_tensors, predict_probabilities

        probabilities, _ = predict_probabilities(net, model_tensors(record["model"], images, np.zeros(len(images))))
        return [{"file": name, "class": record["classes"][int(p >= 0.5)], "probability": float(p)}
                for name, p in zip(names, probabilities)]


class Segmentation(Task):
    """Images with masks of class indices, paper PN's U-Net, the validation Dice."""

    name, score, entries_per_image, grayscale_only = "segmentation", "val_dice", 2, True

    @override
    def models(self) -> tuple[str, list[str]]:
        from medveil.training.segmentation import SEGMENTER

        return SEGMENTER, [SEGMENTER]

    @override
    def check_folders(self, folders: list[str]) -> None:
        if folders != ["images", "masks"]:
            raise http_error(400, f"a segmentation archive holds images/ and masks/, got {', '.join(folders)}")

    @override
    def is_image(self, folder: str) -> bool:
        return folder == "images"

    @override
    def check_labels(self, layouts, names, shape):
        if sorted(name for folder, name in layouts if folder == "masks") != sorted(names):
            raise http_error(400, "every image needs a mask of the same name under masks/, and every mask an image")
        if any(layouts["masks", name] != (shape, np.dtype(np.uint8)) for name in names):
            raise http_error(400, f"masks must be 8-bit grayscale PNGs of the images' size {shape}")

    @override
    def labels(self, folders, image_folders, names, shape, decode):
        masks = decode([("masks", name) for name in names], shape, np.dtype(np.uint8))
        classes = int(masks.max()) + 1
        if classes > MAX_MASK_CLASSES:
            raise http_error(400, f"masks hold class {classes - 1}; at most {MAX_MASK_CLASSES} classes (0 = background)")
        return masks, [str(c) for c in range(max(classes, 2))]

    @override
    def merge(self, held, labels, classes):
        return labels, [str(c) for c in range(max(len(held), len(classes)))]

    @override
    def train(self, images, labels, dataset, job, config):
        from medveil.training.segmentation import train_segmentation_on_images

        return train_segmentation_on_images(images, labels, len(dataset["classes"]), config)

    @override
    def build(self, record):
        from medveil.training.segmentation import build_segmenter

        return build_segmenter(len(record["classes"]))

    @override
    def predictions(self, record, net, images, names):
        from medveil.training.segmentation import predict_masks

        return [{"file": name, "mask_png": base64.b64encode(_png(m)).decode(),
                 "pixels": np.bincount(m.ravel(), minlength=len(record["classes"])).tolist()}
                for name, m in zip(names, predict_masks(net, images))]


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


TASKS: Registry[Task] = Registry("service task", "medveil.service_tasks", missing=InputError)
TASKS.add("classification", Classification())
TASKS.add("segmentation", Segmentation())
