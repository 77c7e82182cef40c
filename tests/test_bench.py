from pathlib import Path

import numpy as np
from PIL import Image

from medveil.bench import Profile, run_grid, write_report
from medveil.bench.grid import Cell, cells_of, run_cell
from medveil.data import load_folder
from medveil.schemes import Setting


def tiny_dataset(root, rng, n=14, size=40):
    for label, cls in enumerate(("no", "yes")):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            yy, xx = np.mgrid[:size, :size]
            img = 40 + 150 * ((yy - 12 - label * 14) ** 2 + (xx - 10 - i) ** 2 < 40) + rng.integers(0, 30, (size, size))
            Image.fromarray(img.astype(np.uint8)).save(root / cls / f"{i}.png")
    return load_folder(root, 48)


PROFILE = Profile("test", size=48, epochs=1, seeds=1, attack_epochs=1, settings=(
    Setting("plain"), Setting("skk"), Setting("intensity", (("levels", 1),))),  # levels=1 is invalid: must fail
    attacks=frozenset({"leading-bit", "chosen-plaintext"}))


def test_grid_caches_resumes_and_reports_a_failing_scheme(tmp_path, rng):
    data = tiny_dataset(tmp_path / "d", rng)
    calls = []

    def counting(cell, *args):
        calls.append(cell)
        return run_cell(cell, *args)

    first = run_grid(data, PROFILE, tmp_path / "out", progress=False, compute=counting)
    assert len(first) == len(cells_of(PROFILE)) == 5
    assert (tmp_path / "out" / "bench.secret").stat().st_mode & 0o777 == 0o600  # the cells' keys derive from it
    status = {(r["cell"].setting.label, r["cell"].kind): r["status"] for r in first}
    assert status[("plain", "utility")] == status[("skk", "utility")] == status[("skk", "attack")] == "done"
    assert status[("intensity levels=1", "utility")] == status[("intensity levels=1", "attack")] == "failed"
    assert "levels" in next(r["error"] for r in first if r["status"] == "failed")

    calls.clear()
    again = run_grid(data, PROFILE, tmp_path / "out", progress=False, compute=counting)
    assert [c.setting.label for c in calls] == ["intensity levels=1"] * 2  # only the failed cells are retried
    assert [r["status"] for r in again if r["cell"].setting.scheme != "intensity"] == ["cached"] * 3

    md, page = write_report(tmp_path / "out", data, PROFILE, again, "medveil bench ...")
    text, html = md.read_bytes(), page.read_bytes()
    write_report(tmp_path / "out", data, PROFILE, run_grid(data, PROFILE, tmp_path / "out", progress=False),
                 "medveil bench ...")  # drawn again from the cache: the same files, byte for byte
    assert md.read_bytes() == text and page.read_bytes() == html
    text = text.decode()
    assert "## Privacy cards" in text and "**skk**" in text and "Failed cells" in text
    assert "U-Nets train 1 epochs" in text and "{profile." not in text  # every field of the text is filled in
    assert "ParameterError" in page.read_text() and (tmp_path / "out" / "tradeoff.png").is_file()
    assert (tmp_path / "out" / "figures" / "d-skk-leading-bit-none.png").is_file()
    cards = (tmp_path / "out" / "cards.csv").read_text().splitlines()
    assert cards[0].startswith("dataset,scheme,params,capability,attack") and any(",skk,,ciphertext-only,leading-bit," in c for c in cards)


def test_bench_options_reach_their_attack_and_are_cached_apart():
    from dataclasses import replace

    from medveil.bench.grid import PROFILES, cells_of
    from medveil.cli.evaluate import _attack_options

    options = _attack_options(["kerckhoffs-unet.keys=32"])
    assert options == (("kerckhoffs-unet", (("keys", 32),)),)
    cells = cells_of(replace(PROFILES["full"], options=options))
    kerckhoffs = [c for c in cells if c.attack == "kerckhoffs-unet"]
    assert kerckhoffs and all(dict(c.options) == {"keys": 32} and c.file_name("d").endswith("-keys32.json")
                              for c in kerckhoffs)
    assert all(not c.options for c in cells if c.attack != "kerckhoffs-unet")


def test_a_card_whose_images_hold_but_whose_patients_link_says_links():
    from medveil.bench.verdicts import card_text

    strongest = {"ssim": 0.25, "attack": "kerckhoffs-unet", "attacker_data": "prior"}
    guess = {"ssim": 0.23, "attack": "prior-mean", "attacker_data": "prior"}
    entry = {"setting": Setting("block-shuffle", (("block", 8),)), "strongest": strongest, "strongest_guess": guess,
             "by_capability": {"ciphertext-only": strongest}, "guess": {"ciphertext-only": guess},
             "verdicts": {"ciphertext-only": "links"}}
    assert card_text(entry).startswith("links: no image recovered beyond the guess (best: kerckhoffs-unet (prior "
                                        "data), SSIM 0.25, +0.02 over the guess), but")
    entry["verdicts"] = {"ciphertext-only": "holds"}
    assert card_text(entry).startswith("holds: no attack tried here recovers more than the guess")


def test_committed_reports_have_every_field_filled_in():
    for report in Path(__file__).resolve().parents[1].glob("docs/results/*/report.*"):
        assert "{profile." not in report.read_text(), report


def test_a_scheme_designed_here_is_not_yet_attacked_until_an_attack_of_its_own_has_run():
    from medveil.attacks import attack_spec
    from medveil.bench.verdicts import NOT_YET_ATTACKED, summarise
    from medveil.schemes import scheme_class

    assert scheme_class("warp-smooth").designed_here and scheme_class("block-shuffle").designed_here
    assert "warp-smooth" in attack_spec("smooth-unmix").written_for
    assert "block-shuffle" in attack_spec("jigsaw").written_for
    setting = Setting("warp-smooth", (("block", 4), ("size", 32)))

    def record(attack, capability, ssim):
        row = {"attack": attack, "attacker_data": "prior", "queries": 0, "ssim": ssim, "psnr": 10.0, "ms_ssim": 0.3,
               "linkage_top1": 0.0, "linkage_chance": 0.01, "capability": capability}
        return {"cell": Cell("attack", setting, attack=attack), "status": "done", "result": {"row": row}}

    generic = [record("kerckhoffs-unet", "ciphertext-only", 0.2), record("prior-mean", "ciphertext-only", 0.23)]
    before = summarise(generic, [setting])[0]
    assert before["verdicts"] == {"ciphertext-only": NOT_YET_ATTACKED}  # generic attacks alone judge nothing
    after = summarise(generic + [record("smooth-unmix", "ciphertext-only", 0.24)], [setting])[0]
    assert after["verdicts"] == {"ciphertext-only": "holds"}


def test_an_images_only_attack_that_used_leaked_pairs_counts_only_where_pairs_leak():
    from medveil.bench.verdicts import summarise

    setting = Setting("block-shuffle", (("block", 8),))

    def record(attack, capability, ssim, linkage):
        row = {"attack": attack, "attacker_data": "none", "queries": 0, "ssim": ssim, "psnr": 10.0, "ms_ssim": 0.3,
               "linkage_top1": linkage, "linkage_chance": 0.01, "capability": capability}
        return {"cell": Cell("attack", setting, attack=attack), "status": "done", "result": {"row": row}}

    # known-pairs on block-shuffle is the jigsaw (an images-only attack) oriented by the pairs' plain images
    records = [record("jigsaw", "ciphertext-only", 0.05, 0.40), record("jigsaw", "known-pairs", 0.06, 0.50),
               record("prior-mean", "ciphertext-only", 0.23, 0.0)]
    entry = summarise(records, [setting])[0]
    assert entry["linked"]["ciphertext-only"]["linkage_top1"] == 0.40
    assert entry["linked"]["known-pairs"]["linkage_top1"] == 0.50
    assert entry["by_capability"]["oracle"]["ssim"] == 0.05  # the service's images alone: in every column


def test_side_by_side_the_cells_that_train_start_first_one_to_a_task(tmp_path, rng, monkeypatch):
    """A minutes-long cell handed out last keeps one worker busy while the others wait (the grid's
    order put the quick profile's U-Nets after its minute of cheap cells, two to a task)."""
    from medveil.bench import grid

    handed = {}

    def runner(work, context, jobs, workers, scheduler, per_task=None):
        handed.update(cells=[cell for cell, in jobs], per_task=per_task)
        return iter(())

    monkeypatch.setattr(grid.parallel, "run", runner)
    run_grid(tiny_dataset(tmp_path / "d", rng), grid.PROFILES["quick"], tmp_path / "out", progress=False,
             scheduler="local")
    training = [grid.trains(cell) for cell in handed["cells"]]
    assert sorted(training, reverse=True) == training and 0 < sum(training) < len(training)
    assert len(handed["cells"]) == len(cells_of(grid.PROFILES["quick"])) and handed["per_task"] == 1
