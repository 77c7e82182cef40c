import csv

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from medveil.cli import app
from medveil.evaluation.utility import RESULT_COLUMNS


def test_evaluate_utility_cli_writes_results_report_split_and_figures(tmp_path, rng):
    for label, cls in enumerate(("no", "yes")):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(20):
            img = rng.integers(0, 80, (24, 24)).astype(np.uint8) + (120 if label else 0)
            Image.fromarray(img).save(tmp_path / "d" / cls / f"{i}.png")
    out = tmp_path / "out"
    args = ["evaluate", "utility", "--dataset", str(tmp_path / "d"), "--size", "16", "--levels", "50",
            "--seeds", "1", "--epochs", "1", "--no-progress", "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("results.csv", "report.md", "split.csv", "examples.png", "accuracy.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert list(rows[0]) == RESULT_COLUMNS
    assert [(r["scheme"], r["params"]) for r in rows] == [("plain", ""), ("intensity", "levels=50")]
    assert rows[0]["ssim"] == "" and 0 <= float(rows[1]["ssim"]) < 1
    assert "Beside the published figures" in (out / "report.md").read_text()
    assert not list(out.rglob("*.pt"))  # checkpoints are removed once a run is done

    again = CliRunner().invoke(app, args)  # finished runs are not redone
    assert again.exit_code == 0 and list(csv.DictReader(open(out / "results.csv"))) == rows
