"""The guesses every attack is measured against, and verdicts that count only what an attack adds to them."""

import numpy as np
import pytest

import medveil
from medveil.attacks import AttackerView, attack_spec, available_attacks
from medveil.errors import InputError


def test_prior_mean_is_the_attackers_mean_image_for_every_target(rng):
    own = rng.integers(0, 256, (20, 16, 16), dtype=np.uint8)
    guess = attack_spec("prior-mean").create("skk", {}, 1, False).fit(AttackerView("skk", {}, own))
    out = guess.reconstruct(rng.integers(0, 256, (3, 16, 16), dtype=np.uint8))
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    assert (out == own.mean(0).round().astype(np.uint8)).all()
    with pytest.raises(InputError, match="plain images"):
        guess.fit(AttackerView("skk", {}, own[:0]))


def test_label_mean_reads_each_targets_label_from_the_services_records(rng):
    key = medveil.generate_key("skk")
    scheme = medveil.from_key(key)
    dark, bright = rng.integers(0, 60, (10, 16, 16), dtype=np.uint8), rng.integers(190, 256, (10, 16, 16), dtype=np.uint8)
    held = np.concatenate([dark[:5], bright[:5]])  # what the service holds, with its labels
    view = AttackerView("skk", dict(key.params), np.concatenate([dark[5:], bright[5:]]),
                        obfuscated_set=scheme(held), labels=np.array([0] * 5 + [1] * 5),
                        own_labels=np.array([0] * 5 + [1] * 5))
    guess = attack_spec("label-mean").create("skk", dict(key.params), 1, False).fit(view)
    out = guess.reconstruct(scheme(held[[0, 9]]))
    assert (out[0] == dark[5:].mean(0).round()).all() and (out[1] == bright[5:].mean(0).round()).all()
    with pytest.raises(InputError, match="labels"):
        guess.fit(AttackerView("skk", {}, held, obfuscated_set=scheme(held), labels=np.zeros(10)))


def test_guesses_are_registered_for_every_scheme_and_marked_as_baselines():
    baselines = {a.name: a for a in available_attacks() if a.baseline}
    assert set(baselines) == {"prior-mean", "label-mean"}
    assert baselines["prior-mean"].images_only and not baselines["label-mean"].images_only  # labels: ciphertext-only
    assert all(b.applies_to(s) for b in baselines.values() for s in ("intensity", "skk", "block-shuffle", "structural"))


def test_no_committed_card_says_holds_where_the_strongest_attack_beats_the_guess():
    import csv
    from pathlib import Path

    from medveil.bench.verdicts import HOLDS_MARGIN

    rows = list(csv.DictReader(open(Path(__file__).resolve().parents[1] / "docs/results/bench-full/cards.csv")))
    cards = [r for r in rows if r["verdict"] != "guess"]
    guesses = {(r["scheme"], r["params"], r["capability"]): r for r in rows if r["verdict"] == "guess"}
    assert cards and {(c["scheme"], c["params"], c["capability"]) for c in cards} == set(guesses)
    for card in cards:
        guess = guesses[card["scheme"], card["params"], card["capability"]]
        assert float(card["gain"]) == pytest.approx(float(card["ssim"]) - float(guess["ssim"]))
        if card["verdict"] in ("holds", "links"):
            assert float(card["gain"]) < HOLDS_MARGIN, card
        elif card["verdict"] != "broken":
            assert float(card["gain"]) >= HOLDS_MARGIN, card
