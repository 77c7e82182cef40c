"""The hospital's side of the service: obfuscate locally with the key, send only obfuscated images.

The key never leaves this process: uploads carry obfuscated PNGs (8-bit, or 16-bit gray for the
codes of a 12- or 16-bit key) and the key's fingerprint. Every file read for the service passes the
gate (:class:`medveil.io.gate.Gate`: checked, screened for burned-in text) before it is obfuscated;
no file or folder name is sent (members are numbered, a dataset is named by the user or by its
folder's keyed pseudonym). The client has no way to send an image it has not obfuscated itself, and
it refuses to predict with a model trained on data obfuscated under another key (the server records
each dataset's fingerprint).
"""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any, Sequence

import httpx
import numpy as np
from PIL import Image

from medveil.data import ImageDataset, load_folder, load_image, load_mask
from medveil.errors import InputError, MedveilError, SchemeMismatchError
from medveil.io.batch import walk
from medveil.io.gate import Gate
from medveil.io.image import is_supported
from medveil.keys import Key
from medveil.schemes import from_key


class ServiceError(MedveilError):
    """The server refused a request; the message is its JSON error."""


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def _zip(members: dict[str, np.ndarray]) -> bytes:
    """Return a zip of PNGs, stored (PNG is compressed already)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, image in members.items():
            archive.writestr(name, _png(image))
    return buffer.getvalue()


class Client:
    """A tenant's connection to one server, holding the hospital's key locally.

    ``burned_in_text`` is the gate's policy for text in the files it reads (``refuse``, ``mask``, ``off``).
    """

    def __init__(self, server: str, token: str, key: Key, timeout: float = 120.0, burned_in_text: str = "refuse"):
        self.key = key
        self.scheme = from_key(key)
        self.gate = Gate(self.scheme, burned_in_text)
        self.http = httpx.Client(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
                                 timeout=timeout)

    def close(self) -> None:
        """Close the HTTP connection."""
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach {self.http.base_url}: {exc}") from None
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServiceError(f"server answered {response.status_code}: {detail}")
        return response.json() if response.content else {}

    def obfuscate(self, images: np.ndarray) -> np.ndarray:
        """Return the key's obfuscation of ``images`` (which must have passed the gate: every sender here sees to it)."""
        return self.scheme(images)

    def _upload(self, members: dict[str, np.ndarray], name: str, task: str) -> dict:
        files = {"archive": ("dataset.zip", _zip(members), "application/zip")}
        return self._call("POST", "/datasets", files=files,
                          data={"fingerprint": self.key.fingerprint, "name": name, "task": task,
                                # public by Kerckhoffs: lets the server pick a model that learns the scheme's structure
                                "scheme": json.dumps({"scheme": self.key.scheme, "params": dict(self.key.params)})})

    def upload(self, dataset: ImageDataset, name: str = "") -> dict:
        """Screen (:meth:`Gate.screen`), obfuscate and upload ``dataset`` as ``CLASS/NUMBER.png``; the server's record."""
        return self._upload_classes(self.gate.screen(dataset.images), dataset, name)

    def _upload_classes(self, images: np.ndarray, dataset: ImageDataset, name: str) -> dict:
        return self._upload({f"{dataset.classes[label]}/{i:06d}.png": image
                             for i, (image, label) in enumerate(zip(self.obfuscate(images), dataset.labels))},
                            name, "classification")

    def upload_segmentation(self, images: np.ndarray, masks: np.ndarray, name: str = "") -> dict:
        """Screen and obfuscate ``images`` ``(n, S, S)`` and upload them with their ``masks``.

        Masks are uint8 class indices, not obfuscated: they are the task's labels, and they show the segmented
        shapes to the server.
        """
        return self._upload_segmentation(self.gate.screen(images), masks, name)

    def _upload_segmentation(self, images: np.ndarray, masks: np.ndarray, name: str) -> dict:
        members = {f"images/{i:06d}.png": image for i, image in enumerate(self.obfuscate(images))}
        members |= {f"masks/{i:06d}.png": mask.astype(np.uint8) for i, mask in enumerate(masks)}
        return self._upload(members, name, "segmentation")

    def upload_segmentation_folder(self, images_dir: Path, masks_dir: Path, size: int, name: str = "") -> dict:
        """Every image below ``images_dir`` with the mask at the same relative path below ``masks_dir``."""
        files = [rel for rel in walk(Path(images_dir)) if is_supported(Path(images_dir) / rel)]
        if not files:
            raise InputError(f"{images_dir}: no images")
        images = self.read_images([Path(images_dir) / rel for rel in files], size)
        masks = np.stack([load_mask(Path(masks_dir) / rel, size) for rel in files])
        return self._upload_segmentation(images, masks, name or self.gate.name(Path(images_dir).name))

    @property
    def stored_samples(self) -> bool:
        """Whether images are read at their stored bit depth (a 12- or 16-bit key) rather than as 8-bit."""
        return self.scheme.input_dtype.itemsize > 1

    def upload_folder(self, root: Path, size: int, name: str = "") -> dict:
        """Read a class-per-subfolder folder through the gate, resize, obfuscate, upload.

        The dataset is called ``name``, or by the folder's keyed pseudonym (a folder's name can hold PHI).
        """
        dataset = load_folder(root, size, stored=self.stored_samples, read=self.gate.read)  # screened at full size
        return self._upload_classes(dataset.images, dataset, name or self.gate.name(Path(root).name))

    def add_files(self, files: Sequence[Path], names: Sequence[str], label: str, size: int, dataset: str) -> dict:
        """Read ``files`` through the gate at ``size``, obfuscate them, and add them to a dataset.

        They go in as ``LABEL/NAME.png`` to this tenant's classification dataset called ``dataset`` under this
        key, which the first call creates.

        ``names`` reach the server: give keyed pseudonyms (the gateway gives each instance's). An image
        whose name the dataset holds already is skipped, so a repeated call adds nothing. Returns the
        dataset's record with ``added`` and ``already_held``.
        """
        images = self.obfuscate(self.read_images(files, size, rgb=self.scheme.channels == 3))
        members = {f"{label}/{name}.png": image for name, image in zip(names, images)}
        found = [d for d in self.datasets() if (d["name"], d["fingerprint"], d["task"])
                 == (dataset, self.key.fingerprint, "classification")]
        if not found:
            return {**self._upload(members, dataset, "classification"), "added": len(members), "already_held": 0}
        return self._call("POST", f"/datasets/{found[0]['id']}/images", data={"fingerprint": self.key.fingerprint},
                          files={"archive": ("images.zip", _zip(members), "application/zip")})

    def read_images(self, files: Sequence[Path], size: int, rgb: bool = False) -> np.ndarray:
        """Image files as :meth:`upload_folder` reads them (through the gate), ``(n, size, size[, 3])``."""
        return np.stack([load_image(f, size, rgb=rgb, stored=self.stored_samples, read=self.gate.read) for f in files])

    def train(self, dataset_id: str, epochs: int = 30, model: str | None = None) -> dict:
        """Start a training job; ``model`` defaults to cnn for classification, unet for segmentation."""
        return self._call("POST", "/jobs", json={"dataset_id": dataset_id, "epochs": epochs, "model": model})

    def datasets(self) -> list[dict]:
        """Return this tenant's datasets, oldest first, as the server records them."""
        return self._call("GET", "/datasets")

    def job(self, job_id: str) -> dict:
        """Return the server's record of training job ``job_id``."""
        return self._call("GET", f"/jobs/{job_id}")

    def wait(self, job_id: str, poll: float = 1.0, timeout: float = 3600.0) -> dict:
        """Poll until the job is done or failed."""
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] not in ("done", "failed"):
            if time.monotonic() > deadline:
                raise ServiceError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(poll)
        return job

    def delete(self, kind: str, record_id: str) -> None:
        """Delete this tenant's ``kind`` (``dataset``, ``model`` or ``job``) ``record_id`` on the server."""
        self._call("DELETE", f"/{kind}s/{record_id}")

    def model(self, model_id: str) -> dict:
        """Return the server's record of model ``model_id`` (task, size, classes, fingerprint, validation score)."""
        return self._call("GET", f"/models/{model_id}")

    def predict(self, model_id: str, images: np.ndarray) -> list[dict]:
        """Screen and obfuscate ``images`` (``(n, S, S[, 3])`` at the model's size) and get each one's class.

        The predictions come in the order of ``images``; the images are sent as ``0.png``, ``1.png``, ...
        """
        return self._predict(self.model(model_id), self.gate.screen(images))

    def predict_files(self, model_id: str, files: Sequence[Path]) -> list[dict]:
        """:meth:`predict` for image files, read through the gate at the model's size; no file name is sent."""
        record = self.model(model_id)
        return self._predict(record, self.read_images(files, record["size"], rgb=record["channels"] == 3))

    def _predict(self, record: dict, images: np.ndarray) -> list[dict]:
        model_id = record["id"]
        if record["fingerprint"] != self.key.fingerprint:
            raise SchemeMismatchError(f"model {model_id} was trained on data obfuscated with key {record['fingerprint']}, "
                                      f"not this key ({self.key.fingerprint}); its predictions would be meaningless")
        files = [("files", (f"{i}.png", _png(image), "image/png")) for i, image in enumerate(self.obfuscate(images))]
        predictions = self._call("POST", f"/models/{model_id}/predict", files=files)["predictions"]
        for p in predictions:  # segmentation models answer with label maps
            if "mask_png" in p:
                p["mask"] = np.asarray(Image.open(io.BytesIO(base64.b64decode(p.pop("mask_png")))))
        return predictions

