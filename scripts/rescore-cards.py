"""Rescore the committed full benchmark's cards with new attack cells, without re-running the rest.

    .venv/bin/python scripts/rescore-cards.py ATTACK[,ATTACK...] [-o out/rescore] [--results docs/results/bench-full]

A full re-run costs about three and a half hours on the 2-core machine. When attacks are added (or
the verdict rule changes), this computes only the named attacks' cells for every setting of the
full profile (cached in ``out/rescore/cells``, each under its own key, as the grid does), and
scores them together with what the committed cards hold: the strongest attack of each setting and
threat model, their linkage, and the settings' accuracy. It rewrites ``cards.csv`` and
``recommendation.md`` there (``report.md``/``report.html`` stay those of the last full run), then
the README's table and the package's cards (``update-readme-cards.py``).
"""

import argparse
import csv
import runpy
import sys
import time
from dataclasses import replace
from pathlib import Path

from medveil.bench import PROFILES, run_grid
from medveil.bench.grid import Cell
from medveil.bench.verdicts import recommendation, summarise, write_cards
from medveil.data import load_dataset
from medveil.schemes import Setting

root = Path(__file__).resolve().parent.parent
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("attacks", help="comma-separated attack names")
parser.add_argument("-o", "--output", type=Path, default=root / "out" / "rescore")
parser.add_argument("--results", type=Path, default=root / "docs" / "results" / "bench-full")
args = parser.parse_args()

profile = replace(PROFILES["full"], attacks=frozenset(args.attacks.split(",")), models=())  # no utility cells
committed = list(csv.DictReader(open(args.results / "cards.csv")))
dataset = load_dataset(committed[0]["dataset"], profile.size)
started = time.perf_counter()
fresh = run_grid(dataset, profile, args.output)
failed = [r for r in fresh if r["status"] == "failed"]
if failed:
    raise SystemExit("failed cells: " + "; ".join(f"{r['cell'].setting.label} {r['cell'].attack}: {r['error']}" for r in failed))
print(f"{len(fresh)} cells ({sum(r['status'] == 'cached' for r in fresh)} cached) in {time.perf_counter() - started:.0f} s")

records = list(fresh)
utility = {}
for card in committed:
    if card["verdict"] == "guess":
        continue  # guesses are measured afresh
    setting = Setting.from_row(card)
    row = {k: card[k] for k in ("attack", "attacker_data", "queries", "ssim", "psnr", "ms_ssim", "linkage_top1",
                                "linkage_chance", "capability")}
    records.append({"cell": Cell("attack", setting, attack=card["attack"]), "status": "done", "result": {"row": row}})
    utility[setting] = float(card["accuracy"])
    utility[Setting("plain")] = float(card["plain_accuracy"])
for setting, accuracy in utility.items():  # each setting's best server model's mean accuracy, as the cards hold it
    records.append({"cell": Cell("utility", setting), "status": "done",
                    "result": {"row": {"model": "its best server model", "accuracy": accuracy, **dict.fromkeys(("f1", "ssim", "psnr"), float("nan"))}}})
rows = summarise(records, profile.settings)
write_cards(args.results / "cards.csv", dataset.name, rows)
(args.results / "recommendation.md").write_text("\n".join(recommendation(rows)) + "\n")
print(f"rescored {args.results / 'cards.csv'} and recommendation.md")
sys.argv = [str(root / "scripts" / "update-readme-cards.py"), str(args.results)]
runpy.run_path(sys.argv[0], run_name="__main__")
