"""Regenerate the README's verdict table and recommendation from a benchmark's output (default: docs/results/bench-full).

    .venv/bin/python scripts/update-readme-cards.py [docs/results/bench-full]

Replaces what stands between the README's `<!-- cards:begin -->` and `<!-- cards:end -->` markers
with the table of cards.csv, and between `<!-- recommendation:begin -->` and
`<!-- recommendation:end -->` with recommendation.md; copies cards.csv into the package
(src/medveil/evaluation/cards.csv), whose verdicts keygen, key info and obfuscate state.
"""

import shutil
import sys
from pathlib import Path

from medveil.bench.verdicts import cards_markdown

root = Path(__file__).resolve().parent.parent
results = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "docs" / "results" / "bench-full"
readme = root / "README.md"
text = readme.read_text()
for name, content in (("cards", cards_markdown(results / "cards.csv")),
                      ("recommendation", (results / "recommendation.md").read_text().strip())):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{readme}: the {begin} / {end} markers are missing")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = f"{head}{begin}\n{content}\n{end}{tail}"
readme.write_text(text)
shutil.copyfile(results / "cards.csv", root / "src" / "medveil" / "evaluation" / "cards.csv")
print(f"{readme}: verdict table and recommendation from {results}; the package's cards.csv from there too")
