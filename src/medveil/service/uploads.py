"""What a request carries, read with bounded memory: PNG headers before pixels, zip archives member by member.

Every function answers bad input with an :class:`HTTPException` (400 malformed, 413 over a limit)
whose detail names the member, so the route that calls it stays a few lines.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Callable, Iterable

import numpy as np
from PIL import Image

from medveil.io.image import first_line
from medveil.service.limits import Limits, http_error

if TYPE_CHECKING:
    from medveil.service.tasks import Task

# Exceptions zipfile raises on members it cannot read: encrypted (RuntimeError), unknown compression
# (NotImplementedError), bad CRC (BadZipFile), corrupt deflate (zlib.error), cut short (EOFError).
_MEMBER_ERRORS = (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError, OSError, ValueError)

# PNG modes an upload may use: 8-bit gray or colour codes, or 16-bit gray codes (12- and 16-bit CT/MR keys).
PNG_MODES = {"L": np.uint8, "RGB": np.uint8, "I;16": np.uint16}


def open_png(fileobj: IO[bytes], name: str, max_side: int) -> Image.Image:
    """Return a PNG opened from its header only (nothing decoded yet); 400 or 413 for anything else."""
    try:
        image = Image.open(fileobj)
        if image.format != "PNG":
            raise ValueError
    except Exception:
        raise http_error(400, f"{name}: not a PNG image") from None
    if max(image.size) > max_side:
        raise http_error(413, f"{name}: {image.size[0]}x{image.size[1]} exceeds the {max_side}-pixel limit")
    if image.mode not in PNG_MODES:
        raise http_error(400, f"{name}: PNG mode {image.mode}; obfuscated images are 8-bit L or RGB, or 16-bit gray")
    return image


def _shape(image: Image.Image) -> tuple[int, ...]:
    return (image.size[1], image.size[0]) + ((3,) if image.mode == "RGB" else ())


def layout(image: Image.Image) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and sample type the PNG decodes to."""
    return _shape(image), np.dtype(PNG_MODES[image.mode])


def decode_png(image: Image.Image, name: str) -> np.ndarray:
    """Return the pixels of a PNG from :func:`open_png`: uint8 ``(H, W)`` or ``(H, W, 3)``, or uint16 ``(H, W)``."""
    try:
        return np.asarray(image)
    except Exception as exc:
        raise http_error(400, f"{name}: corrupt PNG ({first_line(exc)})") from None


def _safe_member(name: str) -> tuple[str, str]:
    """``(class, file)`` of an archive member ``class/file.png``; 400 for anything that could escape."""
    path = PurePosixPath(name)
    if "\\" in name or path.is_absolute() or ".." in path.parts or ":" in name or len(path.parts) != 2:
        raise http_error(400, f"unsafe or unexpected path in archive: {name!r} (expected CLASS/FILE.png)")
    return path.parts[0], path.parts[1]


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, cap: int) -> bytes:
    """Return a member's bytes, read no further than ``cap`` whatever its header claims; 400 if unreadable."""
    try:
        with archive.open(member) as fh:
            data = fh.read(cap + 1)
    except _MEMBER_ERRORS as exc:
        raise http_error(400, f"{member.filename}: unreadable archive member ({first_line(exc)})") from None
    if len(data) > cap:
        raise http_error(413, f"{member.filename}: expands beyond {cap} bytes")
    return data


def _declared_members(fileobj: IO[bytes]) -> int:
    """Return the member count a zip's end record declares.

    It is read before zipfile turns the whole central directory into objects (a million records cost half a gigabyte
    before any limit was checked).
    """
    fileobj.seek(0, io.SEEK_END)
    size = fileobj.tell()
    fileobj.seek(max(0, size - 22 - 0xFFFF))
    tail = fileobj.read()
    fileobj.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise http_error(400, "the upload is not a valid zip archive")
    count = struct.unpack("<H", tail[at + 10:at + 12])[0]
    if count != 0xFFFF:
        return count
    locator = tail[at - 20:at] if at >= 20 else b""  # ZIP64: the count is in the ZIP64 end record
    if not locator.startswith(b"PK\x06\x07"):
        raise http_error(400, "the upload is not a valid zip archive")
    fileobj.seek(struct.unpack("<Q", locator[8:16])[0])
    record = fileobj.read(56)
    fileobj.seek(0)
    if not record.startswith(b"PK\x06\x06") or len(record) < 40:
        raise http_error(400, "the upload is not a valid zip archive")
    return struct.unpack("<Q", record[32:40])[0]




def decoded_size(shape_and_type: tuple[tuple[int, ...], np.dtype]) -> int:
    """Bytes an image of :func:`layout` ``(shape, dtype)`` takes once decoded."""
    shape, dtype = shape_and_type
    return int(np.prod(shape)) * dtype.itemsize


def decode_into(out: np.ndarray, opened: Iterable[Image.Image], names: list[str]) -> np.ndarray:
    """Decode PNGs (:func:`open_png`) into the rows of ``out``, one at a time.

    That way a request's images take their decoded size once, not twice as a list and its stack; ``opened`` may be a
    generator that opens each only when its turn comes.
    """
    for row, (image, name) in enumerate(zip(opened, names)):
        out[row] = decode_png(image, name)
    return out


def read_archive(fileobj: IO[bytes], limits: Limits, admit: Callable[[int], None],
                 task: "Task") -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Read a zip laid out as ``task`` says (:mod:`medveil.service.tasks`).

    Returns the images, labels, class names and the images' file names, in archive order.

    Memory stays bounded whatever the archive holds: the member count is read from the zip's end
    record before the central directory is parsed; members are read one at a time with a size cap
    (zip headers can lie); every PNG header is checked, with the decoded size summed against
    ``limits.max_decoded_bytes``; then ``admit(decoded_bytes)`` is called (it holds the server's
    shared budget and the tenant's quota, or raises), and only then is anything decoded.
    """
    declared = _declared_members(fileobj)
    if declared > 2 * limits.max_images * task.entries_per_image:  # folders' entries count too
        raise http_error(413, f"the archive declares {declared} members, beyond the limit of {limits.max_images} images")
    try:
        archive = zipfile.ZipFile(fileobj)
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise http_error(400, "the upload is not a valid zip archive") from None
    entries: dict[tuple[str, str], zipfile.ZipInfo] = {}
    for member in members:
        where = _safe_member(member.filename)
        if where in entries:  # "a/x.png" and "./a/x.png": one place, two members
            raise http_error(400, f"two members name {'/'.join(where)}: {entries[where].filename!r}, {member.filename!r}")
        entries[where] = member
    if not entries:
        raise http_error(400, "the archive holds no images")
    if len(entries) > limits.max_images * task.entries_per_image:
        raise http_error(413, f"{len(entries)} images exceed the limit of {limits.max_images}")
    folders = sorted({folder for folder, _ in entries})
    task.check_folders(folders)
    layouts, decoded = {}, 0
    for where, member in entries.items():
        layouts[where] = layout(open_png(io.BytesIO(_read_member(archive, member, limits.max_member_bytes)),
                                         member.filename, limits.max_side))
        decoded += decoded_size(layouts[where])
        limits.check_decoded(decoded)

    def decode(at: list[tuple[str, str]], shape: tuple, dtype: np.dtype) -> np.ndarray:
        members = [entries[where] for where in at]
        opened = (open_png(io.BytesIO(_read_member(archive, m, limits.max_member_bytes)), m.filename, limits.max_side)
                  for m in members)  # one member's bytes held at a time
        return decode_into(np.empty((len(members),) + shape, dtype), opened, [m.filename for m in members])

    images_at = [where for where in layouts if task.is_image(where[0])]  # archive order
    image_layouts = {layouts[where] for where in images_at}
    shape, dtype = next(iter(image_layouts))
    if len(image_layouts) != 1 or shape[0] != shape[1] or (task.grayscale_only and len(shape) != 2):
        raise http_error(400, "all images must be square and of one size and mode" + (", grayscale" if task.grayscale_only
                         else "") + f", got {sorted((s, d.name) for s, d in image_layouts)[:3]}")
    names = [name for _, name in images_at]
    task.check_labels(layouts, names, shape)  # headers only: nothing is decoded before admit
    admit(decoded)
    images = decode(images_at, shape, dtype)
    labels, classes = task.labels(folders, [folder for folder, _ in images_at], names, shape, decode)
    return images, labels, classes, names
