"""The benchmark's report: one row per setting, a privacy card per scheme, a trade-off plot, image grids.

Written twice from the same content: ``report.md`` (figures as files beside it) and a self-contained
``report.html`` (figures inlined), with ``cards.csv`` beside them. A person should read it without the code: every number says what it measures.
"""

from __future__ import annotations

import base64
import html
import math
import os
import platform
from pathlib import Path
from typing import Sequence

import medveil
from medveil.attacks import CAPABILITIES
from medveil.evaluation import papers
from medveil.evaluation.cards import TARGET_POINTS
from medveil.evaluation.figures import plot_tradeoff
from medveil.evaluation.privacy import linkage_text
from medveil.bench.verdicts import (BROKEN, HOLDS_MARGIN, LINKAGE_FACTOR, NOT_YET_ATTACKED, THRESHOLDS_WHY,
                                    WEAK_GAIN, attacker_text, card_text, gain, recommendation, strongest_linkage,
                                    summarise, write_cards)
from medveil.evaluation.report import html_table, markdown_table, number, pm

def _tables(rows: Sequence[dict]) -> dict[str, list[list[str]]]:
    main = [["setting", "best server model", "accuracy %", "F1 %", "SSIM obf. vs original", "PSNR dB"]
            + [f"strongest {cap} (SSIM)" for cap in CAPABILITIES] + ["problems"]]
    for e in rows:
        best = [f"{b['attack']}, {attacker_text(b['attacker_data'])} ({number(b['ssim'])})" if b else "–"
                for b in (e["by_capability"][cap] for cap in CAPABILITIES)]
        main.append([e["setting"].label, e["model"], pm(e["accuracy"], 100, 1), pm(e["f1"], 100, 1), pm(e["ssim"], 1, 3),
                     pm(e["psnr"], 1, 1)]
                    + best + ["; ".join(e["failures"]) or ""])
    models = list(dict.fromkeys(m for e in rows for m in e["by_model"]))
    servers = [["setting"] + [f"{m} accuracy %" for m in models] + ["gain of the best over paper NB's CNN (points)"]]
    for e in rows:
        cnn = e["by_model"].get("cnn", {}).get("accuracy")
        gain = (f"{(e['accuracy'][0] - cnn[0]) * 100:+.1f} ({e['model']})" if cnn and len(e["by_model"]) > 1 else "")
        servers.append([e["setting"].label] + [pm(e["by_model"][m]["accuracy"], 100, 1) if m in e["by_model"] else "–"
                                               for m in models] + [gain])
    attacks = [["setting", "threat model", "attack", "attacker data", "queries", "SSIM", "PSNR dB", "MS-SSIM",
                "linkage top-1 (chance)"]]
    for e in rows:
        for a in e["attacks"]:
            attacks.append([e["setting"].label, a.get("capability") or "?", a["attack"], a["attacker_data"],
                            str(a["queries"]), number(a["ssim"]), number(a["psnr"], 1), number(a["ms_ssim"]),
                            linkage_text(a)])
    ours = {(e["setting"].scheme, e["setting"].params_text): e for e in rows}
    published = [["paper", "setting", "metric", "published", "ours, paper NB's CNN", "ours, best server model"]]
    for paper, scheme, params, metric, value in papers.UTILITY:
        if (scheme, params) in ours and metric in ("accuracy", "f1"):
            entry = ours[(scheme, params)]
            cnn = entry["by_model"].get("cnn", {}).get(metric)
            published.append([paper, f"{scheme} {params}".strip(), metric, f"{value * 100:.1f}",
                              pm(cnn, 100, 1) if cnn else "–", f"{pm(entry[metric], 100, 1)} ({entry['model']})"])
    for params, ref in papers.NB_RECONSTRUCTION.items():
        found = ours.get(("intensity", params))
        learned = [a for a in (found["attacks"] if found else []) if a["attack"] == "learned-reconstruction"]
        if learned:
            published.append(["NB", f"intensity {params}", "U-Net reconstruction SSIM", number(ref["ssim"]),
                              number(learned[0]["ssim"])])
    return {"main": main, "servers": servers, "attacks": attacks, "papers": published}


# What each card's colour says, in the report's legend.
LEGEND = ((NOT_YET_ATTACKED, "designed here; no attack written against it has run"),
          ("holds", "nothing recovered beyond the guess"), ("partial", "coarse structure recovered"),
          ("weak", "recognisable images recovered"), ("links", "images hold, patients re-identified"),
          ("broken", "the images recovered"))


def headline(recommended: list[str]) -> str:
    """Return the report's first sentence.

    Whether any setting holds under every threat model at once, from :func:`recommendation`'s last line.
    """
    last = recommended[-1].replace("`", "").rstrip(".")
    if "none qualifies" in last:
        closest = last.split("; ", 1)[1].split("; ")[0]  # "closest: SETTING with MODEL: accuracy A % (B points ...)"
        return (f"No setting here holds under every threat model at once within {TARGET_POINTS} points of plain "
                f"accuracy; {closest}")
    return "Under every threat model at once: " + last.split(": ", 1)[1].split("; ")[0]


def write_report(out_dir: Path, dataset, profile, records: Sequence[dict], command: str | None) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` in ``out_dir``; returns both paths."""
    import torch

    out_dir = Path(out_dir)
    rows = summarise(records, profile.settings)
    tables = _tables(rows)
    title = f"Privacy and utility of medveil's schemes on {dataset.name} ({profile.name} profile)"
    guessed = [float(e["strongest_guess"]["ssim"]) for e in rows if e.get("strongest_guess")]
    points = [(e["setting"].label, gain(e["strongest"], e["strongest_guess"]) if e["strongest"]  # plain: the images
               else 1.0 - (max(guessed) if guessed else 0.0), e["accuracy"][0] * 100, e["accuracy"][1] * 100)
              for e in rows if not math.isnan(e["accuracy"][0])]
    plot_tradeoff(points, out_dir / "tradeoff.png", f"{dataset.name}, {profile.size}×{profile.size}",
                  ((HOLDS_MARGIN, f"partial from +{HOLDS_MARGIN:g}"), (WEAK_GAIN, f"weak from +{WEAK_GAIN:g}")),
                  loss="gain")
    linked = [(e, strongest_linkage(e["attacks"])) for e in rows]
    chance = max((float(a["linkage_chance"]) for _, a in linked if a), default=None)
    if chance:  # plain images link by definition: every probe's own group is the most alike
        link_points = [(e["setting"].label, float(a["linkage_top1"]) / float(a["linkage_chance"]) if a else 1 / chance,
                        e["accuracy"][0] * 100, e["accuracy"][1] * 100) for e, a in linked
                       if not math.isnan(e["accuracy"][0]) and (a or e["setting"].scheme == "plain")]
        plot_tradeoff(link_points, out_dir / "tradeoff-linkage.png",
                      f"{dataset.name}, {profile.size}×{profile.size}: linkage",
                      ((LINKAGE_FACTOR, f"links above {LINKAGE_FACTOR:g}× chance"),), loss="linkage")
    # Nothing here depends on when or how fast the cells ran: a report drawn again from the same
    # cached cells is the same file (the command prints the time; docs/results/README.md keeps it).
    environment = (f"medveil {medveil.__version__}, Python {platform.python_version()}, torch {torch.__version__}, "
                   f"{platform.machine()}, {os.cpu_count()} CPUs; {len(records)} cells.")
    setup = (f"{len(dataset)} images at {profile.size}×{profile.size}, split 70/15/15 keeping near-duplicate groups "
             f"whole; scores are on the test split. Utility: {', '.join(profile.models)} (the server models), "
             f"{profile.epochs} epochs, {profile.seeds} seed(s), each with its own key; test accuracy and F1 of each "
             f"setting's best model (plain images: paper NB's CNN). Attacks: the attacker's U-Nets train {profile.attack_epochs} epochs; "
             "'public' data are other public medical images, 'prior' the target's own training split, 'none' "
             "no plain images. Threat models: ciphertext-only (the service: every obfuscated image it holds, no "
             "queries), known-pairs (leaked pairs), oracle (queries to the obfuscation with the key). SSIM/PSNR compare with the original test images (8-bit, range 255): higher means "
             "more leaks.")
    cards = [(e["setting"].label, card_text(e), f"accuracy {pm(e['accuracy'], 100, 1)} %" if e["runs"] else "no utility result")
             for e in rows]
    write_cards(out_dir / "cards.csv", dataset.name, rows)
    recommended = recommendation(rows)
    (out_dir / "recommendation.md").write_text("\n".join(recommended) + "\n")
    failures = [r for r in records if r["status"] == "failed"]
    thresholds = (f"Verdicts come from the strongest attack in each threat model, by what its reconstructions recover "
                  f"beyond the guess of that threat model (the strongest baseline: the attacker's mean plain image, "
                  f"per label where the service's labels are known), in SSIM against the originals: SSIM ≥ {BROKEN} "
                  f"broken (the images are recovered), gain ≥ {WEAK_GAIN} weak (recognisable), ≥ {HOLDS_MARGIN} partial "
                  f"(coarse structure), below: holds (nothing recovered beyond the guess). {THRESHOLDS_WHY} Each card "
                  "also gives the verdict per threat model; cards.csv has one row per setting and threat model, where a "
                  f"setting whose images hold but whose patients are re-identified at more than {LINKAGE_FACTOR}× chance "
                  "by some attack's reconstructions is marked 'links'.")

    first = headline(recommended)
    legend = "; ".join(f"**{name}**: {meaning}" for name, meaning in LEGEND)
    plots = [("Privacy against utility", "tradeoff.png",
              "Each setting's accuracy (its best server model, ± over seeds) against what its strongest attack "
              f"recovers beyond the guess; dotted lines: where 'partial' (+{HOLDS_MARGIN:g}) and 'weak' (+{WEAK_GAIN:g}) "
              "begin. Up and left is better; the black steps join the settings no other beats on both.")]
    if chance:
        plots.append(("Re-identification against utility", "tradeoff-linkage.png",
                      "Each setting's accuracy against how often its strongest attack's reconstructions pick the "
                      f"right patient, as a multiple of chance; a setting must sit left of the line ({LINKAGE_FACTOR}× "
                      "chance) not to link patients."))
    md = [f"# {title}", "", f"> **{first}.**", "", f"Command: `{command}`" if command else "", "", environment, "",
          setup, "", thresholds, "", "## Recommendation", ""] + recommended + ["", "## Privacy cards", ""]
    md += [f"Colours in report.html, by verdict: {legend}.", ""]
    md += [f"- **{label}**: {v}; {acc}." for label, v, acc in cards]
    md += ["", "## Every setting", ""] + markdown_table(tables["main"])
    md += ["", "## Server models", "", "Test accuracy per server model; a setting's utility above is its best model's. "
           "'matched' learns the scheme's structure from its public name and parameters (medveil.nn.structured).",
           ""] + markdown_table(tables["servers"])
    for heading, image, caption in plots:
        md += ["", f"## {heading}", "", f"![{heading}]({image})", "", caption]
    md += ["", "## Every attack", ""] + markdown_table(tables["attacks"])
    md += ["", "## Beside the published figures", "",
           "Other data, models and sizes (see the utility report); compare trends, not digits.", ""] + markdown_table(tables["papers"])
    md += ["", "## Image grids (original | obfuscated | reconstructed)", ""]
    md += [f"![{a['attack']}](figures/{a['figure']})" for e in rows for a in e["attacks"] if a.get("figure")]
    if failures:
        md += ["", "## Failed cells (retried on the next run)", ""] + \
              [f"- {r['cell'].setting.label} {r['cell'].attack or 'utility'}: {r['error']}" for r in failures]
    (out_dir / "report.md").write_text("\n".join(md) + "\n")

    esc = html.escape

    def inline(name: str) -> str:  # the page travels alone: every image inside it
        return "data:image/png;base64," + base64.b64encode((out_dir / name).read_bytes()).decode()

    body = [f"<h1>{esc(title)}</h1>", f'<div class="headline">{esc(first)}.</div>',
            f"<p><code>{esc(command or '')}</code></p>", f"<p>{esc(environment)}</p>",
            f"<p>{esc(setup)}</p>", f"<p>{esc(thresholds)}</p>", "<h2>Recommendation</h2>",
            f"<p>{esc(recommended[0])}</p><ul>",
            *(f"<li>{esc(line[2:].replace('**', '').replace('`', ''))}</li>" for line in recommended[2:]), "</ul>",
            "<h2>Privacy cards</h2>", '<div class="legend">',
            *(f'<span class="chip {name.replace(" ", "-")}">{name}</span> {esc(meaning)} ' for name, meaning in LEGEND),
            "</div>",
            '<div class="cards">']
    for label, v, acc in cards:
        level = v.split(":")[0].replace(" ", "-")  # the verdict's words, for its colour
        body.append(f'<div class="card {esc(level)}"><h3>{esc(label)}</h3><p>{esc(v)}</p><p>{esc(acc)}</p></div>')
    body += ["</div>", "<h2>Every setting</h2>", html_table(tables["main"]), "<h2>Server models</h2>",
             html_table(tables["servers"]),
             *(f'<h2>{esc(heading)}</h2><figure><img src="{inline(image)}" alt="{esc(heading)}">'
               f"<figcaption>{esc(caption)}</figcaption></figure>" for heading, image, caption in plots),
             "<h2>Every attack</h2>",
             html_table(tables["attacks"]), "<h2>Beside the published figures</h2>", html_table(tables["papers"]),
             "<h2>Image grids</h2>"]
    body += [f'<figure><img src="{inline("figures/" + a["figure"])}" alt="{esc(a["attack"])}"><figcaption>{esc(e["setting"].label)}: '
             f'{esc(a["attack"])}, {esc(a["attacker_data"])} data</figcaption></figure>'
             for e in rows for a in e["attacks"] if a.get("figure")]
    if failures:
        body += ["<h2>Failed cells</h2><ul>"] + [f"<li>{esc(r['cell'].setting.label)} {esc(r['cell'].attack or 'utility')}: "
                                                   f"{esc(r['error'])}</li>" for r in failures] + ["</ul>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px}"
             "th{background:#f2f2f2}.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border-radius:6px;padding:6px 12px;"
             "width:320px;border:1px solid #ccc}.card h3{margin:4px 0}.broken{background:#fbe3e3}.weak{background:#fdf0d8}"
             ".partial{background:#fdfbd8}.links{background:#efe6f7}.holds{background:#e3f4e3}.not-yet-attacked{background:#eeeeee}img{max-width:100%}figure{margin:1em 0}"
             ".headline{font-size:1.15em;border-left:6px solid #b03030;background:#f8f0f0;padding:10px 14px;margin:1em 0}"
             ".legend{margin:0 0 10px;font-size:14px}.chip{display:inline-block;border:1px solid #ccc;border-radius:4px;"
             "padding:0 6px;margin-left:8px;font-weight:bold}figcaption{font-size:14px;color:#444}")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    (out_dir / "report.html").write_text(page)
    return out_dir / "report.md", out_dir / "report.html"
