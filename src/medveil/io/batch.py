"""Obfuscate one file or a whole folder tree, safely.

A folder run mirrors the source tree into a separate output folder and never writes inside the
source. Every output is written to a temporary name and renamed into place, and a JSON-lines
manifest in the output folder records ``source -> output`` with the source's SHA-256, the output's
size and SHA-256, and the key's fingerprint. Re-running the same command after an interruption skips
what is done (same source bytes, output present with the recorded size and hash) and does the rest; a run with another key into the same output
folder is refused. Files that fail are reported with a one-line reason at the end while the
others complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import stat
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


def obfuscate_image(image: MedicalImage, scheme: Scheme, burned_in_text: str = "refuse") -> MedicalImage:
    """Obfuscated pixels plus de-identified metadata, ready to write in the output format.

    ``burned_in_text`` is the :func:`screen_text` policy for text in the plain pixels.
    """
    _check_mappable(image)
    image, masked = screen_text(image, burned_in_text)
    pixels = scheme(image.pixels)
    fmt = format_named(image.format)
    meta = image.meta
    if fmt.deidentify is not None and meta is not None:
        meta = fmt.deidentify(meta, scheme.key.stream("io/dicom-uid").read(32), text_masked=masked)
    return image.replace(
        pixels=pixels,
        bits=scheme.output_bits or 8 * pixels.dtype.itemsize,
        format=fmt.writes_as,
        meta=meta,
    )


def write_atomic(path: Path, image: MedicalImage) -> None:
    """Write ``image`` to a temporary file beside ``path`` and rename it into place."""
    with atomic_path(path) as tmp:
        write_image(tmp, image)


def obfuscate_file(src: Path, dst: Path, scheme: Scheme, overwrite: bool = False,
                   burned_in_text: str = "refuse") -> None:
    """Obfuscate one file into ``dst`` (written atomically); refuses to overwrite unless asked.

    Every failure is an :class:`InputError` of one line naming ``src``.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise InputError(f"{dst}: already exists; refusing to overwrite")
    if dst.resolve() == src.resolve():
        raise InputError(f"{src}: output would replace the original")
    image = read_image(src)
    try:
        out = obfuscate_image(image, scheme, burned_in_text)
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dst, out)
    except MedveilError as exc:
        raise InputError(f"{src}: {exc}") from None
    except Exception as exc:  # pydicom, nibabel and the OS raise anything from ValueError to OSError
        raise InputError(f"{src}: {exc.__class__.__name__}: {first_line(exc)}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
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


def _check_disjoint(src: Path, dst: Path) -> None:
    s, d = src.resolve(), dst.resolve()
    if s == d or s in d.parents or d in s.parents:
        raise InputError(f"output folder {dst} must lie outside the input folder {src} (and not contain it)")


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
            lines = fh.read().splitlines()
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

    def is_done(self, rel: str, source_sha256: str, out_root: Path) -> bool:
        """The same source bytes were done, and the output is still there, whole and unchanged."""
        entry = self.entries.get(rel)
        if not entry or entry["sha256"] != source_sha256 or "output_sha256" not in entry:
            return False
        output = out_root / entry["output"]
        return (output.is_file() and output.stat().st_size == entry["output_size"]
                and sha256_file(output) == entry["output_sha256"])

    def record(self, rel: str, source_sha256: str, out_rel: str, out_root: Path) -> None:
        output = out_root / out_rel
        entry = {"source": rel, "sha256": source_sha256, "output": out_rel,
                 "output_size": output.stat().st_size, "output_sha256": sha256_file(output)}
        self.entries[rel] = entry
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # the record never claims an output the disk may not hold


def _init_worker(parent: int) -> None:
    import numba

    numba.set_num_threads(1)  # parallelism comes from the processes

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


def _obfuscate_in_worker(key: Key, src: str | Path, dst: str | Path, burned_in_text: str) -> None:
    if key.fingerprint not in _worker_schemes:
        _worker_schemes[key.fingerprint] = from_key(key)
    obfuscate_file(Path(src), Path(dst), _worker_schemes[key.fingerprint], overwrite=True, burned_in_text=burned_in_text)


def _run_on_dask(client, scheme: Scheme, jobs: list[tuple[Path, Path]], burned_in_text: str) -> Iterator:
    """``(index, error or None)`` for each of ``jobs`` as Dask workers finish them, in any order.

    The key travels to the workers once (:func:`~medveil.cluster.scatter_secret`); task names carry
    no file name either.
    A task whose worker dies is rerun elsewhere by Dask; its output is written atomically, so a
    rerun replaces nothing but a temporary.
    """
    import uuid

    from distributed import as_completed

    from medveil.cluster import scatter_secret

    key = scatter_secret(client, scheme.key)
    run = uuid.uuid4().hex[:8]
    futures = {client.submit(_obfuscate_in_worker, key, str(s), str(d), burned_in_text, pure=False,
                             key=f"medveil-obfuscate-{run}-{i}"): i for i, (s, d) in enumerate(jobs)}
    for future in as_completed(futures):
        index = futures.pop(future)  # released: a worker lost later is not made to redo a finished file
        yield index, future.exception()


def obfuscate_tree(src: Path, dst: Path, scheme: Scheme, workers: int = 1, progress: bool = True,
                   burned_in_text: str = "refuse", scheduler: str | None = None) -> BatchReport:
    """Obfuscate every supported file below ``src`` into the mirrored tree ``dst``.

    Parameters
    ----------
    src, dst : Path
        Input and output folders; they must not overlap.
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
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise InputError(f"{src}: no such folder")
    _check_disjoint(src, dst)
    unwalkable: list[tuple[str, str]] = []
    files = walk(src, unwalkable)
    if not files and not unwalkable:
        raise InputError(f"{src}: folder holds no files")
    if dst.exists() and not (dst / MANIFEST).exists() and any(p.name != LOCK for p in dst.iterdir()):
        raise InputError(f"{dst}: output folder is not empty and holds no medveil manifest; choose an empty folder")
    dst.mkdir(parents=True, exist_ok=True)
    with _run_lock(dst):  # under the lock, temporaries left in dst are a dead run's, never a live one's
        for stale in dst.rglob(f"{TMP_PREFIX}*"):
            stale.unlink()
        manifest = Manifest(dst / MANIFEST, scheme.key)

        report = BatchReport(failed=unwalkable)
        todo: list[tuple[str, str, str]] = []  # (source rel, sha256, output rel)
        claimed: dict[str, str] = {}
        for rel in files:
            rel_s = rel.as_posix()
            try:
                out_rel = output_name(rel, src / rel).as_posix()
            except InputError as exc:
                report.failed.append((rel_s, str(exc)))
                continue
            if out_rel in claimed:
                report.failed.append((rel_s, f"{src / rel}: its output {out_rel} is already that of {claimed[out_rel]}"))
                continue
            claimed[out_rel] = rel_s
            try:
                digest = sha256_file(src / rel)
            except OSError as exc:
                report.failed.append((rel_s, f"{src / rel}: cannot be read ({exc.strerror})"))
                continue
            if manifest.is_done(rel_s, digest, dst):
                report.skipped.append(rel_s)
            else:
                todo.append((rel_s, digest, out_rel))

        bar = tqdm(total=len(todo), desc="obfuscating", unit="file", disable=not progress)

        def finish(item: tuple[str, str, str], error: BaseException | None) -> None:
            rel_s, digest, out_rel = item
            if error is None:
                manifest.record(rel_s, digest, out_rel, dst)
                report.done.append(rel_s)
            else:
                report.failed.append((rel_s, _reason(error)))
            bar.update()

        if scheduler is not None:
            from medveil.cluster import dask_client

            with dask_client(scheduler, workers) as client:
                jobs = [(src / item[0], dst / item[2]) for item in todo]
                for index, error in _run_on_dask(client, scheme, jobs, burned_in_text):
                    finish(todo[index], error)
        elif workers <= 1 or len(todo) <= 1:
            for item in todo:
                try:
                    obfuscate_file(src / item[0], dst / item[2], scheme, overwrite=True, burned_in_text=burned_in_text)
                    finish(item, None)
                except Exception as exc:
                    finish(item, exc)
        else:
            context = multiprocessing.get_context("spawn")  # numba's thread pool is not fork-safe
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                     initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(_obfuscate_in_worker, scheme.key, src / item[0], dst / item[2], burned_in_text): item
                           for item in todo}
                for future in as_completed(futures):
                    finish(futures[future], future.exception())
        bar.close()
        return report


def _reason(error: BaseException) -> str:
    """One line saying why a file failed (library errors already name the file)."""
    if isinstance(error, MedveilError):
        return str(error)
    return f"{error.__class__.__name__}: {first_line(error)}"
