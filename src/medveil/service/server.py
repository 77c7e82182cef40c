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


import json
import threading
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Callable, Optional, Sequence

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from medveil.service.limits import Limits, MemoryBudget, http_error, return_freed_memory
from medveil.service.tasks import TASKS
from medveil.service.uploads import decode_into, decoded_size, layout, open_png, read_archive
from medveil.service.store import BUSY, MISSING, Store
from medveil.service.worker import Worker

ZIP_TYPES = {"application/zip", "application/x-zip-compressed"}
# What anyone may read: the API's own description, no data.
OPEN_PATHS = {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
DOCS_ASSETS = "/docs-assets"  # Swagger UI's and ReDoc's scripts and styles: public, like the pages


class JobRequest(BaseModel):
    """A training job: the dataset, the epochs, and the model (the task's default if none)."""

    dataset_id: str
    epochs: int = Field(30, ge=1, le=500)
    model: Optional[str] = Field(None, pattern="^[a-z0-9][a-z0-9_-]{0,39}$",
                                 description="classification: a registered model (default cnn; resnet or a plugin's); "
                                             "segmentation: unet (the default)")


class Problem(BaseModel):
    """An error's body: one line saying what was wrong."""

    detail: str


_STATUS_TEXT = {400: "malformed input", 401: "missing or invalid token", 404: "no such record (or another tenant's)",
                411: "Content-Length is required", 413: "over a size, count or quota limit",
                409: "in use by a queued or running job", 415: "unsupported content type",
                422: "invalid request fields"}


def _responses(*codes: int) -> dict:
    """OpenAPI entries for the error statuses a route really answers."""
    return {code: {"model": Problem, "description": _STATUS_TEXT[code]} for code in codes}


def _public_scheme(text: str) -> dict | None:
    """Return the key's public part as uploaded (JSON ``{"scheme": name, "params": {...}}``, or empty), checked."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if (len(text) > 4096 or not isinstance(value, dict) or set(value) != {"scheme", "params"}
            or not isinstance(value["scheme"], str) or not isinstance(value["params"], dict)):
        raise http_error(400, "scheme must be the key's public part as JSON: {\"scheme\": NAME, \"params\": {...}} (≤ 4 KB)")
    return value


def _job_view(job: dict) -> dict:
    return {"id": job["id"], "dataset_id": job["dataset_id"], "model": job["model"], "status": job["status"],
            "epoch": job["epoch"], "epochs": job["epochs"], "progress": job["epoch"] / job["epochs"],
            "message": job["message"], "model_id": job["model_id"]}


def _stored_bytes(d: dict) -> int:
    return d["images"] * d["size"] * d["size"] * d["channels"] * d["bits"] // 8


def _dataset_view(d: dict) -> dict:
    return {k: d[k] for k in ("id", "name", "task", "fingerprint", "images", "size", "channels", "bits", "classes",
                              "scheme")}


def _model_view(m: dict) -> dict:
    score = TASKS[m["task"]].score
    return {**{k: m[k] for k in ("id", "dataset_id", "job_id", "task", "fingerprint", "model", "size", "channels",
                                 "bits", "classes")}, score: m["val_accuracy"]}


def create_app(data_dir, limits: Limits = Limits(), retain_days: float | None = None) -> FastAPI:
    """Return the service over ``data_dir`` (SQLite + files; see :mod:`medveil.service.store`).

    ``retain_days`` deletes datasets, models and finished jobs older than that many days.
    """
    store = Store(data_dir)
    worker = Worker(store, retain_days)
    memory = MemoryBudget(limits)
    return_freed_memory()
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
            raise http_error(404, f"no such {what}")
        return record

    def admitter(held: ExitStack, who: str, also_held: int = 0) -> Callable[[int], None]:
        """Return the admission :func:`read_archive` calls once the headers are counted (nothing decoded yet).

        It reserves the decoded bytes in the tenant's quota (413 past it) and holds them, plus ``also_held``, in
        memory.
        """
        def admit(decoded: int) -> None:
            if not held.enter_context(store.reserve(who, decoded, limits.max_tenant_bytes)):
                raise http_error(413, f"the images ({decoded} bytes decoded) would exceed this tenant's storage "
                                      f"quota of {limits.max_tenant_bytes} bytes")
            held.enter_context(memory.hold(decoded + also_held))
        return admit

    @app.get("/health", tags=["health"])
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/datasets", status_code=201, tags=["datasets"], responses=_responses(400, 401, 411, 413, 415, 422))
    def upload_dataset(who: Tenant, archive: Annotated[UploadFile, File()], fingerprint: Annotated[str, Form()],
                       name: Annotated[str, Form()] = "", task: Annotated[str, Form()] = "classification",
                       scheme: Annotated[str, Form()] = "") -> dict:
        if archive.content_type not in ZIP_TYPES:
            raise http_error(415, f"archive must be application/zip, got {archive.content_type}")
        if len(fingerprint) != 32 or any(c not in "0123456789abcdef" for c in fingerprint):
            raise http_error(400, "fingerprint must be a medveil key fingerprint (32 hex characters)")
        if task not in TASKS.names():
            raise http_error(400, f"task must be one of {', '.join(TASKS.names())}, got {task!r}")
        public = _public_scheme(scheme)
        with ExitStack() as held:
            images, labels, classes, names = read_archive(archive.file, limits, admitter(held, who), TASKS[task])
            return _dataset_view(store.add_dataset(who, name, fingerprint, images, labels, classes, task, public, names))

    @app.post("/datasets/{dataset_id}/images", tags=["datasets"], responses=_responses(400, 401, 404, 411, 413, 415, 422))
    def append_images(who: Tenant, dataset_id: str, archive: Annotated[UploadFile, File()],
                      fingerprint: Annotated[str, Form()]) -> dict:
        """Add an archive's images to a dataset, laid out as its task says.

        An image whose member name the dataset already holds is skipped, so sending the same archive again adds
        nothing.
        """
        dataset = owned(store.dataset(who, dataset_id), "dataset")
        if archive.content_type not in ZIP_TYPES:
            raise http_error(415, f"archive must be application/zip, got {archive.content_type}")
        if fingerprint != dataset["fingerprint"]:
            raise http_error(400, "these images were obfuscated under another key than the dataset's")
        task = TASKS[dataset["task"]]
        with ExitStack() as held:
            # the dataset is read back and written whole beside the new images
            images, labels, classes, names = read_archive(archive.file, limits,
                                                          admitter(held, who, _stored_bytes(dataset)), task)
            expected = (dataset["size"], dataset["channels"], dataset["bits"])
            got = (images.shape[1], 3 if images.ndim == 4 else 1, 8 * images.dtype.itemsize)
            if got != expected:
                raise http_error(400, "the images are (size, channels, bits) = {}; the dataset's are {}".format(got, expected))
            if len(set(names)) != len(names):
                raise http_error(400, "two images of the archive share a file name; appended names must be unique")
            labels, classes = task.merge(dataset["classes"], labels, classes)
            record, added = store.append(dataset, images, labels, names, classes)
            return {**_dataset_view(record), "added": added, "already_held": len(names) - added}

    @app.get("/datasets", tags=["datasets"], responses=_responses(401))
    def list_datasets(who: Tenant) -> list[dict]:
        return [_dataset_view(d) for d in store.datasets(who)]

    @app.get("/datasets/{dataset_id}", tags=["datasets"], responses=_responses(401, 404))
    def get_dataset(who: Tenant, dataset_id: str) -> dict:
        return _dataset_view(owned(store.dataset(who, dataset_id), "dataset"))

    @app.post("/jobs", status_code=202, tags=["jobs"], responses=_responses(400, 401, 404, 411, 413, 422))
    def start_job(who: Tenant, request: JobRequest) -> dict:
        dataset = owned(store.dataset(who, request.dataset_id), "dataset")
        task = TASKS[dataset["task"]]
        model = request.model or task.models()[0]
        task.check_model(model, dataset)
        job = store.add_job(who, request.dataset_id, model, request.epochs)
        worker.queue.put(job["id"])
        return _job_view(job)

    @app.get("/jobs", tags=["jobs"], responses=_responses(401))
    def list_jobs(who: Tenant) -> list[dict]:
        return [_job_view(j) for j in store.jobs(who)]

    @app.get("/jobs/{job_id}", tags=["jobs"], responses=_responses(401, 404))
    def get_job(who: Tenant, job_id: str) -> dict:
        return _job_view(owned(store.job(who, job_id), "job"))

    @app.get("/models", tags=["models"], responses=_responses(401))
    def list_models(who: Tenant) -> list[dict]:
        return [_model_view(m) for m in store.models(who)]

    @app.get("/models/{model_id}", tags=["models"], responses=_responses(401, 404))
    def get_model(who: Tenant, model_id: str) -> dict:
        return _model_view(owned(store.model(who, model_id), "model"))

    def delete(who: str, kind: str, record_id: str) -> None:
        outcome = store.delete(kind, who, record_id)
        if outcome == MISSING:
            raise http_error(404, f"no such {kind}")
        if outcome == BUSY:
            raise http_error(409, f"{kind} {record_id} is in use by a queued or running job; wait for it or delete it "
                                  "when it is done")
        with loaded_lock:
            loaded.pop(record_id, None)

    @app.delete("/datasets/{dataset_id}", status_code=204, tags=["datasets"], responses=_responses(401, 404, 409))
    def delete_dataset(who: Tenant, dataset_id: str) -> None:
        delete(who, "dataset", dataset_id)

    @app.delete("/jobs/{job_id}", status_code=204, tags=["jobs"], responses=_responses(401, 404, 409))
    def delete_job(who: Tenant, job_id: str) -> None:
        delete(who, "job", job_id)

    @app.delete("/models/{model_id}", status_code=204, tags=["models"], responses=_responses(401, 404, 409))
    def delete_model(who: Tenant, model_id: str) -> None:
        delete(who, "model", model_id)

    def network(record: dict):
        import torch

        with loaded_lock:
            if record["id"] not in loaded:
                net = TASKS[record["task"]].build(record)
                net.load_state_dict(torch.load(store.model_path(record["id"]), weights_only=True))
                loaded[record["id"]] = net.eval()
            return loaded[record["id"]]

    @app.post("/models/{model_id}/predict", tags=["models"], responses=_responses(400, 401, 404, 411, 413, 422))
    def predict(who: Tenant, model_id: str, files: Annotated[list[UploadFile], File()]) -> dict:
        record = owned(store.model(who, model_id), "model")
        if len(files) > limits.max_predict_images:
            raise http_error(413, f"{len(files)} images exceed the limit of {limits.max_predict_images} per request")
        expected = ((record["size"], record["size"]) + ((3,) if record["channels"] == 3 else ()),
                    np.dtype(np.uint16 if record["bits"] == 16 else np.uint8))
        opened, names = [], [f.filename or "image" for f in files]
        for f, name in zip(files, names):  # every header is checked before any image is decoded
            image = open_png(f.file, name, limits.max_side)
            if layout(image) != expected:
                raise http_error(400, f"{name}: {layout(image)[0]} {layout(image)[1].name}, the model takes "
                                      f"{expected[0]} {expected[1].name}")
            opened.append(image)
        decoded = len(files) * decoded_size(expected)
        limits.check_decoded(decoded)
        with memory.hold(decoded):
            images = decode_into(np.empty((len(files),) + expected[0], expected[1]), opened, names)
            return {"predictions": TASKS[record["task"]].predictions(record, network(record), images, names)}

    return app


@contextmanager
def local_server(data_dir, port: int | None = None, startup_timeout: float = 60.0, options: Sequence[str] = ()):
    """Run ``medveil serve`` on loopback in a child process for the duration of the block; yields its URL.

    ``options``: more ``medveil serve`` flags (``["--total-mb", "64"]``).

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
    process = subprocess.Popen([sys.executable, "-m", "medveil.cli", "serve", "--data", str(data_dir), "--port", str(port),
                                *options],
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
