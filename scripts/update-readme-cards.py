"""Regenerate the README's verdict table from a benchmark's cards.csv (default: docs/results/bench-full).

    .venv/bin/python scripts/update-readme-cards.py [docs/results/bench-full/cards.csv]

Replaces what stands between the README's `<!-- cards:begin -->` and `<!-- cards:end -->` markers.
"""

import sys
from pathlib import Path

from medveil.bench.report import cards_markdown

root = Path(__file__).resolve().parent.parent
cards = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "docs" / "results" / "bench-full" / "cards.csv"
readme = root / "README.md"
text = readme.read_text()
begin, end = "<!-- cards:begin -->", "<!-- cards:end -->"
if begin not in text or end not in text:
    raise SystemExit(f"{readme}: the {begin} / {end} markers are missing")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
readme.write_text(f"{head}{begin}\n{cards_markdown(cards)}\n{end}{tail}")
print(f"{readme}: verdict table from {cards}")
