"""Build the API reference from the docstrings, offline: one HTML page per public package (pdoc).

    .venv/bin/python scripts/build-api-docs.py [OUTPUT]     # default build/api; `make docs` runs it

The packages are medveil's public ones; ``medveil.cli`` (the command line, documented by ``--help``)
is left out.
"""

import sys
from pathlib import Path

import pdoc

PACKAGES = ["medveil", "medveil.transforms", "medveil.metrics", "medveil.io", "medveil.gateway", "medveil.schemes", "medveil.attacks", "medveil.data",
            "medveil.evaluation", "medveil.bench", "medveil.nn", "medveil.training", "medveil.privacynet",
            "medveil.service"]


def main() -> None:
    output = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "build" / "api")
    pdoc.render.configure(docformat="numpy", footer_text="medveil")
    pdoc.pdoc(*PACKAGES, output_directory=output)
    print(f"API reference: {output / 'index.html'}")


if __name__ == "__main__":
    main()
