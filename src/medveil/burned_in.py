"""Text burned into the pixels (names, record numbers, dates): find it with Tesseract, mask it.

The intensity mapping sends every pixel of one glyph to one code, so text drawn into an image stays
legible after obfuscation; header de-identification cannot reach it. This module looks for text in
the *plain* pixels, before any scheme runs, so a file is refused or masked while the text is still
what a reader would see.

Tesseract (Debian's ``tesseract-ocr``) is the detector, as in Microsoft Presidio's DICOM image
redactor. It runs with one OpenMP thread: its default threads spin against each other and against
our own workers (a 64×64 image took 2.2–3.4 s instead of 0.31–0.34 s on a 2-core machine; tesseract
issue #3109). pytesseract, which Presidio uses, cannot set the program's environment, so this module
runs the program itself and reads its TSV. Tesseract reads dark text on white best, and annotations are drawn
bright, so each plane is shown to it twice: scaled to 8 bits over its own range and inverted, and
with only its brightest values in black (text drawn at the top of the range stands alone there, away
from the anatomy that confuses page layout). Small planes are enlarged. Every view of every plane is
tiled into pages of up to 16 megapixels, so a volume costs a Tesseract call per page, not per slice. A word counts as text when
Tesseract is confident of it and it has at least :data:`MIN_CHARACTERS` letters or digits, so the
speckle of anatomy is not reported; the other words on a text line go with it (a name Tesseract
half-reads still sits beside the word it read well). Measured detection rates are in
``benchmarks/bench_burned_in.py``: OCR misses some text, so :func:`find_text` is a screen, not a proof.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from medveil.errors import InputError

MIN_CONFIDENCE = 70  # Tesseract's word confidence, 0-100 (60 let anatomy through on Br35H)
MIN_CHARACTERS = 3  # letters or digits in a word
_TARGET_SIDE = 384  # planes smaller than this are enlarged before OCR
_BRIGHT_FRACTION = 0.02  # the top 2 % of a plane's range: where annotations are drawn
_GAP = 16  # blank pixels between tiles, so no word joins two planes
_PAD = 2  # pixels added around a word's box when masking
_PAGE_PIXELS = 16_000_000  # planes go to Tesseract in pages of at most this many pixels

POLICIES = ("refuse", "mask", "off")


@dataclass(frozen=True)
class TextBox:
    """A word found in plane ``plane``: rows ``[top, top + height)``, columns ``[left, left + width)``."""

    plane: int
    top: int
    left: int
    height: int
    width: int
    text: str
    confidence: float


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


def _views(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two 8-bit views of one plane for OCR: grey levels inverted, and its brightest values in black."""
    low, high = float(plane.min()), float(plane.max())
    unit = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
    grey = (255 - 255 * unit).astype(np.uint8)
    bright = np.where(unit >= 1 - _BRIGHT_FRACTION, 0, 255).astype(np.uint8) if high > low else grey
    return grey, bright


def _page(planes: np.ndarray) -> tuple[np.ndarray, int, int, int, int]:
    """Both views of every plane of ``(n, H, W)``, enlarged and tiled into one 8-bit page.

    Returns the page, the enlargement factor, the tile pitch (rows, columns) in page pixels and the
    number of tile columns; tile ``2 i`` and ``2 i + 1`` show plane ``i``.
    """
    from PIL import Image

    n, h, w = planes.shape
    scale = max(1, math.ceil(_TARGET_SIDE / max(h, w)))
    th, tw = h * scale + _GAP, w * scale + _GAP
    columns = max(1, min(2 * n, 4096 // tw))
    rows = math.ceil(2 * n / columns)
    page = np.full((rows * th + _GAP, columns * tw + _GAP), 255, np.uint8)
    for i, plane in enumerate(planes.astype(np.float64)):
        for j, view in enumerate(_views(plane)):
            tile = Image.fromarray(view)
            if scale > 1:
                tile = tile.resize((w * scale, h * scale), Image.BICUBIC if j == 0 else Image.NEAREST)
            r, c = divmod(2 * i + j, columns)
            page[_GAP + r * th: _GAP + r * th + h * scale, _GAP + c * tw: _GAP + c * tw + w * scale] = np.asarray(tile)
    return page, scale, th, tw, columns


def find_text(planes: np.ndarray) -> list[TextBox]:
    """Words Tesseract reads in ``planes``.

    Parameters
    ----------
    planes : ndarray
        ``(n, H, W)`` grayscale or ``(n, H, W, C)`` colour planes of any numeric dtype, as displayed
        (rows top to bottom).

    Returns
    -------
    list of TextBox
        Boxes in each plane's own pixel coordinates; empty when no text was found.
    """
    if not tesseract_available():
        raise InputError("burned-in text detection needs the tesseract program (apt-get install tesseract-ocr); "
                         "or pass --burned-in-text off if you know the images hold no text")
    if planes.ndim == 4:
        planes = planes.mean(axis=-1)
    n, h, w = planes.shape
    scale = max(1, math.ceil(_TARGET_SIDE / max(h, w)))
    per_page = max(1, _PAGE_PIXELS // (2 * (h * scale + _GAP) * (w * scale + _GAP)))
    boxes = []
    for first in range(0, n, per_page):  # a whole CT volume on one page would be too big for Tesseract
        boxes += [dataclasses.replace(box, plane=box.plane + first)
                  for box in _read_page(planes[first: first + per_page])]
    return boxes


def _tesseract_words(page: np.ndarray) -> list[dict]:
    """Tesseract's TSV rows for an 8-bit ``page``, one dict per row, its boxes as ints."""
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(page).save(png, format="PNG", compress_level=1)
    run = subprocess.run(["tesseract", "stdin", "stdout", "--psm", "11", "tsv"], input=png.getvalue(),
                         capture_output=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    if run.returncode:
        reason = run.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {run.returncode}"]
        raise InputError(f"tesseract failed: {reason[-1]}")
    header, *rows = run.stdout.decode().splitlines()
    names = header.split("\t")
    words = [dict(zip(names, row.split("\t"))) for row in rows if row]
    for word in words:
        for name in ("block_num", "par_num", "line_num", "left", "top", "width", "height"):
            word[name] = int(word[name])
        word.setdefault("text", "")
    return words


def _read_page(planes: np.ndarray) -> list[TextBox]:
    page, scale, th, tw, columns = _page(planes)
    words = _tesseract_words(page)
    text_lines = {(w["block_num"], w["par_num"], w["line_num"]) for w in words
                  if float(w["conf"]) >= MIN_CONFIDENCE and sum(ch.isalnum() for ch in w["text"]) >= MIN_CHARACTERS}
    boxes = []
    for w in words:
        if (w["block_num"], w["par_num"], w["line_num"]) not in text_lines or not any(ch.isalnum() for ch in w["text"]):
            continue
        row, col = (w["top"] - _GAP) // th, (w["left"] - _GAP) // tw
        index = (row * columns + col) // 2
        if row < 0 or col < 0 or col >= columns or index >= planes.shape[0]:
            continue
        y0, x0 = w["top"] - _GAP - row * th, w["left"] - _GAP - col * tw
        boxes.append(TextBox(index, y0 // scale, x0 // scale, math.ceil(w["height"] / scale),
                             math.ceil(w["width"] / scale), w["text"], float(w["conf"])))
    return boxes


def mask_text(planes: np.ndarray, boxes: list[TextBox]) -> np.ndarray:
    """A copy of ``planes`` with every box (padded by a few pixels) set to its plane's minimum."""
    masked = planes.copy()
    for box in boxes:
        plane = masked[box.plane]
        plane[max(0, box.top - _PAD): box.top + box.height + _PAD,
              max(0, box.left - _PAD): box.left + box.width + _PAD] = plane.min()
    return masked


def describe(boxes: list[TextBox], shown: int = 3) -> str:
    """``'DOE^JOHN', 'MRN' (+2 more)`` for a message."""
    words = ", ".join(repr(b.text) for b in boxes[:shown])
    return words + (f" (+{len(boxes) - shown} more)" if len(boxes) > shown else "")
