"""The privacy cards shipped in the package: safe key defaults, verdict lines, --allow-broken."""

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from medveil.cli import app
from medveil.evaluation import cards
from medveil.keys import Key
from medveil.schemes import generate_key

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def medveil(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_shipped_cards_are_the_committed_full_benchmark():
    shipped = Path(cards.__file__).with_name("cards.csv").read_text()
    assert shipped == (ROOT / "docs/results/bench-full/cards.csv").read_text()
    rows = shipped.splitlines()[1:]
    assert len(cards.shipped_cards()) == sum(",guess," not in row for row in rows) > 0  # guesses are not cards


def test_keygen_without_a_scheme_makes_the_best_rated_useful_setting(tmp_path):
    result = medveil("keygen", "-o", tmp_path / "k.key")
    assert result.exit_code == 0, result.output
    key = Key.load(tmp_path / "k.key")
    scheme, params = cards.best_setting()
    assert key.scheme == scheme and all(key.params[k] == v for k, v in params.items())
    mine = cards.cards_for(key.scheme, key.params)
    assert set(mine) == {"ciphertext-only", "known-pairs", "oracle"}
    assert mine["ciphertext-only"].verdict != "broken"
    # privacy first: no setting ranks better under ciphertext-only, nor, among its equals there, under its worst
    # threat model; accuracy only decides between equals
    rows = [r for r in csv.DictReader(open(ROOT / "docs/results/bench-full/cards.csv")) if r["verdict"] != "guess"]
    level = lambda verdict: cards.LEVELS.index(verdict)
    worst = {}
    for r in rows:
        setting = (r["scheme"], r["params"])
        worst[setting] = max(worst.get(setting, 0), level(r["verdict"]))
    mine_worst = max(level(c.verdict) for c in mine.values())
    for r in rows:
        if r["capability"] == "ciphertext-only":
            assert level(r["verdict"]) >= level(mine["ciphertext-only"].verdict), r
            if level(r["verdict"]) == level(mine["ciphertext-only"].verdict):
                assert worst[(r["scheme"], r["params"])] >= mine_worst, r
    lines = [line for line in result.output.splitlines() if "privacy card" in line]
    assert [line.split(",")[1].split(":")[0].strip() for line in lines] == ["ciphertext-only", "known-pairs", "oracle"]


def test_a_broken_setting_needs_allow_broken(tmp_path):
    refused = medveil("keygen", "--scheme", "intensity", "-o", tmp_path / "k.key")
    assert refused.exit_code == 2 and "broken under ciphertext-only" in refused.output
    assert "--allow-broken" in refused.output and not (tmp_path / "k.key").exists()
    made = medveil("keygen", "--scheme", "intensity", "--allow-broken", "-o", tmp_path / "k.key")
    assert made.exit_code == 0 and "privacy card, ciphertext-only: broken (code-cooccurrence" in made.output

    scans = tmp_path / "scans"
    scans.mkdir()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(scans / "a.png")
    refused = medveil("obfuscate", "--key", tmp_path / "k.key", "--no-progress", scans, tmp_path / "out")
    assert refused.exit_code == 2 and "broken under ciphertext-only" in refused.output
    assert not (tmp_path / "out").exists()
    done = medveil("obfuscate", "--key", tmp_path / "k.key", "--allow-broken", "--no-progress", scans, tmp_path / "out")
    assert done.exit_code == 0, done.output
    assert sum("privacy card" in line for line in done.output.splitlines()) == 3

    # the client refuses before it talks to any server (nothing listens at this address)
    refused = medveil("client", "--server", "http://127.0.0.1:9", "--token", "t", "--key", tmp_path / "k.key",
                      "upload", scans)
    assert refused.exit_code == 2 and "broken under ciphertext-only" in refused.output


def test_key_info_states_the_verdicts_or_that_no_card_measured_the_setting(tmp_path):
    key = generate_key("intensity", levels=50)
    key.save(tmp_path / "a.key")
    generate_key("intensity", bits=16, signed=True, levels=300).save(tmp_path / "b.key")
    shown = medveil("key", "info", tmp_path / "a.key").output
    oracle = cards.cards_for("intensity", key.params)["oracle"]
    assert oracle.attack == "chosen-plaintext+unet" and oracle.line() in shown
    info = json.loads(medveil("key", "info", "--json", tmp_path / "b.key").output)
    assert info["privacy_cards"] == [line for line in info["privacy_cards"] if line.startswith("no privacy card")]
    assert len(info["privacy_cards"]) == 1


def test_cards_name_settings_as_results_do():
    assert cards.cards_for("skk-smooth", generate_key("skk-smooth", block=4).params)["oracle"].params == "block=4"
    assert cards.cards_for("skk-smooth", generate_key("skk-smooth", block=4, channels=3).params) == {}
    assert cards.broken_under_service("tanaka", generate_key("tanaka", block=4).params).attack == "slot-correlation"
    assert cards.broken_under_service("intensity", generate_key("intensity", levels=50).params) is None
