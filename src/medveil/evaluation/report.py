"""The one place reports are written from: tables, ± formatting and atomic CSV files.

Every report (utility, privacy, Privacy-Net, structural sweep, benchmark) builds its tables as
lists of rows of strings, the first row the header, and renders them with :func:`markdown_table`
or :func:`html_table`; numbers go through :func:`pm` and :func:`number`, so a missing value reads
"–" and an exact reconstruction's PSNR "∞" everywhere.
"""

from __future__ import annotations

import csv
import html
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from medveil._files import atomic_path

MISSING = "–"


def write_csv(path: Path, rows: Iterable[dict], columns: Sequence[str]) -> None:
    """Write ``rows`` (only ``columns``, in that order) to ``path`` via a temporary file and a rename."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({c: row[c] for c in columns} for row in rows)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation; the spread of one value is unknown (nan), of none both are."""
    array = np.array([float(v) for v in values], dtype=float)
    if not len(array):
        return math.nan, math.nan
    return float(array.mean()), float(array.std()) if len(array) > 1 else math.nan


def pm(value: tuple[float, float], scale: float = 1.0, digits: int = 2) -> str:
    """``"mean ± std"`` of a :func:`mean_std` pair times ``scale``; the mean alone for one run; "–" when missing."""
    mean, std = value
    if math.isnan(mean):
        return MISSING
    return f"{mean * scale:.{digits}f}" if math.isnan(std) else f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def number(value, digits: int = 3) -> str:
    """One number: "–" when missing or empty, "∞" for an infinite PSNR."""
    if value in (None, ""):
        return MISSING
    value = float(value)
    return MISSING if math.isnan(value) else ("∞" if math.isinf(value) else f"{value:.{digits}f}")


def markdown_table(table: Sequence[Sequence[str]]) -> list[str]:
    """Markdown lines for ``table`` (first row: the header); a ``|`` inside a cell becomes ``/``."""
    header, *rows = table
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows])


def html_table(table: Sequence[Sequence[str]]) -> str:
    """Return an HTML ``<table>`` for ``table`` (first row: the header), every cell escaped."""
    header, *rows = table
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
