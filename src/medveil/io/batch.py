"""Obfuscate one file or a whole folder tree, safely.

A folder run mirrors the source tree into a separate output folder and never writes inside the
source. Every output is written to a temporary name and renamed into place, and a JSON-lines
manifest in the output folder records ``source -> output`` with the source's SHA-256, the output's
size and SHA-256, and the key's fingerprint. Re-running the same command after an interruption skips
what is done (same source bytes, output present with the recorded size and hash) and does the rest; a run with another key into the same output
folder is refused. Files that fail are reported with a one-line reason at the end while the
others complete.

A killed run (even by SIGKILL) loses nothing: an output is renamed into place whole and its record
appended after. Outputs and records are not synced to disk one by one (that would cost more than
the obfuscation), so a power cut may lose the last ones or leave an output short: the resume
check, which compares each recorded output's size and SHA-256, finds those and does them again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import stat
import sys
import threading
import time
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from medveil import burned_in
from medveil._atomic import TMP_PREFIX, atomic_path
from medveil.errors import InputError, MedveilError
from medveil.io.image import MedicalImage, first_line, format_named, output_name, read_image, write_image
from medveil.keys import Key
from medveil.schemes import Scheme, from_key

MANIFEST = "medveil-manifest.jsonl"
LOCK = ".medveil-lock"  # hidden, so walks and the emptiness check pass over it
MANIFEST_VERSION = 1
BATCH_FILES = 32  # files per task at most, for the pool and Dask (see _batches)
BATCHES_PER_WORKER = 16


def _check_mappable(image: MedicalImage) -> None:
    if image.bits == 1:
        raise InputError("1-bit samples (a binary mask such as a DICOM SEG): mapping two values hides nothing; "
                         "not obfuscated")
    if image.pixels.dtype.kind in "iu" and image.pixels.dtype.itemsize > 2:
        raise InputError(f"{8 * image.pixels.dtype.itemsize}-bit samples (an RT dose, say): keys map integers "
                         "of at most 16 bits; not obfuscated")


def screen_text(image: MedicalImage, policy: str = "refuse") -> tuple[MedicalImage, bool]:
    """Look for text burned into ``image``'s plain pixels and apply ``policy`` to it.

    ``refuse`` raises :class:`InputError` when OCR reads text or the header declares it; ``mask``
    sets what OCR reads to the plane's minimum, checks that OCR reads nothing more (three rounds at
    most) and returns the masked image with True; ``off`` returns the image unchanged.
    """
    if policy not in burned_in.POLICIES:
        raise InputError(f"burned-in text policy must be one of {', '.join(burned_in.POLICIES)}, got {policy!r}")
    if policy == "off":
        return image, False
    declares = format_named(image.format).declares_burned_in_text
    flagged = declares is not None and image.meta is not None and declares(image.meta)
    planes = image.display_planes()
    boxes = burned_in.find_text(planes)
    if policy == "refuse":
        if boxes:
            raise InputError(f"text burned into the pixels ({burned_in.describe(boxes)}); refused "
                             "(--burned-in-text mask masks it)")
        if flagged:
            raise InputError("header declares burned-in text (BurnedInAnnotation YES); refused "
                             "(--burned-in-text mask masks the text OCR finds)")
        return image, False
    if not boxes:
        if flagged:
            raise InputError("header declares burned-in text (BurnedInAnnotation YES) but OCR finds none to mask; refused")
        return image, False
    for _ in range(3):
        planes = burned_in.mask_text(planes, boxes)
        boxes = burned_in.find_text(planes)
        if not boxes:
            return image.with_display_planes(planes), True
    raise InputError(f"text still readable after masking ({burned_in.describe(boxes)}); refused")


def obfuscate_image(image: MedicalImage, scheme: Scheme, burned_in_text: str = "refuse",
                    copy: bool = True) -> MedicalImage:
    """Obfuscated pixels plus de-identified metadata, ready to write in the output format.

    ``burned_in_text`` is the :func:`screen_text` policy for text in the plain pixels. ``copy``
    False lets de-identification change ``image.meta`` itself instead of a copy (for a caller that
    read the image and keeps no other use of it).
    """
    _check_mappable(image)
    image, masked = screen_text(image, burned_in_text)
    pixels = scheme(image.pixels)
    fmt = format_named(image.format)
    meta = image.meta
    if fmt.deidentify is not None and meta is not None:
        meta = fmt.deidentify(meta, scheme.key.stream("io/dicom-uid").read(32), text_masked=masked, copy=copy)
    return image.replace(
        pixels=pixels,
        bits=scheme.output_bits or 8 * pixels.dtype.itemsize,
        format=fmt.writes_as,
        meta=meta,
    )


def write_atomic(path: Path, image: MedicalImage, durable: bool = True) -> None:
    """Write ``image`` to a temporary file beside ``path`` and rename it into place (see :func:`atomic_path`)."""
    with atomic_path(path, durable=durable) as tmp:
        write_image(tmp, image)


def obfuscate_file(src: Path, dst: Path, scheme: Scheme, overwrite: bool = False,
                   burned_in_text: str = "refuse", durable: bool = True) -> None:
    """Obfuscate one file into ``dst`` (written atomically); refuses to overwrite unless asked.

    ``durable`` syncs ``dst`` to disk before returning (see :func:`medveil._atomic.atomic_path`).
    Every failure is an :class:`InputError` of one line naming ``src``.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise InputError(f"{dst}: already exists; refusing to overwrite")
    if dst.resolve() == src.resolve():
        raise InputError(f"{src}: output would replace the original")
    image = read_image(src)
    try:
        out = obfuscate_image(image, scheme, burned_in_text, copy=False)  # the image read here is ours
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dst, out, durable)
    except MedveilError as exc:
        raise InputError(f"{src}: {exc}") from None
    except Exception as exc:  # pydicom, nibabel and the OS raise anything from ValueError to OSError
        raise InputError(f"{src}: {exc.__class__.__name__}: {first_line(exc)}") from None


@dataclass(frozen=True)
class Written:
    """What a folder run's worker reports for one file: digests of the bytes it read and wrote."""

    source_sha256: str
    output_size: int
    output_sha256: str


def still_done(record: dict | None, source_sha256: str, output_size, output_sha256) -> bool:
    """A manifest ``record`` covers these source bytes, and its output is still there, whole and unchanged.

    ``output_size()`` (None where the output is missing) and ``output_sha256()`` read the output
    only if the record matches the source.
    """
    return (record is not None and record["sha256"] == source_sha256 and "output_sha256" in record
            and output_size() == record["output_size"] and output_sha256() == record["output_sha256"])


def obfuscate_recorded(src: Path, dst: Path, scheme: Scheme, burned_in_text: str, record: dict | None = None,
                       name: str | None = None, source_sha256: str | None = None) -> Written | None:
    """:func:`obfuscate_file` as a folder run's worker does it, overwriting ``dst`` and not syncing it.

    Returns None, writing nothing, where the manifest's ``record`` of this file is still good (see
    :func:`still_done`). The digests are taken here, so they spread over the workers with the rest
    of the work, and the process that keeps the manifest reads no file; ``name`` (default ``src``)
    is what an unreadable file's error calls it; ``source_sha256`` is ``src``'s digest where the
    caller took it already.
    """
    try:
        source_sha256 = source_sha256 or sha256_file(src)
    except OSError as exc:
        raise InputError(f"{name or src}: cannot be read ({exc.strerror or first_line(exc)})") from None
    if still_done(record, source_sha256, lambda: dst.stat().st_size if dst.is_file() else None,
                  lambda: sha256_file(dst)):
        return None
    obfuscate_file(src, dst, scheme, overwrite=True, burned_in_text=burned_in_text, durable=False)
    return Written(source_sha256, dst.stat().st_size, sha256_file(dst))


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return sha256_stream(fh)


def sha256_stream(fh) -> str:
    """The SHA-256 (hex) of what a binary file object holds from where it stands, read a megabyte at a time."""
    digest = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


@dataclass
class BatchReport:
    """What a folder run did: relative paths done now, already done before, and failed with why."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def walk(root: Path, problems: list[tuple[str, str]] | None = None) -> list[Path]:
    """Regular files below ``root`` (relative paths) in a stable order, hidden files and folders left out.

    Nothing that could hang or escape a run is opened: FIFOs, sockets and devices, symbolic links
    that dangle, loop or lead to anything but a regular file, symbolic links to folders, and
    folders that cannot be read are left out, each with a one-line reason in ``problems``.
    """
    root = Path(root)
    files = []

    def problem(path: Path, reason: str) -> None:
        if problems is not None:
            problems.append((path.relative_to(root).as_posix(), f"{path}: {reason}"))

    def unreadable(error: OSError) -> None:
        problem(Path(error.filename), f"folder cannot be read ({error.strerror}); skipped")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        folders = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            if Path(dirpath, name).is_symlink():
                problem(Path(dirpath, name), "symbolic link to a folder; not followed")
            else:
                folders.append(name)
        dirnames[:] = folders
        for name in sorted(f for f in filenames if not f.startswith(".")):
            path = Path(dirpath, name)
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                problem(path, f"dangling or looping symbolic link ({exc.strerror}); skipped")
                continue
            if stat.S_ISREG(mode):
                files.append(path.relative_to(root))
            else:
                problem(path, "not a regular file (FIFO, socket or device); skipped")
    return files


class Folder:
    """A local folder as a folder run uses it: its files, their digests, and, as the output, the run's manifest.

    :class:`medveil.io.remote.RemoteFolder` is the same for any fsspec URL.
    """

    remote = False

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def is_dir(self) -> bool:
        return self.root.is_dir()

    def walk(self, problems: list[tuple[str, str]]) -> list[str]:
        return [rel.as_posix() for rel in walk(self.root, problems)]

    def location(self, rel: str) -> Path:
        """Where a worker finds ``rel``."""
        return self.root / rel

    def output_name(self, rel: str) -> str:
        return output_name(rel, self.root / rel).as_posix()

    def check_disjoint(self, output: "Folder") -> None:
        s, d = self.root.resolve(), output.root.resolve()
        if s == d or s in d.parents or d in s.parents:
            raise InputError(f"output folder {output} must lie outside the input folder {self} (and not contain it)")

    @contextmanager
    def run(self, key: Key) -> Iterator["Manifest"]:
        """This folder as a run's output: created, locked, cleared of a dead run's temporaries; its manifest."""
        if self.root.exists() and not (self.root / MANIFEST).exists() and any(p.name != LOCK for p in self.root.iterdir()):
            raise InputError(f"{self}: output folder is not empty and holds no medveil manifest; choose an empty folder")
        self.root.mkdir(parents=True, exist_ok=True)
        with _run_lock(self.root):  # under the lock, temporaries left here are a dead run's, never a live one's
            for stale in self.root.rglob(f"{TMP_PREFIX}*"):
                stale.unlink()
            yield Manifest(self.root / MANIFEST, key)


class Manifest:
    """The JSON-lines record of a folder run: one header line, then one line per finished file."""

    def __init__(self, path: Path, key: Key):
        self.path = path
        self.entries: dict[str, dict] = {}
        header = {
            "medveil_manifest": MANIFEST_VERSION,
            "scheme": key.scheme,
            "params": dict(key.params),
            "key_fingerprint": key.fingerprint,
        }
        if path.exists() and path.stat().st_size > 0:
            self._load(header)
        else:  # an empty manifest (a disk full before its header was written) records nothing
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(header, sort_keys=True) + "\n")

    def _load(self, header: dict) -> None:
        with open(self.path) as fh:
            text = fh.read()
        if not text.endswith("\n"):  # a record torn by a power cut: the next one starts on a line of its own
            with open(self.path, "a") as fh:
                fh.write("\n")
        lines = text.splitlines()
        try:
            found = json.loads(lines[0])
        except (IndexError, json.JSONDecodeError):
            raise InputError(f"{self.path}: corrupt manifest; move the output folder aside and start again") from None
        if found.get("key_fingerprint") != header["key_fingerprint"]:
            raise InputError(
                f"{self.path.parent} was written with key {found.get('key_fingerprint')}, not "
                f"{header['key_fingerprint']}; use that key or another output folder"
            )
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interruption
                continue
            self.entries[entry["source"]] = entry

    def record(self, rel: str, out_rel: str, written: Written) -> None:
        """Append that ``rel`` is done as ``out_rel``; an output lost to a power cut fails :func:`still_done` later."""
        entry = {"source": rel, "sha256": written.source_sha256, "output": out_rel,
                 "output_size": written.output_size, "output_sha256": written.output_sha256}
        self.entries[rel] = entry
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")


def _init_worker(parent: int) -> None:
    # Parallelism comes from the processes. Importing numba just to say so would cost each worker
    # ~0.3 s; it reads this when (if ever) a volume loads the compiled loop.
    if "numba" in sys.modules:
        sys.modules["numba"].set_num_threads(1)
    else:
        os.environ["NUMBA_NUM_THREADS"] = "1"

    def exit_with_parent() -> None:  # a SIGKILLed run must not leave its workers behind
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()


@contextmanager
def _run_lock(dst: Path) -> Iterator[None]:
    """Hold the output folder's lock for a run; a second run into it is refused, not interleaved.

    An OS file lock (flock) is released by the kernel when its process dies, even by SIGKILL.
    """
    with open(dst / LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise InputError(f"{dst}: another medveil run (pid {holder}) is writing to this folder; "
                             "wait for it to finish or choose another output folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield


_worker_schemes: dict[str, Scheme] = {}  # per worker process (pool or Dask): each key's scheme, made once


def worker_scheme(key: Key) -> Scheme:
    """``key``'s scheme, made once per worker process."""
    if key.fingerprint not in _worker_schemes:
        _worker_schemes[key.fingerprint] = from_key(key)
    return _worker_schemes[key.fingerprint]


def _obfuscate_in_worker(key: Key, src: str | Path, dst: str | Path, burned_in_text: str,
                         record: dict | None) -> Written | None:
    return obfuscate_recorded(Path(src), Path(dst), worker_scheme(key), burned_in_text, record)


def _run_on_dask(client, work, scheme: Scheme, jobs: list[tuple], burned_in_text: str) -> Iterator:
    """``(index, result, error)`` for each of ``jobs`` as Dask workers finish them, in any order.

    The key travels to the workers once (:func:`~medveil.cluster.scatter_secret`); task names carry
    no file name either.
    A task whose worker dies is rerun elsewhere by Dask; its outputs are written atomically, so a
    rerun replaces nothing but temporaries and its own files, with the same bytes.
    """
    import uuid

    from distributed import as_completed

    from medveil.cluster import scatter_secret

    key = scatter_secret(client, scheme.key)
    run = uuid.uuid4().hex[:8]
    workers = len(client.scheduler_info()["workers"])
    futures = {client.submit(_work_batch, work, key, batch, burned_in_text, pure=False,
                             key=f"medveil-obfuscate-{run}-{i}"): batch for i, batch in enumerate(_batches(jobs, workers))}
    for future in as_completed(futures):
        yield from _outcomes(future, futures.pop(future))  # released: a worker lost later redoes no finished file


def _batches(jobs: list[tuple], workers: int) -> list[list[tuple]]:
    """``(index, source, target, record)`` for ``jobs``, cut into tasks of several files each.

    A task costs a few milliseconds of scheduling, as much as a small DICOM file's work, so each
    carries up to :data:`BATCH_FILES`, while every worker still gets :data:`BATCHES_PER_WORKER`
    tasks or more to balance the load.
    """
    size = max(1, min(BATCH_FILES, len(jobs) // (BATCHES_PER_WORKER * max(1, workers))))
    numbered = [(index, str(source), str(target), record) for index, (source, target, record) in enumerate(jobs)]
    return [numbered[start:start + size] for start in range(0, len(numbered), size)]


def _outcomes(future, batch: list[tuple]) -> list[tuple]:
    """A finished batch's ``(index, result, error)``; every file of it fails with the task where the task
    itself failed (a worker that crashed on one of its files, say), as a failed file does."""
    error = future.exception()
    return future.result() if error is None else [(index, None, error) for index, *_ in batch]


def _work_batch(work, key: Key, batch: list[tuple], burned_in_text: str) -> list[tuple]:
    """``(index, result, error)`` for each ``(index, source, target, record)`` of ``batch``, one after another."""
    outcomes = []
    for index, source, target, record in batch:
        try:
            outcomes.append((index, work(key, source, target, burned_in_text, record), None))
        except Exception as exc:
            outcomes.append((index, None, exc))
    return outcomes


def obfuscate_tree(src: Path, dst: Path, scheme: Scheme, workers: int = 1, progress: bool = True,
                   burned_in_text: str = "refuse", scheduler: str | None = None) -> BatchReport:
    """Obfuscate every supported file below ``src`` into the mirrored tree ``dst``.

    Parameters
    ----------
    src, dst : Path or str
        Input and output folders; they must not overlap. Either may be an fsspec URL
        (``memory://scans``, ``s3://bucket/scans``; ``file://`` is a local path): each file is then
        staged through a local temporary folder where it is processed, and the manifest kept in
        ``dst`` is rewritten whole as the run goes (see :mod:`medveil.io.remote`).
    scheme : Scheme
        The key-bound scheme to apply.
    workers : int
        Processes to use (1 runs in this process).
    progress : bool
        Show a progress bar on stderr.
    burned_in_text : str
        What to do with text OCR finds in the pixels: ``refuse`` (the file fails), ``mask`` or ``off``
        (see :func:`screen_text`).
    scheduler : str, optional
        Run the files as Dask tasks: ``"local"`` (a LocalCluster of ``workers`` processes) or a
        scheduler's address. Workers read ``src`` and write ``dst`` themselves (a folder they all
        reach); this process alone keeps the manifest, appending each result as it arrives, so an
        interrupted run resumes as a local one does.
    """
    source, output = _folders(src, dst)
    if not source.is_dir():
        raise InputError(f"{source}: no such folder")
    source.check_disjoint(output)
    unwalkable: list[tuple[str, str]] = []
    files = source.walk(unwalkable)
    if not files and not unwalkable:
        raise InputError(f"{source}: folder holds no files")
    with output.run(scheme.key) as manifest:
        report = BatchReport(failed=unwalkable)
        todo: list[tuple[str, str]] = []  # (source rel, output rel); workers skip what is still done
        claimed: dict[str, str] = {}
        for rel in files:
            try:
                out_rel = source.output_name(rel)
            except InputError as exc:
                report.failed.append((rel, str(exc)))
                continue
            if out_rel in claimed:
                report.failed.append((rel, f"{source.location(rel)}: its output {out_rel} is already that of {claimed[out_rel]}"))
                continue
            claimed[out_rel] = rel
            todo.append((rel, out_rel))

        bar = _Bar(total=len(todo), desc="obfuscating", unit="file", disable=not progress)
        jobs = [(source.location(rel), output.location(out_rel), _record_for(manifest.entries.get(rel), out_rel))
                for rel, out_rel in todo]
        work = _obfuscate_in_worker
        if source.remote:
            from medveil.io.remote import obfuscate_staged as work
        for index, written, error in run_jobs(work, scheme, jobs, burned_in_text, workers, scheduler):
            rel, out_rel = todo[index]
            if error is not None:
                report.failed.append((rel, _reason(error)))
            elif written is None:
                report.skipped.append(rel)
            else:
                manifest.record(rel, out_rel, written)
                report.done.append(rel)
            bar.update()
        bar.close()
        return report


def _record_for(entry: dict | None, out_rel: str) -> dict | None:
    """The manifest's record of a file, for its worker's resume check, if it names the output this run writes."""
    return entry if entry is not None and entry.get("output") == out_rel else None


def _folders(src: str | os.PathLike, dst: str | os.PathLike) -> tuple[Folder, Folder]:
    """Local folders for paths and ``file://`` URLs; fsspec folders, both of them, where either is another URL."""
    from medveil.io.remote import is_url, local_path

    src, dst = local_path(src), local_path(dst)
    if not (is_url(src) or is_url(dst)):
        return Folder(src), Folder(dst)
    from medveil.io.remote import RemoteFolder

    return RemoteFolder(src), RemoteFolder(dst)


def run_jobs(work, scheme: Scheme, jobs: list[tuple], burned_in_text: str, workers: int = 1,
             scheduler: str | None = None) -> Iterator[tuple[int, Written | None, BaseException | None]]:
    """``(index, result, error)`` for each ``work(key, src, dst, burned_in_text, record)`` of ``jobs`` as it finishes.

    ``result`` is what ``work`` returned, or None where it raised ``error``.

    In this process (``workers`` 1), a pool of ``workers`` processes, or Dask (``scheduler``). The
    key travels to each worker once; ``work`` makes its scheme there, once per key.
    """
    _worker_schemes.setdefault(scheme.key.fingerprint, scheme)  # this process's own work and forked workers'
    if scheduler is not None:
        from medveil.cluster import dask_client

        with dask_client(scheduler, workers) as client:
            yield from _run_on_dask(client, work, scheme, jobs, burned_in_text)
    elif workers <= 1 or len(jobs) <= 1:
        for index, job in enumerate(jobs):
            yield from _work_batch(work, scheme.key, [(index, *job)], burned_in_text)
    else:
        with ProcessPoolExecutor(workers, mp_context=pool_context(), initializer=_init_worker,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_work_batch, work, scheme.key, batch, burned_in_text): batch
                       for batch in _batches(jobs, workers)}
            for future in as_completed(futures):
                yield from _outcomes(future, futures[future])


def pool_context() -> multiprocessing.context.BaseContext:
    """How to start a folder run's worker processes: fork where that is safe, spawn where not.

    A forked worker starts in milliseconds with this process's imports; a spawned one imports
    medveil anew (~0.4 s each, which made two workers slower than one on a 200 MB folder). Fork is
    unsafe once another thread runs (it may hold a lock the child inherits held) or once numba or
    torch is loaded (their thread pools do not survive a fork), so those processes spawn. A forked
    worker shares the output folder's lock (:func:`_run_lock`): a killed run's folder stays locked
    until its workers, which follow it within half a second, have stopped writing.
    """
    if threading.active_count() > 1 or not {"numba", "torch"}.isdisjoint(sys.modules):
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context("fork")


class _Bar(tqdm):
    monitor_interval = 0  # no monitor thread, so a folder run can fork its workers (pool_context)


def _reason(error: BaseException) -> str:
    """One line saying why a file failed (library errors already name the file)."""
    if isinstance(error, MedveilError):
        return str(error)
    return f"{error.__class__.__name__}: {first_line(error)}"
