"""The benchmark's verdicts.

What each attack recovers beyond the guess, the cards per setting and threat model, cards.csv and the recommendation
drawn from them.

:func:`summarise` turns the grid's records into one entry per setting (utility, the strongest attack
and guess of each threat model, linkage, verdicts); :func:`write_cards` and :func:`recommendation`
are what the report, the README's table and the shipped cards are made from.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from medveil.attacks import CAPABILITIES
from medveil.errors import InputError, MedveilError
from medveil.evaluation.cards import TARGET_POINTS
from medveil.evaluation.report import markdown_table, mean_std, write_csv

# Verdict thresholds. An attack counts for what it recovers beyond the guess of its threat model (the
# strongest baseline: the attacker's mean image, per label where the service's labels are known);
# only images recovered outright are judged on SSIM alone.
BROKEN = 0.9  # SSIM: the images are recovered
WEAK_GAIN = 0.25  # SSIM over the guess: recognisable images
HOLDS_MARGIN = 0.05  # SSIM over the guess below which an attack recovers nothing the guess does not
LINKAGE_FACTOR = 2  # linkage top-1 above this many times chance: the patients are re-identified
NOT_YET_ATTACKED = "not yet attacked"  # a scheme designed here that no attack written against it has met
THRESHOLDS_WHY = (
    f"Why these margins: on Br35H 64×64 the attacker's mean image, the same for every target, already scores SSIM "
    f"0.23 against the test images, so absolute SSIM thresholds near it (0.3, 0.5 before) measured the attack more "
    f"than the scheme. {HOLDS_MARGIN} is ten standard errors of a mean SSIM difference over the 455 test images "
    f"(per-image spread about 0.1): an attack that gains less than that recovers nothing a reader of its images "
    f"could tell from the mean brain. {WEAK_GAIN} is where reconstructions start to show an image's own anatomy "
    f"(skull outline, ventricles, a tumour) in the figures: the old 'weak' threshold 0.5 sat 0.27 above the guess.")


def gain(attack: dict, guess: dict | None) -> float:
    """Return what ``attack`` recovers beyond ``guess``, in SSIM (its SSIM alone where no guess was measured)."""
    return float(attack["ssim"]) - (float(guess["ssim"]) if guess else 0.0)


def verdict(strongest: dict | None, links: bool = False, guess: dict | None = None) -> str:
    """One line on what the strongest attack achieved beyond ``guess``; ``links``: some attack re-identifies patients."""
    if strongest is None:
        return "no attack result"
    ssim, name, more = float(strongest["ssim"]), f"{strongest['attack']} ({attacker_text(strongest['attacker_data'])})", \
        gain(strongest, guess)
    over = f"SSIM {ssim:.2f}, {more:+.2f} over the guess" if guess else f"SSIM {ssim:.2f}, no guess measured"
    if ssim >= BROKEN:
        return f"broken: {name} recovers the images ({over})"
    if more >= WEAK_GAIN:
        return f"weak: {name} recovers recognisable images ({over})"
    if more >= HOLDS_MARGIN:
        return f"partial: {name} recovers the coarse structure ({over})"
    if links:
        return (f"links: no image recovered beyond the guess (best: {name}, {over}), but patients are re-identified "
                f"at more than {LINKAGE_FACTOR}x chance")
    return f"holds: no attack tried here recovers more than the guess (best: {name}, {over})"


def verdict_level(strongest: dict, guess: dict | None = None) -> str:
    """Return the one word of :func:`verdict`: broken, weak, partial or holds."""
    return verdict(strongest, guess=guess).split(":")[0].split(" ")[0]


def attacker_text(data: str) -> str:
    """How a row's attacker data reads in a verdict: ``prior data``, ``no plain data``."""
    return "no plain data" if data == "none" else f"{data} data"


CARD_COLUMNS = ["dataset", "scheme", "params", "capability", "attack", "attacker_data", "queries", "ssim", "psnr",
                "ms_ssim", "gain", "linkage_top1", "linkage_chance", "verdict", "accuracy", "plain_accuracy"]


def summarise(records: Sequence[dict], settings) -> list[dict]:
    """Per setting: utility mean ± std (of its best server model, and of each), similarity, strongest attack, failures."""
    rows = []
    for setting in settings:
        mine = [r for r in records if r["cell"].setting == setting]
        utility_rows = [r["result"]["row"] for r in mine if r["cell"].kind == "utility" and "result" in r]
        by_model = {model: {metric: mean_std(u[metric] for u in utility_rows if u["model"] == model)
                            for metric in ("accuracy", "f1")}
                    for model in dict.fromkeys(u["model"] for u in utility_rows)}
        best_model = max(by_model, key=lambda m: by_model[m]["accuracy"][0], default="cnn")
        utility = [u for u in utility_rows if u["model"] == best_model]
        attacks = [dict(r["result"]["row"], figure=r["result"].get("figure")) for r in mine
                   if r["cell"].kind == "attack" and "result" in r]
        for a in attacks:  # rows cached before attacks declared their threat model
            a.setdefault("capability", getattr(_spec(a["attack"]), "capability", ""))
        anyone = {a["attack"] for a in attacks if getattr(_spec(a["attack"]), "images_only", False)}
        guesses = {a["attack"] for a in attacks if getattr(_spec(a["attack"]), "baseline", False)}
        entry = {"setting": setting, "runs": len(utility), "attacks": attacks, "model": best_model, "by_model": by_model,
                 "failures": [f"{r['cell'].attack or 'utility'}: {r['error']}" for r in mine if r["status"] == "failed"]}
        entry.update({metric: mean_std(u[metric] for u in utility) for metric in ("accuracy", "f1", "ssim", "psnr")})
        # an attack that needs only the intercepted images counts in every threat model's column, when it ran on
        # them alone: the jigsaw that orients its pieces with leaked pairs' plain images is a known-pairs attack
        within = {cap: [a for a in attacks if a.get("capability") == cap
                        or (a["attack"] in anyone and a.get("capability") == "ciphertext-only")] for cap in CAPABILITIES}
        strongest = lambda rows: max(rows, key=lambda a: float(a["ssim"]), default=None)
        entry["guess"] = {cap: strongest([a for a in within[cap] if a["attack"] in guesses]) for cap in CAPABILITIES}
        entry["by_capability"] = {cap: strongest([a for a in within[cap] if a["attack"] not in guesses])
                                  for cap in CAPABILITIES}
        # every attack stands in its own column, so the strongest of all is the strongest column's
        top = max((cap for cap in CAPABILITIES if entry["by_capability"][cap]),
                  key=lambda cap: float(entry["by_capability"][cap]["ssim"]), default=None)
        entry["strongest"] = entry["by_capability"][top] if top else None
        entry["strongest_guess"] = entry["guess"][top] if top else None
        entry["linked"] = {cap: strongest_linkage(within[cap]) for cap in CAPABILITIES}
        entry["verdicts"] = {cap: _card_verdict(best, entry["linked"][cap], entry["guess"][cap])
                             for cap, best in entry["by_capability"].items() if best}
        if setting.scheme != "plain" and _designed_here(setting.scheme) and not any(
                setting.scheme in getattr(_spec(a["attack"]), "written_for", ()) for a in attacks):
            entry["verdicts"] = {cap: NOT_YET_ATTACKED for cap in entry["verdicts"]}
        rows.append(entry)
    return rows


def strongest_linkage(attacks: Sequence[dict]) -> dict | None:
    """Return the attack row that re-identified most patients (top-1), among those that scored linkage."""
    scored = [a for a in attacks if a.get("linkage_top1") not in (None, "")]
    return max(scored, key=lambda a: float(a["linkage_top1"]), default=None)


def _designed_here(scheme: str) -> bool:
    from medveil.schemes import scheme_class

    try:
        return scheme_class(scheme).designed_here
    except MedveilError:  # a plugin's scheme no longer installed
        return False


def card_text(entry: dict) -> str:
    """Return the verdict of the strongest attack over every threat model, then the strongest in each."""
    if entry["setting"].scheme == "plain":
        return "nothing hidden (the baseline)"
    if NOT_YET_ATTACKED in entry["verdicts"].values():
        best = entry["strongest"]
        return (f"{NOT_YET_ATTACKED}: a scheme designed here, and no attack written against its own structure has run "
                f"(generic attacks reach SSIM {float(best['ssim']):.2f})" if best else NOT_YET_ATTACKED)
    per = [f"{cap}: {level} (SSIM {float(entry['by_capability'][cap]['ssim']):.2f}, "
           f"{gain(entry['by_capability'][cap], entry['guess'][cap]):+.2f})" for cap, level in entry["verdicts"].items()]
    head = verdict(entry["strongest"], links="links" in entry["verdicts"].values(), guess=entry["strongest_guess"])
    return head + (" — " + "; ".join(per) if per else "")


def _spec(attack: str):
    """Return the registered attack, or ``None`` for one no longer registered (in old cached cells)."""
    from medveil.attacks import attack_spec

    try:
        return attack_spec(attack)
    except InputError:
        return None


def _card_verdict(best: dict, linked: dict | None, guess: dict | None) -> str:
    """Return the verdict on the gain over ``guess``.

    Images no attack recovers still 'link' when patients are re-identified at more than :data:`LINKAGE_FACTOR` times
    chance.
    """
    level = verdict_level(best, guess)
    if level == "holds" and linked and float(linked["linkage_top1"]) > LINKAGE_FACTOR * float(linked["linkage_chance"]):
        return "links"
    return level


def write_cards(path: Path, dataset: str, rows: Sequence[dict]) -> None:
    """Write ``cards.csv``.

    Per setting and threat model, the strongest attack and the verdict it gives, then the strongest guess (verdict
    ``guess``) that its ``gain`` is measured from.

    A threat model with no registered attack for the scheme has no row. Linkage is the best top-1
    re-identification any attack of that threat model reached with its reconstructions (empty for
    rows cached before linkage was scored). ``accuracy`` is the setting's best server model's mean test
    accuracy, ``plain_accuracy`` that of plain images in the same run (empty without a utility result),
    so that a card alone tells what the setting costs.
    """
    plain = next((e["accuracy"][0] for e in rows if e["setting"].scheme == "plain"), math.nan)
    cards = []
    for e in rows:
        for cap, level in e["verdicts"].items():
            best, linked, guess = e["by_capability"][cap], e["linked"][cap], e["guess"][cap]
            common = {"dataset": dataset, "scheme": e["setting"].scheme, "params": e["setting"].params_text,
                      "capability": cap, "accuracy": _or_empty(e["accuracy"][0]), "plain_accuracy": _or_empty(plain)}
            for row, verdict_, linkage in ((best, level, linked), (guess, "guess", None)):
                if row is not None:
                    cards.append({**common, "attack": row["attack"], "attacker_data": row["attacker_data"],
                                  "queries": row["queries"], "ssim": row["ssim"], "psnr": row["psnr"],
                                  "ms_ssim": row.get("ms_ssim", ""), "gain": gain(row, guess) if guess else "",
                                  "linkage_top1": linkage["linkage_top1"] if linkage else "",
                                  "linkage_chance": linkage["linkage_chance"] if linkage else "", "verdict": verdict_})
    write_csv(path, cards, CARD_COLUMNS)


def _or_empty(value: float) -> float | str:
    return "" if math.isnan(value) else value


def cards_markdown(cards_csv: Path) -> str:
    """Return a Markdown table of ``cards.csv``: per setting, the strongest attack and verdict in each threat model."""
    import csv

    cards = [c for c in csv.DictReader(open(cards_csv)) if c["verdict"] != "guess"]
    settings = list(dict.fromkeys((c["scheme"], c["params"]) for c in cards))
    table = [["scheme", "params"] + list(CAPABILITIES)]
    for scheme, params in settings:
        cells = []
        for cap in CAPABILITIES:
            card = next((c for c in cards if (c["scheme"], c["params"], c["capability"]) == (scheme, params, cap)), None)
            linkage = (f"; linkage top-1 {float(card['linkage_top1']):.2f} (chance {float(card['linkage_chance']):.3f})"
                       if card and card["linkage_top1"] else "")
            over = f" ({float(card['gain']):+.2f} over the guess)" if card and card.get("gain") else ""
            cells.append(f"**{card['verdict']}**: {card['attack']}, {attacker_text(card['attacker_data'])}, "
                         f"SSIM {float(card['ssim']):.3f}{over}{linkage}" if card else "no attack registered")
        table.append([f"`{scheme}`", params or "–"] + cells)
    return "\n".join(markdown_table(table))




def recommendation(rows: Sequence[dict]) -> list[str]:
    """Markdown lines naming, from the measured cards, the setting to use under each threat model, or saying none qualifies.

    A setting qualifies under a threat model when the strongest attack of that model recovers less
    than :data:`HOLDS_MARGIN` SSIM beyond the guess and its reconstructions do not link patients (verdict "holds"), and its
    best server model's accuracy is within :data:`TARGET_POINTS` of plain images'. Among those, the
    most accurate is named. Where none qualifies, the closest is named with what keeps it out.
    """
    plain = next((e for e in rows if e["setting"].scheme == "plain" and not math.isnan(e["accuracy"][0])), None)
    if plain is None:
        return ["No recommendation: the plain baseline has no utility result."]
    floor = plain["accuracy"][0] - TARGET_POINTS / 100
    scored = [e for e in rows if e["setting"].scheme != "plain" and not math.isnan(e["accuracy"][0]) and e["verdicts"]]

    def described(e: dict, caps) -> str:
        verdicts = ", ".join(f"{cap} {e['verdicts'].get(cap, 'untested')} (SSIM {float(e['by_capability'][cap]['ssim']):.2f}, "
                             f"{gain(e['by_capability'][cap], e['guess'][cap]):+.2f} over the guess)"
                             for cap in caps if e["by_capability"].get(cap))
        return (f"`{e['setting'].label}` with {e['model']}: accuracy {e['accuracy'][0] * 100:.1f} % "
                f"({(e['accuracy'][0] - plain['accuracy'][0]) * 100:+.1f} points against plain); {verdicts}")

    lines = [f"Plain images: {plain['accuracy'][0] * 100:.1f} % (paper NB's CNN). A setting qualifies under a threat "
             f"model when its strongest attack there recovers less than SSIM {HOLDS_MARGIN} beyond the guess without "
             f"linking patients (verdict 'holds') and its best server model is within {TARGET_POINTS} points of plain.", ""]
    for caps, title in [((cap,), cap) for cap in CAPABILITIES] + [(tuple(CAPABILITIES), "every threat model at once")]:
        holds = [e for e in scored if all(e["verdicts"].get(cap) == "holds" for cap in caps)]
        useful = [e for e in holds if e["accuracy"][0] >= floor]
        if useful:
            lines.append(f"- **{title}**: use {described(max(useful, key=lambda e: e['accuracy'][0]), caps)}.")
            continue
        # the closest: the most private of the useful settings, by its worst gain over these threat models
        near = [e for e in scored if e["accuracy"][0] >= floor] or scored
        attacked = [e for e in near if any(e["by_capability"].get(c) for c in caps)]
        closest = min(attacked, key=lambda e: max(gain(e["by_capability"][c], e["guess"][c]) for c in caps
                                                  if e["by_capability"].get(c)), default=None)
        held = ", ".join(f"`{e['setting'].label}`" for e in holds)
        why = f"those that hold ({held}) lose more than {TARGET_POINTS} points" if holds else "no setting holds"
        lines.append(f"- **{title}**: none qualifies ({why}); closest: {described(closest, caps)}."
                     if closest else f"- **{title}**: none qualifies ({why}).")
    return lines
