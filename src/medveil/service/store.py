"""The server's embedded storage: one SQLite file for records and a data folder for arrays and weights.

Layout of ``data_dir``::

    medveil-service.sqlite   tenants' hashed tokens, datasets, jobs, models
    datasets/<id>.npz        obfuscated images (uint8, or uint16 for 16-bit codes), labels (class
                             indices, or masks for segmentation) and the images' member names, as
                             uploaded and appended
    models/<id>.pt           trained weights
    checkpoints/<id>.pt      a running job's checkpoint (training resumes from it after a restart)

Tokens are stored as SHA-256 hashes only. Every query is scoped to one tenant: a record of another
tenant reads as missing. Identifiers are random (128 bits), so they cannot be enumerated.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from medveil._files import atomic_path

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, tenant TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT, fingerprint TEXT NOT NULL,
    images INTEGER NOT NULL, size INTEGER NOT NULL, channels INTEGER NOT NULL, classes TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, dataset_id TEXT NOT NULL, model TEXT NOT NULL,
    epochs INTEGER NOT NULL, status TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '',
    model_id TEXT, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS models (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, dataset_id TEXT NOT NULL, job_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL, model TEXT NOT NULL, size INTEGER NOT NULL, channels INTEGER NOT NULL, classes TEXT NOT NULL,
    val_accuracy REAL, created REAL NOT NULL);
"""

# Columns added after the first release, so that an existing data folder keeps working.
MIGRATIONS = (("datasets", "bits", "INTEGER NOT NULL DEFAULT 8"), ("models", "bits", "INTEGER NOT NULL DEFAULT 8"),
              ("datasets", "task", "TEXT NOT NULL DEFAULT 'classification'"),
              ("models", "task", "TEXT NOT NULL DEFAULT 'classification'"),
              # the key's public part, JSON {"scheme", "params"} or null: for server models that learn its structure
              ("datasets", "scheme", "TEXT NOT NULL DEFAULT 'null'"), ("models", "scheme", "TEXT NOT NULL DEFAULT 'null'"))

_JSON_COLUMNS = {"classes", "scheme"}
_STORED_BYTES = "SELECT COALESCE(SUM(images * size * size * channels * bits / 8), 0) AS n FROM datasets WHERE tenant = ?"


TOKEN_ID_DIGITS = 12
# What a deletion found: done, nothing of the tenant's by that id, or in use (a dataset a job has not finished with;
# a job still queued or running).
DELETED, MISSING, BUSY = "deleted", "missing", "busy"


def hash_token(token: str) -> str:
    """Return what the store keeps of a token: its SHA-256 (hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_id() -> str:
    """Return a new record id: 32 hex digits from ``secrets``."""
    return secrets.token_hex(16)


class Store:
    """Records and files of the service under ``data_dir`` (created if missing)."""

    def __init__(self, data_dir: str | os.PathLike):
        self.root = Path(data_dir)
        for sub in ("datasets", "models", "checkpoints"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # tokens' hashes, tenants' data: for the service's user alone
        self._db = sqlite3.connect(self.root / "medveil-service.sqlite", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()  # one connection shared by the request threads and the worker
        self._reserved: dict[str, int] = {}  # per tenant: decoded bytes of uploads being stored
        self._append_lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
            for table, column, declaration in MIGRATIONS:
                if column not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def _query(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [{k: json.loads(r[k]) if k in _JSON_COLUMNS else r[k] for k in r.keys()} for r in rows]

    def _one(self, sql: str, args: tuple) -> dict[str, Any] | None:
        rows = self._query(sql, args)
        return rows[0] if rows else None

    # tokens
    def create_token(self, tenant: str) -> str:
        """Return a new token for ``tenant``; only its hash is kept, so show it to the user now."""
        if not tenant or not tenant.replace("-", "").replace("_", "").isalnum():
            raise ValueError("tenant names use letters, digits, '-' and '_'")
        token = secrets.token_urlsafe(32)
        self._query("INSERT INTO tokens VALUES (?, ?, ?)", (hash_token(token), tenant, time.time()))
        return token

    def tokens(self) -> list[dict]:
        """Every token as ``{"id", "tenant", "created"}``.

        Its id is the first 12 hex digits of its hash, which names it for :meth:`revoke_token` and is of no use
        to present.
        """
        return [{"id": r["hash"][:TOKEN_ID_DIGITS], "tenant": r["tenant"], "created": r["created"]}
                for r in self._query("SELECT hash, tenant, created FROM tokens ORDER BY created")]

    def revoke_token(self, token_id: str) -> bool:
        """Delete the token whose id (as :meth:`tokens` lists it) is ``token_id``; False if none is."""
        if len(token_id) != TOKEN_ID_DIGITS or any(c not in "0123456789abcdef" for c in token_id):
            return False
        with self._lock:
            return self._db.execute("DELETE FROM tokens WHERE substr(hash, 1, ?) = ?",
                                    (TOKEN_ID_DIGITS, token_id)).rowcount > 0

    def tenant_of(self, token: str) -> str | None:
        """Return the tenant ``token`` belongs to, or None."""
        row = self._one("SELECT tenant FROM tokens WHERE hash = ?", (hash_token(token),))
        return row["tenant"] if row else None

    # datasets
    def add_dataset(self, tenant: str, name: str, fingerprint: str, images: np.ndarray, labels: np.ndarray,
                    classes: list[str], task: str = "classification", scheme: dict | None = None,
                    names: list[str] | None = None) -> dict:
        """Store an uploaded dataset (its arrays in a 0600 file) and return its record."""
        dataset_id = new_id()
        self._save(dataset_id, images, labels, names or [])
        channels = 3 if images.ndim == 4 else 1
        self._query("INSERT INTO datasets (id, tenant, name, fingerprint, images, size, channels, classes, created, bits, "
                    "task, scheme) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (dataset_id, tenant, name, fingerprint, len(images), images.shape[1], channels, json.dumps(classes),
                     time.time(), 8 * images.dtype.itemsize, task, json.dumps(scheme)))
        return self._one("SELECT * FROM datasets WHERE id = ?", (dataset_id,)) or {}

    def _save(self, dataset_id: str, images: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
        with atomic_path(self.dataset_path(dataset_id), mode=0o600) as tmp:
            np.savez(tmp, images=images, labels=labels, names=np.array(names, dtype=str))

    def append(self, dataset: dict, images: np.ndarray, labels: np.ndarray, names: list[str],
               classes: list[str]) -> tuple[dict, int]:
        """Add to ``dataset`` the images whose member names it does not hold yet.

        Their ``labels`` are already in the merged ``classes``; returns ``(its record now, how many were
        added)``. Appends to one data folder happen one at a time, so two of them cannot lose each other's
        images.
        """
        with self._append_lock:
            with np.load(self.dataset_path(dataset["id"])) as data:
                held_images, held_labels = data["images"], data["labels"]
                held = data["names"].tolist() if "names" in data else []
            known = set(held)
            new = [i for i, name in enumerate(names) if name not in known]
            if new:
                self._save(dataset["id"], np.concatenate([held_images, images[new]]),
                           np.concatenate([held_labels, labels[new]]), held + [names[i] for i in new])
            self._query("UPDATE datasets SET images = ?, classes = ? WHERE id = ?",
                        (len(held_images) + len(new), json.dumps(classes), dataset["id"]))
        return self._one("SELECT * FROM datasets WHERE id = ?", (dataset["id"],)) or {}, len(new)

    def stored_bytes(self, tenant: str) -> int:
        """Bytes of the decoded images ``tenant``'s datasets hold (what its quota counts)."""
        return int((self._one(_STORED_BYTES, (tenant,)) or {"n": 0})["n"])

    @contextmanager
    def reserve(self, tenant: str, size: int, quota: int) -> Iterator[bool]:
        """Hold ``size`` bytes of ``tenant``'s ``quota`` while an upload is stored.

        Yields False (holding nothing) when what is stored and held already leaves too little. Checked and held
        under one lock, so concurrent uploads cannot each see the same room; :meth:`add_dataset` inside the
        block makes the bytes stored before they stop being held.
        """
        with self._lock:
            stored = self._db.execute(_STORED_BYTES, (tenant,)).fetchone()[0]
            room = stored + self._reserved.get(tenant, 0) + size <= quota
            if room:
                self._reserved[tenant] = self._reserved.get(tenant, 0) + size
        try:
            yield room
        finally:
            if room:
                with self._lock:
                    self._reserved[tenant] -= size

    def dataset_path(self, dataset_id: str) -> Path:
        """Where dataset ``dataset_id``'s arrays are stored."""
        return self.root / "datasets" / f"{dataset_id}.npz"

    def dataset(self, tenant: str, dataset_id: str) -> dict | None:
        """``tenant``'s dataset ``dataset_id``, or None."""
        return self._one("SELECT * FROM datasets WHERE id = ? AND tenant = ?", (dataset_id, tenant))

    def datasets(self, tenant: str) -> list[dict]:
        """``tenant``'s datasets, oldest first."""
        return self._query("SELECT * FROM datasets WHERE tenant = ? ORDER BY created", (tenant,))

    def load_dataset(self, dataset_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Return a dataset's images and labels."""
        with np.load(self.dataset_path(dataset_id)) as data:
            return data["images"], data["labels"]

    # jobs
    def add_job(self, tenant: str, dataset_id: str, model: str, epochs: int) -> dict:
        """Queue a training job and return its record."""
        job_id, now = new_id(), time.time()
        self._query("INSERT INTO jobs (id, tenant, dataset_id, model, epochs, status, created, updated) "
                    "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)", (job_id, tenant, dataset_id, model, epochs, now, now))
        return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,)) or {}

    def job(self, tenant: str, job_id: str) -> dict | None:
        """``tenant``'s job ``job_id``, or None."""
        return self._one("SELECT * FROM jobs WHERE id = ? AND tenant = ?", (job_id, tenant))

    def job_by_id(self, job_id: str) -> dict | None:
        """For the worker only (it acts for every tenant)."""
        return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def jobs(self, tenant: str) -> list[dict]:
        """``tenant``'s jobs, oldest first."""
        return self._query("SELECT * FROM jobs WHERE tenant = ? ORDER BY created", (tenant,))

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set ``fields`` of job ``job_id`` (and its update time)."""
        names = ", ".join(f"{k} = ?" for k in fields)
        self._query(f"UPDATE jobs SET {names}, updated = ? WHERE id = ?", (*fields.values(), time.time(), job_id))

    def unfinished_jobs(self) -> list[dict]:
        """Every tenant's queued or running jobs, oldest first."""
        return self._query("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY created")

    def checkpoint_path(self, job_id: str) -> Path:
        """Where job ``job_id``'s checkpoint is kept while it runs."""
        return self.root / "checkpoints" / f"{job_id}.pt"

    # models
    def add_model(self, job: dict, dataset: dict, val_score: float, state: dict) -> str:
        """Store trained weights; ``val_score`` is the validation accuracy (classification) or Dice (segmentation)."""
        import torch

        model_id = new_id()
        with atomic_path(self.model_path(model_id), mode=0o600) as tmp:
            torch.save(state, tmp)
        self._query("INSERT INTO models (id, tenant, dataset_id, job_id, fingerprint, model, size, channels, classes, "
                    "val_accuracy, created, bits, task, scheme) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (model_id, job["tenant"], dataset["id"], job["id"], dataset["fingerprint"], job["model"],
                     dataset["size"], dataset["channels"], json.dumps(dataset["classes"]), val_score, time.time(),
                     dataset["bits"], dataset["task"], json.dumps(dataset["scheme"])))
        return model_id

    def model_path(self, model_id: str) -> Path:
        """Where model ``model_id``'s weights are stored."""
        return self.root / "models" / f"{model_id}.pt"

    def model(self, tenant: str, model_id: str) -> dict | None:
        """``tenant``'s model ``model_id``, or None."""
        return self._one("SELECT * FROM models WHERE id = ? AND tenant = ?", (model_id, tenant))

    def models(self, tenant: str) -> list[dict]:
        """``tenant``'s models, oldest first."""
        return self._query("SELECT * FROM models WHERE tenant = ? ORDER BY created", (tenant,))

    # deletion and retention
    def delete(self, kind: str, tenant: str, record_id: str) -> str:
        """Delete the tenant's ``kind`` (``dataset``, ``model`` or ``job``) ``record_id`` and its file.

        :data:`DELETED`, :data:`MISSING` or :data:`BUSY`.
        """
        table, path = {"dataset": ("datasets", self.dataset_path), "model": ("models", self.model_path),
                       "job": ("jobs", self.checkpoint_path)}[kind]
        with self._append_lock, self._lock:  # not while an append rewrites the dataset's file
            if self._db.execute(f"SELECT 1 FROM {table} WHERE id = ? AND tenant = ?", (record_id, tenant)).fetchone() is None:
                return MISSING
            busy = {"dataset": "SELECT 1 FROM jobs WHERE dataset_id = ? AND status IN ('queued', 'running')",
                    "job": "SELECT 1 FROM jobs WHERE id = ? AND status IN ('queued', 'running')"}.get(kind)
            if busy and self._db.execute(busy, (record_id,)).fetchone() is not None:
                return BUSY
            self._db.execute(f"DELETE FROM {table} WHERE id = ?", (record_id,))
        path(record_id).unlink(missing_ok=True)
        return DELETED

    def purge(self, older_than_days: float) -> int:
        """Delete every tenant's datasets, models and finished jobs older than ``older_than_days``.

        A dataset a job has not finished with stays; returns how many records went.
        """
        cutoff = time.time() - older_than_days * 86400
        gone = 0
        for kind, table in (("job", "jobs"), ("model", "models"), ("dataset", "datasets")):
            for row in self._query(f"SELECT id, tenant FROM {table} WHERE created < ?", (cutoff,)):
                gone += self.delete(kind, row["tenant"], row["id"]) == DELETED
        return gone
