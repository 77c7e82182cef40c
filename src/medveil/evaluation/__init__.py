"""Evaluations that produce the project's numbers: utility (what a model can still learn) and privacy (what an attacker recovers)."""

import csv
from pathlib import Path
from typing import Iterable, Sequence

from medveil._atomic import atomic_path


def write_csv(path: Path, rows: Iterable[dict], columns: Sequence[str]) -> None:
    """Write ``rows`` (only ``columns``, in that order) to ``path`` via a temporary file and a rename."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({c: row[c] for c in columns} for row in rows)
