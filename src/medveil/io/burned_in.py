"""Text burned into the pixels (names, record numbers, dates): find it with Tesseract, mask it.

The intensity mapping sends every pixel of one glyph to one code, so text drawn into an image stays
legible after obfuscation; header de-identification cannot reach it. This module looks for text in
the *plain* pixels, before any scheme runs, so a file is refused or masked while the text is still
what a reader would see.

Tesseract is the detector, as in Microsoft Presidio's DICOM image redactor. It runs in this process
through tesserocr, whose wheel carries the library (Tesseract 5.5), with the English model of
Debian's ``tesseract-ocr-eng``, loaded once per process. Calling the ``tesseract`` program instead,
as pytesseract does, loads the model for every image (0.1 s of the 0.16 s a 512×512 slice took),
and the program's OpenMP threads spin against each other and against our workers (tesseract issue
#3109); the wheel's library has none.

Tesseract reads dark text on white best, and annotations are drawn bright, so each plane is shown
to it twice: scaled to 8 bits over its own range and inverted, and with only its brightest values in
black (text drawn at the top of the range stands alone there, away from the anatomy that confuses
page layout). Small planes are enlarged. Every view of every plane is tiled into pages of up to 16
megapixels, so a volume costs a Tesseract pass per page, not per slice. A word counts as text when
Tesseract is confident of it and it has at least :data:`MIN_CHARACTERS` letters or digits, so the
speckle of anatomy is not reported; the other words on a text line go with it (a name Tesseract
half-reads still sits beside the word it read well). Measured detection rates are in
``benchmarks/bench_burned_in.py``: OCR misses some text, so :func:`find_text` is a screen, not a proof.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

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
# Where Debian, Fedora, Homebrew and a source build put the models; TESSDATA_PREFIX comes first.
TESSDATA_FOLDERS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                    "/usr/share/tessdata", "/usr/local/share/tessdata", "/opt/homebrew/share/tessdata")


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


def tessdata() -> str | None:
    """Return the folder holding Tesseract's English model (``eng.traineddata``), or None where there is none."""
    folders = ([os.environ["TESSDATA_PREFIX"]] if "TESSDATA_PREFIX" in os.environ else []) + list(TESSDATA_FOLDERS)
    return next((folder for folder in folders if Path(folder, "eng.traineddata").is_file()), None)


def tesseract_available() -> bool:
    """Whether Tesseract's English model is installed (the burned-in text screen needs it)."""
    return tessdata() is not None


_engines: dict[int, tuple] = {}  # per process (a forked worker must not share its parent's): engine, lock


def _engine() -> tuple:
    """Return this process's Tesseract and the lock that serialises its use (one image at a time per engine)."""
    if os.getpid() not in _engines:
        from tesserocr import PSM, PyTessBaseAPI

        _engines[os.getpid()] = PyTessBaseAPI(path=tessdata(), lang="eng", psm=PSM.SPARSE_TEXT), threading.Lock()
    return _engines[os.getpid()]


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
                tile = tile.resize((w * scale, h * scale), Image.Resampling.BICUBIC if j == 0 else Image.Resampling.NEAREST)
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
        raise InputError("burned-in text detection needs Tesseract's English model (apt-get install "
                         "tesseract-ocr-eng, or set TESSDATA_PREFIX to the folder holding eng.traineddata); "
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


def _words(page: np.ndarray) -> list[tuple[int, str, float, tuple[int, int, int, int]]]:
    """``(line, text, confidence, (left, top, right, bottom))`` for each word Tesseract reads on an 8-bit ``page``."""
    from PIL import Image
    from tesserocr import RIL, iterate_level

    engine, lock = _engine()
    words = []
    with lock:
        engine.SetImage(Image.fromarray(page))
        engine.Recognize()
        found = engine.GetIterator()
        line = -1
        for word in iterate_level(found, RIL.WORD) if found is not None else ():
            if word.Empty(RIL.WORD):  # a page with nothing on it still yields one empty word
                continue
            line += word.IsAtBeginningOf(RIL.TEXTLINE)
            words.append((line, word.GetUTF8Text(RIL.WORD), word.Confidence(RIL.WORD), word.BoundingBox(RIL.WORD)))
    return words


def _read_page(planes: np.ndarray) -> list[TextBox]:
    page, scale, th, tw, columns = _page(planes)
    words = _words(page)
    text_lines = {line for line, text, confidence, _ in words
                  if confidence >= MIN_CONFIDENCE and sum(ch.isalnum() for ch in text) >= MIN_CHARACTERS}
    boxes = []
    for line, text, confidence, (left, top, right, bottom) in words:
        if line not in text_lines or not any(ch.isalnum() for ch in text):
            continue
        row, col = (top - _GAP) // th, (left - _GAP) // tw
        index = (row * columns + col) // 2
        if row < 0 or col < 0 or col >= columns or index >= planes.shape[0]:
            continue
        y0, x0 = top - _GAP - row * th, left - _GAP - col * tw
        boxes.append(TextBox(index, y0 // scale, x0 // scale, math.ceil((bottom - top) / scale),
                             math.ceil((right - left) / scale), text, confidence))
    return boxes


def mask_text(planes: np.ndarray, boxes: list[TextBox]) -> np.ndarray:
    """Return a copy of ``planes`` with every box (padded by a few pixels) set to its plane's minimum."""
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
