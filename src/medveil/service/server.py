"""The ML-as-a-service server: trains and predicts on obfuscated images it cannot read.

``create_app(data_dir)`` returns the FastAPI application (OpenAPI at ``/docs``). A hospital
uploads a labelled archive of obfuscated PNGs with its key's fingerprint (never the key), starts a
training job (run by one background worker with the one training loop), polls it, and sends
obfuscated images for prediction. ``GET /health`` and the API's description (``/docs``, ``/redoc``,
``/openapi.json``) are open; everything else needs a bearer token (``medveil token create``),
checked before the request's body is read, and a tenant sees only its own datasets, jobs and models
— another tenant's identifiers answer 404, exactly like identifiers that do not exist. Memory per
request is bounded: archives are read member by member with size caps, images are checked from
their PNG headers (size, mode, decoded bytes, the tenant's storage quota) before any is decoded.

Jobs survive restarts: a job that was queued or running when the server stopped is queued again at
start-up and resumes from its last epoch's checkpoint.
"""


import base64
import io
import json
import queue
import struct
import threading
import zipfile
import zlib
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Annotated, Optional

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from PIL import Image
from pydantic import BaseModel, Field

from medveil.io.image import first_line
from medveil.service.store import Store

ZIP_TYPES = {"application/zip", "application/x-zip-compressed"}
# What anyone may read: the API's own description, no data.
OPEN_PATHS = {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
DOCS_ASSETS = "/docs-assets"  # Swagger UI's and ReDoc's scripts and styles: public, like the pages
# Exceptions zipfile raises on members it cannot read: encrypted (RuntimeError), unknown compression
# (NotImplementedError), bad CRC (BadZipFile), corrupt deflate (zlib.error), cut short (EOFError).
_MEMBER_ERRORS = (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError, OSError, ValueError)


@dataclass(frozen=True)
class Limits:
    """What one request may carry, and what one tenant may keep.

    Sizes of decoded images are counted in bytes of 8-bit samples (H x W x channels), from each
    PNG's header before anything is decoded.
    """

    max_request_bytes: int = 256 * 1024**2
    max_images: int = 20_000
    max_side: int = 1024
    max_predict_images: int = 256
    max_decoded_bytes: int = 512 * 1024**2  # one request's images once decoded
    max_tenant_bytes: int = 4 * 1024**3  # every dataset a tenant keeps, decoded

    @property
    def max_member_bytes(self) -> int:
        """The largest PNG the side limit allows (RGB, stored uncompressed), plus room for metadata."""
        return 3 * self.max_side**2 + self.max_side + 2**20


class JobRequest(BaseModel):
    dataset_id: str
    epochs: int = Field(30, ge=1, le=500)
    model: Optional[str] = Field(None, pattern="^[a-z0-9][a-z0-9_-]{0,39}$",
                                 description="classification: a registered model (default cnn; resnet or a plugin's); "
                                             "segmentation: unet (the default)")


class Problem(BaseModel):
    detail: str


_STATUS_TEXT = {400: "malformed input", 401: "missing or invalid token", 404: "no such record (or another tenant's)",
                411: "Content-Length is required", 413: "over a size, count or quota limit",
                415: "unsupported content type", 422: "invalid request fields"}


def _responses(*codes: int) -> dict:
    """OpenAPI entries for the error statuses a route really answers."""
    return {code: {"model": Problem, "description": _STATUS_TEXT[code]} for code in codes}


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


# PNG modes an upload may use: 8-bit gray or colour codes, or 16-bit gray codes (12- and 16-bit CT/MR keys).
PNG_MODES = {"L": np.uint8, "RGB": np.uint8, "I;16": np.uint16}


def open_png(fileobj: IO[bytes], name: str, max_side: int) -> Image.Image:
    """A PNG opened from its header only (nothing decoded yet); 400 or 413 for anything else."""
    try:
        image = Image.open(fileobj)
        if image.format != "PNG":
            raise ValueError
    except Exception:
        raise _error(400, f"{name}: not a PNG image") from None
    if max(image.size) > max_side:
        raise _error(413, f"{name}: {image.size[0]}x{image.size[1]} exceeds the {max_side}-pixel limit")
    if image.mode not in PNG_MODES:
        raise _error(400, f"{name}: PNG mode {image.mode}; obfuscated images are 8-bit L or RGB, or 16-bit gray")
    return image


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _shape(image: Image.Image) -> tuple[int, ...]:
    return (image.size[1], image.size[0]) + ((3,) if image.mode == "RGB" else ())


def _layout(image: Image.Image) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and sample type the PNG decodes to."""
    return _shape(image), np.dtype(PNG_MODES[image.mode])


def decode_png(image: Image.Image, name: str) -> np.ndarray:
    """The pixels of a PNG from :func:`open_png`: uint8 ``(H, W)`` or ``(H, W, 3)``, or uint16 ``(H, W)``."""
    try:
        return np.asarray(image)
    except Exception as exc:
        raise _error(400, f"{name}: corrupt PNG ({first_line(exc)})") from None


def _safe_member(name: str) -> tuple[str, str]:
    """``(class, file)`` of an archive member ``class/file.png``; 400 for anything that could escape."""
    path = PurePosixPath(name)
    if "\\" in name or path.is_absolute() or ".." in path.parts or ":" in name or len(path.parts) != 2:
        raise _error(400, f"unsafe or unexpected path in archive: {name!r} (expected CLASS/FILE.png)")
    return path.parts[0], path.parts[1]


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, cap: int) -> bytes:
    """A member's bytes, read no further than ``cap`` whatever its header claims; 400 if unreadable."""
    try:
        with archive.open(member) as fh:
            data = fh.read(cap + 1)
    except _MEMBER_ERRORS as exc:
        raise _error(400, f"{member.filename}: unreadable archive member ({first_line(exc)})") from None
    if len(data) > cap:
        raise _error(413, f"{member.filename}: expands beyond {cap} bytes")
    return data


def _declared_members(fileobj: IO[bytes]) -> int:
    """The member count a zip's end record declares, read before zipfile turns the whole central
    directory into objects (a million records cost half a gigabyte before any limit was checked)."""
    fileobj.seek(0, io.SEEK_END)
    size = fileobj.tell()
    fileobj.seek(max(0, size - 22 - 0xFFFF))
    tail = fileobj.read()
    fileobj.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise _error(400, "the upload is not a valid zip archive")
    count = struct.unpack("<H", tail[at + 10:at + 12])[0]
    if count != 0xFFFF:
        return count
    locator = tail[at - 20:at] if at >= 20 else b""  # ZIP64: the count is in the ZIP64 end record
    if not locator.startswith(b"PK\x06\x07"):
        raise _error(400, "the upload is not a valid zip archive")
    fileobj.seek(struct.unpack("<Q", locator[8:16])[0])
    record = fileobj.read(56)
    fileobj.seek(0)
    if not record.startswith(b"PK\x06\x06") or len(record) < 40:
        raise _error(400, "the upload is not a valid zip archive")
    return struct.unpack("<Q", record[32:40])[0]


TASKS = ("classification", "segmentation")
MAX_MASK_CLASSES = 16


def read_archive(fileobj: IO[bytes], limits: Limits, quota_left: int,
                 task: str = "classification") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels and class names from a zip.

    classification: members ``CLASS/FILE.png`` in exactly two class folders; labels ``(n,)`` class
    indices. segmentation: ``images/NAME.png`` with ``masks/NAME.png`` beside each (8-bit class
    indices below :data:`MAX_MASK_CLASSES`, the image's size); labels are the masks ``(n, S, S)``
    uint8 and the classes ``"0"``, ``"1"``, ...

    Memory stays bounded whatever the archive holds: members are read one at a time with a size cap
    (zip headers can lie), and every PNG header is checked, with the decoded size summed against
    ``limits.max_decoded_bytes`` and ``quota_left``, before any image is decoded.
    """
    declared = _declared_members(fileobj)
    if declared > 2 * limits.max_images * (2 if task == "segmentation" else 1):  # folders' entries count too
        raise _error(413, f"the archive declares {declared} members, beyond the limit of {limits.max_images} images")
    try:
        archive = zipfile.ZipFile(fileobj)
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise _error(400, "the upload is not a valid zip archive") from None
    entries = [(_safe_member(m.filename), m) for m in members]
    if not entries:
        raise _error(400, "the archive holds no images")
    if len(entries) > limits.max_images * (2 if task == "segmentation" else 1):
        raise _error(413, f"{len(entries)} images exceed the limit of {limits.max_images}")
    folders = sorted({folder for (folder, _), _ in entries})
    if task == "classification" and len(folders) != 2:
        raise _error(400, f"binary classification needs exactly two class folders, got {len(folders)}")
    if task == "segmentation" and folders != ["images", "masks"]:
        raise _error(400, f"a segmentation archive holds images/ and masks/, got {', '.join(folders)}")
    layouts, decoded = {}, 0
    for (folder, name), member in entries:
        layout = _layout(open_png(io.BytesIO(_read_member(archive, member, limits.max_member_bytes)),
                                  member.filename, limits.max_side))
        layouts[folder, name] = layout
        decoded += int(np.prod(layout[0])) * layout[1].itemsize
        if decoded > limits.max_decoded_bytes:
            raise _error(413, f"the images expand beyond {limits.max_decoded_bytes} bytes")
        if decoded > quota_left:
            raise _error(413, f"the images would exceed this tenant's storage quota ({quota_left} bytes left)")

    def decode(folder: str, name: str) -> np.ndarray:
        member = archive.getinfo(f"{folder}/{name}")
        data = _read_member(archive, member, limits.max_member_bytes)
        return decode_png(open_png(io.BytesIO(data), member.filename, limits.max_side), member.filename)

    images_at = [key for key in layouts if task == "classification" or key[0] == "images"]  # archive order
    image_layouts = {layouts[key] for key in images_at}
    shape, dtype = next(iter(image_layouts))
    if len(image_layouts) != 1 or shape[0] != shape[1] or (task == "segmentation" and len(shape) != 2):
        raise _error(400, "all images must be square and of one size and mode" + (", grayscale" if task == "segmentation"
                          else "") + f", got {sorted((s, d.name) for s, d in image_layouts)[:3]}")
    images = np.stack([decode(*key) for key in images_at])
    if task == "classification":
        return images, np.array([folders.index(folder) for folder, _ in images_at], np.int64), folders
    names = [name for _, name in images_at]
    if sorted(name for folder, name in layouts if folder == "masks") != sorted(names):
        raise _error(400, "every image needs a mask of the same name under masks/, and every mask an image")
    if any(layouts["masks", name] != (shape, np.dtype(np.uint8)) for name in names):
        raise _error(400, f"masks must be 8-bit grayscale PNGs of the images' size {shape}")
    masks = np.stack([decode("masks", name) for name in names])
    classes = int(masks.max()) + 1
    if classes > MAX_MASK_CLASSES:
        raise _error(400, f"masks hold class {classes - 1}; at most {MAX_MASK_CLASSES} classes (0 = background)")
    return images, masks, [str(c) for c in range(max(classes, 2))]


class Worker:
    """One background thread that runs training jobs in order."""

    def __init__(self, store: Store):
        self.store = store
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="medveil-trainer", daemon=True)

    def start(self) -> None:
        for job in self.store.unfinished_jobs():
            if job["status"] == "running":
                self.store.update_job(job["id"], status="queued", message="resumed after a server restart")
            self.queue.put(job["id"])
        self.thread.start()

    def stop(self) -> None:
        self.queue.put(None)

    def _loop(self) -> None:
        while (job_id := self.queue.get()) is not None:
            self.run(job_id)

    def run(self, job_id: str) -> None:
        from medveil.classification import train_on_images
        from medveil.segmentation import train_segmentation_on_images
        from medveil.train import TrainConfig

        job = self.store.job_by_id(job_id)
        dataset = self.store.dataset(job["tenant"], job["dataset_id"])
        self.store.update_job(job_id, status="running")
        checkpoint = self.store.checkpoint_path(job_id)
        try:
            images, labels = self.store.load_dataset(dataset["id"])
            config = TrainConfig(epochs=job["epochs"], checkpoint=checkpoint, progress=False,
                                 on_epoch=lambda record: self.store.update_job(job_id, epoch=record["epoch"] + 1))
            if dataset["task"] == "segmentation":
                model, result = train_segmentation_on_images(images, labels, len(dataset["classes"]), config)
            else:
                model, result = train_on_images(images, labels, job["model"], config,
                                                **(dataset["scheme"] or {}))  # scheme=, params=
            model_id = self.store.add_model(job, dataset, result.best_score, model.state_dict())
            self.store.update_job(job_id, status="done", model_id=model_id, epoch=job["epochs"])
            checkpoint.unlink(missing_ok=True)
        except Exception as exc:  # the job fails, the server goes on
            self.store.update_job(job_id, status="failed", message=f"{exc.__class__.__name__}: {exc}")


def _public_scheme(text: str) -> dict | None:
    """The key's public part as uploaded (JSON ``{"scheme": name, "params": {...}}``, or empty), checked."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if (len(text) > 4096 or not isinstance(value, dict) or set(value) != {"scheme", "params"}
            or not isinstance(value["scheme"], str) or not isinstance(value["params"], dict)):
        raise _error(400, "scheme must be the key's public part as JSON: {\"scheme\": NAME, \"params\": {...}} (≤ 4 KB)")
    return value


def _job_view(job: dict) -> dict:
    return {"id": job["id"], "dataset_id": job["dataset_id"], "model": job["model"], "status": job["status"],
            "epoch": job["epoch"], "epochs": job["epochs"], "progress": job["epoch"] / job["epochs"],
            "message": job["message"], "model_id": job["model_id"]}


def _dataset_view(d: dict) -> dict:
    return {k: d[k] for k in ("id", "name", "task", "fingerprint", "images", "size", "channels", "bits", "classes",
                              "scheme")}


def _model_view(m: dict) -> dict:
    score = "val_dice" if m["task"] == "segmentation" else "val_accuracy"
    return {**{k: m[k] for k in ("id", "dataset_id", "job_id", "task", "fingerprint", "model", "size", "channels",
                                 "bits", "classes")}, score: m["val_accuracy"]}


def create_app(data_dir, limits: Limits = Limits()) -> FastAPI:
    """The service over ``data_dir`` (SQLite + files; see :mod:`medveil.service.store`)."""
    store = Store(data_dir)
    worker = Worker(store)
    loaded: dict[str, object] = {}
    loaded_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        worker.stop()

    # FastAPIOffline serves Swagger UI and ReDoc from assets inside the installed package, not from a CDN.
    app = FastAPIOffline(title="medveil service", version="1", lifespan=lifespan, static_url=DOCS_ASSETS,
                         description="Trains and predicts on obfuscated medical images; the key stays with the client.")
    app.state.store, app.state.worker = store, worker

    @app.middleware("http")
    async def authenticate_then_limit(request: Request, call_next):
        # Before any body is read: an anonymous request costs the server nothing but this check.
        if request.url.path not in OPEN_PATHS and not request.url.path.startswith(DOCS_ASSETS + "/"):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            name = store.tenant_of(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
            if name is None:
                return JSONResponse({"detail": "missing or invalid token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            request.state.tenant = name
        if request.method in ("POST", "PUT"):
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"detail": "Content-Length is required"}, status_code=411)
            if not length.isdigit() or int(length) > limits.max_request_bytes:
                return JSONResponse({"detail": f"request exceeds {limits.max_request_bytes} bytes"}, status_code=413)
        return await call_next(request)

    bearer = HTTPBearer(auto_error=False)

    def tenant(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        return request.state.tenant  # set by the middleware; the bearer dependency documents the scheme

    Tenant = Annotated[str, Depends(tenant)]

    def owned(record: dict | None, what: str) -> dict:
        if record is None:
            raise _error(404, f"no such {what}")
        return record

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/datasets", status_code=201, responses=_responses(400, 401, 411, 413, 415, 422))
    def upload_dataset(who: Tenant, archive: Annotated[UploadFile, File()], fingerprint: Annotated[str, Form()],
                       name: Annotated[str, Form()] = "", task: Annotated[str, Form()] = "classification",
                       scheme: Annotated[str, Form()] = "") -> dict:
        if archive.content_type not in ZIP_TYPES:
            raise _error(415, f"archive must be application/zip, got {archive.content_type}")
        if len(fingerprint) != 32 or any(c not in "0123456789abcdef" for c in fingerprint):
            raise _error(400, "fingerprint must be a medveil key fingerprint (32 hex characters)")
        if task not in TASKS:
            raise _error(400, f"task must be one of {', '.join(TASKS)}, got {task!r}")
        scheme = _public_scheme(scheme)
        quota_left = limits.max_tenant_bytes - store.stored_bytes(who)
        images, labels, classes = read_archive(archive.file, limits, quota_left, task)
        return _dataset_view(store.add_dataset(who, name, fingerprint, images, labels, classes, task, scheme))

    @app.get("/datasets", responses=_responses(401))
    def list_datasets(who: Tenant) -> list[dict]:
        return [_dataset_view(d) for d in store.datasets(who)]

    @app.get("/datasets/{dataset_id}", responses=_responses(401, 404))
    def get_dataset(who: Tenant, dataset_id: str) -> dict:
        return _dataset_view(owned(store.dataset(who, dataset_id), "dataset"))

    @app.post("/jobs", status_code=202, responses=_responses(400, 401, 404, 411, 413, 422))
    def start_job(who: Tenant, request: JobRequest) -> dict:
        from medveil.nn import available_models, model_spec
        from medveil.segmentation import SEGMENTER

        dataset = owned(store.dataset(who, request.dataset_id), "dataset")
        if dataset["task"] == "segmentation":
            model, choices = request.model or SEGMENTER, [SEGMENTER]
        else:
            model, choices = request.model or "cnn", available_models()
        if model not in choices:
            raise _error(422, f"a {dataset['task']} job trains one of {', '.join(choices)}, not {model!r}")
        if dataset["task"] == "classification" and model_spec(model).uses_scheme and not dataset["scheme"]:
            raise _error(422, f"{model} learns the obfuscation's structure from the key's public scheme and parameters, "
                              "which this dataset was uploaded without (medveil client upload sends them)")
        job = store.add_job(who, request.dataset_id, model, request.epochs)
        worker.queue.put(job["id"])
        return _job_view(job)

    @app.get("/jobs", responses=_responses(401))
    def list_jobs(who: Tenant) -> list[dict]:
        return [_job_view(j) for j in store.jobs(who)]

    @app.get("/jobs/{job_id}", responses=_responses(401, 404))
    def get_job(who: Tenant, job_id: str) -> dict:
        return _job_view(owned(store.job(who, job_id), "job"))

    @app.get("/models", responses=_responses(401))
    def list_models(who: Tenant) -> list[dict]:
        return [_model_view(m) for m in store.models(who)]

    @app.get("/models/{model_id}", responses=_responses(401, 404))
    def get_model(who: Tenant, model_id: str) -> dict:
        return _model_view(owned(store.model(who, model_id), "model"))

    def network(record: dict):
        import torch

        from medveil.nn import build_classifier
        from medveil.segmentation import build_segmenter

        with loaded_lock:
            if record["id"] not in loaded:
                net = (build_segmenter(len(record["classes"])) if record["task"] == "segmentation" else
                       build_classifier(record["model"], record["size"], in_channels=record["channels"],
                                        **(record["scheme"] or {})))
                net.load_state_dict(torch.load(store.model_path(record["id"]), weights_only=True))
                loaded[record["id"]] = net.eval()
            return loaded[record["id"]]

    @app.post("/models/{model_id}/predict", responses=_responses(400, 401, 404, 411, 413, 422))
    def predict(who: Tenant, model_id: str, files: Annotated[list[UploadFile], File()]) -> dict:
        from medveil.classification import model_tensors, predict_probabilities

        record = owned(store.model(who, model_id), "model")
        if len(files) > limits.max_predict_images:
            raise _error(413, f"{len(files)} images exceed the limit of {limits.max_predict_images} per request")
        expected = ((record["size"], record["size"]) + ((3,) if record["channels"] == 3 else ()),
                    np.dtype(np.uint16 if record["bits"] == 16 else np.uint8))
        opened = []
        for f in files:  # every header is checked before any image is decoded
            image = open_png(f.file, f.filename or "image", limits.max_side)
            if _layout(image) != expected:
                raise _error(400, f"{f.filename}: {_layout(image)[0]} {_layout(image)[1].name}, the model takes "
                                  f"{expected[0]} {expected[1].name}")
            opened.append(image)
        images = np.stack([decode_png(image, f.filename or "image") for f, image in zip(files, opened)])
        if record["task"] == "segmentation":
            from medveil.segmentation import predict_masks

            masks = predict_masks(network(record), images)
            return {"predictions": [{"file": f.filename, "mask_png": base64.b64encode(_png_bytes(m)).decode(),
                                     "pixels": np.bincount(m.ravel(), minlength=len(record["classes"])).tolist()}
                                    for f, m in zip(files, masks)]}
        probabilities, _ = predict_probabilities(network(record), model_tensors(record["model"], images,
                                                                                np.zeros(len(images))))
        return {"predictions": [{"file": f.filename, "class": record["classes"][int(p >= 0.5)], "probability": float(p)}
                                for f, p in zip(files, probabilities)]}

    return app


@contextmanager
def local_server(data_dir, port: int | None = None, startup_timeout: float = 60.0):
    """Run ``medveil serve`` on loopback in a child process for the duration of the block; yields its URL.

    For tests, benchmarks and trying the workflow on one machine. The process is killed on exit
    (``SIGKILL``, like a crash: jobs resume at the next start).
    """
    import socket
    import subprocess
    import sys
    import time

    import httpx

    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    log_path = Path(data_dir) / "server.log"
    log = open(log_path, "ab")
    process = subprocess.Popen([sys.executable, "-m", "medveil.cli", "serve", "--data", str(data_dir), "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer on {url} within {startup_timeout:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        process.kill()
        process.wait()
        log.close()
